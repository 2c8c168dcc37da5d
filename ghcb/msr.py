"""GHCB MSR protocol values: typed records, encode and decode.

Source: AMD GHCB spec (AMD pub. 56421) "GHCB MSR protocol"; Linux
``arch/x86/include/asm/sev-common.h``. The bit layouts are the schemas of
:mod:`ghcb.schemas.msr`; the shift/mask tables used here are derived from them at import.

Every known GHCBInfo code decodes to its own frozen record whose fields are the schema's,
reserved bit ranges included (so ``encode_msr(decode_msr(v)) == v`` for every u64). An
unknown code decodes to :class:`UnknownMsr` with the raw info and data: decoding never raises
for a value that fits in 64 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from ghcb._fast import BitField, U64Record, backend_error, bit_fields, check_int
from ghcb.codes import MsrCode
from ghcb.errors import FieldValueError, InputTypeError, UnknownFieldError
from ghcb.schemas.msr import GHCB_MSR_INFO_BITS, MSR_SCHEMAS

if TYPE_CHECKING:
    from ghcb._fast import Backend

__all__ = [
    "GHCB_MSR",
    "GHCB_MSR_INFO_MASK",
    "GHCB_MSR_PREF_GPA_NONE",
    "ApResetHoldReq",
    "ApResetHoldResp",
    "CpuidReq",
    "CpuidResp",
    "HvFeaturesReq",
    "HvFeaturesResp",
    "MsrMessage",
    "PrefGpaReq",
    "PrefGpaResp",
    "PscReq",
    "PscResp",
    "RegGpaReq",
    "RegGpaResp",
    "SevInfoReq",
    "SevInfoResp",
    "TermReq",
    "UnknownMsr",
    "VmplReq",
    "VmplResp",
    "decode_msr",
    "encode_msr",
    "msr_layout",
    "msr_record",
]

SPEC: Final = "GHCB spec: GHCB MSR protocol / Linux sev-common.h"

#: ``MSR_AMD64_SEV_ES_GHCB``: the GHCB MSR (Linux asm/msr-index.h).
GHCB_MSR: Final = 0xC0010130
_U64_MAX: Final = (1 << 64) - 1
#: ``GHCB_MSR_INFO_MASK`` (sev-common.h, 0xFFF): GHCBInfo, bits 11:0 of the GHCB MSR.
GHCB_MSR_INFO_MASK: Final = (1 << GHCB_MSR_INFO_BITS) - 1

#: The fields of each code's schema other than the GHCBInfo constant, MSB first.
_LAYOUT: Final[dict[MsrCode, tuple[BitField, ...]]] = {
    code: tuple(f for f in bit_fields(s) if f.const is None) for code, s in MSR_SCHEMAS.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MsrMessage(U64Record):
    """Base of the GHCB MSR records; each subclass is one GHCBInfo code, whose fields are its
    schema's (``FIELDS`` is set from ``CODE`` when the subclass is made)."""

    CODE: ClassVar[MsrCode]
    SPEC: ClassVar[str] = SPEC

    def __init_subclass__(cls) -> None:
        # (no zero-argument super(): slots dataclasses are re-created classes)
        cls.FIELDS = _LAYOUT[cls.CODE]

    @property
    def code(self) -> MsrCode:
        """The GHCBInfo code, bits [11:0]."""
        return self.CODE

    def encode(self) -> int:
        """The 64-bit GHCB MSR value: the fields and GHCBInfo."""
        return U64Record.encode(self) | self.CODE


