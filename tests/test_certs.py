"""Certificate table: registry, strict/lenient parse, checker, builder, page sizing, interop."""

from __future__ import annotations

import base64
import datetime
import tracemalloc
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

import ghcb.certs as certs_module
from ghcb import GhcbError
from ghcb import strategies as gst
from ghcb._certwalk import guid_text
from ghcb._fast import flat_fields
from ghcb.certs import (
    EXTRA_GUID_NAMES,
    GOOGLE_EXTRA_PLATFORM_INFO,
    SEV_FW_BLOB_MAX_SIZE,
    CertEntry,
    CertGuid,
    CertIndexEntry,
    build_cert_table,
    cert_names,
    cert_table_index,
    check_cert_table,
    located_entries,
    pages_needed,
    parse_cert_table,
    sha256_hex,
)
from ghcb.errors import CertTableError, FieldValueError, InputTypeError, Severity, Violation
from ghcb.schemas.certs import CERT_ENTRY_SIZE, snp_msg_cert_entry
from ghcb.schemas.page import PAGE_SIZE
from tests.helpers import assemble, assert_roundtrip, load_table, load_vectors

if TYPE_CHECKING:
    from collections.abc import Callable

    from ghcb.page import Backend

TABLE = load_table("certs")
VECTORS = load_vectors("certs")["vectors"]


def vector_bytes(vec: dict[str, Any]) -> bytes:
    """The bytes of a certs.json vector."""
    return assemble(vec["parts"])


