"""What KVM keeps per VM for the reference vCPU (:mod:`ghcb.hypervisor.vcpu`).

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``struct kvm_sev_info``: ``ghcb_version``,
``vmsa_features``, ``ap_jump_table``, ``guest_req_mutex``, ``guest_resp_buf``; ``sev_enc_bit``;
``GHCB_VERSION_MIN``, ``GHCB_HV_FT_SUPPORTED``; ``__sev_guest_init``: "if (snp_active)
sev->vmsa_features |= SVM_SEV_FEAT_SNP_ACTIVE;"), ``arch/x86/kvm/x86.c``
(``user_exit_on_hypercall``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ghcb.codes import KVM_HV_FEATURES
from ghcb.hypervisor.devices import Platform
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.events import SVM_SEV_FEAT_SNP_ACTIVE
from ghcb.hypervisor.kvm_abi import CertAbi, DisabledAbi, MergedAbi, V15Abi
from ghcb.hypervisor.msr_protocol import MsrSettings
from ghcb.page import GHCB_PROTOCOL_MAX, GHCB_PROTOCOL_MIN
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from ghcb.hypervisor.firmware import Firmware
    from ghcb.hypervisor.vcpu import Vcpu

__all__ = ["DEFAULT_CBIT", "Vm"]

#: The C-bit position SEV_INFO reports by default (``sev_enc_bit``, CPUID 0x8000001F
#: EBX[5:0]: 51 on EPYC Milan and Genoa).
DEFAULT_CBIT: Final = 51
_ALL64: Final = (1 << 64) - 1
_SPEC_MODEL: Final = "ghcb.hypervisor.vm (the VM's settings)"


def _is_u(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


@dataclass
class Vm:
    """What KVM keeps per VM: SNP or not, the certificate ABI (``None``: fetching off), the
    firmware, the guest-request lock and the firmware's response buffer; the GHCB protocol
    range and C-bit SEV_INFO reports (``sev->ghcb_version``, ``GHCB_VERSION_MIN``,
    ``sev_enc_bit``), the hypervisor features (``GHCB_HV_FT_SUPPORTED``), the VMSA features
    AP creation compares (``sev->vmsa_features``, None: ``SVM_SEV_FEAT_SNP_ACTIVE`` for an SNP
    VM, else 0), the AP jump table, whether userspace takes ``KVM_HC_MAP_GPA_RANGE`` exits
    (``user_exit_on_hypercall``), the device/CPUID/MSR models and the vCPUs by id."""

    firmware: Firmware
    snp: bool = True
    cert_abi: CertAbi | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    guest_resp_buf: bytearray = field(default_factory=lambda: bytearray(PAGE_SIZE))
    ghcb_version: int = GHCB_PROTOCOL_MAX
    ghcb_version_min: int = GHCB_PROTOCOL_MIN
    cbit: int = DEFAULT_CBIT
    hv_features: int = int(KVM_HV_FEATURES)
    vmsa_features: int | None = None
    map_gpa_range: bool = True
    platform: Platform = field(default_factory=Platform)
    ap_jump_table: int = 0
    vcpus: dict[int, Vcpu] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        problem = None
        if not callable(getattr(self.firmware, "guest_request", None)):
            problem = "firmware must have a guest_request(request) method"
        elif self.cert_abi is not None and not isinstance(self.cert_abi, _ABIS):
            problem = "cert_abi must be None, DisabledAbi(), MergedAbi() or V15Abi()"
        elif not isinstance(self.snp, bool) or not isinstance(self.map_gpa_range, bool):
            problem = "snp and map_gpa_range must be bools"
        elif not (hasattr(self.lock, "__enter__") and hasattr(self.lock, "__exit__")):
            problem = "lock must be a context manager (a threading.Lock)"
        elif not isinstance(self.guest_resp_buf, bytearray) or len(self.guest_resp_buf) != (
            PAGE_SIZE
        ):
            problem = "guest_resp_buf must be a bytearray of one page"
        elif not all(
            _is_u(v, limit)
            for v, limit in (
                (self.ghcb_version, 0xFFFF),  # GHCB_MSR_SEV_INFO: 16-bit fields
                (self.ghcb_version_min, 0xFFFF),
                (self.cbit, 0xFF),
                (self.hv_features, (1 << 52) - 1),  # GHCB_MSR_HV_FT_MASK GENMASK_ULL(51, 0)
                (self.ap_jump_table, _ALL64),
            )
        ) or not (self.vmsa_features is None or _is_u(self.vmsa_features, _ALL64)):
            problem = "version, cbit, hv_features, vmsa_features must fit their fields"
        elif not isinstance(self.platform, Platform):
            problem = "platform must be a Platform"
        if problem is not None:
            raise HypervisorUsageError(problem, rule="input-type", spec=_SPEC_MODEL)

    @property
    def abi(self) -> CertAbi:
        """The ABI object in force (:class:`~ghcb.hypervisor.kvm_abi.DisabledAbi` for None)."""
        return _DISABLED if self.cert_abi is None else self.cert_abi

    @property
    def sev_features(self) -> int:
        """``sev->vmsa_features`` ("if (snp_active) sev->vmsa_features |=
        SVM_SEV_FEAT_SNP_ACTIVE;")."""
        if self.vmsa_features is not None:
            return self.vmsa_features
        return SVM_SEV_FEAT_SNP_ACTIVE if self.snp else 0

    def msr_settings(self) -> MsrSettings:
        return MsrSettings(
            self.snp,
            self.ghcb_version,
            self.ghcb_version_min,
            self.cbit,
            self.hv_features,
            self.platform.cpuid,
        )


_DISABLED: Final = DisabledAbi()
_ABIS: Final = (DisabledAbi, MergedAbi, V15Abi)
