"""The reference hypervisor's vCPU: a sans-IO model of KVM's VMGEXIT handling.

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``sev_es_sync_from_ghcb``,
``sev_es_validate_vmgexit``, ``snp_handle_guest_req``, ``snp_handle_ext_guest_req`` and the
merged ``KVM_EXIT_SNP_REQ_CERTS`` completion; ghcb-facts.md §5); the v15 seed patch
(``snp_begin_ext_guest_req`` / ``snp_complete_ext_guest_req``, May 2024); the GHCB spec §4.1.

Rules of this module (h11 style: everything that moves the state machine is in this file):

1. :meth:`Vcpu.run` is ``KVM_RUN`` for one VMGEXIT. It reads the GHCB at the registered GPA,
   snapshots and clears the valid bitmap, validates exactly as KVM, and either answers the
   guest (:class:`Resumed`: the response GHCB is written back), exits to userspace
   (:class:`CertsExit`: the ``kvm_run`` bytes of the configured ABI), or fails
   (:class:`RunFailed`, with KVM_RUN's errno).
2. After a :class:`CertsExit`, the VMM fills the ``kvm_run`` bytes and calls
   :meth:`Vcpu.complete` (``KVM_RUN`` again). Calling ``run`` while an exit is outstanding, or
   ``complete`` while none is, is caller misuse (:class:`HypervisorUsageError`).
3. The transitions are the table ``_TRANSITIONS``; anything else is misuse.
4. Guest memory is touched only through :class:`~ghcb.hypervisor.memory.GuestMemory`'s host
   side (shared pages). Firmware requests are serialised per VM (``Vm.lock``), as KVM's
   per-VM mutex does.

Certificate-fetching ABIs (``Vm.cert_abi``):

* ``None`` — merged KVM with fetching disabled (its default): an Extended Guest Request for
  ``MSG_REPORT_REQ`` needs RAX/RBX valid and RAX page aligned (else INVALID_INPUT); if RBX is
  non-zero the empty table (24 zero bytes) is written at RAX; then it is a plain request.
  Never INVALID_LEN, never RBX.
* :class:`MergedAbi` — ``KVM_EXIT_SNP_REQ_CERTS`` (mainline exit 43): the same checks, then a
  userspace exit ``{gpa, npages, ret}``; ``ret`` 0 / ENOSPC / EAGAIN / EIO, anything else
  fails KVM_RUN with -EINVAL; ``immediate_exit`` gives the -EINTR exit after completion.
* :class:`V15Abi` — the seed patch's ``KVM_EXIT_VMGEXIT`` (40): its validator requires RAX
  and RBX valid for every Extended Guest Request (MISSING_INPUT) and, unlike current KVM,
  does not check the request/response page alignment for it; every one goes to
  userspace (no ``msg_type`` check), an unaligned RAX aborts with GENERIC; ``ret`` is packed
  as the VMM error as given; ``NOTIFY_DONE`` produces a second exit with status DONE.

Plain SNP Guest Requests are handled as current KVM does in every mode: EXITINFO2 =
``SNP_GUEST_ERR(0, firmware status)``; a failure to read/write the request pages or a firmware
failure without status fails KVM_RUN with -EIO.
"""

from __future__ import annotations

import enum
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ghcb._fast import FlatField, flat_fields, struct_format
from ghcb.codes import Errno, ExitCode, GhcbErr, HvResp, KvmExit, MsgType, VmmError
from ghcb.exitinfo import pack_guest_error
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.firmware import Firmware, FirmwareFailure
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.page import KVM_EXIT_RULES, GhcbPage, build_page, parse_page, required_inputs
from ghcb.schemas.certs import CERT_ENTRY_SIZE
from ghcb.schemas.guest_msg import snp_guest_msg_hdr
from ghcb.schemas.kvm import (
    KVM_RUN_EXIT_UNION_OFFSET,
    KVM_RUN_EXIT_UNION_SIZE,
    KVM_USER_VMGEXIT_REQ_CERTS,
    REQ_CERTS_FLAGS_NOTIFY_DONE,
    REQ_CERTS_STATUS_DONE,
    REQ_CERTS_STATUS_PENDING,
    kvm_exit_snp_req_certs,
    kvm_run_prefix,
    kvm_user_vmgexit,
)
from ghcb.schemas.page import GHCB_SIZE, PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KVM_RUN_SIZE",
    "CertsExit",
    "HypervisorUsageError",
    "MergedAbi",
    "Resumed",
    "RunFailed",
    "RunResult",
    "Unhandled",
    "V15Abi",
    "Vcpu",
    "Vm",
    "decode_kvm_run",
    "encode_kvm_run",
]

