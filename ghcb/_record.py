"""Records declared by one flat ``construct`` schema (:class:`SchemaRecord`).

A :class:`SchemaRecord` subclass is the immutable, typed record of one fixed-size schema: its
fields, their checks and the precompiled ``struct`` codec all come from the schema
(:func:`ghcb._fast.flat_fields`), so nobody types an offset twice (DESIGN §1.3). The attestation
report (:mod:`ghcb.report`), the TCB layouts (:mod:`ghcb.tcb`) and the guest-message header and
payloads (:mod:`ghcb.guest_msg`) are declared this way.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from ghcb._bytes import byte_string, byte_view, view_bytes
from ghcb._fast import Backend, FlatField, backend_error, flat_fields, struct_format
from ghcb.errors import FieldValueError, InputTypeError, LengthError, UnknownFieldError

if TYPE_CHECKING:
    import struct
    from collections.abc import Callable, Mapping

    import construct as cs

__all__ = ["SchemaRecord", "check_field"]


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    """Base of an immutable record of one fixed-size, flat ``construct`` schema.

    A subclass is a frozen slotted dataclass whose fields are the schema's members, in order,
    and sets ``SCHEMA``, ``SPEC`` (the rule source named in errors) and ``WHAT`` (how errors
    name the structure); ``ENUMS`` maps a field to the tolerant ``from_int`` that decodes it.
    Construction checks every value (an int in its field's range, bytes of the exact length;
    any byte buffer is accepted and kept as ``bytes``), so a record always encodes.
    """

    SCHEMA: ClassVar[cs.Struct]
    SPEC: ClassVar[str]
    WHAT: ClassVar[str]
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {}
    FIELDS: ClassVar[tuple[FlatField, ...]]
    SIZE: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]
    # (name, is_int, max value or exact length, field) per field: the common case checked inline
    _PLAN: ClassVar[tuple[tuple[str, bool, int, FlatField], ...]]
    # the slot setters of the fields, in layout order (set once @dataclass made the slots)
    _SETTERS: ClassVar[tuple[Callable[[object, object], None], ...]] = ()
    _BY_NAME: ClassVar[dict[str, FlatField]]
    _DEFAULTS: ClassVar[dict[str, int | bytes]]

    def __init_subclass__(cls) -> None:
        # (no zero-argument super() here: @dataclass(slots=True) replaces the class)
        if "SCHEMA" in cls.__dict__:
            cls.FIELDS = flat_fields(cls.SCHEMA)
            cls._STRUCT = struct_format(cls.FIELDS)
            cls.SIZE = cls._STRUCT.size
            cls._BY_NAME = {f.name: f for f in cls.FIELDS}
            cls._PLAN = tuple(
                (f.name, f.kind == "int", f.max_value if f.kind == "int" else f.size, f)
                for f in cls.FIELDS
            )
        slots = [cls.__dict__.get(f.name) for f in getattr(cls, "FIELDS", ())]
        if slots and all(isinstance(d, types.MemberDescriptorType) for d in slots):
            cls._SETTERS = tuple(d.__set__ for d in slots)  # type: ignore[union-attr]

    def __post_init__(self) -> None:
        for name, is_int, limit, f in self._PLAN:
            value = getattr(self, name)
            if is_int:
                if type(value) is int and 0 <= value <= limit:
                    continue
            elif type(value) is bytes and len(value) == limit:
                continue
            object.__setattr__(self, name, check_field(f, value, self.SPEC))
        for name, from_int in self.ENUMS.items():
            object.__setattr__(self, name, from_int(getattr(self, name)))

    @classmethod
    def _trusted(cls, values: tuple[Any, ...]) -> Self:
        """A record from values that the schema's own decoder produced (not re-checked)."""
        obj = object.__new__(cls)
        for set_slot, value in zip(cls._SETTERS, values, strict=True):
            set_slot(obj, value)
        for name, from_int in cls.ENUMS.items():
            object.__setattr__(obj, name, from_int(getattr(obj, name)))
        return obj

    @classmethod
    def pack(cls, **values: object) -> bytes:
        """The ``SIZE`` bytes of the record with ``values`` set and every other field at its
        default, without building the record (each value is checked as construction does).

        Raises:
            UnknownFieldError: a name that is not a field.
            FieldValueError / LengthError: as construction.
        """
        fields = dict(cls._defaults())
        for name, value in values.items():
            f = cls._BY_NAME.get(name)
            if f is None:
                raise UnknownFieldError(
                    f"{cls.WHAT} has no field {name!r}", rule="unknown-field", spec=cls.SPEC
                )
            fields[name] = check_field(f, value, cls.SPEC)
        return cls._STRUCT.pack(*fields.values())

    @classmethod
    def _defaults(cls) -> dict[str, int | bytes]:
        defaults: dict[str, int | bytes] | None = cls.__dict__.get("_DEFAULTS")
        if defaults is None:
            defaults = {
                name: int(v) if isinstance(v, int) else v for name, v in cls().fields().items()
            }
            cls._DEFAULTS = defaults
        return defaults

    @classmethod
    def from_bytes(cls, data: object, *, backend: Backend = "struct") -> Self:
        """Decode exactly ``SIZE`` bytes.

        Raises:
            InputTypeError: ``data`` is not bytes-like.
            LengthError: ``len(data) != SIZE``.
        """
        view = byte_view(data, what=cls.WHAT, spec=cls.SPEC)
        if len(view) != cls.SIZE:
            raise LengthError(
                f"{cls.WHAT} is {cls.SIZE} bytes, got {len(view)}",
                rule="length",
                spec=cls.SPEC,
            )
        if backend == "struct":
            return cls._trusted(cls._STRUCT.unpack(view))
        if backend == "construct":
            parsed = cls.SCHEMA.parse(view_bytes(view))
            return cls(**{f.name: parsed[f.name] for f in cls.FIELDS})
        raise backend_error(backend)

    def to_bytes(self, *, backend: Backend = "struct") -> bytes:
        """The record's exact ``SIZE`` bytes."""
        if backend == "struct":
            return self._STRUCT.pack(*self.values())
        if backend == "construct":
            out: bytes = self.SCHEMA.build(self.fields())
            return out
        raise backend_error(backend)

    def values(self) -> tuple[int | bytes, ...]:
        """Every field's value, reserved ones included, in layout order."""
        return tuple(getattr(self, f.name) for f in self.FIELDS)

    def fields(self) -> dict[str, int | bytes]:
        """Every field's value by name, in layout order."""
        return {f.name: getattr(self, f.name) for f in self.FIELDS}


