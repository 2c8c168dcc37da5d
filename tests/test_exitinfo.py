"""SW_EXITINFO1/2: SNP_GUEST_ERR packing, GHCB error responses, event injection."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghcb import (
    EventInjection,
    FieldValueError,
    FirmwareStatus,
    GhcbErr,
    GhcbError,
    HvResp,
    HvResponse,
    InputTypeError,
    IoioInfo,
    LinuxTermReason,
    TermReasonSet,
    TermRequestInfo,
    VmmError,
    decode_exit_info,
    pack_guest_error,
    unpack_guest_error,
)
from tests.helpers import load_vectors

VEC = load_vectors("exitinfo2")
U32 = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.mark.parametrize("vec", VEC["guest_errors"], ids=[v["name"] for v in VEC["guest_errors"]])
def test_guest_error_vectors(vec: dict[str, Any]) -> None:
    """Each peers.md §4.5 value packs and unpacks exactly, with names where known."""
    value = int(vec["exitinfo2"], 16)
    assert pack_guest_error(vec["vmm"], vec["fw"]) == value
    vmm, fw = unpack_guest_error(value)
    assert (int(vmm), int(fw)) == (vec["vmm"], vec["fw"])
    assert getattr(vmm, "name", None) == vec["vmm_name"]
    assert getattr(fw, "name", None) == vec["fw_name"]


def test_named_values() -> None:
    """The four VMM errors of the two ABIs pack to their documented values."""
    assert pack_guest_error(VmmError.INVALID_LEN, 0) == 0x0000000100000000
    assert pack_guest_error(VmmError.BUSY, 0) == 0x0000000200000000
    assert pack_guest_error(VmmError.GENERIC, 0) == 0xFFFFFFFF00000000
    assert pack_guest_error(VmmError.GENERIC_V15, 0) == 0x8000000000000000
    assert unpack_guest_error(0x16).fw is FirmwareStatus.INVALID_PARAM


@given(U32, U32)
def test_pack_unpack_roundtrip(vmm: int, fw: int) -> None:
    """unpack(pack(vmm, fw)) == (vmm, fw) for every pair of u32s."""
    value = pack_guest_error(vmm, fw)
    assert 0 <= value < 2**64
    assert tuple(map(int, unpack_guest_error(value))) == (vmm, fw)


@pytest.mark.parametrize(("vmm", "fw"), [(-1, 0), (0, -1), (2**32, 0), (0, 2**32), (2**40, 5)])
def test_pack_refuses_out_of_range(vmm: int, fw: int) -> None:
    """Halves outside 0..2**32-1 raise instead of wrapping."""
    with pytest.raises(FieldValueError) as err:
        pack_guest_error(vmm, fw)
    assert err.value.rule == "field-range"


@pytest.mark.parametrize("value", [-1, 2**64])
def test_unpack_refuses_out_of_range(value: int) -> None:
    """EXITINFO2 outside u64 raises."""
    with pytest.raises(FieldValueError):
        unpack_guest_error(value)


def test_types_checked() -> None:
    """Non-ints are InputTypeErrors."""
    with pytest.raises(InputTypeError):
        pack_guest_error("1", 0)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        unpack_guest_error(1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("vec", VEC["ghcb_errors"], ids=[v["name"] for v in VEC["ghcb_errors"]])
def test_ghcb_error_vectors(vec: dict[str, Any]) -> None:
    """EXITINFO1 = 2 decodes to MALFORMED_INPUT with the GHCB_ERR reason."""
    info1, info2 = int(vec["exitinfo1"], 16), int(vec["exitinfo2"], 16)
    resp = decode_exit_info(info1, info2)
    assert resp.response is HvResp[vec["response"]]
    assert resp.error is GhcbErr[vec["reason"]]
    assert resp.event is None
    assert resp.guest_error is None
    assert HvResponse.malformed(GhcbErr[vec["reason"]]) == resp


@pytest.mark.parametrize(
    "vec", VEC["event_injections"], ids=[v["name"] for v in VEC["event_injections"]]
)
def test_event_injection_vectors(vec: dict[str, Any]) -> None:
    """The event-injection format encodes and decodes the vector's fields."""
    value = int(vec["exitinfo2"], 16)
    ev = EventInjection(
        vector=vec["vector"],
        type=vec["type"],
        error_code_valid=vec["error_code_valid"],
        valid=vec["valid"],
        error_code=vec["error_code"],
    )
    assert ev.encode() == value
    assert EventInjection.decode(value) == ev
    resp = HvResponse.exception(ev)
    assert (resp.info1, resp.info2) == (1, value)
    assert resp.event == ev
    assert resp.error is None


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_event_injection_roundtrip(value: int) -> None:
    """Any u64 decodes and re-encodes to itself (reserved bits kept)."""
    assert EventInjection.decode(value).encode() == value


def test_event_field_range() -> None:
    """A vector wider than 8 bits is refused."""
    with pytest.raises(FieldValueError) as err:
        EventInjection(vector=256)
    assert err.value.field == "vector"


