"""The reference hypervisor's vCPU: a sans-IO model of KVM's VMGEXIT handling.

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``sev_handle_vmgexit``, ``sev_es_sync_from_ghcb``,
``sev_es_validate_vmgexit``, ``sev_es_sync_to_ghcb`` / ``sev_es_unmap_ghcb``,
``sev_vcpu_deliver_sipi_vector``, ``sev_snp_init_protected_guest_state``),
``arch/x86/kvm/x86.c`` (``kvm_arch_vcpu_ioctl_run``, ``vcpu_enter_guest``), the v15 seed
series; ghcb-facts.md §2, §5. What differs between the certificate-exit ABIs lives in
:mod:`ghcb.hypervisor.kvm_abi`; the validator's table in :mod:`ghcb.hypervisor.rules`; the MSR
protocol in :mod:`ghcb.hypervisor.msr_protocol`; the other events' handlers in
:mod:`ghcb.hypervisor.events`; the results in :mod:`ghcb.hypervisor.results`.

Rules of this module (h11 style: everything that moves the state machine is in this file):

1. :meth:`Vcpu.run` is ``KVM_RUN`` with ``kvm_run`` as it stands (or as given);
   :meth:`Vcpu.complete` is ``KVM_RUN`` with the ``kvm_run`` bytes userspace filled in after a
   :class:`CertsExit` or :class:`MapGpaExit`. Every KVM_RUN reads ``immediate_exit``
   ("vcpu->wants_to_run = !immediate_exit"): a pending completion callback runs first, then
   -EINTR (:class:`Interrupted`) instead of entering the guest. A VMM clears it to go on
   (:func:`~ghcb.hypervisor.kvm_abi.with_immediate_exit`).
2. In state ``IDLE`` a run first applies a pending AP-creation request
   (``KVM_REQ_UPDATE_PROTECTED_GUEST_STATE``: the new VMSA, or none) and returns
   :class:`Halted` while the vCPU is not runnable; then it handles the guest's next VMGEXIT,
   in ``sev_handle_vmgexit``'s order: the GHCB MSR value (``gpa``) with bits 11:0 set is the
   MSR protocol (:func:`~ghcb.hypervisor.msr_protocol.msr_protocol`: the answer is the MSR
   value the guest reads, :attr:`Resumed.msr`); GPA 0 or a GPA no page is mapped at → the
   guest resumes untouched (``Resumed(None)``); then ``kvm_vcpu_map`` +
   ``sev_es_sync_from_ghcb`` (registers copied if valid, else 0; the valid bitmap snapshotted
   and **cleared in guest memory**); an SNP guest's unregistered GPA → KVM_RUN fails -EINVAL
   (after the sync); the validator (a failure writes EXITINFO1 = 2, EXITINFO2 = reason and
   resumes); EXITINFO1/2 = 0 written to the GHCB; the handler.
3. KVM writes the GHCB through its mapping, so every ``ghcb_set_*`` is in guest memory when
   KVM makes it — before any userspace exit or failure. The registers (RAX, RBX, RCX, RDX,
   marked valid) are written back only when KVM enters the guest (``sev_es_sync_to_ghcb`` from
   ``svm_prepare_switch_to_guest``), after a scratch area outside the GHCB is copied back.
4. A handler either resumes the guest (:class:`Resumed`, state ``IDLE``), exits to userspace
   with a completion pending (:class:`CertsExit` → ``AWAIT_CERTS``, :class:`MapGpaExit` →
   ``AWAIT_HYPERCALL``), exits without one (:class:`Terminated`: state ``MAPPED``), halts the
   vCPU in AP reset hold (:class:`ApResetHold`: ``HELD``), fails (:class:`RunFailed`,
   ``MAPPED``: the GHCB stays mapped) or has no handler in KVM (:class:`Unhandled`, ``IDLE``).
5. :meth:`complete` in ``AWAIT_CERTS`` / ``AWAIT_HYPERCALL`` runs the completion callback
   (x86.c clears ``complete_userspace_io`` and calls it), then honours ``immediate_exit``,
   then enters the guest. A callback that exits again gives that exit (v15 ``NOTIFY_DONE``:
   a :class:`DoneExit`, state ``MAPPED``, the callback not re-armed; the PSC engine: the next
   :class:`MapGpaExit`).
6. In state ``MAPPED`` (after a failure, an -EINTR, a termination or the DONE exit) the next
   KVM_RUN without ``immediate_exit`` enters the guest: the registers are written back and the
   result is :class:`Resumed` with the page the guest now reads (or, after an MSR request, the
   MSR value). A failed completion therefore resumes the guest with EXITINFO1/2 as KVM preset
   them: 0/0 — a fail-open path of merged KVM (ghcb-facts.md §5.1a).
7. In state ``HELD`` a KVM_RUN blocks (:class:`ApResetHold` again) until :meth:`sipi`
   (``sev_vcpu_deliver_sipi_vector``) releases the vCPU (:class:`Released`, ``MAPPED``).
8. The transitions are :data:`_TRANSITIONS`: per (state, input) the handler and the state
   each of its results leads to; anything else is caller misuse
   (:class:`~ghcb.hypervisor.errors.HypervisorUsageError`, raised before anything changes).
9. An exception from the host under KVM (a firmware double answering out of protocol:
   :class:`~ghcb.hypervisor.errors.HostError`, a device model's bad answer) propagates; a
   GHCB already mapped stays mapped (state ``MAPPED``), as KVM's writes to it have happened.

Guest memory is touched only through the host side of
:class:`~ghcb.hypervisor.memory.GuestMemory` (the memslot mapping KVM uses). Firmware requests
are serialised per VM (``Vm.lock``, KVM's ``guest_req_mutex``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ghcb.codes import Errno, ExitCode, HvResp, MsrCode
from ghcb.hypervisor._vcpu_state import (
    EXIT_INFO,
    OFFSET,
    USAGE,
    ScratchCopy,
    VcpuState,
)
from ghcb.hypervisor.errors import HypervisorBug, HypervisorUsageError
from ghcb.hypervisor.events import (
    Hold,
    NotHandled,
    PscBegin,
    RaxDone,
    Terminate,
    VmmcallMapGpa,
    handle_event,
)
from ghcb.hypervisor.kvm_abi import (
    IMMEDIATE_EXIT_OFFSET,
    KVM_RUN_SIZE,
    Exit,
    Fail,
    MergedAbi,
    V15Abi,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.hypervisor.msr_protocol import (
    MsrHold,
    MsrPscRequest,
    MsrReply,
    MsrTerminate,
    msr_protocol,
)
from ghcb.hypervisor.psc import GhcbPsc, MapGpaRange, MsrDone, MsrPsc, PscDone
from ghcb.hypervisor.results import (
    ApResetHold,
    CertsExit,
    DoneExit,
    Halted,
    Interrupted,
    MapGpaExit,
    Released,
    Resumed,
    RunFailed,
    RunResult,
    Terminated,
    Unhandled,
    Via,
    system_event_run,
)
from ghcb.hypervisor.rules import accepts, first_error
from ghcb.hypervisor.vm import Vm
from ghcb.msr import GHCB_MSR_INFO_MASK, msr_layout
from ghcb.page import parse_page

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


__all__ = [
    "KVM_RUN_SIZE",
    "ApResetHold",
    "CertsExit",
    "DoneExit",
    "Halted",
    "Interrupted",
    "MapGpaExit",
    "MergedAbi",
    "Released",
    "Resumed",
    "RunFailed",
    "RunResult",
    "Terminated",
    "Unhandled",
    "V15Abi",
    "Vcpu",
    "Vm",
    "decode_kvm_run",
    "encode_kvm_run",
]

_HOLD_RESULT: Final = msr_layout(MsrCode.AP_RESET_HOLD_RESP)[0]
_SPEC_MODEL: Final = "ghcb.hypervisor.vcpu (module rules)"
_ALL64: Final = (1 << 64) - 1


class _State(enum.StrEnum):
    IDLE = "idle"  # nothing pending: the next run handles the guest's next VMGEXIT
    AWAIT_CERTS = "await-certs"  # a CertsExit is outstanding (complete_userspace_io set)
    AWAIT_HYPERCALL = "await-hypercall"  # a MapGpaExit is outstanding
    MAPPED = "mapped"  # between an exit and the guest: the next KVM_RUN enters the guest
    HELD = "held"  # AP reset hold: KVM_RUN blocks until a SIPI


class _Input(enum.StrEnum):
    RUN = "run"
    COMPLETE = "complete"
    SIPI = "sipi"


class _RunArgs(NamedTuple):
    gpa: int | None
    kvm_run: object  # userspace's kvm_run bytes, or None: as they stand


def _is_u(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def _is_u64(value: object) -> bool:
    return _is_u(value, _ALL64)


class Vcpu(VcpuState):
    """One vCPU of an SEV(-SNP) guest, handling VMGEXITs as KVM does.

    Args:
        vm: the VM (firmware, SNP flag, certificate ABI, models).
        memory: guest memory.
        ghcb_gpa: the GHCB GPA the guest registered (GHCB MSR protocol REG_GPA;
            ``svm->sev_es.ghcb_registered_gpa``, 0: none yet).
        vcpu_id: the vCPU's id (its APIC ID for AP creation); None: the next free one.
        runnable: whether the vCPU may run (an AP waits, not runnable, for AP creation).
    """

    def __init__(
        self,
        vm: Vm,
        memory: GuestMemory,
        ghcb_gpa: int,
        *,
        vcpu_id: int | None = None,
        runnable: bool = True,
    ) -> None:
        if not isinstance(vm, Vm) or not isinstance(memory, GuestMemory):
            raise HypervisorUsageError(
                "Vcpu(vm, memory, ghcb_gpa) needs a Vm and a GuestMemory",
                rule="input-type",
                spec=_SPEC_MODEL,
            )
        # GHCB_MSR_REG_GPA registers a GFN: the GPA is a page address below 2**64.
        if not _is_u64(ghcb_gpa) or ghcb_gpa & GHCB_MSR_INFO_MASK:
            raise HypervisorUsageError(
                f"ghcb_gpa must be a page-aligned u64, not {ghcb_gpa!r}",
                rule="input-type",
                spec="sev-common.h GHCB_MSR_REG_GPA (a GFN)",
            )
        if vcpu_id is None:
            vcpu_id = max(vm.vcpus, default=-1) + 1
        if not _is_u(vcpu_id, 0xFFFFFFFF) or vcpu_id in vm.vcpus:
            raise HypervisorUsageError(
                f"vcpu_id {vcpu_id!r} is not a free u32 id of this VM",
                rule="input-type",
                spec="KVM_CREATE_VCPU (-EEXIST)",
            )
        vm.vcpus[vcpu_id] = self
        super().__init__(vm, memory, vcpu_id, ghcb_gpa, runnable)
        self.state = _State.IDLE
        # sev_es.psc (a PSC in flight) or a VMMCALL's KVM_HC_MAP_GPA_RANGE
        self._psc: GhcbPsc | MsrPsc | VmmcallMapGpa | None = None

    # -- public ---------------------------------------------------------------------------
    def run(self, *, gpa: int | None = None, kvm_run: bytes | None = None) -> RunResult:
        """KVM_RUN with ``kvm_run`` as it stands (or as given): -EINTR at once if its
        ``immediate_exit`` is set; else enter the guest if an exit is pending, or handle
        the VMGEXIT with the GHCB MSR value ``gpa`` (default: the registered GHCB GPA; a value
        with bits 11:0 set is an MSR protocol request). See the module rules."""
        return self._dispatch(_Input.RUN, _RunArgs(gpa, kvm_run))

    def complete(self, kvm_run: bytes) -> RunResult:
        """KVM_RUN after a :class:`CertsExit` / :class:`MapGpaExit`, with the ``kvm_run``
        bytes userspace filled."""
        return self._dispatch(_Input.COMPLETE, _RunArgs(None, kvm_run))

    def sipi(self) -> RunResult:
        """Deliver a SIPI to a vCPU in AP reset hold (``sev_vcpu_deliver_sipi_vector``)."""
        return self._dispatch(_Input.SIPI, _RunArgs(None, None))

    # -- state machine --------------------------------------------------------------------
    def _dispatch(self, event: _Input, args: _RunArgs) -> RunResult:
        transition = _TRANSITIONS.get((self.state, event))
        if transition is None:
            raise HypervisorUsageError(
                f"{event.value} is not allowed in state {self.state.value}",
                rule="vcpu-state",
                spec="ghcb.hypervisor.vcpu rules 1-9",
            )
        try:
            result = transition.handler(self, args)
        except HypervisorUsageError as e:
            if e.rule != "device":
                raise  # the caller's arguments are checked before anything happens: no change
            if self._map is not None:
                self.state = _State.MAPPED
            raise
        except BaseException:
            # rule 9: the host failed under KVM (firmware, hooks); a mapped GHCB stays mapped
            if self._map is not None:
                self.state = _State.MAPPED
            raise
        next_state = transition.next.get(type(result))
        if next_state is None:  # pragma: no cover - the table lists every result of a handler
            msg = f"{type(result).__name__} from {self.state}/{event}"  # pragma: no mutate
            raise HypervisorBug(msg)  # pragma: no mutate - unreachable (above)
        self.state = next_state
        return result

    def _take_kvm_run(self, kvm_run: object) -> int:
        """Keep userspace's ``kvm_run`` bytes (checked) if given; its ``immediate_exit``."""
        if kvm_run is not None:
            self.kvm_run = self.vm.abi.kvm_run_bytes(kvm_run)
        return self.kvm_run[IMMEDIATE_EXIT_OFFSET]

    def _run_idle(self, args: _RunArgs) -> RunResult:
        """KVM_RUN with nothing pending: "if (!vcpu->wants_to_run) { r = -EINTR; goto out; }"
        before the guest runs, then vcpu_enter_guest's "if (kvm_check_request(
        KVM_REQ_UPDATE_PROTECTED_GUEST_STATE, vcpu)) { kvm_vcpu_reset(vcpu, true); if
        (vcpu->arch.mp_state != KVM_MP_STATE_RUNNABLE) { r = 1; goto out; } }", else the
        guest's next VMGEXIT."""
        target = self.ghcb_gpa if args.gpa is None else args.gpa
        if not _is_u64(target):
            raise HypervisorUsageError(
                f"gpa must be a u64, not {target!r}", rule="input-type", spec=_SPEC_MODEL
            )
        if self._take_kvm_run(args.kvm_run):
            return Interrupted(None)
        if self.update_requested:
            self.update_requested = False
            self._init_protected_state()
        if not self.runnable:
            return Halted()  # vcpu_block
        return self._handle_vmgexit(target)

    def _init_protected_state(self) -> None:
        """``sev_snp_init_protected_guest_state``."""
        if not self.ap_waiting_for_reset:
            return
        self.ap_waiting_for_reset = False
        # "kvm_set_mp_state(vcpu, KVM_MP_STATE_HALTED); svm->vmcb->control.vmsa_pa = INVALID"
        self.runnable = False
        self.vmsa_gpa = None
        gpa, self.snp_vmsa_gpa = self.snp_vmsa_gpa, None
        # "if (!VALID_PAGE(svm->sev_es.snp_vmsa_gpa)) return;" ... "slot = gfn_to_memslot(
        #  vcpu->kvm, gfn); if (!slot) return;" (the gmem pfn of a slot's page)
        if gpa is None or not self.is_mapped(gpa):
            return
        self.vmsa_gpa = gpa  # "svm->vmcb->control.vmsa_pa = pfn_to_hpa(pfn);"
        self.runnable = True  # "kvm_set_mp_state(vcpu, KVM_MP_STATE_RUNNABLE);"

    def _handle_vmgexit(self, target: int) -> RunResult:
        """``sev_handle_vmgexit``."""
        self.ghcb_msr = target
        # "if (ghcb_gpa & GHCB_MSR_INFO_MASK) return sev_handle_vmgexit_msr_protocol(svm);"
        if target & GHCB_MSR_INFO_MASK:
            return self._msr_protocol(target)
        # "if (!ghcb_gpa) { … Without a GHCB, just return right back to the guest */ return 1;"
        if not target:
            return Resumed(None)
        # "if (kvm_vcpu_map(vcpu, ghcb_gpa >> PAGE_SHIFT, &svm->sev_es.ghcb_map)) … return 1;"
        try:
            view = self.memory.host_map(target)
        except GuestMemoryError:
            return Resumed(None)
        self._map = view
        self._mapped_gpa = target
        self._undefined = None
        usage = USAGE.unpack_from(view, OFFSET["ghcb_usage"])[0]
        code, info1, info2, _ = EXIT_INFO.unpack_from(view, OFFSET["sw_exit_code"])
        bits = self._sync_from_ghcb(view)
        # "if (sev_snp_guest(svm->vcpu.kvm) && !ghcb_gpa_is_registered(svm, ghcb_gpa))
        #      return -EINVAL;" (after the sync: the bitmap is already cleared)
        if self.vm.snp and target != self.ghcb_gpa:
            return RunFailed(Errno.EINVAL, "GHCB GPA differs from the registered one")
        # "ret = sev_es_validate_vmgexit(svm); if (ret) return ret;" — its error path writes
        # the reason and returns 1: "svm_vmgexit_bad_input(svm, reason)"
        abi = self.vm.abi
        snp = self.vm.snp
        if not accepts(code, usage, bits, info1, info2, snp=snp, validator=abi.validator):
            # the guest's page as KVM read it: the snapshot bitmap, not the cleared one
            page = parse_page(view.tobytes()).replace(valid_bitmap=bits.to_bytes(16, "little"))
            reason = first_error(page, snp=snp, validator=abi.validator)
            if reason is not None:
                self.set_exit_info(HvResp.MALFORMED_INPUT, reason)
                return self._enter_guest()
        # "svm_vmgexit_success(svm, 0);" (older trees: ghcb_set_sw_exit_info_1/2(ghcb, 0))
        self.set_exit_info(HvResp.NO_ACTION, 0)
        if code == ExitCode.SNP_GUEST_REQUEST:
            return self._outcome(abi.guest_request(self))
        if code == ExitCode.SNP_EXT_GUEST_REQUEST:
            return self._outcome(abi.ext_guest_request(self))
        return self._outcome(handle_event(self, code))

    def _msr_protocol(self, value: int) -> RunResult:
        """``sev_handle_vmgexit_msr_protocol`` (:mod:`ghcb.hypervisor.msr_protocol`)."""
        decision = msr_protocol(value, self.vm.msr_settings())
        if isinstance(decision, MsrReply):
            if decision.register is not None:
                self.ghcb_gpa = decision.register  # "sev_es.ghcb_registered_gpa = ..."
            self.ghcb_msr = decision.value
            return Resumed(None, msr=decision.value)
        if isinstance(decision, MsrTerminate):
            return self._terminated(value, decision.reason_set, decision.reason_code, "msr")
        if isinstance(decision, MsrHold):
            self.ghcb_msr = decision.value
            self._hold = "msr"  # "svm->sev_es.ap_reset_hold_type = AP_RESET_HOLD_MSR_PROTO;"
            return ApResetHold("msr")
        if isinstance(decision, MsrPscRequest):
            # "ret = snp_begin_psc_msr(svm, control->ghcb_gpa);"
            vm = self.vm
            return self._psc_begin(
                MsrPsc(value, kvm_run=self.kvm_run, exit_enabled=vm.map_gpa_range)
            )
        # unreachable: msr_protocol returns one of the four decisions above
        raise HypervisorBug(f"unknown MSR decision {decision!r}")  # pragma: no cover, no mutate

    def _terminated(
        self, data0: int, reason_set: int | None, reason_code: int | None, via: Via
    ) -> Terminated:
        """``out_terminate``: "vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT; ..."."""
        self.kvm_run = system_event_run(self.kvm_run, data0)
        return Terminated(self.kvm_run, data0, reason_set, reason_code, via)

    def _complete_certs(self, args: _RunArgs) -> RunResult:
        """``kvm_arch_vcpu_ioctl_run`` with ``complete_userspace_io`` pending."""
        abi = self.vm.abi
        immediate_exit = self._take_kvm_run(args.kvm_run)
        # "vcpu->arch.complete_userspace_io = NULL; r = cui(vcpu); if (r <= 0) goto out;"
        outcome = abi.complete(self, abi.exit_fields(self.kvm_run))
        if outcome is not None:
            return self._outcome(outcome)
        return self._resume_or_interrupt(immediate_exit)

    def _psc_begin(self, engine: GhcbPsc | MsrPsc | VmmcallMapGpa) -> RunResult:
        """``snp_begin_psc`` / ``snp_begin_psc_msr`` (:mod:`ghcb.hypervisor.psc`)."""
        self._psc = engine
        step = engine.begin()
        if isinstance(step, MapGpaRange):
            return self._psc_exit(step)
        self._psc_done(step)
        return self._enter_guest()

    def _psc_exit(self, step: MapGpaRange) -> MapGpaExit:
        """ "vcpu->run->exit_reason = KVM_EXIT_HYPERCALL; ... return 0;"."""
        self.kvm_run = step.kvm_run
        return MapGpaExit(step.kvm_run, step.gpa, step.npages, step.attributes)

    def _psc_done(self, step: PscDone | MsrDone | RaxDone) -> None:
        """The final answer: "svm_vmgexit_no_action(svm, psc_ret);" (SW_EXITINFO1 = 0,
        SW_EXITINFO2 = the PSC code) or "set_ghcb_msr(svm, GHCB_MSR_PSC_RESP...)"."""
        self._psc = None
        if isinstance(step, PscDone):
            self.set_exit_info(HvResp.NO_ACTION, step.exit_info_2)
        elif isinstance(step, RaxDone):
            self.regs["rax"] = step.rax  # complete_hypercall_exit: "kvm_rax_write(vcpu, ret);"
        else:
            self.ghcb_msr = step.msr

    def _complete_hypercall(self, args: _RunArgs) -> RunResult:
        """``kvm_arch_vcpu_ioctl_run`` with ``snp_complete_one_psc`` /
        ``snp_complete_psc_msr`` pending: the callback reads ``hypercall.ret``; it either
        exits again for the next range or answers, then -EINTR or entering the guest."""
        engine = self._psc
        if engine is None:  # pragma: no cover - the state says a PSC is in flight
            raise HypervisorBug("hypercall completion without a PSC in flight")  # pragma: no mutate
        immediate_exit = self._take_kvm_run(args.kvm_run)
        step = engine.complete_run(self.kvm_run)
        if isinstance(step, MapGpaRange):
            return self._psc_exit(step)
        self._psc_done(step)
        return self._resume_or_interrupt(immediate_exit)

    def _run_mapped(self, args: _RunArgs) -> RunResult:
        """KVM_RUN with an exit behind it and no callback pending: enter the guest."""
        if args.gpa is not None:
            raise HypervisorUsageError(
                "an exit is pending: this KVM_RUN enters the guest, it takes no gpa",
                rule="vcpu-state",
                spec=_SPEC_MODEL,
            )
        return self._resume_or_interrupt(self._take_kvm_run(args.kvm_run))

    def _run_held(self, args: _RunArgs) -> RunResult:
        """KVM_RUN in AP reset hold: -EINTR if asked, else the vCPU blocks (``vcpu_block``)."""
        if args.gpa is not None:
            raise HypervisorUsageError(
                "the vCPU is in AP reset hold: this KVM_RUN takes no gpa",
                rule="vcpu-state",
                spec=_SPEC_MODEL,
            )
        if self._take_kvm_run(args.kvm_run):
            return Interrupted(self._page())
        # HELD is entered only with _hold set ("msr" or "ghcb"): the default only narrows the type
        return ApResetHold(self._hold or "ghcb")  # pragma: no mutate

    def _sipi(self, args: _RunArgs) -> RunResult:
        """``sev_vcpu_deliver_sipi_vector``: "First SIPI: Use the values as initially set by
        the VMM" (nothing written); later ones "svm_vmgexit_success(svm, 1)" (NAE event) or
        "set_ghcb_msr_bits(svm, 1, GHCB_MSR_AP_RESET_HOLD_RESULT_MASK, ...POS)" (MSR)."""
        if not self.received_first_sipi:
            self.received_first_sipi = True
            return Released(first=True)
        if self._hold == "msr":
            field_ = _HOLD_RESULT
            self.ghcb_msr = self.ghcb_msr & ~(field_.mask << field_.shift) | 1 << field_.shift
        elif self._hold == "ghcb":
            self.set_exit_info(HvResp.NO_ACTION, 1)
        return Released(first=False)

    def _resume_or_interrupt(self, immediate_exit: int) -> RunResult:
        # "if (!vcpu->wants_to_run) { r = -EINTR; goto out; }" — after the callback
        if immediate_exit:
            return Interrupted(self._page())
        return self._enter_guest()

    def _outcome(self, outcome: Any) -> RunResult:
        if outcome is None:
            return self._enter_guest()
        if isinstance(outcome, Exit):
            self.kvm_run = outcome.kvm_run
            kind = DoneExit if outcome.done else CertsExit
            return kind(outcome.kvm_run, outcome.gpa, outcome.npages)
        if isinstance(outcome, Fail):
            return RunFailed(outcome.errno, outcome.reason)
        if isinstance(outcome, Terminate):
            return self._terminated(
                self._mapped_gpa, outcome.reason_set, outcome.reason_code, "ghcb"
            )
        if isinstance(outcome, Hold):
            self._hold = "ghcb"  # "svm->sev_es.ap_reset_hold_type = AP_RESET_HOLD_NAE_EVENT;"
            return ApResetHold("ghcb")
        if isinstance(outcome, PscBegin):
            # snp_begin_psc works on svm->sev_es.ghcb_sa: the mapped GHCB, or the copy of an
            # area outside it (written back by sev_es_unmap_ghcb), as the VM's tree reads it
            vm = self.vm
            engine = GhcbPsc(
                self.memory if outcome.in_ghcb else ScratchCopy(outcome.gpa, outcome.view),
                outcome.gpa,
                outcome.length,
                kvm_run=self.kvm_run,
                exit_enabled=vm.map_gpa_range,
                validator=vm.abi.validator,
                in_ghcb=outcome.in_ghcb,
            )
            return self._psc_begin(engine)
        if isinstance(outcome, VmmcallMapGpa):
            return self._psc_begin(outcome)
        if isinstance(outcome, NotHandled):
            self._unmap()
            return Unhandled(ExitCode.from_int(outcome.exit_code))
        # unreachable: the handlers return one of the outcomes above
        raise HypervisorBug(f"unknown handler outcome {outcome!r}")  # pragma: no cover, no mutate


