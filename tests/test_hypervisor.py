"""The reference hypervisor: every path of KVM's guest-request handling, for both ABIs."""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import (
    CertEntry,
    CertGuid,
    ExitCode,
    FirmwareStatus,
    GhcbErr,
    GhcbPage,
    MsgType,
    build_cert_table,
    build_page,
    parse_page,
)
from ghcb.codes import Errno, KvmExit
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    CertificateStore,
    CertsExit,
    GuestMemory,
    HypervisorUsageError,
    Interrupted,
    MergedAbi,
    RecordingFirmware,
    Resumed,
    RunFailed,
    TokenBucket,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
    Vmm,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import pathlib

GHCB, REQ, RESP, CERTS = 0x1000, 0x7F000, 0x7E000, 0x80000
CERT_PAGES = 4
FILL = 0xAA  # pre-fill of the certificate pages, to see what is written
RESPONSE_REGS = {"rax", "rbx", "rcx", "rdx", "sw_exit_info_1", "sw_exit_info_2"}


@dataclass
class Guest:
    """A guest with a GHCB, request/response pages and four certificate pages."""

    memory: GuestMemory = field(default_factory=GuestMemory)
    msg_type: int = MsgType.REPORT_REQ

    def __post_init__(self) -> None:
        self.memory.map(GHCB)
        self.memory.map(REQ)
        self.memory.map(RESP)
        self.memory.map(CERTS, CERT_PAGES)
        self.memory.map(CERTS + CERT_PAGES * PAGE_SIZE)  # the page after the buffer
        self.memory.guest_write(CERTS, bytes([FILL]) * (CERT_PAGES + 1) * PAGE_SIZE)
        request = bytearray(b"\x5a" * PAGE_SIZE)
        request[0x34] = self.msg_type  # snp_guest_msg_hdr.msg_type
        self.memory.guest_write(REQ, bytes(request))

    def request(
        self, code: ExitCode | int = ExitCode.SNP_EXT_GUEST_REQUEST, **fields: int
    ) -> GhcbPage:
        values = {
            "sw_exit_code": code,
            "sw_exit_info_1": REQ,
            "sw_exit_info_2": RESP,
            "rax": CERTS,
            "rbx": CERT_PAGES,
            **fields,
        }
        page = GhcbPage.empty().with_fields(**values).replace(protocol_version=2)
        self.memory.guest_write(GHCB, build_page(page))
        return page

    def ghcb(self) -> GhcbPage:
        return parse_page(self.memory.guest_read(GHCB, PAGE_SIZE))

    def certs(self, size: int = (CERT_PAGES + 1) * PAGE_SIZE) -> bytes:
        return self.memory.guest_read(CERTS, size)


def vcpu_for(
    guest: Guest,
    abi: MergedAbi | V15Abi | None,
    *,
    snp: bool = True,
    firmware: RecordingFirmware | None = None,
) -> Vcpu:
    return Vcpu(Vm(firmware or RecordingFirmware(), snp=snp, cert_abi=abi), guest.memory, GHCB)


def with_ret(
    abi: MergedAbi | V15Abi, exit_: CertsExit, *, immediate_exit: int = 0, **fields: int
) -> bytes:
    _, body = decode_kvm_run(abi, exit_.kvm_run)
    return encode_kvm_run(abi, {**body, **fields}, immediate_exit=immediate_exit)


def start_exit(guest: Guest, abi: MergedAbi | V15Abi, **fields: int) -> tuple[Vcpu, CertsExit]:
    """Write an extended request and run until the certificate exit."""
    guest.request(**fields)
    vcpu = vcpu_for(guest, abi)
    exit_ = vcpu.run()
    assert isinstance(exit_, CertsExit)
    return vcpu, exit_


ABIS = [None, MergedAbi(), V15Abi()]
ABI_IDS = ["disabled", "merged", "v15"]


