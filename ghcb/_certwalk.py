"""The walk over a hostile certificate table: one pass shared by the parser and the checker.

Source: AMD GHCB spec (AMD pub. 56421) §4.1.8.1 ("cert_table"); Linux ``struct
snp_msg_cert_entry``; the schema is :data:`ghcb.schemas.certs.cert_table`. The rules and
their codes are listed in :mod:`ghcb.certs`.

The walk never holds a Python object per entry (a hostile table has one per 24 bytes): the
entry headers are read from the input on demand, per-rule findings and flags are arrays of a
few bytes per entry, and only what grows with the *distinct* entries (the GUID set, the
ranges to sort) is kept as Python objects. Offsets are summed as Python ints (never wrap);
overlaps are found by one sort and sweep, O(n log n). Measured: the 1 MiB dstack
amplification blob peaks at ~1.2x its size; a flood of 24-byte entries with distinct GUIDs,
the worst case, at ~6x for a parse and ~11x for a check.

This module knows the wire layout and the rules, not the GUID registry: the caller says which
GUIDs are known and which hold X.509 certificates (:class:`GuidRules`).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

import construct as cs

from ghcb._bytes import view_bytes
from ghcb._der import is_x509
from ghcb._fast import backend_error, flat_fields, struct_format
from ghcb.errors import CertTableError, Severity, Violation
from ghcb.schemas.certs import CERT_ENTRY_SIZE, cert_table, snp_msg_cert_entry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "ENTRY",
    "ENTRY_RULES",
    "SPEC",
    "U32_MAX",
    "ZERO_GUID",
    "GuidRules",
    "Row",
    "Rows",
    "Walk",
]

SPEC: Final = "GHCB spec §4.1.8.1 cert_table"
SPEC_WRAP: Final = "go-sev-guest PR #186; Linux auxblob sizing (u32 sums)"
SPEC_OVERLAP: Final = "dstack PR #1248 (memory amplification through overlapping entries)"
SPEC_LINUX_MAX: Final = "Linux sev-guest SEV_FW_BLOB_MAX_SIZE"

_ENTRY_FIELDS: Final = {f.name: f for f in flat_fields(snp_msg_cert_entry)}
#: Offsets and lengths are u32.
U32_MAX: Final = _ENTRY_FIELDS["offset"].max_value
ZERO_GUID: Final = bytes(_ENTRY_FIELDS["guid"].size)
_TERMINATOR: Final = bytes(CERT_ENTRY_SIZE)
#: One entry header, derived from the schema: ``(guid bytes, offset, length)``.
ENTRY: Final = struct_format(tuple(_ENTRY_FIELDS.values()))
_NONZERO: Final = re.compile(rb"[^\x00]")

Row = tuple[bytes, int, int]


def _find_terminator(raw: bytes) -> tuple[int, bool]:
    """Number of entries before the terminator, and whether there is one.

    "an entry whose GUID is null and offset 0 and length 0" ends the table (Linux): the first
    all-zero 24 bytes at an entry boundary, found with ``bytes.find`` (C speed) rather than a
    Python loop over the entries. Without one, every complete entry counts.
    """
    usable = len(raw) - len(raw) % CERT_ENTRY_SIZE
    pos = 0
    while True:
        k = raw.find(_TERMINATOR, pos, usable)
        if k < 0:
            return usable // CERT_ENTRY_SIZE, False
        misalign = k % CERT_ENTRY_SIZE
        if not misalign:
            return k // CERT_ENTRY_SIZE, True
        pos = k - misalign + CERT_ENTRY_SIZE  # the next entry boundary after k


class Rows:
    """The entry headers before the terminator: iterated in order or read one at a time,
    without holding a Python object per entry (a hostile table has one per 24 bytes)."""

    __slots__ = ("_list", "_view", "n", "terminated")

    def __init__(self, view: memoryview, raw: bytes, backend: str) -> None:
        self._view = view
        self._list: list[Row] | None = None
        if backend == "struct":
            self.n, self.terminated = _find_terminator(raw)
        elif backend == "construct":
            self._list, self.terminated = _rows_construct(raw)
            self.n = len(self._list)
        else:
            raise backend_error(backend)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Row]:
        if self._list is not None:
            return iter(self._list)
        return ENTRY.iter_unpack(self._view[: self.n * CERT_ENTRY_SIZE])

    def __getitem__(self, i: int) -> Row:
        if self._list is not None:
            return self._list[i]
        row: Row = ENTRY.unpack_from(self._view, i * CERT_ENTRY_SIZE)
        return row


def _rows_construct(raw: bytes) -> tuple[list[Row], bool]:
    """The entries through the reference schema (``cert_table``: RepeatUntil)."""
    try:
        parsed = cert_table.parse(raw)
    except cs.ConstructError:
        # No terminator: every complete entry, as the fast walk reports them.
        whole = cs.Array(len(raw) // CERT_ENTRY_SIZE, snp_msg_cert_entry).parse(raw)
        return [(e.guid, e.offset, e.length) for e in whole], False
    return [(e.guid, e.offset, e.length) for e in parsed[:-1]], True


def guid_text(raw: bytes) -> str:
    """16 raw GUID bytes as ``str(uuid.UUID(bytes=raw))`` writes them (8-4-4-4-12 lowercase
    hex), without building the UUID: messages name GUIDs on the checker's hot path."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_ERR: Final = Severity.ERROR
