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
from typing import ClassVar, Final, NamedTuple, Self

from ghcb._fast import BitField, U64Record, bit_fields, check_int, flat_fields
from ghcb.codes import EventType, FirmwareStatus, GhcbErr, HvResp, VmmError
from ghcb.errors import InputTypeError
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
SPEC_TERM: Final = "Linux sev-common.h / vc-shared.c SVM_VMGEXIT_TERM_REQUEST"
SPEC_IOIO: Final = "AMD APM vol. 2 IOIO intercept EXITINFO1 / Linux vc-shared.c IOIO_*"

_U64_MAX: Final = (1 << 64) - 1
# Field widths and the VMM-error shift (SNP_GUEST_VMM_ERR_SHIFT = 32) come from the schema.
_FW, _VMM = flat_fields(schema.snp_guest_error)
_U32_MAX: Final = _FW.max_value
VMM_ERR_SHIFT: Final = 8 * _VMM.offset
_RESP_MASK: Final = _U32_MAX  # the response code is SW_EXITINFO1[31:0]


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
    vmm = check_int(vmm, _U32_MAX, "vmm_error", SPEC_GUEST_ERR)
    fw = check_int(fw, _U32_MAX, "fw_error", SPEC_GUEST_ERR)
    return vmm << VMM_ERR_SHIFT | fw


def unpack_guest_error(value: int) -> GuestError:
    """Split SW_EXITINFO2 into its VMM error and firmware status (known codes as enums).

    Raises:
        FieldValueError: ``value`` is not a u64.
        InputTypeError: ``value`` is not an int.
    """
    value = check_int(value, _U64_MAX, "exitinfo2", SPEC_GUEST_ERR)
    return GuestError(
        VmmError.from_int(value >> VMM_ERR_SHIFT), FirmwareStatus.from_int(value & _U32_MAX)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventInjection(U64Record):
    """The event-injection format of SW_EXITINFO2 when SW_EXITINFO1[31:0] = 1 (GHCB §4.1)."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.event_injection)
    SPEC: ClassVar[str] = SPEC_RESPONSE

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


@dataclass(frozen=True, slots=True)
class HvResponse:
    """A hypervisor's answer in SW_EXITINFO1/SW_EXITINFO2, with its decoded meaning."""

    info1: int
    info2: int

    def __post_init__(self) -> None:
        check_int(self.info1, _U64_MAX, "sw_exit_info_1", SPEC_RESPONSE)
        check_int(self.info2, _U64_MAX, "sw_exit_info_2", SPEC_RESPONSE)

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
        return cls(
            int(HvResp.MALFORMED_INPUT), check_int(reason, _U64_MAX, "reason", SPEC_RESPONSE)
        )

    @classmethod
    def exception(cls, event: EventInjection) -> Self:
        """EXITINFO1 = 1, EXITINFO2 = the event-injection value."""
        if not isinstance(event, EventInjection):
            raise InputTypeError(
                f"exception() needs an EventInjection, not {type(event).__name__}",
                rule="input-type",
                spec=SPEC_RESPONSE,
            )
        return cls(int(HvResp.ISSUE_EXCEPTION), event.encode())


def decode_exit_info(info1: int, info2: int) -> HvResponse:
    """Decode a hypervisor's SW_EXITINFO1/SW_EXITINFO2 pair.

    Raises:
        FieldValueError: either value is not a u64.
        InputTypeError: either value is not an int.
    """
    return HvResponse(info1, info2)


@dataclass(frozen=True, slots=True, kw_only=True)
class TermRequestInfo(U64Record):
    """SW_EXITINFO1 of a TERM_REQUEST VMGEXIT: set [3:0], code [11:4] (GHCB form)."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.term_request_info1)
    SPEC: ClassVar[str] = SPEC_TERM

    reason_set: int = 0
    """:class:`~ghcb.codes.TermReasonSet`."""
    reason_code: int = 0
    """The code within the set (:class:`~ghcb.codes.GenTermReason`, ...)."""
    reserved_63_12: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class IoioInfo(U64Record):
    """SW_EXITINFO1 of an IOIO NAE event (the SVM IOIO intercept format)."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.ioio_info1)
    SPEC: ClassVar[str] = SPEC_IOIO

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
