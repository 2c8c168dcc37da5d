"""SW_EXITINFO1 / SW_EXITINFO2 encodings.

Sources: AMD GHCB spec (AMD pub. 56421) §4.1 (hypervisor responses in SW_EXITINFO1[31:0],
the event-injection format in SW_EXITINFO2); Linux ``include/uapi/linux/sev-guest.h``
(``SNP_GUEST_ERR``: the ioctl's ``exitinfo2`` union of ``{u32 fw_error; u32 vmm_error}``);
Linux ``arch/x86/include/asm/svm.h`` (``SVM_EVTINJ_*``).
"""

from __future__ import annotations

from construct import BitsInteger, BitStruct, ByteSwapped, Int32ul, Struct

__all__ = ["event_injection", "ioio_info1", "snp_guest_error", "term_request_info1"]

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

# SVM_VMGEXIT_TERM_REQUEST, SW_EXITINFO1 (Linux sev-common.h / vc-shared.c): reason set [3:0],
# reason code [11:4] (not the MSR form's [15:12]/[23:16]).
term_request_info1 = ByteSwapped(
    BitStruct(
        "reserved_63_12" / BitsInteger(52),
        "reason_code" / BitsInteger(8),
        "reason_set" / BitsInteger(4),
    )
)

# SVM_EXIT_IOIO, SW_EXITINFO1 (AMD APM vol. 2 "IOIO intercept" EXITINFO1; Linux vc-shared.c
# IOIO_TYPE_*, IOIO_DATA_*, IOIO_ADDR_*, IOIO_SEG_*): port [31:16], segment [12:10],
# address size 64/32/16 bits 9/8/7, data size 32/16/8 bits 6/5/4, REP bit 3, string bit 2,
# IN (1) / OUT (0) bit 0.
ioio_info1 = ByteSwapped(
    BitStruct(
        "reserved_63_32" / BitsInteger(32),
        "port" / BitsInteger(16),
        "reserved_15_13" / BitsInteger(3),
        "segment" / BitsInteger(3),
        "addr64" / BitsInteger(1),
        "addr32" / BitsInteger(1),
        "addr16" / BitsInteger(1),
        "size32" / BitsInteger(1),
        "size16" / BitsInteger(1),
        "size8" / BitsInteger(1),
        "rep" / BitsInteger(1),
        "string" / BitsInteger(1),
        "reserved_1_1" / BitsInteger(1),
        "type_in" / BitsInteger(1),
    )
)
