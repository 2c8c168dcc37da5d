"""KVM's handlers for the GHCB events other than the guest requests, after validation.

Source: Linux ``arch/x86/kvm/svm/sev.c`` ``sev_handle_vmgexit`` (merged tree; ghcb-facts.md
§5.2) and the SVM intercepts its ``default:`` reaches through ``svm_invoke_exit_handler``
(``arch/x86/kvm/svm/svm.c`` ``svm_exit_handlers``, ``arch/x86/kvm/x86.c``). Each handler runs
with the GHCB mapped and EXITINFO1/2 preset to 0/0 ("svm_vmgexit_success(svm, 0);"); the C
line each rule follows is quoted beside it. A handler returns what the C function returns:
``RESUME`` (1), :class:`~ghcb.hypervisor.kvm_abi.Fail` (< 0), or an exit: :class:`Terminate`
(``KVM_EXIT_SYSTEM_EVENT``), :class:`Hold` (AP reset hold), :class:`NotHandled` (no handler in
KVM: ``svm_handle_invalid_exit`` exits with ``KVM_EXIT_INTERNAL_ERROR``), or what the PSC
engine asks for.

Devices, CPUID, MSRs and hypercalls are the VM's :class:`~ghcb.hypervisor.devices.Platform`.
The scratch-area rules are :mod:`ghcb.hypervisor.scratch` (one copy, shared with
:func:`ghcb.check_page`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from ghcb._fast import flat_fields
from ghcb.codes import ApCreationOp, ApJumpTableOp, Errno, ExitCode, GhcbErr, HvResp
from ghcb.exitinfo import EventInjection, IoioInfo, TermRequestInfo
from ghcb.hypervisor.devices import KVM_EINVAL, KVM_ENOSYS, device_bytes
from ghcb.hypervisor.kvm_abi import RESUME, Fail, Outcome
from ghcb.hypervisor.psc_run import MapGpaRange, decode_hypercall_exit, map_gpa_range_exit
from ghcb.hypervisor.scratch import HandlerStop, ScratchError, StopKind, scratch_use, setup_scratch
from ghcb.schemas.kvm import (
    KVM_EXIT_HYPERCALL_LONG_MODE,
    KVM_HC_MAP_GPA_RANGE,
    KVM_RUN_EXIT_UNION_OFFSET,
    kvm_hypercall_exit,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from ghcb.hypervisor.vcpu import Vcpu, Vm

__all__ = [
    "MAXPHYADDR_DEFAULT",
    "PMD_SIZE",
    "SVM_SEV_FEAT_SNP_ACTIVE",
    "X86_TRAP_GP",
    "EventContext",
    "EventOutcome",
    "Hold",
    "NotHandled",
    "PscBegin",
    "RaxDone",
    "Terminate",
    "VmmcallMapGpa",
    "handle_event",
    "maxphyaddr",
]

SPEC_EVENTS: Final = "Linux arch/x86/kvm/svm/sev.c sev_handle_vmgexit"
#: ``SVM_SEV_FEAT_SNP_ACTIVE`` (asm/svm.h): "sev->vmsa_features |= SVM_SEV_FEAT_SNP_ACTIVE;"
SVM_SEV_FEAT_SNP_ACTIVE: Final = 1 << 0
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_U64_STRUCT: Final = struct.Struct("<Q")
_HC_FLAGS: Final = next(
    f.offset
    for f in flat_fields(kvm_hypercall_exit, KVM_RUN_EXIT_UNION_OFFSET)
    if f.name == "flags"
)
#: ``PMD_SIZE``: an AP's VMSA aligned to it is refused ("IS_ALIGNED(exit_info_2, PMD_SIZE)",
#: the SNP erratum).
PMD_SIZE: Final = 2 * 1024 * 1024
#: ``X86_TRAP_GP`` (asm/trapnr.h): the exception an MSR access that fails injects.
X86_TRAP_GP: Final = 13
#: ``cpuid_query_maxphyaddr``: "not_found: return 36;".
MAXPHYADDR_DEFAULT: Final = 36


class Terminate(NamedTuple):
    """``KVM_EXIT_SYSTEM_EVENT`` / ``KVM_SYSTEM_EVENT_SEV_TERM`` for a TERM_REQUEST event
    (reason as the GHCB form encodes it in EXITINFO1: set [3:0], code [11:4])."""

    reason_set: int
    reason_code: int


class Hold(NamedTuple):
    """``kvm_emulate_ap_reset_hold``: the vCPU halts until a SIPI."""


class PscBegin(NamedTuple):
    """``snp_begin_psc`` over the descriptor at ``gpa`` (``ghcb_sa_len`` = ``length``):
    ``view`` is ``svm->sev_es.ghcb_sa``, the GHCB's own bytes when ``in_ghcb``, else the
    buffer ``setup_vmgexit_scratch`` copied in (KVM reads and writes the descriptor there;
    ``sev_es_unmap_ghcb`` writes it back to the guest)."""

    gpa: int
    length: int
    in_ghcb: bool
    view: memoryview


class NotHandled(NamedTuple):
    """No handler in KVM for this exit (``svm_handle_invalid_exit``), or one the model does
    not implement."""

    exit_code: int


class RaxDone(NamedTuple):
    """``complete_hypercall_exit``: "kvm_rax_write(vcpu, ret);" (64-bit: a protected guest)."""

    rax: int


class VmmcallMapGpa:
    """A VMMCALL ``KVM_HC_MAP_GPA_RANGE`` handed to userspace: ``kvm_emulate_hypercall``'s
    exit ("hypercall.ret = 0; ... args[0..2] = gpa, npages, attrs; hypercall.flags = 0; if
    (op_64_bit) hypercall.flags |= KVM_EXIT_HYPERCALL_LONG_MODE;") and its completion
    (``complete_hypercall_exit``: RAX = ``hypercall.ret``)."""

    def __init__(self, kvm_run: bytes, gpa: int, npages: int, attributes: int) -> None:
        step = map_gpa_range_exit(kvm_run, gpa, npages, attributes)
        run = bytearray(step.kvm_run)
        _U64_STRUCT.pack_into(run, _HC_FLAGS, KVM_EXIT_HYPERCALL_LONG_MODE)
        self.step = step._replace(kvm_run=bytes(run))

    def begin(self) -> MapGpaRange:
        return self.step

    def complete_run(self, kvm_run: bytes) -> RaxDone:
        return RaxDone(decode_hypercall_exit(kvm_run).ret)


EventOutcome = Outcome | Terminate | Hold | PscBegin | NotHandled | VmmcallMapGpa


class EventContext(Protocol):
    """What the handlers use of the vCPU (its KVM state for one VMGEXIT)."""

    vm: Vm
    kvm_run: bytes
    regs: dict[str, int]
    exit_info_1: int
    exit_info_2: int
    sw_scratch: int
    nmi_masked: bool

    @property
    def mapped_gpa(self) -> int:
        """``control->ghcb_gpa``: the GHCB being handled."""
        ...

    def set_exit_info(self, info1: int, info2: int) -> None: ...

    def map_scratch(self, gpa: int, length: int, in_ghcb: bool, sync: bool) -> memoryview | None:
        """The scratch area KVM works on (the GHCB's own bytes, or a buffer copied in; None
        when ``kvm_read_guest`` fails)."""
        ...

    def vcpu_by_id(self, vcpu_id: int) -> Vcpu | None:
        """``kvm_get_vcpu_by_id``."""
        ...


def _bad_input(ctx: EventContext, reason: GhcbErr) -> Outcome:
    # "svm_vmgexit_bad_input(svm, reason)": EXITINFO1 = 2, EXITINFO2 = reason; return 1
    ctx.set_exit_info(HvResp.MALFORMED_INPUT, reason)
    return RESUME


def maxphyaddr(vm: Vm) -> int:
    """``cpuid_query_maxphyaddr``: CPUID 0x80000008 EAX[7:0] if leaf 0x80000000 reaches it,
    else 36."""
    cpuid = vm.platform.cpuid
    if cpuid.cpuid(0x80000000, 0)[0] < 0x80000008:
        return MAXPHYADDR_DEFAULT
    return cpuid.cpuid(0x80000008, 0)[0] & 0xFF


# -- the scratch area ---------------------------------------------------------------------------
class _Stop(NamedTuple):
    outcome: Outcome


class _Area(NamedTuple):
    view: memoryview  # svm->sev_es.ghcb_sa
    gpa: int
    length: int  # svm->sev_es.ghcb_sa_len
    in_ghcb: bool


def _scratch(ctx: EventContext, code: int) -> _Area | _Stop | None:
    """The handler's scratch step: the area, a stop (answered before or by
    ``setup_vmgexit_scratch``), or None (the exit does not use one)."""
    vm = ctx.vm
    validator = vm.abi.validator
    use = scratch_use(
        code,
        ctx.exit_info_1,
        ctx.exit_info_2,
        ghcb_version=vm.ghcb_version,
        validator=validator,
    )
    if use is None:
        return None
    if isinstance(use, HandlerStop):
        if use.kind is StopKind.NO_OP:
            return _Stop(RESUME)
        if use.kind is StopKind.BAD_INPUT and use.reason is not None:
            return _Stop(_bad_input(ctx, use.reason))
        return _Stop(Fail(Errno.EINVAL, use.message))
    area = setup_scratch(
        ctx.sw_scratch,
        use.min_len,
        ghcb_gpa=ctx.mapped_gpa,
        ghcb_version=vm.ghcb_version,
        sync=use.sync,
        validator=validator,
    )
    if isinstance(area, ScratchError):
        # "e_scratch: svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_SCRATCH_AREA); return 1;"
        return _Stop(_bad_input(ctx, GhcbErr.INVALID_SCRATCH_AREA))
    view = ctx.map_scratch(area.gpa, area.length, area.in_ghcb, area.sync)
    if view is None:
        # "if (kvm_read_guest(...)) { ... return -EFAULT; }"
        return _Stop(Fail(Errno.EFAULT, "kvm_read_guest of the scratch area failed"))
    return _Area(view, area.gpa, area.length, area.in_ghcb)


def _mmio(ctx: EventContext, code: int) -> EventOutcome:
    # "bool is_write = control->exit_code == SVM_VMGEXIT_MMIO_WRITE; u64 len = exit_info_2;"
    area = _scratch(ctx, code)
    if isinstance(area, _Stop) or area is None:
        return area.outcome if area is not None else RESUME
    view = area.view
    gpa, size = ctx.exit_info_1, ctx.exit_info_2
    devices = ctx.vm.platform.devices
    # "ret = kvm_sev_es_mmio(vcpu, is_write, control->exit_info_1, len, svm->sev_es.ghcb_sa);"
    if code == ExitCode.MMIO_WRITE:
        devices.mmio_write(gpa, view[:size].tobytes())
    else:
        view[:size] = device_bytes(devices.mmio_read(gpa, size), size, "mmio_read")
    return RESUME


def _ioio(ctx: EventContext, code: int) -> EventOutcome:
    area = _scratch(ctx, code)
    if isinstance(area, _Stop):
        return area.outcome
    # io_interception: "port = io_info >> 16; size = (io_info & SVM_IOIO_SIZE_MASK) >> ..."
    info = IoioInfo.decode(ctx.exit_info_1 & _U32)  # "u32 io_info = ...exit_info_1"
    size = info.size8 | info.size16 << 1 | info.size32 << 2
    devices = ctx.vm.platform.devices
    if area is not None:
        view = area.view
        # sev_es_string_io → kvm_sev_es_string_io(vcpu, size, port, ghcb_sa, count, in)
        for i in range(ctx.exit_info_2):
            item = slice(i * size, (i + 1) * size)
            if info.type_in:
                view[item] = device_bytes(devices.io_in(info.port, size), size, "io_in")
            else:
                devices.io_out(info.port, view[item].tobytes())
        return RESUME
    # kvm_fast_pio(vcpu, size, port, in)
    rax = ctx.regs["rax"]
    if not info.type_in:
        # kvm_fast_pio_out: "unsigned long val = kvm_rax_read(vcpu);" — its low size bytes
        devices.io_out(info.port, rax.to_bytes(8, "little")[:size])
        return RESUME
    data = device_bytes(devices.io_in(info.port, size), size, "io_in")
    # complete_fast_pio_in: "For size less than 4 we merge, else we zero extend"
    keep = rax & ~((1 << 8 * size) - 1) if size < 4 else 0
    ctx.regs["rax"] = keep | int.from_bytes(data, "little")
    return RESUME


# -- events -------------------------------------------------------------------------------------
def _nmi_complete(ctx: EventContext, code: int) -> EventOutcome:
    # "svm->nmi_masked = false; kvm_make_request(KVM_REQ_EVENT, vcpu); ret = 1;"
    ctx.nmi_masked = False
    return RESUME


def _ap_hlt_loop(ctx: EventContext, code: int) -> EventOutcome:
    # "svm->sev_es.ap_reset_hold_type = AP_RESET_HOLD_NAE_EVENT;
    #  ret = kvm_emulate_ap_reset_hold(vcpu);"
    return Hold()


def _ap_jump_table(ctx: EventContext, code: int) -> EventOutcome:
    vm = ctx.vm
    op = ctx.exit_info_1
    if op == ApJumpTableOp.SET:
        vm.ap_jump_table = ctx.exit_info_2  # "sev->ap_jump_table = control->exit_info_2;"
    elif op == ApJumpTableOp.GET:
        ctx.set_exit_info(HvResp.NO_ACTION, vm.ap_jump_table)  # "svm_vmgexit_success(...)"
    else:
        # "default: ... svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_INPUT);"
        _bad_input(ctx, GhcbErr.INVALID_INPUT)
    return RESUME


def _hv_features(ctx: EventContext, code: int) -> EventOutcome:
    # "svm_vmgexit_success(svm, GHCB_HV_FT_SUPPORTED);"
    ctx.set_exit_info(HvResp.NO_ACTION, ctx.vm.hv_features)
    return RESUME


def _term_request(ctx: EventContext, code: int) -> EventOutcome:
    # "vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT; ... data[0] = control->ghcb_gpa;"
    info = TermRequestInfo.decode(ctx.exit_info_1)
    return Terminate(info.reason_set, info.reason_code)


def _psc(ctx: EventContext, code: int) -> EventOutcome:
    # "ret = setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr)); if (ret) break;
    #  ret = snp_begin_psc(svm);"
    area = _scratch(ctx, code)
    if isinstance(area, _Stop):
        return area.outcome
    if area is None:  # pragma: no cover - scratch_use always sets up PSC's area
        return NotHandled(code)  # pragma: no mutate - unreachable (above)
    return PscBegin(area.gpa, area.length, area.in_ghcb, area.view)


def _unsupported_event(ctx: EventContext, code: int) -> EventOutcome:
    # "vcpu_unimpl(vcpu, "vmgexit: unsupported event ..."); ret = -EINVAL;"
    return Fail(Errno.EINVAL, "SVM_VMGEXIT_UNSUPPORTED_EVENT")


def _ap_creation(ctx: EventContext, code: int) -> EventOutcome:
    """``sev_snp_ap_creation``; "if (ret) svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_INPUT);
    ret = 1;"."""
    if not _ap_create(ctx):
        _bad_input(ctx, GhcbErr.INVALID_INPUT)
    return RESUME


