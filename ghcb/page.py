"""The GHCB page as a typed, immutable record: parse, build, and the valid bitmap.

Layout: Linux ``struct ghcb`` (``arch/x86/include/asm/svm.h``), AMD GHCB spec (AMD pub.
56421) "GHCB layout"; the schema is :data:`ghcb.schemas.page.ghcb` and the field table
``spec/tables/page.toml``.

Valid bitmap (GHCB spec 'GHCB layout', Linux ``GHCB_BITMAP_IDX``): the 16 bytes at 0x3F0 are a
little-endian 128-bit map; a save-area field at byte offset *o* is marked valid by bit
``o // 8``. Only fields whose bit index is below 128 have one: ``x87_state_gpa`` (0x400 → bit
128) and the fields outside the save area (``shared_buffer``, ``protocol_version``,
``ghcb_usage``) have none, and asking about them raises :class:`~ghcb.errors.NoValidBitError`
rather than aliasing some other bit.

Backends: ``parse_page``/``build_page`` use one precompiled ``struct.Struct`` derived from the
schema (``backend="struct"``, the default and the fast path); ``backend="construct"`` runs the
interpreted ``construct`` schema, the reference implementation (tests run both).
"""

from __future__ import annotations

import operator
import struct
import types
from typing import TYPE_CHECKING, Final, Self, cast, final

import construct as cs

from ghcb._bytes import byte_view, view_bytes
from ghcb._fast import Backend, FlatField, backend_error, flat_fields, struct_format
from ghcb._record import check_field
from ghcb.codes import ExitCode
from ghcb.errors import (
    FieldValueError,
    InputTypeError,
    LengthError,
    NoValidBitError,
    UnknownFieldError,
)
from ghcb.schemas import page as schema

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "BITMAP_BITS",
    "FIELDS",
    "FIELD_NAMES",
    "GHCB_DEFAULT_USAGE",
    "GHCB_PROTOCOL_MAX",
    "GHCB_PROTOCOL_MIN",
    "VALID_BIT",
    "Backend",
    "GhcbPage",
    "build_page",
    "parse_page",
]

SPEC_LAYOUT: Final = "GHCB spec 'GHCB layout' / Linux svm.h struct ghcb"
SPEC_BITMAP: Final = "GHCB spec 'GHCB layout' / Linux svm.h GHCB_BITMAP_IDX"

#: ``GHCB_PROTOCOL_MIN`` / ``GHCB_PROTOCOL_MAX`` (Linux asm/sev.h; KVM GHCB_VERSION_MIN/MAX).
GHCB_PROTOCOL_MIN: Final = 1
GHCB_PROTOCOL_MAX: Final = 2
#: ``GHCB_DEFAULT_USAGE`` (asm/sev.h): the only ``ghcb_usage`` KVM accepts.
GHCB_DEFAULT_USAGE: Final = 0


#: Every leaf field of the page, in order, derived from the schema.
FIELDS: Final[tuple[FlatField, ...]] = flat_fields(schema.ghcb)
FIELD_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FIELDS)
_BY_NAME: Final[dict[str, FlatField]] = {f.name: f for f in FIELDS}
_INDEX: Final[dict[str, int]] = {f.name: i for i, f in enumerate(FIELDS)}
_PAGE_SIZE: Final = schema.GHCB_SIZE
_RESERVED: Final = frozenset(f.name for f in FIELDS if f.name.startswith("reserved_"))
#: Byte-array fields (reserved gaps, the bitmap, the shared buffer): sliced from the page's
#: bytes on access rather than copied at parse time.
_SLICED: Final = frozenset(f.name for f in FIELDS if f.kind == "bytes")
#: Every field, reserved bytes included: what an edit packs and ``GhcbPage.values`` unpacks.
_FORMAT: Final = struct_format(FIELDS)
_pack: Final = _FORMAT.pack
#: The decoded view kept beside the bytes: the integer fields (byte arrays skipped as pad).
_DECODED_FORMAT: Final = struct_format(FIELDS, skip=_SLICED)
_decode: Final = _DECODED_FORMAT.unpack
_DECODED_INDEX: Final[dict[str, int]] = {
    name: j for j, name in enumerate(n for n in (f.name for f in FIELDS) if n not in _SLICED)
}
_BYTE_FIELDS: Final = tuple(i for i, f in enumerate(FIELDS) if f.kind == "bytes")
_pick_byte_fields: Final = operator.itemgetter(*_BYTE_FIELDS)
_BYTE_FIELD_SIZES: Final = tuple(FIELDS[i].size for i in _BYTE_FIELDS)

