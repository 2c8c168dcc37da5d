"""Numeric codes of the GHCB protocol and the SEV firmware, as ``IntEnum``s.

Sources (each class cites its own):

* AMD GHCB specification (AMD pub. 56421) "GHCB MSR protocol", §4.1 (SW_EXITINFO1/2
  responses), §4.1.8 (guest requests), table "Non-Automatic-Exit (NAE) events".
* Linux ``arch/x86/include/uapi/asm/svm.h`` (SVM_EXIT_*, SVM_VMGEXIT_*),
  ``arch/x86/include/asm/sev-common.h`` (GHCB_MSR_*, GHCB_ERR_*, termination reasons,
  feature bits), ``include/uapi/linux/psp-sev.h`` (SEV_RET_*), ``arch/x86/include/asm/sev.h``
  (``enum msg_type``), ``include/uapi/linux/sev-guest.h`` (SNP_GUEST_VMM_ERR_*).

Every class has a tolerant ``from_int`` that returns the member for a known value and the plain
``int`` for an unknown one, so captured data with new codes still round-trips. The same values
are transcribed independently in ``spec/tables/*.toml``; ``tests/test_spec_tables.py`` checks
them against these classes row by row.
"""

from __future__ import annotations

import enum
from typing import Self

from ghcb._fast import check_int
from ghcb.errors import InputTypeError

__all__ = [
    "KVM_HV_FEATURES",
    "PROPOSED_EXIT_CODES",
    "SAVIC_SELF_GPA",
    "ApCreationOp",
    "ApJumpTableOp",
    "Errno",
    "EventType",
    "ExitCode",
    "FirmwareStatus",
    "GenTermReason",
    "GhcbErr",
    "HvFeature",
    "HvResp",
    "KvmExit",
    "LinuxTermReason",
    "MsgType",
    "MsrCode",
    "PscErr",
    "PscOp",
    "SavicOp",
    "TermReasonSet",
    "VmmError",
]


def _not_int(cls: type, value: object) -> InputTypeError:
    return InputTypeError(
        f"{cls.__name__}.from_int takes an int, not {type(value).__name__}",
        rule="input-type",
        spec="ghcb API",
    )


class _Code(enum.IntEnum):
    """An ``IntEnum`` whose ``from_int`` keeps unknown values as plain ``int``."""

    @classmethod
    def from_int(cls, value: int) -> Self | int:
        """The member for ``value``, or ``value`` itself when no member has it.

        Raises:
            InputTypeError: ``value`` is not an int (bools are refused too).
        """
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise _not_int(cls, value)
        try:
            return cls(value)
        except ValueError:
            return int(value)