def check_field(f: FlatField, value: object, spec: str) -> int | bytes:
    """``value`` checked for ``f`` (bytes-like values returned as ``bytes``)."""
    if f.kind == "int":
        # A fast path: its mutants are equivalent (what it lets through, the checks below
        # return unchanged), hence no mutate.
        if type(value) is int and 0 <= value <= f.max_value:  # pragma: no mutate
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldValueError(
                f"{f.name} must be an int, not {type(value).__name__}",
                rule="field-type",
                spec=spec,
                field=f.name,
                offset=f.offset,
            )
        if not 0 <= value <= f.max_value:
            raise FieldValueError(
                f"{f.name} = {value} does not fit in {f.size} byte(s) (0..{f.max_value:#x})",
                rule="field-range",
                spec=spec,
                field=f.name,
                offset=f.offset,
            )
        return int(value)  # an IntEnum member is kept as its plain value
    try:
        data = byte_string(value, what=f.name, spec=spec)
    except InputTypeError as e:
        raise FieldValueError(
            e.message, rule="field-type", spec=spec, field=f.name, offset=f.offset
        ) from e
    if len(data) != f.size:
        raise LengthError(
            f"{f.name} must be exactly {f.size} bytes, got {len(data)}",
            rule="field-length",
            spec=spec,
            field=f.name,
            offset=f.offset,
        )
    return data