_SAVE_NAMES: Final = tuple(f.name for f in flat_fields(schema.ghcb_save_area))
_BITMAP: Final = _BY_NAME["valid_bitmap"]
#: Number of bits in the valid bitmap (16 bytes).
BITMAP_BITS: Final = 8 * _BITMAP.size
_BITMAP_START: Final = _BITMAP.offset
_BITMAP_STOP: Final = _BITMAP.offset + _BITMAP.size
_EXIT_CODE_J: Final = _DECODED_INDEX["sw_exit_code"]


#: Valid-bitmap bit of each field that has one: bit = offset // 8 (``GHCB_BITMAP_IDX``).
#: Reserved gaps and the bitmap itself (bits 126-127 would cover it) have no bit.
VALID_BIT: Final[dict[str, int]] = {
    f.name: f.offset // 8
    for f in FIELDS
    if f.offset + f.size <= schema.GHCB_SAVE_AREA_SIZE
    and f.offset // 8 < BITMAP_BITS
    and f.name not in _RESERVED
    and f is not _BITMAP
}
_NAME_OF_BIT: Final[dict[int, str]] = {bit: name for name, bit in VALID_BIT.items()}
_DEFAULTS: Final[tuple[int | bytes, ...]] = tuple(
    0 if f.kind == "int" else bytes(f.size) for f in FIELDS
)


def _check_value(f: FlatField, value: object) -> int | bytes:
    """``value`` normalised for field ``f``, or a typed error naming the field and rule
    (:func:`ghcb._record.check_field`, the one field check; struct's "Ns" would silently pad or
    truncate a byte field, so its length is refused there)."""
    # The common case in one line; every mutant of this guard is equivalent (what it lets
    # through, check_field returns unchanged), hence no mutate.
    if type(value) is int and f.kind == "int" and 0 <= value <= f.max_value:  # pragma: no mutate
        return value
    return check_field(f, value, SPEC_LAYOUT)


def _field(name: str) -> FlatField:
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownFieldError(
            f"the GHCB page has no field {name!r}", rule="unknown-field", spec=SPEC_LAYOUT
        ) from None


def _bit(name: str) -> int:
    field = _field(name)
    try:
        return VALID_BIT[name]
    except KeyError:
        where = (
            f"its bit index {field.offset // 8} is past the {BITMAP_BITS}-bit map"
            if field.offset // 8 >= BITMAP_BITS
            else "it is not a save-area register field"
        )
        raise NoValidBitError(
            f"{name} has no valid-bitmap bit: {where}",
            rule="no-valid-bit",
            spec=SPEC_BITMAP,
            field=name,
            offset=field.offset,
        ) from None


class _from_empty_on_class:
    """Method decorator: on an instance, an ordinary method; on the class, the same method
    bound to the all-zero page, so ``GhcbPage.with_fields(rax=1)`` builds a new page."""

    def __init__(self, func: Callable[..., GhcbPage]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: GhcbPage | None, cls: type[GhcbPage]) -> Callable[..., GhcbPage]:
        return types.MethodType(self.func, _EMPTY if obj is None else obj)


