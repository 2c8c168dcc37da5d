"""The simulated SNP firmware: guest messages sealed as a guest seals them, answered with exact
headers, statuses and signed reports (snp-firmware-facts §1, §3.4-§3.7)."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import threading
from typing import TYPE_CHECKING

import pytest

from ghcb import GhcbError, InputTypeError
from ghcb.codes import Errno, FirmwareStatus, MsgType
from ghcb.guest_msg import (
    KeyReq,
    KeyRsp,
    KeySel,
    MsgHeader,
    ReportReq,
    ReportRsp,
    TscInfoReq,
    TscInfoRsp,
    open_message,
    seal_message,
)
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.firmware import FirmwareFailure, call_firmware
from ghcb.hypervisor.pki import DEFAULT_CHIP_IDS, chain
from ghcb.hypervisor.simfw import (
    DEFAULT_SEED,
    SPEC_CONFIG,
    SPEC_FW,
    FirmwareConfig,
    SimulatedFirmware,
    default_vmpcks,
)
from ghcb.report import AttestationReport, SigningKey, check_report, verify_report
from ghcb.tcb import Product, Tcb

if TYPE_CHECKING:
    from collections.abc import Callable

    from ghcb._record import SchemaRecord

USER_DATA = bytes(range(64))
MEASUREMENT = bytes.fromhex("b747d554" * 12)
HOST_DATA = b"\x42" * 32
POLICY = 0xB0000  # SMT + bit 17 + DEBUG
# DEFAULT_TCB (bl 4, tee 0, snp 0x1B, ucode 0xDE) in the Milan layout (facts §1.3).
DEFAULT_TCB_INT = 0xDE1B000000000004
NEW_TCB = Tcb(boot_loader=5, tee=1, snp=0x1C, microcode=0xDF)
NEW_TCB_INT = 0xDF1C000000000105


def _config(**values: object) -> FirmwareConfig:
    base: dict[str, object] = {
        "measurement": MEASUREMENT,
        "host_data": HOST_DATA,
        "policy": POLICY,
    }
    return FirmwareConfig(**{**base, **values})  # type: ignore[arg-type]


@pytest.fixture
def fw() -> SimulatedFirmware:
    return SimulatedFirmware(_config())


def _request(
    fw: SimulatedFirmware,
    payload: SchemaRecord | bytes,
    *,
    msg_type: int = MsgType.REPORT_REQ,
    seqno: int = 1,
    vmpck: int = 0,
    key: bytes | None = None,
    msg_version: int = 1,
) -> bytes:
    return seal_message(
        fw.config.vmpcks[vmpck] if key is None else key,
        msg_type=msg_type,
        msg_version=msg_version,
        seqno=seqno,
        vmpck=vmpck,
        payload=payload,
    )


def _exchange(
    fw: SimulatedFirmware, payload: SchemaRecord | bytes, **kw: object
) -> tuple[MsgHeader, bytes]:
    vmpck = kw.get("vmpck", 0)
    assert isinstance(vmpck, int)
    page, status = fw.guest_request(_request(fw, payload, **kw))  # type: ignore[arg-type]
    assert status == FirmwareStatus.SUCCESS
    assert page is not None
    assert len(page) == 4096
    return open_message(fw.config.vmpcks[vmpck], page)


def _report(fw: SimulatedFirmware, req: ReportReq | bytes, **kw: object) -> AttestationReport:
    _hdr, plain = _exchange(fw, req, **kw)
    rsp = ReportRsp.from_bytes(plain)
    assert rsp.status == FirmwareStatus.SUCCESS
    return rsp.attestation_report


# ---------------------------------------------------------------------------------------------
# REPORT_REQ
# ---------------------------------------------------------------------------------------------


def test_report_round_trip(fw: SimulatedFirmware) -> None:
    page, status = fw.guest_request(_request(fw, ReportReq(user_data=USER_DATA)))
    assert status == 0
    assert page is not None
    hdr, plain = open_message(fw.config.vmpcks[0], page)
    assert (hdr.msg_type, hdr.msg_seqno, hdr.msg_version, hdr.msg_vmpck, hdr.msg_sz) == (
        MsgType.REPORT_RSP,
        2,
        1,
        0,
        0x4C0,
    )
    rsp = ReportRsp.from_bytes(plain)
    assert (rsp.status, rsp.report_size) == (0, 0x4A0)
    report = rsp.attestation_report
    assert report.report_data == USER_DATA
    assert report.vmpl == 0
    assert report.policy == POLICY
    assert report.measurement == MEASUREMENT
    assert report.host_data == HOST_DATA
    assert report.chip_id == DEFAULT_CHIP_IDS[Product.MILAN]
    assert report.version == 5
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x19, 0x01, 0)
    assert report.product is Product.MILAN
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        assert getattr(report, name) == DEFAULT_TCB_INT
    assert report.tcb("reported_tcb").to_bytes() == bytes.fromhex("040000000000" + "1bde")
    assert (report.current_major, report.current_minor, report.current_build) == (1, 55, 35)
    assert report.signature_algo == 1
    assert report.signing_key is SigningKey.VCEK
    assert report.report_id_ma == b"\xff" * 32
    assert report.platform_info == 1
    assert [v for v in check_report(report) if v.severity.name == "ERROR"] == []
    assert verify_report(report, fw.chain.vcek) is True
    assert verify_report(report, fw.chain.vcek_key.public_key()) is True
    other = chain(Product.MILAN, chip_id=bytes(range(1, 65)))
    assert verify_report(report, other.vcek) is False
    assert fw.counter(0) == 2
    assert call_firmware(fw, _request(fw, ReportReq(), seqno=3))[1] == 0
    assert fw.counter(0) == 4


def test_report_signature_is_deterministic(fw: SimulatedFirmware) -> None:
    first = _report(fw, ReportReq(user_data=USER_DATA))
    again = SimulatedFirmware(_config())
    assert _report(again, ReportReq(user_data=USER_DATA)) == first


def test_second_request_uses_next_seqno(fw: SimulatedFirmware) -> None:
    _exchange(fw, ReportReq())
    hdr, _ = _exchange(fw, ReportReq(), seqno=3)
    assert hdr.msg_seqno == 4
    assert fw.counter(0) == 4


def test_vmpl_from_request_at_or_above_key_level(fw: SimulatedFirmware) -> None:
    report = _report(fw, ReportReq(user_data=USER_DATA, vmpl=2), vmpck=1)
    assert report.vmpl == 2
    assert (fw.counter(0), fw.counter(1)) == (0, 2)


def test_vmpl_below_vmpck_level_is_invalid_param_in_payload(fw: SimulatedFirmware) -> None:
    # §3.5: a payload failure is a normal response (counter += 2) carrying STATUS 0x16.
    hdr, plain = _exchange(fw, ReportReq(vmpl=1), vmpck=2)
    rsp = ReportRsp.from_bytes(plain)
    assert (rsp.status, rsp.report_size, rsp.report) == (0x16, 0x4A0, bytes(0x4A0))
    assert (hdr.msg_seqno, fw.counter(2)) == (2, 2)


@pytest.mark.parametrize(
    ("req", "status"),
    [
        (ReportReq(key_sel=4), FirmwareStatus.INVALID_PARAM),
        (ReportReq(reserved_0x48=b"\x01" + bytes(23)), FirmwareStatus.INVALID_PARAM),
        (ReportReq(key_sel=3), FirmwareStatus.INVALID_KEY),
        (ReportReq(key_sel=KeySel.VLEK), FirmwareStatus.INVALID_KEY),  # no VLEK loaded
    ],
    ids=["key-sel-reserved", "reserved-bytes", "key-sel-3", "vlek-not-loaded"],
)
def test_report_payload_statuses(fw: SimulatedFirmware, req: ReportReq, status: int) -> None:
    _, plain = _exchange(fw, req)
    rsp = ReportRsp.from_bytes(plain)
    assert (rsp.status, rsp.report_size, rsp.report) == (status, 0x4A0, bytes(0x4A0))
    assert fw.counter(0) == 2


@pytest.mark.parametrize(
    ("version", "cpuid"), [(2, (0, 0, 0)), (3, (0x19, 0x01, 1)), (5, (0x19, 0x01, 1))]
)
def test_report_versions(version: int, cpuid: tuple[int, int, int]) -> None:
    fw = SimulatedFirmware(
        _config(report_version=version, cpuid_step=1, launch_mit_vector=0xB, current_mit_vector=0xC)
    )
    report = _report(fw, ReportReq(user_data=USER_DATA))
    assert report.version == version
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == cpuid
    mit = (0xB, 0xC) if version == 5 else (0, 0)
    assert (report.launch_mit_vector, report.current_mit_vector) == mit
    assert report.reported_tcb == DEFAULT_TCB_INT
    assert [v for v in check_report(report) if v.severity.name == "ERROR"] == []
    assert verify_report(report, fw.chain.vcek) is True


def test_tcb_change_signs_with_new_vcek(fw: SimulatedFirmware) -> None:
    old = fw.chain
    fw.set_tcb(NEW_TCB)
    assert fw.tcb == NEW_TCB
    assert fw.chain is old.at_tcb(NEW_TCB)
    report = _report(fw, ReportReq(user_data=USER_DATA))
    assert (report.reported_tcb, report.current_tcb, report.committed_tcb) == (NEW_TCB_INT,) * 3
    assert report.launch_tcb == DEFAULT_TCB_INT
    assert verify_report(report, old.at_tcb(NEW_TCB).vcek) is True
    assert verify_report(report, old.vcek) is False


def test_set_tcb_refuses_fmc_on_milan(fw: SimulatedFirmware) -> None:
    with pytest.raises(HypervisorUsageError):
        fw.set_tcb(Tcb(fmc=1))
    assert fw.tcb == fw.config.tcb


def test_vlek_signing() -> None:
    fw = SimulatedFirmware(_config(signing_key="vlek"))
    report = _report(fw, ReportReq(user_data=USER_DATA))  # KEY_SEL 0: the loaded VLEK
    assert report.signing_key is SigningKey.VLEK
    assert report.signer_info == 1 << 2
    assert verify_report(report, fw.chain.vlek) is True
    assert verify_report(report, fw.chain.vcek) is False
    vcek_report = _report(fw, ReportReq(key_sel=KeySel.VCEK), seqno=3)
    assert vcek_report.signing_key is SigningKey.VCEK
    assert verify_report(vcek_report, fw.chain.vcek) is True


# ---------------------------------------------------------------------------------------------
# Command failures: no response, counter unchanged (§3.4)
# ---------------------------------------------------------------------------------------------


def _flip(page: bytes, offset: int) -> bytes:
    out = bytearray(page)
    out[offset] ^= 1
    return bytes(out)


def _with_byte(page: bytes, offset: int, value: int) -> bytes:
    return page[:offset] + bytes([value]) + page[offset + 1 :]


def _with_msg_sz(page: bytes, size: int) -> bytes:
    out = bytearray(page)
    out[0x36:0x38] = size.to_bytes(2, "little")
    return bytes(out)


FAILURES: dict[str, tuple[Callable[[SimulatedFirmware], bytes], int]] = {
    "bad-tag": (lambda fw: _flip(_request(fw, ReportReq()), 0x60 + 5), 0x0B),
    "tampered-aad": (lambda fw: _flip(_request(fw, ReportReq()), 0x3D), 0x0B),
    "wrong-vmpck-key": (lambda fw: _request(fw, ReportReq(), key=fw.config.vmpcks[1]), 0x0B),
    "vmpck-4": (lambda fw: _with_byte(_request(fw, ReportReq()), 0x3C, 4), 0x16),
    "future-seqno": (lambda fw: _request(fw, ReportReq(), seqno=3), 0x1D),
    "seqno-0": (lambda fw: _request(fw, ReportReq(), seqno=0), 0x1D),
    "msg-size-unaligned": (lambda fw: _request(fw, bytes(0x61)), 0x16),
    "msg-size-zero": (lambda fw: _with_msg_sz(_request(fw, ReportReq()), 0), 0x16),
    "msg-size-over-page": (lambda fw: _with_msg_sz(_request(fw, ReportReq()), 4016), 0x16),
    "msg-version-2": (lambda fw: _request(fw, ReportReq(), msg_version=2), 0x16),
    "msg-version-0": (lambda fw: _request(fw, ReportReq(), msg_version=0), 0x16),
    "cpuid-req": (lambda fw: _request(fw, bytes(16), msg_type=MsgType.CPUID_REQ), 0x16),
    "type-0xff": (lambda fw: _request(fw, bytes(16), msg_type=0xFF), 0x16),
    "report-rsp-as-request": (lambda fw: _request(fw, ReportReq(), msg_type=6), 0x16),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_command_failures(fw: SimulatedFirmware, case: str) -> None:
    make, status = FAILURES[case]
    assert fw.guest_request(make(fw)) == (None, status)
    assert [fw.counter(i) for i in range(4)] == [0, 0, 0, 0]
    # The expected seqno did not move: the right request still succeeds.
    assert _report(fw, ReportReq(user_data=USER_DATA)).report_data == USER_DATA
    assert fw.counter(0) == 2


def test_replayed_request_is_aead_oflow(fw: SimulatedFirmware) -> None:
    page = _request(fw, ReportReq())
    assert fw.guest_request(page)[1] == 0
    assert fw.guest_request(page) == (None, FirmwareStatus.AEAD_OFLOW)
    assert fw.counter(0) == 2
    stale = _request(fw, ReportReq(), seqno=2)  # the response's seqno, never a request's
    assert fw.guest_request(stale) == (None, FirmwareStatus.AEAD_OFLOW)
    assert fw.counter(0) == 2


def test_counters_are_per_vmpck(fw: SimulatedFirmware) -> None:
    _exchange(fw, ReportReq(vmpl=3), vmpck=3)
    assert fw.guest_request(_request(fw, ReportReq(vmpl=3), vmpck=3))[0] is None  # seqno 1 again
    hdr, _ = _exchange(fw, ReportReq(vmpl=1), vmpck=1)  # VMPCK1 still starts at 1
    assert hdr.msg_seqno == 2
    assert [fw.counter(i) for i in range(4)] == [0, 2, 0, 2]


def test_page_not_one_page_fails_without_status(fw: SimulatedFirmware) -> None:
    with pytest.raises(FirmwareFailure) as info:
        fw.guest_request(_request(fw, ReportReq())[:4095])
    assert info.value.rule == "request-length"
    assert info.value.message == "guest request of 4095 bytes, not one 4096-byte page"
    assert info.value.spec == SPEC_FW
    with pytest.raises(InputTypeError) as err:
        fw.guest_request("page")  # type: ignore[arg-type]
    assert err.value.message == "a guest request page must be bytes-like, not str"
    assert err.value.spec == SPEC_FW


def test_firmware_failure_defaults() -> None:
    """Without a status the failure is KVM's -ETIMEDOUT by default (sev-dev.c
    __sev_do_cmd_locked); every attribute given is kept."""
    plain = FirmwareFailure("no answer")
    assert (plain.message, plain.rule, plain.errno, plain.field, plain.offset) == (
        "no answer",
        "firmware",
        Errno.ETIMEDOUT,
        None,
        None,
    )
    assert plain.spec == "drivers/crypto/ccp/sev-dev.c __sev_do_cmd_locked"
    full = FirmwareFailure(
        "dead", rule="psp-dead", spec="S", errno=Errno.EBUSY, field="request", offset=0x30
    )
    assert (full.message, full.rule, full.spec, full.errno, full.field, full.offset) == (
        "dead",
        "psp-dead",
        "S",
        Errno.EBUSY,
        "request",
        0x30,
    )


def test_firmware_failure_pickles_whole() -> None:
    """A forkserver child's failure reaches the parent with every attribute."""
    plain = FirmwareFailure("no answer")
    full = FirmwareFailure(
        "dead", rule="psp-dead", spec="S", errno=Errno.EBUSY, field="request", offset=0x30
    )
    for failure in (plain, full):
        back = pickle.loads(pickle.dumps(failure))
        assert type(back) is FirmwareFailure
        assert (back.message, back.rule, back.spec, back.errno, back.field, back.offset) == (
            failure.message,
            failure.rule,
            failure.spec,
            failure.errno,
            failure.field,
            failure.offset,
        )
        assert str(back) == str(failure)


