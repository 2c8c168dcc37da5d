"""The reference hypervisor: every path of KVM's guest-request handling, for each ABI, with the
exact EXITINFO1 / EXITINFO2 / RBX and guest-memory bytes (issue 7 §2)."""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import ExitCode, FirmwareStatus, GhcbErr, GhcbPage, MsgType, build_page, parse_page
from ghcb.codes import Errno, KvmExit
from ghcb.guest import Guest, GuestLayout
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    CertsExit,
    DisabledAbi,
    DoneExit,
    FirmwareFailure,
    HostError,
    HypervisorUsageError,
    Interrupted,
    MergedAbi,
    RecordingFirmware,
    Resumed,
    RunFailed,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.kvm_abi import MSG_TYPE_OFFSET, with_immediate_exit
from ghcb.hypervisor.vm import _SPEC_MODEL as VM_SPEC
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from ghcb.hypervisor import CertAbi

LAYOUT = GuestLayout()
GHCB, REQ, RESP, CERTS = LAYOUT.ghcb, LAYOUT.request, LAYOUT.response, LAYOUT.certs
CERT_PAGES = LAYOUT.cert_pages
FILL = 0xAA  # pre-fill of the certificate pages, to see what is written
RESPONSE_REGS = {"rax", "rbx", "rcx", "rdx", "sw_exit_info_1", "sw_exit_info_2"}
PRESET = {"sw_exit_info_1", "sw_exit_info_2"}  # the bits KVM's presets set
GENERIC_V15 = 0x8000000000000000
GENERIC_MERGED = 0xFFFFFFFF00000000


def guest(**kwargs: Any) -> Guest:
    return Guest(fill=FILL, guard_page=True, request_fill=0x5A, **kwargs)


def vcpu_for(
    g: Guest,
    abi: CertAbi | None,
    *,
    snp: bool = True,
    firmware: RecordingFirmware | None = None,
) -> Vcpu:
    return Vcpu(Vm(firmware or RecordingFirmware(), snp=snp, cert_abi=abi), g.memory, GHCB)


def with_ret(abi: Any, exit_: CertsExit, *, immediate_exit: int = 0, **fields: int) -> bytes:
    _, body = decode_kvm_run(abi, exit_.kvm_run)
    return encode_kvm_run(abi, {**body, **fields}, immediate_exit=immediate_exit)


def start_exit(g: Guest, abi: Any, **fields: int) -> tuple[Vcpu, CertsExit]:
    """Write an extended request and run until the certificate exit."""
    g.request(**fields)
    vcpu = vcpu_for(g, abi)
    exit_ = vcpu.run()
    assert isinstance(exit_, CertsExit)
    return vcpu, exit_


def at_exit(page: GhcbPage) -> GhcbPage:
    """What KVM has written to the guest's GHCB when it exits to userspace: the bitmap cleared
    (sev_es_sync_from_ghcb), then EXITINFO1 = EXITINFO2 = 0 with their valid bits."""
    return page.cleared_bitmap().with_fields(sw_exit_info_1=0, sw_exit_info_2=0)


def answered(page: GhcbPage, regs: dict[str, int], info1: int, info2: int) -> GhcbPage:
    """The guest's GHCB once KVM entered the guest: the bitmap cleared, EXITINFO1/2 set, and
    RAX/RBX/RCX/RDX written back (sev_es_sync_to_ghcb), each marked valid."""
    return page.cleared_bitmap().with_fields(sw_exit_info_1=info1, sw_exit_info_2=info2, **regs)


def regs_of(page: GhcbPage, **override: int) -> dict[str, int]:
    """RAX/RBX/RCX/RDX as KVM writes them back: the guest's value if valid, else 0."""
    return {n: page.get_if_valid(n) for n in ("rax", "rbx", "rcx", "rdx")} | override


ABIS = [None, MergedAbi(), V15Abi()]
ABI_IDS = ["disabled", "merged", "v15"]