# -- validation (sev_es_validate_vmgexit) ---------------------------------------------------------
@pytest.mark.parametrize("abi", ABIS, ids=ABI_IDS)
class TestValidation:
    @pytest.mark.parametrize(
        ("setup", "reason"),
        [
            (lambda g: g.request().replace(ghcb_usage=1), GhcbErr.INVALID_USAGE),
            (lambda g: g.request().replace(valid_bitmap=bytes(16)), GhcbErr.MISSING_INPUT),
            (lambda g: g.request(0x8000_1234), GhcbErr.INVALID_EVENT),
            (lambda g: g.request(ExitCode.SNP_RUN_VMPL), GhcbErr.INVALID_EVENT),
            (
                lambda g: g.request(ExitCode.SNP_GUEST_REQUEST, sw_exit_info_1=REQ + 8),
                GhcbErr.MISSING_INPUT,
            ),
            (
                lambda g: g.request(ExitCode.SNP_GUEST_REQUEST, sw_exit_info_2=RESP + 1),
                GhcbErr.MISSING_INPUT,
            ),
            (
                lambda g: g.request(ExitCode.SNP_GUEST_REQUEST, sw_exit_info_2=REQ),
                GhcbErr.MISSING_INPUT,
            ),
            (lambda g: g.request(ExitCode.CPUID, rax=0xD), GhcbErr.MISSING_INPUT),
        ],
        ids=[
            "usage",
            "no-bits",
            "unknown-event",
            "run-vmpl",
            "info1-unaligned",
            "info2-unaligned",
            "same-page",
            "cpuid-xcr0",
        ],
    )
    def test_malformed(self, abi: Any, setup: Any, reason: GhcbErr) -> None:
        """EXITINFO1 = 2, EXITINFO2 = the reason; registers written back and marked valid."""
        guest = Guest()
        page = setup(guest)
        guest.memory.guest_write(GHCB, build_page(page))
        result = vcpu_for(guest, abi).run()
        assert isinstance(result, Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2) == (2, reason)
        assert out.valid_fields == RESPONSE_REGS
        assert out.sw_exit_code == page.sw_exit_code
        assert result.page == out

    @pytest.mark.parametrize(
        "fields",
        [{"sw_exit_info_1": REQ + 8}, {"sw_exit_info_2": RESP + 1}, {"sw_exit_info_2": REQ}],
        ids=["info1-unaligned", "info2-unaligned", "same-page"],
    )
    def test_extended_request_pages(self, abi: Any, fields: dict[str, int]) -> None:
        """Current KVM checks the request pages of an extended request (MISSING_INPUT); the
        seed's validator does not, so under v15 the request goes to userspace."""
        guest = Guest()
        guest.request(**fields)
        result = vcpu_for(guest, abi).run()
        if isinstance(abi, V15Abi):
            assert isinstance(result, CertsExit)
        else:
            out = guest.ghcb()
            assert (out.sw_exit_info_1, out.sw_exit_info_2) == (2, GhcbErr.MISSING_INPUT)

    def test_guest_request_needs_snp(self, abi: Any) -> None:
        """Guest requests from a non-SNP guest: MISSING_INPUT."""
        guest = Guest()
        guest.request(ExitCode.SNP_GUEST_REQUEST)
        vcpu_for(guest, abi, snp=False).run(gpa=GHCB)
        assert guest.ghcb().sw_exit_info_2 == GhcbErr.MISSING_INPUT

    def test_registers_copied_only_if_valid(self, abi: Any) -> None:
        """KVM copies RCX/RDX only when valid (else 0) and writes them back valid."""
        guest = Guest()
        page = guest.request(ExitCode.SNP_GUEST_REQUEST).replace(rcx=77, rdx=88)
        guest.memory.guest_write(GHCB, build_page(page))
        vcpu_for(guest, abi).run()
        out = guest.ghcb()
        assert (out.rcx, out.rdx) == (0, 0)
        assert out.is_valid("rcx")
        assert out.is_valid("rdx")

    def test_unregistered_gpa_fails_run(self, abi: Any) -> None:
        """An SNP guest must use its registered GHCB: KVM_RUN fails with -EINVAL."""
        guest = Guest()
        guest.request()
        assert vcpu_for(guest, abi).run(gpa=REQ) == RunFailed(
            Errno.EINVAL, "GHCB GPA differs from the registered one"
        )

    def test_unmappable_ghcb_resumes_silently(self, abi: Any) -> None:
        """A private/unmapped GHCB: the guest is resumed without an answer."""
        guest = Guest()
        guest.request()
        guest.memory.set_shared(GHCB, shared=False)
        assert vcpu_for(guest, abi).run() == Resumed(None)

    def test_other_valid_exits_are_unhandled(self, abi: Any) -> None:
        """A valid CPUID exit is outside this handler: reported, GHCB untouched."""
        guest = Guest()
        page = guest.request(ExitCode.CPUID, rax=1, rcx=0)
        assert vcpu_for(guest, abi).run() == Unhandled(ExitCode.CPUID)
        assert guest.ghcb() == page