def test_report_response_bytes(fw: SimulatedFirmware) -> None:
    """MSG_REPORT_RSP (§3.6): STATUS 0, REPORT_SIZE 0x4A0, 24 reserved zero bytes, the report
    at 0x20; 0x4C0 bytes in all, as MSG_SIZE says."""
    hdr, plain = _exchange(fw, ReportReq(user_data=USER_DATA))
    assert hdr.msg_sz == len(plain) == 0x4C0
    assert plain[:0x20] == bytes(4) + (0x4A0).to_bytes(4, "little") + bytes(24)
    report = AttestationReport.from_bytes(plain[0x20:])
    assert (report.report_data, report.vmpl) == (USER_DATA, 0)


def test_captured_report_response_bytes() -> None:
    """A captured report comes back verbatim after the same 0x20-byte response header."""
    captured = bytes(_report(SimulatedFirmware(_config()), ReportReq()).to_bytes())
    fw = SimulatedFirmware(_config(captured_report=captured))
    hdr, plain = _exchange(fw, ReportReq(user_data=USER_DATA))
    assert hdr.msg_sz == len(plain) == 0x4C0
    assert plain == bytes(4) + (0x4A0).to_bytes(4, "little") + bytes(24) + captured


def test_report_carries_the_launch_fields() -> None:
    """GUEST_SVN, FAMILY_ID, IMAGE_ID, the key digests (AUTHOR_KEY_EN with an author key),
    REPORT_ID and the firmware version (current and committed) come from the launch (§1.1)."""
    fw = SimulatedFirmware(
        _config(
            guest_svn=7,
            family_id=b"\x11" * 16,
            image_id=b"\x22" * 16,
            id_key_digest=b"\x33" * 48,
            author_key_digest=b"\x44" * 48,
            report_id=b"\x55" * 32,
            firmware_version=(1, 57, 9),
        )
    )
    report = _report(fw, ReportReq(user_data=USER_DATA))
    assert (report.guest_svn, report.family_id, report.image_id) == (7, b"\x11" * 16, b"\x22" * 16)
    assert (report.id_key_digest, report.author_key_digest) == (b"\x33" * 48, b"\x44" * 48)
    assert report.report_id == b"\x55" * 32
    assert (report.current_major, report.current_minor, report.current_build) == (1, 57, 9)
    assert (report.committed_major, report.committed_minor, report.committed_build) == (1, 57, 9)
    assert report.signer_info & 1 == 1  # AUTHOR_KEY_EN
    assert _report(SimulatedFirmware(_config()), ReportReq()).signer_info & 1 == 0