# -- sev_handle_vmgexit before any handler -----------------------------------------------------
@pytest.mark.parametrize("abi", ABIS, ids=ABI_IDS)
class TestEntry:
    def test_gpa_zero_resumes_before_registration_check(self, abi: Any) -> None:
        """GHCB GPA 0: "return right back to the guest" — before the SNP registered-GPA check,
        so an SNP guest with another registered GPA is resumed, not failed; nothing written."""
        g = guest()
        page = g.request()
        assert vcpu_for(g, abi).run(gpa=0) == Resumed(None)
        assert g.ghcb() == page

    def test_unmapped_gpa_resumes(self, abi: Any) -> None:
        """kvm_vcpu_map fails (no memslot): the guest resumes untouched, registered or not."""
        g = guest()
        page = g.request()
        assert vcpu_for(g, abi).run(gpa=0xDEAD000) == Resumed(None)
        assert g.ghcb() == page  # the registered GHCB is untouched too

    def test_msr_protocol_goes_first(self, abi: Any) -> None:
        """GPA bits 11:0 set: the MSR protocol path ("if (ghcb_gpa & GHCB_MSR_INFO_MASK)
        return sev_handle_vmgexit_msr_protocol(svm);"), before the GHCB is mapped: a CPUID
        request for leaf 0 with an empty table answers 0x005, the GHCB untouched (the MSR
        protocol itself: tests/test_msr_protocol.py)."""
        g = guest()
        page = g.request()
        assert vcpu_for(g, abi).run(gpa=0x004) == Resumed(None, msr=0x005)
        assert g.ghcb() == page

    def test_unregistered_gpa_syncs_then_fails(self, abi: Any) -> None:
        """An SNP guest's unregistered GHCB: sev_es_sync_from_ghcb has already cleared the
        bitmap in guest memory, then KVM_RUN fails -EINVAL; the next KVM_RUN enters the guest
        and writes the registers back (valid), nothing else."""
        g = guest()
        g.memory.map(0x9000)
        page = g.request_page()
        g.memory.guest_write(0x9000, build_page(page))
        vcpu = vcpu_for(g, abi)
        assert vcpu.run(gpa=0x9000) == RunFailed(
            Errno.EINVAL, "GHCB GPA differs from the registered one"
        )
        assert parse_page(g.memory.guest_read(0x9000, PAGE_SIZE)) == page.cleared_bitmap()
        again = vcpu.run()
        want = page.cleared_bitmap().with_fields(**regs_of(page))
        assert again == Resumed(want)
        assert parse_page(g.memory.guest_read(0x9000, PAGE_SIZE)) == want

    def test_non_snp_guest_may_use_any_gpa(self, abi: Any) -> None:
        """The registration rule is SNP's: an SEV-ES guest's GHCB anywhere is served (and an
        SNP-only exit from it is MISSING_INPUT)."""
        g = guest()
        g.memory.map(0x9000)
        page = g.request_page(ExitCode.SNP_GUEST_REQUEST)
        g.memory.guest_write(0x9000, build_page(page))
        result = vcpu_for(g, abi, snp=False).run(gpa=0x9000)
        want = answered(page, regs_of(page), 2, GhcbErr.MISSING_INPUT)
        assert result == Resumed(want)

    def test_private_ghcb_is_read_through_the_host_mapping(self, abi: Any) -> None:
        """A GHCB page the guest holds private: kvm_vcpu_map maps the host (shared) backing,
        which holds zeros — KVM answers MISSING_INPUT there; the guest, reading its private
        backing, still sees its own request."""
        g = guest()
        g.memory.set_shared(GHCB, shared=False)
        page = g.request()
        result = vcpu_for(g, abi).run()
        blank = GhcbPage.empty()
        assert result == Resumed(answered(blank, regs_of(blank), 2, GhcbErr.MISSING_INPUT))
        assert g.ghcb() == page
        assert parse_page(g.memory.host_read(GHCB, PAGE_SIZE)) == result.page


# -- sev_es_validate_vmgexit ---------------------------------------------------------------------
@pytest.mark.parametrize("abi", ABIS, ids=ABI_IDS)
class TestValidation:
    @pytest.mark.parametrize(
        ("code", "fields", "reason"),
        [
            (ExitCode.SNP_GUEST_REQUEST, {}, None),
            (0x8000_1234, {}, GhcbErr.INVALID_EVENT),
            (ExitCode.SNP_RUN_VMPL, {}, GhcbErr.INVALID_EVENT),
            (ExitCode.CPUID, {"rax": 0xD, "rcx": 0}, GhcbErr.MISSING_INPUT),
        ],
        ids=["ok", "unknown-event", "run-vmpl", "cpuid-xcr0"],
    )
    def test_reason(self, abi: Any, code: int, fields: dict[str, int], reason: GhcbErr) -> None:
        """EXITINFO1 = 2, EXITINFO2 = the reason; the registers written back, valid."""
        g = guest()
        page = g.request(code, **fields)
        result = vcpu_for(g, abi).run()
        want = answered(page, regs_of(page), *((0, 0) if reason is None else (2, reason)))
        assert result == Resumed(want)
        assert g.ghcb_bytes() == build_page(want)

    def test_usage_checked_first(self, abi: Any) -> None:
        """ghcb_usage != 0 beats everything (even a cleared bitmap): INVALID_USAGE."""
        g = guest()
        page = g.write_ghcb(g.request_page().cleared_bitmap().replace(ghcb_usage=1))
        assert vcpu_for(g, abi).run() == Resumed(answered(page, regs_of(page), 2, 2))

    def test_missing_exit_fields(self, abi: Any) -> None:
        """No valid bits at all: MISSING_INPUT, not INVALID_EVENT."""
        g = guest()
        page = g.write_ghcb(g.request_page(0x8000_1234).cleared_bitmap())
        assert vcpu_for(g, abi).run() == Resumed(answered(page, regs_of(page), 2, 4))

    def test_guest_request_needs_snp(self, abi: Any) -> None:
        """Guest requests from a non-SNP guest: MISSING_INPUT."""
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(g, abi, snp=False).run()
        assert result == Resumed(answered(page, regs_of(page), 2, GhcbErr.MISSING_INPUT))

    def test_registers_copied_only_if_valid(self, abi: Any) -> None:
        """KVM copies RCX/RDX only when valid (else 0) and writes them back valid."""
        g = guest()
        page = g.write_ghcb(g.request_page(ExitCode.SNP_GUEST_REQUEST).replace(rcx=77, rdx=88))
        result = vcpu_for(g, abi).run()
        assert isinstance(result, Resumed)
        out = g.ghcb()
        assert (out.rcx, out.rdx) == (0, 0)
        assert out.valid_fields == RESPONSE_REGS
        assert out == answered(page, {"rax": 0, "rbx": 0, "rcx": 0, "rdx": 0}, 0, 0)

    def test_exits_kvm_has_no_handler_for_are_unhandled(self, abi: Any) -> None:
        """A valid RDTSC exit: svm_exit_handlers has no entry ("svm_handle_invalid_exit"):
        KVM's sync and presets are in guest memory (bitmap cleared, EXITINFO1/2 = 0 valid);
        the rest is as the guest wrote it."""
        g = guest()
        page = g.request(ExitCode.RDTSC)
        vcpu = vcpu_for(g, abi)
        assert vcpu.run() == Unhandled(ExitCode.RDTSC)
        assert g.ghcb() == at_exit(page)

    def test_stray_valid_bits_are_ignored(self, abi: Any) -> None:
        """Bits for reserved qwords (or the bitmap itself) do not change KVM's answer, and the
        whole bitmap is cleared."""
        g = guest()
        page = g.request_page(ExitCode.SNP_GUEST_REQUEST)
        stray = page.valid_bits | 1 << 0 | 1 << 127 | 1 << 64
        page = g.write_ghcb(page.replace(valid_bitmap=stray.to_bytes(16, "little")))
        result = vcpu_for(g, abi).run()
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        assert g.ghcb().undefined_valid_bits == ()


