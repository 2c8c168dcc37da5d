"""The reference hypervisor's vCPU: a sans-IO model of KVM's VMGEXIT handling.

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``sev_handle_vmgexit``, ``sev_es_sync_from_ghcb``,
``sev_es_validate_vmgexit``, ``sev_es_sync_to_ghcb`` / ``sev_es_unmap_ghcb``),
``arch/x86/kvm/x86.c`` (``kvm_arch_vcpu_ioctl_run``), the v15 seed series; ghcb-facts.md §5.
What differs between the certificate-exit ABIs lives in :mod:`ghcb.hypervisor.kvm_abi`; the
validator's table in :mod:`ghcb.hypervisor.rules`.

Rules of this module (h11 style: everything that moves the state machine is in this file):

1. :meth:`Vcpu.run` is ``KVM_RUN`` with ``kvm_run`` as it stands (or as given);
   :meth:`Vcpu.complete` is ``KVM_RUN`` with the ``kvm_run`` bytes userspace filled in after a
   :class:`CertsExit`. Every KVM_RUN reads ``immediate_exit`` ("vcpu->wants_to_run =
   !immediate_exit"): a pending completion callback runs first, then -EINTR
   (:class:`Interrupted`) instead of entering the guest. A VMM clears it to go on
   (:func:`~ghcb.hypervisor.kvm_abi.with_immediate_exit`).
2. In state ``IDLE`` a run handles the guest's next VMGEXIT, in ``sev_handle_vmgexit``'s
   order: a GHCB GPA with bits 11:0 set is the MSR protocol (not modelled: :class:`Unhandled`);
   GPA 0 or a GPA no page is mapped at → the guest resumes untouched (``Resumed(None)``); then
   ``kvm_vcpu_map`` + ``sev_es_sync_from_ghcb`` (registers copied if valid, else 0; the valid
   bitmap snapshotted and **cleared in guest memory**); an SNP guest's unregistered GPA →
   KVM_RUN fails -EINVAL (after the sync); the validator (a failure writes EXITINFO1 = 2,
   EXITINFO2 = reason and resumes); EXITINFO1/2 = 0 written to the GHCB; the handler.
3. KVM writes the GHCB through its mapping, so every ``ghcb_set_*`` is in guest memory when
   KVM makes it — before any userspace exit or failure. The registers (RAX, RBX, RCX, RDX,
   marked valid) are written back only when KVM enters the guest (``sev_es_sync_to_ghcb`` from
   ``svm_prepare_switch_to_guest``).
4. A handler either resumes the guest (:class:`Resumed`, state ``IDLE``), exits to userspace
   (:class:`CertsExit`, state ``AWAIT_CERTS``), or fails (:class:`RunFailed`, state
   ``MAPPED``: the GHCB stays mapped).
5. :meth:`complete` in ``AWAIT_CERTS`` runs the ABI's completion callback (x86.c clears
   ``complete_userspace_io`` and calls it), then honours ``immediate_exit``, then enters the
   guest. A callback that exits again (v15 ``NOTIFY_DONE``) gives a :class:`DoneExit`, state
   ``MAPPED``: the callback is not re-armed, so the next KVM_RUN just enters the guest.
6. In state ``MAPPED`` (after a failure, an -EINTR or the DONE exit) the next KVM_RUN without
   ``immediate_exit`` enters the guest: the registers are written back and the result is
   :class:`Resumed` with the page the guest now reads. A failed completion therefore resumes
   the guest with EXITINFO1/2 as KVM preset them: 0/0 — a fail-open path of merged KVM
   (ghcb-facts.md §5.1a).
7. The transitions are :data:`_TRANSITIONS`: per (state, input) the handler and the state
   each of its results leads to; anything else is caller misuse
   (:class:`~ghcb.hypervisor.errors.HypervisorUsageError`, raised before anything changes).
8. An exception from the host under KVM (a firmware double answering out of protocol:
   :class:`~ghcb.hypervisor.errors.HostError`) propagates; a GHCB already mapped stays mapped
   (state ``MAPPED``), as KVM's writes to it have happened.

Guest memory is touched only through the host side of
:class:`~ghcb.hypervisor.memory.GuestMemory` (the memslot mapping KVM uses). Firmware requests
are serialised per VM (``Vm.lock``, KVM's ``guest_req_mutex``).
"""

