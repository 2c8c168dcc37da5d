"""Signed reports per second through the whole exchange (guest driver → reference vCPU → VMM →
simulated firmware → guest verification), side by side with the crypto floor: the same AES-GCM
seal/open and ECDSA P-384 sign/verify calls made directly with ``cryptography`` and nothing
else (``test_baseline_crypto_floor``). Issue 8's goal: the exchange ≤ 1.3x the floor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghcb.guest import Guest, SnpGuestDriver
from ghcb.guest_msg import AAD_OFFSET, HDR_SIZE, iv
from ghcb.hypervisor import CertificateStore, MergedAbi, Vcpu, Vm, Vmm
from ghcb.hypervisor.simfw import SimulatedFirmware, default_vmpcks
from ghcb.report import SIGNED_SIZE, verify_report
from ghcb.schemas.guest_msg import msg_report_rsp, snp_report_req

if TYPE_CHECKING:
    import pathlib

pytestmark = pytest.mark.benchmark

USER_DATA = bytes(range(64))


def test_exchange_signed_report(benchmark: Any, tmp_path: pathlib.Path) -> None:
    benchmark.group = "exchange-signed-report"
    firmware = SimulatedFirmware()
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    blob = firmware.chain.cert_table()
    store.update(blob)
    guest = Guest()
    vcpu = Vcpu(Vm(firmware, cert_abi=MergedAbi()), guest.memory, guest.layout.ghcb)
    vmm = Vmm(guest.memory, store)
    driver = SnpGuestDriver(guest, lambda: vmm.run(vcpu), default_vmpcks()[0])
    vcek = firmware.chain.vcek

    def one() -> bool:
        rsp, _ = driver.get_ext_report(USER_DATA, pages=2)
        return verify_report(rsp.report, vcek)

    benchmark.extra_info["requests_per_second"] = True
    assert benchmark(one) is True


def test_baseline_crypto_floor(benchmark: Any) -> None:
    """Guest seals the REPORT_REQ, firmware opens it, signs the report's signed bytes (RFC 6979,
    as the simulated firmware does), seals the REPORT_RSP, the guest opens it and verifies the
    signature (sizes from the schemas)."""
    benchmark.group = "exchange-signed-report"
    key = AESGCM(default_vmpcks()[0])
    signing = ec.generate_private_key(ec.SECP384R1())
    public = signing.public_key()
    ecdsa = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    aad = bytes(HDR_SIZE - AAD_OFFSET)  # header bytes 0x30-0x5F
    request, report = bytes(snp_report_req.sizeof()), bytes(SIGNED_SIZE)
    response = bytes(msg_report_rsp.sizeof())
    iv_req, iv_rsp = iv(1), iv(2)

    def one() -> None:
        sealed = key.encrypt(iv_req, request, aad)
        key.decrypt(iv_req, sealed, aad)
        signature = signing.sign(report, ecdsa)
        sealed_rsp = key.encrypt(iv_rsp, response, aad)
        key.decrypt(iv_rsp, sealed_rsp, aad)
        public.verify(signature, report, ecdsa)

    benchmark(one)
