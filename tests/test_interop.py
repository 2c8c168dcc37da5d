"""Interop with real, independent material (extra ``interop``: omne-attest).

AMD's real Milan ARK, ASK and a chip's VCEK from AMD's KDS, and a real attestation report of
that chip, as omne-attest ships them: through our table builder, the reference hypervisor and
VMM (the simulated firmware replays the captured report: it cannot sign as that chip), the
Linux guest driver's ioctl and configfs-tsm paths, and our verification — and omne-attest's
own verifier over what the guest got. The other direction (omne-attest accepting a chain and
report made here) is in tests/test_pki.py.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509

from ghcb.certs import CertEntry, CertGuid, build_cert_table, pages_needed, parse_cert_table
from ghcb.codes import Errno
from ghcb.guest import Guest, GuestRequestError, SnpGuestDriver
from ghcb.hypervisor import CertificateStore, MergedAbi, V15Abi, Vcpu, Vm, Vmm
from ghcb.hypervisor.simfw import FirmwareConfig, SimulatedFirmware, default_vmpcks
from ghcb.report import check_report, parse_report, verify_report
from ghcb.tcb import Product
from ghcb.verify import verify_with_table

if TYPE_CHECKING:
    import pathlib

ABIS = [MergedAbi(), V15Abi()]
# AMD's real VCEK has serial number 0: cryptography warns when omne-attest loads it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)


@pytest.fixture
def real(omne: Any) -> dict[str, bytes]:
    v = omne.vectors
    return {"ark": v.ark(), "ask": v.ask(), "vcek": v.vcek(), "report": v.attestation()}


@pytest.fixture
def table(real: dict[str, bytes]) -> bytes:
    """ARK, ASK, VCEK in the GHCB §4.1.8.1 table: 4 * 24 + 1639 + 1677 + 1350 = 4762 bytes."""
    return build_cert_table(
        [
            CertEntry(CertGuid.ARK.value, real["ark"]),
            CertEntry(CertGuid.ASK.value, real["ask"]),
            CertEntry(CertGuid.VCEK.value, real["vcek"]),
        ]
    )


def _driver(tmp_path: pathlib.Path, abi: Any, report: bytes, table: bytes) -> SnpGuestDriver:
    firmware = SimulatedFirmware(FirmwareConfig(captured_report=report))
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    store.update(table)
    guest = Guest()
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), guest.memory, guest.layout.ghcb)
    vmm = Vmm(guest.memory, store)
    return SnpGuestDriver(guest, lambda: vmm.run(vcpu), default_vmpcks()[0])


def test_the_real_report_decodes(omne: Any, real: dict[str, bytes]) -> None:
    """Our decoder and omne-attest's agree on the real report's fields; our checker finds
    nothing wrong with it; its signature verifies with the real VCEK."""
    ours = parse_report(real["report"])
    theirs = omne.Report.parse(real["report"])
    for name in ("version", "guest_svn", "policy", "vmpl", "signature_algo", "platform_info"):
        assert getattr(ours, name) == getattr(theirs, name), name
    for name in ("report_data", "measurement", "host_data", "report_id", "chip_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert (ours.version, ours.policy, ours.vmpl) == (2, 0xB0000, 0)
    tcb = ours.tcb("reported_tcb", product=Product.MILAN)
    mine = (tcb.boot_loader, tcb.tee, tcb.snp, tcb.microcode)
    assert mine == (2, 0, 5, 0x44)
    other = theirs.reported_tcb
    assert mine == (other.boot_loader, other.tee, other.snp, other.microcode)
    assert check_report(real["report"]) == []
    assert verify_report(real["report"], x509.load_der_x509_certificate(real["vcek"]))


def test_the_real_table(table: bytes, real: dict[str, bytes]) -> None:
    assert len(table) == 4762
    assert pages_needed(len(table)) == 2
    assert [e.data for e in parse_cert_table(table)] == [real["ark"], real["ask"], real["vcek"]]


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_ioctl_path(
    tmp_path: pathlib.Path, abi: Any, omne: Any, real: dict[str, bytes], table: bytes
) -> None:
    """SNP_GET_EXT_REPORT with 1 page: INVALID_LEN, RBX = 2; with 2 pages: the captured
    report and the real table; the guest's verification (ARK pinned to AMD's published
    SHA-256) and omne-attest's agree that it holds."""
    driver = _driver(tmp_path, abi, real["report"], table)
    with pytest.raises(GuestRequestError) as e:
        driver.get_ext_report(bytes(64), pages=1)
    assert (e.value.errno, e.value.exit_info_2, e.value.npages) == (Errno.EIO, 1 << 32, 2)
    rsp, certs = driver.get_ext_report(bytes(64), pages=2)
    assert (rsp.status, rsp.report) == (0, real["report"])
    assert certs == table + bytes(2 * 4096 - len(table))
    check = verify_with_table(rsp, certs, ark_sha256=omne.vectors.ARK_SHA256)
    assert (check.signer, check.signature_ok, check.chain_ok, check.problem) == (
        "vcek",
        True,
        True,
        None,
    )
    got = {entry.guid: entry.data for entry in parse_cert_table(certs)}
    vcek, ask, ark = (got[g.value] for g in (CertGuid.VCEK, CertGuid.ASK, CertGuid.ARK))
    # The rented VM ran with the debug bit set (omne-attest's vectors README): a permissive
    # policy on that one point, everything cryptographic checked.
    policy = omne.Policy(reject_debug=False)
    parsed = omne.verify(rsp.report, vcek, ask, ark, omne.vectors.ARK_SHA256, policy)
    assert parsed.chip_id == parse_report(rsp.report).chip_id


