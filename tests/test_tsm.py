"""The guest driver's configfs-tsm report (sev-guest ``sev_report_new``) and its response
checks, through the reference vCPU, VMM and simulated firmware; verification of what the guest
got (:mod:`ghcb.verify`)."""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

import pytest

from ghcb.certs import SEV_FW_BLOB_MAX_SIZE, CertEntry, CertGuid, build_cert_table
from ghcb.codes import Errno, FirmwareStatus
from ghcb.errors import InputTypeError
from ghcb.guest import REPORT_RSP_HEADER_SIZE, Guest, GuestRequestError, SnpGuestDriver
from ghcb.guest_msg import KeyReq, MsgHeader, ReportReq, ReportRsp
from ghcb.hypervisor import CertificateStore, MergedAbi, TokenBucket, V15Abi, Vcpu, Vm, Vmm
from ghcb.hypervisor.simfw import SimulatedFirmware, default_vmpcks
from ghcb.report import parse_report
from ghcb.schemas.page import PAGE_SIZE
from ghcb.verify import verify_with_table
from tests.test_guest_driver import FakeTime

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable


ABIS = [MergedAbi(), V15Abi()]
INBLOB = bytes(range(64))


class StatusFirmware(SimulatedFirmware):
    """Answers every REPORT_REQ with a sealed MSG_REPORT_RSP carrying ``status`` and
    ``report_size`` (what a firmware that refuses the payload sends back)."""

    def __init__(self, status: int, report_size: int = 0x4A0) -> None:
        super().__init__()
        self.status, self.size = status, report_size

    def _report(self, hdr: MsgHeader, req: ReportReq) -> ReportRsp:
        return ReportRsp(status=self.status, report_size=self.size)


def make(
    tmp_path: pathlib.Path,
    abi: Any = ABIS[0],
    *,
    firmware: SimulatedFirmware | None = None,
    vmpck_id: int = 0,
    after_run: Callable[[Guest], None] | None = None,
    rate: float | None = None,
) -> tuple[SnpGuestDriver, SimulatedFirmware]:
    """A guest driver whose host serves the firmware chain's table; ``after_run`` lets a
    hostile host rewrite shared pages after each VMGEXIT; ``rate`` rate-limits the host
    (BUSY) on an injected clock the driver's retry loop also uses."""
    firmware = SimulatedFirmware() if firmware is None else firmware
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    store.update(firmware.chain.cert_table())
    guest = Guest()
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), guest.memory, guest.layout.ghcb)
    fake = FakeTime()
    limiter = None if rate is None else TokenBucket(rate=rate, burst=1, clock=fake.clock)
    vmm = Vmm(guest.memory, store, limiter=limiter)

    def vmgexit() -> None:
        vmm.run(vcpu)
        if after_run is not None:
            after_run(guest)

    key = default_vmpcks()[vmpck_id]
    driver = SnpGuestDriver(
        guest, vmgexit, key, vmpck_id=vmpck_id, clock=fake.clock, sleep=fake.sleep
    )
    return driver, firmware


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_tsm_report(tmp_path: pathlib.Path, abi: Any) -> None:
    """One extended request with 4 pages (16 KiB): outblob = the report's 0x4A0 bytes,
    auxblob = the table up to its last certificate's end, VMPL = privlevel; it verifies, with
    the chain's ARK pinned, and not with another pin."""
    driver, firmware = make(tmp_path, abi)
    blob = firmware.chain.cert_table()
    got = driver.tsm_report(INBLOB, privlevel=2)
    assert (len(got.outblob), got.auxblob, got.privlevel) == (0x4A0, blob, 2)
    assert (got.provider, got.warnings, driver.counter) == ("sev_guest", (), 2)
    report = parse_report(got.outblob)
    assert (report.report_data, report.vmpl) == (INBLOB, 2)
    assert got.auxblob is not None
    pin = hashlib.sha256(firmware.chain.der["ark"]).digest()
    check = verify_with_table(got.outblob, got.auxblob, ark_sha256=pin)
    assert (check.signer, check.signature_ok, check.chain_ok, check.problem) == (
        "vcek",
        True,
        True,
        None,
    )
    assert not verify_with_table(got.outblob, got.auxblob, ark_sha256=bytes(32)).chain_ok