def _cert(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(label: str, der: bytes) -> bytes:
    """``der`` in a PEM block labelled ``label`` (RFC 7468)."""
    return (
        f"-----BEGIN {label}-----\n{base64.b64encode(der).decode()}\n-----END {label}-----\n"
    ).encode()


#: A PEM CERTIFICATE block whose body is three zero bytes, not a certificate.
PEM_NOT_DER = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


class TestSpecTable:
    def test_entry_layout(self) -> None:
        """The schema's entry fields sit at the table's offsets; the terminator is 24 zeros."""
        got = [(f.name, f.offset, f.size) for f in flat_fields(snp_msg_cert_entry)]
        assert got == [(f["name"], f["offset"], f["size"]) for f in TABLE["entry"]["field"]]
        assert TABLE["entry"]["size"] == CERT_ENTRY_SIZE
        assert bytes.fromhex(TABLE["entry"]["terminator"]) == bytes(CERT_ENTRY_SIZE)

    def test_limits(self) -> None:
        """16 KiB guest buffer and 4 KiB pages."""
        assert TABLE["limits"]["sev_fw_blob_max_size"] == SEV_FW_BLOB_MAX_SIZE
        assert TABLE["limits"]["page_size"] == PAGE_SIZE

    @pytest.mark.parametrize("row", TABLE["guid"], ids=[r["name"] for r in TABLE["guid"]])
    def test_guids_rfc4122_order(self, row: dict[str, Any]) -> None:
        """Each GUID is on the wire in RFC-4122 order (uuid bytes), not bytes_le."""
        member = CertGuid[row["name"]]
        assert member.value == uuid.UUID(row["guid"])
        assert member.value.bytes.hex() == row["bytes"]
        assert member.value.bytes_le.hex() == row["bytes_le"]
        table = build_cert_table([CertEntry(member, b"x")])
        assert table[:16].hex() == row["bytes"]

    def test_registry_is_complete(self) -> None:
        """CertGuid has exactly the table's GUIDs; extras are named, not registered."""
        assert {m.name for m in CertGuid} == {r["name"] for r in TABLE["guid"]}
        assert {str(g): n for g, n in EXTRA_GUID_NAMES.items()} == {
            r["guid"]: r["name"] for r in TABLE["extra_guid"]
        }

    def test_schema_roundtrip(self) -> None:
        """The construct entry schema and its compiled twin agree on an entry."""
        raw = CertGuid.VCEK.value.bytes + bytes.fromhex("7800000019000000")
        obj = {"guid": CertGuid.VCEK.value.bytes, "offset": 0x78, "length": 25}
        assert_roundtrip(snp_msg_cert_entry, raw, obj)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
class TestVectors:
    def test_size(self, vec: dict[str, Any]) -> None:
        """The vector assembles to its stated size."""
        assert len(vector_bytes(vec)) == vec["expect"]["size"]

    def test_violations(self, vec: dict[str, Any], backend: Backend) -> None:
        """check_cert_table reports exactly the vector's findings."""
        found = check_cert_table(vector_bytes(vec), backend=backend)
        want = vec["expect"]
        if "violations" in want:
            assert [[v.code, v.offset] for v in found] == want["violations"]
        else:
            assert sorted({v.code for v in found}) == want["violation_codes"]
            counts: dict[str, int] = {}
            for v in found:
                counts[v.code] = counts.get(v.code, 0) + 1
            for code, count in want.get("violation_counts", {}).items():
                assert counts[code] == count, code

    def test_strict_parse(self, vec: dict[str, Any], backend: Backend) -> None:
        """A strict parse returns the listed entries, or raises the vector's first error."""
        data, want = vector_bytes(vec), vec["expect"]
        if want["strict_error"] is None:
            located = located_entries(data, backend=backend)
            entries = [e for _, e in located]
            got = [
                {"name": name, "offset": where.offset, "length": where.length}
                | ({} if name else {"guid": str(where.guid)})
                for (where, _), name in zip(located, cert_names(entries), strict=True)
            ]
            assert got == want["entries"]
            for where, entry in located:
                assert entry.data == data[where.offset : where.offset + where.length]
        else:
            with pytest.raises(CertTableError) as err:
                parse_cert_table(data, backend=backend)
            assert err.value.rule == want["strict_error"]
            assert err.value.offset is not None

    def test_lenient_parse(self, vec: dict[str, Any], backend: Backend) -> None:
        """A lenient parse keeps the vector's count of entries and never raises."""
        data, want = vector_bytes(vec), vec["expect"]
        entries = parse_cert_table(data, strict=False, backend=backend)
        assert len(entries) == want.get("entries_lenient", len(want.get("entries", [])))
        assert sum(len(e.data) for e in entries) <= len(data)

    def test_strict_error_is_an_error_finding(self, vec: dict[str, Any]) -> None:
        """Strict parsing fails exactly when the checker reports an error."""
        data = vector_bytes(vec)
        errors = [v for v in check_cert_table(data) if v.severity is Severity.ERROR]
        assert bool(errors) == (vec["expect"]["strict_error"] is not None)


class TestParse:
    def test_empty_table(self) -> None:
        """24 zero bytes is the empty table."""
        assert parse_cert_table(bytes(24)) == []
        assert check_cert_table(bytes(24)) == []

    @pytest.mark.parametrize("size", [0, 1, 23])
    def test_too_short(self, size: int) -> None:
        """Less than one entry is a missing terminator."""
        with pytest.raises(CertTableError) as err:
            parse_cert_table(bytes(size))
        assert err.value.rule == "missing-terminator"

    def test_terminator_only_at_entry_boundaries(self) -> None:
        """24 zero bytes straddling two entries do not end the table."""
        entry = CertGuid.CRL.value.bytes + (72).to_bytes(4, "little") + (4).to_bytes(4, "little")
        # Zero bytes spanning the end of entry 0 and the start of entry 1 are not a terminator.
        table = entry[:-4] + bytes(4) + bytes(24) + b"\x01\x02\x03\x04"
        located_entries(table, strict=False)
        assert cert_table_index(table)[0].length == 0

    def test_input_types(self) -> None:
        """Non-bytes input is an InputTypeError; bytearray and memoryview work."""
        with pytest.raises(InputTypeError):
            parse_cert_table("table")  # type: ignore[arg-type]
        data = build_cert_table([CertEntry(CertGuid.VCEK, b"v")])
        assert parse_cert_table(bytearray(data)) == parse_cert_table(memoryview(data))

    def test_memoryview_slice(self) -> None:
        """A memoryview into a larger buffer is read from its own start."""
        data = build_cert_table([CertEntry(CertGuid.VCEK, b"vcek")])
        outer = b"\xff" * 10 + data
        assert parse_cert_table(memoryview(outer)[10:]) == [CertEntry(CertGuid.VCEK, b"vcek")]
        assert check_cert_table(memoryview(outer)[10:]) == check_cert_table(data)

    def test_guid_is_lazy_uuid(self) -> None:
        """Entries keep raw GUID bytes and give a uuid.UUID on request."""
        (entry,) = parse_cert_table(build_cert_table([CertEntry(CertGuid.ARK, b"a")]))
        assert entry.guid_bytes == CertGuid.ARK.value.bytes
        assert entry.guid == CertGuid.ARK.value
        assert entry.kind is CertGuid.ARK


@given(st.binary(max_size=600))
def test_any_bytes_result_or_ghcb_error(data: bytes) -> None:
    """Parse (both modes) and check return or raise GhcbError, nothing else; a strict parse
    fails exactly when the checker reports an error; lenient results never exceed the input."""
    try:
        parse_cert_table(data)
        strict_ok = True
    except GhcbError:
        strict_ok = False
    entries = parse_cert_table(data, strict=False)
    assert sum(len(e.data) for e in entries) <= len(data)
    errors = [v for v in check_cert_table(data) if v.severity is Severity.ERROR]
    assert strict_ok == (not errors)


@given(
    st.lists(gst.cert_entries(max_data=64), max_size=8, unique_by=lambda e: e.guid_bytes),
    st.booleans(),
)
def test_parse_build_roundtrip(entries: list[CertEntry], pad: bool) -> None:
    """parse(build(x)) == x, and check finds no error in anything build produced."""
    table = build_cert_table(entries, pad_to_page=pad)
    assert parse_cert_table(table) == entries
    assert parse_cert_table(table, backend="construct") == entries
    assert not [v for v in check_cert_table(table) if v.severity is Severity.ERROR]
    if pad:
        assert len(table) % PAGE_SIZE == 0


class TestBuild:
    def test_canonical_layout(self) -> None:
        """Entries, terminator, then data back to back from 24 * (n + 1)."""
        table = build_cert_table([CertEntry(CertGuid.ARK, b"ark"), CertEntry(CertGuid.ASK, b"ask")])
        assert table.hex() == (
            "c0b406a4a803495297433fb6014cd0ae"
            "48000000"
            "03000000"
            "4ab7b379bbac4fe4a02f05aef327c782"
            "4b000000"
            "03000000" + "00" * 24 + b"arkask".hex()
        )

    def test_matches_go_sev_guest_vector(self) -> None:
        """Building go-sev-guest's entries reproduces its 163-byte table."""
        vec = next(v for v in VECTORS if v["name"] == "go_sev_guest_raw_cert_table")
        data = vector_bytes(vec)
        assert build_cert_table(parse_cert_table(data)) == data

    def test_pem_becomes_der(self) -> None:
        """A PEM certificate is stored as its DER bytes."""
        der = _cert("SEV-Milan")
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        assert build_cert_table([CertEntry(CertGuid.ASK, pem)]) == build_cert_table(
            [CertEntry(CertGuid.ASK, der)]
        )

    @pytest.mark.parametrize(
        ("entries", "rule"),
        [
            ([CertEntry(CertGuid.VCEK, b"a"), CertEntry(CertGuid.VCEK, b"b")], "duplicate-guid"),
            ([CertEntry(CertGuid.VCEK, b"")], "zero-length"),
            ([CertEntry(uuid.UUID(int=0), b"a")], "zero-guid-entry"),
            ([CertEntry(CertGuid.VCEK, b"-----BEGIN CERTIFICATE-----\nnot base64!\n")], "bad-pem"),
            ([CertEntry(CertGuid.VCEK, PEM_NOT_DER)], "pem-not-der"),
            ([CertEntry(CertGuid.ASK, _pem("CERTIFICATE", b"\x30\x00"))], "pem-not-der"),
            ([CertEntry(CertGuid.CRL, _pem("X509 CRL", _cert("SEV-Milan")))], "pem-not-der"),
            ([CertEntry(CertGuid.ARK, _pem("TRUSTED CERTIFICATE", b"\x04\x00"))], "pem-not-der"),
        ],
    )
    def test_refuses(self, entries: list[CertEntry], rule: str) -> None:
        """What the checker calls an error cannot be built."""
        with pytest.raises(CertTableError) as err:
            build_cert_table(entries)
        assert err.value.rule == rule

    def test_pem_crl_and_trusted_certificate_become_der(self) -> None:
        """A PEM CRL is stored as its DER; so is OpenSSL's TRUSTED CERTIFICATE (the
        certificate and its trust SEQUENCE)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ARK-Milan")]))
            .last_update(now)
            .next_update(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        der = crl.public_bytes(serialization.Encoding.DER)
        table = build_cert_table([CertEntry(CertGuid.CRL, _pem("X509 CRL", der))])
        assert parse_cert_table(table) == [CertEntry(CertGuid.CRL, der)]
        trusted = _cert("SEV-Milan") + bytes.fromhex("3000")
        table = build_cert_table([CertEntry(CertGuid.ARK, _pem("TRUSTED CERTIFICATE", trusted))])
        assert parse_cert_table(table) == [CertEntry(CertGuid.ARK, trusted)]

    def test_pem_not_der_is_opaque_under_other_guids(self) -> None:
        """Under a GUID outside the registry the same bytes are payload, kept as they are."""
        mine = uuid.UUID("12345678-1234-5678-1234-567812345678")
        table = build_cert_table([CertEntry(mine, PEM_NOT_DER)])
        assert parse_cert_table(table) == [CertEntry(mine, PEM_NOT_DER)]

    def test_refuses_non_entries(self) -> None:
        """Only CertEntry items are accepted."""
        with pytest.raises(InputTypeError):
            build_cert_table([(CertGuid.VCEK, b"x")])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("nbytes", "pages"), [(0, 0), (1, 1), (24, 1), (4096, 1), (4097, 2), (4762, 2), (8192, 2)]
)
def test_pages_needed(nbytes: int, pages: int) -> None:
    """ceil(n / 4096); 8192 is 2 pages (QEMU's RFC said 3)."""
    assert pages_needed(nbytes) == pages


def test_pages_needed_refuses_negative() -> None:
    """Negative sizes raise."""
    with pytest.raises(FieldValueError):
        pages_needed(-1)


class TestNames:
    def test_asvk_by_subject(self) -> None:
        """A certificate under the ASK GUID named SEV-VLEK-<product> is the ASVK."""
        entries = [
            CertEntry(CertGuid.ASK, _cert("SEV-VLEK-Milan")),
            CertEntry(CertGuid.VLEK, _cert("SEV-VLEK")),
        ]
        assert cert_names(entries) == ["ASVK", "VLEK"]
        entries = [CertEntry(CertGuid.ASK, _cert("SEV-Milan"))]
        assert cert_names(entries) == ["ASK"]

    def test_asvk_by_table_when_unreadable(self) -> None:
        """Without a readable subject: VLEK and no VCEK make the ASK-GUID entry the ASVK."""
        assert cert_names([CertEntry(CertGuid.ASK, b"?"), CertEntry(CertGuid.VLEK, b"v")]) == [
            "ASVK",
            "VLEK",
        ]
        assert cert_names([CertEntry(CertGuid.ASK, b"?"), CertEntry(CertGuid.VCEK, b"v")]) == [
            "ASK",
            "VCEK",
        ]

    def test_extra_names(self) -> None:
        """Extra GUIDs get their names; unknown ones None."""
        mine = uuid.UUID("12345678-1234-5678-1234-567812345678")
        entries = [CertEntry(mine, b"x"), CertEntry(uuid.uuid4(), b"y")]
        assert cert_names(entries, extra_names={mine: "MINE"}) == ["MINE", None]
        table = build_cert_table(entries)
        codes = [v.code for v in check_cert_table(table, extra_names={mine: "MINE"})]
        assert codes == ["unknown-guid"]


class TestRealChain:
    """The Milan ARK, ASK and VCEK that omne-attest ships."""

    @pytest.fixture
    def chain(self) -> list[CertEntry]:
        vectors = pytest.importorskip("omne_attest.vectors")
        return [
            CertEntry(CertGuid.ARK, vectors.ark()),
            CertEntry(CertGuid.ASK, vectors.ask()),
            CertEntry(CertGuid.VCEK, vectors.vcek()),
        ]

    def test_table_is_4762_bytes_two_pages(self, chain: list[CertEntry]) -> None:
        """4 * 24 + 1639 + 1677 + 1350 = 4762 bytes: 2 pages, so a 1-page buffer gets
        INVALID_LEN."""
        table = build_cert_table(chain)
        assert len(table) == 4762
        assert pages_needed(len(table)) == 2
        assert check_cert_table(table) == []
        assert parse_cert_table(table) == chain
        assert cert_names(parse_cert_table(table)) == ["ARK", "ASK", "VCEK"]


def test_amplification_blob_is_bounded() -> None:
    """The 1 MiB dstack-shape blob: findings capped per code, memory within 4x the input."""
    size = 1 << 20
    unit = b"\x11" * 16 + (24).to_bytes(4, "little") + (size - 24).to_bytes(4, "little")
    blob = unit * (size // 24)
    blob += bytes(size - len(blob))
    tracemalloc.start()
    try:
        found = check_cert_table(blob)
        entries = parse_cert_table(blob, strict=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entries == []
    assert len(found) <= 5 * 17
    assert peak < 4 * size
    assert size > SEV_FW_BLOB_MAX_SIZE


def test_sixteen_mib_of_ff() -> None:
    """16 MiB of 0xFF: strict parse stops at the missing terminator, lenient keeps nothing,
    the checker reports each rule once per code (capped), all in linear time."""
    blob = b"\xff" * (16 << 20)
    with pytest.raises(CertTableError) as err:
        parse_cert_table(blob)
    assert (err.value.rule, err.value.offset) == ("missing-terminator", len(blob) - 16)
    assert parse_cert_table(blob, strict=False) == []
    found = check_cert_table(blob)
    assert sorted({v.code for v in found}) == [
        "duplicate-guid",
        "missing-terminator",
        "out-of-bounds",
        "too-large",
        "too-many-entries",
        "u32-wrap",
        "unknown-guid",
    ]
    assert len(found) <= 4 * 17 + 3


# ---------------------------------------------------------------------------------------------
# Mutation-testing kills (`make mutation`): boundaries a mutant moves by one.
# ---------------------------------------------------------------------------------------------
def _two_entries(first: tuple[int, int], second: tuple[int, int], size: int = 200) -> bytes:
    """A table of two known GUIDs whose data need not be X.509 (CRL, Google's extra entry)
    with the given (offset, length) ranges, and non-zero bytes after the header."""
    rows = [(CertGuid.CRL.value, *first), (GOOGLE_EXTRA_PLATFORM_INFO, *second)]
    header = b"".join(
        g.bytes + o.to_bytes(4, "little") + n.to_bytes(4, "little") for g, o, n in rows
    )
    header += bytes(CERT_ENTRY_SIZE)
    return header + bytes(range(size - len(header)))


HEADER_END = 3 * CERT_ENTRY_SIZE


def test_one_byte_overlap_is_an_overlap() -> None:
    """[72, 82) and [81, 91) share byte 81: both entries overlap (the sweep's ``start <
    furthest``; ``start < furthest - 1`` would miss a one-byte overlap)."""
    table = _two_entries((HEADER_END, 10), (HEADER_END + 9, 10))
    found = check_cert_table(table)
    assert [(v.code, v.offset) for v in found if v.severity is Severity.ERROR] == [
        ("overlap", 0),
        ("overlap", CERT_ENTRY_SIZE),
    ]
    with pytest.raises(CertTableError) as err:
        parse_cert_table(table)
    assert (err.value.rule, err.value.offset) == ("overlap", 0)
    assert parse_cert_table(table, strict=False) == []


def test_adjacent_entries_do_not_overlap() -> None:
    """[72, 82) and [82, 92) touch without sharing a byte: no overlap."""
    table = _two_entries((HEADER_END, 10), (HEADER_END + 10, 10))
    assert [v.code for v in check_cert_table(table)] == ["trailing-data"]
    assert [e.data for e in parse_cert_table(table)] == [table[72:82], table[82:92]]


_A = CertEntry(CertGuid.CRL, b"x")
_SPEC = "GHCB spec §4.1.8.1 cert_table"
_BACKEND = (
    "InputTypeError",
    "backend",
    None,
    "ghcb API",
    "unknown backend 'nope' (expected 'struct' or 'construct')",
)
#: Every refusal of the public certificate API: (class, rule, offset, spec, message), exact.
REFUSALS: dict[str, tuple[Callable[[], object], tuple[object, ...]]] = {
    "entry-data": (
        lambda: CertEntry(CertGuid.CRL, 5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "certificate data must be bytes-like, not int",
        ),
    ),
    "build-not-iterable": (
        lambda: build_cert_table(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "build_cert_table takes an iterable of CertEntry, not int",
        ),
    ),
    "build-one-entry": (
        lambda: build_cert_table(_A),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "build_cert_table takes an iterable of CertEntry, not CertEntry",
        ),
    ),
    "build-item": (
        lambda: build_cert_table([_A, "x"]),  # type: ignore[list-item]
        ("InputTypeError", "input-type", 24, _SPEC, "entry 1 is not a CertEntry: 'x'"),
    ),
    "names-item": (
        lambda: cert_names([_A, _A, 7]),  # type: ignore[list-item]
        ("InputTypeError", "input-type", 48, _SPEC, "entry 2 is not a CertEntry: 7"),
    ),
    "build-null-guid": (
        lambda: build_cert_table([_A, CertEntry(bytes(16), b"y")]),
        (
            "CertTableError",
            "zero-guid-entry",
            24,
            _SPEC,
            "entry 1 has the null GUID, which marks the terminator",
        ),
    ),
    "build-duplicate": (
        lambda: build_cert_table(
            [_A, CertEntry(CertGuid.VCEK, b"y"), CertEntry(CertGuid.CRL, b"z")]
        ),
        (
            "CertTableError",
            "duplicate-guid",
            48,
            _SPEC,
            "entry 2: GUID 92f81bc3-5811-4d3d-97ff-d19f88dc67ea appears twice",
        ),
    ),
    "build-empty": (
        lambda: build_cert_table([_A, CertEntry(CertGuid.VCEK, b"")]),
        (
            "CertTableError",
            "zero-length",
            24,
            _SPEC,
            "entry 1 (CertEntry(VCEK, 0 bytes)) has no data",
        ),
    ),
    "build-bad-pem": (
        lambda: build_cert_table([CertEntry(CertGuid.VCEK, PEM_NOT_DER)]),
        (
            "CertTableError",
            "pem-not-der",
            None,
            "RFC 7468 §5, §6 (PEM certificates and CRLs)",
            "CertEntry(VCEK, 59 bytes): the PEM CERTIFICATE block holds 3 bytes that are not a "
            "DER CERTIFICATE",
        ),
    ),
    "pages-str": (
        lambda: pages_needed("1"),  # type: ignore[arg-type]
        ("InputTypeError", "input-type", None, _SPEC, "pages_needed takes an int"),
    ),
    "pages-bool": (
        lambda: pages_needed(True),
        ("InputTypeError", "input-type", None, _SPEC, "pages_needed takes an int"),
    ),
    "pages-negative": (
        lambda: pages_needed(-1),
        ("FieldValueError", "field-range", None, _SPEC, "negative size -1"),
    ),
    "check-max-size": (
        lambda: check_cert_table(bytes(24), max_size=-1),
        ("InputTypeError", "input-type", None, "ghcb API", "max_size must be an int >= 0, not -1"),
    ),
    "check-max-size-bool": (
        lambda: check_cert_table(bytes(24), max_size=True),
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "max_size must be an int >= 0, not True",
        ),
    ),
    "check-limit": (
        lambda: check_cert_table(bytes(24), limit_per_code=-1),
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "limit_per_code must be None or an int >= 0, not -1",
        ),
    ),
    "check-limit-bool": (
        lambda: check_cert_table(bytes(24), limit_per_code=False),
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "limit_per_code must be None or an int >= 0, not False",
        ),
    ),
    "check-limit-str": (
        lambda: check_cert_table(bytes(24), limit_per_code="1"),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "limit_per_code must be None or an int >= 0, not '1'",
        ),
    ),
    "parse-backend": (lambda: parse_cert_table(bytes(24), backend="nope"), _BACKEND),  # type: ignore[arg-type]
    "located-backend": (lambda: located_entries(bytes(24), backend="nope"), _BACKEND),  # type: ignore[arg-type]
    "check-backend": (lambda: check_cert_table(bytes(24), backend="nope"), _BACKEND),  # type: ignore[arg-type]
    "located-strict": (
        lambda: located_entries(bytes(5)),
        (
            "CertTableError",
            "missing-terminator",
            0,
            _SPEC,
            "no all-zero terminator entry: the data ends at 5 bytes after 0 entries",
        ),
    ),
    "guid-type": (
        lambda: CertEntry(5, b""),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "a certificate GUID must be a uuid.UUID, CertGuid or 16 bytes, not 5",
        ),
    ),
    "guid-short": (
        lambda: CertEntry(b"abc", b""),
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "a certificate GUID must be a uuid.UUID, CertGuid or 16 bytes, not b'abc'",
        ),
    ),
    "extra-names-type": (
        lambda: check_cert_table(bytes(24), extra_names=5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "extra_names must map GUIDs to names, not int",
        ),
    ),
    "extra-names-value": (
        lambda: check_cert_table(bytes(24), extra_names={uuid.UUID(int=1): 5}),  # type: ignore[dict-item]
        (
            "InputTypeError",
            "input-type",
            None,
            "ghcb API",
            "extra_names[UUID('00000000-0000-0000-0000-000000000001')] must be a str, not int",
        ),
    ),
    "extra-names-key": (
        lambda: check_cert_table(bytes(24), extra_names={5: "x"}),  # type: ignore[dict-item]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "a certificate GUID must be a uuid.UUID, CertGuid or 16 bytes, not 5",
        ),
    ),
    "index-type": (
        lambda: cert_table_index(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            _SPEC,
            "a certificate table must be bytes-like, not int",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_exact(name: str) -> None:
    call, expected = REFUSALS[name]
    with pytest.raises(GhcbError) as err:
        call()
    e = err.value
    assert (type(e).__name__, e.rule, e.offset, e.spec, e.message) == expected
    assert e.field is None


def test_limits_of_zero_are_accepted() -> None:
    table = build_cert_table([_A, CertEntry(uuid.UUID(int=5), b"de")])
    assert check_cert_table(table, max_size=0, limit_per_code=0) == [
        Violation(
            code="unknown-guid",
            severity=Severity.WARNING,
            offset=None,
            message="1 more entries break this rule (not listed)",
            spec=_SPEC,
        ),
        Violation(
            code="too-many-entries",
            severity=Severity.WARNING,
            offset=None,
            message="2 entries: the entry array alone (72 bytes) exceeds the reader's 0-byte buffer",  # noqa: E501
            spec="Linux sev-guest SEV_FW_BLOB_MAX_SIZE",
        ),
        Violation(
            code="too-large",
            severity=Severity.WARNING,
            offset=None,
            message="the table spans 75 bytes, more than the reader's 0",
            spec="Linux sev-guest SEV_FW_BLOB_MAX_SIZE",
        ),
    ]


def test_entry_identity() -> None:
    a, b = CertEntry(CertGuid.CRL, b"x"), CertEntry(CertGuid.CRL, b"x")
    assert a == b
    assert hash(a) == hash(b)
    assert a != CertEntry(CertGuid.CRL, b"y")
    assert a != CertEntry(CertGuid.ARK, b"x")
    distinct = {CertEntry(uuid.UUID(int=i), bytes([i])) for i in range(1, 9)}
    assert len({hash(e) for e in distinct}) == len(distinct)
    assert repr(CertEntry(CertGuid.VCEK, b"abc")) == "CertEntry(VCEK, 3 bytes)"
    assert repr(CertEntry(uuid.UUID(int=5), b"")) == (
        "CertEntry(00000000-0000-0000-0000-000000000005, 0 bytes)"
    )


def test_index_and_located_entries_name_each_entry() -> None:
    other = uuid.UUID(int=5)
    table = build_cert_table([CertEntry(CertGuid.CRL, b"abc"), CertEntry(other, b"de")])
    index = [
        CertIndexEntry(0, CertGuid.CRL.value, 72, 3),
        CertIndexEntry(1, other, 75, 2),
    ]
    assert cert_table_index(table) == index
    assert located_entries(table) == [
        (index[0], CertEntry(CertGuid.CRL, b"abc")),
        (index[1], CertEntry(other, b"de")),
    ]


def test_ask_or_asvk_by_the_other_entries() -> None:
    ask, vlek, vcek = (CertEntry(g, b"?") for g in (CertGuid.ASK, CertGuid.VLEK, CertGuid.VCEK))
    assert cert_names([ask, vlek]) == ["ASVK", "VLEK"]
    assert cert_names([ask]) == ["ASK"]
    assert cert_names([ask, vlek, vcek]) == ["ASK", "VLEK", "VCEK"]


def test_the_u32_limit_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table may end exactly at U32_MAX (offsets are u32), not one byte past it (the limit
    lowered so that a test can reach it)."""
    monkeypatch.setattr(certs_module, "U32_MAX", 2 * CERT_ENTRY_SIZE + 10)
    assert len(build_cert_table([CertEntry(CertGuid.CRL, bytes(10))])) == 58
    with pytest.raises(CertTableError) as err:
        build_cert_table([CertEntry(CertGuid.CRL, bytes(11))])
    assert (err.value.rule, err.value.message) == (
        "u32-wrap",
        "the table does not fit 32-bit offsets",
    )
    assert err.value.spec == _SPEC


_G1 = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
_G2 = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")


def _mixed_table() -> bytes:
    """Three entries (G1 at [120, 124), G1 again empty, G2 empty) and the terminator (96
    bytes), zeros up to the data, the data, zeros, and one stray byte at 200."""
    rows = [(_G1, 120, 4), (_G1, 0, 0), (_G2, 124, 0)]
    table = b"".join(
        g.bytes + o.to_bytes(4, "little") + n.to_bytes(4, "little") for g, o, n in rows
    )
    table += bytes(CERT_ENTRY_SIZE)
    return table + bytes(120 - len(table)) + b"\x01\x02\x03\x04" + bytes(76) + b"\x07"


def test_findings_are_exact() -> None:
    """Every field of every finding, the per-code summaries, the size warnings at their
    boundary (a table exactly ``max_size`` long is not too large) and the trailing byte past a
    run of zeros between the header and the data."""
    linux = "Linux sev-guest SEV_FW_BLOB_MAX_SIZE"
    err, warn = Severity.ERROR, Severity.WARNING
    expected = [
        Violation(
            code="duplicate-guid",
            severity=err,
            offset=24,
            spec=_SPEC,
            message=f"entry 1: GUID {_G1} already has an entry",
        ),
        Violation(
            code="zero-length",
            severity=warn,
            offset=24,
            spec="Linux sev-guest (warns on empty entries)",
            message="entry 1 has no data",
        ),
        Violation(
            code="zero-length",
            severity=warn,
            offset=None,
            spec="Linux sev-guest (warns on empty entries)",
            message="1 more entries break this rule (not listed)",
        ),
        Violation(
            code="unknown-guid",
            severity=warn,
            offset=0,
            spec=_SPEC,
            message=f"entry 0: GUID {_G1} is not in the registry",
        ),
        Violation(
            code="unknown-guid",
            severity=warn,
            offset=None,
            spec=_SPEC,
            message="2 more entries break this rule (not listed)",
        ),
        Violation(
            code="too-many-entries",
            severity=warn,
            offset=None,
            spec=linux,
            message="3 entries: the entry array alone (96 bytes) exceeds the reader's 95-byte "
            "buffer",
        ),
        Violation(
            code="too-large",
            severity=warn,
            offset=None,
            spec=linux,
            message="the table spans 124 bytes, more than the reader's 95",
        ),
        Violation(
            code="trailing-data",
            severity=warn,
            offset=200,
            spec=_SPEC,
            message="non-zero bytes at 0xc8 belong to no entry",
        ),
    ]
    table = _mixed_table()
    assert check_cert_table(table, limit_per_code=1, max_size=95) == expected
    at_limits = check_cert_table(table, limit_per_code=1, max_size=124)
    assert [v.code for v in at_limits] == [v.code for v in expected if not v.code.startswith("too")]
    assert [v.code for v in check_cert_table(table, max_size=96)] == [
        "duplicate-guid",
        "zero-length",
        "zero-length",
        "unknown-guid",
        "unknown-guid",
        "unknown-guid",
        "too-large",
        "trailing-data",
    ]


def test_strict_errors_are_the_findings() -> None:
    table = _mixed_table()
    with pytest.raises(CertTableError) as err:
        parse_cert_table(table)
    e = err.value
    assert (e.rule, e.offset, e.spec, e.message) == (
        "duplicate-guid",
        24,
        _SPEC,
        f"entry 1: GUID {_G1} already has an entry",
    )
    message = "no all-zero terminator entry: the data ends at 50 bytes after 2 entries"
    with pytest.raises(CertTableError) as err:
        parse_cert_table(table[:50])
    e = err.value
    assert (e.rule, e.offset, e.spec, e.message) == ("missing-terminator", 48, _SPEC, message)
    assert check_cert_table(table[:50])[0] == Violation(
        code="missing-terminator", severity=Severity.ERROR, offset=48, message=message, spec=_SPEC
    )


def test_guid_text_is_the_uuid_text() -> None:
    for raw in (bytes(range(16)), bytes(range(255, 239, -1)), _G1.bytes, _G2.bytes):
        assert guid_text(raw) == str(uuid.UUID(bytes=raw))


def test_names_read_the_subject_first() -> None:
    """An entry under the ASK GUID whose subject names a VLEK signer is the ASVK, even with no
    VLEK beside it; an ASK subject stays ASK beside a VLEK."""
    asvk = CertEntry(CertGuid.ASK, _cert("SEV-VLEK-Milan"))
    ask = CertEntry(CertGuid.ASK, _cert("SEV-Milan"))
    assert cert_names([asvk]) == ["ASVK"]
    assert cert_names([ask, CertEntry(CertGuid.VLEK, b"?")]) == ["ASK", "VLEK"]
    with pytest.raises(InputTypeError) as err:
        cert_names(5)  # type: ignore[arg-type]
    assert err.value.message == "cert_names takes an iterable of CertEntry, not int"


def test_sha256_hex() -> None:
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"abc") == sha256_hex(bytearray(b"abc")) == digest
    with pytest.raises(InputTypeError) as err:
        sha256_hex(5)  # type: ignore[arg-type]
    e = err.value
    assert (e.rule, e.spec, e.message) == (
        "input-type",
        "ghcb API",
        "the hashed data must be bytes-like, not int",
    )


def _rows(*rows: tuple[uuid.UUID, int, int]) -> bytes:
    header = b"".join(
        g.bytes + o.to_bytes(4, "little") + n.to_bytes(4, "little") for g, o, n in rows
    )
    return header + bytes(CERT_ENTRY_SIZE)


def test_range_messages_are_exact() -> None:
    """A range ending exactly at 2**32 - 1 is out of bounds but does not wrap; one past it
    wraps; a VCEK that is not X.509 is named in its warning."""
    table = _rows(
        (CertGuid.VCEK.value, 96, 4),
        (CertGuid.CRL.value, 0xFFFFFFFF - 5, 5),
        (CertGuid.ARK.value, 100, 0xFFFFFFFF),
    )
    table += b"junk"
    assert [(v.code, v.offset, v.message) for v in check_cert_table(table)] == [
        (
            "u32-wrap",
            48,
            "entry 2: offset 0x64 + length 0xffffffff = 0x100000063 overflows 32 bits (32-bit "
            "readers wrap around)",
        ),
        (
            "out-of-bounds",
            24,
            "entry 1: data [0xfffffffa, 0xffffffff) ends past the 100-byte table",
        ),
        ("out-of-bounds", 48, "entry 2: data [0x64, 0x100000063) ends past the 100-byte table"),
        ("not-x509", 96, "entry 0 (VCEK) is not a DER or PEM X.509 certificate"),
    ]


def test_trailing_data_counts_the_longest_range_named_from_a_start() -> None:
    """Two entries from the same offset, the longer first: every byte of the longer range is
    named (they overlap, but nothing is trailing data)."""
    nine = uuid.UUID(int=9)
    table = _rows((CertGuid.CRL.value, 72, 10), (nine, 72, 4)) + bytes(range(1, 11))
    found = check_cert_table(table, extra_names={nine: "nine"})
    assert [(v.code, v.offset) for v in found] == [("overlap", 0), ("overlap", 24)]
