"""The ghcb command: JSON contracts of DESIGN.md §3 and exit statuses."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import struct
import subprocess
import sys
import tracemalloc
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertGuid, GhcbPage, build_page, check_cert_table
from ghcb.certs import located_entries
from ghcb.cli import main
from tests.helpers import SPEC, assemble, load_vectors

if TYPE_CHECKING:
    from collections.abc import Callable

EXT = str(SPEC / "vectors/pages/snp_ext_guest_request.bin")
EXTRA = str(SPEC / "vectors/pages/ext_guest_request_extra_bit_127.bin")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


def run_json(*argv: str) -> tuple[int, Any]:
    status, text = run(*argv, "--json")
    assert text.count("\n") == 1, "exactly one JSON object"
    return status, json.loads(text)


def test_page_decode_json() -> None:
    """page decode --json prints the contract's keys with integer values."""
    status, doc = run_json("page", "decode", EXT)
    assert status == 0
    assert set(doc) == {
        "ok",
        "fields",
        "valid",
        "exit_code",
        "shared_buffer",
        "protocol_version",
        "ghcb_usage",
    }
    assert doc["exit_code"] == {"value": 0x80000012, "name": "SNP_EXT_GUEST_REQUEST"}
    assert doc["fields"]["rax"] == 0x80000
    assert doc["fields"]["rbx"] == 4
    assert doc["valid"] == ["rax", "rbx", "sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"]
    assert doc["shared_buffer"] == "00" * 2032
    assert (doc["protocol_version"], doc["ghcb_usage"]) == (2, 0)
    assert all(isinstance(v, int) for v in doc["fields"].values())


def test_page_decode_text() -> None:
    """The readable form names the exit and lists valid fields with offsets and bits."""
    status, text = run("page", "decode", EXT)
    assert status == 0
    assert "0x80000012 SNP_EXT_GUEST_REQUEST" in text
    assert "rbx                0x318   99  yes    0x4" in text


def test_page_check_json_warnings_only() -> None:
    """Warnings alone: ok is true and the status 0."""
    status, doc = run_json("page", "check", EXTRA)
    assert status == 0
    assert doc["ok"] is True
    assert [v["code"] for v in doc["violations"]] == [
        "undefined-valid-bit",
        "reserved-nonzero",
        "reserved-nonzero",
    ]
    assert set(doc["violations"][0]) == {"code", "severity", "offset", "message", "spec"}


def test_page_check_errors(tmp_path: pathlib.Path) -> None:
    """Errors: ok false, status 1."""
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(4096))
    status, doc = run_json("page", "check", str(bad))
    assert status == 1
    assert doc["ok"] is False
    # KVM's order: the three exit fields are not valid (MISSING_INPUT comes first), and
    # exit code 0 (READ_CR0) is no exit KVM accepts.
    assert [(v["code"], v["offset"]) for v in doc["violations"]] == [
        ("missing-input", 0x390),
        ("missing-input", 0x398),
        ("missing-input", 0x3A0),
        ("invalid-event", 0x390),
        ("protocol-version", 0xFFA),  # a warning: 0 is below GHCB_PROTOCOL_MIN
    ]


def test_unreadable_file_is_status_2() -> None:
    """A file that cannot be read is a usage error; the rule says why."""
    status, doc = run_json("page", "decode", "/nonexistent/page.bin")
    assert status == 2
    assert doc["error"] == {
        "code": "usage",
        "rule": "input-unreadable",
        "message": "ghcb: cannot read /nonexistent/page.bin: No such file or directory",
    }


def test_wrong_length_decode_is_status_1(tmp_path: pathlib.Path) -> None:
    """A readable file that is not a page is a finding, reported as JSON."""
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 10)
    status, doc = run_json("page", "decode", str(short))
    assert status == 1
    assert doc["error"]["code"] == "page-length"