@pytest.mark.parametrize("abi", [None, MergedAbi()], ids=["disabled", "merged"])
@pytest.mark.parametrize(
    "fields",
    [{"sw_exit_info_1": REQ + 8}, {"sw_exit_info_2": RESP + 1}, {"sw_exit_info_2": REQ}],
    ids=["info1-unaligned", "info2-unaligned", "same-page"],
)
def test_request_pages_current(abi: Any, fields: dict[str, int]) -> None:
    """Current KVM's validator checks both guest requests' pages: MISSING_INPUT. (The v15
    tree's does not: see TestV15Tree.)"""
    for code in (ExitCode.SNP_GUEST_REQUEST, ExitCode.SNP_EXT_GUEST_REQUEST):
        g = guest()
        page = g.request(code, **fields)
        assert vcpu_for(g, abi).run() == Resumed(answered(page, regs_of(page), 2, 4))


# -- SNP Guest Request, merged tree (disabled and merged ABIs) ------------------------------------
@pytest.mark.parametrize("abi", [None, MergedAbi()], ids=["disabled", "merged"])
class TestGuestRequestMerged:
    def test_firmware_status_in_low_half(self, abi: Any) -> None:
        """The firmware answers; EXITINFO2 = SNP_GUEST_ERR(0, status); response copied."""
        firmware = RecordingFirmware(respond=lambda r: (b"\x11" * PAGE_SIZE, 0x16))
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(g, abi, firmware=firmware).run()
        assert result == Resumed(answered(page, regs_of(page), 0, 0x16))
        assert firmware.requests == [g.memory.guest_read(REQ, PAGE_SIZE)]
        assert g.response() == b"\x11" * PAGE_SIZE

    def test_firmware_error_copies_the_stale_response_buffer(self, abi: Any) -> None:
        """ "Firmware failures are propagated on to guest": with a status and no new response,
        KVM still copies sev->guest_resp_buf — the previous request's response."""
        answers = iter([(b"\x11" * PAGE_SIZE, 0), (None, FirmwareStatus.INVALID_PARAM)])
        firmware = RecordingFirmware(respond=lambda r: next(answers))
        g = guest()
        vcpu = vcpu_for(g, abi, firmware=firmware)
        g.request(ExitCode.SNP_GUEST_REQUEST)
        vcpu.run()
        g.memory.guest_write(RESP, bytes(PAGE_SIZE))
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        assert vcpu.run() == Resumed(answered(page, regs_of(page), 0, 0x16))
        assert g.response() == b"\x11" * PAGE_SIZE

    @pytest.mark.parametrize("where", ["sw_exit_info_1", "sw_exit_info_2"])
    def test_unmapped_page_fails_run(self, abi: Any, where: str) -> None:
        """kvm_read_guest / kvm_write_guest fail (no memslot): -EIO; the GHCB holds KVM's
        presets; the next KVM_RUN enters the guest with EXITINFO2 = 0 (fail-open)."""
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST, **{where: 0xDEAD000})
        vcpu = vcpu_for(g, abi)
        result = vcpu.run()
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EIO
        assert g.ghcb() == at_exit(page)
        assert vcpu.run() == Resumed(answered(page, regs_of(page), 0, 0))

    def test_private_response_page_is_written_where_the_guest_does_not_look(self, abi: Any) -> None:
        """A response page the guest holds private: kvm_write_guest writes through the host
        mapping and succeeds; the guest reads its private backing (unchanged) and EXITINFO2 =
        0."""
        firmware = RecordingFirmware(respond=lambda r: (b"\x22" * PAGE_SIZE, 0))
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        g.memory.set_shared(RESP, shared=False)
        result = vcpu_for(g, abi, firmware=firmware).run()
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        assert g.response() == bytes(PAGE_SIZE)  # the private backing
        assert g.memory.host_read(RESP, PAGE_SIZE) == b"\x22" * PAGE_SIZE

    def test_private_request_page_sends_the_host_view(self, abi: Any) -> None:
        """A private request page: kvm_read_guest reads the shared backing (zeros here)."""
        firmware = RecordingFirmware()
        g = guest()
        g.request(ExitCode.SNP_GUEST_REQUEST)
        page = g.ghcb()
        g.memory.set_shared(REQ, shared=False)
        result = vcpu_for(g, abi, firmware=firmware).run()
        assert firmware.requests == [g.memory.host_read(REQ, PAGE_SIZE)]
        written = bytearray(b"\x5a" * PAGE_SIZE)
        written[MSG_TYPE_OFFSET] = MsgType.REPORT_REQ
        assert g.memory.host_read(REQ, PAGE_SIZE) == written  # written while it was shared
        assert g.memory.guest_read(REQ, PAGE_SIZE) == bytes(PAGE_SIZE)  # its private backing
        assert result == Resumed(answered(page, regs_of(page), 0, 0))

    @pytest.mark.parametrize("errno", [Errno.ETIMEDOUT, Errno.EBUSY, Errno.ENODEV])
    def test_firmware_failure_fails_run(self, abi: Any, errno: Errno) -> None:
        """ "if (ret && !fw_err) return ret;": KVM_RUN fails with sev_issue_cmd's error
        (-ETIMEDOUT: no answer; -EBUSY: PSP dead; -ENODEV: no PSP), nothing is written to the
        response page, the GHCB holds the presets."""

        def dead(request: bytes) -> tuple[bytes, int]:
            raise FirmwareFailure("no status", errno=errno)

        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        response = g.response()
        vcpu = vcpu_for(g, abi, firmware=RecordingFirmware(respond=dead))
        result = vcpu.run()
        assert isinstance(result, RunFailed)
        assert result.errno == errno
        assert g.response() == response
        assert g.ghcb() == at_exit(page)
        assert vcpu.run() == Resumed(answered(page, regs_of(page), 0, 0))  # fail-open

    @pytest.mark.parametrize(
        "answer",
        [
            lambda r: (r + r, 0),
            lambda r: None,
            lambda r: (r, "x"),
            lambda r: (r, 2**32),
            lambda r: (r.decode("latin-1"), 0),
        ],
        ids=["two-pages", "none", "str-status", "wide-status", "str-page"],
    )
    def test_broken_firmware_is_a_host_error(self, abi: Any, answer: Any) -> None:
        """A firmware double that answers something else than (one page or None, u32): a
        HostError out of KVM_RUN (the host's fault, not the guest's); the GHCB stays mapped
        and the next KVM_RUN enters the guest with KVM's presets."""
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        response = g.response()
        vcpu = vcpu_for(g, abi, firmware=RecordingFirmware(respond=answer))
        with pytest.raises(HostError) as e:
            vcpu.run()
        assert e.value.rule == "firmware-answer"
        assert g.response() == response
        assert vcpu.run() == Resumed(answered(page, regs_of(page), 0, 0))

    def test_raising_firmware_is_wrapped(self, abi: Any) -> None:
        """A firmware that raises a plain Python error: HostError from it."""

        def boom(request: bytes) -> tuple[bytes, int]:
            raise OSError("PSP mailbox gone")

        g = guest()
        g.request(ExitCode.SNP_GUEST_REQUEST)
        with pytest.raises(HostError) as e:
            vcpu_for(g, abi, firmware=RecordingFirmware(respond=boom)).run()
        assert e.value.rule == "firmware-raised"
        assert isinstance(e.value.__cause__, OSError)