SPEC_KVM: Final = "Linux arch/x86/kvm/svm/sev.c"
SPEC_V15: Final = "v15 seed patch (KVM: SEV: SNP_EXTENDED_GUEST_REQUEST, May 2024)"
SPEC_MERGED: Final = "KVM_EXIT_SNP_REQ_CERTS (kvm-x86 fa9893fadbc2, 2026)"

#: The ``kvm_run`` bytes a certificate exit carries: the prefix and the 256-byte exit union.
KVM_RUN_SIZE: Final = KVM_RUN_EXIT_UNION_OFFSET + KVM_RUN_EXIT_UNION_SIZE
_MSG_TYPE_OFFSET: Final = next(
    f.offset for f in flat_fields(snp_guest_msg_hdr) if f.name == "msg_type"
)
_PAGE_MASK: Final = PAGE_SIZE - 1
_U64_MAX: Final = (1 << 64) - 1
_WRITTEN_BACK: Final = ("rax", "rbx", "rcx", "rdx")  # sev_es_sync_to_ghcb
_COPIED_IN: Final = ("rax", "rbx", "rcx", "rdx", "rsi", "cpl")  # sev_es_sync_from_ghcb


# -- ABIs -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MergedAbi:
    """``KVM_EXIT_SNP_REQ_CERTS``: mainline 43; the v7 patch proposed 42."""

    exit_reason: int = KvmExit.SNP_REQ_CERTS


@dataclass(frozen=True, slots=True)
class V15Abi:
    """The seed patch's ``KVM_EXIT_VMGEXIT`` = 40 with ``struct kvm_user_vmgexit``."""

    exit_reason: int = KvmExit.VMGEXIT


CertAbi = MergedAbi | V15Abi


_PREFIX_FIELDS: Final = flat_fields(kvm_run_prefix)
_PREFIX: Final = struct_format(_PREFIX_FIELDS)
_BODY_FIELDS: Final = {
    MergedAbi: flat_fields(kvm_exit_snp_req_certs),
    V15Abi: flat_fields(kvm_user_vmgexit),
}
_BODY: Final = {abi: struct_format(fields) for abi, fields in _BODY_FIELDS.items()}


def _pack(fmt: struct.Struct, fields: tuple[FlatField, ...], values: Mapping[str, int]) -> bytes:
    args = [values.get(f.name, 0) if f.kind == "int" else bytes(f.size) for f in fields]
    try:
        return fmt.pack(*args)
    except struct.error as e:
        raise HypervisorUsageError(
            f"kvm_run value out of range: {e}", rule="field-range", spec="Linux uapi/linux/kvm.h"
        ) from e


def encode_kvm_run(abi: CertAbi, fields: Mapping[str, int], *, immediate_exit: int = 0) -> bytes:
    """The ``kvm_run`` bytes (prefix + exit union) of a certificate exit (struct codecs
    derived from :mod:`ghcb.schemas.kvm`)."""
    prefix = _pack(
        _PREFIX, _PREFIX_FIELDS, {"immediate_exit": immediate_exit, "exit_reason": abi.exit_reason}
    )
    body = _pack(_BODY[type(abi)], _BODY_FIELDS[type(abi)], fields)
    return prefix + body + bytes(KVM_RUN_EXIT_UNION_SIZE - len(body))


def decode_kvm_run(abi: CertAbi, data: bytes) -> tuple[dict[str, int], dict[str, int]]:
    """``(prefix fields, exit fields)`` of ``kvm_run`` bytes for ``abi`` (integers only).

    Raises:
        HypervisorUsageError: not ``KVM_RUN_SIZE`` bytes.
    """
    if not isinstance(data, bytes | bytearray) or len(data) != KVM_RUN_SIZE:
        raise HypervisorUsageError(
            f"kvm_run must be {KVM_RUN_SIZE} bytes (prefix + exit union)",
            rule="kvm-run-size",
            spec="Linux uapi/linux/kvm.h struct kvm_run",
        )
    fields = _BODY_FIELDS[type(abi)]
    prefix = _PREFIX.unpack_from(data, 0)
    body = _BODY[type(abi)].unpack_from(data, KVM_RUN_EXIT_UNION_OFFSET)
    return (
        {f.name: v for f, v in zip(_PREFIX_FIELDS, prefix, strict=True) if f.kind == "int"},
        {f.name: v for f, v in zip(fields, body, strict=True) if f.kind == "int"},
    )