def test_no_action_carries_guest_error() -> None:
    """EXITINFO1 = 0 exposes EXITINFO2 as SNP_GUEST_ERR."""
    resp = HvResponse.no_action(0x0000000200000000)
    assert resp.response is HvResp.NO_ACTION
    assert resp.guest_error == (VmmError.BUSY, FirmwareStatus.SUCCESS)
    assert resp.error is None
    assert resp.event is None


def test_upper_half_of_exitinfo1_ignored_for_response() -> None:
    """Only SW_EXITINFO1[31:0] is the response code."""
    assert decode_exit_info(0xABCD_0000_0000_0002, 5).error is GhcbErr.INVALID_INPUT


def test_unknown_response_kept() -> None:
    """Undefined response codes and reasons stay plain ints."""
    assert decode_exit_info(7, 0).response == 7
    assert decode_exit_info(2, 99).error == 99


@pytest.mark.parametrize(("info1", "info2"), [(-1, 0), (0, 2**64)])
def test_decode_refuses_out_of_range(info1: int, info2: int) -> None:
    """EXITINFO values outside u64 raise."""
    with pytest.raises(FieldValueError):
        decode_exit_info(info1, info2)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_term_and_ioio_roundtrip(value: int) -> None:
    """TERM_REQUEST and IOIO SW_EXITINFO1 decode and re-encode any u64 exactly."""
    assert TermRequestInfo.decode(value).encode() == value
    assert IoioInfo.decode(value).encode() == value


def test_term_request_ghcb_form() -> None:
    """The GHCB form puts the set in [3:0] and the code in [11:4] (not the MSR positions)."""
    info = TermRequestInfo(reason_set=TermReasonSet.LINUX, reason_code=LinuxTermReason.CPUID)
    assert info.encode() == 0x41
    assert TermRequestInfo.decode(0x41) == info


def test_ioio_fields() -> None:
    """A REP OUTSB to port 0x3F8 through DS with 64-bit addressing."""
    info = IoioInfo(string=1, rep=1, size8=1, addr64=1, segment=3, port=0x3F8)
    assert info.encode() == 0x03F8_0000 | 3 << 10 | 1 << 9 | 1 << 4 | 1 << 3 | 1 << 2
    assert IoioInfo.decode(info.encode()) == info
    with pytest.raises(FieldValueError):
        IoioInfo(port=0x10000)


# ---------------------------------------------------------------------------------------------
# Mutation-testing kills (`make mutation`): every refusal exact.
# ---------------------------------------------------------------------------------------------
_GUEST_ERR = "Linux uapi sev-guest.h SNP_GUEST_ERR"
_RESPONSE = "GHCB spec §4.1 SW_EXITINFO1/SW_EXITINFO2"
_U64_RANGE = "is outside 0..0xffffffffffffffff"
#: (call, (class, rule, field, spec, message)), exact.
EXITINFO_REFUSALS: dict[str, tuple[Any, tuple[object, ...]]] = {
    "pack-vmm": (
        lambda: pack_guest_error(1 << 32, 0),
        (
            "FieldValueError",
            "field-range",
            "vmm_error",
            _GUEST_ERR,
            "vmm_error = 0x100000000 is outside 0..0xffffffff",
        ),
    ),
    "pack-fw": (
        lambda: pack_guest_error(0, -1),
        (
            "FieldValueError",
            "field-range",
            "fw_error",
            _GUEST_ERR,
            "fw_error = -0x1 is outside 0..0xffffffff",
        ),
    ),
    "unpack": (
        lambda: unpack_guest_error(1 << 64),
        (
            "FieldValueError",
            "field-range",
            "exitinfo2",
            _GUEST_ERR,
            f"exitinfo2 = 0x10000000000000000 {_U64_RANGE}",
        ),
    ),
    "info1": (
        lambda: HvResponse(-1, 0),
        (
            "FieldValueError",
            "field-range",
            "sw_exit_info_1",
            _RESPONSE,
            f"sw_exit_info_1 = -0x1 {_U64_RANGE}",
        ),
    ),
    "info2": (
        lambda: HvResponse(0, 1 << 64),
        (
            "FieldValueError",
            "field-range",
            "sw_exit_info_2",
            _RESPONSE,
            f"sw_exit_info_2 = 0x10000000000000000 {_U64_RANGE}",
        ),
    ),
    "malformed": (
        lambda: HvResponse.malformed(1 << 64),
        (
            "FieldValueError",
            "field-range",
            "reason",
            _RESPONSE,
            f"reason = 0x10000000000000000 {_U64_RANGE}",
        ),
    ),
    "exception": (
        lambda: HvResponse.exception(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _RESPONSE,
            "exception() needs an EventInjection, not int",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(EXITINFO_REFUSALS))
def test_exitinfo_refusals_are_exact(name: str) -> None:
    call, expected = EXITINFO_REFUSALS[name]
    with pytest.raises(GhcbError) as err:
        call()
    e = err.value
    assert (type(e).__name__, e.rule, e.field, e.spec, e.message) == expected


def test_no_action_defaults_to_zero() -> None:
    assert HvResponse.no_action() == HvResponse(0, 0)
