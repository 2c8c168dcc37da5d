"""The record machinery itself (:class:`ghcb._record.SchemaRecord`, ``check_field``), on a
record declared inside each test: what a subclass derives from its schema (fields, offsets,
struct codec, check plan, slot setters), its codecs on both backends, defaults, and the typed
error of every rule. The real records (report, TCB, guest messages) are tested in their own
files; here the class is built at run time, so the derivation is exercised too."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import construct as cs
import pytest

from ghcb._record import SchemaRecord, check_field
from ghcb.errors import FieldValueError, InputTypeError, LengthError, UnknownFieldError

SPEC = "test spec §1"

#: u8, u32, 3 bytes, u16: 10 bytes, no padding, every field kind and an odd offset.
SCHEMA = cs.Struct(
    "kind" / cs.Int8ul, "count" / cs.Int32ul, "tag" / cs.Bytes(3), "port" / cs.Int16ul
)
EXACT = bytes([0x07]) + (0x11223344).to_bytes(4, "little") + b"xyz" + (0x0A0B).to_bytes(2, "little")


class Kind(enum.IntEnum):
    NONE = 0
    SEVEN = 7

    @classmethod
    def from_int(cls, value: int) -> int:
        """Tolerant: unknown values stay plain ints."""
        try:
            return cls(value)
        except ValueError:
            return value


def probe_class(*, enums: bool = False) -> type[Any]:
    """A fresh record class of :data:`SCHEMA` (declared now, not at import)."""

    @dataclass(frozen=True, slots=True)
    class Probe(SchemaRecord):
        SCHEMA: ClassVar[cs.Struct] = globals()["SCHEMA"]
        SPEC: ClassVar[str] = globals()["SPEC"]
        WHAT: ClassVar[str] = "a probe"
        ENUMS: ClassVar[dict[str, Any]] = {"kind": Kind.from_int} if enums else {}

        kind: int = 0
        count: int = 0
        tag: bytes = bytes(3)
        port: int = 0

    return Probe


def test_subclass_derives_layout_codec_and_plan() -> None:
    cls = probe_class()
    assert [(f.name, f.offset, f.size, f.kind, f.fmt) for f in cls.FIELDS] == [
        ("kind", 0, 1, "int", "B"),
        ("count", 1, 4, "int", "I"),
        ("tag", 5, 3, "bytes", "3s"),
        ("port", 8, 2, "int", "H"),
    ]
    assert cls.SIZE == 10
    assert cls._STRUCT.size == 10
    assert cls._STRUCT.unpack(EXACT) == (7, 0x11223344, b"xyz", 0x0A0B)
    assert sorted(cls._BY_NAME) == ["count", "kind", "port", "tag"]
    assert all(cls._BY_NAME[f.name] is f for f in cls.FIELDS)
    assert [p[:3] for p in cls._PLAN] == [
        ("kind", True, 0xFF),
        ("count", True, 0xFFFF_FFFF),
        ("tag", False, 3),
        ("port", True, 0xFFFF),
    ]
    assert [p[3] for p in cls._PLAN] == list(cls.FIELDS)
    assert len(cls._SETTERS) == 4


def test_codecs_both_backends() -> None:
    cls = probe_class()
    rec = cls(kind=7, count=0x11223344, tag=b"xyz", port=0x0A0B)
    assert rec.to_bytes() == EXACT
    assert rec.to_bytes(backend="construct") == EXACT
    for backend in ("struct", "construct"):
        back = cls.from_bytes(bytearray(EXACT), backend=backend)
        assert back == rec
        assert back.values() == (7, 0x11223344, b"xyz", 0x0A0B)
        assert back.fields() == {"kind": 7, "count": 0x11223344, "tag": b"xyz", "port": 0x0A0B}
        assert type(back.tag) is bytes
    assert cls.from_bytes(memoryview(EXACT)).to_bytes() == EXACT


def test_pack_and_defaults() -> None:
    cls = probe_class()
    assert cls.pack() == bytes(10)
    assert cls.pack(count=1, tag=bytearray(b"abc")) == b"\0\x01\0\0\0abc\0\0"
    assert cls.pack(port=0xFFFF)[8:] == b"\xff\xff"
    assert {"kind": 0, "count": 0, "tag": bytes(3), "port": 0} == cls._DEFAULTS
    with pytest.raises(UnknownFieldError) as e:
        cls.pack(speed=1)
    assert (e.value.rule, e.value.spec, e.value.message) == (
        "unknown-field",
        SPEC,
        "a probe has no field 'speed'",
    )
    with pytest.raises(FieldValueError) as v:
        cls.pack(kind=0x100)
    assert (v.value.rule, v.value.spec, v.value.field, v.value.offset) == (
        "field-range",
        SPEC,
        "kind",
        0,
    )


def test_enums_decode_on_every_path() -> None:
    cls = probe_class(enums=True)
    for rec in (
        cls(kind=7),
        cls.from_bytes(EXACT),
        cls.from_bytes(EXACT, backend="construct"),
    ):
        assert rec.kind is Kind.SEVEN
    assert cls(kind=9).kind == 9
    assert type(cls(kind=9).kind) is int
    assert cls(kind=Kind.SEVEN).to_bytes()[0] == 7
    cls.pack()
    assert type(cls._DEFAULTS["kind"]) is int  # defaults are plain ints, not enum members


def test_construction_normalises_and_checks() -> None:
    cls = probe_class()
    rec = cls(kind=Kind.SEVEN, tag=memoryview(b"abc"))
    assert type(rec.kind) is int  # an IntEnum member kept as its plain value
    assert type(rec.tag) is bytes
    cases: list[tuple[dict[str, Any], type[FieldValueError | LengthError], str, str, int, str]] = [
        (
            {"kind": 256},
            FieldValueError,
            "field-range",
            "kind",
            0,
            "kind = 256 does not fit in 1 byte(s) (0..0xff)",
        ),
        (
            {"count": -1},
            FieldValueError,
            "field-range",
            "count",
            1,
            "count = -1 does not fit in 4 byte(s) (0..0xffffffff)",
        ),
        ({"port": True}, FieldValueError, "field-type", "port", 8, "port must be an int, not bool"),
        ({"port": 1.0}, FieldValueError, "field-type", "port", 8, "port must be an int, not float"),
        (
            {"tag": b"ab"},
            LengthError,
            "field-length",
            "tag",
            5,
            "tag must be exactly 3 bytes, got 2",
        ),
        ({"tag": "abc"}, FieldValueError, "field-type", "tag", 5, ""),
    ]
    for kwargs, error, rule, field, offset, message in cases:
        with pytest.raises(error) as e:
            cls(**kwargs)
        got = e.value
        assert (got.rule, got.spec, got.field, got.offset) == (rule, SPEC, field, offset), kwargs
        if message:
            assert got.message == message


def test_from_bytes_refusals() -> None:
    cls = probe_class()
    with pytest.raises(LengthError) as e:
        cls.from_bytes(EXACT[:9])
    assert (e.value.rule, e.value.spec, e.value.message) == (
        "length",
        SPEC,
        "a probe is 10 bytes, got 9",
    )
    with pytest.raises(InputTypeError) as t:
        cls.from_bytes("not bytes")
    assert (t.value.rule, t.value.spec, t.value.message) == (
        "input-type",
        SPEC,
        "a probe must be bytes-like, not str",
    )
    unknown = "unknown backend 'other' (expected 'struct' or 'construct')"
    with pytest.raises(InputTypeError) as b:
        cls.from_bytes(EXACT, backend="other")
    assert (b.value.rule, b.value.message) == ("backend", unknown)
    with pytest.raises(InputTypeError) as b:
        cls().to_bytes(backend="other")
    assert (b.value.rule, b.value.message) == ("backend", unknown)


def test_check_field_directly() -> None:
    cls = probe_class()
    kind, count, tag, port = cls.FIELDS
    assert check_field(kind, 0, SPEC) == 0
    assert check_field(kind, 255, SPEC) == 255
    assert check_field(count, 0xFFFF_FFFF, SPEC) == 0xFFFF_FFFF
    assert check_field(port, Kind.SEVEN, SPEC) == 7
    assert type(check_field(port, Kind.SEVEN, SPEC)) is int
    assert check_field(tag, bytearray(b"abc"), SPEC) == b"abc"
    for bad in (256, -1):
        with pytest.raises(FieldValueError) as e:
            check_field(kind, bad, SPEC)
        assert e.value.rule == "field-range"
    with pytest.raises(FieldValueError) as e:
        check_field(count, 1 << 32, SPEC)
    assert e.value.rule == "field-range"
    with pytest.raises(LengthError) as length:
        check_field(tag, b"abcd", SPEC)
    assert (length.value.spec, length.value.offset) == (SPEC, 5)


def test_struct_matches_schema_format() -> None:
    """The derived codec is the schema's layout, little-endian and unpadded."""
    cls = probe_class()
    assert cls._STRUCT.format in ("<BI3sH", "=BI3sH")
    assert struct.calcsize(cls._STRUCT.format) == SCHEMA.sizeof()
