"""KVM's GHCB MSR protocol: ``sev_handle_vmgexit_msr_protocol`` as a pure function.

Source: Linux ``arch/x86/kvm/svm/sev.c`` (merged tree, ghcb-facts.md §2): a VMGEXIT whose
GHCB MSR value has bits 11:0 set ("if (ghcb_gpa & GHCB_MSR_INFO_MASK) return
sev_handle_vmgexit_msr_protocol(svm);"). Each request code's answer, quoted beside its rule:

* ``SEV_INFO_REQ`` → "set_ghcb_msr(svm, GHCB_MSR_SEV_INFO((__u64)sev->ghcb_version,
  GHCB_VERSION_MIN, sev_enc_bit));" — the whole value replaced.
* ``CPUID_REQ`` → RAX = function, RCX = 0, the CPUID intercept; the register picked by bits
  31:30 ("if (cpuid_reg == 0) ... RAX ... == 1 RBX ... == 2 RCX ... else RDX") goes to bits 63:32
  and the code to 0x005; bits 31:12 stay as the guest wrote them (``set_ghcb_msr_bits`` only
  rewrites the masked fields). The intercept's error path ("if (!ret) { /* Error, keep GHCB MSR
  value as-is */") needs ``kvm_emulate_cpuid`` to return 0, which only a single-step guest
  debug exit does — refused for a protected guest — so every request is answered.
* ``AP_RESET_HOLD_REQ`` → "kvm_emulate_ap_reset_hold", then the result (bits 63:12) preset to
  0 and the code 0x007: the vCPU holds until a SIPI sets the result to 1.
* ``HV_FT_REQ`` → the VM's feature bitmap in bits 63:12 (KVM: ``GHCB_HV_FT_SUPPORTED``), code
  0x081.
* ``PREF_GPA_REQ`` (SNP only, else terminate) → ``GHCB_MSR_PREF_GPA_NONE``, code 0x011.
* ``REG_GPA_REQ`` (SNP only, else terminate) → "svm->sev_es.ghcb_registered_gpa =
  gfn_to_gpa(gfn);" and the GFN echoed, code 0x013 (bits 63:12 are the 52-bit GFN: no
  reserved bits).
* ``PSC_REQ`` (SNP only, else terminate) → ``snp_begin_psc_msr``
  (:mod:`ghcb.hypervisor.psc`).
* ``TERM_REQ`` → "goto out_terminate" (reason set [15:12], code [23:16]).
* anything else (``VMPL_REQ``, a response code, an unknown code) → "/* Error, keep GHCB MSR
  value as-is */": the guest resumes reading its own value.

``out_terminate`` is ``KVM_EXIT_SYSTEM_EVENT`` / ``KVM_SYSTEM_EVENT_SEV_TERM`` with
``data[0]`` = the MSR value (:func:`~ghcb.hypervisor.results.system_event_run`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

from ghcb.codes import MsrCode
from ghcb.msr import (
    GHCB_MSR_INFO_MASK,
    GHCB_MSR_PREF_GPA_NONE,
    ApResetHoldResp,
    CpuidReq,
    HvFeaturesResp,
    PrefGpaResp,
    RegGpaReq,
    RegGpaResp,
    SevInfoResp,
    TermReq,
    decode_msr,
    msr_layout,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from ghcb.hypervisor.devices import CpuidModel

__all__ = [
    "MsrHold",
    "MsrPscRequest",
    "MsrReply",
    "MsrSettings",
    "MsrTerminate",
    "msr_protocol",
]

SPEC_MSR_PROTOCOL: Final = "Linux arch/x86/kvm/svm/sev.c sev_handle_vmgexit_msr_protocol"
_CPUID_VALUE_SHIFT: Final = next(
    f.shift for f in msr_layout(MsrCode.CPUID_RESP) if f.name == "value"
)
_CPUID_KEEP: Final = ((1 << _CPUID_VALUE_SHIFT) - 1) & ~GHCB_MSR_INFO_MASK  # bits 31:12 kept
_SNP_ONLY: Final = frozenset({MsrCode.PREF_GPA_REQ, MsrCode.REG_GPA_REQ, MsrCode.PSC_REQ})


class MsrSettings(NamedTuple):
    """What the MSR protocol reads of the VM (:class:`~ghcb.hypervisor.vcpu.Vm`)."""

    snp: bool
    ghcb_version: int  # sev->ghcb_version: SEV_INFO's maximum
    ghcb_version_min: int  # GHCB_VERSION_MIN
    cbit: int  # sev_enc_bit
    hv_features: int  # GHCB_HV_FT_SUPPORTED
    cpuid: CpuidModel


class MsrReply(NamedTuple):
    """Resume the guest with the GHCB MSR = ``value``; ``register`` is the GHCB GPA a
    REG_GPA request registered, if any."""

    value: int
    register: int | None = None


class MsrTerminate(NamedTuple):
    """``out_terminate``: the reason when the request was ``TERM_REQ``, else None (an SNP-only
    request from a non-SNP guest)."""

    reason_set: int | None = None
    reason_code: int | None = None


class MsrHold(NamedTuple):
    """AP reset hold through the MSR protocol; ``value`` is the MSR preset (result 0)."""

    value: int


class MsrPscRequest(NamedTuple):
    """A page-state change request for the PSC engine (``snp_begin_psc_msr``)."""

    value: int


MsrDecision = MsrReply | MsrTerminate | MsrHold | MsrPscRequest


def _cpuid(value: int, request: CpuidReq, cpuid: CpuidModel) -> MsrReply:
    # "vcpu->arch.regs[VCPU_REGS_RAX] = cpuid_fn; vcpu->arch.regs[VCPU_REGS_RCX] = 0;"
    regs = cpuid.cpuid(request.function, 0)
    # "if (cpuid_reg == 0) ... RAX; else if (cpuid_reg == 1) RBX; == 2 RCX; else RDX"
    chosen = regs[request.register]
    # set_ghcb_msr_bits(value, GHCB_MSR_CPUID_VALUE_MASK, ..._POS) and (CPUID_RESP, INFO)
    kept = value & _CPUID_KEEP
    return MsrReply((chosen & 0xFFFFFFFF) << _CPUID_VALUE_SHIFT | kept | MsrCode.CPUID_RESP)


def msr_protocol(value: int, vm: MsrSettings) -> MsrDecision:
    """KVM's answer to the GHCB MSR value ``value`` (bits 11:0 non-zero)."""
    info = value & GHCB_MSR_INFO_MASK
    if info in _SNP_ONLY and not vm.snp:
        # "if (!is_sev_snp_guest(vcpu)) goto out_terminate;"
        return MsrTerminate()
    message = decode_msr(value)
    if info == MsrCode.SEV_INFO_REQ:
        return MsrReply(
            SevInfoResp(
                max_version=vm.ghcb_version,
                min_version=vm.ghcb_version_min,
                cbit_position=vm.cbit,
            ).encode()
        )
    if isinstance(message, CpuidReq):
        return _cpuid(value, message, vm.cpuid)
    if info == MsrCode.AP_RESET_HOLD_REQ:
        # "set_ghcb_msr_bits(svm, 0, GHCB_MSR_AP_RESET_HOLD_RESULT_MASK, ...)" + RESP code
        return MsrHold(ApResetHoldResp(result=0).encode())
    if info == MsrCode.HV_FT_REQ:
        # "set_ghcb_msr_bits(svm, GHCB_HV_FT_SUPPORTED, GHCB_MSR_HV_FT_MASK, ...)"
        return MsrReply(HvFeaturesResp(features=vm.hv_features).encode())
    if info == MsrCode.PREF_GPA_REQ:
        return MsrReply(PrefGpaResp(gfn=GHCB_MSR_PREF_GPA_NONE).encode())
    if isinstance(message, RegGpaReq):
        # "svm->sev_es.ghcb_registered_gpa = gfn_to_gpa(gfn);" and the GFN echoed
        return MsrReply(RegGpaResp(gfn=message.gfn).encode(), register=message.gfn * PAGE_SIZE)
    if info == MsrCode.PSC_REQ:
        return MsrPscRequest(value)
    if isinstance(message, TermReq):
        # "reason_set = get_ghcb_msr_bits(svm, GHCB_MSR_TERM_REASON_SET_MASK, ...)"
        return MsrTerminate(message.reason_set, message.reason_code)
    # "default: /* Error, keep GHCB MSR value as-is */"
    return MsrReply(value)
