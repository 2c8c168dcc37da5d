"""The ghcb command under ordinary shell use: exit statuses, pipes, strict numbers, repeated
options, --help, and every command through a matrix of garbage input."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertEntry, build_cert_table
from ghcb.cli import main, parser
from tests.helpers import SPEC

if TYPE_CHECKING:
    import argparse
    import pathlib

PAGE = str(SPEC / "vectors/pages/snp_ext_guest_request.bin")
TABLE = str(SPEC / "vectors/milan_cert_table.bin")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    status = main(argv, out)
    return status, out.getvalue(), capsys.readouterr().err


# -- exit statuses ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["page", "decode", PAGE], 0),
        (["page", "check", PAGE], 0),
        (["certs", "check", TABLE], 0),
        (["certs", "parse", TABLE], 0),
        (["msr", "decode", "0x14"], 0),
        (["page", "check", "/dev/null"], 1),  # page-length
        (["page", "decode", "/dev/null"], 1),
        (["certs", "parse", "/dev/null"], 1),  # missing-terminator
        (["kvm", "decode", "/dev/null"], 1),  # kvm-run-size
        (["page", "decode", "/dev/zero"], 2),  # too long
        (["page", "decode"], 2),  # missing FILE
        (["page", "decode", PAGE, PAGE], 2),
        (["nope"], 2),
        ([], 2),
    ],
)
def test_exit_status(argv: list[str], status: int, capsys: pytest.CaptureFixture[str]) -> None:
    """0 ok, 1 the input breaks a rule, 2 unusable arguments or input; the failure is one line
    on stderr (two for usage errors: the usage line first)."""
    got, _, err = run(argv, capsys)
    assert got == status
    lines = err.splitlines()
    if status == 0 or (status == 1 and argv[1] == "check"):  # findings go to stdout
        assert lines == []
    elif status == 1:
        assert len(lines) == 1
        assert lines[0].startswith("ghcb: ")
    else:
        assert len(lines) in (1, 2)
        assert "ghcb: ghcb" not in err
        if len(lines) == 2:
            assert lines[0].startswith("usage: ghcb")
            assert ": error: " in lines[1]


def test_usage_error_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A long usage (certs build) still prints on one line, then the reason."""
    status, _, err = run(["certs", "build", "--ark", "a", "--ark", "b", "-o", "x"], capsys)
    assert status == 2
    usage, reason = err.splitlines()
    assert usage.startswith("usage: ghcb certs build [-h] [--json] [--ark FILE]")
    assert usage.endswith("-o OUT")
    assert reason == "ghcb certs build: error: --ark given more than once"


@pytest.mark.parametrize(
    "argv",
    [
        ["msr", "decode", "1", "--json", "--json"],
        ["certs", "check", TABLE, "--max-size", "1", "--max-size", "2"],
        ["page", "decode", PAGE, "--offset", "0", "--offset", "0"],
        ["certs", "build", "--vcek", PAGE, "-o", "a", "-o", "b"],
        ["simulate", "--abi", "v15", "--abi", "merged"],
    ],
)
def test_repeated_option_is_an_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A single-valued option given twice is refused, not silently "last one wins"."""
    status, _, err = run(argv, capsys)
    assert status == 2
    assert "given more than once" in err


@pytest.mark.parametrize("text", ["0b101", "1_000", "\u0661\u0662", "-1", "+1", " 1", "0x", "1e3"])
@pytest.mark.parametrize(
    "argv",
    [
        ["msr", "decode", "{}"],
        ["exitinfo2", "decode", "{}"],
        ["exitinfo2", "encode", "--fw", "{}"],
        ["msr", "encode", "PSC_REQ", "gfn={}"],
        ["page", "decode", PAGE, "--offset", "{}"],
        ["certs", "check", TABLE, "--max-size", "{}"],
        ["page", "encode", "rax={}"],
        ["simulate", "--pages", "{}"],
        ["simulate", "--report-version", "{}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_numbers_are_decimal_or_0x_hex(
    argv: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only what the help promises: ASCII decimal or 0x hex (no 0b, _, signs, other digits)."""
    status, _, err = run([a.replace("{}", text) for a in argv], capsys)
    assert status == 2
    assert "not a number" in err


