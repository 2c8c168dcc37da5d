"""Fast codecs derived from the ``construct`` schemas at import time.

Nobody types an offset twice: :func:`flat_fields` walks a byte-level ``Struct`` (nested
structs are flattened) and yields each field's name, offset, size and kind, from which
:func:`struct_format` builds one precompiled ``struct.Struct``. :func:`bit_fields` does the
same for a little-endian integer described as ``ByteSwapped(BitStruct(...))`` (the GHCB MSR
values, the event-injection format): it yields each field's shift and width.

Only integer and fixed-length ``Bytes`` members are supported; anything else is a schema
error and raises at import.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import construct as cs

from ghcb.errors import FieldValueError, InputTypeError

__all__ = [
    "Backend",
    "BitField",
    "FlatField",
    "U64Record",
    "backend_error",
    "bit_fields",
    "check_int",
    "flat_fields",
    "struct_format",
]

#: Which codec runs: the precompiled ``struct`` (fast path) or the interpreted ``construct``
#: schema (the reference). Every codec test runs on both.
Backend = Literal["struct", "construct"]


@dataclass(frozen=True, slots=True)
class FlatField:
    """One leaf field of a byte-level schema."""

    name: str
    offset: int
    size: int
    kind: Literal["int", "bytes"]
    fmt: str  # the struct format code of this field: "B", "H", "I", "Q" or "<n>s"

    @property
    def max_value(self) -> int:
        """Largest value of an integer field (``2**(8*size) - 1``)."""
        return (1 << (8 * self.size)) - 1


_INT_CODES = {"<B": "B", "<H": "H", "<I": "I", "<L": "I", "<Q": "Q"}


def flat_fields(schema: cs.Construct[Any, Any], _base: int = 0) -> tuple[FlatField, ...]:
    """Leaf fields of ``schema`` (a ``Struct``), in order, with absolute offsets."""
    if not isinstance(schema, cs.Struct):
        raise TypeError(f"expected a construct Struct, got {type(schema).__name__}")
    out: list[FlatField] = []
    offset = _base
    for member in schema.subcons:
        if not isinstance(member, cs.Renamed) or not member.name:
            raise TypeError(f"unnamed member in schema at offset {offset:#x}")
        inner = member.subcon
        if isinstance(inner, cs.Struct):
            out.extend(flat_fields(inner, offset))
        elif isinstance(inner, cs.FormatField) and inner.fmtstr in _INT_CODES:
            code = _INT_CODES[inner.fmtstr]
            out.append(FlatField(member.name, offset, inner.length, "int", code))
        elif isinstance(inner, cs.Bytes) and isinstance(inner.length, int):
            out.append(FlatField(member.name, offset, inner.length, "bytes", f"{inner.length}s"))
        else:
            raise TypeError(f"unsupported member {member.name!r}: {type(inner).__name__}")
        offset += member.sizeof()
    return tuple(out)


def struct_format(
    fields: tuple[FlatField, ...], *, skip: frozenset[str] = frozenset()
) -> struct.Struct:
    """One little-endian ``struct.Struct`` covering ``fields`` back to back (no gaps).

    Fields named in ``skip`` become pad bytes (``"<n>x"``): not decoded, zero when packed.
    """
    pos = fields[0].offset if fields else 0
    for f in fields:
        if f.offset != pos:
            raise ValueError(f"gap before field {f.name!r} at {f.offset:#x}")
        pos += f.size
    return struct.Struct("<" + "".join(f"{f.size}x" if f.name in skip else f.fmt for f in fields))


@dataclass(frozen=True, slots=True)
class BitField:
    """One field of a little-endian integer described bit by bit."""

    name: str
    shift: int
    width: int
    const: int | None  # the value a Const() member must have, else None
    #: The field's mask, before shifting (``2**width - 1``); computed once (the MSR and
    #: EXITINFO codecs read it for every field of every value).
    mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", (1 << self.width) - 1)


def bit_fields(schema: cs.Construct[Any, Any]) -> tuple[BitField, ...]:
    """Fields of ``ByteSwapped(BitStruct(...))``, MSB first, with their shifts."""
    swapped = schema
    if not isinstance(swapped, cs.Transformed) or not isinstance(swapped.subcon, cs.Transformed):
        raise TypeError("expected ByteSwapped(BitStruct(...))")
    inner = swapped.subcon.subcon
    if not isinstance(inner, cs.Struct):
        raise TypeError("expected ByteSwapped(BitStruct(...))")
    total = 8 * schema.sizeof()
    out: list[BitField] = []
    used = 0
    for member in inner.subcons:
        if not isinstance(member, cs.Renamed) or not member.name:
            raise TypeError("unnamed member in bit schema")
        sub = member.subcon
        const: int | None = None
        if isinstance(sub, cs.Const):
            const = int(sub.value)
            sub = sub.subcon
        if isinstance(sub, cs.BitsInteger) and isinstance(sub.length, int):
            width = sub.length
        elif sub is cs.Flag:
            width = 1
        else:
            raise TypeError(f"unsupported bit member {member.name!r}: {type(sub).__name__}")
        used += width
        out.append(BitField(member.name, total - used, width, const))
    if used != total:
        raise ValueError(f"bit schema covers {used} of {total} bits")
    return tuple(out)


def backend_error(backend: object) -> InputTypeError:
    """The error for a backend name that is not one of :data:`Backend`."""
    return InputTypeError(
        f"unknown backend {backend!r} (expected 'struct' or 'construct')",
        rule="backend",
        spec="ghcb API",
    )


def check_int(value: object, maximum: int, what: str, spec: str) -> int:
    """``value`` if it is an int in ``0..maximum``, else a typed error naming ``what``."""
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


_U64_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class U64Record:
    """Base of the records of one 64-bit value described by a bit schema.

    A subclass declares its fields (named as the schema's members) and sets ``FIELDS`` (from
    :func:`bit_fields`) and ``SPEC``; construction checks every field's width, ``encode``
    packs, ``decode`` splits any u64 (reserved bits kept, so decode/encode round-trips).
    """

    FIELDS: ClassVar[tuple[BitField, ...]]
    SPEC: ClassVar[str]

    def __post_init__(self) -> None:
        for f in self.FIELDS:
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= f.mask:
                raise FieldValueError(
                    f"{type(self).__name__}.{f.name} = {value!r} does not fit in {f.width} "
                    f"bit(s) [{f.shift + f.width - 1}:{f.shift}]",
                    rule="field-range",
                    spec=self.SPEC,
                    field=f.name,
                )

    def encode(self) -> int:
        """The 64-bit value."""
        value = 0
        for f in self.FIELDS:
            value |= getattr(self, f.name) << f.shift
        return value

    @classmethod
    def decode(cls, value: int) -> Self:
        """Split a 64-bit value into the record's fields (reserved bits kept).

        Raises:
            FieldValueError: ``value`` is not a u64.
            InputTypeError: ``value`` is not an int.
        """
        value = check_int(value, _U64_MAX, cls.__name__, cls.SPEC)
        return cls(**{f.name: value >> f.shift & f.mask for f in cls.FIELDS})

    def fields(self) -> dict[str, int]:
        """The record's fields (reserved ranges included) by name."""
        return {f.name: getattr(self, f.name) for f in self.FIELDS}