class ExitCode(_Code):
    """SW_EXITCODE values: SVM exit codes used as #VC/NAE events, and VMGEXIT events.

    Linux ``uapi/asm/svm.h`` names the standard codes ``SVM_EXIT_<NAME>`` and the software
    events ``SVM_VMGEXIT_<NAME>``; member names drop the prefix (the two guest requests are
    named ``SNP_GUEST_REQUEST`` / ``SNP_EXT_GUEST_REQUEST`` after the GHCB spec). Values in
    :data:`PROPOSED_EXIT_CODES` come from patch series that are not in mainline Linux.
    """

    # -- SVM_EXIT_*: AMD APM vol. 2 table C-1, Linux uapi/asm/svm.h ------------------------
    READ_CR0 = 0x000
    READ_CR2 = 0x002
    READ_CR3 = 0x003
    READ_CR4 = 0x004
    READ_CR8 = 0x008
    WRITE_CR0 = 0x010
    WRITE_CR2 = 0x012
    WRITE_CR3 = 0x013
    WRITE_CR4 = 0x014
    WRITE_CR8 = 0x018
    READ_DR0 = 0x020
    READ_DR1 = 0x021
    READ_DR2 = 0x022
    READ_DR3 = 0x023
    READ_DR4 = 0x024
    READ_DR5 = 0x025
    READ_DR6 = 0x026
    READ_DR7 = 0x027
    WRITE_DR0 = 0x030
    WRITE_DR1 = 0x031
    WRITE_DR2 = 0x032
    WRITE_DR3 = 0x033
    WRITE_DR4 = 0x034
    WRITE_DR5 = 0x035
    WRITE_DR6 = 0x036
    WRITE_DR7 = 0x037
    EXCP_BASE = 0x040  # exception intercepts are EXCP_BASE + vector (0x040..0x05F)
    INTR = 0x060
    NMI = 0x061
    SMI = 0x062
    INIT = 0x063
    VINTR = 0x064
    CR0_SEL_WRITE = 0x065
    IDTR_READ = 0x066
    GDTR_READ = 0x067
    LDTR_READ = 0x068
    TR_READ = 0x069
    IDTR_WRITE = 0x06A
    GDTR_WRITE = 0x06B
    LDTR_WRITE = 0x06C
    TR_WRITE = 0x06D
    RDTSC = 0x06E
    RDPMC = 0x06F
    PUSHF = 0x070
    POPF = 0x071
    CPUID = 0x072
    RSM = 0x073
    IRET = 0x074
    SWINT = 0x075
    INVD = 0x076
    PAUSE = 0x077
    HLT = 0x078
    INVLPG = 0x079
    INVLPGA = 0x07A
    IOIO = 0x07B
    MSR = 0x07C
    TASK_SWITCH = 0x07D
    FERR_FREEZE = 0x07E
    SHUTDOWN = 0x07F
    VMRUN = 0x080
    VMMCALL = 0x081
    VMLOAD = 0x082
    VMSAVE = 0x083
    STGI = 0x084
    CLGI = 0x085
    SKINIT = 0x086
    RDTSCP = 0x087
    ICEBP = 0x088
    WBINVD = 0x089
    MONITOR = 0x08A
    MWAIT = 0x08B
    MWAIT_COND = 0x08C
    XSETBV = 0x08D
    RDPRU = 0x08E
    EFER_WRITE_TRAP = 0x08F
    CR0_WRITE_TRAP = 0x090
    CR1_WRITE_TRAP = 0x091
    CR2_WRITE_TRAP = 0x092
    CR3_WRITE_TRAP = 0x093
    CR4_WRITE_TRAP = 0x094
    CR5_WRITE_TRAP = 0x095
    CR6_WRITE_TRAP = 0x096
    CR7_WRITE_TRAP = 0x097
    CR8_WRITE_TRAP = 0x098
    CR9_WRITE_TRAP = 0x099
    CR10_WRITE_TRAP = 0x09A
    CR11_WRITE_TRAP = 0x09B
    CR12_WRITE_TRAP = 0x09C
    CR13_WRITE_TRAP = 0x09D
    CR14_WRITE_TRAP = 0x09E
    CR15_WRITE_TRAP = 0x09F
    INVPCID = 0x0A2
    BUS_LOCK = 0x0A5
    IDLE_HLT = 0x0A6
    NPF = 0x400
    AVIC_INCOMPLETE_IPI = 0x401
    AVIC_UNACCELERATED_ACCESS = 0x402
    VMGEXIT = 0x403  # the VMEXIT code the hypervisor sees for a VMGEXIT
    # -- SVM_VMGEXIT_*: GHCB spec NAE event table, Linux uapi/asm/svm.h ------------------
    MMIO_READ = 0x80000001
    MMIO_WRITE = 0x80000002
    NMI_COMPLETE = 0x80000003
    AP_HLT_LOOP = 0x80000004
    AP_JUMP_TABLE = 0x80000005
    PSC = 0x80000010
    SNP_GUEST_REQUEST = 0x80000011
    SNP_EXT_GUEST_REQUEST = 0x80000012
    AP_CREATION = 0x80000013
    HVDB_PAGE = 0x80000014  # proposed (HV doorbell page series), not mainline
    HV_IPI = 0x80000015  # proposed, not mainline
    GET_APIC_IDS = 0x80000017  # proposed (APIC ID list series), not mainline
    SNP_RUN_VMPL = 0x80000018
    SAVIC = 0x8000001A  # Secure AVIC
    SEV_TIO_GUEST_REQUEST = 0x80000020  # proposed (SEV-TIO series), not mainline
    SEV_TIO_OP = 0x80000021  # proposed (SEV-TIO series), not mainline
    HV_FEATURES = 0x8000FFFD
    TERM_REQUEST = 0x8000FFFE
    UNSUPPORTED_EVENT = 0x8000FFFF
    SW = 0xF0000000  # SVM_EXIT_SW: reserved for hypervisor/software use
    ERR = 0xFFFFFFFFFFFFFFFF  # SVM_EXIT_ERR (-1 as the u64 exit code)


#: VMGEXIT codes that exist only in unmerged patch series (ghcb-facts.md §3.1).
PROPOSED_EXIT_CODES: frozenset[ExitCode] = frozenset(
    {
        ExitCode.HVDB_PAGE,
        ExitCode.HV_IPI,
        ExitCode.GET_APIC_IDS,
        ExitCode.SEV_TIO_GUEST_REQUEST,
        ExitCode.SEV_TIO_OP,
    }
)