# -- the v15-era tree ------------------------------------------------------------------------------
class TestV15Tree:
    abi = V15Abi()

    def test_plain_request_ok(self) -> None:
        """Firmware status 0: EXITINFO2 = 0, the firmware wrote the response page itself."""
        firmware = RecordingFirmware(respond=lambda r: (b"\x33" * PAGE_SIZE, 0))
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        assert vcpu_for(g, self.abi, firmware=firmware).run() == Resumed(
            answered(page, regs_of(page), 0, 0)
        )
        assert g.response() == b"\x33" * PAGE_SIZE

    def test_firmware_status_is_generic(self) -> None:
        """A non-zero status: sev_issue_cmd fails, so SNP_GUEST_ERR(GENERIC = 1 << 31, 0x16)."""
        firmware = RecordingFirmware(respond=lambda r: (None, FirmwareStatus.INVALID_PARAM))
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(g, self.abi, firmware=firmware).run()
        assert result == Resumed(answered(page, regs_of(page), 0, 0x8000000000000016))
        assert g.response() == bytes(PAGE_SIZE)

    @pytest.mark.parametrize(
        "fields",
        [{"sw_exit_info_1": REQ + 8}, {"sw_exit_info_2": RESP + 1}],
        ids=["info1-unaligned", "info2-unaligned"],
    )
    def test_unaligned_pages_are_generic(self, fields: dict[str, int]) -> None:
        """The v15 validator checks only SNP; snp_setup_guest_buf refuses unaligned pages:
        GENERIC with fw_err 0, the guest resumed, the firmware never called."""
        firmware = RecordingFirmware()
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST, **fields)
        result = vcpu_for(g, self.abi, firmware=firmware).run()
        assert result == Resumed(answered(page, regs_of(page), 0, GENERIC_V15))
        assert firmware.requests == []

    def test_same_page_goes_to_firmware(self) -> None:
        """No equality check in this tree: request and response on one page reach firmware."""
        firmware = RecordingFirmware(respond=lambda r: (b"\x44" * PAGE_SIZE, 0))
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST, sw_exit_info_2=REQ)
        assert vcpu_for(g, self.abi, firmware=firmware).run() == Resumed(
            answered(page, regs_of(page), 0, 0)
        )
        assert len(firmware.requests) == 1
        assert g.memory.guest_read(REQ, PAGE_SIZE) == b"\x44" * PAGE_SIZE

    @pytest.mark.parametrize("where", ["sw_exit_info_1", "sw_exit_info_2"])
    def test_unmapped_page_is_generic(self, where: str) -> None:
        """gfn_to_pfn fails (no memslot): GENERIC, KVM_RUN does not fail."""
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST, **{where: 0xDEAD000})
        assert vcpu_for(g, self.abi).run() == Resumed(answered(page, regs_of(page), 0, GENERIC_V15))

    def test_firmware_failure_is_generic(self) -> None:
        """The firmware command fails without a status: GENERIC with fw_err 0."""
        g = guest()
        page = g.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(g, self.abi, firmware=RecordingFirmware(fail=True)).run()
        assert result == Resumed(answered(page, regs_of(page), 0, GENERIC_V15))

    @pytest.mark.parametrize(
        "fields",
        [{"sw_exit_info_1": REQ + 8}, {"sw_exit_info_2": RESP + 0x10}],
        ids=["info1-unaligned", "info2-unaligned"],
    )
    def test_extended_unaligned_pages_exit_then_generic(self, fields: dict[str, int]) -> None:
        """An Extended Guest Request with an unaligned request or response page still exits
        (no page checks in the v15 validator); after ret = 0 the completion's
        __snp_handle_guest_req (snp_setup_guest_buf checks both) fails: GENERIC, the firmware
        never called."""
        firmware = RecordingFirmware()
        g = guest()
        page = g.request(**fields)
        vcpu = vcpu_for(g, self.abi, firmware=firmware)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0))
        assert result == Resumed(answered(page, regs_of(page), 0, GENERIC_V15))
        assert firmware.requests == []

    def test_extended_same_page_reaches_firmware(self) -> None:
        """Request page == response page: no check anywhere in this tree; the firmware reads
        the request and its response overwrites it in place."""
        firmware = RecordingFirmware(respond=lambda r: (b"\x66" * PAGE_SIZE, 0))
        g = guest()
        page = g.request(sw_exit_info_2=REQ)
        vcpu = vcpu_for(g, self.abi, firmware=firmware)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0))
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        assert len(firmware.requests) == 1
        assert g.memory.guest_read(REQ, PAGE_SIZE) == b"\x66" * PAGE_SIZE

    @pytest.mark.parametrize(
        ("ret", "info2"), [(2, 0x0000000200000000), (1 << 31, GENERIC_V15)], ids=["BUSY", "GENERIC"]
    )
    def test_error_with_notify_done_still_exits_done(self, ret: int, info2: int) -> None:
        """An error ret with NOTIFY_DONE: "goto out" sets EXITINFO2, then the DONE exit still
        comes (flags 0, status DONE); the firmware is not called."""
        firmware = RecordingFirmware()
        g = guest()
        page = g.request()
        vcpu = vcpu_for(g, self.abi, firmware=firmware)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        done = vcpu.complete(with_ret(self.abi, exit_, ret=ret, flags=1))
        assert type(done) is DoneExit
        assert struct.unpack_from("<IBB", done.kvm_run, 56) == (ret, 0, 1)
        assert g.ghcb() == at_exit(page).with_fields(sw_exit_info_2=info2)
        assert vcpu.complete(done.kvm_run) == Resumed(answered(page, regs_of(page), 0, info2))
        assert firmware.requests == []

    def test_abort_path_is_flagged_undefined(self) -> None:
        """Unaligned RAX: abort_request packs SNP_GUEST_ERR(GENERIC, fw_err) with fw_err
        uninitialised in the seed; the model answers fw_err = 0 and says so."""
        g = guest()
        page = g.request(rax=CERTS + 8)
        result = vcpu_for(g, self.abi).run()
        assert isinstance(result, Resumed)
        assert result.page == answered(page, regs_of(page), 0, GENERIC_V15)
        assert result.undefined is not None
        assert "fw_err" in result.undefined