def _ap_create(ctx: EventContext) -> bool:
    vm = ctx.vm
    # "request = lower_32_bits(...exit_info_1); apic_id = upper_32_bits(...exit_info_1);"
    request, apic_id = ctx.exit_info_1 & _U32, ctx.exit_info_1 >> 32
    # "target_vcpu = kvm_get_vcpu_by_id(vcpu->kvm, apic_id); if (!target_vcpu) ... -EINVAL"
    target = ctx.vcpu_by_id(apic_id)
    if target is None:
        return False
    vmsa = ctx.exit_info_2
    if request in (ApCreationOp.CREATE_ON_INIT, ApCreationOp.CREATE):
        # "if (vcpu->arch.regs[VCPU_REGS_RAX] != sev->vmsa_features) ... return -EINVAL;"
        if ctx.regs["rax"] != vm.sev_features:
            return False
        # "if (!page_address_valid(vcpu, svm->vmcb->control.exit_info_2))": PAGE_ALIGNED and
        # no bit at or above MAXPHYADDR
        if vmsa & (PAGE_SIZE - 1) or vmsa >> maxphyaddr(vm):
            return False
        # "if (IS_ALIGNED(svm->vmcb->control.exit_info_2, PMD_SIZE))" (the SNP erratum)
        if not vmsa % PMD_SIZE:
            return False
        target.snp_vmsa_gpa = vmsa  # "target_svm->sev_es.snp_vmsa_gpa = ...exit_info_2;"
    elif request == ApCreationOp.DESTROY:
        target.snp_vmsa_gpa = None  # "target_svm->sev_es.snp_vmsa_gpa = INVALID_PAGE;"
    else:
        return False  # "vmgexit: invalid AP creation request"
    target.ap_waiting_for_reset = True  # "target_svm->sev_es.snp_ap_waiting_for_reset = true;"
    # "if (request != SVM_VMGEXIT_AP_CREATE_ON_INIT) kvm_make_request_and_kick(
    #      KVM_REQ_UPDATE_PROTECTED_GUEST_STATE, target_vcpu);"
    if request != ApCreationOp.CREATE_ON_INIT:
        target.update_requested = True
    return True