class MsrCode(_Code):
    """GHCBInfo, bits [11:0] of the GHCB MSR (GHCB spec "GHCB MSR protocol", Linux sev-common.h)."""

    SEV_INFO_RESP = 0x001
    SEV_INFO_REQ = 0x002
    CPUID_REQ = 0x004
    CPUID_RESP = 0x005
    AP_RESET_HOLD_REQ = 0x006
    AP_RESET_HOLD_RESP = 0x007
    PREF_GPA_REQ = 0x010
    PREF_GPA_RESP = 0x011
    REG_GPA_REQ = 0x012
    REG_GPA_RESP = 0x013
    PSC_REQ = 0x014
    PSC_RESP = 0x015
    VMPL_REQ = 0x016
    VMPL_RESP = 0x017
    HV_FT_REQ = 0x080
    HV_FT_RESP = 0x081
    TERM_REQ = 0x100


class HvFeature(enum.IntFlag, boundary=enum.KEEP):
    """Hypervisor feature bits (GHCB_HV_FT_*, sev-common.h; GHCB spec HV features).

    ``SNP_RINJ`` is defined by Linux patches as bit 2 OR'd with ``SNP_AP_CREATION``; the
    member here is the single bit 2. Unknown bits are kept (``boundary=KEEP``).
    """

    SNP = 1 << 0
    SNP_AP_CREATION = 1 << 1
    SNP_RINJ = 1 << 2  # proposed (restricted injection), not mainline
    APIC_ID_LIST = 1 << 4  # proposed, not mainline
    SNP_MULTI_VMPL = 1 << 5
    SNP_SEV_TIO = 1 << 7  # proposed (SEV-TIO), not mainline

    @classmethod
    def from_int(cls, value: int) -> HvFeature:
        """The flag set for ``value`` (unknown bits kept).

        Raises:
            InputTypeError: ``value`` is not an int.
            FieldValueError: ``value`` is negative or wider than 64 bits.
        """
        return cls(check_int(value, (1 << 64) - 1, cls.__name__, "GHCB spec HV features"))


class TermReasonSet(_Code):
    """Termination reason sets (sev-common.h SEV_TERM_SET_*)."""

    GEN = 0
    LINUX = 1


class GenTermReason(_Code):
    """Reason codes of the general set 0 (sev-common.h GHCB_SEV_ES_* / GHCB_SNP_*)."""

    GEN_REQ = 0
    PROT_UNSUPPORTED = 1
    SNP_UNSUPPORTED = 2


class LinuxTermReason(_Code):
    """Reason codes of the Linux set 1 (sev-common.h GHCB_TERM_*)."""

    REGISTER = 0
    PSC = 1
    PVALIDATE = 2
    NOT_VMPL0 = 3
    CPUID = 4
    CPUID_HV = 5
    SECRETS_PAGE = 6
    NO_SVSM = 7
    SVSM_VMPL0 = 8
    SVSM_CAA = 9
    SECURE_TSC = 10
    SVSM_CA_REMAP_FAIL = 11
    SAVIC_FAIL = 12  # Secure AVIC series


class HvResp(_Code):
    """SW_EXITINFO1[31:0] on return from the hypervisor (GHCB spec §4.1, GHCB_HV_RESP_*)."""

    NO_ACTION = 0
    ISSUE_EXCEPTION = 1
    MALFORMED_INPUT = 2


class GhcbErr(_Code):
    """SW_EXITINFO2 reason when SW_EXITINFO1[31:0] = 2 (sev-common.h GHCB_ERR_*)."""

    NOT_REGISTERED = 1
    INVALID_USAGE = 2
    INVALID_SCRATCH_AREA = 3
    MISSING_INPUT = 4
    INVALID_INPUT = 5
    INVALID_EVENT = 6


class VmmError(_Code):
    """The VMM error, SW_EXITINFO2[63:32] of a guest request (SNP_GUEST_ERR packing).

    ``INVALID_LEN`` and ``BUSY`` are ``SNP_GUEST_VMM_ERR_*`` in uapi sev-guest.h. ``GENERIC``
    is the merged KVM value (a KVM-private ``~0U`` in arch/x86/kvm/svm/sev.c, emitted for a
    userspace ``EIO``); ``GENERIC_V15`` is the ``BIT(31)`` of the v15 seed patch and other
    2024 proposals, dropped before merge.
    """

    NONE = 0  # no VMM error: the low half carries the firmware status
    INVALID_LEN = 1
    BUSY = 2
    GENERIC_V15 = 0x80000000
    GENERIC = 0xFFFFFFFF


