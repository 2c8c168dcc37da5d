"""The GHCB MSR protocol: one schema per request/response value of MSR 0xC0010130.

Source: AMD GHCB spec (AMD pub. 56421) "GHCB MSR protocol"; Linux
``arch/x86/include/asm/sev-common.h`` (GHCB_MSR_* masks and positions). Bits [11:0] are
GHCBInfo (the code, a ``Const`` in each schema), bits [63:12] GHCBData. Each schema is a
little-endian u64 described MSB first as ``ByteSwapped(BitStruct(...))``; reserved bit ranges
are named ``reserved_<hi>_<lo>`` so a decoded value re-encodes to the same 64 bits.
"""

from __future__ import annotations

from typing import Any

from construct import BitsInteger, BitStruct, ByteSwapped, Const, Construct

from ghcb.codes import MsrCode

__all__ = ["GHCB_MSR_INFO_BITS", "MSR_SCHEMAS"]

#: GHCBInfo width: ``GHCB_MSR_INFO_MASK`` = 0xFFF (sev-common.h).
GHCB_MSR_INFO_BITS = 12


def _info(code: MsrCode) -> Construct[Any, Any]:
    return "info" / Const(int(code), BitsInteger(GHCB_MSR_INFO_BITS))


def _u64(*members: Construct[Any, Any]) -> Construct[Any, Any]:
    return ByteSwapped(BitStruct(*members))


MSR_SCHEMAS: dict[MsrCode, Construct[Any, Any]] = {
    # [63:48] max protocol, [47:32] min protocol, [31:24] C-bit position (GHCB_MSR_PROTO_*)
    MsrCode.SEV_INFO_RESP: _u64(
        "max_version" / BitsInteger(16),
        "min_version" / BitsInteger(16),
        "cbit_position" / BitsInteger(8),
        "reserved_23_12" / BitsInteger(12),
        _info(MsrCode.SEV_INFO_RESP),
    ),
    MsrCode.SEV_INFO_REQ: _u64(
        "reserved_63_12" / BitsInteger(52),
        _info(MsrCode.SEV_INFO_REQ),
    ),
    # [63:32] CPUID function, [31:30] register (GHCB_CPUID_REQ_REG_*), [29:12] zero
    MsrCode.CPUID_REQ: _u64(
        "function" / BitsInteger(32),
        "register" / BitsInteger(2),
        "reserved_29_12" / BitsInteger(18),
        _info(MsrCode.CPUID_REQ),
    ),
    # [63:32] register value; [31:12] echo the request (KVM rewrites only [63:32], [11:0])
    MsrCode.CPUID_RESP: _u64(
        "value" / BitsInteger(32),
        "register" / BitsInteger(2),
        "reserved_29_12" / BitsInteger(18),
        _info(MsrCode.CPUID_RESP),
    ),
    MsrCode.AP_RESET_HOLD_REQ: _u64(
        "reserved_63_12" / BitsInteger(52),
        _info(MsrCode.AP_RESET_HOLD_REQ),
    ),
    # [63:12] result: non-zero once a SIPI releases the AP
    MsrCode.AP_RESET_HOLD_RESP: _u64(
        "result" / BitsInteger(52),
        _info(MsrCode.AP_RESET_HOLD_RESP),
    ),
    MsrCode.PREF_GPA_REQ: _u64(
        "reserved_63_12" / BitsInteger(52),
        _info(MsrCode.PREF_GPA_REQ),
    ),
    # [63:12] preferred GHCB GFN; all ones (GHCB_MSR_PREF_GPA_NONE) = no preference
    MsrCode.PREF_GPA_RESP: _u64(
        "gfn" / BitsInteger(52),
        _info(MsrCode.PREF_GPA_RESP),
    ),
    # [63:12] GHCB GFN (GHCB_MSR_GPA_VALUE_POS = 12, GENMASK(51, 0))
    MsrCode.REG_GPA_REQ: _u64(
        "gfn" / BitsInteger(52),
        _info(MsrCode.REG_GPA_REQ),
    ),
    MsrCode.REG_GPA_RESP: _u64(
        "gfn" / BitsInteger(52),
        _info(MsrCode.REG_GPA_RESP),
    ),
    # [63:56] zero, [55:52] operation (GHCB_MSR_PSC_OP_POS), [51:12] GFN (40 bits)
    MsrCode.PSC_REQ: _u64(
        "reserved_63_56" / BitsInteger(8),
        "operation" / BitsInteger(4),
        "gfn" / BitsInteger(40),
        _info(MsrCode.PSC_REQ),
    ),
    # [63:32] error code, 0 = success (GHCB_MSR_PSC_RESP_VAL)
    MsrCode.PSC_RESP: _u64(
        "error" / BitsInteger(32),
        "reserved_31_12" / BitsInteger(20),
        _info(MsrCode.PSC_RESP),
    ),
    # [39:32] target VMPL (GHCB_MSR_VMPL_REQ_LEVEL)
    MsrCode.VMPL_REQ: _u64(
        "reserved_63_40" / BitsInteger(24),
        "vmpl" / BitsInteger(8),
        "reserved_31_12" / BitsInteger(20),
        _info(MsrCode.VMPL_REQ),
    ),
    # [63:32] result, 0 = success (GHCB_MSR_VMPL_RESP_VAL)
    MsrCode.VMPL_RESP: _u64(
        "result" / BitsInteger(32),
        "reserved_31_12" / BitsInteger(20),
        _info(MsrCode.VMPL_RESP),
    ),
    MsrCode.HV_FT_REQ: _u64(
        "reserved_63_12" / BitsInteger(52),
        _info(MsrCode.HV_FT_REQ),
    ),
    # [63:12] hypervisor feature bitmap (GHCB_MSR_HV_FT_POS = 12, GENMASK(51, 0))
    MsrCode.HV_FT_RESP: _u64(
        "features" / BitsInteger(52),
        _info(MsrCode.HV_FT_RESP),
    ),
    # [23:16] reason code, [15:12] reason set (GHCB_MSR_TERM_REASON_*)
    MsrCode.TERM_REQ: _u64(
        "reserved_63_24" / BitsInteger(40),
        "reason_code" / BitsInteger(8),
        "reason_set" / BitsInteger(4),
        _info(MsrCode.TERM_REQ),
    ),
}