# -- the SVM intercepts svm_invoke_exit_handler reaches -----------------------------------------
def _nop(ctx: EventContext, code: int) -> EventOutcome:
    """DR7 ("SEV-ES intercepts DR7 only to disable guest debugging ... so return early": "if
    (sev_es_guest(vcpu->kvm)) return 1;"), INVD ("Treat an INVD instruction as a NOP"), WBINVD
    (``kvm_emulate_wbinvd``), MONITOR/MWAIT (``kvm_emulate_monitor_mwait`` with the default
    ``KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS``: "emulate_as_nop"), RDTSCP
    (``kvm_handle_invalid_op``: a #UD queued for the next entry, injected through the VMCB,
    not the GHCB): the registers go back as the guest sent them."""
    return RESUME


def _cpuid(ctx: EventContext, code: int) -> EventOutcome:
    # kvm_emulate_cpuid: "eax = kvm_rax_read(vcpu); ecx = kvm_rcx_read(vcpu);" (u32), then
    # "kvm_rax_write(vcpu, eax); kvm_rbx_write(...); kvm_rcx_write(...); kvm_rdx_write(...);"
    regs = ctx.regs
    values = ctx.vm.platform.cpuid.cpuid(regs["rax"] & _U32, regs["rcx"] & _U32)
    for name, value in zip(("rax", "rbx", "rcx", "rdx"), values, strict=True):
        regs[name] = value & _U32
    return RESUME