@pytest.mark.parametrize("vec", load_vectors("exitinfo2")["guest_errors"], ids=lambda v: v["name"])
def test_exitinfo2_decode(vec: dict[str, Any]) -> None:
    """exitinfo2 decode splits every vector as the contract says."""
    status, doc = run_json("exitinfo2", "decode", vec["exitinfo2"])
    assert status == 0
    assert doc == {
        "ok": True,
        "value": int(vec["exitinfo2"], 16),
        "vmm_error": {"value": vec["vmm"], "name": vec["vmm_name"]},
        "fw_error": {"value": vec["fw"], "name": vec["fw_name"]},
    }


@pytest.mark.parametrize("vec", load_vectors("msr")["values"], ids=lambda v: str(v["code"]))
def test_msr_decode(vec: dict[str, Any]) -> None:
    """msr decode reports the code and its fields."""
    status, doc = run_json("msr", "decode", vec["value"])
    assert status == 0
    assert doc["code"]["name"] == vec["code"]
    for name, value in vec.get("fields", {"data": vec.get("data")}).items():
        assert doc[name] == value


@pytest.mark.parametrize("value", ["-1", "0x10000000000000000", "zebra"])
def test_bad_values_are_status_2(value: str) -> None:
    """Values that are not u64s are usage errors."""
    for group in ("exitinfo2", "msr"):
        status, doc = run_json(group, "decode", value)
        assert status == 2
        assert doc["ok"] is False