@final
class GhcbPage:
    """An immutable GHCB page: every field of Linux ``struct ghcb``, reserved bytes included.

    Fields are named as in Linux (``rax``, ``sw_exit_code``, ``shared_buffer``, ...); integer
    fields are ``int``, byte regions (``shared_buffer``, ``valid_bitmap``, the
    ``reserved_0x<offset>`` gaps) are ``bytes`` of their exact length, so any 4096 bytes parse
    and build back unchanged. It is immutable and hashable; two pages are equal when their
    4096 bytes are. A page holds its exact bytes beside a tuple of its decoded integer fields,
    so ``build_page`` is free, byte fields are sliced from the bytes on access, and parsing
    costs one ``struct`` unpack (a 42-field frozen dataclass ``__init__`` alone costs ~5 us,
    8x that).

    Construct with keywords (unset fields are zero)::

        page = GhcbPage.empty().with_fields(sw_exit_code=ExitCode.CPUID, rax=0xD, rcx=1)

    Raises:
        UnknownFieldError: a keyword that is not a field.
        FieldValueError: an integer out of its field's range, or a value of the wrong type.
        LengthError: a byte field of the wrong length.
    """

    __slots__ = ("_b", "_v")
    _b: bytes
    _v: tuple[int, ...]

    # Linux struct ghcb_save_area
    reserved_0x0: bytes
    cpl: int
    reserved_0xcc: bytes
    xss: int
    reserved_0x148: bytes
    dr7: int
    reserved_0x168: bytes
    rip: int
    reserved_0x180: bytes
    rsp: int
    reserved_0x1e0: bytes
    rax: int
    reserved_0x200: bytes
    rcx: int
    rdx: int
    rbx: int
    reserved_0x320: bytes
    rbp: int
    rsi: int
    rdi: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    reserved_0x380: bytes
    sw_exit_code: int
    sw_exit_info_1: int
    sw_exit_info_2: int
    sw_scratch: int
    reserved_0x3b0: bytes
    xcr0: int
    valid_bitmap: bytes
    x87_state_gpa: int
    # Linux struct ghcb
    reserved_0x408: bytes
    shared_buffer: bytes
    reserved_0xff0: bytes
    protocol_version: int
    ghcb_usage: int

    def __new__(cls, **fields: object) -> Self:
        return _EMPTY._edit(fields, set_bits=False) if fields else _EMPTY

    @classmethod
    def empty(cls) -> Self:
        """The all-zero page."""
        return _EMPTY

    @classmethod
    def _from_values(cls, values: tuple[int | bytes, ...]) -> Self:
        """A page from every field's value in layout order (the construct backend's path)."""
        try:
            data = _pack(*values)
        except struct.error as e:
            raise _culprit(values) from e
        # struct's "Ns" pads or truncates silently: refuse any byte field of the wrong length.
        if tuple(map(len, _pick_byte_fields(values))) != _BYTE_FIELD_SIZES:
            raise _culprit(values)
        return parse_page(data)

    def _edit(self, values: Mapping[str, object], *, set_bits: bool) -> Self:
        """A copy with ``values`` written over this page's bytes (each one checked first)."""
        buf = bytearray(self._b)
        for name, value in values.items():
            field = _field(name)
            _PACK_INTO[name](buf, field.offset, _check_value(field, value))
            if set_bits and (bit := VALID_BIT.get(name)) is not None:
                buf[_BITMAP_START + (bit >> 3)] |= 1 << (bit & 7)
        return parse_page(bytes(buf))

    @property
    def values(self) -> tuple[int | bytes, ...]:
        """Every field's value, reserved gaps included, in layout order (:data:`FIELD_NAMES`)."""
        return cast("tuple[int | bytes, ...]", _FORMAT.unpack(self._b))

    # -- value semantics ----------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"GhcbPage is immutable: use replace() or with_fields() ({name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"GhcbPage is immutable ({name})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._b == other._b

    def __hash__(self) -> int:
        return hash(self._b)

    def __reduce__(self) -> tuple[object, ...]:
        return (parse_page, (self._b,))

    def __repr__(self) -> str:
        shown = [
            f"{name}={value:#x}" if isinstance(value, int) else f"{name}=<{len(value)} bytes>"
            for name, value, default in zip(FIELD_NAMES, self.values, _DEFAULTS, strict=True)
            if value != default
        ]
        return f"GhcbPage({', '.join(shown)})"

    def items(self) -> Iterator[tuple[str, int | bytes]]:
        """``(name, value)`` for every field, in layout order."""
        return zip(FIELD_NAMES, self.values, strict=True)

    # -- editing --------------------------------------------------------------------------
    @_from_empty_on_class
    def replace(self, **values: object) -> Self:
        """A copy with ``values`` set; the valid bitmap is left as it is (on the class: from
        the all-zero page)."""
        return self._edit(values, set_bits=False)

    @_from_empty_on_class
    def with_fields(self, **values: object) -> Self:
        """A copy with ``values`` set and, for each field that has one, its valid bit set.

        This is Linux's ``ghcb_set_<field>()``. Called on the class
        (``GhcbPage.with_fields(...)``) it starts from the all-zero page. Fields without a bit
        (``shared_buffer``,
        ``protocol_version``, ``ghcb_usage``, ``x87_state_gpa``, reserved gaps) are set without
        touching the bitmap; an explicit ``valid_bitmap`` is written as given.
        """
        return self._edit(values, set_bits="valid_bitmap" not in values)

    def cleared_bitmap(self) -> Self:
        """A copy with every valid bit clear (what KVM does after snapshotting the bitmap)."""
        return self._edit({"valid_bitmap": bytes(_BITMAP.size)}, set_bits=False)

    # -- the valid bitmap -----------------------------------------------------------------
    @property
    def valid_bits(self) -> int:
        """The valid bitmap as a little-endian 128-bit integer."""
        return int.from_bytes(self._b[_BITMAP_START:_BITMAP_STOP], "little")

    def is_valid(self, name: str) -> bool:
        """Whether ``name``'s valid bit is set (Linux ``ghcb_<field>_is_valid()``).

        Raises:
            UnknownFieldError: ``name`` is not a field.
            NoValidBitError: the field has no bit (e.g. ``x87_state_gpa``).
        """
        bit = _bit(name)
        return bool(self._b[_BITMAP_START + (bit >> 3)] >> (bit & 7) & 1)

    def get_if_valid(self, name: str) -> int:
        """The field's value if its valid bit is set, else 0 (``ghcb_get_<field>_if_valid``)."""
        return self._v[_DECODED_INDEX[name]] if self.is_valid(name) else 0

    @property
    def valid_fields(self) -> frozenset[str]:
        """Names of the fields whose valid bit is set."""
        bits = self.valid_bits
        return frozenset(name for name, bit in VALID_BIT.items() if bits >> bit & 1)

    @property
    def undefined_valid_bits(self) -> tuple[int, ...]:
        """Set bits of the bitmap that belong to no field (reserved gaps, the bitmap itself)."""
        bits = self.valid_bits
        return tuple(b for b in range(BITMAP_BITS) if bits >> b & 1 and b not in _NAME_OF_BIT)

    @property
    def exit_code(self) -> ExitCode | int:
        """``sw_exit_code`` as an :class:`ExitCode` when known, else the plain int."""
        return ExitCode.from_int(self._v[_EXIT_CODE_J])