@pytest.mark.parametrize(
    ("inblob", "privlevel", "vmpck_id"),
    [
        (bytes(63), 0, 0),
        (bytes(65), 0, 0),
        ("x" * 64, 0, 0),
        (INBLOB, 4, 0),  # > TSM_PRIVLEVEL_MAX
        (INBLOB, -1, 0),
        (INBLOB, 0, 1),  # below privlevel_floor = vmpck_id
        (INBLOB, True, 0),
    ],
)
def test_tsm_arguments_refused_before_any_request(
    tmp_path: pathlib.Path, inblob: Any, privlevel: Any, vmpck_id: int
) -> None:
    driver, _ = make(tmp_path, vmpck_id=vmpck_id)
    with pytest.raises(GuestRequestError) as e:
        driver.tsm_report(inblob, privlevel=privlevel)
    assert e.value.errno == Errno.EINVAL
    assert e.value.rule in ("tsm-inblob", "tsm-privlevel")
    assert (driver.counter, driver.vmpck_disabled) == (0, False)


@pytest.mark.parametrize(
    ("status", "size", "errno", "rule"),
    [
        (FirmwareStatus.INVALID_PARAM, 0x4A0, Errno.EINVAL, "tsm-status"),
        (FirmwareStatus.INVALID_KEY, 0x4A0, Errno.EINVAL, "tsm-status"),
        (FirmwareStatus.INVALID_GUEST, 0x4A0, Errno.ENXIO, "tsm-status"),
        (0, PAGE_SIZE - REPORT_RSP_HEADER_SIZE + 1, Errno.ENOMEM, "tsm-report-size"),
    ],
)
def test_tsm_report_status(
    tmp_path: pathlib.Path, status: int, size: int, errno: int, rule: str
) -> None:
    """sev_report_new: STATUS 0x16 / 0x27 → -EINVAL, other non-zero → -ENXIO; REPORT_SIZE +
    32 > 4096 → -ENOMEM. The request itself succeeded: the key is kept, the counter moved."""
    driver, _ = make(tmp_path, firmware=StatusFirmware(status, size))
    with pytest.raises(GuestRequestError) as e:
        driver.tsm_report(INBLOB)
    assert (e.value.errno, e.value.rule) == (errno, rule)
    assert (driver.counter, driver.vmpck_disabled) == (2, False)


@pytest.mark.parametrize("size", [PAGE_SIZE - REPORT_RSP_HEADER_SIZE, 0x500, 0x10, 0])
def test_tsm_outblob_is_report_size_bytes(tmp_path: pathlib.Path, size: int) -> None:
    """REPORT_SIZE + 32 <= 4096 is accepted: "memcpy(rbuf, buf + sizeof(hdr),
    hdr.report_size)" from the zeroed 4 KiB buffer the 0x4C0-byte payload was copied to, so
    the outblob is exactly REPORT_SIZE bytes, zeros past the payload."""
    firmware = StatusFirmware(0, size)
    driver, _ = make(tmp_path, firmware=firmware)
    got = driver.tsm_report(INBLOB)
    assert got.outblob == bytes(size)
    assert len(got.outblob) == size


def test_tsm_outblob_past_the_payload(tmp_path: pathlib.Path) -> None:
    """A REPORT_SIZE of 0x500 with a real report: the 0x4A0 report bytes, then 0x60 zeros."""

    class Longer(SimulatedFirmware):
        def _report(self, hdr: MsgHeader, req: ReportReq) -> ReportRsp:
            rsp = super()._report(hdr, req)
            return ReportRsp(status=rsp.status, report_size=0x500, report=rsp.report)

    driver, _ = make(tmp_path, firmware=Longer())
    got = driver.tsm_report(INBLOB)
    assert parse_report(got.outblob[:0x4A0]).report_data == INBLOB
    assert got.outblob[0x4A0:] == bytes(0x60)


def test_tsm_privlevel_never_written(tmp_path: pathlib.Path) -> None:
    """configfs checks the floor only when privlevel is written: a report whose privlevel
    was never written goes out with VMPL 0 (kzalloc'd), so a driver on VMPCK 1 sends it and
    the firmware refuses VMPL 0 < MSG_VMPCK 1 with INVALID_PARAM → -EINVAL; the sequence
    number is used, the key kept."""
    driver, _ = make(tmp_path, vmpck_id=1)
    with pytest.raises(GuestRequestError) as e:
        driver.tsm_report(INBLOB)
    assert (e.value.errno, e.value.rule) == (Errno.EINVAL, "tsm-status")
    assert (driver.counter, driver.vmpck_disabled) == (2, False)
    got = driver.tsm_report(INBLOB, privlevel=1)
    assert (got.privlevel, parse_report(got.outblob).vmpl) == (1, 1)


def test_tsm_report_privlevel_default(tmp_path: pathlib.Path) -> None:
    """On VMPCK 0 the unwritten privlevel is VMPL 0, accepted."""
    driver, _ = make(tmp_path)
    got = driver.tsm_report(INBLOB)
    assert (got.privlevel, parse_report(got.outblob).vmpl) == (0, 0)