def test_short_message_reads_zero_padded(fw: SimulatedFirmware) -> None:
    """MSG_SIZE is not checked against MSG_REPORT_REQ (§3.5 note): 64 bytes of REPORT_DATA
    alone read as VMPL 0, KEY_SEL 0 and zero reserved bytes."""
    report = _report(fw, USER_DATA)
    assert (report.report_data, report.vmpl) == (USER_DATA, 0)


# ---------------------------------------------------------------------------------------------
# KEY_REQ, TSC_INFO_REQ
# ---------------------------------------------------------------------------------------------

# Pinned output of the simulated derivation for KeyReq(vmpl=0, guest_field_select=0b101001)
# with the default seed and _config(): guards its determinism across versions.
# (POLICY | MEASUREMENT | TCB_VERSION at the current TCB).
PINNED_KEY_REQ = KeyReq(guest_field_select=0b101001, tcb_version=DEFAULT_TCB_INT)
PINNED_KEY_HEX = "b79cbe1163720fb54fd82d0040655a3cb6515600c4cbc0443904e1b72d9b4212"


def _derived(fw: SimulatedFirmware, req: KeyReq, **kw: object) -> KeyRsp:
    hdr, plain = _exchange(fw, req, msg_type=MsgType.KEY_REQ, **kw)
    assert (hdr.msg_type, hdr.msg_sz) == (MsgType.KEY_RSP, 0x40)
    return KeyRsp.from_bytes(plain)