_WARN: Final = Severity.WARNING


class Finding(NamedTuple):
    """What a rule's message may name about entry ``i`` of a walk."""

    i: int
    guid: bytes
    offset: int
    length: int
    size: int
    header_end: int
    kind: str

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class _Rule:
    severity: Severity
    spec: str
    message: Callable[[Finding], str]


#: The per-entry rules, in the order they are checked (and reported for one entry).
ENTRY_RULES: Final[dict[str, _Rule]] = {
    "zero-guid-entry": _Rule(
        _ERR,
        "Linux sev-guest stops only at an all-zero entry; virtee/sev stops at a null GUID",
        lambda f: (
            f"entry {f.i} has a null GUID but offset {f.offset:#x} and length {f.length}: "
            "readers that stop at a null GUID lose every later entry"
        ),
    ),
    "u32-wrap": _Rule(
        _ERR,
        SPEC_WRAP,
        lambda f: (
            f"entry {f.i}: offset {f.offset:#x} + length {f.length:#x} = {f.end:#x} "
            "overflows 32 bits (32-bit readers wrap around)"
        ),
    ),
    "out-of-bounds": _Rule(
        _ERR,
        SPEC,
        lambda f: (
            f"entry {f.i}: data [{f.offset:#x}, {f.end:#x}) ends past the {f.size}-byte table"
        ),
    ),
    "offset-in-header": _Rule(
        _ERR,
        SPEC,
        lambda f: (
            f"entry {f.i}: data at {f.offset:#x} overlaps the entry array, which ends at "
            f"{f.header_end:#x}"
        ),
    ),
    "duplicate-guid": _Rule(
        _ERR, SPEC, lambda f: f"entry {f.i}: GUID {guid_text(f.guid)} already has an entry"
    ),
    "overlap": _Rule(
        _ERR,
        SPEC_OVERLAP,
        lambda f: f"entry {f.i}: data [{f.offset:#x}, {f.end:#x}) overlaps another entry's data",
    ),
    "zero-length": _Rule(
        _WARN, "Linux sev-guest (warns on empty entries)", lambda f: f"entry {f.i} has no data"
    ),
    "unknown-guid": _Rule(
        _WARN, SPEC, lambda f: f"entry {f.i}: GUID {guid_text(f.guid)} is not in the registry"
    ),
    "not-x509": _Rule(
        _WARN, SPEC, lambda f: f"entry {f.i} ({f.kind}) is not a DER or PEM X.509 certificate"
    ),
}


@dataclass(frozen=True, slots=True)
class GuidRules:
    """What the checker's warning rules need to know about GUIDs (raw 16-byte form)."""

    known: frozenset[bytes]
    """GUIDs that are not ``unknown-guid``: the registry, named extras, the null GUID."""
    x509: Mapping[bytes, str]
    """The GUIDs whose data must be an X.509 certificate (``not-x509``), with their names."""


