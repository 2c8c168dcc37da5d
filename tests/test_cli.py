"""The ghcb command: JSON contracts of DESIGN.md §3 and exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from ghcb.cli import main
from tests.helpers import SPEC, load_vectors

if TYPE_CHECKING:
    import pathlib

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
    assert doc["violations"][0]["code"] == "invalid-event"


def test_unreadable_file_is_status_2() -> None:
    """A file that cannot be read is a usage error."""
    status, doc = run_json("page", "decode", "/nonexistent/page.bin")
    assert status == 2
    assert doc["error"]["code"] == "usage"


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