def test_python_dash_m() -> None:
    """python -m ghcb runs the same command."""
    proc = subprocess.run(
        [sys.executable, "-m", "ghcb", "exitinfo2", "decode", "0x100000000", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["vmm_error"]["name"] == "INVALID_LEN"


class TestCerts:
    @pytest.fixture
    def milan(self, tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
        vectors = pytest.importorskip("omne_attest.vectors")
        files = {}
        for name in ("ark", "ask", "vcek"):
            files[name] = tmp_path / f"{name}.der"
            files[name].write_bytes(getattr(vectors, name)())
        return files

    def test_build_parse_real_milan_chain(
        self, milan: dict[str, pathlib.Path], tmp_path: pathlib.Path
    ) -> None:
        """build writes the 4,762-byte table; parse lists the right subjects."""
        out = tmp_path / "table.bin"
        status, doc = run_json(
            "certs",
            "build",
            "--ark",
            str(milan["ark"]),
            "--ask",
            str(milan["ask"]),
            "--vcek",
            str(milan["vcek"]),
            "-o",
            str(out),
        )
        assert status == 0
        assert (doc["size"], doc["pages"]) == (4762, 2)
        assert out.stat().st_size == 4762
        (tmp_path / "x").mkdir()
        status, doc = run_json("certs", "parse", str(out), "--extract", str(tmp_path / "x"))
        assert status == 0
        subjects = [(e["name"], e["subject"].split(",")[0]) for e in doc["entries"]]
        assert subjects == [
            ("ARK", "CN=ARK-Milan"),
            ("ASK", "CN=SEV-Milan"),
            ("VCEK", "CN=SEV-VCEK"),
        ]
        assert [e["offset"] for e in doc["entries"]] == [96, 96 + 1639, 96 + 1639 + 1677]
        assert (tmp_path / "x" / "2-vcek.der").read_bytes() == milan["vcek"].read_bytes()
        status, doc = run_json("certs", "check", str(out))
        assert status == 0
        assert doc == {
            "ok": True,
            "violations": [],
            "errors": 0,
            "warnings": 0,
            "entries_total": 3,
            "entries": [
                {
                    "guid": "c0b406a4-a803-4952-9743-3fb6014cd0ae",
                    "name": "ARK",
                    "offset": 96,
                    "length": 1639,
                },
                {
                    "guid": "4ab7b379-bbac-4fe4-a02f-05aef327c782",
                    "name": "ASK",
                    "offset": 1735,
                    "length": 1677,
                },
                {
                    "guid": "63da758d-e664-4564-adc5-f4b93be8accd",
                    "name": "VCEK",
                    "offset": 3412,
                    "length": 1350,
                },
            ],
        }

    def test_build_pad_and_extra(self, tmp_path: pathlib.Path) -> None:
        """--pad fills whole pages; --extra adds an entry under any GUID."""
        payload = tmp_path / "p.bin"
        payload.write_bytes(b"platform")
        out = tmp_path / "t.bin"
        guid = "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"
        status, doc = run_json(
            "certs", "build", "--extra", f"{guid}={payload}", "--pad", "-o", str(out)
        )
        assert status == 0
        assert doc["size"] == 4096
        assert doc["entries"] == [
            {"guid": guid, "name": "GOOGLE_EXTRA_PLATFORM_INFO", "offset": 48, "length": 8}
        ]

    @pytest.mark.parametrize(
        "argv",
        [
            ["--ask", "a", "--asvk", "b"],
            ["--extra", "not-a-guid=x"],
            ["--extra", "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"],
            [],
            ["--vcek", "/nonexistent"],
        ],
    )
    def test_build_usage_errors(self, argv: list[str], tmp_path: pathlib.Path) -> None:
        """Unusable build arguments exit 2."""
        status, doc = run_json("certs", "build", *argv, "-o", str(tmp_path / "o"))
        assert status == 2
        assert doc["ok"] is False

    def test_build_refuses_duplicates(self, tmp_path: pathlib.Path) -> None:
        """A table that would break a rule is not written (status 1)."""
        empty = tmp_path / "empty.der"
        empty.write_bytes(b"")
        status, doc = run_json("certs", "build", "--vcek", str(empty), "-o", str(tmp_path / "o"))
        assert status == 1
        assert doc["error"]["code"] == "zero-length"
        assert not (tmp_path / "o").exists()

    @pytest.mark.parametrize("vec", load_vectors("certs")["vectors"], ids=lambda v: v["name"])
    def test_check_vectors(self, vec: dict[str, Any], tmp_path: pathlib.Path) -> None:
        """certs check: contract keys, status 1 exactly when there are errors."""
        path = tmp_path / "t.bin"
        path.write_bytes(assemble(vec["parts"]))
        status, doc = run_json("certs", "check", str(path))
        assert set(doc) == {"ok", "violations", "errors", "warnings", "entries", "entries_total"}
        assert doc["ok"] is (vec["expect"]["strict_error"] is None)
        assert status == (0 if doc["ok"] else 1)
        for row in doc["entries"]:
            assert set(row) == {"guid", "name", "offset", "length"}

    def test_parse_strict_error_status_1(self, tmp_path: pathlib.Path) -> None:
        """A broken table: parse fails with status 1, --lenient lists what is sound."""
        path = tmp_path / "t.bin"
        path.write_bytes(bytes(10))
        status, doc = run_json("certs", "parse", str(path))
        assert status == 1
        assert doc["error"]["code"] == "missing-terminator"
        status, doc = run_json("certs", "parse", str(path), "--lenient")
        assert status == 0
        assert doc["entries"] == []

    def test_parse_text(self, tmp_path: pathlib.Path) -> None:
        """The readable listing shows names, offsets and 'not X.509' for filler payloads."""
        vec = next(v for v in load_vectors("certs")["vectors"] if v["name"].startswith("virtee"))
        path = tmp_path / "t.bin"
        path.write_bytes(assemble(vec["parts"]))
        status, text = run("certs", "parse", str(path))
        assert status == 0
        assert "ARK      c0b406a4-a803-4952-9743-3fb6014cd0ae  offset 0x0078  length    25" in text
        assert "(not X.509)" in text


# -- page encode / check --abi ----------------------------------------------------------------
EXT_PAIRS = (
    "sw_exit_code=SNP_EXT_GUEST_REQUEST",
    "sw_exit_info_1=0x7f000",
    "sw_exit_info_2=0x7e000",
    "rax=0x80000",
    "rbx=4",
    "protocol_version=2",
)


def test_page_encode_pairs_is_the_golden_page(tmp_path: pathlib.Path) -> None:
    """FIELD=VALUE pairs set values and valid bits: the golden Extended Guest Request page."""
    out = tmp_path / "p.bin"
    status, text = run("page", "encode", *EXT_PAIRS, "-o", str(out))
    assert status == 0
    assert out.read_bytes() == (SPEC / "vectors/pages/snp_ext_guest_request.bin").read_bytes()
    assert text == (
        f"wrote {out}: 4096 bytes, valid: rax, rbx, sw_exit_code, sw_exit_info_1, sw_exit_info_2\n"
    )


def test_page_encode_hex_and_json_round_trip(tmp_path: pathlib.Path) -> None:
    """Without -o the page is plain hex; decode --json output encodes back to the same bytes
    (valid set as listed, not recomputed)."""
    golden = pathlib.Path(EXTRA).read_bytes()
    status, text = run("page", "encode", *EXT_PAIRS)
    assert status == 0
    assert len(text.splitlines()) == 128
    assert bytes.fromhex(text) == (SPEC / "vectors/pages/snp_ext_guest_request.bin").read_bytes()
    status, doc = run_json("page", "decode", EXT)
    source = tmp_path / "page.json"
    source.write_text(json.dumps(doc))
    out = tmp_path / "back.bin"
    assert run("page", "encode", "--from", str(source), "-o", str(out))[0] == 0
    assert out.read_bytes() == (SPEC / "vectors/pages/snp_ext_guest_request.bin").read_bytes()
    # a flat object: valid bits set for each field given
    source.write_text(json.dumps({"sw_exit_code": 0x72, "rax": 1, "shared_buffer": "ab"}))
    status, doc = run_json("page", "encode", "--from", str(source))
    assert (status, doc["valid"], doc["shared_buffer"][:4]) == (0, ["rax", "sw_exit_code"], "ab00")
    assert golden != out.read_bytes()


def test_page_encode_binary_to_stdout() -> None:
    """-o - writes the 4096 bytes to stdout and nothing else."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    assert main(["page", "encode", "rax=1", "-o", "-"], stream) == 0
    stream.flush()
    assert raw.getvalue() == build_page(GhcbPage.with_fields(rax=1))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["nope=1"], "no GHCB field 'nope'"),
        (["rax"], "expected FIELD=VALUE"),
        (["rax=1", "rax=2"], "field rax given more than once"),
        (["cpl=256"], "field cpl: 256 is outside 0..0xff"),
        (["rax=0b1"], "not a number"),
        (["shared_buffer=zz"], "not hex"),
        (["shared_buffer=" + "00" * 2033], "2033 bytes, the field holds 2032"),
        (["-o", "-"], "cannot also carry --json"),
    ],
)
def test_page_encode_usage(argv: list[str], words: str) -> None:
    """Unusable encode arguments: status 2 and the reason."""
    status, doc = run_json("page", "encode", *argv)
    assert status == 2
    assert words in doc["error"]["message"]


def test_page_check_abi(tmp_path: pathlib.Path) -> None:
    """--abi picks the tree whose validator judges: a guest request whose request and response
    pages are both 0 is refused by merged KVM only (the v15 tree has no such check)."""
    page = tmp_path / "p.bin"
    pairs = ["sw_exit_code=SNP_GUEST_REQUEST", "sw_exit_info_1=0", "sw_exit_info_2=0"]
    assert run("page", "encode", *pairs, "-o", str(page))[0] == 0
    for abi, ok in (("merged", False), ("v15", True)):
        status, doc = run_json("page", "check", str(page), "--abi", abi)
        assert (status, doc["ok"], doc["abi"]) == (0 if ok else 1, ok, abi)
        errors = [v["code"] for v in doc["violations"] if v["severity"] == "error"]
        assert errors == ([] if ok else ["request-page-equal"])


def run_stdin(data: bytes, *argv: str) -> tuple[int, Any]:
    """Run as a subprocess with ``data`` on stdin; the JSON it prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "ghcb", *argv], input=data, capture_output=True, check=False
    )
    return proc.returncode, json.loads(proc.stdout)


# -- values -----------------------------------------------------------------------------------
@pytest.mark.parametrize("vec", load_vectors("exitinfo2")["guest_errors"], ids=lambda v: v["name"])
def test_exitinfo2_encode(vec: dict[str, Any]) -> None:
    """exitinfo2 encode packs each vector back, by number and by name."""
    status, doc = run_json("exitinfo2", "encode", "--vmm", str(vec["vmm"]), "--fw", str(vec["fw"]))
    assert (status, doc["value"]) == (0, int(vec["exitinfo2"], 16))
    if vec["vmm_name"] and vec["fw_name"]:
        argv = ["--vmm", vec["vmm_name"].lower(), "--fw", vec["fw_name"]]
        assert run_json("exitinfo2", "encode", *argv)[1]["value"] == int(vec["exitinfo2"], 16)


@pytest.mark.parametrize("vec", load_vectors("msr")["values"], ids=lambda v: str(v["code"]))
def test_msr_encode(vec: dict[str, Any]) -> None:
    """msr encode CODE FIELD=VALUE... gives each vector's value back."""
    status, doc = run_json("msr", "decode", vec["value"])
    fields = {k: v for k, v in doc.items() if k not in ("ok", "msr", "code")}
    code = doc["code"]["name"] or str(doc["code"]["value"])
    pairs = [f"{k}={v}" for k, v in fields.items()]
    status, back = run_json("msr", "encode", code, *pairs)
    assert (status, back) == (0, doc)


def test_msr_encode_usage() -> None:
    """An unknown field, or fields other than data for an unknown code, are usage errors."""
    assert run_json("msr", "encode", "CPUID_REQ", "nope=1")[0] == 1  # UnknownFieldError
    status, doc = run_json("msr", "encode", "0x999", "gfn=1")
    assert status == 2
    assert "its only field is data" in doc["error"]["message"]
    assert run_json("msr", "encode", "0x999", "data=5")[1]["msr"] == 0x5999


# -- kvm decode -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("abi", "exit_reason", "fields", "ret_name"),
    [
        ("merged", 43, {"gpa": 0x80000, "npages": 2, "ret": 28}, "ENOSPC"),
        ("v15", 40, {"type": 1, "data_gpa": 0x80000, "data_npages": 1, "ret": 1}, "INVALID_LEN"),
    ],
)
def test_kvm_decode(
    abi: str, exit_reason: int, fields: dict[str, int], ret_name: str, tmp_path: pathlib.Path
) -> None:
    """kvm decode reads either ABI's exit (as hex here); the other ABI's bytes: status 1."""
    from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi, encode_kvm_run

    data = encode_kvm_run(MergedAbi() if abi == "merged" else V15Abi(), fields)
    path = tmp_path / "run.hex"
    path.write_text(data.hex())
    status, doc = run_json("kvm", "decode", str(path), "--abi", abi)
    assert status == 0
    assert doc["exit_reason"] == {"value": exit_reason, "name": doc["exit_reason"]["name"]}
    assert {k: doc["exit"][k] for k in fields} == fields
    assert doc["ret"]["name"] == ret_name
    other = "v15" if abi == "merged" else "merged"
    status, doc = run_json("kvm", "decode", str(path), "--abi", other)
    assert (status, doc["ok"]) == (1, False)
    assert run_json("kvm", "decode", EXT)[1]["error"]["rule"] == "input-too-long"