def test_key_req_is_deterministic(fw: SimulatedFirmware) -> None:
    rsp = _derived(fw, PINNED_KEY_REQ)
    assert rsp.status == 0
    assert len(rsp.derived_key) == 32
    assert rsp.derived_key == _derived(SimulatedFirmware(_config()), PINNED_KEY_REQ).derived_key
    assert rsp.derived_key == bytes.fromhex(PINNED_KEY_HEX)
    # Every input moves the key: VMPL, field selection, seed, measurement when selected.
    keys = {
        rsp.derived_key,
        _derived(fw, KeyReq(vmpl=1), seqno=3).derived_key,
        _derived(fw, KeyReq(), seqno=5).derived_key,
        _derived(SimulatedFirmware(_config(seed=b"other")), PINNED_KEY_REQ).derived_key,
        _derived(SimulatedFirmware(_config(measurement=bytes(48))), PINNED_KEY_REQ).derived_key,
    }
    assert len(keys) == 5
    # Not selected → the measurement does not matter.
    assert (
        _derived(SimulatedFirmware(_config(measurement=bytes(48))), KeyReq()).derived_key
        == _derived(fw, KeyReq(), seqno=7).derived_key
    )


@pytest.mark.parametrize(
    ("req", "status"),
    [
        (KeyReq(root_key_select=1 << 3), 0x16),
        (KeyReq(reserved_0x4=b"\x01\0\0\0"), 0x16),
        (KeyReq(root_key_select=3 << 1), 0x27),
        (KeyReq(root_key_select=2 << 1), 0x27),  # VLEK not loaded
        (KeyReq(guest_field_select=1 << 6), 0x16),
        (KeyReq(guest_field_select=1 << 5, tcb_version=0xDF1B000000000004), 0x16),  # > current
        (KeyReq(guest_field_select=1 << 5, tcb_version=0x0000000100000000), 0x16),  # reserved
        (KeyReq(guest_field_select=1 << 4, guest_svn=1), 0x16),  # > launch SVN 0
    ],
    ids=[
        "rks-reserved",
        "reserved",
        "key-sel-3",
        "vlek-missing",
        "gfs-bit6",
        "tcb-above",
        "tcb-reserved-byte",
        "svn-above",
    ],
)
def test_key_req_payload_statuses(fw: SimulatedFirmware, req: KeyReq, status: int) -> None:
    rsp = _derived(fw, req)
    assert (rsp.status, rsp.derived_key) == (status, bytes(32))
    assert fw.counter(0) == 2