class _Transition(NamedTuple):
    """What an input does in a state: the handler, and the state each result it can return
    leads to."""

    handler: Callable[[Vcpu, _RunArgs], RunResult]
    next: Mapping[type[RunResult], _State]


_ENTER_GUEST: Final = {Resumed: _State.IDLE, Interrupted: _State.MAPPED}
#: What a handler's exits lead to (after a VMGEXIT or a completion callback).
_EXITS: Final = {
    CertsExit: _State.AWAIT_CERTS,
    DoneExit: _State.MAPPED,
    MapGpaExit: _State.AWAIT_HYPERCALL,
    RunFailed: _State.MAPPED,
    Terminated: _State.MAPPED,
    ApResetHold: _State.HELD,
    Unhandled: _State.IDLE,
}

#: The vCPU's transitions; any (state, input) not here is caller misuse.
_TRANSITIONS: Final[dict[tuple[_State, _Input], _Transition]] = {
    (_State.IDLE, _Input.RUN): _Transition(
        Vcpu._run_idle,
        {
            **_EXITS,
            Resumed: _State.IDLE,
            Interrupted: _State.IDLE,  # -EINTR before a VMGEXIT: nothing mapped
            Halted: _State.IDLE,
        },
    ),
    (_State.AWAIT_CERTS, _Input.COMPLETE): _Transition(
        Vcpu._complete_certs, {**_ENTER_GUEST, **_EXITS}
    ),
    (_State.AWAIT_HYPERCALL, _Input.COMPLETE): _Transition(
        Vcpu._complete_hypercall, {**_ENTER_GUEST, MapGpaExit: _State.AWAIT_HYPERCALL}
    ),
    (_State.MAPPED, _Input.RUN): _Transition(Vcpu._run_mapped, _ENTER_GUEST),
    (_State.MAPPED, _Input.COMPLETE): _Transition(Vcpu._run_mapped, _ENTER_GUEST),
    (_State.HELD, _Input.RUN): _Transition(
        Vcpu._run_held, {ApResetHold: _State.HELD, Interrupted: _State.HELD}
    ),
    (_State.HELD, _Input.SIPI): _Transition(Vcpu._sipi, {Released: _State.MAPPED}),
}