# -- golden pages: violations and KVM's answer ------------------------------------------------
CHECK_PAGES = load_vectors("pages_check")["vectors"]


@pytest.mark.parametrize("vec", CHECK_PAGES, ids=[v["name"] for v in CHECK_PAGES])
@pytest.mark.parametrize("abi", ["merged", "v15"])
def test_page_check_golden(vec: dict[str, Any], abi: str) -> None:
    """`ghcb page check` on each golden page: exactly its violations, in order, and KVM's
    expected response, per ABI and as the vector's host says to judge it; status 1 exactly
    when there is an error."""
    host = vec.get("host", {})
    argv = ["page", "check", str(SPEC / "vectors" / vec["file"]), "--abi", abi]
    if not host.get("snp", True):
        argv.append("--sev-es")
    if host.get("ghcb_gpa") is not None:
        argv += ["--ghcb-gpa", hex(host["ghcb_gpa"])]
    if "ghcb_version" in host:
        argv += ["--ghcb-version", str(host["ghcb_version"])]
    status, doc = run_json(*argv)
    got = [{k: v[k] for k in ("code", "severity", "offset")} for v in doc["violations"]]
    assert got == vec["expect"]["violations"][abi]
    want = vec["expect"]["expected_response"][abi]
    if want is None:
        assert (doc["expected_response"], doc["stage"]) == (None, None)
    else:
        assert {**doc["expected_response"], "stage": doc["stage"]} == want
        assert doc["responses"][abi] == doc["expected_response"]
    errors = any(v["severity"] == "error" for v in doc["violations"])
    assert (status, doc["ok"]) == ((1, False) if errors else (0, True))