# -- plain SNP Guest Request -------------------------------------------------------------------
@pytest.mark.parametrize("abi", ABIS, ids=ABI_IDS)
class TestGuestRequest:
    def test_firmware_status_in_low_half(self, abi: Any) -> None:
        """The firmware answers; EXITINFO2 = SNP_GUEST_ERR(0, status); response written."""
        firmware = RecordingFirmware(
            respond=lambda r: (b"\x11" * PAGE_SIZE, FirmwareStatus.INVALID_PARAM)
        )
        guest = Guest()
        guest.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(guest, abi, firmware=firmware).run()
        assert isinstance(result, Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2) == (0, 0x16)
        assert firmware.requests == [guest.memory.guest_read(REQ, PAGE_SIZE)]
        assert guest.memory.guest_read(RESP, PAGE_SIZE) == b"\x11" * PAGE_SIZE
        assert out.rax == CERTS
        assert out.rbx == CERT_PAGES

    @pytest.mark.parametrize("page", [REQ, RESP])
    def test_private_request_page_fails_run(self, abi: Any, page: int) -> None:
        """Unreachable request/response pages fail KVM_RUN (-EIO); the guest is not answered."""
        guest = Guest()
        before = guest.request(ExitCode.SNP_GUEST_REQUEST)
        guest.memory.set_shared(page, shared=False)
        result = vcpu_for(guest, abi).run()
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EIO
        assert guest.ghcb() == before

    def test_oversized_response_fails_run(self, abi: Any) -> None:
        """A firmware answer that is not one page fails KVM_RUN; nothing past the response
        page is written."""
        firmware = RecordingFirmware(respond=lambda r: (b"\xee" * (2 * PAGE_SIZE), 0))
        guest = Guest()
        guest.request(ExitCode.SNP_GUEST_REQUEST)
        request = guest.memory.guest_read(REQ, PAGE_SIZE)
        result = vcpu_for(guest, abi, firmware=firmware).run()
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EIO
        assert guest.memory.guest_read(REQ, PAGE_SIZE) == request

    def test_firmware_failure_fails_run(self, abi: Any) -> None:
        """A firmware failure without status fails KVM_RUN with -EIO."""
        guest = Guest()
        guest.request(ExitCode.SNP_GUEST_REQUEST)
        result = vcpu_for(guest, abi, firmware=RecordingFirmware(fail=True)).run()
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EIO


# -- extended request: fetching disabled (merged KVM default) --------------------------------------
class TestExtendedDisabled:
    @pytest.mark.parametrize(("rbx", "cleared"), [(4, True), (1, True), (0, False)])
    def test_empty_table_then_plain(self, rbx: int, cleared: bool) -> None:
        """RBX != 0: 24 zero bytes at RAX, then a plain request; never INVALID_LEN."""
        guest = Guest()
        guest.request(rbx=rbx)
        firmware = RecordingFirmware()
        assert isinstance(vcpu_for(guest, None, firmware=firmware).run(), Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2, out.rbx) == (0, 0, rbx)
        head = bytes(24) if cleared else bytes([FILL]) * 24
        assert guest.certs() == head + bytes([FILL]) * ((CERT_PAGES + 1) * PAGE_SIZE - 24)
        assert len(firmware.requests) == 1