def _msr(ctx: EventContext, code: int) -> EventOutcome:
    # msr_interception: "if (...exit_info_1) return kvm_emulate_wrmsr(vcpu); else rdmsr"
    regs = ctx.regs
    msrs = ctx.vm.platform.msrs
    index = regs["rcx"] & _U32  # "u32 ecx = kvm_rcx_read(vcpu);"
    if ctx.exit_info_1:
        # "u64 data = kvm_read_edx_eax(vcpu);"
        ok = msrs.wrmsr(index, (regs["rdx"] & _U32) << 32 | regs["rax"] & _U32)
    else:
        value = msrs.rdmsr(index)
        ok = value is not None
        if value is not None:
            # "kvm_rax_write(vcpu, data & -1u); kvm_rdx_write(vcpu, (data >> 32) & -1u);"
            regs["rax"], regs["rdx"] = value & _U32, value >> 32 & _U32
    if not ok:
        # svm_complete_emulated_msr: "svm_vmgexit_inject_exception(svm, X86_TRAP_GP);":
        # EXITINFO1 = 1 (ISSUE_EXCEPTION), EXITINFO2 = VALID | TYPE_EXEPT | vector
        event = EventInjection(vector=X86_TRAP_GP)
        ctx.set_exit_info(HvResp.ISSUE_EXCEPTION, event.encode())
    return RESUME


