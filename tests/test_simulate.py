"""`ghcb simulate` and `ghcb pki generate`: every option, exact values from the JSON, both ABIs."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest

from ghcb.certs import CertGuid, build_cert_table, pages_needed
from ghcb.cli import main
from ghcb.hypervisor.pki import chain

if TYPE_CHECKING:
    from pathlib import Path

MERGED_EXIT, V15_EXIT = 43, 40
GENERIC = {"merged": 0xFFFFFFFF00000000, "v15": 0x8000000000000000}
INVALID_LEN, BUSY = 1 << 32, 2 << 32
ETIMEDOUT, EIO = 110, 5


def run(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    status = main(["simulate", *argv, "--json"], out=out)
    text = out.getvalue()
    assert text.count("\n") == 1
    return status, json.loads(text)


def table(signer: str = "vcek") -> bytes:
    return chain("Milan").cert_table(signer)  # type: ignore[arg-type]


@pytest.mark.parametrize(("abi", "reason"), [("merged", MERGED_EXIT), ("v15", V15_EXIT)])
def test_ok_both_abis(abi: str, reason: int) -> None:
    status, doc = run("--abi", abi)
    blob = table()
    need = pages_needed(len(blob))
    assert status == 0
    assert doc["ok"] is True
    assert doc["verified"] is True
    assert (doc["exit_info_1"], doc["exit_info_2"], doc["rbx"]) == (0, 0, need)
    assert doc["certs_hex"] == blob.hex()
    assert [c["name"] for c in doc["certs"]] == ["ARK", "ASK", "VCEK"]
    assert len(bytes.fromhex(doc["report_hex"])) == 1184
    assert doc["report"]["version"] == 5
    assert doc["report"]["vmpl"] == 0
    assert doc["report"]["signing_key"] == "vcek"
    assert doc["report"]["report_data"] == "00" * 64
    assert doc["report"]["policy"] == 0x30000
    assert doc["report"]["chip_id"] == chain("Milan").chip_id.hex()
    assert doc["report"]["reported_tcb"] == {
        "boot_loader": 4,
        "tee": 0,
        "snp": 0x1B,
        "microcode": 0xDE,
    }
    assert "error" not in doc
    first = doc["exits"][0]
    assert first["exit_reason"] == reason
    assert first["kind"] == "request"
    if abi == "merged":
        assert first["before"]["npages"] == need
        assert first["before"]["ret"] == 0
        assert first["after"]["ret"] == 0
        assert first["immediate_exit"] == 1
        assert [e["kind"] for e in doc["exits"]] == ["request", "eintr"]
    else:
        assert first["before"]["data_npages"] == need
        assert first["after"]["flags"] == 1  # NOTIFY_DONE
        assert [e["kind"] for e in doc["exits"]] == ["request", "done"]
        assert doc["exits"][1]["exit_reason"] == V15_EXIT


@pytest.mark.parametrize("abi", ["merged", "v15"])
def test_generic(abi: str) -> None:
    status, doc = run("--abi", abi, "--vmm-answer", "generic")
    assert status == 1
    assert doc["ok"] is False
    assert doc["verified"] is False
    assert doc["exit_info_2"] == GENERIC[abi]
    assert doc["error"]["errno"] == EIO
    assert doc["error"]["exit_info_2"] == GENERIC[abi]
    assert doc["error"]["npages"] is None
    assert doc["report"] is None
    assert doc["report_hex"] is None
    assert doc["certs_hex"] == ""
    assert doc["vmpck_disabled"] is True
    ret = {"merged": EIO, "v15": 1 << 31}[abi]
    assert doc["exits"][0]["after"]["ret"] == ret


@pytest.mark.parametrize("abi", ["merged", "v15"])
def test_invalid_len(abi: str) -> None:
    status, doc = run("--abi", abi, "--vmm-answer", "invalid-len")
    need = pages_needed(len(table()))
    assert status == 1
    assert doc["pages"] == need - 1
    assert (doc["exit_info_1"], doc["exit_info_2"], doc["rbx"]) == (0, INVALID_LEN, need)
    assert doc["error"] == {
        "errno": EIO,
        "errno_name": "EIO",
        "exit_info_2": INVALID_LEN,
        "npages": need,
        "message": doc["error"]["message"],
    }
    field = "npages" if abi == "merged" else "data_npages"
    assert doc["exits"][0]["before"][field] == need - 1
    assert doc["exits"][0]["after"][field] == need
    ret = {"merged": 28, "v15": 1}[abi]  # ENOSPC / INVALID_LEN
    assert doc["exits"][0]["after"]["ret"] == ret
    # the message was re-issued as a plain request: the guest's counter moved on
    assert doc["resumed"][-1]["exit_info_2"] == 0
    assert doc["guest_counter"] == 2


def test_pages_too_few_is_invalid_len() -> None:
    status, doc = run("--pages", "1")
    assert status == 1
    assert (doc["exit_info_2"], doc["rbx"]) == (INVALID_LEN, 2)
    assert run("--pages", "4")[1]["verified"] is True
    assert run("--pages", "4")[1]["pages"] == 4


@pytest.mark.parametrize("abi", ["merged", "v15"])
def test_busy_times_out(abi: str) -> None:
    status, doc = run("--abi", abi, "--vmm-answer", "busy")
    assert status == 1
    assert doc["exit_info_2"] == BUSY
    assert doc["error"]["errno"] == ETIMEDOUT
    assert doc["error"]["errno_name"] == "ETIMEDOUT"
    assert doc["error"]["exit_info_2"] == BUSY
    assert doc["seconds"] == 60.0
    assert doc["busy_answers"] == 31  # t = 0, 2, ..., 60
    assert len(doc["exits"]) == 31
    ret = {"merged": 11, "v15": 2}[abi]  # EAGAIN / BUSY
    assert {e["after"]["ret"] for e in doc["exits"]} == {ret}


@pytest.mark.parametrize("abi", ["merged", "v15"])
def test_no_certs(abi: str) -> None:
    status, doc = run("--abi", abi, "--no-certs")
    assert status == 1
    assert doc["certs_hex"] == "00" * 24
    assert doc["certs"] == []
    assert doc["exit_info_2"] == 0
    assert doc["report"]["version"] == 5  # the report came, it cannot be verified
    assert doc["verified"] is False
    assert doc["ok"] is False
    assert doc["verification"]["problem"] == "the table lacks ARK, ASK, VCEK"


def test_certs_file(tmp_path: Path) -> None:
    milan = chain("Milan")
    blob = build_cert_table([e for e in milan.cert_entries() if e.guid != CertGuid.VCEK.value])
    path = tmp_path / "blob"
    path.write_bytes(blob)
    status, doc = run("--certs", str(path))
    assert status == 1
    assert doc["certs_hex"] == blob.hex()
    assert doc["verification"]["problem"] == "the table lacks VCEK"
    path.write_bytes(table())
    status, doc = run("--certs", str(path), "--pages", "3")
    assert (status, doc["verified"], doc["rbx"]) == (0, True, 3)


def test_vlek() -> None:
    status, doc = run("--signing-key", "vlek")
    assert status == 0
    assert doc["verified"] is True
    assert doc["report"]["signing_key"] == "vlek"
    assert [c["name"] for c in doc["certs"]] == ["ARK", "ASVK", "VLEK"]
    assert doc["certs_hex"] == table("vlek").hex()
    assert doc["verification"] == {
        "signer": "vlek",
        "signature_ok": True,
        "chain_ok": True,
        "problem": None,
    }


@pytest.mark.parametrize("version", [2, 3, 5])
def test_report_versions(version: int) -> None:
    status, doc = run("--report-version", str(version))
    assert status == 0
    assert doc["verified"] is True
    assert doc["report"]["version"] == version
    assert bytes.fromhex(doc["report_hex"])[:4] == version.to_bytes(4, "little")
    fam = doc["report"]["cpuid_fam_id"]
    assert (fam == 0) if version == 2 else (fam == 0x19)


def test_user_data() -> None:
    data = bytes(range(64))
    status, doc = run("--user-data", data.hex())
    assert status == 0
    assert doc["report"]["report_data"] == data.hex()
    assert bytes.fromhex(doc["report_hex"])[0x50:0x90] == data
    status, doc = run("--user-data", "abcd")
    assert doc["report"]["report_data"] == "abcd" + "00" * 62


def test_product_genoa() -> None:
    status, doc = run("--product", "genoa")
    assert status == 0
    assert doc["verified"] is True
    assert doc["product"] == "Genoa"
    assert doc["report"]["chip_id"] == chain("Genoa").chip_id.hex()
    assert doc["report"]["cpuid_mod_id"] == 0x11


@pytest.mark.parametrize(
    "argv",
    [
        ["--user-data", "00" * 65],
        ["--user-data", "xyz"],
        ["--pages", "-1"],
        ["--abi", "v16"],
        ["--vmm-answer", "maybe"],
        ["--report-version", "4"],
        ["--no-certs", "--certs", "x"],
        ["--no-certs", "--vmm-answer", "invalid-len"],
        ["--pages", "2", "--vmm-answer", "invalid-len"],
        ["--certs", "/nonexistent/blob"],
    ],
)
def test_usage_errors(argv: list[str]) -> None:
    status, doc = run(*argv)
    assert status == 2
    assert doc["ok"] is False
    assert doc["error"]["code"] == "usage"


def test_corrupt_certs_file_is_usage(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"corrupt")
    assert run("--certs", str(path))[0] == 2


def test_text_output() -> None:
    out = io.StringIO()
    assert main(["simulate", "--abi", "v15"], out=out) == 0
    text = out.getvalue()
    assert "KVM exit 40 (request)" in text
    assert "EXITINFO2 0x0000000000000000 (VMM error NONE, firmware status SUCCESS)" in text
    assert "signature by the table's VCEK: valid" in text
    assert text.rstrip().endswith("verified")
    out = io.StringIO()
    assert main(["simulate", "--vmm-answer", "invalid-len"], out=out) == 1
    assert "EXITINFO2 0x0000000100000000 (VMM error INVALID_LEN" in out.getvalue()
    assert "the host wants 2 pages" in out.getvalue()


@pytest.mark.parametrize("form", ["pem", "der"])
def test_pki_generate(tmp_path: Path, form: str) -> None:
    out = io.StringIO()
    assert main(["pki", "generate", str(tmp_path), "--form", form, "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    names = ["ark", "ask", "asvk", "vcek", "vlek"]
    assert doc["ok"] is True
    assert doc["files"] == {n: str(tmp_path / f"{n}.{form}") for n in names}
    data = chain("Milan").der if form == "der" else chain("Milan").pem
    for name in names:
        assert (tmp_path / f"{name}.{form}").read_bytes() == data[name]


def test_pki_generate_needs_directory(tmp_path: Path) -> None:
    out = io.StringIO()
    missing = tmp_path / "nope"
    assert main(["pki", "generate", str(missing), "--json"], out=out) == 2
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert "not an existing directory" in doc["error"]["message"]
    assert not missing.exists()
    out = io.StringIO()
    assert main(["pki", "generate", str(tmp_path)], out=out) == 0
    assert out.getvalue().splitlines()[0] == f"ark   {tmp_path / 'ark.pem'}"