def _entry(guid: bytes, offset: int, length: int) -> bytes:
    return guid + struct.pack("<II", offset, length)


VCEK = CertGuid.VCEK.value.bytes


@pytest.mark.parametrize(
    ("table", "auxblob", "warnings"),
    [
        # A slot without size: extent 0 → no auxblob, a warning.
        (_entry(VCEK, 0, 0), None, ("certificate slots conveyed without size",)),
        # An extent past 16 KiB: truncated to the buffer, a warning.
        (
            _entry(VCEK, 48, SEV_FW_BLOB_MAX_SIZE),
            "buffer",
            ("certificate data truncated",),
        ),
        # offset + length wraps in u32 (the C sum): extent 0x10 → the first 16 bytes.
        (_entry(VCEK, 0xFFFFFFF8, 0x18), "first16", ()),
        # Nothing at all: no auxblob, no warning.
        (b"", None, ()),
    ],
    ids=["no-size", "truncated", "u32-wrap", "empty"],
)
def test_tsm_auxblob_extent(
    tmp_path: pathlib.Path, table: bytes, auxblob: Any, warnings: Any
) -> None:
    """A hostile host rewrites the certificate buffer after the request: the auxblob follows
    sev_report_new's walk exactly (entries before the first all-zero one, max offset + length
    in u32, at most 16 KiB)."""

    def hostile(guest: Guest) -> None:
        buffer = table.ljust(SEV_FW_BLOB_MAX_SIZE, b"\0")
        guest.memory.guest_write(guest.layout.certs, buffer)

    driver, _ = make(tmp_path, after_run=hostile)
    got = driver.tsm_report(INBLOB)
    buffer = table.ljust(SEV_FW_BLOB_MAX_SIZE, b"\0")
    expected = {"buffer": buffer, "first16": buffer[:16], None: None}[auxblob]
    assert (got.auxblob, got.warnings) == (expected, warnings)


def test_tsm_auxblob_of_a_real_table(tmp_path: pathlib.Path) -> None:
    """A table built with two entries and padding after the data: the auxblob stops at the
    largest offset + length, not at the page end."""
    table = build_cert_table([CertEntry(CertGuid.VCEK.value, b"v" * 10)])
    driver, _ = make(tmp_path, after_run=lambda g: g.memory.guest_write(g.layout.certs, table))
    got = driver.tsm_report(INBLOB)
    assert got.auxblob == table
    assert len(table) == 2 * 24 + 10


@pytest.mark.parametrize("where", [0x05, 0x40, 0x200], ids=["tag", "aad", "ciphertext"])
def test_a_response_that_does_not_verify_wipes_the_key(tmp_path: pathlib.Path, where: int) -> None:
    """A host that flips a byte of the response page: the driver fails -EBADMSG and disables
    the VMPCK (sev-guest ``snp_send_guest_request``: a decode failure → snp_disable_vmpck);
    the next request fails -ENOTTY without a VMGEXIT."""

    def flip(guest: Guest) -> None:
        page = bytearray(guest.response())
        page[where] ^= 0x01
        guest.memory.guest_write(guest.layout.response, bytes(page))

    driver, _ = make(tmp_path, after_run=flip)
    with pytest.raises(GuestRequestError) as e:
        driver.get_report(INBLOB)
    assert (e.value.errno, e.value.rule, driver.vmpck_disabled) == (
        Errno.EBADMSG,
        "bad-response",
        True,
    )
    assert driver.counter == 2
    with pytest.raises(GuestRequestError) as later:
        driver.tsm_report(INBLOB)
    assert (later.value.errno, driver.counter) == (Errno.ENOTTY, 2)


def test_outblob_starts_after_the_response_header() -> None:
    """``sizeof(struct snp_msg_report_resp_hdr)`` = 32 (uapi sev-guest.h)."""
    assert REPORT_RSP_HEADER_SIZE == 32