def test_page_check_text_names_the_answer() -> None:
    """The readable form ends with KVM's answer, and the other tree's when it differs."""
    status, text = run("page", "check", str(SPEC / "vectors/pages/check/mmio_length.bin"))
    assert status == 1
    assert text.splitlines()[-2:] == [
        "KVM (merged) answers SW_EXITINFO1=0x2 SW_EXITINFO2=0x5 INVALID_INPUT (handler)",
        "  (v15 answers SW_EXITINFO1=0x0 SW_EXITINFO2=0x0 (accepted))",
    ]


# -- psc --------------------------------------------------------------------------------------
PSC = load_vectors("psc")["vectors"]


@pytest.mark.parametrize("vec", PSC, ids=[v["name"] for v in PSC])
def test_psc_decode_and_check(vec: dict[str, Any], tmp_path: pathlib.Path) -> None:
    """psc decode reads each vector's descriptor (hex); psc check reports its violations."""
    from ghcb.psc import parse_psc

    path = tmp_path / "psc.hex"
    path.write_text(vec["descriptor"])
    status, doc = run_json("psc", "decode", str(path))
    assert status == 0
    assert doc == {"ok": True, **parse_psc(bytes.fromhex(vec["descriptor"])).to_json()}
    window = 253 if vec["tree"] == "v15" else (2032 - 8 - vec["offset"]) // 8
    status, doc = run_json("psc", "check", str(path), "--max-entries", str(window))
    assert [v["code"] for v in doc["violations"]] == vec["violations"]
    assert status == (1 if not doc["ok"] else 0)


