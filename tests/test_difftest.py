"""`ghcb difftest certs`: the naive adapter's disagreements are found, minimised and explained;
the ghcb adapter has none; parser faults, the Python form and usage errors."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import ghcb
from ghcb import difftest as dt
from ghcb._extras import MissingExtraError
from ghcb.vectors import cert_vectors
from tests.helpers import ROOT
from tests.test_vectors_export import run_command

if TYPE_CHECKING:
    import types

ADAPTERS = ROOT / "fuzz" / "adapters"
NAIVE = [sys.executable, "-S", str(ADAPTERS / "naive_cert_parser.py")]  # stdlib only: -S
GHCB = [sys.executable, str(ADAPTERS / "ghcb_cert_parser.py")]
ERROR_RULES = {
    "missing-terminator",
    "zero-guid-entry",
    "u32-wrap",
    "out-of-bounds",
    "offset-in-header",
    "duplicate-guid",
    "overlap",
}


def adapter(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, ADAPTERS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = run_command


@pytest.fixture(scope="module")
def naive_run() -> tuple[int, dict[str, Any]]:
    """The naive adapter through the command line, a subprocess per input: the golden and
    hostile vectors (generated tables: in process, below, where a call costs no process)."""
    words = ["--json", "--max-examples", "0", "--timeout", "60", "--", *NAIVE]
    status, text = cli("difftest", "certs", *words)
    return status, json.loads(text)


@pytest.fixture(scope="module")
def naive_report() -> dt.DiffReport:
    """The naive adapter in process (the Python form), with generated tables."""
    return dt.difftest(dt.cert_parser(adapter("naive_cert_parser").parse), max_examples=20)


def test_naive_adapter_disagreements_are_found(naive_run: tuple[int, dict[str, Any]]) -> None:
    """Exit 1; every golden vector the naive parser gets wrong is listed by name; each error
    rule of ghcb appears as an accepted-invalid class; skipping empty entries shows as
    different entries on a valid table."""
    status, doc = naive_run
    assert status == 1
    assert doc["ok"] is False
    assert doc["inputs"]["golden"] == len(cert_vectors())
    assert doc["inputs"]["hostile"] == 13
    assert doc["disagreement_count"] == len(doc["disagreements"])
    golden = {d["source"]: d for d in doc["disagreements"] if d["source"].startswith("golden:")}
    for d in golden.values():  # a vector added to certs.json may join these: the same kinds
        assert d["kind"] in {"accepts-invalid", "different-entries"}
        assert (d["kind"] == "accepts-invalid") == (not d["ghcb"]["accepted"])
    assert set(golden) >= {
        "golden:u32_wrap",
        "golden:amplification_480",
        "golden:overlap_worst_case",
        "golden:zero_guid_entry",
        "golden:missing_terminator",
        "golden:truncated_entry",
        "golden:offset_in_header",
        "golden:overlap",
        "golden:duplicate_guid",
        "golden:zero_length",
    }
    wrap = golden["golden:u32_wrap"]
    assert wrap["kind"] == "accepts-invalid"
    assert wrap["violations"] == ["u32-wrap", "out-of-bounds"]
    assert wrap["ghcb"] == {"accepted": False, "entries": [], "fault": None, "detail": "u32-wrap"}
    assert wrap["parser"]["entries"] == [
        {"guid": "63da758d-e664-4564-adc5-f4b93be8accd", "offset": 0xFFFFFFFE, "length": 3}
    ]
    empty = golden["golden:zero_length"]
    assert empty["kind"] == "different-entries"
    assert empty["violations"] == ["zero-length"]
    assert empty["parser"]["entries"] == []
    hostile = {d["source"] for d in doc["disagreements"] if d["source"].startswith("hostile:")}
    assert hostile == {f"hostile:{rule}" for rule in ERROR_RULES} | {"hostile:zero-length"}
    assert doc["inputs"]["generated"] == 0


def test_generated_classes(naive_report: dt.DiffReport) -> None:
    """Generated tables find each error rule of ghcb as an accepted-invalid class, and
    skipping empty entries as different entries on a valid table: one minimised example
    per class."""
    generated = [d for d in naive_report.disagreements if d.source == "generated"]
    classes = [(d.kind, d.expected.detail) for d in generated]
    assert sorted(classes) == sorted(
        [("accepts-invalid", rule) for rule in ERROR_RULES] + [("different-entries", "")]
    )


def test_disagreements_are_minimised_and_explained(naive_report: dt.DiffReport) -> None:
    """Each generated class is shrunk: at most two 24-byte entries, the terminator and a few
    data bytes; its violations start with the rule that makes ghcb reject it."""
    doc = naive_report.to_json()
    assert isinstance(doc["disagreements"], list)
    generated = {d["ghcb"]["detail"]: d for d in doc["disagreements"] if d["source"] == "generated"}
    assert generated["missing-terminator"]["size"] == 0
    for rule, d in generated.items():
        assert d["size"] <= 3 * 24 + 8, rule
        assert bytes.fromhex(d["hex"]) == bytes.fromhex(d["hex"])[: d["size"]]
        assert d["hex_truncated"] is False
        if rule:
            assert d["violations"][0] == rule


def test_same_seed_same_report(naive_report: dt.DiffReport) -> None:
    """The same seed gives the same disagreements, byte for byte."""
    again = dt.difftest(dt.cert_parser(adapter("naive_cert_parser").parse), max_examples=20)
    assert [d.to_json() for d in again.disagreements] == [
        d.to_json() for d in naive_report.disagreements
    ]
    assert not again.ok


def test_ghcb_adapter_has_no_disagreement() -> None:
    """ghcb's own adapter, in process: zero disagreements over golden, hostile and 60
    generated tables per search."""
    report = dt.difftest(dt.cert_parser(adapter("ghcb_cert_parser").parse), max_examples=60)
    assert report.ok
    assert report.disagreements == []
    assert report.inputs["golden"] == len(cert_vectors())
    assert report.inputs["generated"] >= 30


def test_ghcb_adapter_speaks_the_protocol() -> None:
    """The ghcb adapter as a subprocess: its verdicts are ghcb's on accepted and rejected
    golden tables."""
    parser = dt.command_parser(GHCB, timeout=60.0)  # a loaded machine must not make faults
    vectors = {v.name: v.data for v in cert_vectors()}
    verdicts = {name: parser(vectors[name]) for name in ("virtee_uapi_to_vec_bytes", "u32_wrap")}
    for name, got in verdicts.items():
        expected = dt.ghcb_verdict(vectors[name])
        assert (got.accepted, got.entries, got.fault) == (expected.accepted, expected.entries, None)
    assert verdicts["u32_wrap"].detail == "exit status 1"
    assert len(verdicts["virtee_uapi_to_vec_bytes"].entries) == 4


PY = sys.executable


@pytest.mark.parametrize(
    ("code", "fault"),
    [
        ("import time; time.sleep(60)", "timeout: no answer within 0.5 s"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9"),
        ("print('x' * 5000)", "more than 1000 bytes of output"),
        ("print('not json')", "exit 0 without an entry list"),
        ("print('{}')", "exit 0 without an entry list: expected a list of entries, not dict"),
        ('print(\'[{"guid": "x", "offset": 0, "length": 1}]\')', "exit 0 without an entry list"),
    ],
    ids=["timeout", "signal", "flood", "not-json", "not-a-list", "bad-guid"],
)
def test_parser_faults(code: str, fault: str) -> None:
    """A parser that hangs, dies, floods or prints no entry list is a fault, bounded."""
    # Only the sleeper should reach the time limit: the others get a generous one, so a slow
    # interpreter start on a loaded machine cannot turn their fault into a timeout.
    timeout = 0.5 if fault.startswith("timeout") else 60.0
    parser = dt.command_parser([PY, "-c", code], timeout=timeout, max_output=1000)
    verdict = parser(bytes(24))
    assert verdict.accepted is False
    assert verdict.fault is not None
    assert verdict.fault.startswith(fault)


def test_python_form() -> None:
    """Entries as mappings or tuples, GUIDs as str / UUID / bytes; an exception rejects; a
    result that is not an entry list is a fault."""
    guid = "63da758d-e664-4564-adc5-f4b93be8accd"
    forms: list[object] = [
        [{"guid": guid, "offset": 48, "length": 1}],
        [(uuid.UUID(guid), 48, 1)],
        [(uuid.UUID(guid).bytes, 48, 1)],
    ]
    for form in forms:

        def returns(_: bytes, result: object = form) -> object:
            return result

        assert dt.cert_parser(returns)(b"") == dt.Verdict(True, ((guid, 48, 1),))

    def boom(data: bytes) -> object:
        return data[100]

    assert dt.cert_parser(boom)(b"") == dt.Verdict(False, detail="IndexError: index out of range")
    assert (
        dt.cert_parser(lambda _: 5)(b"").fault == "bad result: expected a list of entries, not int"
    )
    assert dt.cert_parser(lambda _: [(guid, -1, 1)])(b"").fault == (
        "bad result: offset must be an int >= 0, not -1"
    )
    with pytest.raises(TypeError):
        dt.cert_parser("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dt.command_parser([])
    with pytest.raises(TypeError):
        dt.difftest(dt.cert_parser(boom), max_examples=-1)


def test_usage_errors(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that does not exist, a folder without vectors and a missing hypothesis are
    usage errors (exit 2, JSON error object)."""
    status, text = cli("difftest", "certs", "--json", "--", str(tmp_path / "no-such-parser"))
    assert status == 2
    assert json.loads(text)["error"]["code"] == "usage"
    status, text = cli("difftest", "certs", "--json", "--spec", str(tmp_path), "--", *NAIVE)
    assert status == 2
    assert "no golden vectors" in json.loads(text)["error"]["message"]
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    status, text = cli("difftest", "certs", "--json", "--", *NAIVE)
    assert status == 2
    assert "pip install 'ghcb[hypothesis]'" in json.loads(text)["error"]["message"]