from __future__ import annotations

import enum
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

from ghcb._fast import struct_format
from ghcb.codes import Errno, ExitCode, HvResp
from ghcb.hypervisor.errors import HypervisorBug, HypervisorUsageError
from ghcb.hypervisor.kvm_abi import (
    IMMEDIATE_EXIT_OFFSET,
    KVM_RUN_SIZE,
    CertAbi,
    DisabledAbi,
    Exit,
    Fail,
    MergedAbi,
    Outcome,
    V15Abi,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.hypervisor.rules import accepts, first_error
from ghcb.page import FIELDS, VALID_BIT, GhcbPage, parse_page
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ghcb.hypervisor.firmware import Firmware

__all__ = [
    "KVM_RUN_SIZE",
    "CertsExit",
    "DoneExit",
    "Interrupted",
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

_OFFSET: Final = {f.name: f.offset for f in FIELDS}
_BITMAP: Final = slice(_OFFSET["valid_bitmap"], _OFFSET["valid_bitmap"] + 16)
_ZERO_BITMAP: Final = bytes(16)
_U64: Final = struct.Struct("<Q")
_USAGE: Final = struct.Struct("<" + next(f.fmt for f in FIELDS if f.name == "ghcb_usage"))
# sw_exit_code, sw_exit_info_1, sw_exit_info_2: adjacent in struct ghcb_save_area
_EXIT_INFO: Final = struct_format(
    tuple(f for f in FIELDS if f.name in ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"))
)
_GHCB_MSR_INFO_MASK: Final = 0xFFF  # sev-common.h GHCB_MSR_INFO_MASK: GHCBInfo, bits 11:0
_WRITTEN_BACK: Final = ("rax", "rbx", "rcx", "rdx")  # sev_es_sync_to_ghcb
_COPIED_IN: Final = ("rax", "rbx", "rcx", "rdx", "rsi", "cpl")  # sev_es_sync_from_ghcb
# (name, valid bit, offset, unpack_from) of each register sev_es_sync_from_ghcb copies.
_COPIED: Final = tuple(
    (f.name, VALID_BIT[f.name], f.offset, struct.Struct("<" + f.fmt).unpack_from)
    for f in FIELDS
    if f.name in _COPIED_IN
)


class _GhcbWrite(NamedTuple):
    """Where ``ghcb_set_<field>()`` of some fields writes: each field's offset, and the valid
    bits to set as (bitmap byte offset, mask) pairs, merged per byte."""

    offsets: tuple[int, ...]
    bits: tuple[tuple[int, int], ...]


def _ghcb_write(*names: str) -> _GhcbWrite:
    masks: dict[int, int] = {}
    for name in names:
        byte = _OFFSET["valid_bitmap"] + VALID_BIT[name] // 8
        masks[byte] = masks.get(byte, 0) | 1 << VALID_BIT[name] % 8
    return _GhcbWrite(tuple(_OFFSET[name] for name in names), tuple(masks.items()))


_SET_INFO: Final = _ghcb_write("sw_exit_info_1", "sw_exit_info_2")
_SET_INFO_2: Final = _ghcb_write("sw_exit_info_2")
_SYNC_TO_GHCB: Final = _ghcb_write(*_WRITTEN_BACK)


# -- results ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Resumed:
    """KVM entered the guest; ``page`` is the GHCB the guest reads (None when KVM resumed
    the guest without a GHCB: GPA 0 or unmapped).

    ``undefined`` names the C code's undefined behaviour on this path, if any, and the sound
    value the model chose instead (e.g. the seed's uninitialised ``fw_err``).
    """

    page: GhcbPage | None
    undefined: str | None = None


@dataclass(frozen=True, slots=True)
class CertsExit:
    """A userspace exit for certificates: fill ``kvm_run`` and pass it to ``complete``.

    ``done`` marks the v15 second exit (status DONE) that only tells userspace the request has
    reached firmware; its answer is ignored (the callback is not re-armed).
    """

    kvm_run: bytes
    gpa: int
    npages: int
    done: bool = False


@dataclass(frozen=True, slots=True)
class DoneExit(CertsExit):
    """The v15 second exit (``req_certs.status`` DONE, ``flags`` 0): the request reached
    firmware and userspace may drop its lock. Whatever userspace writes back is ignored: the
    next KVM_RUN enters the guest."""

    done: bool = True


@dataclass(frozen=True, slots=True)
class Interrupted:
    """KVM_RUN returned -EINTR because ``immediate_exit`` was set: the completion ran and its
    answer is in the GHCB (``page``, as guest memory holds it; the registers are written back
    when the next ``run`` enters the guest)."""

    page: GhcbPage | None
    errno: int = Errno.EINTR


@dataclass(frozen=True, slots=True)
class RunFailed:
    """KVM_RUN failed with ``-errno``; the GHCB stays mapped and the next ``run`` enters the
    guest with what KVM had written to it."""

    errno: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A valid VMGEXIT this reference handler does not implement (only guest requests are),
    or a GHCB MSR protocol request (``msr`` holds the MSR value). For a GHCB event, KVM's
    sync and EXITINFO1/2 presets are in guest memory already."""

    exit_code: ExitCode | int
    msr: int | None = None


RunResult = Resumed | CertsExit | Interrupted | RunFailed | Unhandled


# -- VM and vCPU ------------------------------------------------------------------------------
@dataclass
class Vm:
    """What KVM keeps per VM: SNP or not, the certificate ABI (``None``: fetching off), the
    firmware, the guest-request lock and the firmware's response buffer."""

    firmware: Firmware
    snp: bool = True
    cert_abi: CertAbi | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    guest_resp_buf: bytearray = field(default_factory=lambda: bytearray(PAGE_SIZE))

    def __post_init__(self) -> None:
        problem = None
        if not callable(getattr(self.firmware, "guest_request", None)):
            problem = "firmware must have a guest_request(request) method"
        elif self.cert_abi is not None and not isinstance(self.cert_abi, _ABIS):
            problem = "cert_abi must be None, DisabledAbi(), MergedAbi() or V15Abi()"
        elif not isinstance(self.snp, bool):
            problem = "snp must be a bool"
        elif not (hasattr(self.lock, "__enter__") and hasattr(self.lock, "__exit__")):
            problem = "lock must be a context manager (a threading.Lock)"
        elif not isinstance(self.guest_resp_buf, bytearray) or len(self.guest_resp_buf) != (
            PAGE_SIZE
        ):
            problem = "guest_resp_buf must be a bytearray of one page"
        if problem is not None:
            raise HypervisorUsageError(problem, rule="input-type", spec=_SPEC_MODEL)

    @property
    def abi(self) -> CertAbi:
        """The ABI object in force (:class:`~ghcb.hypervisor.kvm_abi.DisabledAbi` for None)."""
        return _DISABLED if self.cert_abi is None else self.cert_abi


_DISABLED: Final = DisabledAbi()
_ABIS: Final = (DisabledAbi, MergedAbi, V15Abi)
_SPEC_MODEL: Final = "ghcb.hypervisor.vcpu (module rules)"


class _State(enum.StrEnum):
    IDLE = "idle"  # no GHCB mapped: the next run handles the guest's next VMGEXIT
    AWAIT_CERTS = "await-certs"  # a CertsExit is outstanding (complete_userspace_io set)
    MAPPED = "mapped"  # the GHCB is mapped; the next KVM_RUN enters the guest


class _Input(enum.StrEnum):
    RUN = "run"
    COMPLETE = "complete"


class _RunArgs(NamedTuple):
    gpa: int | None
    kvm_run: object  # userspace's kvm_run bytes, or None: as they stand


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value < 1 << 64


class Vcpu:
    """One vCPU of an SEV(-SNP) guest, handling VMGEXITs as KVM does.

    Args:
        vm: the VM (firmware, SNP flag, certificate ABI).
        memory: guest memory.
        ghcb_gpa: the GHCB GPA the guest registered (GHCB MSR protocol REG_GPA).
    """

    def __init__(self, vm: Vm, memory: GuestMemory, ghcb_gpa: int) -> None:
        if not isinstance(vm, Vm) or not isinstance(memory, GuestMemory):
            raise HypervisorUsageError(
                "Vcpu(vm, memory, ghcb_gpa) needs a Vm and a GuestMemory",
                rule="input-type",
                spec=_SPEC_MODEL,
            )
        # GHCB_MSR_REG_GPA registers a GFN: the GPA is a page address below 2**64.
        if not _is_u64(ghcb_gpa) or ghcb_gpa & _GHCB_MSR_INFO_MASK:
            raise HypervisorUsageError(
                f"ghcb_gpa must be a page-aligned u64, not {ghcb_gpa!r}",
                rule="input-type",
                spec="sev-common.h GHCB_MSR_REG_GPA (a GFN)",
            )
        self.vm = vm
        self.memory = memory
        self.ghcb_gpa = ghcb_gpa
        self.state = _State.IDLE
        self.regs: dict[str, int] = dict.fromkeys(_COPIED_IN, 0)
        self.exit_info_1 = self.exit_info_2 = 0  # control->exit_info_1 / exit_info_2
        self.kvm_run: bytes = bytes(KVM_RUN_SIZE)  # the kvm_run page as it stands
        self._map: memoryview | None = None  # svm->sev_es.ghcb_map
        self._valid = 0  # svm->sev_es.valid_bitmap (KVM's snapshot)
        self._undefined: str | None = None

    # -- public ---------------------------------------------------------------------------
    def run(self, *, gpa: int | None = None, kvm_run: bytes | None = None) -> RunResult:
        """KVM_RUN with ``kvm_run`` as it stands (or as given): -EINTR at once if its
        ``immediate_exit`` is set; else enter the guest if a GHCB is still mapped, or handle
        the VMGEXIT whose GHCB the guest put at ``gpa`` (default: the registered GPA).
        See the module rules."""
        return self._dispatch(_Input.RUN, _RunArgs(gpa, kvm_run))

    def complete(self, kvm_run: bytes) -> RunResult:
        """KVM_RUN after a :class:`CertsExit`, with the ``kvm_run`` bytes userspace filled."""
        return self._dispatch(_Input.COMPLETE, _RunArgs(None, kvm_run))

    # -- RequestContext (what the ABI handlers use) ---------------------------------------
    @property
    def firmware(self) -> Firmware:
        return self.vm.firmware

    @property
    def guest_req_lock(self) -> threading.Lock:
        return self.vm.lock

    @property
    def guest_resp_buf(self) -> bytearray:
        return self.vm.guest_resp_buf

    def is_valid(self, name: str) -> bool:
        return bool(self._valid >> VALID_BIT[name] & 1)

    def read_guest(self, gpa: int, size: int) -> bytes | None:
        try:
            return self.memory.host_read(gpa, size)
        except GuestMemoryError:
            return None

    def write_guest(self, gpa: int, data: bytes | bytearray) -> bool:
        try:
            self.memory.host_write(gpa, data)
        except GuestMemoryError:
            return False
        return True

    def is_mapped(self, gpa: int) -> bool:
        try:
            return self.memory.is_mapped(gpa)
        except GuestMemoryError:
            return False

    def set_exit_info(self, info1: int, info2: int) -> None:
        self._ghcb_set(_SET_INFO, info1, info2)

    def set_exit_info_2(self, info2: int) -> None:
        self._ghcb_set(_SET_INFO_2, info2)

    def note_undefined(self, what: str) -> None:
        self._undefined = what

    # -- state machine --------------------------------------------------------------------
    def _dispatch(self, event: _Input, args: _RunArgs) -> RunResult:
        transition = _TRANSITIONS.get((self.state, event))
        if transition is None:
            raise HypervisorUsageError(
                f"{event.value} is not allowed in state {self.state.value}",
                rule="vcpu-state",
                spec="ghcb.hypervisor.vcpu rules 1-8",
            )
        try:
            result = transition.handler(self, args)
        except HypervisorUsageError:
            raise  # the caller's arguments are checked before anything happens: no change
        except BaseException:
            # rule 8: the host failed under KVM (firmware, hooks); a mapped GHCB stays mapped
            if self._map is not None:
                self.state = _State.MAPPED
            raise
        next_state = transition.next.get(type(result))
        if next_state is None:  # pragma: no cover - the table lists every result of a handler
            raise HypervisorBug(f"{type(result).__name__} from {self.state}/{event}")
        self.state = next_state
        return result

    def _take_kvm_run(self, kvm_run: object) -> int:
        """Keep userspace's ``kvm_run`` bytes (checked) if given; its ``immediate_exit``."""
        if kvm_run is not None:
            self.kvm_run = self.vm.abi.kvm_run_bytes(kvm_run)
        return self.kvm_run[IMMEDIATE_EXIT_OFFSET]

    def _run_idle(self, args: _RunArgs) -> RunResult:
        """KVM_RUN with nothing pending: "if (!vcpu->wants_to_run) { r = -EINTR; goto out; }"
        before the guest runs, else the guest's next VMGEXIT."""
        if self._take_kvm_run(args.kvm_run):
            return Interrupted(None)
        return self._handle_vmgexit(args.gpa)

    def _handle_vmgexit(self, gpa: int | None) -> RunResult:
        """``sev_handle_vmgexit``."""
        target = self.ghcb_gpa if gpa is None else gpa
        if not _is_u64(target):
            raise HypervisorUsageError(
                f"gpa must be a u64, not {target!r}", rule="input-type", spec=_SPEC_MODEL
            )
        # "if (ghcb_gpa & GHCB_MSR_INFO_MASK) return sev_handle_vmgexit_msr_protocol(svm);"
        if target & _GHCB_MSR_INFO_MASK:
            return Unhandled(target & _GHCB_MSR_INFO_MASK, msr=target)
        # "if (!ghcb_gpa) { … Without a GHCB, just return right back to the guest */ return 1;"
        if not target:
            return Resumed(None)
        # "if (kvm_vcpu_map(vcpu, ghcb_gpa >> PAGE_SHIFT, &svm->sev_es.ghcb_map)) … return 1;"
        try:
            view = self.memory.host_map(target)
        except GuestMemoryError:
            return Resumed(None)
        self._map = view
        self._undefined = None
        usage = _USAGE.unpack_from(view, _OFFSET["ghcb_usage"])[0]
        code, info1, info2 = _EXIT_INFO.unpack_from(view, _OFFSET["sw_exit_code"])
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
        self._map = None
        return Unhandled(ExitCode.from_int(code))

    def _sync_from_ghcb(self, view: memoryview) -> int:
        """``sev_es_sync_from_ghcb``: "memset(vcpu->arch.regs, 0, …)", then each register
        "kvm_ghcb_get_<reg>_if_valid"; exit_info_1/2 copied unconditionally; the bitmap
        snapshotted (returned), then "memset(ghcb->save.valid_bitmap, 0, …)" in the mapped
        page."""
        self._valid = bits = int.from_bytes(view[_BITMAP], "little")
        self.regs = {
            name: unpack(view, offset)[0] if bits >> bit & 1 else 0
            for name, bit, offset, unpack in _COPIED
        }
        _, self.exit_info_1, self.exit_info_2 = _EXIT_INFO.unpack_from(
            view, _OFFSET["sw_exit_code"]
        )
        view[_BITMAP] = _ZERO_BITMAP
        return bits

    def _complete_certs(self, args: _RunArgs) -> RunResult:
        """``kvm_arch_vcpu_ioctl_run`` with ``complete_userspace_io`` pending."""
        abi = self.vm.abi
        immediate_exit = self._take_kvm_run(args.kvm_run)
        # "vcpu->arch.complete_userspace_io = NULL; r = cui(vcpu); if (r <= 0) goto out;"
        outcome = abi.complete(self, abi.exit_fields(self.kvm_run))
        if outcome is not None:
            return self._outcome(outcome)
        return self._resume_or_interrupt(immediate_exit)

    def _run_mapped(self, args: _RunArgs) -> RunResult:
        """KVM_RUN with the GHCB mapped and no callback pending: enter the guest."""
        if args.gpa is not None:
            raise HypervisorUsageError(
                "a GHCB is still mapped: this KVM_RUN enters the guest, it takes no gpa",
                rule="vcpu-state",
                spec=_SPEC_MODEL,
            )
        return self._resume_or_interrupt(self._take_kvm_run(args.kvm_run))

    def _resume_or_interrupt(self, immediate_exit: int) -> RunResult:
        # "if (!vcpu->wants_to_run) { r = -EINTR; goto out; }" — after the callback
        if immediate_exit:
            return Interrupted(self._page())
        return self._enter_guest()

    def _outcome(self, outcome: Outcome) -> RunResult:
        if outcome is None:
            return self._enter_guest()
        if isinstance(outcome, Exit):
            self.kvm_run = outcome.kvm_run
            kind = DoneExit if outcome.done else CertsExit
            return kind(outcome.kvm_run, outcome.gpa, outcome.npages)
        if isinstance(outcome, Fail):
            return RunFailed(outcome.errno, outcome.reason)
        raise HypervisorBug(f"unknown handler outcome {outcome!r}")  # pragma: no cover

    # -- the GHCB --------------------------------------------------------------------------
    def _ghcb_set(self, where: _GhcbWrite, *values: int) -> None:
        """``ghcb_set_<field>`` for each field of ``where``: "__set_bit(GHCB_BITMAP_IDX(field),
        …valid_bitmap); ghcb->save.field = value;" in the mapped page."""
        view = self._map
        if view is None:  # pragma: no cover - handlers run only with the GHCB mapped
            raise HypervisorBug("GHCB write without a mapped GHCB")
        for offset, value in zip(where.offsets, values, strict=True):
            _U64.pack_into(view, offset, value)
        for byte, mask in where.bits:
            view[byte] |= mask

    def _page(self) -> GhcbPage:
        if self._map is None:  # pragma: no cover - see _ghcb_set
            raise HypervisorBug("no mapped GHCB")
        return parse_page(self._map.tobytes())

    def _enter_guest(self) -> Resumed:
        """``svm_prepare_switch_to_guest`` → ``sev_es_unmap_ghcb`` → ``sev_es_sync_to_ghcb``:
        "ghcb_set_rax(ghcb, vcpu->arch.regs[VCPU_REGS_RAX]);" (and RBX, RCX, RDX), unmap."""
        regs = self.regs
        self._ghcb_set(_SYNC_TO_GHCB, *(regs[name] for name in _WRITTEN_BACK))
        page = self._page()
        self._map = None
        return Resumed(page, self._undefined)


class _Transition(NamedTuple):
    """What an input does in a state: the handler, and the state each result it can return
    leads to."""

    handler: Callable[[Vcpu, _RunArgs], RunResult]
    next: Mapping[type[RunResult], _State]


_ENTER_GUEST: Final = {Resumed: _State.IDLE, Interrupted: _State.MAPPED}

#: The vCPU's transitions; any (state, input) not here is caller misuse.
_TRANSITIONS: Final[dict[tuple[_State, _Input], _Transition]] = {
    (_State.IDLE, _Input.RUN): _Transition(
        Vcpu._run_idle,
        {
            Resumed: _State.IDLE,
            Interrupted: _State.IDLE,  # -EINTR before a VMGEXIT: nothing mapped
            CertsExit: _State.AWAIT_CERTS,
            RunFailed: _State.MAPPED,
            Unhandled: _State.IDLE,
        },
    ),
    (_State.AWAIT_CERTS, _Input.COMPLETE): _Transition(
        Vcpu._complete_certs,
        {**_ENTER_GUEST, RunFailed: _State.MAPPED, DoneExit: _State.MAPPED},
    ),
    (_State.MAPPED, _Input.RUN): _Transition(Vcpu._run_mapped, _ENTER_GUEST),
    (_State.MAPPED, _Input.COMPLETE): _Transition(Vcpu._run_mapped, _ENTER_GUEST),
}
