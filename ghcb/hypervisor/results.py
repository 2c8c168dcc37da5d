"""What a ``KVM_RUN`` of the reference vCPU returns (:mod:`ghcb.hypervisor.vcpu`), and the
``kvm_run`` bytes of the exits KVM fills in itself.

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``sev_handle_vmgexit``,
``sev_handle_vmgexit_msr_protocol``, ``sev_vcpu_deliver_sipi_vector``), ``arch/x86/kvm/x86.c``
(``kvm_emulate_ap_reset_hold``), ``include/uapi/linux/kvm.h`` (``struct kvm_run``,
``system_event``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ghcb._fast import flat_fields
from ghcb.codes import Errno, ExitCode, KvmExit
from ghcb.schemas.kvm import (
    KVM_RUN_EXIT_UNION_OFFSET,
    KVM_SYSTEM_EVENT_SEV_TERM,
    kvm_run_prefix,
    kvm_system_event,
)

if TYPE_CHECKING:
    from ghcb.page import GhcbPage

__all__ = [
    "ApResetHold",
    "CertsExit",
    "DoneExit",
    "Halted",
    "Interrupted",
    "MapGpaExit",
    "Released",
    "Resumed",
    "RunFailed",
    "RunResult",
    "Terminated",
    "Unhandled",
    "Via",
    "system_event_run",
]

#: How the guest asked: the GHCB MSR protocol, or a GHCB page.
Via = Literal["msr", "ghcb"]


@dataclass(frozen=True, slots=True)
class Resumed:
    """KVM entered the guest; ``page`` is the GHCB the guest reads (None when KVM resumed
    the guest without a GHCB: GPA 0 or unmapped, or an MSR protocol request).

    ``undefined`` names the C code's undefined behaviour on this path, if any, and the sound
    value the model chose instead (e.g. the seed's uninitialised ``fw_err``). ``msr`` is the
    GHCB MSR value the guest reads after an MSR protocol request (``control->ghcb_gpa`` as
    ``sev_handle_vmgexit_msr_protocol`` left it), None after a GHCB exchange.
    """

    page: GhcbPage | None
    undefined: str | None = None
    msr: int | None = None


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
class MapGpaExit:
    """``KVM_EXIT_HYPERCALL`` / ``KVM_HC_MAP_GPA_RANGE`` for a page-state change: userspace
    converts ``npages`` pages from ``gpa`` (``attributes``: encrypted/decrypted, page size),
    writes ``hypercall.ret`` into ``kvm_run`` and passes it to ``complete``."""

    kvm_run: bytes
    gpa: int
    npages: int
    attributes: int


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
class Terminated:
    """``KVM_EXIT_SYSTEM_EVENT`` with ``KVM_SYSTEM_EVENT_SEV_TERM``: the guest asked to be
    terminated (or made an SNP-only MSR request as a non-SNP guest: ``out_terminate``).

    ``kvm_run`` holds ``exit_reason`` 24, ``system_event.type`` 6, ``ndata`` 1 and
    ``data[0]`` = ``data``: the GHCB MSR value (MSR protocol) or the GHCB GPA (a
    ``TERM_REQUEST`` event). ``reason_set`` / ``reason_code`` are the guest's reason as the
    request encodes it (MSR: [15:12] / [23:16]; GHCB: EXITINFO1 [3:0] / [11:4]); None when the
    exit is not a termination request. A later KVM_RUN enters the guest again.
    """

    kvm_run: bytes
    data: int
    reason_set: int | None
    reason_code: int | None
    via: Via


@dataclass(frozen=True, slots=True)
class ApResetHold:
    """The vCPU is in AP reset hold (``kvm_emulate_ap_reset_hold``: mp_state
    ``KVM_MP_STATE_AP_RESET_HOLD``) until a SIPI (:meth:`Vcpu.sipi`); a KVM_RUN meanwhile
    blocks, which the sans-IO model answers with this result again."""

    via: Via


@dataclass(frozen=True, slots=True)
class Released:
    """A SIPI released the vCPU from AP reset hold (``sev_vcpu_deliver_sipi_vector``).

    ``first``: it was the vCPU's first SIPI ever ("First SIPI: Use the values as initially set
    by the VMM"): nothing was written, the guest reads the preset 0 and holds again. Otherwise
    the result is 1: SW_EXITINFO2 (GHCB) or GHCBData (MSR). The next KVM_RUN enters the guest.
    """

    first: bool


@dataclass(frozen=True, slots=True)
class Halted:
    """KVM_RUN on a vCPU that is not runnable (an AP waiting for its VMSA, or after AP
    destroy): KVM blocks (``vcpu_block``); the sans-IO model returns at once."""


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A valid VMGEXIT KVM itself has no handler for (``svm_invoke_exit_handler`` →
    ``svm_handle_invalid_exit``: ``KVM_EXIT_INTERNAL_ERROR``), or one this model does not
    implement. KVM's sync and EXITINFO1/2 presets are in guest memory already."""

    exit_code: ExitCode | int
    msr: int | None = None


RunResult = (
    Resumed
    | CertsExit
    | MapGpaExit
    | Interrupted
    | RunFailed
    | Terminated
    | ApResetHold
    | Released
    | Halted
    | Unhandled
)

# -- kvm_run bytes of the system event --------------------------------------------------------
_PREFIX: Final = {f.name: f for f in flat_fields(kvm_run_prefix)}
_EVENT: Final = {f.name: f for f in flat_fields(kvm_system_event, KVM_RUN_EXIT_UNION_OFFSET)}
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


def system_event_run(base: bytes, data0: int) -> bytes:
    """``base`` (the ``kvm_run`` bytes as they stand) with KVM's writes for a termination:
    "vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT; ...system_event.type =
    KVM_SYSTEM_EVENT_SEV_TERM; ...system_event.ndata = 1; ...system_event.data[0] = ..."."""
    out = bytearray(base)
    _U32.pack_into(out, _PREFIX["exit_reason"].offset, KvmExit.SYSTEM_EVENT)
    _U32.pack_into(out, _EVENT["type"].offset, KVM_SYSTEM_EVENT_SEV_TERM)
    _U32.pack_into(out, _EVENT["ndata"].offset, 1)
    _U64.pack_into(out, _EVENT["data_0"].offset, data0)
    return bytes(out)