class FirmwareStatus(_Code):
    """SEV firmware status codes (``enum sev_ret_code``, uapi psp-sev.h after the 2025 fix).

    ``INAVLID_CONFIG`` (the header's typo) is an alias of ``INVALID_CONFIG``. ``NO_FW_CALL``
    is Linux's ``SEV_RET_NO_FW_CALL`` (-1, "firmware not called"), as it reads in the u32
    ``fw_error`` half of EXITINFO2.
    """

    SUCCESS = 0x00
    INVALID_PLATFORM_STATE = 0x01
    INVALID_GUEST_STATE = 0x02
    INVALID_CONFIG = 0x03
    INAVLID_CONFIG = 0x03
    INVALID_LEN = 0x04
    ALREADY_OWNED = 0x05
    INVALID_CERTIFICATE = 0x06
    POLICY_FAILURE = 0x07
    INACTIVE = 0x08
    INVALID_ADDRESS = 0x09
    BAD_SIGNATURE = 0x0A
    BAD_MEASUREMENT = 0x0B
    ASID_OWNED = 0x0C
    INVALID_ASID = 0x0D
    WBINVD_REQUIRED = 0x0E
    DFFLUSH_REQUIRED = 0x0F
    INVALID_GUEST = 0x10
    INVALID_COMMAND = 0x11
    ACTIVE = 0x12
    HWSEV_RET_PLATFORM = 0x13
    HWSEV_RET_UNSAFE = 0x14
    UNSUPPORTED = 0x15
    INVALID_PARAM = 0x16
    RESOURCE_LIMIT = 0x17
    SECURE_DATA_INVALID = 0x18
    INVALID_PAGE_SIZE = 0x19
    INVALID_PAGE_STATE = 0x1A
    INVALID_MDATA_ENTRY = 0x1B
    INVALID_PAGE_OWNER = 0x1C
    AEAD_OFLOW = 0x1D
    # 0x1E is not defined in Linux
    EXIT_RING_BUFFER = 0x1F
    RMP_INIT_REQUIRED = 0x20
    BAD_SVN = 0x21
    BAD_VERSION = 0x22
    SHUTDOWN_REQUIRED = 0x23
    UPDATE_FAILED = 0x24
    RESTORE_REQUIRED = 0x25
    RMP_INITIALIZATION_FAILED = 0x26
    INVALID_KEY = 0x27
    # numbered in psp-sev.h by "psp-sev: Assign numbers to all status codes and add new"
    # (2025-11); 0x29-0x2F and 0x34 are not defined
    SHUTDOWN_INCOMPLETE = 0x28
    INCORRECT_BUFFER_LENGTH = 0x30
    EXPAND_BUFFER_LENGTH_REQUEST = 0x31
    SPDM_REQUEST = 0x32
    SPDM_ERROR = 0x33
    SEV_STATUS_ERR_IN_DEV_CONN = 0x35
    SEV_STATUS_INVALID_DEV_CTX = 0x36
    SEV_STATUS_INVALID_TDI_CTX = 0x37
    SEV_STATUS_INVALID_TDI = 0x38
    SEV_STATUS_RECLAIM_REQUIRED = 0x39
    IN_USE = 0x3A
    SEV_STATUS_INVALID_DEV_STATE = 0x3B
    SEV_STATUS_INVALID_TDI_STATE = 0x3C
    SEV_STATUS_DEV_CERT_CHANGED = 0x3D
    SEV_STATUS_RESYNC_REQ = 0x3E
    SEV_STATUS_RESPONSE_TOO_LARGE = 0x3F
    NO_FW_CALL = 0xFFFFFFFF


class MsgType(_Code):
    """SNP guest message types (``enum msg_type``, Linux asm/sev.h; SNP ABI guest messages)."""

    INVALID = 0
    CPUID_REQ = 1
    CPUID_RSP = 2
    KEY_REQ = 3
    KEY_RSP = 4
    REPORT_REQ = 5
    REPORT_RSP = 6
    EXPORT_REQ = 7
    EXPORT_RSP = 8
    IMPORT_REQ = 9
    IMPORT_RSP = 10
    ABSORB_REQ = 11
    ABSORB_RSP = 12
    VMRK_REQ = 13
    VMRK_RSP = 14
    TSC_INFO_REQ = 17
    TSC_INFO_RSP = 18