# -- Extended Guest Request: fetching disabled (merged KVM default) -------------------------------
class TestExtendedDisabled:
    @pytest.mark.parametrize(("rbx", "cleared"), [(4, True), (1, True), (0, False)])
    def test_empty_table_then_plain(self, rbx: int, cleared: bool) -> None:
        """RBX != 0: 24 zero bytes at RAX, then a plain request; never INVALID_LEN."""
        g = guest()
        page = g.request(rbx=rbx)
        firmware = RecordingFirmware()
        result = vcpu_for(g, DisabledAbi(), firmware=firmware).run()
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        head = bytes(24) if cleared else bytes([FILL]) * 24
        assert g.certs((CERT_PAGES + 1) * PAGE_SIZE) == head + bytes([FILL]) * (
            (CERT_PAGES + 1) * PAGE_SIZE - 24
        )
        assert len(firmware.requests) == 1

    def test_none_means_disabled(self) -> None:
        """Vm(cert_abi=None) is the disabled ABI."""
        assert Vm(RecordingFirmware()).abi == DisabledAbi()

    def test_private_buffer_clear_is_invisible(self) -> None:
        """A private certificate page: the 24 zero bytes go to the host backing."""
        g = guest()
        g.memory.set_shared(CERTS, shared=False)
        g.memory.guest_write(CERTS, b"\x77" * 24)
        g.request(rbx=1)
        vcpu_for(g, None).run()
        assert g.certs(24) == b"\x77" * 24
        assert g.memory.host_read(CERTS, 24) == bytes(24)

    def test_unmapped_buffer_fails_run(self) -> None:
        """kvm_clear_guest fails (no memslot): -EIO."""
        g = guest()
        page = g.request(rax=0xDEAD000, rbx=1)
        vcpu = vcpu_for(g, None)
        result = vcpu.run()
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EIO
        assert g.ghcb() == at_exit(page)
        # KVM_RUN again (kvm_run's prefix is every ABI's): the guest is entered, fail-open
        assert vcpu.complete(bytes(KVM_RUN_SIZE)) == Resumed(answered(page, regs_of(page), 0, 0))


