"""SW_EXITINFO1 / SW_EXITINFO2: hypervisor responses, GHCB errors and SNP_GUEST_ERR packing.

Sources: AMD GHCB spec (AMD pub. 56421) §4.1 (SW_EXITINFO1[31:0] = 0 no action, 1 issue
exception with the event in SW_EXITINFO2, 2 malformed input with a GHCB_ERR_* reason in
SW_EXITINFO2); Linux ``include/uapi/linux/sev-guest.h`` (``SNP_GUEST_ERR(vmm, fw)``: the VMM
error in bits 63:32, the firmware status in bits 31:0); the schemas are in
:mod:`ghcb.schemas.exitinfo`.

Worked values (peers.md §4.5)::

    pack_guest_error(VmmError.INVALID_LEN, 0)   == 0x0000000100000000
    pack_guest_error(VmmError.BUSY, 0)          == 0x0000000200000000
    pack_guest_error(VmmError.GENERIC, 0)       == 0xFFFFFFFF00000000  # merged KVM
    pack_guest_error(VmmError.GENERIC_V15, 0)   == 0x8000000000000000  # v15 seed patch
    pack_guest_error(0, FirmwareStatus.INVALID_PARAM) == 0x16
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple, Self

from ghcb._fast import BitField, bit_fields, flat_fields
from ghcb.codes import EventType, FirmwareStatus, GhcbErr, HvResp, VmmError
from ghcb.errors import FieldValueError, InputTypeError
from ghcb.schemas import exitinfo as schema

__all__ = [
    "EventInjection",
    "GuestError",
    "HvResponse",
    "IoioInfo",
    "TermRequestInfo",
    "decode_exit_info",
    "pack_guest_error",
    "unpack_guest_error",
]

SPEC_GUEST_ERR: Final = "Linux uapi sev-guest.h SNP_GUEST_ERR"
SPEC_RESPONSE: Final = "GHCB spec §4.1 SW_EXITINFO1/SW_EXITINFO2"

_U64_MAX: Final = (1 << 64) - 1
# Field widths and the VMM-error shift (SNP_GUEST_VMM_ERR_SHIFT = 32) come from the schema.
_FW, _VMM = flat_fields(schema.snp_guest_error)
_U32_MAX: Final = _FW.max_value
VMM_ERR_SHIFT: Final = 8 * _VMM.offset
_RESP_MASK: Final = _U32_MAX  # the response code is SW_EXITINFO1[31:0]
_EVENT_FIELDS: Final[tuple[BitField, ...]] = bit_fields(schema.event_injection)
_TERM_FIELDS: Final[tuple[BitField, ...]] = bit_fields(schema.term_request_info1)
_IOIO_FIELDS: Final[tuple[BitField, ...]] = bit_fields(schema.ioio_info1)


def _check_int(value: object, maximum: int, what: str, spec: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputTypeError(
            f"{what} must be an int, not {type(value).__name__}", rule="input-type", spec=spec
        )
    if not 0 <= value <= maximum:
        raise FieldValueError(
            f"{what} = {value:#x} is outside 0..{maximum:#x}",
            rule="field-range",
            spec=spec,
            field=what,
        )
    return int(value)


class GuestError(NamedTuple):
    """SW_EXITINFO2 of a guest request, split: ``(vmm, fw)``."""

    vmm: VmmError | int
    """VMM error, bits 63:32."""
    fw: FirmwareStatus | int
    """Firmware status, bits 31:0."""


def pack_guest_error(vmm: int, fw: int) -> int:
    """``SNP_GUEST_ERR(vmm, fw)``: ``vmm << 32 | fw``.

    Raises:
        FieldValueError: either half is negative or wider than 32 bits (never wraps).
        InputTypeError: either is not an int.
    """
    vmm = _check_int(vmm, _U32_MAX, "vmm_error", SPEC_GUEST_ERR)
    fw = _check_int(fw, _U32_MAX, "fw_error", SPEC_GUEST_ERR)
    return vmm << VMM_ERR_SHIFT | fw


def unpack_guest_error(value: int) -> GuestError:
    """Split SW_EXITINFO2 into its VMM error and firmware status (known codes as enums).

    Raises:
        FieldValueError: ``value`` is not a u64.
        InputTypeError: ``value`` is not an int.
    """
    value = _check_int(value, _U64_MAX, "exitinfo2", SPEC_GUEST_ERR)
    return GuestError(
        VmmError.from_int(value >> VMM_ERR_SHIFT), FirmwareStatus.from_int(value & _U32_MAX)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventInjection:
    """The event-injection format of SW_EXITINFO2 when SW_EXITINFO1[31:0] = 1 (GHCB §4.1)."""

    vector: int = 0
    """Bits 7:0: the exception vector (the Linux guest accepts only #GP 13 and #UD 6)."""
    type: int = EventType.EXEPT
    """Bits 10:8: :class:`EventType` (3 = exception)."""
    error_code_valid: int = 0
    """Bit 11: the error code is to be pushed."""
    reserved_30_12: int = 0
    """Bits 30:12: reserved."""
    valid: int = 1
    """Bit 31: the event is valid."""
    error_code: int = 0
    """Bits 63:32: the error code."""

    def __post_init__(self) -> None:
        _check_bits(self, _EVENT_FIELDS, SPEC_RESPONSE)

    def encode(self) -> int:
        """The 64-bit SW_EXITINFO2 value."""
        return _encode_bits(self, _EVENT_FIELDS)

    @classmethod
    def decode(cls, value: int) -> Self:
        """Split a 64-bit SW_EXITINFO2 value into its fields (reserved bits kept)."""
        return cls(**_decode_bits(value, _EVENT_FIELDS, SPEC_RESPONSE))


@dataclass(frozen=True, slots=True)
class HvResponse:
    """A hypervisor's answer in SW_EXITINFO1/SW_EXITINFO2, with its decoded meaning."""

    info1: int
    info2: int

    def __post_init__(self) -> None:
        _check_int(self.info1, _U64_MAX, "sw_exit_info_1", SPEC_RESPONSE)
        _check_int(self.info2, _U64_MAX, "sw_exit_info_2", SPEC_RESPONSE)

    @property
    def response(self) -> HvResp | int:
        """SW_EXITINFO1[31:0]: :class:`HvResp`, or the raw value if undefined."""
        return HvResp.from_int(self.info1 & _RESP_MASK)

    @property
    def error(self) -> GhcbErr | int | None:
        """The GHCB_ERR_* reason when the response is MALFORMED_INPUT, else ``None``."""
        if self.response != HvResp.MALFORMED_INPUT:
            return None
        return GhcbErr.from_int(self.info2)

    @property
    def event(self) -> EventInjection | None:
        """The event to inject when the response is ISSUE_EXCEPTION, else ``None``."""
        if self.response != HvResp.ISSUE_EXCEPTION:
            return None
        return EventInjection.decode(self.info2)

    @property
    def guest_error(self) -> GuestError | None:
        """SW_EXITINFO2 split as SNP_GUEST_ERR when the response is NO_ACTION, else ``None``.

        Meaningful for SNP (Extended) Guest Request exits only.
        """
        if self.response != HvResp.NO_ACTION:
            return None
        return unpack_guest_error(self.info2)

    @classmethod
    def no_action(cls, info2: int = 0) -> Self:
        """EXITINFO1 = 0 with an event-specific EXITINFO2."""
        return cls(int(HvResp.NO_ACTION), info2)

    @classmethod
    def malformed(cls, reason: GhcbErr | int) -> Self:
        """EXITINFO1 = 2, EXITINFO2 = the GHCB_ERR_* reason (what KVM's validator writes)."""
        return cls(int(HvResp.MALFORMED_INPUT), int(reason))

    @classmethod
    def exception(cls, event: EventInjection) -> Self:
        """EXITINFO1 = 1, EXITINFO2 = the event-injection value."""
        return cls(int(HvResp.ISSUE_EXCEPTION), event.encode())


def decode_exit_info(info1: int, info2: int) -> HvResponse:
    """Decode a hypervisor's SW_EXITINFO1/SW_EXITINFO2 pair.

    Raises:
        FieldValueError: either value is not a u64.
    """
    return HvResponse(info1, info2)


def _encode_bits(record: object, fields: tuple[BitField, ...]) -> int:
    value = 0
    for f in fields:
        value |= getattr(record, f.name) << f.shift
    return value


def _decode_bits(value: int, fields: tuple[BitField, ...], spec: str) -> dict[str, int]:
    value = _check_int(value, _U64_MAX, "sw_exit_info_1", spec)
    return {f.name: value >> f.shift & f.mask for f in fields}


def _check_bits(record: object, fields: tuple[BitField, ...], spec: str) -> None:
    for f in fields:
        _check_int(getattr(record, f.name), f.mask, f.name, spec)


SPEC_TERM: Final = "Linux sev-common.h / vc-shared.c SVM_VMGEXIT_TERM_REQUEST"
SPEC_IOIO: Final = "AMD APM vol. 2 IOIO intercept EXITINFO1 / Linux vc-shared.c IOIO_*"


@dataclass(frozen=True, slots=True, kw_only=True)
class TermRequestInfo:
    """SW_EXITINFO1 of a TERM_REQUEST VMGEXIT: set [3:0], code [11:4] (GHCB form)."""

    reason_set: int = 0
    """:class:`~ghcb.codes.TermReasonSet`."""
    reason_code: int = 0
    """The code within the set (:class:`~ghcb.codes.GenTermReason`, ...)."""
    reserved_63_12: int = 0

    def __post_init__(self) -> None:
        _check_bits(self, _TERM_FIELDS, SPEC_TERM)

    def encode(self) -> int:
        """The 64-bit SW_EXITINFO1 value."""
        return _encode_bits(self, _TERM_FIELDS)

    @classmethod
    def decode(cls, value: int) -> Self:
        """Split SW_EXITINFO1 (reserved bits kept)."""
        return cls(**_decode_bits(value, _TERM_FIELDS, SPEC_TERM))


@dataclass(frozen=True, slots=True, kw_only=True)
class IoioInfo:
    """SW_EXITINFO1 of an IOIO NAE event (the SVM IOIO intercept format)."""

    type_in: int = 0
    """Bit 0: 1 = IN, 0 = OUT."""
    reserved_1_1: int = 0
    string: int = 0
    """Bit 2: string instruction (INS/OUTS): data in the scratch area."""
    rep: int = 0
    """Bit 3: REP prefix."""
    size8: int = 0
    size16: int = 0
    size32: int = 0
    """Bits 4/5/6: operand size 8/16/32 bits (KVM treats none set as a no-op)."""
    addr16: int = 0
    addr32: int = 0
    addr64: int = 0
    """Bits 7/8/9: address size 16/32/64 bits."""
    segment: int = 0
    """Bits 12:10: effective segment (ES = 0, DS = 3)."""
    reserved_15_13: int = 0
    port: int = 0
    """Bits 31:16: the I/O port."""
    reserved_63_32: int = 0

    def __post_init__(self) -> None:
        _check_bits(self, _IOIO_FIELDS, SPEC_IOIO)

    def encode(self) -> int:
        """The 64-bit SW_EXITINFO1 value."""
        return _encode_bits(self, _IOIO_FIELDS)

    @classmethod
    def decode(cls, value: int) -> Self:
        """Split SW_EXITINFO1 (reserved bits kept)."""
        return cls(**_decode_bits(value, _IOIO_FIELDS, SPEC_IOIO))