class PscOp(_Code):
    """Page State Change operations (GHCB spec §4.1.6; Linux SNP_PAGE_STATE_*).

    Linux defines only PRIVATE and SHARED; PSMASH and UNSMASH are GHCB-spec operations that
    KVM completes without action.
    """

    PRIVATE = 1
    SHARED = 2
    PSMASH = 3
    UNSMASH = 4


class PscErr(_Code):
    """SW_EXITINFO2 of a Page State Change VMGEXIT (sev-common.h ``VMGEXIT_PSC_ERROR_*``;
    SW_EXITINFO1 is 0, "no action"). ``NONE``: every entry was processed."""

    NONE = 0
    INVALID_HDR = (1 << 32) | 1  # VMGEXIT_PSC_ERROR_INVALID_HDR
    INVALID_ENTRY = (1 << 32) | 2  # VMGEXIT_PSC_ERROR_INVALID_ENTRY
    GENERIC = 0x100 << 32  # VMGEXIT_PSC_ERROR_GENERIC


class EventType(_Code):
    """Event-injection type, bits [10:8] (Linux svm.h ``SVM_EVTINJ_TYPE_*`` >> 8)."""

    INTR = 0
    NMI = 2
    EXEPT = 3  # Linux's spelling: a hardware exception (the only type a GHCB guest accepts)
    SOFT = 4


#: ``GHCB_HV_FT_SUPPORTED`` in KVM (arch/x86/kvm/svm/sev.c): what KVM advertises.
KVM_HV_FEATURES: HvFeature = HvFeature.SNP | HvFeature.SNP_AP_CREATION


class ApCreationOp(_Code):
    """AP_CREATION request, SW_EXITINFO1[31:0] (svm.h SVM_VMGEXIT_AP_CREATE_ON_INIT ...).

    SW_EXITINFO1[63:32] carries the APIC ID; SW_EXITINFO2 the VMSA GPA.
    """

    CREATE_ON_INIT = 0
    CREATE = 1
    DESTROY = 2


class ApJumpTableOp(_Code):
    """AP_JUMP_TABLE operation in SW_EXITINFO1 (GHCB spec; KVM: other values → INVALID_INPUT)."""

    SET = 0
    GET = 1


class SavicOp(_Code):
    """Secure AVIC (``SVM_VMGEXIT_SAVIC``) operation in SW_EXITINFO1 (uapi/asm/svm.h
    ``SVM_VMGEXIT_SAVIC_*``); RAX names the vCPU (:data:`SAVIC_SELF_GPA`: the caller), RBX
    carries the APIC backing page GPA (set on REGISTER_GPA, returned by UNREGISTER_GPA)."""

    REGISTER_GPA = 0
    UNREGISTER_GPA = 1


#: ``SVM_VMGEXIT_SAVIC_SELF_GPA`` (``~0ULL``, uapi/asm/svm.h): RAX of a Secure AVIC request
#: for the calling vCPU itself.
SAVIC_SELF_GPA: int = 0xFFFF_FFFF_FFFF_FFFF


class Errno(_Code):
    """Linux errno values that cross the KVM ABI (asm-generic/errno-base.h), fixed here so
    the wire values do not depend on the host's ``errno`` module."""

    EINTR = 4
    EIO = 5
    ENXIO = 6  # sev-guest configfs-tsm: a report STATUS other than INVALID_PARAM / INVALID_KEY
    EAGAIN = 11
    ENOMEM = 12  # sev-guest configfs-tsm: REPORT_SIZE + 32 > 4096
    EFAULT = 14  # KVM_RUN when a scratch area outside the GHCB cannot be read
    EBUSY = 16
    ENODEV = 19
    ENOTTY = 25  # the sev-guest driver once its VMPCK is disabled
    EINVAL = 22
    ENOSPC = 28
    EBADMSG = 74  # asm-generic/errno.h: sev-guest when a response does not verify
    ETIMEDOUT = 110  # asm-generic/errno.h (the others: errno-base.h)


class KvmExit(_Code):
    """``kvm_run.exit_reason`` values used here (uapi/linux/kvm.h).

    ``SNP_REQ_CERTS`` is mainline's 43 (the v7 patch proposed 42; earlier drafts used 40);
    ``VMGEXIT`` is the v15 seed patch's 40, never merged. Both are configurable in the
    hypervisor because they moved between revisions.
    """

    HYPERCALL = 3  # KVM_EXIT_HYPERCALL 3: a PSC range for userspace (KVM_HC_MAP_GPA_RANGE)
    SYSTEM_EVENT = 24  # a guest's termination request (KVM_SYSTEM_EVENT_SEV_TERM)
    VMGEXIT = 40
    SNP_REQ_CERTS = 43
