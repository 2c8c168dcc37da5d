"""Page State Change (PSC) descriptors: typed records, parse, build and check.

A PSC descriptor is what an SNP guest puts in the GHCB shared buffer (``sw_scratch`` points at
it) for ``SVM_VMGEXIT_PSC`` (0x80000010): an 8-byte header (``cur_entry``, ``end_entry``, a
reserved u32) and up to ``VMGEXIT_PSC_MAX_COUNT`` (253) 8-byte entries, each one GFN, an
operation (:class:`~ghcb.codes.PscOp`), a page size (4 KiB or 2 MiB) and ``cur_page``, the
pages of the entry already done. Sources: GHCB spec (AMD pub. 56421) "Page State Change";
Linux ``arch/x86/include/asm/sev-common.h`` (``struct psc_hdr``, ``struct psc_entry``),
KVM ``arch/x86/kvm/svm/sev.c`` ``snp_begin_psc`` (the checks :func:`check_psc` reports);
ghcb-facts.md §7. The layouts are the schemas of :mod:`ghcb.schemas.psc`.

* :func:`parse_psc` reads a descriptor (the header and every whole entry the bytes hold; a
  dump of the whole shared buffer is 2032 bytes, 253 entries) into a :class:`PscDesc`. It
  checks only the structure: a length that is not 8 + 8·n, or more than 253 entries, raises a
  :class:`~ghcb.errors.LengthError`; reserved bits and bad entries are kept as they are, so
  ``build_psc(parse_psc(data)) == data`` for every descriptor it accepts.
* :func:`build_psc` packs a :class:`PscDesc`, or entries with a header (``end_entry``
  defaults to the last entry, as Linux's ``set_pages_state`` sets it).
* :func:`check_psc` reports every rule the descriptor breaks as a
  :class:`~ghcb.errors.Violation`, with what KVM answers for it (``VMGEXIT_PSC_ERROR_*``).
* :meth:`PscDesc.to_json` is the decoded descriptor as one JSON object (``ghcb psc decode``).

What KVM *does* with a descriptor (its exits to userspace, partial progress, the answer in
SW_EXITINFO2) is :mod:`ghcb.hypervisor.psc`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import construct as cs

from ghcb._bytes import byte_string
from ghcb._fast import BitField, U64Record, backend_error, bit_fields, check_int, flat_fields
from ghcb.codes import MsrCode, PscErr, PscOp
from ghcb.errors import FieldValueError, InputTypeError, LengthError, Severity, Violation
from ghcb.schemas.psc import (
    PSC_ENTRY_SIZE,
    PSC_HDR_SIZE,
    PSC_PAGES_2M,
    PSC_PAGES_4K,
    VMGEXIT_PSC_MAX_COUNT,
    psc_buffer,
    psc_entry,
    psc_hdr,
)

if TYPE_CHECKING:
    from ghcb._fast import Backend

__all__ = [
    "GHCB_MSR_PSC_RESP_ERROR",
    "PSC_MAX_BYTES",
    "PscDesc",
    "PscEntry",
    "PscHdr",
    "build_psc",
    "check_psc",
    "parse_psc",
]

SPEC: Final = "GHCB spec: Page State Change / Linux sev-common.h struct psc_hdr, psc_entry"
SPEC_KVM: Final = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc"
#: The longest descriptor: the header and ``VMGEXIT_PSC_MAX_COUNT`` entries (the whole GHCB
#: shared buffer).
PSC_MAX_BYTES: Final = PSC_HDR_SIZE + VMGEXIT_PSC_MAX_COUNT * PSC_ENTRY_SIZE

#: ``GHCB_MSR_PSC_RESP_ERROR`` (sev-common.h: ``BIT_ULL(63) | GHCB_MSR_PSC_RESP``): the whole
#: GHCB MSR value KVM answers a failed MSR page state change with.
GHCB_MSR_PSC_RESP_ERROR: Final = 1 << 63 | int(MsrCode.PSC_RESP)

_ENTRY_FIELDS: Final[tuple[BitField, ...]] = bit_fields(psc_entry)
_HDR: Final = flat_fields(psc_hdr)
_HDR_STRUCT: Final = struct.Struct("<" + "".join(f.fmt for f in _HDR))


@dataclass(frozen=True, slots=True, kw_only=True)
class PscEntry(U64Record):
    """One ``struct psc_entry``: a little-endian u64 (bits per :mod:`ghcb.schemas.psc`).

    ``encode()`` gives the u64, ``PscEntry.decode(value)`` splits any u64 (reserved bits
    kept).
    """

    FIELDS: ClassVar[tuple[BitField, ...]] = _ENTRY_FIELDS
    SPEC: ClassVar[str] = SPEC
    cur_page: int = 0
    gfn: int = 0
    operation: int = 0
    pagesize: int = 0
    reserved_63_57: int = 0

    @property
    def op(self) -> PscOp | int:
        """The operation as a :class:`~ghcb.codes.PscOp` (an unknown one as its int)."""
        return PscOp.from_int(self.operation)

    @property
    def npages(self) -> int:
        """Pages the entry covers: 512 for a 2 MiB entry, else 1 (``snp_begin_psc``)."""
        return PSC_PAGES_2M if self.pagesize else PSC_PAGES_4K

    @property
    def gpa(self) -> int:
        """The guest-physical address of the entry's first page (``gfn_to_gpa``)."""
        return self.gfn << 12

    def to_bytes(self) -> bytes:
        """The 8 bytes of the entry."""
        return self.encode().to_bytes(PSC_ENTRY_SIZE, "little")