class SpyFirmware(SimulatedFirmware):
    """Records every message page that reaches the firmware and every page it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: list[bytes] = []

    def guest_request(self, request: bytes) -> tuple[bytes | None, int]:
        response, status = super().guest_request(request)
        self.pages.append(bytes(request))
        if response is not None:
            self.pages.append(bytes(response))
        return response, status


@pytest.mark.parametrize("abi", ABIS, ids=["merged", "v15"])
def test_no_iv_is_used_for_two_messages(tmp_path: pathlib.Path, abi: Any) -> None:
    """Through INVALID_LEN (re-issued as a plain request), BUSY (the same message again),
    success, the tsm path and a key request: every sequence number — the AES-GCM IV — that
    the firmware sees carries exactly one ciphertext, in either direction."""
    spy = SpyFirmware()
    sent: list[bytes] = []  # the request page at every VMGEXIT, BUSY re-sends included

    def record(guest: Guest) -> None:
        sent.append(guest.memory.guest_read(guest.layout.request, PAGE_SIZE))

    driver, _ = make(tmp_path, abi, firmware=spy, rate=0.25, after_run=record)  # 1 token / 4 s
    with pytest.raises(GuestRequestError) as e:
        driver.get_ext_report(INBLOB, pages=1)  # spends the token
    assert e.value.npages == 2
    answer = driver.request(ReportReq(user_data=INBLOB), extended=True, pages=2)
    assert answer.busy_retries == 2  # BUSY twice, the same message each time
    driver.tsm_report(INBLOB)
    driver.get_report(INBLOB)
    driver.request(KeyReq())
    # INVALID_LEN then the plain re-issue (seqno 1 twice); BUSY twice then through (3, and the
    # tsm request 5: the host's rate limit covers extended requests); plain report 7; key 9.
    seqnos = [MsgHeader.from_bytes(page[: MsgHeader.SIZE]).msg_seqno for page in sent]
    assert seqnos == [1, 1, 3, 3, 3, 5, 5, 5, 7, 9]
    by_seqno: dict[int, set[bytes]] = {}
    for page in spy.pages + sent:
        seqno = MsgHeader.from_bytes(page[: MsgHeader.SIZE]).msg_seqno
        by_seqno.setdefault(seqno, set()).add(page)
    assert sorted(by_seqno) == list(range(1, 11))
    assert all(len(pages) == 1 for pages in by_seqno.values())
    assert driver.counter == 10


@pytest.mark.parametrize(
    "order", [("vcek", "asvk", "ask", "ark"), ("ark", "ask", "asvk", "vcek")], ids=str
)
def test_verify_finds_the_ask_beside_an_asvk(
    tmp_path: pathlib.Path, order: tuple[str, ...]
) -> None:
    """The ASK GUID carries the ASK or the ASVK (GHCB §4.1.8.1); a host table holding both
    (a duplicate GUID: an error for the checker, read leniently by a guest) verifies the VCEK's
    chain in either order."""
    driver, firmware = make(tmp_path)
    der = firmware.chain.der
    stand_in = CertGuid.VLEK.value  # built under another GUID, then renamed to the ASK's
    guid = {"vcek": CertGuid.VCEK.value, "ask": CertGuid.ASK.value, "asvk": stand_in}
    guid["ark"] = CertGuid.ARK.value
    raw = bytearray(build_cert_table([CertEntry(guid[name], der[name]) for name in order]))
    at = order.index("asvk") * 24  # the entry's GUID, at the start of its 24-byte header
    raw[at : at + 16] = CertGuid.ASK.value.bytes
    table = bytes(raw)
    rsp = driver.get_report(INBLOB)
    check = verify_with_table(rsp, table)
    assert (check.signature_ok, check.chain_ok, check.problem) == (True, True, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda d: verify_with_table("x", b""),  # type: ignore[arg-type]
        lambda d: verify_with_table(None, b""),  # type: ignore[arg-type]
        lambda d: verify_with_table(bytes(0x4A0), b"", ark_sha256=5),  # type: ignore[arg-type]
        lambda d: d.get_report("x" * 64),
        lambda d: d.get_report(10**12),
        lambda d: d.get_ext_report(None, pages=1),
        lambda d: SnpGuestDriver(d.guest, d.vmgexit, 10**12),  # type: ignore[arg-type]
    ],
    ids=["report-str", "report-none", "pin-int", "data-str", "data-huge-int", "data-none", "key"],
)
def test_bad_arguments_are_typed(tmp_path: pathlib.Path, call: Callable[[Any], object]) -> None:
    """Wrong types give InputTypeError at once (no allocation from an int), no request sent."""
    driver, _ = make(tmp_path)
    with pytest.raises(InputTypeError):
        call(driver)
    assert driver.counter == 0


@pytest.mark.parametrize(
    ("garbage", "problem"),
    [("ask", "not X.509: ASK"), ("vcek", "not X.509: VCEK"), ("ark", "not X.509: ARK")],
)
def test_verify_names_what_is_not_x509(tmp_path: pathlib.Path, garbage: str, problem: str) -> None:
    driver, firmware = make(tmp_path)
    der = dict(firmware.chain.der) | {garbage: b"\x30\x03\x02\x01\x00"}
    guid = {"vcek": CertGuid.VCEK, "ask": CertGuid.ASK, "ark": CertGuid.ARK}
    table = build_cert_table([CertEntry(guid[n].value, der[n]) for n in ("ark", "ask", "vcek")])
    check = verify_with_table(driver.get_report(INBLOB), table)
    assert (check.problem, check.ok) == (problem, False)
