"""KVM's answer to a GHCB page as :func:`ghcb.check.expected_response` reports it: the
:class:`Stage` it comes from, the :class:`KvmResponse` (SW_EXITINFO1/2), and the cases of
``sev_handle_vmgexit``'s ``switch (control->exit_code)`` (Linux ``arch/x86/kvm/svm/sev.c``) that
the page alone decides, after the validator and the scratch step (:mod:`ghcb.check` lists every
case and says which depend on the host).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final, NamedTuple

from ghcb.codes import KVM_HV_FEATURES, ApJumpTableOp, ExitCode, GhcbErr, HvResp
from ghcb.hypervisor.psc_answer import kvm_psc_answer_in_page
from ghcb.page import GhcbPage, build_page

if TYPE_CHECKING:
    from ghcb.hypervisor.rules import Validator
    from ghcb.hypervisor.scratch import ScratchArea

__all__ = ["PRESET", "KvmResponse", "Stage", "psc_response", "switch_response"]

_MALFORMED: Final = int(HvResp.MALFORMED_INPUT)


class Stage(enum.Enum):
    """Where KVM's answer to a page comes from."""

    ACCEPTED = "accepted"
    """The validator and the handler's page checks accept it and the rest of the answer
    depends on the host (module docstring): EXITINFO1/2 = 0/0 as preset is reported."""
    ANSWERED = "answered"
    """The handler answers from the page alone and resumes the guest: EXITINFO1/2 as written
    (HV_FEATURES 0/3, a PSC's 0/``VMGEXIT_PSC_ERROR_*``, 0/0 for a no-op)."""
    EXITS = "exits-to-userspace"
    """KVM_RUN returns to userspace with the preset 0/0 in the GHCB (TERM_REQUEST's system
    event, a PSC's first ``KVM_HC_MAP_GPA_RANGE`` exit)."""
    VALIDATOR = "validator"
    """``sev_es_validate_vmgexit`` refuses it: 2 / the GHCB_ERR_* reason."""
    HANDLER = "handler"
    """The exit handler refuses it (scratch area, MMIO length, AP_JUMP_TABLE request): 2 / the
    GHCB_ERR_* reason."""
    RUN_FAILS = "run-fails"
    """The handler returns -EINVAL: KVM_RUN fails; the GHCB keeps the preset 0/0."""

    @property
    def accepts(self) -> bool:
        """KVM's validator and the handler's page checks accept the page (the handler runs)."""
        return self in _ACCEPTING


_ACCEPTING: Final = frozenset({Stage.ACCEPTED, Stage.ANSWERED, Stage.EXITS})


class KvmResponse(NamedTuple):
    """What KVM writes to SW_EXITINFO1 / SW_EXITINFO2 for a page, and at which stage."""

    exit_info_1: int
    exit_info_2: int
    stage: Stage

    def to_json(self) -> dict[str, int]:
        """``{"exit_info_1": int, "exit_info_2": int}`` (the CLI's ``expected_response``)."""
        return {"exit_info_1": self.exit_info_1, "exit_info_2": self.exit_info_2}


_ANS: Final = Stage.ANSWERED
#: The answer KVM presets (``svm_vmgexit_success(svm, 0)``) when the host decides the rest.
PRESET: Final = KvmResponse(0, 0, Stage.ACCEPTED)
#: Exits whose handler writes no exit info and resumes, whatever the host: NMI_COMPLETE ("ret
#: = 1;"), DR7 (dr_interception: "if (sev_es_guest(vcpu->kvm)) return 1;"), INVD / WBINVD
#: (kvm_emulate_invd / kvm_emulate_wbinvd), MONITOR / MWAIT (kvm_emulate_monitor_mwait: a NOP
#: or a #UD queued through the VMCB), RDTSCP ("[SVM_EXIT_RDTSCP] = kvm_handle_invalid_op").
_NO_INFO: Final = frozenset(
    int(c)
    for c in (
        ExitCode.NMI_COMPLETE,
        ExitCode.READ_DR7,
        ExitCode.WRITE_DR7,
        ExitCode.INVD,
        ExitCode.WBINVD,
        ExitCode.MONITOR,
        ExitCode.MWAIT,
        ExitCode.RDTSCP,
    )
)


def switch_response(page: GhcbPage) -> KvmResponse:
    """``sev_handle_vmgexit``'s ``switch (control->exit_code)`` for the exits that use no
    scratch area: the answers the page decides; the preset 0/0 (``accepted``) otherwise."""
    code, info1 = page.sw_exit_code, page.sw_exit_info_1
    if code == ExitCode.HV_FEATURES:
        # "svm_vmgexit_success(svm, GHCB_HV_FT_SUPPORTED); ret = 1;"
        return KvmResponse(0, int(KVM_HV_FEATURES), _ANS)
    if code == ExitCode.AP_JUMP_TABLE:
        if info1 == ApJumpTableOp.SET:  # "case 0: sev->ap_jump_table = control->exit_info_2;"
            return KvmResponse(0, 0, _ANS)
        if info1 == ApJumpTableOp.GET:  # "svm_vmgexit_success(svm, sev->ap_jump_table);"
            return PRESET
        # "default: ... svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_INPUT);"
        return KvmResponse(_MALFORMED, int(GhcbErr.INVALID_INPUT), Stage.HANDLER)
    if code == ExitCode.UNSUPPORTED_EVENT:
        return KvmResponse(0, 0, Stage.RUN_FAILS)  # "ret = -EINVAL;"
    if code == ExitCode.TERM_REQUEST:
        # "vcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT; ... SEV_TERM" (ret stays 0)
        return KvmResponse(0, 0, Stage.EXITS)
    if code in _NO_INFO:
        return KvmResponse(0, 0, _ANS)
    return PRESET


def psc_response(page: GhcbPage, area: ScratchArea, validator: Validator) -> KvmResponse:
    """``snp_begin_psc`` over a descriptor in the GHCB's shared buffer: the first
    ``KVM_HC_MAP_GPA_RANGE`` exit, or the final SW_EXITINFO2 when KVM needs none."""
    if area.offset is None:  # outside the GHCB: the descriptor is in guest memory
        return PRESET
    answer = kvm_psc_answer_in_page(build_page(page), area.offset, validator=validator)
    if answer.exits:
        return KvmResponse(0, 0, Stage.EXITS)
    if answer.undefined is not None:  # the v15 tree read host memory past its buffer
        return PRESET
    # snp_complete_psc: "svm_vmgexit_no_action(svm, psc_ret);" (EXITINFO1 0)
    return KvmResponse(0, answer.exit_info_2, _ANS)