def test_key_req_vmpl_below_vmpck(fw: SimulatedFirmware) -> None:
    rsp = _derived(fw, KeyReq(vmpl=0), vmpck=1)
    assert (rsp.status, rsp.derived_key) == (0x16, bytes(32))


def test_key_req_lower_tcb_accepted(fw: SimulatedFirmware) -> None:
    lower = _derived(fw, KeyReq(guest_field_select=1 << 5, tcb_version=0xDE1A000000000004))
    assert lower.status == 0
    assert lower.derived_key != _derived(fw, PINNED_KEY_REQ, seqno=3).derived_key


# Pinned like PINNED_KEY_HEX: the VMRK root (ROOT_KEY_SELECT 1) and, with a VLEK loaded, the
# VLEK root that KEY_SEL 0 picks (facts §1.6), each for KeyReq() otherwise.
PINNED_VMRK_HEX = "00581cd8161ede29da5d0018efdb37776ce951a4b37e79c8c023106085ccc4c8"
PINNED_VLEK_HEX = "e177a2357854592457f26c6dd3a80cb9faa4c163aee1b42a9c677d21edba51ae"


def test_key_req_roots(fw: SimulatedFirmware) -> None:
    """ROOT_KEY_SELECT 1 derives from the VMRK; with a VLEK loaded KEY_SEL 0 and 2 derive from
    the VLEK and KEY_SEL 1 from the VCEK, as a VCEK-only firmware does."""
    assert _derived(fw, KeyReq(root_key_select=1)).derived_key.hex() == PINNED_VMRK_HEX
    vlek = SimulatedFirmware(_config(signing_key="vlek"))
    assert _derived(vlek, KeyReq()).derived_key.hex() == PINNED_VLEK_HEX
    vcek_sel = KeyReq(root_key_select=KeySel.VCEK << 1)
    assert (
        _derived(vlek, vcek_sel, seqno=3).derived_key
        == _derived(fw, vcek_sel, seqno=3).derived_key
        != _derived(fw, KeyReq(), seqno=5).derived_key
    )
    assert (
        _derived(vlek, KeyReq(), seqno=5).derived_key != _derived(fw, KeyReq(), seqno=7).derived_key
    )