# -- results ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Resumed:
    """The guest resumes; ``page`` is the GHCB as written back (None when KVM resumes the
    guest without touching a GHCB: GPA 0 or unmappable)."""

    page: GhcbPage | None


@dataclass(frozen=True, slots=True)
class CertsExit:
    """A userspace exit for certificates: fill ``kvm_run`` and pass it to ``complete``.

    ``done`` marks the v15 second exit (status DONE) that only tells userspace the request has
    reached firmware.
    """

    kvm_run: bytes
    gpa: int
    npages: int
    done: bool = False


@dataclass(frozen=True, slots=True)
class Interrupted:
    """KVM_RUN returned -EINTR because ``immediate_exit`` was set: the request is complete and
    its response is in the GHCB; the next ``run`` enters the guest."""

    page: GhcbPage
    errno: int = Errno.EINTR


@dataclass(frozen=True, slots=True)
class RunFailed:
    """KVM_RUN failed with ``-errno``; the guest is not answered."""

    errno: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A valid VMGEXIT this reference handler does not implement (only guest requests are);
    the GHCB is left as the guest wrote it."""

    exit_code: ExitCode | int


RunResult = Resumed | CertsExit | Interrupted | RunFailed | Unhandled


# -- VM and vCPU ------------------------------------------------------------------------------
@dataclass
class Vm:
    """What KVM keeps per VM: SNP or not, the certificate ABI, the firmware and its lock."""

    firmware: Firmware
    snp: bool = True
    cert_abi: CertAbi | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _State(enum.Enum):
    IDLE = "idle"
    AWAIT_CERTS = "await-certs"  # a CertsExit is outstanding
    AWAIT_DONE = "await-done"  # v15: the DONE notification is outstanding


class _Input(enum.Enum):
    RUN = "run"
    COMPLETE = "complete"


_TRANSITIONS: Final[dict[tuple[_State, _Input], str]] = {
    (_State.IDLE, _Input.RUN): "_run",
    (_State.AWAIT_CERTS, _Input.COMPLETE): "_complete_certs",
    (_State.AWAIT_DONE, _Input.COMPLETE): "_complete_done",
}


class Vcpu:
    """One vCPU of an SEV-SNP guest, handling VMGEXITs as KVM does.

    Args:
        vm: the VM (firmware, SNP flag, certificate ABI).
        memory: guest memory.
        ghcb_gpa: the GHCB GPA the guest registered (GHCB MSR protocol REG_GPA).
    """

    def __init__(self, vm: Vm, memory: GuestMemory, ghcb_gpa: int) -> None:
        self.vm = vm
        self.memory = memory
        self.ghcb_gpa = ghcb_gpa
        self.state = _State.IDLE
        self.regs: dict[str, int] = dict.fromkeys(_COPIED_IN, 0)
        self._gpa = ghcb_gpa  # where the GHCB being answered lives
        self._request_gpa = self._response_gpa = 0  # control->exit_info_1 / exit_info_2
        self._valid: frozenset[str] = frozenset()
        self._page: GhcbPage | None = None  # the GHCB being answered
        self._kvm_run: bytes = bytes(KVM_RUN_SIZE)

    # -- public ---------------------------------------------------------------------------
    def run(self, *, gpa: int | None = None) -> RunResult:
        """KVM_RUN: handle the VMGEXIT whose GHCB the guest put at ``gpa`` (default: the
        registered GPA; an SNP guest must use the registered one)."""
        return self._dispatch(_Input.RUN, gpa)

    def complete(self, kvm_run: bytes) -> RunResult:
        """KVM_RUN after a :class:`CertsExit`, with the ``kvm_run`` bytes userspace filled."""
        return self._dispatch(_Input.COMPLETE, kvm_run)

    # -- state machine --------------------------------------------------------------------
    def _dispatch(self, event: _Input, arg: object) -> RunResult:
        handler = _TRANSITIONS.get((self.state, event))
        if handler is None:
            raise HypervisorUsageError(
                f"{event.value} is not allowed in state {self.state.value}",
                rule="vcpu-state",
                spec="ghcb.hypervisor.vcpu rules 2-3",
            )
        result: RunResult = getattr(self, handler)(arg)
        return result

    def _run(self, gpa: int | None) -> RunResult:
        target = self.ghcb_gpa if gpa is None else gpa
        if self.vm.snp and target != self.ghcb_gpa:
            # "for SNP, GHCB GPA must equal the GPA registered via MSR 0x012 or KVM_RUN fails"
            return RunFailed(Errno.EINVAL, "GHCB GPA differs from the registered one")
        if not target:
            return Resumed(None)  # "GHCB GPA 0 or unmappable → silently resume guest"
        try:
            raw = self.memory.host_read(target, GHCB_SIZE)
        except GuestMemoryError:
            return Resumed(None)
        self._gpa = target
        page = parse_page(raw)
        # sev_es_sync_from_ghcb: copy registers that are valid (else 0), snapshot and clear
        # the bitmap; validation uses the snapshot.
        self.regs = {name: page.get_if_valid(name) for name in _COPIED_IN}
        self._valid = page.valid_fields  # KVM's snapshot of the guest's valid bitmap
        reason = self._validate(page)
        page = page.cleared_bitmap()
        if reason is not None:
            return self._resume(
                page.with_fields(sw_exit_info_1=HvResp.MALFORMED_INPUT, sw_exit_info_2=reason)
            )
        # KVM keeps the exit information in the VMCB (control->exit_info_1/2): the request and
        # response GPAs of a guest request. "After validation KVM pre-sets EXITINFO1 = 0,
        # EXITINFO2 = 0" in the GHCB.
        self._request_gpa, self._response_gpa = page.sw_exit_info_1, page.sw_exit_info_2
        page = page.with_fields(sw_exit_info_1=0, sw_exit_info_2=0)
        code = page.exit_code
        if code == ExitCode.SNP_GUEST_REQUEST:
            return self._plain_request(page)
        if code == ExitCode.SNP_EXT_GUEST_REQUEST:
            abi = self.vm.cert_abi
            if isinstance(abi, V15Abi):
                return self._ext_request_v15(page, abi)
            return self._ext_request(page, abi)
        return Unhandled(code)

    def _validate(self, page: GhcbPage) -> GhcbErr | None:
        """``sev_es_validate_vmgexit``: the GHCB_ERR_* reason, or None if acceptable."""
        # "ghcb_usage must be 0 else INVALID_USAGE" (checked first)
        if page.ghcb_usage != 0:
            return GhcbErr.INVALID_USAGE
        valid = page.valid_fields
        # "sw_exit_code, sw_exit_info_1 and sw_exit_info_2 must all be marked valid"
        if not {"sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"} <= valid:
            return GhcbErr.MISSING_INPUT
        needed = required_inputs(page)
        if needed is None:
            return GhcbErr.INVALID_EVENT
        if not needed <= valid:
            return GhcbErr.MISSING_INPUT
        rule = KVM_EXIT_RULES[ExitCode(page.sw_exit_code)]
        if rule.snp_only and not self.vm.snp:
            return GhcbErr.MISSING_INPUT
        v15 = isinstance(self.vm.cert_abi, V15Abi)
        v15_ext = v15 and page.exit_code == ExitCode.SNP_EXT_GUEST_REQUEST
        if rule.request_pages and not v15_ext:
            # (the seed's validator has no page checks for the extended request: see below)
            info1, info2 = page.sw_exit_info_1, page.sw_exit_info_2
            # "EXITINFO1 and EXITINFO2 both 4 KiB aligned; EXITINFO1 != EXITINFO2"
            if info1 & _PAGE_MASK or info2 & _PAGE_MASK or info1 == info2:
                return GhcbErr.MISSING_INPUT
        # v15: "case SVM_VMGEXIT_EXT_GUEST_REQUEST: if (!sev_snp_guest(vcpu->kvm) ||
        # !kvm_ghcb_rax_is_valid(svm) || !kvm_ghcb_rbx_is_valid(svm)) goto vmgexit_err;"
        if v15_ext and not {"rax", "rbx"} <= valid:
            return GhcbErr.MISSING_INPUT
        return None

    # -- guest requests -------------------------------------------------------------------
    def _firmware(self) -> int | None:
        """Run the guest request (request page → firmware → response page): the firmware
        status, or None when KVM_RUN must fail (unreachable pages, firmware failure without
        status)."""
        with self.vm.lock:  # requests are serialised per VM (KVM: sev->guest_req_mutex)
            try:
                request = self.memory.host_read(self._request_gpa, PAGE_SIZE)
                response, status = self.vm.firmware.guest_request(request)
                if len(response) != PAGE_SIZE:
                    return None  # KVM copies exactly one page back; anything else is broken
                self.memory.host_write(self._response_gpa, response)
            except (GuestMemoryError, FirmwareFailure):
                return None
        return status

    def _plain_request(self, page: GhcbPage) -> RunResult:
        status = self._firmware()
        if status is None:
            return RunFailed(Errno.EIO, "guest request pages unreachable or firmware failed")
        return self._resume(page.with_fields(sw_exit_info_2=pack_guest_error(0, status)))

    def _ext_request(self, page: GhcbPage, abi: MergedAbi | None) -> RunResult:
        try:
            header = self.memory.host_read(self._request_gpa + _MSG_TYPE_OFFSET, 1)
        except GuestMemoryError:
            return RunFailed(Errno.EIO, "request page unreachable")
        # "If msg_type != MSG_REPORT_REQ: handled exactly like a plain guest request"
        if header[0] != MsgType.REPORT_REQ:
            return self._plain_request(page)
        gpa, npages = self.regs["rax"], self.regs["rbx"]
        # "RAX and RBX must be valid and RAX 4 KiB aligned, else INVALID_INPUT"
        if not {"rax", "rbx"} <= self._valid or gpa & _PAGE_MASK:
            return self._resume(
                page.with_fields(
                    sw_exit_info_1=HvResp.MALFORMED_INPUT, sw_exit_info_2=GhcbErr.INVALID_INPUT
                )
            )
        if abi is None:
            if npages:
                # "if RBX (npages) != 0, KVM zero-fills the first 24 bytes at RAX"
                try:
                    self.memory.host_write(gpa, bytes(CERT_ENTRY_SIZE))
                except GuestMemoryError:
                    return RunFailed(Errno.EIO, "certificate buffer unreachable")
            return self._plain_request(page)
        return self._exit(page, abi, {"gpa": gpa, "npages": npages, "ret": 0})

    def _ext_request_v15(self, page: GhcbPage, abi: V15Abi) -> RunResult:
        gpa, npages = self.regs["rax"], self.regs["rbx"]
        if gpa & _PAGE_MASK:
            # Seed patch: "if (!IS_ALIGNED(data_gpa, PAGE_SIZE)) goto abort_request;" where
            # abort_request packs SNP_GUEST_ERR(vmm_ret, fw_err) with fw_err never
            # initialised (seed patch, snp_begin_ext_guest_req). The sound value is fw_err = 0.
            return self._resume(
                page.with_fields(sw_exit_info_2=pack_guest_error(VmmError.GENERIC_V15, 0))
            )
        fields = {
            "type": KVM_USER_VMGEXIT_REQ_CERTS,
            "data_gpa": gpa,
            "data_npages": npages,
            "ret": 0,
            "flags": 0,
            "status": REQ_CERTS_STATUS_PENDING,
        }
        return self._exit(page, abi, fields)

    def _exit(self, page: GhcbPage, abi: CertAbi, fields: dict[str, int]) -> CertsExit:
        self._page = page
        self._kvm_run = encode_kvm_run(abi, fields)
        self.state = _State.AWAIT_CERTS
        gpa = fields.get("gpa", fields.get("data_gpa", 0))
        npages = fields.get("npages", fields.get("data_npages", 0))
        return CertsExit(self._kvm_run, gpa, npages)

    # -- completion -----------------------------------------------------------------------
    def _complete_certs(self, kvm_run: bytes) -> RunResult:
        abi = self.vm.cert_abi
        page = self._page
        if abi is None or page is None:  # pragma: no cover - AWAIT_CERTS implies both
            raise HypervisorUsageError("no certificate exit", rule="vcpu-state", spec=SPEC_KVM)
        prefix, body = decode_kvm_run(abi, kvm_run)
        self._kvm_run = bytes(kvm_run)
        self.state = _State.IDLE
        if isinstance(abi, MergedAbi):
            return self._complete_merged(page, prefix, body)
        return self._complete_v15(page, abi, prefix, body)

    def _complete_merged(
        self, page: GhcbPage, prefix: dict[str, int], body: dict[str, int]
    ) -> RunResult:
        ret = body["ret"]
        if ret == 0:
            # "ret 0 → issue the firmware request normally"
            status = self._firmware()
            if status is None:
                return RunFailed(Errno.EIO, "guest request pages unreachable or firmware failed")
            page = page.with_fields(sw_exit_info_2=pack_guest_error(0, status))
        elif ret == Errno.ENOSPC:
            # "ENOSPC → RBX := userspace npages, EXITINFO2 = 0x0000000100000000"
            self.regs["rbx"] = body["npages"]
            page = page.with_fields(sw_exit_info_2=pack_guest_error(VmmError.INVALID_LEN, 0))
        elif ret == Errno.EAGAIN:
            page = page.with_fields(sw_exit_info_2=pack_guest_error(VmmError.BUSY, 0))
        elif ret == Errno.EIO:
            page = page.with_fields(sw_exit_info_2=pack_guest_error(VmmError.GENERIC, 0))
        else:
            # "anything else → KVM_RUN returns -EINVAL"
            return RunFailed(Errno.EINVAL, f"undefined kvm_exit_snp_req_certs.ret {ret}")
        return self._after_completion(page, prefix)

    def _complete_v15(
        self, page: GhcbPage, abi: V15Abi, prefix: dict[str, int], body: dict[str, int]
    ) -> RunResult:
        ret = body["ret"]
        if ret:
            # "if (vmm_ret == SNP_GUEST_VMM_ERR_INVALID_LEN) RBX = req_certs.data_npages"
            if ret == VmmError.INVALID_LEN:
                self.regs["rbx"] = body["data_npages"]
            page = page.with_fields(sw_exit_info_2=pack_guest_error(ret, 0))
        else:
            status = self._firmware()
            if status is None:
                page = page.with_fields(sw_exit_info_2=pack_guest_error(VmmError.GENERIC_V15, 0))
            elif status:
                # __snp_handle_guest_req fails when the firmware status is non-zero:
                # "vmm_ret = SNP_GUEST_VMM_ERR_GENERIC" with fw_err kept.
                page = page.with_fields(
                    sw_exit_info_2=pack_guest_error(VmmError.GENERIC_V15, status)
                )
            else:
                page = page.with_fields(sw_exit_info_2=pack_guest_error(0, 0))
        if body["flags"] & REQ_CERTS_FLAGS_NOTIFY_DONE:
            # "req_certs.status = STATUS_DONE; req_certs.flags = 0; return 0" (exit again)
            self._page = page
            self._kvm_run = encode_kvm_run(
                abi,
                {**body, "flags": 0, "status": REQ_CERTS_STATUS_DONE},
                immediate_exit=prefix["immediate_exit"],
            )
            self.state = _State.AWAIT_DONE
            return CertsExit(self._kvm_run, body["data_gpa"], body["data_npages"], done=True)
        return self._after_completion(page, prefix)

    def _complete_done(self, kvm_run: bytes) -> RunResult:
        abi, page = self.vm.cert_abi, self._page
        if abi is None or page is None:  # pragma: no cover - AWAIT_DONE implies both
            raise HypervisorUsageError("no DONE exit", rule="vcpu-state", spec=SPEC_V15)
        decode_kvm_run(abi, kvm_run)
        self.state = _State.IDLE
        # "if (status == STATUS_DONE) goto out_resume" — the response is already set.
        return self._resume(page)

    def _after_completion(self, page: GhcbPage, prefix: dict[str, int]) -> RunResult:
        result = self._resume(page)
        if prefix["immediate_exit"] and isinstance(result, Resumed) and result.page is not None:
            # The completion ran; immediate_exit then makes KVM_RUN return -EINTR.
            return Interrupted(result.page)
        return result

    # -- answering the guest --------------------------------------------------------------
    def _resume(self, page: GhcbPage) -> Resumed | RunFailed:
        """sev_es_sync_to_ghcb: write back RAX/RBX/RCX/RDX (marked valid), then the page."""
        page = page.with_fields(**{name: self.regs[name] for name in _WRITTEN_BACK})
        try:
            self.memory.host_write(self._gpa, build_page(page))
        except GuestMemoryError:
            return RunFailed(Errno.EFAULT, "GHCB page unreachable")
        self._page = None
        return Resumed(page)