def _map_gpa_range(ctx: EventContext, args: tuple[int, int, int, int]) -> EventOutcome:
    # "case KVM_HC_MAP_GPA_RANGE: { u64 gpa = a0, npages = a1, attrs = a2;"
    gpa, npages, attrs, _ = args
    regs = ctx.regs
    # "ret = -KVM_ENOSYS; if (!user_exit_on_hypercall(vcpu->kvm, KVM_HC_MAP_GPA_RANGE)) break;"
    if not ctx.vm.map_gpa_range:
        regs["rax"] = -KVM_ENOSYS & _U64
        return RESUME
    # "if (!PAGE_ALIGNED(gpa) || !npages || gpa_to_gfn(gpa) + npages <= gpa_to_gfn(gpa))
    #  { ret = -KVM_EINVAL; break; }" (u64 arithmetic)
    gfn = gpa >> 12
    if gpa & (PAGE_SIZE - 1) or not npages or (gfn + npages) & _U64 <= gfn:
        regs["rax"] = -KVM_EINVAL & _U64
        return RESUME
    return VmmcallMapGpa(ctx.kvm_run, gpa, npages, attrs)


def _vmmcall(ctx: EventContext, code: int) -> EventOutcome:
    # kvm_emulate_hypercall: "nr = kvm_rax_read(vcpu); a0 = kvm_rbx_read(vcpu); ..."
    regs = ctx.regs
    args = (regs["rbx"], regs["rcx"], regs["rdx"], regs["rsi"])
    # "if (cpl) { ret = -KVM_EPERM; goto out; }" comes first; MAP_GPA_RANGE is KVM's own
    if regs["rax"] == KVM_HC_MAP_GPA_RANGE and not regs["cpl"]:
        return _map_gpa_range(ctx, args)
    ret = ctx.vm.platform.hypercalls.hypercall(regs["rax"], args, regs["cpl"])
    regs["rax"] = ret & _U64  # "kvm_rax_write(vcpu, ret);"
    return RESUME


