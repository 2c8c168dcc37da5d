"""SW_EXITINFO1 / SW_EXITINFO2 encodings.

Sources: AMD GHCB spec (AMD pub. 56421) §4.1 (hypervisor responses in SW_EXITINFO1[31:0],
the event-injection format in SW_EXITINFO2); Linux ``include/uapi/linux/sev-guest.h``
(``SNP_GUEST_ERR``: the ioctl's ``exitinfo2`` union of ``{u32 fw_error; u32 vmm_error}``);
Linux ``arch/x86/include/asm/svm.h`` (``SVM_EVTINJ_*``).
"""

from __future__ import annotations

from construct import BitsInteger, BitStruct, ByteSwapped, Int32ul, Struct

__all__ = ["event_injection", "snp_guest_error"]

# uapi sev-guest.h: union { __u64 exitinfo2; struct { __u32 fw_error; __u32 vmm_error; }; }
# i.e. SNP_GUEST_ERR(vmm, fw) = vmm << SNP_GUEST_VMM_ERR_SHIFT (32) | fw.
snp_guest_error = Struct(
    "fw_error" / Int32ul,
    "vmm_error" / Int32ul,
)

# GHCB spec §4.1 / svm.h SVM_EVTINJ_*: vector [7:0], type [10:8], error-code valid bit 11,
# valid bit 31, error code [63:32].
event_injection = ByteSwapped(
    BitStruct(
        "error_code" / BitsInteger(32),
        "valid" / BitsInteger(1),
        "reserved_30_12" / BitsInteger(19),
        "error_code_valid" / BitsInteger(1),
        "type" / BitsInteger(3),
        "vector" / BitsInteger(8),
    )
)