_HDR_MAX: Final = {f.name: f.max_value for f in _HDR}


@dataclass(frozen=True, slots=True, kw_only=True)
class PscHdr:
    """``struct psc_hdr``: the next entry to process, the last one, and a reserved u32."""

    cur_entry: int = 0
    end_entry: int = 0
    reserved_0x4: int = 0

    def __post_init__(self) -> None:
        for name, maximum in _HDR_MAX.items():
            check_int(getattr(self, name), maximum, f"psc_hdr.{name}", SPEC)

    def to_bytes(self) -> bytes:
        """The 8 bytes of the header."""
        return _HDR_STRUCT.pack(self.cur_entry, self.end_entry, self.reserved_0x4)


@dataclass(frozen=True, slots=True)
class PscDesc:
    """A PSC descriptor: the header and every entry its bytes hold (live or not)."""

    hdr: PscHdr
    entries: tuple[PscEntry, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.hdr, PscHdr):
            raise InputTypeError(
                f"PscDesc.hdr must be a PscHdr, not {type(self.hdr).__name__}",
                rule="input-type",
                spec=SPEC,
            )
        object.__setattr__(self, "entries", _entry_tuple(self.entries))

    @property
    def cur_entry(self) -> int:
        """``hdr.cur_entry``."""
        return self.hdr.cur_entry

    @property
    def end_entry(self) -> int:
        """``hdr.end_entry``."""
        return self.hdr.end_entry

    @property
    def live(self) -> tuple[PscEntry, ...]:
        """The entries still to process: ``cur_entry`` .. ``end_entry`` (those present)."""
        return self.entries[self.hdr.cur_entry : self.hdr.end_entry + 1]

    def to_bytes(self) -> bytes:
        """The descriptor's bytes (:func:`build_psc`)."""
        return build_psc(self)

    def to_json(self) -> dict[str, object]:
        """The descriptor as one JSON object (integers; names for known operations):
        ``cur_entry``, ``end_entry``, ``reserved_0x4`` and ``entries``, each with ``index``,
        ``offset`` (in the descriptor), ``live`` (``cur_entry`` <= index <= ``end_entry``),
        its fields, ``operation`` as ``{"value", "name"}``, ``npages`` and ``gpa``."""
        hdr = self.hdr
        return {
            "cur_entry": hdr.cur_entry,
            "end_entry": hdr.end_entry,
            "reserved_0x4": hdr.reserved_0x4,
            "entries": [
                {
                    "index": i,
                    "offset": PSC_HDR_SIZE + i * PSC_ENTRY_SIZE,
                    "live": hdr.cur_entry <= i <= hdr.end_entry,
                    "cur_page": e.cur_page,
                    "gfn": e.gfn,
                    "gpa": e.gpa,
                    "operation": {
                        "value": e.operation,
                        "name": e.op.name if isinstance(e.op, PscOp) else None,
                    },
                    "pagesize": e.pagesize,
                    "npages": e.npages,
                    "reserved_63_57": e.reserved_63_57,
                }
                for i, e in enumerate(self.entries)
            ],
        }