# -- extended request: merged KVM_EXIT_SNP_REQ_CERTS ------------------------------------------
class TestMerged:
    abi = MergedAbi()

    def start(self, guest: Guest, **fields: int) -> tuple[Vcpu, CertsExit]:
        return start_exit(guest, self.abi, **fields)

    def test_exit_bytes(self) -> None:
        """exit_reason 43 at offset 8; gpa@32, npages@40, ret@48 = 0."""
        _, exit_ = self.start(Guest())
        run = exit_.kvm_run
        assert len(run) == KVM_RUN_SIZE == 288
        assert struct.unpack_from("<I", run, 8)[0] == 43
        assert struct.unpack_from("<QQQ", run, 32) == (CERTS, CERT_PAGES, 0)
        assert run[1] == 0
        assert not any(run[56:])

    def test_exit_number_configurable(self) -> None:
        """The v7 patch's 42 can be chosen."""
        guest = Guest()
        guest.request()
        exit_ = vcpu_for(guest, MergedAbi(exit_reason=42)).run()
        assert isinstance(exit_, CertsExit)
        assert struct.unpack_from("<I", exit_.kvm_run, 8)[0] == 42

    def test_not_a_report_request_is_plain(self) -> None:
        """msg_type != MSG_REPORT_REQ: no exit, RAX/RBX ignored."""
        guest = Guest(msg_type=MsgType.KEY_REQ)
        guest.request(rax=CERTS + 1)
        assert isinstance(vcpu_for(guest, self.abi).run(), Resumed)
        assert guest.ghcb().sw_exit_info_2 == 0

    @pytest.mark.parametrize("fields", [{"rax": CERTS + 0x10}, {"valid_bitmap": None}])
    def test_invalid_input(self, fields: dict[str, Any]) -> None:
        """RAX unaligned, or RAX/RBX not valid: EXITINFO1 = 2, EXITINFO2 = INVALID_INPUT."""
        guest = Guest()
        page = guest.request(**{k: v for k, v in fields.items() if v is not None})
        if "valid_bitmap" in fields:
            page = page.cleared_bitmap().with_fields(
                sw_exit_code=page.sw_exit_code, sw_exit_info_1=REQ, sw_exit_info_2=RESP
            )
            guest.memory.guest_write(GHCB, build_page(page))
        vcpu_for(guest, self.abi).run()
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2) == (2, GhcbErr.INVALID_INPUT)

    def test_ret_zero_issues_firmware(self) -> None:
        """ret 0: the firmware request runs; EXITINFO2 = status."""
        guest = Guest()
        vcpu, exit_ = self.start(guest)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0))
        assert isinstance(result, Resumed)
        assert vcpu.vm.firmware.requests  # type: ignore[attr-defined]
        assert guest.ghcb().sw_exit_info_2 == 0

    @pytest.mark.parametrize(
        ("ret", "info2", "rbx"),
        [
            (Errno.ENOSPC, 0x0000000100000000, 7),
            (Errno.EAGAIN, 0x0000000200000000, CERT_PAGES),
            (Errno.EIO, 0xFFFFFFFF00000000, CERT_PAGES),
        ],
        ids=["ENOSPC", "EAGAIN", "EIO"],
    )
    def test_errors(self, ret: int, info2: int, rbx: int) -> None:
        """ENOSPC sets RBX to userspace's npages; no firmware call for any error."""
        guest = Guest()
        vcpu, exit_ = self.start(guest)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=ret, npages=7))
        assert isinstance(result, Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2, out.rbx) == (0, info2, rbx)
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    @pytest.mark.parametrize("ret", [1, 2, 0x80000000, 2**64 - 1])
    def test_undefined_ret_fails_run(self, ret: int) -> None:
        """Any other ret: KVM_RUN fails with -EINVAL, the guest is not answered."""
        guest = Guest()
        vcpu, exit_ = self.start(guest)
        before = guest.ghcb()
        result = vcpu.complete(with_ret(self.abi, exit_, ret=ret))
        assert isinstance(result, RunFailed)
        assert result.errno == Errno.EINVAL
        assert guest.ghcb() == before

    def test_immediate_exit(self) -> None:
        """immediate_exit: the request completes, then KVM_RUN returns -EINTR."""
        guest = Guest()
        vcpu, exit_ = self.start(guest)
        result = vcpu.complete(with_ret(self.abi, exit_, ret=0, immediate_exit=1))
        assert isinstance(result, Interrupted)
        assert result.errno == Errno.EINTR
        assert result.page == guest.ghcb()
        assert guest.ghcb().sw_exit_info_2 == 0


