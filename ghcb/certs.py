"""The certificate table of the SNP Extended Guest Request: registry, parser, checker, builder.

Source: AMD GHCB spec (AMD pub. 56421) §4.1.8.1 ("cert_table"); Linux ``struct
snp_msg_cert_entry`` and configfs-tsm's ``auxblob`` (the same bytes); the schema is
:data:`ghcb.schemas.certs.cert_table`, the GUIDs and limits are in ``spec/tables/certs.toml``.

Layout: 24-byte entries ``{16-byte GUID (RFC-4122 order), u32 LE offset, u32 LE length}`` up
to an all-zero entry; offsets count from the start of the table. The canonical layout (what
:func:`build_cert_table` writes, and what AMD, go-sev-guest, virtee/sev and snphost write) puts
the first certificate right after the terminator, at ``24 * (entries + 1)``.

Every public parser of this table has shipped a bug (go-sev-guest panics on a u32
``offset + length`` wrap, virtee/sev reads past the buffer and stops at the first zero GUID,
Linux sizes the auxblob with u32 arithmetic, dstack allowed quadratic memory through
overlapping entries). Here: offsets are summed as Python ints, every rule is checked before any
data is copied, overlapping entries are refused (strict) or dropped (lenient), so the
certificate bytes a parse returns never exceed the input's size, its working memory is linear
in the input (measured: the 1 MiB dstack amplification blob peaks at ~1.2x its size; a flood
of 24-byte entries with distinct GUIDs, the worst case, at ~6x for a parse and ~11x for a
check), and its time is O(n log n) in the entries.

Violation codes of :func:`check_cert_table` (errors make :func:`parse_cert_table` raise in
strict mode):

=====================  ========  ===============================================================
code                   severity  meaning
=====================  ========  ===============================================================
``missing-terminator`` error     the data ends before an all-zero entry
``zero-guid-entry``    error     a null GUID with non-zero offset/length (readers that stop at a
                                 null GUID lose every later entry)
``u32-wrap``           error     offset + length > 0xFFFFFFFF: 32-bit readers wrap and disagree
``out-of-bounds``      error     offset + length beyond the buffer
``offset-in-header``   error     the data range overlaps the entry array or the terminator
``duplicate-guid``     error     a GUID that an earlier entry already has
``overlap``            error     the entry's data overlaps another entry's data
``zero-length``        warning   an entry with no data
``unknown-guid``       warning   a GUID outside the registry (kept, not dropped)
``not-x509``           warning   a VCEK/VLEK/ASK/ARK entry that is neither DER nor PEM X.509
``trailing-data``      warning   non-zero bytes outside the header and every entry's data
``too-large``          warning   the table's extent exceeds ``max_size`` (Linux: 16 KiB)
``too-many-entries``   warning   the entry array alone exceeds ``max_size``
=====================  ========  ===============================================================
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
import warnings
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import construct as cs
from cryptography import x509
from cryptography.x509.oid import NameOID

from ghcb._der import is_pem, is_x509_der, pem_to_der
from ghcb._fast import backend_error, flat_fields, struct_format
from ghcb.errors import CertTableError, FieldValueError, InputTypeError, Severity, Violation
from ghcb.schemas.certs import CERT_ENTRY_SIZE, cert_table, snp_msg_cert_entry
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from ghcb._fast import Backend

__all__ = [
    "GOOGLE_EXTRA_PLATFORM_INFO",
    "SEV_FW_BLOB_MAX_SIZE",
    "CertEntry",
    "CertGuid",
    "CertIndexEntry",
    "build_cert_table",
    "cert_names",
    "cert_table_index",
    "check_cert_table",
    "located_entries",
    "pages_needed",
    "parse_cert_table",
    "sha256_hex",
    "subject_common_name",
    "subject_text",
]

SPEC: Final = "GHCB spec §4.1.8.1 cert_table"
#: ``SEV_FW_BLOB_MAX_SIZE`` (Linux sev-guest): the guest's certificate buffer, 16 KiB.
SEV_FW_BLOB_MAX_SIZE: Final = 0x4000
_ENTRY_FIELDS: Final = {f.name: f for f in flat_fields(snp_msg_cert_entry)}
_U32_MAX: Final = _ENTRY_FIELDS["offset"].max_value  # offsets and lengths are u32
_ZERO_GUID: Final = bytes(_ENTRY_FIELDS["guid"].size)
_TERMINATOR: Final = bytes(CERT_ENTRY_SIZE)
_ENTRY: Final = struct_format(tuple(_ENTRY_FIELDS.values()))
_NONZERO: Final = re.compile(rb"[^\x00]")


class CertGuid(enum.Enum):
    """The certificate GUIDs of GHCB spec §4.1.8.1 (RFC-4122 byte order on the wire).

    ASVK (the AMD SEV VLEK signing key) has no GUID of its own: it is stored under the
    :attr:`ASK` GUID. :func:`cert_names` tells the two apart (see there).
    """

    VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
    VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
    ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
    ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
    CRL = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")


_BY_RAW: Final[dict[bytes, CertGuid]] = {m.value.bytes: m for m in CertGuid}
_X509_KINDS: Final = frozenset({CertGuid.VCEK, CertGuid.VLEK, CertGuid.ASK, CertGuid.ARK})

#: go-sev-guest's ExtraPlatformInfo entry (not in the GHCB spec; payload u32 size, u32 CPUID).
GOOGLE_EXTRA_PLATFORM_INFO: Final = uuid.UUID("ecae0c0f-9502-43b1-afa2-0ae2e0d565b6")
#: Names for GUIDs outside the registry that are known in the wild; ``check_cert_table`` does
#: not warn about them. Pass ``extra_names`` to the functions below to add your own.
EXTRA_GUID_NAMES: Final[Mapping[uuid.UUID, str]] = {
    GOOGLE_EXTRA_PLATFORM_INFO: "GOOGLE_EXTRA_PLATFORM_INFO",
}


def _as_raw_guid(guid: object) -> bytes:
    if isinstance(guid, uuid.UUID):
        return guid.bytes
    if isinstance(guid, CertGuid):
        return guid.value.bytes
    if isinstance(guid, bytes | bytearray) and len(guid) == len(_ZERO_GUID):
        return bytes(guid)
    raise InputTypeError(
        f"a certificate GUID must be a uuid.UUID, CertGuid or 16 bytes, not {guid!r}",
        rule="input-type",
        spec=SPEC,
    )


@final
class CertEntry:
    """One certificate of the table: its GUID and its bytes.

    The GUID is kept as the 16 raw bytes and turned into a ``uuid.UUID`` only when asked
    (building a UUID costs more than parsing the entry). Immutable; equal when GUID and data
    are.

    Args:
        guid: a ``uuid.UUID``, a :class:`CertGuid`, or the 16 wire bytes.
        data: the certificate (or CRL, or other payload) bytes.
    """

    __slots__ = ("_data", "_guid")
    _guid: bytes
    _data: bytes

    def __init__(self, guid: uuid.UUID | CertGuid | bytes, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InputTypeError(
                f"certificate data must be bytes, not {type(data).__name__}",
                rule="input-type",
                spec=SPEC,
            )
        _set_guid(self, _as_raw_guid(guid))
        _set_data(self, bytes(data))

    @property
    def guid(self) -> uuid.UUID:
        """The GUID (RFC-4122 byte order on the wire)."""
        return uuid.UUID(bytes=self._guid)

    @property
    def guid_bytes(self) -> bytes:
        """The 16 GUID bytes as they are on the wire."""
        return self._guid

    @property
    def data(self) -> bytes:
        """The certificate bytes."""
        return self._data

    @property
    def kind(self) -> CertGuid | None:
        """The registry member of the GUID (ASK for an ASVK: see :func:`cert_names`)."""
        return _BY_RAW.get(self._guid)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CertEntry is immutable ({name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CertEntry):
            return NotImplemented
        return self._guid == other._guid and self._data == other._data

    def __hash__(self) -> int:
        return hash((self._guid, self._data))

    def __repr__(self) -> str:
        kind = self.kind
        name = kind.name if kind else str(self.guid)
        return f"CertEntry({name}, {len(self._data)} bytes)"

    def __reduce__(self) -> tuple[object, ...]:
        return (CertEntry, (self._guid, self._data))


_set_guid: Final = CertEntry.__dict__["_guid"].__set__
_set_data: Final = CertEntry.__dict__["_data"].__set__
_new_entry: Final = object.__new__


@dataclass(frozen=True, slots=True)
class CertIndexEntry:
    """An entry header as it is in the table: where it is and what range it names."""

    index: int
    guid: uuid.UUID
    offset: int
    length: int


# ---------------------------------------------------------------------------------------------
# The walk: one pass over the entry array, shared by the parser and the checker.
# ---------------------------------------------------------------------------------------------
def _bytes_like(data: object) -> memoryview:
    """``data`` as a contiguous byte view (strided views are copied), or an InputTypeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputTypeError(
            f"a certificate table must be bytes-like, not {type(data).__name__}",
            rule="input-type",
            spec=SPEC,
        )
    try:
        view = memoryview(data)
        return (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
    except (TypeError, ValueError) as e:  # released views, views that cannot be bytes
        raise InputTypeError(f"unreadable buffer: {e}", rule="input-type", spec=SPEC) from e


def _as_bytes(view: memoryview) -> bytes:
    base = view.obj
    return base if isinstance(base, bytes) and len(base) == len(view) else view.tobytes()


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


Row = tuple[bytes, int, int]


class _Rows:
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
        return _ENTRY.iter_unpack(self._view[: self.n * CERT_ENTRY_SIZE])

    def __getitem__(self, i: int) -> Row:
        if self._list is not None:
            return self._list[i]
        row: Row = _ENTRY.unpack_from(self._view, i * CERT_ENTRY_SIZE)
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


def cert_table_index(data: bytes | bytearray | memoryview) -> list[CertIndexEntry]:
    """The entry headers up to the terminator (or the end of the data), without their data.

    Raises:
        InputTypeError: ``data`` is not bytes-like.
    """
    view = _bytes_like(data)
    rows = _Rows(view, _as_bytes(view), "struct")
    return [CertIndexEntry(i, uuid.UUID(bytes=g), o, n) for i, (g, o, n) in enumerate(rows)]


class _Guid:
    """Formats 16 raw GUID bytes as a UUID string, only when a message is rendered."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __format__(self, spec: str) -> str:
        return str(uuid.UUID(bytes=self.raw))


_ERR: Final = Severity.ERROR
_WARN: Final = Severity.WARNING
SPEC_WRAP: Final = "go-sev-guest PR #186; Linux auxblob sizing (u32 sums)"
SPEC_OVERLAP: Final = "dstack PR #1248 (memory amplification through overlapping entries)"
SPEC_LINUX_MAX: Final = "Linux sev-guest SEV_FW_BLOB_MAX_SIZE"


@dataclass(frozen=True, slots=True)
class _Rule:
    severity: Severity
    spec: str
    template: str  # str.format over: i, guid (_Guid), offset, end, length, size, header_end


#: The per-entry rules, in the order they are checked (and reported for one entry).
_ENTRY_RULES: Final[dict[str, _Rule]] = {
    "zero-guid-entry": _Rule(
        _ERR,
        "Linux sev-guest stops only at an all-zero entry; virtee/sev stops at a null GUID",
        "entry {i} has a null GUID but offset {offset:#x} and length {length}: readers that "
        "stop at a null GUID lose every later entry",
    ),
    "u32-wrap": _Rule(
        _ERR,
        SPEC_WRAP,
        "entry {i}: offset {offset:#x} + length {length:#x} = {end:#x} overflows 32 bits "
        "(32-bit readers wrap around)",
    ),
    "out-of-bounds": _Rule(
        _ERR, SPEC, "entry {i}: data [{offset:#x}, {end:#x}) ends past the {size}-byte table"
    ),
    "offset-in-header": _Rule(
        _ERR,
        SPEC,
        "entry {i}: data at {offset:#x} overlaps the entry array, which ends at {header_end:#x}",
    ),
    "duplicate-guid": _Rule(_ERR, SPEC, "entry {i}: GUID {guid} already has an entry"),
    "overlap": _Rule(
        _ERR, SPEC_OVERLAP, "entry {i}: data [{offset:#x}, {end:#x}) overlaps another entry's data"
    ),
    "zero-length": _Rule(
        _WARN, "Linux sev-guest (warns on empty entries)", "entry {i} has no data"
    ),
    "unknown-guid": _Rule(_WARN, SPEC, "entry {i}: GUID {guid} is not in the registry"),
    "not-x509": _Rule(_WARN, SPEC, "entry {i} ({kind}) is not a DER or PEM X.509 certificate"),
}


class _Walk:
    """The structural pass over a table: per rule, the entries that break it.

    Per-rule findings and flags are kept in arrays (a few bytes per entry); what grows with
    the *distinct* entries (the GUID set, the ranges to sort) stays linear in the input.
    """

    __slots__ = (
        "extent",
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
        known: frozenset[bytes] | None = None,
        backend: str = "struct",
    ) -> None:
        """Walk ``view``; with ``known`` (the GUIDs not to warn about) also run the
        warning-level rules of the checker."""
        self.size = size = len(view)
        self.raw = _as_bytes(view)
        self.rows = rows = _Rows(view, self.raw, backend)
        self.terminated = rows.terminated
        n = len(rows)
        if strict and not rows.terminated:
            raise self.missing_terminator()
        self.header_end = header_end = (n + 1) * CERT_ENTRY_SIZE
        hits: dict[str, array[int]] = {code: array("L") for code in _ENTRY_RULES}
        self.hits = hits
        zero_guid, wraps, oob = hits["zero-guid-entry"], hits["u32-wrap"], hits["out-of-bounds"]
        in_header, dups = hits["offset-in-header"], hits["duplicate-guid"]
        zero_length, unknown = hits["zero-length"], hits["unknown-guid"]
        x509_candidates = array("L")
        full = known is not None
        known_guids = known or frozenset()
        self.readable = readable = bytearray(n)
        seen: set[bytes] = set()
        # For trailing-data: the furthest in-bounds end named from each start (valid or not).
        self.reach: dict[int, int] = {}
        reach = self.reach
        spans: list[int] = []  # start << 64 | end << 32 | index: entries that pass the rules
        for i, (guid, offset, length) in enumerate(rows):
            end = offset + length  # Python ints: never wraps
            ok = True
            if guid == _ZERO_GUID:
                zero_guid.append(i)
                ok = False
            if end > _U32_MAX:
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
                if not length and guid != _ZERO_GUID:
                    zero_length.append(i)
                if guid not in _BY_RAW:
                    if guid not in known_guids:
                        unknown.append(i)
                elif length and _BY_RAW[guid] in _X509_KINDS:
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
                extent = max(extent, key >> 32 & 0xFFFFFFFF)
        if strict and overlap_hits:
            raise self.error("overlap", min(overlap_hits))
        self.hits["overlap"] = array("L", sorted(overlap_hits))
        self.extent = extent
        not_x509 = hits["not-x509"]
        for i in x509_candidates:
            if readable[i]:
                _, offset, length = rows[i]
                cert = view[offset : offset + length]
                if not (is_x509_der(cert) or (is_pem(cert) and _pem_is_cert(cert))):
                    not_x509.append(i)

    def missing_terminator(self) -> CertTableError:
        n = len(self.rows)
        return CertTableError(
            f"no all-zero terminator entry: the data ends at {self.size} bytes after {n} entries",
            rule="missing-terminator",
            spec=SPEC,
            offset=n * CERT_ENTRY_SIZE,
        )

    def entry_error(self, i: int) -> CertTableError:
        code = next(c for c, found in self.hits.items() if found and found[-1] == i)
        return self.error(code, i)

    def error(self, code: str, i: int) -> CertTableError:
        v = self.violation(code, i)
        return CertTableError(v.message, rule=code, spec=v.spec, offset=v.offset)

    def violation(self, code: str, i: int) -> Violation:
        rule = _ENTRY_RULES[code]
        guid, offset, length = self.rows[i]
        kind = _BY_RAW.get(guid)
        message = rule.template.format(
            i=i,
            guid=_Guid(guid),
            offset=offset,
            length=length,
            end=offset + length,
            size=self.size,
            header_end=self.header_end,
            kind=kind.name if kind else "?",
        )
        at = offset if code == "not-x509" else i * CERT_ENTRY_SIZE
        return Violation(
            code=code, severity=rule.severity, offset=at, message=message, spec=rule.spec
        )


def _names(
    rows: Sequence[tuple[bytes, int, int]], view: memoryview, extra: Mapping[uuid.UUID, str]
) -> list[str | None]:
    has_vlek = any(g == CertGuid.VLEK.value.bytes for g, _, _ in rows)
    has_vcek = any(g == CertGuid.VCEK.value.bytes for g, _, _ in rows)
    out: list[str | None] = []
    for guid, offset, length in rows:
        kind = _BY_RAW.get(guid)
        if kind is CertGuid.ASK:
            out.append(_ask_or_asvk(view[offset : offset + length], has_vlek, has_vcek))
        elif kind is not None:
            out.append(kind.name)
        else:
            out.append(extra.get(uuid.UUID(bytes=guid)))
    return out


def _ask_or_asvk(data: memoryview, has_vlek: bool, has_vcek: bool) -> str:
    """ASK or ASVK for a certificate under the ASK GUID.

    1. By subject: AMD names the ASVK ``SEV-VLEK-<product>`` and the ASK ``SEV-<product>``.
    2. Otherwise by the table: a VLEK and no VCEK means the ASK GUID holds the ASVK (which
       signs VLEKs), as snphost/snpguest assume.
    """
    cn = subject_common_name(bytes(data)) if data else None
    if cn is not None:
        return "ASVK" if cn.startswith("SEV-VLEK-") else "ASK"
    return "ASVK" if has_vlek and not has_vcek else "ASK"


def cert_names(
    entries: Sequence[CertEntry], *, extra_names: Mapping[uuid.UUID, str] | None = None
) -> list[str | None]:
    """A display name per entry (``VCEK``, ``VLEK``, ``ASK``, ``ASVK``, ``ARK``, ``CRL``, an
    extra name, or None for an unknown GUID), telling ASVK from ASK as :func:`_ask_or_asvk`."""
    names = {**EXTRA_GUID_NAMES, **(extra_names or {})}
    blob = memoryview(b"".join(e.data for e in entries))
    rows, pos = [], 0
    for e in entries:
        rows.append((e.guid_bytes, pos, len(e.data)))
        pos += len(e.data)
    return _names(rows, blob, names)


def _load_x509(der_or_pem: bytes) -> x509.Certificate | None:
    data = pem_to_der(der_or_pem) if is_pem(der_or_pem) else der_or_pem
    if data is None or not is_x509_der(data):
        return None
    with warnings.catch_warnings():
        # Real AMD VCEKs have non-positive serial numbers, which cryptography warns about.
        warnings.simplefilter("ignore")
        try:
            return x509.load_der_x509_certificate(data)
        except Exception:  # hostile bytes: ValueError, InvalidVersion, ... mean "unreadable"
            return None


def subject_common_name(der_or_pem: bytes) -> str | None:
    """The subject CN of an X.509 certificate (DER or PEM), or None if it cannot be read."""
    cert = _load_x509(der_or_pem)
    if cert is None:
        return None
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def subject_text(der_or_pem: bytes) -> str | None:
    """The subject of an X.509 certificate as an RFC 4514 string, or None."""
    cert = _load_x509(der_or_pem)
    if cert is None:
        return None
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Public parse / check / build
# ---------------------------------------------------------------------------------------------
def parse_cert_table(
    data: bytes | bytearray | memoryview, *, strict: bool = True, backend: Backend = "struct"
) -> list[CertEntry]:
    """The certificates of a table, in table order, each with its data sliced from ``data``.

    Trailing bytes after the last certificate (the zero padding of a guest's page-sized
    buffer) are accepted.

    Args:
        data: the table bytes (e.g. the guest's certificate pages, or an auxblob).
        strict: raise at the first error of the table (see the module's violation codes):
            a missing terminator first, then the first entry in table order that breaks a
            rule, then the first overlapping entry. When False, parse leniently: a missing
            terminator ends the table at the last complete entry, and every entry that breaks
            an error rule is dropped (of a GUID's entries only the first can be kept; of
            overlapping entries none is), so the result never holds more bytes than ``data``.

    Raises:
        CertTableError: (strict) the first error, with its ``rule`` and ``offset``.
        InputTypeError: ``data`` is not bytes-like.
    """
    view = _bytes_like(data)
    walk = _Walk(view, strict=strict, backend=backend)
    return [entry for _, entry in _entries(view, walk)]


def _entries(view: memoryview, walk: _Walk) -> Iterator[tuple[int, CertEntry]]:
    """``(index, entry)`` for each readable entry, its data sliced once from ``view``."""
    new, set_guid, set_data = _new_entry, _set_guid, _set_data
    for i, ((guid, offset, length), readable) in enumerate(
        zip(walk.rows, walk.readable, strict=True)
    ):
        if readable:
            entry = new(CertEntry)
            set_guid(entry, guid)
            set_data(entry, view[offset : offset + length].tobytes())
            yield i, entry


def located_entries(
    data: bytes | bytearray | memoryview, *, strict: bool = True, backend: Backend = "struct"
) -> list[tuple[CertIndexEntry, CertEntry]]:
    """As :func:`parse_cert_table`, each certificate with its entry header (index, offset,
    length) — for listings that must say where each certificate was."""
    view = _bytes_like(data)
    walk = _Walk(view, strict=strict, backend=backend)
    out: list[tuple[CertIndexEntry, CertEntry]] = []
    for i, entry in _entries(view, walk):
        _, offset, length = walk.rows[i]
        out.append((CertIndexEntry(i, entry.guid, offset, length), entry))
    return out


def check_cert_table(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = SEV_FW_BLOB_MAX_SIZE,
    extra_names: Mapping[uuid.UUID, str] | None = None,
    limit_per_code: int | None = 16,
    backend: Backend = "struct",
) -> list[Violation]:
    """Every rule the table breaks, in one pass (see the module's table of codes).

    Findings come grouped by code, in the order of the module's table, each group in table
    order.

    Args:
        data: the table bytes.
        max_size: the reader's buffer size for ``too-large`` / ``too-many-entries``
            (default: the Linux guest's 16 KiB).
        extra_names: GUIDs to accept without an ``unknown-guid`` warning.
        limit_per_code: list at most this many findings per code, then one summary finding
            (with ``offset`` None) giving how many more there were; None lists all. Hostile
            tables can break a rule once per entry.
        backend: as for :func:`parse_cert_table`.

    Raises:
        InputTypeError: ``data`` is not bytes-like.
    """
    view = _bytes_like(data)
    _check_options(max_size, limit_per_code, extra_names)
    known = frozenset(_as_raw_guid(g) for g in {**EXTRA_GUID_NAMES, **(extra_names or {})})
    walk = _Walk(view, strict=False, known=known | {_ZERO_GUID}, backend=backend)
    rows, hits, extent = walk.rows, walk.hits, walk.extent
    out: list[Violation] = []
    if not walk.terminated:
        err = walk.missing_terminator()
        out.append(
            Violation(
                code=err.rule, severity=_ERR, offset=err.offset, message=err.message, spec=err.spec
            )
        )
    for code, found in hits.items():
        shown = found if limit_per_code is None else found[:limit_per_code]
        out.extend(walk.violation(code, i) for i in shown)
        if len(found) > len(shown):
            rule = _ENTRY_RULES[code]
            out.append(
                Violation(
                    code=code,
                    severity=rule.severity,
                    offset=None,
                    message=f"{len(found) - len(shown)} more entries break this rule (not listed)",
                    spec=rule.spec,
                )
            )
    header_end = walk.header_end
    if header_end > max_size:
        out.append(
            Violation(
                code="too-many-entries",
                severity=_WARN,
                offset=None,
                spec=SPEC_LINUX_MAX,
                message=f"{len(rows)} entries: the entry array alone ({header_end} bytes) exceeds "
                f"the reader's {max_size}-byte buffer",
            )
        )
    if extent > max_size:
        out.append(
            Violation(
                code="too-large",
                severity=_WARN,
                offset=None,
                spec=SPEC_LINUX_MAX,
                message=f"the table spans {extent} bytes, more than the reader's {max_size}",
            )
        )
    trailing = _trailing(walk.raw, walk.reach, header_end)
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


def _check_options(
    max_size: object, limit_per_code: object, extra_names: Mapping[uuid.UUID, str] | None
) -> None:
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
        raise InputTypeError(
            f"max_size must be an int >= 0, not {max_size!r}", rule="input-type", spec="ghcb API"
        )
    if limit_per_code is not None and (
        not isinstance(limit_per_code, int)
        or isinstance(limit_per_code, bool)
        or limit_per_code < 0
    ):
        raise InputTypeError(
            f"limit_per_code must be None or an int >= 0, not {limit_per_code!r}",
            rule="input-type",
            spec="ghcb API",
        )
    if extra_names is not None and not isinstance(extra_names, Mapping):
        raise InputTypeError(
            "extra_names must map GUIDs to names", rule="input-type", spec="ghcb API"
        )


def _pem_is_cert(view: memoryview) -> bool:
    der = pem_to_der(view.tobytes())
    return der is not None and is_x509_der(der)


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


def _normalise(entry: CertEntry) -> bytes:
    """PEM certificates/CRLs become DER; other payloads are kept as they are. A certificate
    GUID (VCEK, VLEK, ASK, ARK, CRL) whose data looks like PEM but is not one valid block is
    refused; under other GUIDs such bytes are opaque payload."""
    data = entry.data
    if is_pem(data):
        der = pem_to_der(data)
        if der is None and entry.kind is None:
            return data
        if der is None:
            raise CertTableError(
                f"{entry!r}: PEM data that is not a single certificate or CRL",
                rule="bad-pem",
                spec="RFC 7468",
            )
        return der
    return data


def build_cert_table(entries: Iterable[CertEntry], *, pad_to_page: bool = False) -> bytes:
    """The canonical table: entries in the order given, the terminator, then each
    certificate back to back from ``24 * (len(entries) + 1)``.

    PEM input is converted to DER. ``pad_to_page`` zero-fills to a multiple of 4096 bytes
    (what a guest's buffer or QEMU's ``certs-path`` file holds).

    Raises:
        CertTableError: what :func:`check_cert_table` would call an error: a duplicate or null
            GUID (``duplicate-guid``, ``zero-guid-entry``), empty data (``zero-length``), or a
            table that does not fit 32-bit offsets (``u32-wrap``).
        InputTypeError: an item is not a :class:`CertEntry`.
    """
    items = list(entries)
    payloads: list[bytes] = []
    seen: set[bytes] = set()
    for i, entry in enumerate(items):
        if not isinstance(entry, CertEntry):
            raise InputTypeError(
                f"entry {i} is not a CertEntry: {entry!r}", rule="input-type", spec=SPEC
            )
        at = i * CERT_ENTRY_SIZE
        if entry.guid_bytes == _ZERO_GUID:
            raise CertTableError(
                f"entry {i} has the null GUID, which marks the terminator",
                rule="zero-guid-entry",
                spec=SPEC,
                offset=at,
            )
        if entry.guid_bytes in seen:
            raise CertTableError(
                f"entry {i}: GUID {entry.guid} appears twice",
                rule="duplicate-guid",
                spec=SPEC,
                offset=at,
            )
        seen.add(entry.guid_bytes)
        payload = _normalise(entry)
        if not payload:
            raise CertTableError(
                f"entry {i} ({entry!r}) has no data", rule="zero-length", spec=SPEC, offset=at
            )
        payloads.append(payload)
    offset = (len(items) + 1) * CERT_ENTRY_SIZE
    header = bytearray()
    for entry, payload in zip(items, payloads, strict=True):
        if offset + len(payload) > _U32_MAX:
            raise CertTableError(
                "the table does not fit 32-bit offsets", rule="u32-wrap", spec=SPEC
            )
        header += _ENTRY.pack(entry.guid_bytes, offset, len(payload))
        offset += len(payload)
    header += bytes(CERT_ENTRY_SIZE)
    out = bytes(header) + b"".join(payloads)
    if pad_to_page:
        out += bytes(pages_needed(len(out)) * PAGE_SIZE - len(out))
    return out


def pages_needed(nbytes: int) -> int:
    """4 KiB pages needed to hold ``nbytes``: ``ceil(nbytes / 4096)``.

    ``pages_needed(4096) == 1`` and ``pages_needed(8192) == 2`` (QEMU's RFC computed 3).
    ``pages_needed(0) == 0``: no data needs no pages. Note that any table has at least its
    24-byte terminator, so a buffer for a table is never 0 pages.

    Raises:
        FieldValueError: ``nbytes`` is negative.
        InputTypeError: ``nbytes`` is not an int.
    """
    if not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise InputTypeError("pages_needed takes an int", rule="input-type", spec=SPEC)
    if nbytes < 0:
        raise FieldValueError(f"negative size {nbytes}", rule="field-range", spec=SPEC)
    return -(-nbytes // PAGE_SIZE)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lowercase hex (for listings)."""
    return hashlib.sha256(data).hexdigest()