def test_key_req_unselected_fields_ignored(fw: SimulatedFirmware) -> None:
    """GUEST_SVN and TCB_VERSION count only when GUEST_FIELD_SELECT selects them (§3.5): then
    neither is checked nor mixed in."""
    plain = _derived(fw, KeyReq()).derived_key
    assert _derived(fw, KeyReq(guest_svn=5), seqno=3) == KeyRsp(derived_key=plain)
    assert _derived(fw, KeyReq(tcb_version=0x0000000100000000), seqno=5) == KeyRsp(
        derived_key=plain
    )


# GUEST_FIELD_SELECT bits (facts §3.5, ASPFW snp_msg_key_req_t): 1 IMAGE_ID, 2 FAMILY_ID,
# 4 GUEST_SVN.
_GFS_IMAGE_ID, _GFS_FAMILY_ID, _GFS_SVN = 1 << 1, 1 << 2, 1 << 4


def test_key_req_mixes_selected_launch_fields() -> None:
    """IMAGE_ID, FAMILY_ID and GUEST_SVN move the key when selected and only then."""
    one = SimulatedFirmware(_config(image_id=b"\x01" * 16, family_id=b"\x02" * 16, guest_svn=2))
    two = SimulatedFirmware(_config(image_id=b"\x03" * 16, family_id=b"\x04" * 16, guest_svn=2))
    seqno = iter(range(1, 99, 2))
    for gfs in (_GFS_IMAGE_ID, _GFS_FAMILY_ID):
        n = next(seqno)
        assert (
            _derived(one, KeyReq(guest_field_select=gfs), seqno=n).derived_key
            != _derived(two, KeyReq(guest_field_select=gfs), seqno=n).derived_key
        )
    n = next(seqno)
    assert _derived(one, KeyReq(), seqno=n) == _derived(two, KeyReq(), seqno=n)
    svn = [
        _derived(one, KeyReq(guest_field_select=_GFS_SVN, guest_svn=v), seqno=next(seqno))
        for v in (1, 2)
    ]
    assert svn[0].status == svn[1].status == 0
    assert svn[0].derived_key != svn[1].derived_key