def _rdpmc(ctx: EventContext, code: int) -> EventOutcome:
    # kvm_emulate_rdpmc: "u32 ecx = kvm_rcx_read(vcpu); ... if (kvm_pmu_rdpmc(vcpu, ecx,
    # &data)) { kvm_inject_gp(vcpu, 0); return 1; }" (a #GP queued through the VMCB, not the
    # GHCB: the registers go back unchanged), else "kvm_rax_write(vcpu, (u32)data);
    # kvm_rdx_write(vcpu, data >> 32);"
    regs = ctx.regs
    value = ctx.vm.platform.pmcs.rdpmc(regs["rcx"] & _U32)
    if value is not None:
        regs["rax"], regs["rdx"] = value & _U32, value >> 32 & _U32
    return RESUME


def _no_handler(ctx: EventContext, code: int) -> EventOutcome:
    """RDTSC: ``svm_exit_handlers`` has no entry, so ``svm_invoke_exit_handler`` →
    ``svm_handle_invalid_exit`` ("unexpected exit reason": ``KVM_EXIT_INTERNAL_ERROR``)."""
    return NotHandled(code)


_Handler = Callable[[EventContext, int], EventOutcome]
_HANDLERS: Final[dict[int, _Handler]] = {
    ExitCode.MMIO_READ: _mmio,
    ExitCode.MMIO_WRITE: _mmio,
    ExitCode.NMI_COMPLETE: _nmi_complete,
    ExitCode.AP_HLT_LOOP: _ap_hlt_loop,
    ExitCode.AP_JUMP_TABLE: _ap_jump_table,
    ExitCode.HV_FEATURES: _hv_features,
    ExitCode.TERM_REQUEST: _term_request,
    ExitCode.AP_CREATION: _ap_creation,
    ExitCode.PSC: _psc,
    ExitCode.UNSUPPORTED_EVENT: _unsupported_event,
    # "case SVM_EXIT_IOIO: if (!(... SVM_IOIO_SIZE_MASK ...)) return 1; fallthrough;"
    ExitCode.IOIO: _ioio,
    # "default: ret = svm_invoke_exit_handler(vcpu, control->exit_code);"
    ExitCode.READ_DR7: _nop,
    ExitCode.WRITE_DR7: _nop,
    ExitCode.INVD: _nop,
    ExitCode.WBINVD: _nop,
    ExitCode.MONITOR: _nop,
    ExitCode.MWAIT: _nop,
    ExitCode.RDTSCP: _nop,
    ExitCode.CPUID: _cpuid,
    ExitCode.MSR: _msr,
    ExitCode.VMMCALL: _vmmcall,
    ExitCode.RDTSC: _no_handler,
    ExitCode.RDPMC: _rdpmc,
}


def handle_event(ctx: EventContext, code: int) -> EventOutcome:
    """The handler for accepted exit ``code`` (guest requests and PSC are the vCPU's)."""
    return _HANDLERS.get(code, _no_handler)(ctx, code)