def _entry_tuple(entries: object) -> tuple[PscEntry, ...]:
    if isinstance(entries, (str, bytes, bytearray)) or not isinstance(entries, Sequence):
        raise InputTypeError(
            f"PSC entries must be a sequence of PscEntry, not {type(entries).__name__}",
            rule="input-type",
            spec=SPEC,
        )
    out = tuple(entries)
    bad = next((i for i, entry in enumerate(out) if not isinstance(entry, PscEntry)), None)
    if bad is not None:
        raise InputTypeError(
            f"PSC entry {bad} must be a PscEntry, not {type(out[bad]).__name__}",
            rule="input-type",
            spec=SPEC,
            offset=PSC_HDR_SIZE + bad * PSC_ENTRY_SIZE,
        )
    if len(out) > VMGEXIT_PSC_MAX_COUNT:
        raise LengthError(
            f"a PSC descriptor holds at most {VMGEXIT_PSC_MAX_COUNT} entries, not {len(out)}",
            rule="psc-too-long",
            spec=SPEC,
            field="entries",
        )
    return out


# -- parse ------------------------------------------------------------------------------------
def _data(data: object) -> bytes:
    raw = byte_string(data, what="a PSC descriptor", spec=SPEC)
    size = len(raw)
    if size < PSC_HDR_SIZE:
        raise LengthError(
            f"a PSC descriptor is at least its {PSC_HDR_SIZE}-byte header, not {size} bytes",
            rule="psc-length",
            spec=SPEC,
            offset=size,
        )
    if size > PSC_MAX_BYTES:
        raise LengthError(
            f"a PSC descriptor is at most {PSC_MAX_BYTES} bytes (the GHCB shared buffer: "
            f"{VMGEXIT_PSC_MAX_COUNT} entries), not {size}",
            rule="psc-too-long",
            spec=SPEC,
            offset=PSC_MAX_BYTES,
        )
    partial = (size - PSC_HDR_SIZE) % PSC_ENTRY_SIZE
    if partial:
        raise LengthError(
            f"a PSC descriptor is the header and whole {PSC_ENTRY_SIZE}-byte entries; "
            f"{partial} byte(s) of a partial entry end it",
            rule="psc-length",
            spec=SPEC,
            offset=size - partial,
        )
    return raw


