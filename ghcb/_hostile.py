"""Hostile certificate tables, each labelled with the violation codes it must trigger.

Public through :func:`ghcb.strategies.hostile_cert_tables`. An example is a valid table (the
canonical layout :func:`ghcb.build_cert_table` writes, from drawn :class:`~ghcb.CertEntry`
records) plus one labelled mutation of its entry headers, its tail or its records, each
aimed at one code of :func:`ghcb.check_cert_table` (the table of codes in :mod:`ghcb.certs`)
and modelled on a real parser bug (peers.md §4.4): the u32 wrap go-sev-guest panics on, the
out-of-bounds read of virtee/sev, dstack's overlapping entries, the zero-GUID entry that
stops zero-GUID readers early. Draws go records first, then bytes, so a failing example
shrinks to a short table with small numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hypothesis import strategies as st

from ghcb._certwalk import ENTRY, ENTRY_RULES, U32_MAX, ZERO_GUID
from ghcb._samples import HostileCertTable
from ghcb.certs import (
    EXTRA_GUID_NAMES,
    SEV_FW_BLOB_MAX_SIZE,
    CertEntry,
    CertGuid,
    build_cert_table,
    cert_table_index,
)
from ghcb.errors import Severity
from ghcb.schemas.certs import CERT_ENTRY_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CERT_VIOLATION_CODES", "ERROR_CODES", "HostileCertTable", "hostile_cert_tables"]


#: The table-level codes of :func:`ghcb.check_cert_table` (the per-entry ones are
#: :data:`ghcb._certwalk.ENTRY_RULES`); ``tests/test_hostile.py`` checks the union against
#: the table of codes in :mod:`ghcb.certs`.
_TABLE_CODES: Final = ("missing-terminator", "too-many-entries", "too-large", "trailing-data")
#: Every code :func:`ghcb.check_cert_table` knows.
CERT_VIOLATION_CODES: Final = frozenset(ENTRY_RULES) | frozenset(_TABLE_CODES)
#: The codes that make a strict parse fail (severity error).
ERROR_CODES: Final = frozenset(
    code for code, rule in ENTRY_RULES.items() if rule.severity is Severity.ERROR
) | {"missing-terminator"}

_KNOWN_GUIDS: Final = frozenset(m.value.bytes for m in CertGuid) | frozenset(
    g.bytes for g in EXTRA_GUID_NAMES
)
_X509_GUIDS: Final = tuple(
    m.value.bytes for m in (CertGuid.VCEK, CertGuid.VLEK, CertGuid.ASK, CertGuid.ARK)
)
#: Entries the valid table starts from (the overlap and duplicate mutations need two).
_MAX_BASE: Final = 4
#: Entries in the ``too-many-entries`` table: one more than fit the reader's buffer with the
#: terminator (``(n + 1) * 24 > SEV_FW_BLOB_MAX_SIZE``).
_FLOOD: Final = SEV_FW_BLOB_MAX_SIZE // CERT_ENTRY_SIZE


@dataclass
class _Row:
    guid: bytes
    offset: int
    length: int


class _Table:
    """A valid table being mutated: its entry rows, the terminator, and the bytes after it."""

    def __init__(self, entries: list[CertEntry]) -> None:
        blob = build_cert_table(entries)
        self.rows = [_Row(e.guid.bytes, e.offset, e.length) for e in cert_table_index(blob)]
        self.header_end = (len(self.rows) + 1) * CERT_ENTRY_SIZE
        self.body = bytearray(blob[self.header_end :])
        self.size = len(blob)

    def blob(self) -> bytes:
        header = b"".join(ENTRY.pack(r.guid, r.offset, r.length) for r in self.rows)
        return header + bytes(CERT_ENTRY_SIZE) + bytes(self.body)


_Mutation = tuple[bytes, frozenset[str], str]
_Mutator = Callable[[st.DrawFn, list[CertEntry]], _Mutation]


def _index(draw: st.DrawFn, table: _Table) -> int:
    return draw(st.integers(0, len(table.rows) - 1))


def _two(draw: st.DrawFn, table: _Table) -> tuple[int, int]:
    i, j = draw(st.lists(st.integers(0, len(table.rows) - 1), min_size=2, max_size=2, unique=True))
    return i, j


def _u32_wrap(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    # go-sev-guest PR #186: offset + length summed in u32 wraps below the buffer's size.
    t = _Table(entries)
    i = _index(draw, t)
    length = draw(st.integers(1, U32_MAX))
    first = U32_MAX - length + 1  # offset + length == 2**32 exactly: the smallest wrap
    offset = draw(st.just(first) | st.integers(first, U32_MAX))
    t.rows[i].offset, t.rows[i].length = offset, length
    note = f"entry {i}: offset {offset:#x} + length {length:#x} > 0xffffffff"
    return t.blob(), frozenset({"u32-wrap", "out-of-bounds"}), note


def _out_of_bounds(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    # virtee/sev: the data range is read without a bound on the buffer.
    t = _Table(entries)
    i = _index(draw, t)
    past = draw(st.integers(1, 0x10000))
    if draw(st.booleans()):
        t.rows[i].length = t.size - t.rows[i].offset + past  # the length runs past the end
    else:
        t.rows[i].offset = t.size + past  # the offset starts past the end
    offset, length = t.rows[i].offset, t.rows[i].length
    note = f"entry {i}: [{offset:#x}, {offset + length:#x}) past the {t.size}-byte table"
    return t.blob(), frozenset({"out-of-bounds"}), note


def _offset_in_header(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    i = _index(draw, t)
    last = t.header_end - 1  # the terminator's last byte
    t.rows[i].offset = draw(st.just(last) | st.integers(0, last))
    note = f"entry {i}: offset {t.rows[i].offset:#x} inside the {t.header_end}-byte entry array"
    return t.blob(), frozenset({"offset-in-header"}), note


def _overlap(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    # dstack PR #1248: entries naming each other's bytes multiply what a parser copies.
    t = _Table(entries)
    i, j = _two(draw, t)
    start, length = t.rows[i].offset, t.rows[i].length
    last = start + length - 1  # a one-byte overlap, the edge an off-by-one sweep misses
    offset = draw(st.just(last) | st.integers(start, last))  # inside entry i's data
    t.rows[j].offset, t.rows[j].length = offset, draw(st.integers(1, t.size - offset))
    note = f"entry {j}: data at {offset:#x} inside entry {i}'s [{start:#x}, {start + length:#x})"
    return t.blob(), frozenset({"overlap"}), note


def _duplicate_guid(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    i, j = sorted(_two(draw, t))
    t.rows[j].guid = t.rows[i].guid
    return t.blob(), frozenset({"duplicate-guid"}), f"entry {j}: the GUID of entry {i}"


def _zero_guid(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    # virtee/sev stops at the first null GUID and loses every later entry.
    t = _Table(entries)
    i = _index(draw, t)
    t.rows[i].guid = ZERO_GUID
    return t.blob(), frozenset({"zero-guid-entry"}), f"entry {i}: null GUID, data kept"


def _missing_terminator(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    cut = draw(st.integers(0, t.header_end - 1))  # every entry is non-zero: none terminates
    note = f"cut to {cut} bytes, before the terminator at {t.header_end - CERT_ENTRY_SIZE}"
    return t.blob()[:cut], frozenset({"missing-terminator"}), note


def _zero_length(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    i = _index(draw, t)
    t.rows[i].length = 0
    return t.blob(), frozenset({"zero-length"}), f"entry {i}: length 0"


def _unknown_guid(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    i = _index(draw, t)
    taken = _KNOWN_GUIDS | {row.guid for row in t.rows} | {ZERO_GUID}
    guid = draw(st.uuids().map(lambda u: u.bytes).filter(lambda g: g not in taken))
    t.rows[i].guid = guid
    return t.blob(), frozenset({"unknown-guid"}), f"entry {i}: GUID {uuid.UUID(bytes=guid)}"


def _not_x509(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    i = _index(draw, t)
    others = {row.guid for k, row in enumerate(t.rows) if k != i}
    guid = draw(st.sampled_from([g for g in _X509_GUIDS if g not in others]))
    t.rows[i].guid = guid
    # A first byte that starts neither DER (0x30 SEQUENCE) nor PEM (whitespace, "-----").
    t.body[t.rows[i].offset - t.header_end] = 0
    note = f"entry {i}: {CertGuid(uuid.UUID(bytes=guid)).name} GUID over non-X.509 data"
    return t.blob(), frozenset({"not-x509"}), note


def _trailing_data(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    t = _Table(entries)
    gap = draw(st.integers(0, 64))
    junk = draw(st.integers(1, 255))
    tail = bytes(gap) + bytes([junk]) + draw(st.binary(max_size=16))
    note = f"{len(tail)} bytes after the table, non-zero at {t.size + gap:#x}"
    return t.blob() + tail, frozenset({"trailing-data"}), note


def _too_large(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    # Linux's guest buffer is SEV_FW_BLOB_MAX_SIZE: one certificate that alone exceeds it.
    i = draw(st.integers(0, len(entries) - 1))
    size = draw(st.integers(SEV_FW_BLOB_MAX_SIZE + 1, SEV_FW_BLOB_MAX_SIZE + 4096))
    big = CertEntry(entries[i].guid_bytes, bytes([draw(st.integers(1, 255))]) * size)
    t = _Table([*entries[:i], big, *entries[i + 1 :]])
    return t.blob(), frozenset({"too-large"}), f"entry {i}: {size} bytes of data"


def _too_many_entries(draw: st.DrawFn, entries: list[CertEntry]) -> _Mutation:
    extra = draw(st.integers(0, 32))
    flood = [CertEntry(uuid.UUID(int=k + 1), b"\x01") for k in range(_FLOOD + extra)]
    t = _Table(flood)
    note = f"{len(flood)} one-byte entries: a {t.header_end}-byte entry array"
    return t.blob(), frozenset({"too-many-entries", "too-large"}), note


#: One mutation per code, in the order of :mod:`ghcb.certs`' table (errors first, so
#: shrinking prefers them).
_MUTATIONS: Final[dict[str, tuple[_Mutator, int]]] = {  # code: (mutation, entries it needs)
    "missing-terminator": (_missing_terminator, 1),
    "zero-guid-entry": (_zero_guid, 1),
    "u32-wrap": (_u32_wrap, 1),
    "out-of-bounds": (_out_of_bounds, 1),
    "offset-in-header": (_offset_in_header, 1),
    "duplicate-guid": (_duplicate_guid, 2),
    "overlap": (_overlap, 2),
    "zero-length": (_zero_length, 1),
    "unknown-guid": (_unknown_guid, 1),
    "not-x509": (_not_x509, 1),
    "trailing-data": (_trailing_data, 1),
    "too-large": (_too_large, 1),
    "too-many-entries": (_too_many_entries, 0),
}


def hostile_cert_tables(
    *, violations: Iterable[str] | None = None
) -> st.SearchStrategy[HostileCertTable]:
    """Certificate tables that break a rule on purpose, each labelled with the codes
    :func:`ghcb.check_cert_table` must report (:class:`HostileCertTable`).

    Requires the hypothesis package.

    Args:
        violations: the codes to aim at, one per example (default: every code of
            :data:`CERT_VIOLATION_CODES`). An example may trigger more codes than its
            label (a wrapping range is also out of bounds; random GUIDs are unknown).

    Raises:
        TypeError: an unknown code, or an empty selection.

    Example::

        hostile_cert_tables(violations=["u32-wrap", "overlap"]).example()
    """
    if isinstance(violations, str):
        raise TypeError(f"violations takes a list of codes, e.g. [{violations!r}], not a str")
    chosen = list(_MUTATIONS) if violations is None else list(dict.fromkeys(violations))
    unknown = sorted(set(chosen) - set(_MUTATIONS))
    if unknown or not chosen:
        raise TypeError(
            f"violations must be codes of check_cert_table ({sorted(_MUTATIONS)}), not "
            f"{unknown or 'nothing'}"
        )
    entries = st.builds(
        CertEntry,
        st.sampled_from([m.value for m in CertGuid]) | st.uuids().filter(lambda u: u.int != 0),
        st.binary(min_size=1, max_size=64).filter(lambda b: not b.startswith(b"-")),
    )

    @st.composite
    def build(draw: st.DrawFn) -> HostileCertTable:
        code = draw(st.sampled_from(sorted(chosen, key=list(_MUTATIONS).index)))
        mutate, need = _MUTATIONS[code]
        base = draw(
            st.lists(
                entries,
                min_size=max(need, 1),
                max_size=_MAX_BASE,
                unique_by=lambda e: e.guid_bytes,
            )
        )
        data, labels, note = mutate(draw, base)
        return HostileCertTable(data, labels, f"{code}: {note}")

    return build()
