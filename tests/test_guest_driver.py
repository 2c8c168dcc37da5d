"""The guest driver (Linux sev-guest) end to end: encrypted messages through the GHCB, the
reference vCPU and VMM, the simulated firmware; INVALID_LEN, BUSY with an injected clock,
GENERIC and a disabled VMPCK; the report verified against the certificates it came with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509

from ghcb import parse_cert_table
from ghcb.certs import CertGuid
from ghcb.codes import Errno
from ghcb.guest import MAX_RETRY_DURATION, RETRY_DELAY, Guest, GuestRequestError, SnpGuestDriver
from ghcb.guest_msg import ReportReq
from ghcb.hypervisor import CertificateStore, MergedAbi, TokenBucket, V15Abi, Vcpu, Vm, Vmm
from ghcb.hypervisor.pki import verify_signed_by
from ghcb.hypervisor.simfw import SimulatedFirmware, default_vmpcks
from ghcb.report import verify_report
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import pathlib

ABIS = [MergedAbi(), V15Abi()]
GENERIC = {"merged": 0xFFFFFFFF00000000, "v15": 0x8000000000000000}
USER_DATA = bytes(range(64))


class FakeTime:
    """An injected clock: ``sleep`` moves it forward, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def host(
    tmp_path: pathlib.Path, abi: Any, *, rate: float | None = None, blob: bytes | None = None
) -> tuple[SnpGuestDriver, SimulatedFirmware, FakeTime]:
    """A guest with its driver, a vCPU and a VMM serving the firmware chain's certificates."""
    firmware = SimulatedFirmware()
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    store.update(firmware.chain.cert_table() if blob is None else blob)
    guest = Guest()
    fake = FakeTime()
    limiter = None if rate is None else TokenBucket(rate=rate, burst=1, clock=fake.clock)
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), guest.memory, guest.layout.ghcb)
    vmm = Vmm(guest.memory, store, limiter=limiter)
    driver = SnpGuestDriver(
        guest, lambda: vmm.run(vcpu), default_vmpcks()[0], clock=fake.clock, sleep=fake.sleep
    )
    return driver, firmware, fake


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_report_with_certificates_verifies(tmp_path: pathlib.Path, abi: Any) -> None:
    """One page is too few for ARK+ASK+VCEK: INVALID_LEN with the page count, the message
    re-issued as a plain request (the counter still advances by 2, the key is kept); with
    the pages asked for, the report and the certificates come back and verify: report by
    the VCEK from the table, VCEK by the ASK, ASK by the ARK."""
    driver, firmware, _ = host(tmp_path, abi)
    blob = firmware.chain.cert_table()
    need = -(-len(blob) // PAGE_SIZE)
    with pytest.raises(GuestRequestError) as e:
        driver.get_ext_report(USER_DATA, pages=1)
    assert (e.value.errno, e.value.exit_info_2, e.value.npages) == (Errno.EIO, 1 << 32, need)
    assert (driver.counter, driver.vmpck_disabled) == (2, False)
    rsp, certs = driver.get_ext_report(USER_DATA, pages=need)
    assert driver.counter == 4
    assert rsp.status == 0
    report = rsp.attestation_report
    assert report.report_data == USER_DATA
    assert certs[: len(blob)] == blob
    assert not any(certs[len(blob) :])
    entries = {entry.guid: entry.data for entry in parse_cert_table(certs)}
    ark, ask, vcek = (
        x509.load_der_x509_certificate(entries[guid.value])
        for guid in (CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK)
    )
    assert verify_report(rsp.report, vcek)
    verify_signed_by(vcek, ask, name="vcek")
    verify_signed_by(ask, ark, name="ask")
    verify_signed_by(ark, ark, name="ark")


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_plain_report(tmp_path: pathlib.Path, abi: Any) -> None:
    """SNP_GET_REPORT: a plain request; the report carries the user data and verifies with the
    firmware chain's VCEK; seqnos 1/2, then 3/4."""
    driver, firmware, _ = host(tmp_path, abi)
    for counter in (2, 4):
        rsp = driver.get_report(USER_DATA)
        assert driver.counter == counter
        assert rsp.attestation_report.report_data == USER_DATA
        assert verify_report(rsp.report, firmware.chain.vcek)


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_busy_is_retried_every_two_seconds(tmp_path: pathlib.Path, abi: Any) -> None:
    """BUSY: the same message again after 2 s (injected), until the host's token bucket (one
    token per 4 s) lets it through: exactly 2 retries, one seqno."""
    driver, _, fake = host(tmp_path, abi, rate=0.25)
    driver.get_ext_report(USER_DATA, pages=2)  # spends the token
    answer = driver.request(ReportReq(user_data=USER_DATA), extended=True, pages=2)
    assert (answer.busy_retries, fake.now, driver.counter) == (2, 2 * RETRY_DELAY, 4)


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_busy_for_a_minute_times_out(tmp_path: pathlib.Path, abi: Any) -> None:
    """A host that is BUSY for 60 s: -ETIMEDOUT after 30 retries, and the VMPCK is disabled."""
    driver, _, fake = host(tmp_path, abi, rate=0.0)
    driver.get_ext_report(USER_DATA, pages=2)  # spends the only token
    with pytest.raises(GuestRequestError) as e:
        driver.get_ext_report(USER_DATA, pages=2)
    assert (e.value.errno, e.value.exit_info_2) == (Errno.ETIMEDOUT, 2 << 32)
    assert fake.now == MAX_RETRY_DURATION
    assert driver.vmpck_disabled
    with pytest.raises(GuestRequestError) as later:
        driver.get_report(USER_DATA)
    assert later.value.errno == Errno.ENOTTY


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_generic_disables_the_vmpck(tmp_path: pathlib.Path, abi: Any) -> None:
    """The host's certificate blob went corrupt: GENERIC; the driver fails -EIO with that
    EXITINFO2 and wipes its key."""
    driver, _, _ = host(tmp_path, abi)
    store_path = tmp_path / "certs.blob"
    data = bytearray(store_path.read_bytes())
    data[16:20] = b"\xff\xff\xff\x7f"  # an offset far past the end
    store_path.write_bytes(bytes(data))
    with pytest.raises(GuestRequestError) as e:
        driver.get_ext_report(USER_DATA, pages=2)
    assert (e.value.errno, e.value.exit_info_2) == (Errno.EIO, GENERIC[abi.name])
    assert driver.vmpck_disabled
    assert driver.counter == 2