_object_new: Final = object.__new__
_set_bytes: Final = GhcbPage.__dict__["_b"].__set__
_set_decoded: Final = GhcbPage.__dict__["_v"].__set__


def _decoded_getter(j: int) -> property:
    return property(lambda self: self._v[j], doc=f"decoded field {j}")


def _sliced_getter(start: int, stop: int) -> property:
    return property(lambda self: self._b[start:stop], doc=f"bytes [{start:#x}, {stop:#x})")


for _f in FIELDS:
    if _f.name in _SLICED:
        setattr(GhcbPage, _f.name, _sliced_getter(_f.offset, _f.offset + _f.size))
    else:
        setattr(GhcbPage, _f.name, _decoded_getter(_DECODED_INDEX[_f.name]))
del _f

#: One ``pack_into`` per field, derived from its struct code: edits write in place.
_PACK_INTO: Final = {f.name: struct.Struct("<" + f.fmt).pack_into for f in FIELDS}


def require_page(page: object, caller: str) -> None:
    """Raise InputTypeError unless ``page`` is a :class:`GhcbPage` (``caller`` names the API)."""
    if not isinstance(page, GhcbPage):
        raise InputTypeError(
            f"{caller} needs a GhcbPage, not {type(page).__name__}",
            rule="input-type",
            spec=SPEC_LAYOUT,
        )