class Walk:
    """The structural pass over a table: per rule, the entries that break it.

    Per-rule findings and flags are kept in arrays (a few bytes per entry); what grows with
    the *distinct* entries (the GUID set, the ranges to sort) stays linear in the input.
    """

    __slots__ = (
        "extent",
        "guids",
        "header_end",
        "hits",
        "raw",
        "reach",
        "readable",
        "rows",
        "size",
        "terminated",
    )

    def __init__(
        self,
        view: memoryview,
        *,
        strict: bool,
        guids: GuidRules | None = None,
        backend: str = "struct",
    ) -> None:
        """Walk ``view`` (a 1-D byte view, see :func:`ghcb._bytes.byte_view`); with
        ``guids`` also run the warning-level rules of the checker. In ``strict`` mode, raise
        the first error as a CertTableError."""
        self.size = size = len(view)
        self.raw = view_bytes(view)
        self.rows = rows = Rows(view, self.raw, backend)
        self.terminated = rows.terminated
        self.guids = guids
        n = len(rows)
        if strict and not rows.terminated:
            raise self.missing_terminator()
        self.header_end = header_end = (n + 1) * CERT_ENTRY_SIZE
        hits: dict[str, array[int]] = {code: array("L") for code in ENTRY_RULES}
        self.hits = hits
        zero_guid, wraps, oob = hits["zero-guid-entry"], hits["u32-wrap"], hits["out-of-bounds"]
        in_header, dups = hits["offset-in-header"], hits["duplicate-guid"]
        zero_length, unknown = hits["zero-length"], hits["unknown-guid"]
        x509_candidates = array("L")
        full = guids is not None
        known_guids = guids.known if guids else frozenset()
        x509_guids = guids.x509 if guids else {}
        self.readable = readable = bytearray(n)
        seen: set[bytes] = set()
        # For trailing-data: the furthest in-bounds end named from each start (valid or not).
        self.reach: dict[int, int] = {}
        reach = self.reach
        spans: list[int] = []  # start << 64 | end << 32 | index: entries that pass the rules
        for i, (guid, offset, length) in enumerate(rows):
            end = offset + length  # Python ints: never wraps
            ok = True
            if guid == ZERO_GUID:
                zero_guid.append(i)
                ok = False
            if end > U32_MAX:
                wraps.append(i)
                ok = False
            if end > size:
                oob.append(i)
                ok = False
            if length and offset < header_end:
                in_header.append(i)
                ok = False
            if guid in seen:
                dups.append(i)
                ok = False
            else:
                seen.add(guid)
            if full:
                if length and offset < size:
                    clipped = min(end, size)
                    if reach.get(offset, -1) < clipped:
                        reach[offset] = clipped
                if not length and guid != ZERO_GUID:
                    zero_length.append(i)
                if guid not in known_guids:
                    unknown.append(i)
                elif length and guid in x509_guids:
                    x509_candidates.append(i)
            if ok:
                if length:
                    spans.append(offset << 64 | end << 32 | i)
                else:
                    readable[i] = 1
            elif strict:
                raise self.entry_error(i)
        # Overlaps: sort by start, sweep keeping the furthest end seen (O(n log n)).
        spans.sort()
        overlapping = bytearray(n)
        furthest, owner = -1, -1
        for key in spans:
            start, end, i = key >> 64, key >> 32 & 0xFFFFFFFF, key & 0xFFFFFFFF
            if start < furthest:
                overlapping[i] = overlapping[owner] = 1
            if end > furthest:
                furthest, owner = end, i
        extent = header_end
        overlap_hits = hits["overlap"]
        for key in spans:
            i = key & 0xFFFFFFFF
            if overlapping[i]:
                overlap_hits.append(i)
            else:
                readable[i] = 1
                end = key >> 32 & 0xFFFFFFFF
                if end > extent:
                    extent = end
        if strict and overlap_hits:
            raise self.error("overlap", min(overlap_hits))
        self.hits["overlap"] = array("L", sorted(overlap_hits))
        self.extent = extent
        not_x509 = hits["not-x509"]
        for i in x509_candidates:
            if readable[i]:
                _, offset, length = rows[i]
                if not is_x509(view[offset : offset + length]):
                    not_x509.append(i)

    def missing_terminator(self) -> CertTableError:
        """The ``missing-terminator`` error of this table."""
        n = len(self.rows)
        return CertTableError(
            f"no all-zero terminator entry: the data ends at {self.size} bytes after {n} entries",
            rule="missing-terminator",
            spec=SPEC,
            offset=n * CERT_ENTRY_SIZE,
        )

    def entry_error(self, i: int) -> CertTableError:
        """The error of entry ``i`` (the last rule that recorded it)."""
        code = next(c for c, found in self.hits.items() if found and found[-1] == i)
        return self.error(code, i)

    def error(self, code: str, i: int) -> CertTableError:
        """Entry ``i``'s finding under ``code`` as a CertTableError."""
        v = self.violation(code, i)
        return CertTableError(v.message, rule=code, spec=v.spec, offset=v.offset)

    def violation(self, code: str, i: int) -> Violation:
        """Entry ``i``'s finding under ``code``."""
        rule = ENTRY_RULES[code]
        guid, offset, length = self.rows[i]
        kind = self.guids.x509.get(guid, "?") if self.guids else "?"
        message = rule.message(Finding(i, guid, offset, length, self.size, self.header_end, kind))
        at = offset if code == "not-x509" else i * CERT_ENTRY_SIZE
        return Violation(
            code=code, severity=rule.severity, offset=at, message=message, spec=rule.spec
        )

    def findings(self, *, max_size: int, limit_per_code: int | None) -> list[Violation]:
        """Every finding of the walk (which must have had ``guids``), grouped by code in the
        order of the rules, each group in table order, capped per code."""
        out: list[Violation] = []
        if not self.terminated:
            err = self.missing_terminator()
            out.append(
                Violation(
                    code=err.rule,
                    severity=_ERR,
                    offset=err.offset,
                    message=err.message,
                    spec=err.spec,
                )
            )
        for code, found in self.hits.items():
            if not found:
                continue
            shown = found if limit_per_code is None else found[:limit_per_code]
            out.extend(self.violation(code, i) for i in shown)
            if len(found) > len(shown):
                rule = ENTRY_RULES[code]
                out.append(
                    Violation(
                        code=code,
                        severity=rule.severity,
                        offset=None,
                        message=f"{len(found) - len(shown)} more entries break this rule "
                        "(not listed)",
                        spec=rule.spec,
                    )
                )
        header_end = self.header_end
        if header_end > max_size:
            out.append(
                Violation(
                    code="too-many-entries",
                    severity=_WARN,
                    offset=None,
                    spec=SPEC_LINUX_MAX,
                    message=f"{len(self.rows)} entries: the entry array alone ({header_end} "
                    f"bytes) exceeds the reader's {max_size}-byte buffer",
                )
            )
        if self.extent > max_size:
            out.append(
                Violation(
                    code="too-large",
                    severity=_WARN,
                    offset=None,
                    spec=SPEC_LINUX_MAX,
                    message=f"the table spans {self.extent} bytes, more than the reader's "
                    f"{max_size}",
                )
            )
        trailing = _trailing(self.raw, self.reach, header_end)
        if trailing is not None:
            out.append(
                Violation(
                    code="trailing-data",
                    severity=_WARN,
                    offset=trailing,
                    spec=SPEC,
                    message=f"non-zero bytes at {trailing:#x} belong to no entry",
                )
            )
        return out


def _trailing(raw: bytes, reach: Mapping[int, int], header_end: int) -> int | None:
    """Offset of the first non-zero byte outside the header and every entry's named range
    (valid or not: bytes an invalid entry names are reported by that entry's rule).
    ``reach`` maps each named start to the furthest in-bounds end named from it."""
    size = len(raw)
    pos = min(header_end, size)
    for start, end in [*sorted(reach.items()), (size, size)]:
        if start > pos:
            hit = _NONZERO.search(raw, pos, start)
            if hit is not None:
                return hit.start()
        pos = max(pos, end)
    return None