@dataclass(frozen=True, slots=True, kw_only=True)
class SevInfoResp(MsrMessage):
    """0x001 SEV information: the hypervisor's protocol range and the C-bit position."""

    CODE: ClassVar[MsrCode] = MsrCode.SEV_INFO_RESP
    max_version: int = 0
    min_version: int = 0
    cbit_position: int = 0
    reserved_23_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SevInfoReq(MsrMessage):
    """0x002 SEV information request."""

    CODE: ClassVar[MsrCode] = MsrCode.SEV_INFO_REQ
    reserved_63_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuidReq(MsrMessage):
    """0x004 CPUID request: one register of one function (sub-leaf 0)."""

    CODE: ClassVar[MsrCode] = MsrCode.CPUID_REQ
    function: int = 0
    register: int = 0
    reserved_29_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuidResp(MsrMessage):
    """0x005 CPUID response: the requested register's value."""

    CODE: ClassVar[MsrCode] = MsrCode.CPUID_RESP
    value: int = 0
    register: int = 0
    reserved_29_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApResetHoldReq(MsrMessage):
    """0x006 AP reset hold request."""

    CODE: ClassVar[MsrCode] = MsrCode.AP_RESET_HOLD_REQ
    reserved_63_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApResetHoldResp(MsrMessage):
    """0x007 AP reset hold response: non-zero result once the AP is released."""

    CODE: ClassVar[MsrCode] = MsrCode.AP_RESET_HOLD_RESP
    result: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefGpaReq(MsrMessage):
    """0x010 preferred GHCB GPA request."""

    CODE: ClassVar[MsrCode] = MsrCode.PREF_GPA_REQ
    reserved_63_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefGpaResp(MsrMessage):
    """0x011 preferred GHCB GPA response (``GHCB_MSR_PREF_GPA_NONE`` = no preference)."""

    CODE: ClassVar[MsrCode] = MsrCode.PREF_GPA_RESP
    gfn: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RegGpaReq(MsrMessage):
    """0x012 register the GHCB GPA (SNP)."""

    CODE: ClassVar[MsrCode] = MsrCode.REG_GPA_REQ
    gfn: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RegGpaResp(MsrMessage):
    """0x013 GHCB GPA registration response (echoes the registered GFN)."""

    CODE: ClassVar[MsrCode] = MsrCode.REG_GPA_RESP
    gfn: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PscReq(MsrMessage):
    """0x014 page state change request for one 4 KiB page (operation: :class:`PscOp`)."""

    CODE: ClassVar[MsrCode] = MsrCode.PSC_REQ
    reserved_63_56: int = 0
    operation: int = 0
    gfn: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PscResp(MsrMessage):
    """0x015 page state change response (error 0 = success)."""

    CODE: ClassVar[MsrCode] = MsrCode.PSC_RESP
    error: int = 0
    reserved_31_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class VmplReq(MsrMessage):
    """0x016 run at VMPL request (SVSM)."""

    CODE: ClassVar[MsrCode] = MsrCode.VMPL_REQ
    reserved_63_40: int = 0
    vmpl: int = 0
    reserved_31_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class VmplResp(MsrMessage):
    """0x017 run at VMPL response (result 0 = success)."""

    CODE: ClassVar[MsrCode] = MsrCode.VMPL_RESP
    result: int = 0
    reserved_31_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HvFeaturesReq(MsrMessage):
    """0x080 hypervisor feature request."""

    CODE: ClassVar[MsrCode] = MsrCode.HV_FT_REQ
    reserved_63_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HvFeaturesResp(MsrMessage):
    """0x081 hypervisor feature response (bitmap: :class:`HvFeature`)."""

    CODE: ClassVar[MsrCode] = MsrCode.HV_FT_RESP
    features: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TermReq(MsrMessage):
    """0x100 termination request (set: :class:`TermReasonSet`; code per set)."""

    CODE: ClassVar[MsrCode] = MsrCode.TERM_REQ
    reserved_63_24: int = 0
    reason_code: int = 0
    reason_set: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMsr:
    """A GHCB MSR value whose GHCBInfo is not a known code: kept raw."""

    info: int
    """Bits [11:0]."""
    data: int
    """Bits [63:12], shifted down."""

    def __post_init__(self) -> None:
        check_int(self.info, GHCB_MSR_INFO_MASK, "info", SPEC)
        check_int(self.data, _U64_MAX >> GHCB_MSR_INFO_BITS, "data", SPEC)
        if self.info in _RECORDS:
            # it would decode as that code's record: the round trip would not hold
            raise FieldValueError(
                f"GHCBInfo {self.info:#x} is a known code ({MsrCode(self.info).name}); "
                "use its record",
                rule="known-code",
                spec=SPEC,
                field="info",
            )

    @property
    def code(self) -> int:
        """The unknown GHCBInfo value."""
        return self.info

    def fields(self) -> dict[str, int]:
        """``{"data": ...}``."""
        return {"data": self.data}