def test_key_req_mixes_author_key_else_id_key() -> None:
    """The key mixes the author key digest when one is set, else the ID key digest."""
    keys = {
        (author, ident): _derived(
            SimulatedFirmware(
                _config(author_key_digest=bytes([author]) * 48, id_key_digest=bytes([ident]) * 48)
            ),
            KeyReq(),
        ).derived_key
        for author, ident in ((0, 1), (0, 2), (5, 1), (5, 2))
    }
    assert keys[0, 1] != keys[0, 2]
    assert keys[5, 1] == keys[5, 2] != keys[0, 1]


def test_key_req_guest_svn_up_to_launch_svn() -> None:
    """GUEST_SVN may equal the ID block's (3 here) but not exceed it (§3.5)."""
    fw = SimulatedFirmware(_config(guest_svn=3))
    svn = 1 << 4
    assert _derived(fw, KeyReq(guest_field_select=svn, guest_svn=3)).status == 0
    rsp = _derived(fw, KeyReq(guest_field_select=svn, guest_svn=4), seqno=3)
    assert (rsp.status, rsp.derived_key) == (0x16, bytes(32))


@pytest.mark.parametrize("vmpck", [4, -1, True, 0.0])
def test_counter_refuses_other_vmpcks(fw: SimulatedFirmware, vmpck: object) -> None:
    with pytest.raises(HypervisorUsageError) as err:
        fw.counter(vmpck)  # type: ignore[arg-type]
    assert (err.value.rule, err.value.field) == ("firmware-config", "vmpck")
    assert err.value.message == f"vmpck must be 0..3, not {vmpck!r}"
    assert err.value.spec == SPEC_CONFIG


def test_tsc_info() -> None:
    fw = SimulatedFirmware(_config(tsc_scale=0x1234, tsc_offset=0x5678, tsc_factor=300))
    hdr, plain = _exchange(fw, TscInfoReq(), msg_type=MsgType.TSC_INFO_REQ)
    assert (hdr.msg_type, hdr.msg_seqno, hdr.msg_sz) == (MsgType.TSC_INFO_RSP, 2, 128)
    rsp = TscInfoRsp.from_bytes(plain)
    assert (rsp.status, rsp.tsc_scale, rsp.tsc_offset, rsp.tsc_factor) == (0, 0x1234, 0x5678, 300)


# ---------------------------------------------------------------------------------------------
# Configuration, threads
# ---------------------------------------------------------------------------------------------


def test_default_report_id() -> None:
    """REPORT_ID defaults to the first 32 bytes of HMAC-SHA-384(seed, "ghcb simfw REPORT_ID")."""
    for seed in (DEFAULT_SEED, b"other"):
        expected = hmac.new(seed, b"ghcb simfw REPORT_ID", hashlib.sha384).digest()[:32]
        assert FirmwareConfig(seed=seed).report_id == expected


def test_default_vmpcks() -> None:
    """VMPCKn = the first 32 bytes of HMAC-SHA-384(seed, "ghcb simfw VMPCKn")."""
    keys = default_vmpcks()
    assert keys == tuple(
        hmac.new(DEFAULT_SEED, b"ghcb simfw VMPCK%d" % i, hashlib.sha384).digest()[:32]
        for i in range(4)
    )
    assert FirmwareConfig().vmpcks == keys
    assert len(set(keys)) == 4
    assert all(len(k) == 32 for k in keys)
    assert default_vmpcks(DEFAULT_SEED + b"x") != keys