def parse_page(data: bytes | bytearray | memoryview, *, backend: Backend = "struct") -> GhcbPage:
    """Decode exactly 4096 bytes into a :class:`GhcbPage`.

    Args:
        data: the page: any buffer of bytes, strided views included (:mod:`ghcb._bytes`).
            Shorter or longer input is refused (no silent truncation).
        backend: ``"struct"`` (fast, default) or ``"construct"`` (the reference schema).

    Raises:
        InputTypeError: ``data`` is not bytes-like (not a buffer, a released memoryview, or
            a buffer of wider items).
        LengthError: ``len(data) != 4096``.
    """
    if type(data) is bytes and len(data) == _PAGE_SIZE and backend == "struct":
        # Hot path: keep the (immutable) input, decode the fields with one unpack.
        page = _object_new(GhcbPage)
        _set_bytes(page, data)
        _set_decoded(page, _decode(data))
        return page
    view = byte_view(data, what="a GHCB page", spec=SPEC_LAYOUT)
    if len(view) != _PAGE_SIZE:
        raise LengthError(
            f"a GHCB page is {_PAGE_SIZE} bytes, got {len(view)}",
            rule="page-length",
            spec=SPEC_LAYOUT,
        )
    if backend == "struct":
        return parse_page(view_bytes(view))
    if backend == "construct":
        # The reference path: every value comes from the construct schema, and the page's
        # bytes are re-encoded from those values (never copied from the input).
        try:
            parsed = schema.ghcb.parse(view_bytes(view))
        except cs.ConstructError as e:  # pragma: no cover - length is checked above
            msg = str(e)  # pragma: no mutate
            raise LengthError(msg, rule="page-length", spec=SPEC_LAYOUT) from e  # pragma: no mutate
        flat = {**parsed["save"], **parsed}
        return GhcbPage._from_values(tuple(flat[name] for name in FIELD_NAMES))
    raise backend_error(backend)


def build_page(page: GhcbPage, *, backend: Backend = "struct") -> bytes:
    """The exact 4096 bytes of a :class:`GhcbPage`.

    With the default backend this is the bytes the page was parsed from or packed into when it
    was made (a page is always valid: its constructors check every value). ``"construct"``
    re-encodes every field through the reference schema.

    Raises:
        InputTypeError: ``page`` is not a :class:`GhcbPage`.
    """
    require_page(page, "build_page")
    if backend == "struct":
        return page._b
    if backend == "construct":
        values = dict(page.items())
        save = {name: values[name] for name in _SAVE_NAMES}
        out: bytes = schema.ghcb.build({**values, "save": save})
        return out
    raise backend_error(backend)


def _culprit(values: tuple[object, ...]) -> FieldValueError | LengthError:
    """The typed error for the first of ``values`` that does not fit its field."""
    for field, value in zip(FIELDS, values, strict=True):
        try:
            _check_value(field, value)
        except (FieldValueError, LengthError) as e:
            return e
    # Unreachable while _check_value accepts only what struct packs; kept so that a new field
    # kind still ends in a typed error (not mutation-tested: no input can reach it).
    why = "page does not encode"  # pragma: no mutate
    return FieldValueError(why, rule="field-range", spec=SPEC_LAYOUT)  # pragma: no mutate


#: The all-zero page (``GhcbPage()`` and ``GhcbPage.empty()`` return it).
_EMPTY: Final = GhcbPage._from_values(_DEFAULTS)