_RECORDS: Final[dict[int, type[MsrMessage]]] = {
    cls.CODE: cls for cls in MsrMessage.__subclasses__()
}

#: ``GHCB_MSR_PREF_GPA_NONE``: the all-ones GFN (52 bits) meaning "no preference".
GHCB_MSR_PREF_GPA_NONE: Final = _LAYOUT[MsrCode.PREF_GPA_RESP][0].mask


def decode_msr(value: int, *, backend: Backend = "struct") -> MsrMessage | UnknownMsr:
    """Decode a GHCB MSR value into its typed record.

    Raises:
        InputTypeError: ``value`` is not an int.
        FieldValueError: ``value`` is outside 0..2**64-1.
    """
    if backend not in ("struct", "construct"):
        raise backend_error(backend)
    value = check_int(value, _U64_MAX, "GHCB MSR value", SPEC)
    info = value & GHCB_MSR_INFO_MASK
    cls = _RECORDS.get(info)
    if cls is None:
        return UnknownMsr(info=info, data=value >> GHCB_MSR_INFO_BITS)
    if backend == "struct":
        return cls(**{f.name: value >> f.shift & f.mask for f in _LAYOUT[cls.CODE]})
    if backend == "construct":
        parsed = MSR_SCHEMAS[cls.CODE].parse(value.to_bytes(8, "little"))
        return cls(**{f.name: parsed[f.name] for f in _LAYOUT[cls.CODE]})
    raise backend_error(backend)


def encode_msr(message: MsrMessage | UnknownMsr, *, backend: Backend = "struct") -> int:
    """Encode a record to the 64-bit GHCB MSR value.

    Raises:
        InputTypeError: ``message`` is not an MSR record.
    """
    if backend not in ("struct", "construct"):
        raise backend_error(backend)
    if isinstance(message, UnknownMsr):
        return message.data << GHCB_MSR_INFO_BITS | message.info
    if not isinstance(message, MsrMessage):
        raise InputTypeError(
            f"encode_msr needs an MSR record, not {type(message).__name__}",
            rule="input-type",
            spec=SPEC,
        )
    if backend == "struct":
        return message.encode()
    if backend == "construct":
        built = MSR_SCHEMAS[message.CODE].build(message.fields())
        return int.from_bytes(built, "little")
    raise backend_error(backend)


def _known(code: object) -> MsrCode:
    if isinstance(code, int) and not isinstance(code, bool) and code in _RECORDS:
        return MsrCode(code)
    raise FieldValueError(f"{code!r} is not a GHCB MSR code", rule="unknown-code", spec=SPEC)


def msr_layout(code: MsrCode) -> tuple[BitField, ...]:
    """The fields of ``code``'s value (reserved ranges included, GHCBInfo excluded), MSB
    first, with their shifts and widths (derived from :mod:`ghcb.schemas.msr`).

    Raises:
        FieldValueError: ``code`` is not a known GHCBInfo code.
    """
    return _LAYOUT[_known(code)]


def msr_record(code: MsrCode, **fields: int) -> MsrMessage:
    """The record for ``code`` with ``fields`` (a table-driven constructor for tools).

    Raises:
        UnknownFieldError: a field the code's layout does not have.
        FieldValueError: ``code`` is not a known GHCBInfo code, or a field does not fit.
    """
    code = _known(code)
    cls = _RECORDS[code]
    names = {f.name for f in _LAYOUT[code]}
    for name in fields:
        if name not in names:
            raise UnknownFieldError(
                f"{cls.__name__} has no field {name!r}", rule="unknown-field", spec=SPEC
            )
    return cls(**fields)
