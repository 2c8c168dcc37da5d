"""GHCB MSR protocol: one vector per code, round trips on both backends, bad input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghcb import (
    FieldValueError,
    GhcbError,
    InputTypeError,
    MsrCode,
    UnknownFieldError,
    UnknownMsr,
    decode_msr,
    encode_msr,
)
from ghcb.msr import (
    GHCB_MSR_PREF_GPA_NONE,
    CpuidReq,
    MsrMessage,
    PscReq,
    SevInfoResp,
    TermReq,
    msr_layout,
    msr_record,
)
from ghcb.schemas.msr import MSR_SCHEMAS
from tests.helpers import assert_roundtrip, load_table, load_vectors

if TYPE_CHECKING:
    from ghcb.page import Backend

VALUES = load_vectors("msr")["values"]


@pytest.mark.parametrize("vec", VALUES, ids=[str(v["code"]) for v in VALUES])
def test_vectors(vec: dict[str, Any], backend: Backend) -> None:
    """Each vector decodes to its code and fields and encodes back to the same value."""
    value = int(vec["value"], 16)
    msg = decode_msr(value, backend=backend)
    if vec["code"] is None:
        assert msg == UnknownMsr(info=vec["info"], data=vec["data"])
    else:
        assert msg.code is MsrCode[vec["code"]]
        for name, field_value in vec["fields"].items():
            assert msg.fields()[name] == field_value
        assert all(v == 0 for k, v in msg.fields().items() if k.startswith("reserved_"))
    assert encode_msr(msg, backend=backend) == value


def test_every_code_has_a_vector() -> None:
    """The vector file covers every code of the spec table."""
    table = {row["name"] for row in load_table("msr")["code"]}
    assert {v["code"] for v in VALUES if v["code"]} == table


@pytest.mark.parametrize("vec", [v for v in VALUES if v["code"]], ids=lambda v: v["code"])
def test_schema_roundtrip_and_compiled_twin(vec: dict[str, Any]) -> None:
    """Each MSR schema parses and builds the vector, compiled twin included."""
    value = int(vec["value"], 16)
    msg = decode_msr(value)
    assert isinstance(msg, MsrMessage)
    obj = {**msg.fields(), "info": int(msg.code)}
    assert_roundtrip(MSR_SCHEMAS[msg.code], value.to_bytes(8, "little"), obj)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_value_roundtrips(value: int) -> None:
    """Any u64 decodes (never raises) and re-encodes exactly; backends agree."""
    msg = decode_msr(value)
    assert encode_msr(msg) == value
    assert decode_msr(value, backend="construct") == msg


@given(st.sampled_from(sorted(MsrCode)), st.integers(min_value=0, max_value=2**52 - 1))
def test_known_codes_roundtrip(code: MsrCode, data: int) -> None:
    """Every known code with any data bits round-trips on both backends."""
    value = data << 12 | code
    msg = decode_msr(value)
    assert msg.code is code
    assert encode_msr(msg, backend="construct") == value


def test_worked_examples() -> None:
    """Records encode to the values Linux computes."""
    assert encode_msr(SevInfoResp(max_version=2, min_version=1, cbit_position=51)) == (
        0x0002000133000001
    )
    assert encode_msr(CpuidReq(function=0x8000001F, register=2)) == 0x8000001F80000004
    assert encode_msr(PscReq(operation=2, gfn=0x100)) == 0x0020000000100014
    assert encode_msr(TermReq(reason_set=1, reason_code=4)) == 0x41100
    assert GHCB_MSR_PREF_GPA_NONE == 0xFFFFFFFFFFFFF


@pytest.mark.parametrize("value", [-1, 2**64])
def test_out_of_range_value(value: int) -> None:
    """Values outside u64 are refused."""
    with pytest.raises(FieldValueError):
        decode_msr(value)


def test_non_int() -> None:
    """Non-int values are InputTypeErrors."""
    with pytest.raises(InputTypeError):
        decode_msr("0x1")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        encode_msr(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PscReq(operation=16), "operation"),
        (lambda: PscReq(gfn=1 << 40), "gfn"),
        (lambda: TermReq(reason_set=16), "reason_set"),
        (lambda: CpuidReq(register=4), "register"),
        (lambda: SevInfoResp(cbit_position=-1), "cbit_position"),
    ],
)
def test_field_too_wide(make: Any, field: str) -> None:
    """A field value wider than its bit range is a FieldValueError naming it."""
    with pytest.raises(FieldValueError) as err:
        make()
    assert err.value.field == field


def test_unknown_record_fields_checked() -> None:
    """UnknownMsr with oversize data cannot encode; msr_record refuses unknown names."""
    with pytest.raises(FieldValueError):
        encode_msr(UnknownMsr(info=0xFFF, data=1 << 52))
    with pytest.raises(FieldValueError):
        encode_msr(UnknownMsr(info=0x1000, data=0))
    assert msr_record(MsrCode.TERM_REQ, reason_set=1) == TermReq(reason_set=1)
    with pytest.raises(UnknownFieldError, match="no field"):
        msr_record(MsrCode.TERM_REQ, reason=1)


# ---------------------------------------------------------------------------------------------
# Mutation-testing kills (`make mutation`): every refusal exact.
# ---------------------------------------------------------------------------------------------
_MSR_SPEC = "GHCB spec: GHCB MSR protocol / Linux sev-common.h"
_BACKEND = (
    "InputTypeError",
    "backend",
    None,
    "ghcb API",
    "unknown backend 'x' (expected 'struct' or 'construct')",
)
#: (call, (class, rule, field, spec, message)), exact.
MSR_REFUSALS: dict[str, tuple[Any, tuple[object, ...]]] = {
    "decode-range": (
        lambda: decode_msr(1 << 64),
        (
            "FieldValueError",
            "field-range",
            "GHCB MSR value",
            _MSR_SPEC,
            "GHCB MSR value = 0x10000000000000000 is outside 0..0xffffffffffffffff",
        ),
    ),
    "decode-type": (
        lambda: decode_msr("1"),  # type: ignore[arg-type]
        ("InputTypeError", "input-type", None, _MSR_SPEC, "GHCB MSR value must be an int, not str"),
    ),
    "decode-backend": (lambda: decode_msr(1, backend="x"), _BACKEND),  # type: ignore[arg-type]
    "encode-backend": (lambda: encode_msr(UnknownMsr(info=0xABC, data=1), backend="x"), _BACKEND),  # type: ignore[arg-type]
    "encode-type": (
        lambda: encode_msr(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _MSR_SPEC,
            "encode_msr needs an MSR record, not int",
        ),
    ),
    "unknown-info": (
        lambda: UnknownMsr(info=0x1000, data=0),
        ("FieldValueError", "field-range", "info", _MSR_SPEC, "info = 0x1000 is outside 0..0xfff"),
    ),
    "unknown-data": (
        lambda: UnknownMsr(info=0xABC, data=1 << 52),
        (
            "FieldValueError",
            "field-range",
            "data",
            _MSR_SPEC,
            "data = 0x10000000000000 is outside 0..0xfffffffffffff",
        ),
    ),
    "unknown-known": (
        lambda: UnknownMsr(info=4, data=0),
        (
            "FieldValueError",
            "known-code",
            "info",
            _MSR_SPEC,
            "GHCBInfo 0x4 is a known code (CPUID_REQ); use its record",
        ),
    ),
    "layout-unknown": (
        lambda: msr_layout(0xABC),  # type: ignore[arg-type]
        ("FieldValueError", "unknown-code", None, _MSR_SPEC, "2748 is not a GHCB MSR code"),
    ),
    "layout-bool": (
        lambda: msr_layout(True),  # type: ignore[arg-type]
        ("FieldValueError", "unknown-code", None, _MSR_SPEC, "True is not a GHCB MSR code"),
    ),
    "record-unknown": (
        lambda: msr_record(0xABC),  # type: ignore[arg-type]
        ("FieldValueError", "unknown-code", None, _MSR_SPEC, "2748 is not a GHCB MSR code"),
    ),
    "record-field": (
        lambda: msr_record(MsrCode.CPUID_REQ, nope=1),
        ("UnknownFieldError", "unknown-field", None, _MSR_SPEC, "CpuidReq has no field 'nope'"),
    ),
}


@pytest.mark.parametrize("name", sorted(MSR_REFUSALS))
def test_msr_refusals_are_exact(name: str) -> None:
    call, expected = MSR_REFUSALS[name]
    with pytest.raises(GhcbError) as err:
        call()
    e = err.value
    assert (type(e).__name__, e.rule, e.field, e.spec, e.message) == expected


def test_unknown_msr_fields() -> None:
    assert UnknownMsr(info=0xABC, data=7).fields() == {"data": 7}
    assert msr_layout(MsrCode.CPUID_REQ) == msr_layout(int(MsrCode.CPUID_REQ))  # type: ignore[arg-type]