def test_psc_decode_from_a_page() -> None:
    """--offset 0x800 takes the descriptor out of a whole GHCB page (the shared buffer)."""
    page = build_page(GhcbPage.empty())
    status, doc = run_stdin(page, "psc", "decode", "-", "--offset", "0x800", "--json")
    assert status == 0
    assert (doc["cur_entry"], doc["end_entry"], len(doc["entries"])) == (0, 0, 253)


# -- bounded on hostile tables ----------------------------------------------------------------
def overlapping_table(n: int, size: int, guid: Callable[[int], bytes]) -> bytes:
    """``n`` entries, each naming most of a ``size``-byte table (the dstack amplification)."""
    out = bytearray(size)
    header_end = 24 * (n + 1)
    for i in range(n):
        offset = header_end + i % 4096
        struct.pack_into("<16sII", out, 24 * i, guid(i), offset, size - offset - 4096)
    return bytes(out)


@pytest.mark.parametrize(
    "guid",
    [lambda i: uuid.UUID(int=i + 1).bytes, lambda i: CertGuid.ASK.value.bytes],
    ids=["distinct-guids", "all-ask"],
)
@pytest.mark.parametrize("command", ["check", "parse"])
def test_overlapping_table_is_bounded(
    command: str, guid: Callable[[int], bytes], tmp_path: pathlib.Path
) -> None:
    """1 MiB of 20,000 entries each naming ~540 KB: memory within 8x the input (naming
    copies no payload per entry), output capped with the total given, every error counted."""
    data = overlapping_table(20000, 1 << 20, guid)
    path = tmp_path / "t.bin"
    path.write_bytes(data)
    argv = ["certs", command, str(path), "--json"] + (["--lenient"] if command == "parse" else [])
    tracemalloc.start()
    try:
        status, text = run(*argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(data)
    assert len(text) < 64 << 10
    doc = json.loads(text)
    if command == "check":
        assert (status, doc["entries_total"], len(doc["entries"])) == (1, 20000, 64)
        every = check_cert_table(data, limit_per_code=None)
        assert (doc["errors"], doc["warnings"]) == (
            sum(v.severity.value == "error" for v in every),
            sum(v.severity.value == "warning" for v in every),
        )
        assert doc["errors"] >= 19999  # all counted, at most 16 a code listed
        assert len(doc["violations"]) < 200
    else:
        kept = located_entries(data, strict=False)
        assert (status, doc["entries_total"], len(doc["entries"])) == (0, len(kept), len(kept))


def test_entry_flood_parse_is_bounded(tmp_path: pathlib.Path) -> None:
    """A valid table of one-byte certificates, one entry per 25 bytes: parse walks it without
    an object per entry (within 8x the input), lists 64 and counts them all."""
    n = (2 << 20) // 25 - 1
    header_end = 24 * (n + 1)
    data = bytearray(header_end + n)
    for i in range(n):
        struct.pack_into("<16sII", data, 24 * i, uuid.UUID(int=i + 1).bytes, header_end + i, 1)
    path = tmp_path / "flood.bin"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        status, text = run("certs", "parse", str(path), "--json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(data)
    doc = json.loads(text)
    assert (status, doc["entries_total"], len(doc["entries"])) == (0, n, 64)
    assert doc["entries"][63] == {
        "guid": str(uuid.UUID(int=64)),
        "name": None,
        "offset": header_end + 63,
        "length": 1,
        "sha256": hashlib.sha256(b"\0").hexdigest(),
        "subject": None,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--ghcb-gpa", "0"), "--ghcb-gpa: ghcb_gpa = 0x0 is 0"),
        (("--ghcb-version", "1"), "--ghcb-version: ghcb_version = 1 is outside 2..2"),
    ],
)
def test_page_check_refuses_a_host_kvm_cannot_have(options: tuple[str, ...], message: str) -> None:
    """No GHCB at all, or an SNP VM on GHCB v1 (KVM_SEV_INIT2 refuses it): bad arguments,
    exit 2 with code "usage", not findings."""
    status, doc = run_json("page", "check", EXT, *options)
    assert (status, doc["ok"], doc["error"]["code"]) == (2, False, "usage")
    assert message in doc["error"]["message"]


def test_page_check_sev_es_on_ghcb_v1() -> None:
    """The help's example: an SEV-ES VM on GHCB v1 with the GHCB at 0x7f000 is a host KVM can
    have; the SNP-only exit is KVM's MISSING_INPUT answer (sev_es_validate_vmgexit)."""
    status, doc = run_json(
        "page", "check", EXT, "--sev-es", "--ghcb-gpa", "0x7f000", "--ghcb-version", "1"
    )
    assert status == 1
    assert doc["expected_response"] == {"exit_info_1": 2, "exit_info_2": 4}