# -- extended request: the v15 seed ABI ---------------------------------------------------------
class TestV15:
    abi = V15Abi()

    def start(self, guest: Guest, **fields: int) -> tuple[Vcpu, CertsExit]:
        return start_exit(guest, self.abi, **fields)

    def test_exit_bytes(self) -> None:
        """exit_reason 40; type 1 @32, data_gpa @40, data_npages @48, ret @56, flags @60,
        status @61."""
        _, exit_ = self.start(Guest())
        run = exit_.kvm_run
        assert struct.unpack_from("<I", run, 8)[0] == 40 == int(KvmExit.VMGEXIT)
        assert struct.unpack_from("<IIQQIBB", run, 32) == (1, 0, CERTS, CERT_PAGES, 0, 0, 0)

    def test_every_ext_request_exits(self) -> None:
        """The seed patch has no msg_type check: a KEY_REQ goes to userspace too."""
        guest = Guest(msg_type=MsgType.KEY_REQ)
        guest.request()
        assert isinstance(vcpu_for(guest, self.abi).run(), CertsExit)

    def test_rax_rbx_missing_is_missing_input(self) -> None:
        """The seed validator: RAX/RBX not valid → MISSING_INPUT (not INVALID_INPUT)."""
        guest = Guest()
        page = guest.request()
        page = page.cleared_bitmap().with_fields(
            sw_exit_code=page.sw_exit_code, sw_exit_info_1=REQ, sw_exit_info_2=RESP
        )
        guest.memory.guest_write(GHCB, build_page(page))
        vcpu_for(guest, self.abi).run()
        assert guest.ghcb().sw_exit_info_2 == GhcbErr.MISSING_INPUT

    def test_unaligned_rax_aborts_generic(self) -> None:
        """abort_request: GENERIC (1 << 31) in the VMM half, firmware half 0 (not garbage)."""
        guest = Guest()
        guest.request(rax=CERTS + 8)
        assert isinstance(vcpu_for(guest, self.abi).run(), Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2) == (0, 0x8000000000000000)

    @pytest.mark.parametrize(
        ("ret", "info2", "rbx"),
        [
            (1, 0x0000000100000000, 9),
            (2, 0x0000000200000000, CERT_PAGES),
            (1 << 31, 0x8000000000000000, CERT_PAGES),
            (5, 0x0000000500000000, CERT_PAGES),
        ],
        ids=["INVALID_LEN", "BUSY", "GENERIC", "other"],
    )
    def test_ret_packed_as_vmm_error(self, ret: int, info2: int, rbx: int) -> None:
        """ret is packed into EXITINFO2[63:32] as given; INVALID_LEN sets RBX."""
        guest = Guest()
        vcpu, exit_ = self.start(guest)
        assert isinstance(vcpu.complete(with_ret(self.abi, exit_, ret=ret, data_npages=9)), Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_2, out.rbx) == (info2, rbx)

    def test_firmware_error_is_generic(self) -> None:
        """A firmware error status: GENERIC with the status kept (seed completion path)."""
        guest = Guest()
        guest.request()
        firmware = RecordingFirmware(respond=lambda r: (r, FirmwareStatus.INVALID_PARAM))
        vcpu = vcpu_for(guest, self.abi, firmware=firmware)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        vcpu.complete(with_ret(self.abi, exit_, ret=0))
        assert guest.ghcb().sw_exit_info_2 == 0x8000000000000016

    def test_notify_done(self) -> None:
        """NOTIFY_DONE: after the firmware call a second exit with status DONE, flags 0;
        completing it resumes the guest with the response."""
        guest = Guest()
        request = guest.request()
        vcpu = vcpu_for(guest, self.abi)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        done = vcpu.complete(with_ret(self.abi, exit_, ret=0, flags=1))
        assert isinstance(done, CertsExit)
        assert done.done
        assert struct.unpack_from("<BB", done.kvm_run, 60) == (0, 1)
        assert len(vcpu.vm.firmware.requests) == 1  # type: ignore[attr-defined]
        assert guest.ghcb() == request  # not answered until the DONE exit completes
        result = vcpu.complete(done.kvm_run)
        assert isinstance(result, Resumed)
        assert guest.ghcb().sw_exit_info_2 == 0