@pytest.mark.parametrize(
    ("values", "error", "rule", "field", "message"),
    [
        (
            {"report_version": 4},
            HypervisorUsageError,
            "firmware-config",
            "report_version",
            "report_version must be one of [2, 3, 5]",
        ),
        (
            {"measurement": bytes(32)},
            HypervisorUsageError,
            "firmware-config",
            "measurement",
            "measurement is 48 bytes, got 32",
        ),
        (
            {"measurement": "00" * 48},
            InputTypeError,
            "input-type",
            None,
            "measurement must be bytes-like, not str",
        ),
        (
            {"vmpcks": (bytes(32),) * 3},
            HypervisorUsageError,
            "firmware-config",
            "vmpcks",
            "vmpcks must be 4 keys",
        ),
        (
            {"vmpcks": (bytes(31),) * 4},
            HypervisorUsageError,
            "firmware-config",
            "vmpcks",
            "each VMPCK is 32 bytes",
        ),
        (
            {"vmpcks": ("k" * 32,) * 4},
            InputTypeError,
            "input-type",
            None,
            "a VMPCK must be bytes-like, not str",
        ),
        (
            {"captured_report": bytes(100)},
            HypervisorUsageError,
            "firmware-config",
            "captured_report",
            "captured_report is 1184 bytes, got 100",
        ),
        (
            {"signing_key": "ark"},
            HypervisorUsageError,
            "firmware-config",
            "signing_key",
            "signing_key must be 'vcek' or 'vlek'",
        ),
        (
            {"tcb": 0xDE1B000000000004},
            HypervisorUsageError,
            "firmware-config",
            "tcb",
            "tcb must be a Tcb, not int",
        ),
    ],
)
def test_config_rejects(
    values: dict[str, object], error: type[GhcbError], rule: str, field: str | None, message: str
) -> None:
    with pytest.raises(error) as err:
        FirmwareConfig(**values)  # type: ignore[arg-type]
    assert (err.value.rule, err.value.field, err.value.message) == (rule, field, message)
    assert err.value.spec == SPEC_CONFIG


@pytest.mark.parametrize(
    ("values", "rule", "field"),
    [({"product": "Naples"}, "product", None), ({"tcb": Tcb(fmc=1)}, "tcb-fmc", "tcb.fmc")],
)
def test_config_rejects_product_and_tcb(
    values: dict[str, object], rule: str, field: str | None
) -> None:
    with pytest.raises(HypervisorUsageError) as err:
        FirmwareConfig(**values)  # type: ignore[arg-type]
    assert (err.value.rule, err.value.field) == (rule, field)
    if rule == "product":
        assert err.value.spec == SPEC_CONFIG


def test_firmware_needs_a_config() -> None:
    with pytest.raises(HypervisorUsageError) as err:
        SimulatedFirmware({"product": "Milan"})  # type: ignore[arg-type]
    assert (err.value.rule, err.value.field, err.value.message, err.value.spec) == (
        "firmware-config",
        "config",
        "config must be a FirmwareConfig",
        SPEC_CONFIG,
    )


def test_config_chain_is_the_chips() -> None:
    """The chain of the configured product, chip, launch TCB and CSP_ID."""
    chip_id = bytes(range(1, 9)) + bytes(56)
    config = FirmwareConfig(
        product=Product.TURIN, chip_id=chip_id, tcb=Tcb(fmc=1, snp=2), csp_id="CN=cfg.example"
    )
    made = config.chain()
    assert made is chain("Turin", chip_id=chip_id, tcb=Tcb(fmc=1, snp=2), csp_id="CN=cfg.example")
    assert SimulatedFirmware(config).chain is made


def test_concurrent_requests_and_tcb_updates(fw: SimulatedFirmware) -> None:
    tcbs = [fw.config.tcb, NEW_TCB]
    by_int = {tcb.to_int(Product.MILAN): tcb for tcb in tcbs}
    for tcb in tcbs:
        fw.chain.at_tcb(tcb)  # warm the chain cache
    reports: dict[int, list[AttestationReport]] = {i: [] for i in range(4)}
    errors: list[BaseException] = []
    stop = threading.Event()

    def guest(vmpck: int) -> None:
        try:
            for n in range(12):
                req = ReportReq(user_data=bytes([vmpck, n]) + bytes(62), vmpl=vmpck)
                reports[vmpck].append(_report(fw, req, vmpck=vmpck, seqno=2 * n + 1))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def updater() -> None:
        i = 0
        while not stop.is_set():
            fw.set_tcb(tcbs[i % 2])
            i += 1

    threads = [threading.Thread(target=guest, args=(v,)) for v in range(4)]
    upd = threading.Thread(target=updater)
    upd.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    upd.join()
    assert errors == []
    assert [fw.counter(i) for i in range(4)] == [24] * 4
    for vmpck, got in reports.items():
        assert [r.report_data[:2] for r in got] == [bytes([vmpck, n]) for n in range(12)]
        for r in got:
            assert r.current_tcb == r.reported_tcb == r.committed_tcb
            signer = fw.chain.at_tcb(by_int[r.reported_tcb])
            assert verify_report(r, signer.vcek) is True