def test_numbers_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """The promised forms: 0x/0X hex and decimal (leading zeros are decimal)."""
    for text, value in [("0x14", 0x14), ("0X14", 0x14), ("20", 20), ("020", 20)]:
        status, out, _ = run(["msr", "decode", text, "--json"], capsys)
        assert (status, json.loads(out)["msr"]) == (0, value)


# -- --json placement, -o -, --extract, build without --json --------------------------------
def test_json_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`ghcb --json page decode F` is the same as `ghcb page decode F --json`."""
    first = run(["--json", "page", "decode", PAGE], capsys)
    last = run(["page", "decode", PAGE, "--json"], capsys)
    assert first == last
    assert json.loads(first[1])["ok"] is True


def test_certs_build_to_stdout_and_extra_without_json(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o - writes the table to stdout (no file named -); --extra works in text mode."""
    payload = tmp_path / "info.bin"
    payload.write_bytes(b"platform")
    guid = "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.chdir(tmp_path)
    assert main(["certs", "build", "--extra", f"{guid}={payload}", "-o", "-"], stream) == 0
    stream.flush()
    assert raw.getvalue() == build_cert_table([CertEntry(uuid.UUID(guid), b"platform")])
    assert not (tmp_path / "-").exists()
    status, out, err = run(
        ["certs", "build", "--extra", f"{guid}={payload}", "-o", str(tmp_path / "t")], capsys
    )
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"wrote {tmp_path / 't'}: 56 bytes, 1 page(s)",
        "  GOOGLE_EXTRA_PLATFORM_INFO offset 0x0030 length 8",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["page", "encode", "rax=1", "-o", "/nonexistent/dir/page.bin"],
        ["certs", "build", "--vcek", PAGE, "-o", "/nonexistent/dir/t.bin"],
        ["certs", "build", "--vcek", PAGE, "-o", "."],
    ],
)
def test_unwritable_output(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An output that cannot be written: status 2 and one line saying why."""
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("ghcb: cannot write ")


def test_extract_needs_an_existing_directory(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--extract into a missing path is a usage error and creates nothing."""
    missing = tmp_path / "a" / "b"
    status, _, err = run(["certs", "parse", TABLE, "--extract", str(missing)], capsys)
    assert status == 2
    assert "not an existing directory" in err
    assert not (tmp_path / "a").exists()
    status, _, _ = run(["certs", "parse", TABLE, "--extract", str(tmp_path)], capsys)
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-ark.der", "1-ask.der", "2-vcek.der"]


# -- pipes ------------------------------------------------------------------------------------
class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """A closed output: status 141 (128 + SIGPIPE), nothing on stderr."""
    assert main(["page", "decode", PAGE], _ClosedPipe()) == 141
    assert capsys.readouterr().err == ""


def test_broken_pipe_subprocess(tmp_path: pathlib.Path) -> None:
    """`ghcb certs parse --all BIG | head -1`: the reader leaves; no traceback, status 141."""
    entries = [CertEntry(uuid.UUID(int=i + 1), b"x") for i in range(3000)]
    path = tmp_path / "t.bin"
    path.write_bytes(build_cert_table(entries))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghcb", "certs", "parse", str(path), "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline().startswith(b"certificate table")
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 141
    assert err == b""


# -- --help -----------------------------------------------------------------------------------
def _leaves(p: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs:
        return [path]
    choices: dict[str, argparse.ArgumentParser] = subs[0].choices  # type: ignore[assignment]
    return [leaf for name, sub in choices.items() for leaf in _leaves(sub, [*path, name])]


COMMANDS = _leaves(parser(), [])


def test_every_command_is_listed() -> None:
    """The commands the help tests and the matrix below cover (other modules may add more)."""
    assert {
        "certs build",
        "certs check",
        "certs parse",
        "demo",
        "exitinfo2 decode",
        "exitinfo2 encode",
        "kvm decode",
        "msr decode",
        "msr encode",
        "page check",
        "page decode",
        "page encode",
        "pki generate",
        "psc check",
        "psc decode",
        "simulate",
    } <= {" ".join(c) for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's --help exits 0 and ends with examples of itself."""
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"], io.StringIO())
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: ghcb {' '.join(command)}" in text
    examples = re.split(r"\nexamples?:\n", text, maxsplit=1)[1].splitlines()
    assert examples
    assert all(line.startswith(f"  ghcb {' '.join(command)}") or "|" in line for line in examples)


# -- the garbage matrix -----------------------------------------------------------------------
GARBAGE: dict[str, bytes | str] = {
    "empty": b"",
    "deep-json": b"[" * 200000,
    "huge-json-number": b'{"rax": ' + b"1" * 5000 + b"}",
    "short": b"\x01\x02\x03",
    "long": bytes(64 << 20 | 1),
    "endless": "/dev/zero",
    "utf16": "0011".encode("utf-16"),
    "not-hex-text": b"hello, this is text\n",
    "directory": ".",
    "unreadable": "/proc/self/mem",
    "nonexistent": "/nonexistent/input",
}
#: Inputs no command can use: status 2 whatever the command.
UNUSABLE = {"long", "endless", "utf16", "not-hex-text", "directory", "unreadable", "nonexistent"}
#: Certificates are files of any bytes (DER, PEM, or a payload): text is no refusal there.
BINARY_ONLY = {"utf16", "not-hex-text"}
FILE_COMMANDS = {
    "page decode": ["page", "decode", "{}"],
    "page check": ["page", "check", "{}"],
    "page encode": ["page", "encode", "--from", "{}"],
    "kvm decode": ["kvm", "decode", "{}"],
    "psc decode": ["psc", "decode", "{}"],
    "psc check": ["psc", "check", "{}"],
    "certs check": ["certs", "check", "{}"],
    "certs parse": ["certs", "parse", "{}"],
    "certs build": ["certs", "build", "--vcek", "{}", "-o", "{out}"],
    "simulate": ["simulate", "--certs", "{}", "--abi", "v15"],
}


#: Commands that list their findings on stdout (status 1 without a line on stderr).
CHECKERS = {"page check", "certs check", "psc check", "simulate"}


@pytest.fixture(scope="module")
def garbage_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("garbage")
    paths = {}
    for name, content in GARBAGE.items():
        if isinstance(content, str):
            paths[name] = content
        else:
            paths[name] = str(folder / name)
            (folder / name).write_bytes(content)
    return paths


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_garbage_matrix(
    command: str,
    garbage: str,
    json_mode: bool,
    garbage_files: dict[str, str],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every input-reading command on every kind of garbage: one clear line, status 2 for
    input nothing can use, never a traceback; with --json exactly one object."""
    argv = [
        a.replace("{}", garbage_files[garbage]).replace("{out}", str(tmp_path / "o"))
        for a in FILE_COMMANDS[command]
    ]
    status, out, err = run([*argv, *(["--json"] if json_mode else [])], capsys)
    assert "Traceback" not in err
    if garbage in UNUSABLE - (BINARY_ONLY if command == "certs build" else set()):
        assert status == 2
    assert status in (0, 1, 2)
    if status == 2 or (status == 1 and command not in CHECKERS):
        assert len(err.splitlines()) == 1, err
        assert err.startswith("ghcb")
    if json_mode:
        doc: Any = json.loads(out)
        assert out.count("\n") == 1
        assert doc["ok"] is (status == 0)
    elif status == 2:
        assert out == ""


@pytest.mark.parametrize(
    "value", ["", "0x", "x" * 10000, str(1 << 64), "-0", "\u0663", "1.0", "0o7", "NONE_SUCH"]
)
@pytest.mark.parametrize(
    "argv",
    [
        ["msr", "decode", "{}"],
        ["msr", "encode", "{}"],
        ["exitinfo2", "decode", "{}"],
        ["exitinfo2", "encode", "--vmm", "{}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_value_garbage(argv: list[str], value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Value commands on garbage values: status 2, one usage line and the reason."""
    status, out, err = run([a.replace("{}", value) for a in argv], capsys)
    assert (status, out) == (2, "")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2


def test_python_dash_m_help() -> None:
    """python -m ghcb --help lists the commands."""
    proc = subprocess.run(
        [sys.executable, "-m", "ghcb", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    for name in ("page", "certs", "kvm", "msr", "exitinfo2", "simulate", "demo", "pki"):
        assert name in proc.stdout


class _Interrupted(io.StringIO):
    def write(self, text: str) -> int:
        raise KeyboardInterrupt


def test_interrupt_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C: status 130 (128 + SIGINT), no traceback."""
    assert main(["page", "decode", PAGE], _Interrupted()) == 130
    assert capsys.readouterr().err == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version and exits 0."""
    from ghcb import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"], io.StringIO())
    assert e.value.code == 0
    assert capsys.readouterr().out == f"ghcb {__version__}\n"