# -- state machine misuse ------------------------------------------------------------------------
class TestMisuse:
    def test_complete_without_exit(self) -> None:
        """complete() with no exit outstanding is caller misuse."""
        with pytest.raises(HypervisorUsageError):
            vcpu_for(Guest(), MergedAbi()).complete(bytes(KVM_RUN_SIZE))

    def test_run_during_exit(self) -> None:
        """run() while an exit is outstanding is caller misuse."""
        guest = Guest()
        guest.request()
        vcpu = vcpu_for(guest, MergedAbi())
        assert isinstance(vcpu.run(), CertsExit)
        with pytest.raises(HypervisorUsageError):
            vcpu.run()

    @pytest.mark.parametrize("size", [0, KVM_RUN_SIZE - 1, KVM_RUN_SIZE + 1])
    def test_bad_kvm_run(self, size: int) -> None:
        """kvm_run of the wrong size is refused."""
        guest = Guest()
        guest.request()
        vcpu = vcpu_for(guest, MergedAbi())
        vcpu.run()
        with pytest.raises(HypervisorUsageError):
            vcpu.complete(bytes(size))


# -- the VMM side ---------------------------------------------------------------------------------
def blob_of(sizes: tuple[int, ...] = (1639, 1677, 1350)) -> bytes:
    kinds = (CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK)
    return build_cert_table(
        [
            CertEntry(k, bytes([i + 1]) * n)
            for i, (k, n) in enumerate(zip(kinds, sizes, strict=True))
        ]
    )


@pytest.fixture
def store(tmp_path: pathlib.Path) -> CertificateStore:
    s = CertificateStore(tmp_path / "certs.blob")
    s.update(blob_of())
    return s


@pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=["merged", "v15"])
class TestVmm:
    def test_too_few_pages(self, abi: Any, store: CertificateStore) -> None:
        """4,762 bytes need 2 pages: with RBX = 1 the guest gets INVALID_LEN and RBX = 2; its
        memory is untouched and the firmware is not called."""
        guest = Guest()
        guest.request(rbx=1)
        vcpu = vcpu_for(guest, abi)
        result = Vmm(guest.memory, store).run(vcpu)
        assert isinstance(result, Resumed)
        out = guest.ghcb()
        assert (out.sw_exit_info_2, out.rbx) == (0x0000000100000000, 2)
        assert guest.certs() == bytes([FILL]) * (CERT_PAGES + 1) * PAGE_SIZE
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    def test_certificates_written_exactly(self, abi: Any, store: CertificateStore) -> None:
        """Enough pages: the blob lands at RAX, nothing past it is touched."""
        guest = Guest()
        guest.request(rbx=2)
        vmm = Vmm(guest.memory, store)
        result = vmm.run(vcpu_for(guest, abi))
        expected = Interrupted if isinstance(abi, MergedAbi) else Resumed
        assert isinstance(result, expected)
        blob = blob_of()
        assert guest.certs() == blob + bytes([FILL]) * ((CERT_PAGES + 1) * PAGE_SIZE - len(blob))
        assert guest.ghcb().sw_exit_info_2 == 0
        assert not vmm.holding_lock

    def test_huge_rbx_writes_only_the_blob(self, abi: Any, store: CertificateStore) -> None:
        """RBX = 2**64 - 1 passes the size check; still only len(blob) bytes are written."""
        guest = Guest()
        guest.request(rbx=2**64 - 1)
        Vmm(guest.memory, store).run(vcpu_for(guest, abi))
        blob = blob_of()
        assert guest.certs()[len(blob) :] == bytes([FILL]) * (
            (CERT_PAGES + 1) * PAGE_SIZE - len(blob)
        )

    def test_private_buffer_is_generic(self, abi: Any, store: CertificateStore) -> None:
        """A private certificate page: the VMM cannot write it and answers GENERIC."""
        guest = Guest()
        guest.request(rbx=2)
        guest.memory.set_shared(CERTS + PAGE_SIZE, shared=False)
        Vmm(guest.memory, store).run(vcpu_for(guest, abi))
        generic = 0xFFFFFFFF00000000 if isinstance(abi, MergedAbi) else 0x8000000000000000
        assert guest.ghcb().sw_exit_info_2 == generic
        assert guest.certs(PAGE_SIZE) == bytes([FILL]) * PAGE_SIZE  # nothing half-written

    def test_rate_limited_busy(self, abi: Any, store: CertificateStore) -> None:
        """An empty token bucket answers BUSY; tokens come back with time."""
        now = [0.0]
        bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
        guest = Guest()
        vmm = Vmm(guest.memory, store, limiter=bucket)
        seen = []
        for _ in range(3):
            guest.request(rbx=2)
            vmm.run(vcpu_for(guest, abi))
            seen.append(guest.ghcb().sw_exit_info_2)
        now[0] = 1.0
        guest.request(rbx=2)
        vmm.run(vcpu_for(guest, abi))
        assert [*seen, guest.ghcb().sw_exit_info_2] == [0, 0, 0x0000000200000000, 0]

    def test_lock_held_until_firmware(self, abi: Any, store: CertificateStore) -> None:
        """The shared lock is held from supplying the blob until the request is complete."""
        guest = Guest()
        guest.request(rbx=2)
        vcpu = vcpu_for(guest, abi)
        vmm = Vmm(guest.memory, store)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        answer = vmm.service(abi, exit_)
        assert vmm.holding_lock
        assert not exclusive_lock_free(store)
        result = vcpu.complete(answer)
        if isinstance(result, CertsExit):  # v15 DONE notification
            vcpu.complete(vmm.service(abi, result))
        else:
            assert isinstance(result, Interrupted)
            vmm.release()
        assert not vmm.holding_lock
        assert exclusive_lock_free(store)


