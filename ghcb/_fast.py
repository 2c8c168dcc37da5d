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
from dataclasses import dataclass
from typing import Any, Literal

import construct as cs

__all__ = ["Backend", "BitField", "FlatField", "bit_fields", "flat_fields", "struct_format"]

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

    @property
    def mask(self) -> int:
        """The field's mask, before shifting (``2**width - 1``)."""
        return (1 << self.width) - 1


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
