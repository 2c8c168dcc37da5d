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
in the input and its time is O(n log n) in the entries (the walk and its measurements:
:mod:`ghcb._certwalk`; subjects and PEM: :mod:`ghcb._x509`).

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
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ghcb._bytes import byte_string, byte_view, view_bytes
from ghcb._certwalk import ENTRY, SPEC, U32_MAX, ZERO_GUID, GuidRules, Rows, Walk
from ghcb._x509 import ask_or_asvk, payload_der, subject_common_name, subject_text
from ghcb.errors import CertTableError, FieldValueError, InputTypeError
from ghcb.schemas.certs import CERT_ENTRY_SIZE
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ghcb._fast import Backend
    from ghcb.errors import Violation

__all__ = [
    "EXTRA_GUID_NAMES",
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

#: ``SEV_FW_BLOB_MAX_SIZE`` (Linux sev-guest): the guest's certificate buffer, 16 KiB.
SEV_FW_BLOB_MAX_SIZE: Final = 0x4000


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
#: The GUIDs whose data must be an X.509 certificate (``not-x509``), with their names.
_X509_GUIDS: Final = {
    m.value.bytes: m.name for m in (CertGuid.VCEK, CertGuid.VLEK, CertGuid.ASK, CertGuid.ARK)
}

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
    try:
        raw = byte_string(guid, what="a certificate GUID", spec=SPEC)
    except InputTypeError:
        raw = b""
    if len(raw) == len(ZERO_GUID):
        return raw
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
        data: the certificate (or CRL, or other payload) bytes: any buffer of bytes
            (:mod:`ghcb._bytes`), copied.

    Raises:
        InputTypeError: ``guid`` or ``data`` is neither of those.
    """

    __slots__ = ("_data", "_guid")
    _guid: bytes
    _data: bytes

    def __init__(
        self, guid: uuid.UUID | CertGuid | bytes, data: bytes | bytearray | memoryview
    ) -> None:
        _set_guid(self, _as_raw_guid(guid))
        _set_data(self, byte_string(data, what="certificate data", spec=SPEC))

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


def _table_view(data: object) -> memoryview:
    """The table argument as a byte view (:func:`ghcb._bytes.byte_view`)."""
    return byte_view(data, what="a certificate table", spec=SPEC)


def _entry_list(entries: object, caller: str) -> list[CertEntry]:
    """The entries argument as a list, each item checked to be a :class:`CertEntry`."""
    if not isinstance(entries, Iterable) or isinstance(entries, CertEntry):
        raise InputTypeError(
            f"{caller} takes an iterable of CertEntry, not {type(entries).__name__}",
            rule="input-type",
            spec=SPEC,
        )
    items = list(entries)
    for i, entry in enumerate(items):
        if not isinstance(entry, CertEntry):
            raise InputTypeError(
                f"entry {i} is not a CertEntry: {entry!r}",
                rule="input-type",
                spec=SPEC,
                offset=i * CERT_ENTRY_SIZE,
            )
    return items


def _extra_guids(extra_names: object) -> dict[bytes, str]:
    """The known extra GUIDs and ``extra_names`` (a mapping of GUID to name), by raw GUID."""
    if extra_names is None:
        extra_names = {}
    if not isinstance(extra_names, Mapping):
        raise InputTypeError(
            f"extra_names must map GUIDs to names, not {type(extra_names).__name__}",
            rule="input-type",
            spec="ghcb API",
        )
    out = {}
    for guid, name in {**EXTRA_GUID_NAMES, **extra_names}.items():
        if not isinstance(name, str):
            raise InputTypeError(
                f"extra_names[{guid!r}] must be a str, not {type(name).__name__}",
                rule="input-type",
                spec="ghcb API",
            )
        out[_as_raw_guid(guid)] = name
    return out


def cert_table_index(data: bytes | bytearray | memoryview) -> list[CertIndexEntry]:
    """The entry headers up to the terminator (or the end of the data), without their data.

    Raises:
        InputTypeError: ``data`` is not bytes-like.
    """
    view = _table_view(data)
    rows = Rows(view, view_bytes(view), "struct")
    return [CertIndexEntry(i, uuid.UUID(bytes=g), o, n) for i, (g, o, n) in enumerate(rows)]


def cert_names(
    entries: Iterable[CertEntry], *, extra_names: Mapping[uuid.UUID, str] | None = None
) -> list[str | None]:
    """A display name per entry (``VCEK``, ``VLEK``, ``ASK``, ``ASVK``, ``ARK``, ``CRL``, an
    extra name, or None for an unknown GUID).

    ASVK and ASK share a GUID: an entry under it is the ASVK when its subject says so
    (``SEV-VLEK-<product>``), else when unreadable, when the table has a VLEK and no VCEK.

    Raises:
        InputTypeError: ``entries`` is not an iterable of :class:`CertEntry`, or
            ``extra_names`` is not a mapping of GUIDs to str.
    """
    entries = _entry_list(entries, "cert_names")
    names = _extra_guids(extra_names)
    has_vlek = any(e.kind is CertGuid.VLEK for e in entries)
    has_vcek = any(e.kind is CertGuid.VCEK for e in entries)
    out: list[str | None] = []
    for e in entries:
        kind = e.kind
        if kind is CertGuid.ASK:
            out.append(ask_or_asvk(e.data, has_vlek=has_vlek, has_vcek=has_vcek))
        elif kind is not None:
            out.append(kind.name)
        else:
            out.append(names.get(e.guid_bytes))
    return out


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
    view = _table_view(data)
    walk = Walk(view, strict=strict, backend=backend)
    return [entry for _, entry in _entries(view, walk)]


def _entries(view: memoryview, walk: Walk) -> Iterator[tuple[int, CertEntry]]:
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
    view = _table_view(data)
    walk = Walk(view, strict=strict, backend=backend)
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
        InputTypeError: ``data`` is not bytes-like (:mod:`ghcb._bytes`), or an option has
            the wrong type.
    """
    view = _table_view(data)
    _check_options(max_size, limit_per_code)
    guids = GuidRules(known=_REGISTERED | frozenset(_extra_guids(extra_names)), x509=_X509_GUIDS)
    walk = Walk(view, strict=False, guids=guids, backend=backend)
    return walk.findings(max_size=max_size, limit_per_code=limit_per_code)


#: GUIDs that are never ``unknown-guid``: the registry and the null GUID.
_REGISTERED: Final = frozenset(_BY_RAW) | {ZERO_GUID}


def _check_options(max_size: object, limit_per_code: object) -> None:
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


def build_cert_table(entries: Iterable[CertEntry], *, pad_to_page: bool = False) -> bytes:
    """The canonical table: entries in the order given, the terminator, then each
    certificate back to back from ``24 * (len(entries) + 1)``.

    PEM input is converted to DER. ``pad_to_page`` zero-fills to a multiple of 4096 bytes
    (what a guest's buffer or QEMU's ``certs-path`` file holds).

    Raises:
        CertTableError: what :func:`check_cert_table` would call an error: a duplicate or null
            GUID (``duplicate-guid``, ``zero-guid-entry``), empty data (``zero-length``), or a
            table that does not fit 32-bit offsets (``u32-wrap``); or PEM data under a
            certificate GUID that is not one certificate or CRL block (``bad-pem``), or whose
            body is not the DER its label names (``pem-not-der``).
        InputTypeError: ``entries`` is not an iterable of :class:`CertEntry`.
    """
    items = _entry_list(entries, "build_cert_table")
    payloads: list[bytes] = []
    seen: set[bytes] = set()
    for i, entry in enumerate(items):
        at = i * CERT_ENTRY_SIZE
        if entry.guid_bytes == ZERO_GUID:
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
        payload = payload_der(entry.data, certificate=entry.kind is not None, what=repr(entry))
        if not payload:
            raise CertTableError(
                f"entry {i} ({entry!r}) has no data", rule="zero-length", spec=SPEC, offset=at
            )
        payloads.append(payload)
    offset = (len(items) + 1) * CERT_ENTRY_SIZE
    header = bytearray()
    for entry, payload in zip(items, payloads, strict=True):
        if offset + len(payload) > U32_MAX:
            raise CertTableError(
                "the table does not fit 32-bit offsets", rule="u32-wrap", spec=SPEC
            )
        header += ENTRY.pack(entry.guid_bytes, offset, len(payload))
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


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 of ``data`` (any buffer of bytes) as lowercase hex (for listings).

    Raises:
        InputTypeError: ``data`` is not bytes-like.
    """
    return hashlib.sha256(byte_string(data, what="the hashed data", spec="ghcb API")).hexdigest()