def exclusive_lock_free(store: CertificateStore) -> bool:
    """Whether an exclusive OFD lock on the blob can be taken right now (non-blocking)."""
    fd = os.open(store.path, os.O_RDWR)
    try:
        flock = struct.pack("@hhxxxxqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def test_token_bucket_refuses_bad_settings() -> None:
    """Negative rate or zero burst is a usage error."""
    with pytest.raises(HypervisorUsageError):
        TokenBucket(rate=-1, burst=1)
    with pytest.raises(HypervisorUsageError):
        TokenBucket(rate=1, burst=0)


def test_stray_valid_bits_are_ignored() -> None:
    """Bits for reserved qwords (or the bitmap itself) do not change KVM's answer."""
    guest = Guest()
    page = guest.request(ExitCode.SNP_GUEST_REQUEST)
    stray = page.valid_bits | 1 << 0 | 1 << 127 | 1 << 64
    guest.memory.guest_write(
        GHCB, build_page(page.replace(valid_bitmap=stray.to_bytes(16, "little")))
    )
    assert isinstance(vcpu_for(guest, None).run(), Resumed)
    out = guest.ghcb()
    assert (out.sw_exit_info_1, out.sw_exit_info_2) == (0, 0)
    assert out.valid_fields == RESPONSE_REGS
    assert out.undefined_valid_bits == ()


def test_firmware_requests_serialised_per_vm() -> None:
    """Two vCPUs of one VM never have the firmware busy twice at once (KVM's per-VM mutex)."""
    busy = threading.Lock()
    overlaps = []

    def slow(request: bytes) -> tuple[bytes, int]:
        if not busy.acquire(blocking=False):
            overlaps.append(1)
            return request, 0
        time.sleep(0.001)
        busy.release()
        return request, 0

    vm = Vm(RecordingFirmware(respond=slow))
    guests = [Guest(), Guest()]
    vcpus = [Vcpu(vm, g.memory, GHCB) for g in guests]

    def work(guest: Guest, vcpu: Vcpu) -> None:
        for _ in range(20):
            guest.request(ExitCode.SNP_GUEST_REQUEST)
            assert isinstance(vcpu.run(), Resumed)

    threads = [
        threading.Thread(target=work, args=pair) for pair in zip(guests, vcpus, strict=False)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert len(vm.firmware.requests) == 40  # type: ignore[attr-defined]


@pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=["merged", "v15"])
class TestVmmFailures:
    def test_missing_blob_is_generic(self, abi: Any, tmp_path: pathlib.Path) -> None:
        """The blob file vanished: the guest gets GENERIC and the vCPU keeps working."""
        store = CertificateStore(tmp_path / "certs.blob")
        os.remove(store.path)
        guest = Guest()
        guest.request(rbx=2)
        vcpu = vcpu_for(guest, abi)
        vmm = Vmm(guest.memory, store)
        assert isinstance(vmm.run(vcpu), Resumed)
        generic = 0xFFFFFFFF00000000 if isinstance(abi, MergedAbi) else 0x8000000000000000
        assert guest.ghcb().sw_exit_info_2 == generic
        store.update(blob_of())
        guest.request(rbx=2)
        vmm.run(vcpu)
        assert guest.ghcb().sw_exit_info_2 == 0

    @pytest.mark.parametrize(("rbx", "written"), [(0, False), (1, True)])
    def test_empty_store(self, abi: Any, tmp_path: pathlib.Path, rbx: int, written: bool) -> None:
        """No certificates: with no buffer nothing is written and the request proceeds; with a
        buffer the empty table (24 zero bytes) is written."""
        store = CertificateStore(tmp_path / "empty.blob")
        guest = Guest()
        guest.request(rbx=rbx)
        Vmm(guest.memory, store).run(vcpu_for(guest, abi))
        assert guest.ghcb().sw_exit_info_2 == 0
        head = bytes(24) if written else bytes([FILL]) * 24
        assert guest.certs(24) == head

    def test_lock_released_when_writing_fails_unexpectedly(
        self, abi: Any, store: CertificateStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unexpected exception while supplying certificates still drops the lock."""
        guest = Guest()
        guest.request(rbx=2)
        vcpu = vcpu_for(guest, abi)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        vmm = Vmm(guest.memory, store)

        def boom(gpa: int, data: bytes) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(guest.memory, "host_write", boom)
        with pytest.raises(KeyboardInterrupt):
            vmm.service(abi, exit_)
        assert not vmm.holding_lock
        assert exclusive_lock_free(store)