def test_wired_into_the_ghcb_command(tmp_path: Any) -> None:
    """`ghcb difftest certs` and `ghcb vectors export` are commands of `ghcb` itself: a
    missing parser command line is a usage error (2, one JSON object); the export writes its
    manifest (0)."""
    from ghcb.cli import main

    out = io.StringIO()
    assert main(["difftest", "certs", "--json"], out) == 2
    assert json.loads(out.getvalue())["ok"] is False
    out = io.StringIO()
    status = main(["vectors", "export", str(tmp_path / "v"), "--json"], out)
    assert status == 0
    assert json.loads(out.getvalue())["ok"] is True
    assert (tmp_path / "v" / "manifest.json").is_file()


USAGE = (
    "usage: ghcb difftest certs [-h] [--max-examples N] [--seed S] [--timeout SECONDS] "
    "[--spec DIR] [--json] CMD [CMD ...]"
)


@pytest.mark.parametrize("option", ["--max-examples", "--seed", "--timeout"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("\u0661\u0662", "not a number: '\u0661\u0662' (decimal or 0x-prefixed hex)"),  # ١٢
        (" 5", "not a number: ' 5' (decimal or 0x-prefixed hex)"),
        ("5 ", "not a number: '5 ' (decimal or 0x-prefixed hex)"),
        ("1_0", "not a number: '1_0' (decimal or 0x-prefixed hex)"),
        ("+3", "not a number: '+3' (decimal or 0x-prefixed hex)"),
        ("-1", "not a number: '-1' (decimal or 0x-prefixed hex)"),
        ("0b1", "not a number: '0b1' (decimal or 0x-prefixed hex)"),
        ("1.5", "not a number: '1.5' (decimal or 0x-prefixed hex)"),
        ("", "not a number: '' (decimal or 0x-prefixed hex)"),
    ],
)
def test_numbers_are_strict(
    option: str, value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every number of `difftest certs` is decimal or 0x hex, ASCII digits only (the parser
    of every other command): anything else is a usage error, status 2, one usage line and the
    reason, before any parser runs."""
    status, text = cli("difftest", "certs", f"{option}={value}", "--", "false")
    assert (status, text) == (2, "")
    assert capsys.readouterr().err.splitlines() == [
        USAGE,
        f"ghcb difftest certs: error: argument {option}: {reason}",
    ]


def test_numbers_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout is whole seconds, 1 to a day."""
    for value, shown in (("0", "0"), ("86401", "86401"), ("0x15181", "0x15181")):
        status, _ = cli("difftest", "certs", "--timeout", value, "--", "false")
        assert status == 2
        assert capsys.readouterr().err.splitlines()[1] == (
            f"ghcb difftest certs: error: argument --timeout: {shown} is outside 1..0x15180"
        )


@pytest.mark.parametrize(
    ("words", "examples", "seed", "timeout"),
    [
        ([], dt.DEFAULT_MAX_EXAMPLES, 0, dt.DEFAULT_TIMEOUT),
        (["--max-examples", "0", "--seed", "12", "--timeout", "7"], 0, 12, 7),
        (["--max-examples", "0x0", "--seed", "0X1f", "--timeout", "0x15180"], 0, 31, 86400),
    ],
)
def test_numbers_accepted(
    words: list[str],
    examples: int,
    seed: int,
    timeout: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decimal and 0x hex reach the library as ints; an option left out is the library's
    default."""
    seen: dict[str, object] = {}

    def command_parser(argv: list[str], **limits: float) -> dt.CertParser:
        seen["timeout"] = limits.get("timeout", dt.DEFAULT_TIMEOUT)
        return dt.cert_parser(lambda _: [])

    def difftest(_: dt.CertParser, **kwargs: object) -> dt.DiffReport:
        seen.update(kwargs)
        return dt.DiffReport()

    monkeypatch.setattr(dt, "command_parser", command_parser)
    monkeypatch.setattr(dt, "difftest", difftest)
    status, text = cli("difftest", "certs", *words, "--json", "--", "false")
    assert status == 0
    assert json.loads(text)["ok"] is True
    assert seen == {"timeout": timeout, "max_examples": examples, "seed": seed, "spec": None}


MISSING_HYPOTHESIS = r"""
import sys
sys.modules["hypothesis"] = None  # what a missing package looks like to import
import ghcb
from ghcb.cli import main
print("status", main(["difftest", "certs", "--", "true"]))
try:
    import ghcb.strategies
except ghcb.MissingExtraError as e:
    print("caught", isinstance(e, ImportError), e.extra, e.name, e, sep="|")
"""


def test_missing_hypothesis_is_an_install_hint() -> None:
    """Without hypothesis, `ghcb difftest certs` exits 2 with the install line (no
    traceback), and `import ghcb.strategies` raises `ghcb.MissingExtraError`, an
    ImportError, with the same hint."""
    proc = subprocess.run(
        [sys.executable, "-c", MISSING_HYPOTHESIS], capture_output=True, text=True, check=True
    )
    assert proc.stderr == (
        "ghcb: ghcb difftest needs the 'hypothesis' package: pip install 'ghcb[hypothesis]'\n"
    )
    assert proc.stdout.splitlines() == [
        "status 2",
        "caught|True|hypothesis|hypothesis|ghcb.strategies needs the 'hypothesis' package: "
        "pip install 'ghcb[hypothesis]'",
    ]
    assert "MissingExtraError" in ghcb.__all__
    assert ghcb.MissingExtraError is MissingExtraError