# -- Extended Guest Request: merged KVM_EXIT_SNP_REQ_CERTS ----------------------------------------
class TestMerged:
    abi = MergedAbi()

    def start(self, g: Guest, **fields: int) -> tuple[Vcpu, CertsExit]:
        return start_exit(g, self.abi, **fields)

    def test_exit_bytes_and_guest_memory(self) -> None:
        """exit_reason 43 at offset 8; gpa@32, npages@40, ret@48 = 0; the guest's GHCB already
        holds KVM's sync and presets."""
        g = guest()
        vcpu, exit_ = self.start(g)
        run = exit_.kvm_run
        assert len(run) == KVM_RUN_SIZE == 288
        assert struct.unpack_from("<I", run, 8)[0] == 43
        assert struct.unpack_from("<QQQ", run, 32) == (CERTS, CERT_PAGES, 0)
        assert run[1] == 0
        assert not any(run[56:])
        assert g.ghcb() == at_exit(g.request_page())
        assert g.ghcb().valid_fields == PRESET
        assert vcpu.kvm_run == run

    def test_exit_number_configurable(self) -> None:
        """The v7 patch's 42 can be chosen."""
        g = guest()
        g.request()
        exit_ = vcpu_for(g, MergedAbi(exit_reason=42)).run()
        assert isinstance(exit_, CertsExit)
        assert struct.unpack_from("<I", exit_.kvm_run, 8)[0] == 42

    def test_not_a_report_request_is_plain(self) -> None:
        """msg_type != MSG_REPORT_REQ: no exit, RAX/RBX ignored."""
        g = guest(msg_type=MsgType.KEY_REQ)
        page = g.request(rax=CERTS + 1)
        assert vcpu_for(g, self.abi).run() == Resumed(answered(page, regs_of(page), 0, 0))

    @pytest.mark.parametrize("drop", [None, "rax", "rbx"])
    def test_invalid_input(self, drop: str | None) -> None:
        """RAX unaligned, or RAX/RBX not valid: EXITINFO1 = 2, EXITINFO2 = INVALID_INPUT."""
        for abi in (self.abi, DisabledAbi()):
            g = guest()
            page = g.request_page(rax=CERTS + 0x10 if drop is None else CERTS)
            if drop is not None:
                keep = page.valid_fields - {drop}
                page = page.cleared_bitmap().with_fields(**{n: getattr(page, n) for n in keep})
            g.write_ghcb(page)
            result = vcpu_for(g, abi).run()
            assert result == Resumed(answered(page, regs_of(page), 2, GhcbErr.INVALID_INPUT))

    def test_ret_zero_issues_firmware(self) -> None:
        """ret 0: the firmware request runs; EXITINFO2 = status; RBX as the guest wrote it."""
        g = guest()
        vcpu, exit_ = self.start(g)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0))
        page = g.request_page()
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        assert len(vcpu.vm.firmware.requests) == 1  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("ret", "info2", "rbx"),
        [
            (Errno.ENOSPC, 0x0000000100000000, 7),
            (Errno.EAGAIN, 0x0000000200000000, CERT_PAGES),
            (Errno.EIO, GENERIC_MERGED, CERT_PAGES),
        ],
        ids=["ENOSPC", "EAGAIN", "EIO"],
    )
    def test_errors(self, ret: int, info2: int, rbx: int) -> None:
        """ENOSPC sets RBX to userspace's npages; no firmware call for any error."""
        g = guest()
        vcpu, exit_ = self.start(g)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=ret, npages=7))
        page = g.request_page()
        assert result == Resumed(answered(page, regs_of(page, rbx=rbx), 0, info2))
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    @pytest.mark.parametrize("ret", [1, 2, 0x80000000, 2**64 - 1])
    def test_undefined_ret_fails_open(self, ret: int) -> None:
        """Any other ret: KVM_RUN fails -EINVAL. The guest's GHCB already holds the presets
        (EXITINFO1/2 = 0), so the next KVM_RUN enters the guest, which reads success — a
        fail-open path of merged KVM (its firmware was never called)."""
        g = guest()
        vcpu, exit_ = self.start(g)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=ret))
        assert result == RunFailed(Errno.EINVAL, f"undefined kvm_exit_snp_req_certs.ret {ret}")
        page = g.request_page()
        assert g.ghcb() == at_exit(page)
        assert vcpu.run() == Resumed(answered(page, regs_of(page), 0, 0))
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    def test_immediate_exit(self) -> None:
        """immediate_exit: the completion runs (x86.c calls the callback before checking
        wants_to_run), then KVM_RUN returns -EINTR; the registers reach the GHCB when a
        KVM_RUN with immediate_exit cleared enters the guest."""
        g = guest()
        vcpu, exit_ = self.start(g)
        answer = with_ret(self.abi, exit_, ret=Errno.ENOSPC, npages=9, immediate_exit=1)
        result = vcpu.complete(answer)
        page = g.request_page()
        first = at_exit(page).with_fields(sw_exit_info_2=0x0000000100000000)
        assert result == Interrupted(first)
        assert g.ghcb() == first
        cleared = with_immediate_exit(vcpu.kvm_run, 0)
        want = Resumed(answered(page, regs_of(page, rbx=9), 0, 0x100000000))
        assert vcpu.run(kvm_run=cleared) == want

    def test_immediate_exit_is_checked_on_every_kvm_run(self) -> None:
        """ "vcpu->wants_to_run = !immediate_exit" on every KVM_RUN: left set, the next
        KVM_RUN returns -EINTR again without entering the guest; set on an idle vCPU, KVM_RUN
        returns -EINTR before the guest runs (no VMGEXIT handled)."""
        g = guest()
        vcpu, exit_ = self.start(g)
        assert isinstance(
            vcpu.complete(with_ret(self.abi, exit_, ret=0, immediate_exit=1)), Interrupted
        )
        before = g.ghcb_bytes()
        assert isinstance(vcpu.run(), Interrupted)
        assert isinstance(vcpu.complete(vcpu.kvm_run), Interrupted)
        assert g.ghcb_bytes() == before  # not entered: registers not yet written back
        assert isinstance(vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0)), Resumed)
        page = g.request()
        assert vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 1)) == Interrupted(None)
        assert g.ghcb() == page  # the VMGEXIT was not handled
        assert isinstance(vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0)), CertsExit)

    def test_gpa_while_mapped_is_misuse(self) -> None:
        """With a GHCB still mapped KVM_RUN enters the guest: a gpa makes no sense."""
        g = guest()
        vcpu, exit_ = self.start(g)
        assert isinstance(vcpu.complete(with_ret(self.abi, exit_, ret=7)), RunFailed)
        with pytest.raises(HypervisorUsageError):
            vcpu.run(gpa=GHCB)

    def test_private_cert_buffer_invisible(self) -> None:
        """The VMM writes certificates through its mapping: into a page the guest holds
        private they land in the shared backing, and the guest does not see them."""
        g = guest()
        g.memory.set_shared(CERTS, shared=False)
        g.memory.guest_write(CERTS, b"\x77" * PAGE_SIZE)
        vcpu, exit_ = self.start(g)
        g.memory.host_write(exit_.gpa, b"\x01" * 100)  # what a VMM does
        assert isinstance(vcpu.complete(with_ret(self.abi, exit_, ret=0)), Resumed)
        assert g.certs(PAGE_SIZE) == b"\x77" * PAGE_SIZE