def test_configfs_tsm_path(
    tmp_path: pathlib.Path, omne: Any, real: dict[str, bytes], table: bytes
) -> None:
    """configfs-tsm: one request with the 16 KiB buffer; outblob = the real report, auxblob
    = exactly the real table (its extent is the VCEK's end); both verifiers accept it."""
    driver = _driver(tmp_path, MergedAbi(), real["report"], table)
    got = driver.tsm_report(bytes(64))
    assert (got.outblob, got.auxblob, got.warnings) == (real["report"], table, ())
    assert got.auxblob is not None
    assert verify_with_table(got.outblob, got.auxblob, ark_sha256=omne.vectors.ARK_SHA256).ok
    entries = {e.guid: e.data for e in parse_cert_table(got.auxblob)}
    omne.verify(
        got.outblob,
        entries[CertGuid.VCEK.value],
        entries[CertGuid.ASK.value],
        entries[CertGuid.ARK.value],
        omne.vectors.ARK_SHA256,
        omne.Policy(reject_debug=False),
    )


def test_tampered_real_report_fails_both(
    tmp_path: pathlib.Path, omne: Any, real: dict[str, bytes], table: bytes
) -> None:
    """One bit of MEASUREMENT changed by the host: our verification refuses the signature
    (the chain still holds), and so does omne-attest."""
    report = bytearray(real["report"])
    report[0x90] ^= 1
    driver = _driver(tmp_path, MergedAbi(), bytes(report), table)
    got = driver.tsm_report(bytes(64))
    assert got.auxblob is not None
    check = verify_with_table(got.outblob, got.auxblob, ark_sha256=omne.vectors.ARK_SHA256)
    assert (check.signature_ok, check.chain_ok) == (False, True)
    with pytest.raises(omne.Fail) as err:
        omne.verify(
            got.outblob,
            real["vcek"],
            real["ask"],
            real["ark"],
            omne.vectors.ARK_SHA256,
            omne.Policy(reject_debug=False),
        )
    assert err.value.kind is omne.FailKind.REPORT_SIGNATURE


def test_ark_pin(real: dict[str, bytes], table: bytes, omne: Any) -> None:
    """AMD's published ARK digest is the SHA-256 of the shipped ARK; a wrong pin fails the
    chain only."""
    assert hashlib.sha256(real["ark"]).digest() == omne.vectors.ARK_SHA256
    check = verify_with_table(real["report"], table, ark_sha256=bytes(32))
    assert (check.signature_ok, check.chain_ok) == (True, False)