def parse_psc(data: object, *, backend: Backend = "struct") -> PscDesc:
    """Parse a PSC descriptor: the header and every whole entry in ``data``.

    Args:
        data: 8 + 8·n bytes, n <= 253 (a bytes-like object), e.g. the GHCB shared buffer.
        backend: ``"struct"`` (fast) or ``"construct"`` (the reference schema).

    Returns:
        The descriptor, reserved bits and out-of-range values kept as they are.

    Raises:
        LengthError: shorter than the header (``psc-length``), a partial entry at the end
            (``psc-length``), or more than 253 entries (``psc-too-long``); ``offset`` says
            where.
        InputTypeError: ``data`` is not bytes-like, or ``backend`` is unknown.
    """
    if backend not in ("struct", "construct"):
        raise backend_error(backend)
    raw = _data(data)
    if backend == "construct":
        try:
            parsed = psc_buffer.parse(raw)
        except cs.ConstructError as e:  # unreachable after the length checks; wrapped anyway
            raise LengthError(str(e), rule="psc-length", spec=SPEC) from e
        hdr = PscHdr(**{f.name: int(parsed.hdr[f.name]) for f in _HDR})
        entries = tuple(
            PscEntry(**{f.name: int(e[f.name]) for f in _ENTRY_FIELDS}) for e in parsed.entries
        )
        return PscDesc(hdr, entries)
    cur, end, reserved = _HDR_STRUCT.unpack_from(raw, 0)
    values = struct.unpack_from(f"<{(len(raw) - PSC_HDR_SIZE) // 8}Q", raw, PSC_HDR_SIZE)
    return PscDesc(
        PscHdr(cur_entry=cur, end_entry=end, reserved_0x4=reserved),
        tuple(PscEntry.decode(v) for v in values),
    )


# -- build ------------------------------------------------------------------------------------
def build_psc(
    desc: PscDesc | Sequence[PscEntry],
    *,
    cur_entry: int = 0,
    end_entry: int | None = None,
    reserved: int = 0,
    backend: Backend = "struct",
) -> bytes:
    """The bytes of a PSC descriptor.

    Args:
        desc: a :class:`PscDesc` (the keyword arguments are then not allowed), or its entries.
        cur_entry: the header's ``cur_entry`` (the guest starts at 0).
        end_entry: the header's ``end_entry``; by default the index of the last entry (0 for
            no entries).
        reserved: the header's reserved u32.
        backend: ``"struct"`` or ``"construct"``.

    Raises:
        FieldValueError: a header value outside its field, or keywords given with a
            :class:`PscDesc`.
        LengthError: more than 253 entries.
        InputTypeError: not a descriptor / entries, or an unknown backend.
    """
    if backend not in ("struct", "construct"):
        raise backend_error(backend)
    if isinstance(desc, PscDesc):
        if cur_entry or end_entry is not None or reserved:
            raise FieldValueError(
                "build_psc: the header comes from the PscDesc; give no header keywords",
                rule="psc-header-twice",
                spec=SPEC,
            )
        full = desc
    else:
        entries = _entry_tuple(desc)
        last = len(entries) - 1 if entries else 0
        hdr = PscHdr(
            cur_entry=cur_entry,
            end_entry=last if end_entry is None else end_entry,
            reserved_0x4=reserved,
        )
        full = PscDesc(hdr, entries)
    if backend == "construct":
        obj = {
            "hdr": {f.name: getattr(full.hdr, f.name) for f in _HDR},
            "entries": [e.fields() for e in full.entries],
        }
        return bytes(psc_buffer.build(obj))
    body = struct.pack(f"<{len(full.entries)}Q", *(e.encode() for e in full.entries))
    return full.hdr.to_bytes() + body


# -- check ------------------------------------------------------------------------------------
def _violation(
    code: str, severity: Severity, offset: int | None, message: str, spec: str = SPEC_KVM
) -> Violation:
    return Violation(code=code, severity=severity, offset=offset, message=message, spec=spec)