# -- Extended Guest Request: the v15 seed ABI ------------------------------------------------------
class TestV15:
    abi = V15Abi()

    def start(self, g: Guest, **fields: int) -> tuple[Vcpu, CertsExit]:
        return start_exit(g, self.abi, **fields)

    def test_exit_bytes(self) -> None:
        """exit_reason 40; type 1 @32, data_gpa @40, data_npages @48, ret @56, flags @60,
        status @61."""
        g = guest()
        _, exit_ = self.start(g)
        run = exit_.kvm_run
        assert struct.unpack_from("<I", run, 8)[0] == 40 == int(KvmExit.VMGEXIT)
        assert struct.unpack_from("<IIQQIBB", run, 32) == (1, 0, CERTS, CERT_PAGES, 0, 0, 0)
        assert g.ghcb() == at_exit(g.request_page())

    def test_ret_is_not_reset_by_kvm(self) -> None:
        """snp_begin_ext_guest_req does not write req_certs.ret: a second exit shows the ret
        userspace left in kvm_run."""
        g = guest()
        vcpu, exit_ = self.start(g)
        vcpu.complete(with_ret(self.abi, exit_, ret=2))
        g.request()
        second = vcpu.run()
        assert isinstance(second, CertsExit)
        assert struct.unpack_from("<I", second.kvm_run, 56)[0] == 2

    def test_every_ext_request_exits(self) -> None:
        """The seed patch has no msg_type check: a KEY_REQ goes to userspace too."""
        g = guest(msg_type=MsgType.KEY_REQ)
        g.request()
        assert isinstance(vcpu_for(g, self.abi).run(), CertsExit)

    def test_rax_rbx_missing_is_missing_input(self) -> None:
        """The seed validator: RAX/RBX not valid → MISSING_INPUT (not INVALID_INPUT)."""
        g = guest()
        page = g.request_page()
        page = page.cleared_bitmap().with_fields(
            sw_exit_code=page.sw_exit_code, sw_exit_info_1=REQ, sw_exit_info_2=RESP
        )
        g.write_ghcb(page)
        result = vcpu_for(g, self.abi).run()
        assert result == Resumed(answered(page, regs_of(page), 2, GhcbErr.MISSING_INPUT))

    @pytest.mark.parametrize(
        ("ret", "info2", "rbx"),
        [
            (1, 0x0000000100000000, 9),
            (2, 0x0000000200000000, CERT_PAGES),
            (1 << 31, GENERIC_V15, CERT_PAGES),
            (5, 0x0000000500000000, CERT_PAGES),
            (0xFFFFFFFF, GENERIC_MERGED, CERT_PAGES),
        ],
        ids=["INVALID_LEN", "BUSY", "GENERIC", "other", "all-ones"],
    )
    def test_ret_packed_as_vmm_error(self, ret: int, info2: int, rbx: int) -> None:
        """ret is packed into EXITINFO2[63:32] as given; INVALID_LEN sets RBX."""
        g = guest()
        vcpu, exit_ = self.start(g)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=ret, data_npages=9))
        page = g.request_page()
        assert result == Resumed(answered(page, regs_of(page, rbx=rbx), 0, info2))

    def test_firmware_error_is_generic(self) -> None:
        """A firmware error status: GENERIC with the status kept (seed completion path)."""
        g = guest()
        page = g.request()
        firmware = RecordingFirmware(respond=lambda r: (r, FirmwareStatus.INVALID_PARAM))
        vcpu = vcpu_for(g, self.abi, firmware=firmware)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0))
        assert result == Resumed(answered(page, regs_of(page), 0, 0x8000000000000016))

    def test_status_done_on_first_completion_resumes(self) -> None:
        """ret 0 with status DONE on the first completion: "goto out_resume" — no firmware
        call, EXITINFO2 keeps the 0 preset."""
        g = guest()
        vcpu, exit_ = self.start(g)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0, status=1))
        page = g.request_page()
        assert result == Resumed(answered(page, regs_of(page), 0, 0))
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    def test_notify_done(self) -> None:
        """NOTIFY_DONE: after the firmware call a second exit with status DONE, flags 0 (the
        rest of kvm_run as userspace left it); the callback is not re-armed, so the next
        KVM_RUN enters the guest whatever kvm_run says."""
        g = guest()
        vcpu, exit_ = self.start(g)
        done = vcpu.complete(with_ret(self.abi, exit_, ret=0, flags=1))
        assert type(done) is DoneExit
        assert done.done
        assert struct.unpack_from("<IBB", done.kvm_run, 56) == (0, 0, 1)
        assert len(vcpu.vm.firmware.requests) == 1  # type: ignore[attr-defined]
        page = g.request_page()
        assert g.ghcb() == at_exit(page)  # EXITINFO2 = SNP_GUEST_ERR(0, 0) is the preset
        ignored = with_ret(self.abi, done, ret=1, data_npages=99, flags=1)
        assert vcpu.complete(ignored) == Resumed(answered(page, regs_of(page), 0, 0))


# -- state machine misuse ------------------------------------------------------------------------
class TestMisuse:
    def test_complete_without_exit(self) -> None:
        """complete() with no exit outstanding is caller misuse."""
        with pytest.raises(HypervisorUsageError):
            vcpu_for(guest(), MergedAbi()).complete(bytes(KVM_RUN_SIZE))

    def test_run_during_exit(self) -> None:
        """run() while an exit is outstanding is caller misuse."""
        g = guest()
        g.request()
        vcpu = vcpu_for(g, MergedAbi())
        assert isinstance(vcpu.run(), CertsExit)
        with pytest.raises(HypervisorUsageError):
            vcpu.run()

    @pytest.mark.parametrize("size", [0, KVM_RUN_SIZE - 1, KVM_RUN_SIZE + 1])
    def test_bad_kvm_run(self, size: int) -> None:
        """kvm_run of the wrong size is refused; the exit stays outstanding."""
        g = guest()
        g.request()
        vcpu = vcpu_for(g, MergedAbi())
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        with pytest.raises(HypervisorUsageError):
            vcpu.complete(bytes(size))
        assert isinstance(vcpu.complete(exit_.kvm_run), Resumed)

    def test_disabled_abi_has_no_kvm_run(self) -> None:
        """The disabled ABI has no exit to encode."""
        with pytest.raises(HypervisorUsageError):
            encode_kvm_run(DisabledAbi(), {})


def test_firmware_requests_serialised_per_vm() -> None:
    """The firmware runs only under the VM's guest-request lock (KVM's per-VM mutex), so two
    vCPUs of one VM never have it busy twice at once."""
    vm: Vm

    def check(request: bytes) -> tuple[bytes, int]:
        assert vm.lock.locked()
        return request, 0

    vm = Vm(RecordingFirmware(respond=check))
    guests = [guest(), guest()]
    vcpus = [Vcpu(vm, g.memory, GHCB) for g in guests]
    start = threading.Barrier(2)

    def work(g: Guest, vcpu: Vcpu) -> None:
        start.wait()
        for _ in range(20):
            g.request(ExitCode.SNP_GUEST_REQUEST)
            assert isinstance(vcpu.run(), Resumed)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(guests, vcpus, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(vm.firmware.requests) == 40  # type: ignore[attr-defined]
    assert all(g.ghcb().sw_exit_info_2 == 0 for g in guests)


# -- Vm's settings --------------------------------------------------------------------------------
_TOO_WIDE = "version, cbit, hv_features, vmsa_features must fit their fields"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"firmware": object()}, "firmware must have a guest_request(request) method"),
        ({"cert_abi": "merged"}, "cert_abi must be None, DisabledAbi(), MergedAbi() or V15Abi()"),
        ({"snp": 1}, "snp and map_gpa_range must be bools"),
        ({"map_gpa_range": None}, "snp and map_gpa_range must be bools"),
        ({"lock": object()}, "lock must be a context manager (a threading.Lock)"),
        (
            {"lock": type("NoExit", (), {"__enter__": id})()},
            "lock must be a context manager (a threading.Lock)",
        ),
        ({"guest_resp_buf": bytes(PAGE_SIZE)}, "guest_resp_buf must be a bytearray of one page"),
        (
            {"guest_resp_buf": bytearray(PAGE_SIZE + 1)},
            "guest_resp_buf must be a bytearray of one page",
        ),
        ({"ghcb_version": 0x10000}, _TOO_WIDE),  # GHCB_MSR_SEV_INFO: 16-bit fields
        ({"ghcb_version_min": 0x10000}, _TOO_WIDE),
        ({"ghcb_version": -1}, _TOO_WIDE),
        ({"cbit": 0x100}, _TOO_WIDE),
        ({"cbit": True}, _TOO_WIDE),  # a bool is not an int here
        ({"hv_features": 1 << 52}, _TOO_WIDE),  # GHCB_MSR_HV_FT_MASK: bits 51:0
        ({"ap_jump_table": 1 << 64}, _TOO_WIDE),
        ({"vmsa_features": 1 << 64}, _TOO_WIDE),
        ({"vmsa_features": -1}, _TOO_WIDE),
        ({"platform": object()}, "platform must be a Platform"),
    ],
)
def test_vm_refuses_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    """Each bad setting is caller misuse, named, before the VM exists."""
    args: dict[str, Any] = {"firmware": RecordingFirmware(), **kwargs}
    with pytest.raises(HypervisorUsageError) as info:
        Vm(**args)
    assert (info.value.message, info.value.rule, info.value.spec) == (
        message,
        "input-type",
        VM_SPEC,
    )


@pytest.mark.parametrize("edge", [0, "max"])
def test_vm_takes_every_setting_that_fits(edge: int | str) -> None:
    """The field bounds are inclusive at both ends (0 and all ones)."""
    top = edge == "max"
    vm = Vm(
        RecordingFirmware(),
        snp=False,
        map_gpa_range=False,
        cert_abi=DisabledAbi(),
        ghcb_version=0xFFFF if top else 0,
        ghcb_version_min=0xFFFF if top else 0,
        cbit=0xFF if top else 0,
        hv_features=(1 << 52) - 1 if top else 0,
        ap_jump_table=(1 << 64) - 1 if top else 0,
        vmsa_features=(1 << 64) - 1 if top else 0,
    )
    assert vm.msr_settings() == (
        False,
        vm.ghcb_version,
        vm.ghcb_version_min,
        vm.cbit,
        vm.hv_features,
        vm.platform.cpuid,
    )
    assert vm.sev_features == vm.vmsa_features