def check_psc(data: object, *, max_entries: int | None = None) -> list[Violation]:
    """Every rule a PSC descriptor breaks, in one pass.

    Errors are what KVM refuses (``snp_begin_psc``): ``psc-length`` / ``psc-too-long``
    (unusable bytes; nothing else is checked), ``psc-end-entry`` (``end_entry`` at or past the
    entries the buffer holds: VMGEXIT_PSC_ERROR_INVALID_HDR), ``psc-entry-cur-page`` and
    ``psc-entry-unaligned`` (a live entry whose ``cur_page`` exceeds its pages, or a 2 MiB
    entry whose GFN is not 512-aligned: VMGEXIT_PSC_ERROR_INVALID_ENTRY). Warnings are what
    KVM accepts but is probably not meant: ``psc-cur-entry`` (``cur_entry`` past
    ``end_entry``: KVM answers success and does nothing), ``psc-entry-operation`` (an
    operation other than private/shared — PSMASH, UNSMASH or undefined: KVM marks it done
    without any action), ``psc-hdr-reserved`` / ``psc-entry-reserved`` (non-zero reserved
    bits, ignored by KVM; Linux fails a response whose header reserved field is not 0).

    Args:
        data: the descriptor bytes, as :func:`parse_psc` takes them.
        max_entries: the entries KVM can see (``(ghcb_sa_len - 8) / 8``); by default the
            entries ``data`` holds.
    """
    try:
        desc = parse_psc(data)
    except LengthError as e:
        return [_violation(e.rule, Severity.ERROR, e.offset, e.message, e.spec)]
    count = len(desc.entries) if max_entries is None else max_entries
    check_int(count, VMGEXIT_PSC_MAX_COUNT, "max_entries", SPEC)
    out: list[Violation] = []
    hdr = desc.hdr
    if hdr.end_entry >= count:
        out.append(
            _violation(
                "psc-end-entry",
                Severity.ERROR,
                2,
                f"end_entry {hdr.end_entry} is not below the {count} entries the buffer holds: "
                f"KVM answers INVALID_HDR ({PscErr.INVALID_HDR:#x})",
            )
        )
    if hdr.cur_entry > hdr.end_entry:
        out.append(
            _violation(
                "psc-cur-entry",
                Severity.WARNING,
                0,
                f"cur_entry {hdr.cur_entry} is past end_entry {hdr.end_entry}: KVM answers "
                "success and changes nothing",
            )
        )
    if hdr.reserved_0x4:
        out.append(
            _violation(
                "psc-hdr-reserved",
                Severity.WARNING,
                4,
                f"header reserved field is {hdr.reserved_0x4:#x}, not 0",
            )
        )
    last = min(hdr.end_entry, count - 1, len(desc.entries) - 1)
    for idx in range(hdr.cur_entry, last + 1):
        out.extend(_check_entry(idx, desc.entries[idx]))
    return out


def _check_entry(idx: int, entry: PscEntry) -> list[Violation]:
    offset = PSC_HDR_SIZE + idx * PSC_ENTRY_SIZE
    out: list[Violation] = []
    npages = entry.npages
    if entry.cur_page > npages:
        out.append(
            _violation(
                "psc-entry-cur-page",
                Severity.ERROR,
                offset,
                f"entry {idx}: cur_page {entry.cur_page} exceeds its {npages} page(s): KVM "
                f"answers INVALID_ENTRY ({PscErr.INVALID_ENTRY:#x})",
            )
        )
    if entry.gfn % npages:
        out.append(
            _violation(
                "psc-entry-unaligned",
                Severity.ERROR,
                offset,
                f"entry {idx}: 2 MiB entry at GFN {entry.gfn:#x}, not 512-page aligned: KVM "
                f"answers INVALID_ENTRY ({PscErr.INVALID_ENTRY:#x})",
            )
        )
    op = entry.op
    if op not in (PscOp.PRIVATE, PscOp.SHARED):
        name = op.name if isinstance(op, PscOp) else "undefined"
        out.append(
            _violation(
                "psc-entry-operation",
                Severity.WARNING,
                offset,
                f"entry {idx}: operation {entry.operation} ({name}): KVM marks it done and "
                "does nothing",
            )
        )
    if entry.reserved_63_57:
        out.append(
            _violation(
                "psc-entry-reserved",
                Severity.WARNING,
                offset,
                f"entry {idx}: reserved bits 63:57 are {entry.reserved_63_57:#x}, not 0",
            )
        )
    return out
