"""PSC descriptors: spec/tables/psc.toml == schemas == codec, exact bytes, checks, bad input.

Expected values come from ``spec/tables/psc.toml`` (transcribed from Linux sev-common.h and
uapi headers), never from the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghcb import GhcbError, InputTypeError, LengthError
from ghcb._fast import bit_fields, flat_fields
from ghcb.codes import KvmExit, MsrCode, PscErr, PscOp
from ghcb.errors import FieldValueError, Severity
from ghcb.psc import (
    GHCB_MSR_PSC_RESP_ERROR,
    PSC_MAX_BYTES,
    PscDesc,
    PscEntry,
    PscHdr,
    build_psc,
    check_psc,
    parse_psc,
)
from ghcb.schemas import kvm as kvm_schemas
from ghcb.schemas import psc as schemas
from tests.helpers import assert_roundtrip, load_table

if TYPE_CHECKING:
    from ghcb.page import Backend

TABLE = load_table("psc")

# Two entries and the header, by hand from the table's bit positions:
# entry 0: gfn 0x200, op 2 (shared), 2 MiB -> (1 << 56) | (2 << 52) | (0x200 << 12)
# entry 1: gfn 0x400, op 1 (private), 4 KiB, cur_page 1 -> (1 << 52) | (0x400 << 12) | 1
TWO = bytes.fromhex(
    "0000"
    "0100"
    "00000000"  # cur_entry 0, end_entry 1, reserved 0
    "0000200000002001"  # entry 0
    "0100400000001000"  # entry 1
)


# -- spec table == schema == codec ------------------------------------------------------------
def test_header_table_is_the_schema() -> None:
    """psc_hdr: names, offsets and sizes as the table."""
    rows = [(f.name, f.offset, f.size) for f in flat_fields(schemas.psc_hdr)]
    assert rows == [(r["name"], r["offset"], r["size"]) for r in TABLE["psc_hdr"]["field"]]
    assert schemas.PSC_HDR_SIZE == TABLE["psc_hdr"]["size"] == TABLE["descriptor"]["header_size"]


def test_entry_table_is_the_schema() -> None:
    """psc_entry: every bit field's position and width as the table (LSB first)."""
    got = sorted((f.shift, f.width, f.name) for f in bit_fields(schemas.psc_entry))
    want = sorted((r["lo"], r["width"], r["name"]) for r in TABLE["psc_entry"]["bits"])
    assert got == want
    assert schemas.PSC_ENTRY_SIZE == TABLE["psc_entry"]["size"] == TABLE["descriptor"]["entry_size"]
    assert TABLE["psc_entry"]["pages_4k"] == schemas.PSC_PAGES_4K
    assert TABLE["psc_entry"]["pages_2m"] == schemas.PSC_PAGES_2M


def test_entry_record_bits_match_the_table() -> None:
    """PscEntry.encode puts each field at the table's bits."""
    for row in TABLE["psc_entry"]["bits"]:
        value = (1 << row["width"]) - 1
        assert PscEntry(**{row["name"]: value}).encode() == value << row["lo"]


def test_descriptor_limits() -> None:
    """VMGEXIT_PSC_MAX_ENTRY / MAX_COUNT and the shared-buffer size as the table."""
    desc = TABLE["descriptor"]
    assert desc["max_entry"] == schemas.VMGEXIT_PSC_MAX_ENTRY
    assert desc["max_count"] == schemas.VMGEXIT_PSC_MAX_COUNT
    assert desc["shared_buffer_size"] == PSC_MAX_BYTES
    assert schemas.snp_psc_desc.sizeof() == 8 + 8 * desc["max_entry"]


def test_exitinfo2_values() -> None:
    """PscErr is exactly the table's SW_EXITINFO2 answers."""
    members = {"OK" if m.name == "NONE" else m.name: int(m) for m in PscErr}
    assert members == TABLE["exitinfo2"]


def test_msr_values() -> None:
    """GHCB_MSR_PSC_REQ / RESP / RESP_ERROR as the table."""
    assert int(MsrCode.PSC_REQ) == TABLE["msr"]["req"]
    assert int(MsrCode.PSC_RESP) == TABLE["msr"]["resp"]
    assert TABLE["msr"]["resp_error"] == GHCB_MSR_PSC_RESP_ERROR


def test_every_kvm_exit_is_its_table_row_and_uapi() -> None:
    """Each KvmExit value against the spec table row that defines it and the value
    include/uapi/linux/kvm.h gives (KVM_EXIT_HYPERCALL 3, KVM_EXIT_SYSTEM_EVENT 24); VMGEXIT
    (the v15 seed patch) and SNP_REQ_CERTS (mainline) are the tables' own rows."""
    kvm = load_table("kvm")
    rows = {
        KvmExit.HYPERCALL: (TABLE["hypercall"]["exit_reason"], 3),
        KvmExit.SYSTEM_EVENT: (kvm["system_event"]["exit_reason"], 24),
        KvmExit.VMGEXIT: (kvm["user_vmgexit"]["exit_reason"], 40),
        KvmExit.SNP_REQ_CERTS: (kvm["snp_req_certs"]["exit_reason"], 43),
    }
    assert set(rows) == set(KvmExit)
    got = [(m.name, int(m), table) for m, (table, _) in rows.items()]
    assert got == [(m.name, uapi, uapi) for m, (_, uapi) in rows.items()]


def test_hypercall_exit_table_is_the_schema() -> None:
    """kvm_run.hypercall: the fields, KVM_EXIT_HYPERCALL, KVM_HC_MAP_GPA_RANGE, flags."""
    hc = TABLE["hypercall"]
    rows = [(f.name, f.offset, f.size) for f in flat_fields(kvm_schemas.kvm_hypercall_exit)]
    assert rows == [(r["name"], r["offset"], r["size"]) for r in hc["field"]]
    assert kvm_schemas.kvm_hypercall_exit.sizeof() == hc["size"]
    assert hc["size"] <= kvm_schemas.KVM_RUN_EXIT_UNION_SIZE
    assert int(KvmExit.HYPERCALL) == hc["exit_reason"]
    assert hc["nr_map_gpa_range"] == kvm_schemas.KVM_HC_MAP_GPA_RANGE
    assert hc["flag_long_mode"] == kvm_schemas.KVM_EXIT_HYPERCALL_LONG_MODE
    flags = TABLE["map_gpa_range"]
    assert flags["page_sz_4k"] == kvm_schemas.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
    assert flags["page_sz_2m"] == kvm_schemas.KVM_MAP_GPA_RANGE_PAGE_SZ_2M
    assert flags["page_sz_1g"] == kvm_schemas.KVM_MAP_GPA_RANGE_PAGE_SZ_1G
    assert flags["encrypted"] == kvm_schemas.KVM_MAP_GPA_RANGE_ENCRYPTED
    assert flags["decrypted"] == kvm_schemas.KVM_MAP_GPA_RANGE_DECRYPTED


def test_psc_ops_reused() -> None:
    """The operations are ghcb.codes.PscOp (messages.toml), private 1 and shared 2."""
    assert (PscOp.PRIVATE, PscOp.SHARED, PscOp.PSMASH, PscOp.UNSMASH) == (1, 2, 3, 4)


# -- exact bytes ------------------------------------------------------------------------------
def test_parse_two_entries(backend: Backend) -> None:
    """The hand-made descriptor decodes to the expected header and entries."""
    desc = parse_psc(TWO, backend=backend)
    assert desc.hdr == PscHdr(cur_entry=0, end_entry=1, reserved_0x4=0)
    assert desc.entries == (
        PscEntry(gfn=0x200, operation=2, pagesize=1),
        PscEntry(gfn=0x400, operation=1, cur_page=1),
    )
    assert desc.entries[0].op is PscOp.SHARED
    assert (desc.entries[0].npages, desc.entries[1].npages) == (512, 1)
    assert desc.entries[0].gpa == 0x200000
    assert desc.live == desc.entries
    assert build_psc(desc, backend=backend) == TWO == desc.to_bytes()


def test_build_from_entries(backend: Backend) -> None:
    """build_psc(entries): end_entry defaults to the last index, as Linux sets it."""
    entries = [
        PscEntry(gfn=0x200, operation=2, pagesize=1),
        PscEntry(gfn=0x400, operation=1, cur_page=1),
    ]
    assert build_psc(entries, backend=backend) == TWO
    assert build_psc([], backend=backend) == bytes(8)
    data = build_psc(entries, cur_entry=1, end_entry=0, reserved=7, backend=backend)
    assert data[:8] == bytes.fromhex("0100000007000000")


def test_schema_roundtrip_and_compiled_twin() -> None:
    """psc_hdr and psc_entry round-trip the hand-made bytes (compiled twin included)."""
    assert_roundtrip(schemas.psc_hdr, TWO[:8], {"cur_entry": 0, "end_entry": 1, "reserved_0x4": 0})
    entry = {"reserved_63_57": 0, "pagesize": 1, "operation": 2, "gfn": 0x200, "cur_page": 0}
    assert_roundtrip(schemas.psc_entry, TWO[8:16], entry)


def test_whole_shared_buffer(backend: Backend) -> None:
    """2032 bytes (the shared buffer) hold 253 entries; reserved bits survive."""
    data = bytearray(PSC_MAX_BYTES)
    data[0:8] = bytes.fromhex("0500fc00ffffffff")  # cur 5, end 252, reserved all ones
    data[-8:] = (0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
    desc = parse_psc(bytes(data), backend=backend)
    assert len(desc.entries) == 253
    assert desc.entries[-1].reserved_63_57 == 0x7F
    assert len(desc.live) == 248
    assert build_psc(desc) == bytes(data)


@given(st.binary(min_size=0, max_size=PSC_MAX_BYTES + 16))
def test_any_bytes_parse_or_raise_length(data: bytes) -> None:
    """Parse succeeds and round-trips exactly, or raises LengthError; backends agree."""
    if len(data) < 8 or len(data) > PSC_MAX_BYTES or len(data) % 8:
        for backend in ("struct", "construct"):
            with pytest.raises(LengthError, match="PSC descriptor"):
                parse_psc(data, backend=backend)
        assert [v.code for v in check_psc(data)] in (["psc-length"], ["psc-too-long"])
        return
    desc = parse_psc(data)
    assert parse_psc(data, backend="construct") == desc
    assert build_psc(desc) == data == build_psc(desc, backend="construct")
    assert all(v.offset is None or 0 <= v.offset < len(data) for v in check_psc(data))


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "rule", "offset"),
    [
        (0, "psc-length", 0),
        (7, "psc-length", 7),
        (9, "psc-length", 8),
        (2033, "psc-too-long", 2032),
    ],
)
def test_bad_lengths(size: int, rule: str, offset: int) -> None:
    """Short, partial-entry and over-long inputs: LengthError naming the rule and offset."""
    with pytest.raises(LengthError) as info:
        parse_psc(bytes(size))
    assert (info.value.rule, info.value.offset) == (rule, offset)
    assert [(v.code, v.offset) for v in check_psc(bytes(size))] == [(rule, offset)]


def test_bad_types() -> None:
    """Not bytes, bad records, bad header values: typed errors."""
    with pytest.raises(InputTypeError):
        parse_psc("00" * 8)
    with pytest.raises(InputTypeError):
        parse_psc(bytes(8), backend="cffi")  # type: ignore[arg-type]
    with pytest.raises(FieldValueError):
        PscEntry(cur_page=4096)
    with pytest.raises(FieldValueError):
        PscHdr(end_entry=65536)
    with pytest.raises(InputTypeError):
        build_psc([1, 2])  # type: ignore[list-item]
    with pytest.raises(LengthError):
        build_psc([PscEntry()] * 254)
    with pytest.raises(FieldValueError):
        build_psc(parse_psc(TWO), cur_entry=1)
    with pytest.raises(InputTypeError):
        PscDesc(hdr=None, entries=())  # type: ignore[arg-type]
    assert issubclass(LengthError, GhcbError)


# -- check_psc: one case per rule, citing snp_begin_psc ---------------------------------------
def _desc(
    entries: list[PscEntry], *, cur_entry: int = 0, end_entry: int | None = None, reserved: int = 0
) -> bytes:
    return build_psc(entries, cur_entry=cur_entry, end_entry=end_entry, reserved=reserved)


_OK = PscEntry(gfn=0x10, operation=1)
CHECKS: list[tuple[str, bytes, dict[str, Any], list[tuple[str, Severity, int]]]] = [
    ("valid", _desc([_OK, PscEntry(gfn=0x200, operation=2, pagesize=1)]), {}, []),
    # if (idx_end >= max_nr_entries) -> VMGEXIT_PSC_ERROR_INVALID_HDR
    (
        "end-entry-past-buffer",
        _desc([_OK], end_entry=1),
        {},
        [("psc-end-entry", Severity.ERROR, 2)],
    ),
    (
        "end-entry-past-window",
        _desc([_OK, _OK]),
        {"max_entries": 1},
        [("psc-end-entry", Severity.ERROR, 2)],
    ),
    # no cur_entry check in snp_begin_psc: idx > idx_end -> success
    (
        "cur-past-end",
        _desc([_OK, _OK], cur_entry=2, end_entry=1),
        {},
        [("psc-cur-entry", Severity.WARNING, 0)],
    ),
    ("hdr-reserved", _desc([_OK], reserved=1), {}, [("psc-hdr-reserved", Severity.WARNING, 4)]),
    # if (entry_start.cur_page > npages || !IS_ALIGNED(gfn, npages)) -> INVALID_ENTRY
    (
        "cur-page-4k",
        _desc([PscEntry(gfn=1, operation=1, cur_page=2)]),
        {},
        [("psc-entry-cur-page", Severity.ERROR, 8)],
    ),
    (
        "cur-page-2m",
        _desc([_OK, PscEntry(gfn=0x200, operation=1, pagesize=1, cur_page=513)]),
        {},
        [("psc-entry-cur-page", Severity.ERROR, 16)],
    ),
    (
        "unaligned-2m",
        _desc([PscEntry(gfn=0x201, operation=1, pagesize=1)]),
        {},
        [("psc-entry-unaligned", Severity.ERROR, 8)],
    ),
    # switch (entry_start.operation) default: completed without action
    (
        "psmash",
        _desc([PscEntry(gfn=0x200, operation=3, pagesize=1)]),
        {},
        [("psc-entry-operation", Severity.WARNING, 8)],
    ),
    (
        "op-zero",
        _desc([PscEntry(gfn=1, operation=0)]),
        {},
        [("psc-entry-operation", Severity.WARNING, 8)],
    ),
    (
        "entry-reserved",
        _desc([PscEntry(gfn=1, operation=2, reserved_63_57=0x40)]),
        {},
        [("psc-entry-reserved", Severity.WARNING, 8)],
    ),
    # past the window KVM answers INVALID_HDR before looking at any entry: none past it checked
    (
        "entries-past-window-unchecked",
        _desc([_OK, PscEntry(gfn=1, operation=1, cur_page=7)]),
        {"max_entries": 1},
        [("psc-end-entry", Severity.ERROR, 2)],
    ),
    # only live entries (cur_entry..end_entry) are looked at
    ("dead-entry-ignored", _desc([PscEntry(gfn=1, cur_page=9), _OK], cur_entry=1), {}, []),
]


@pytest.mark.parametrize(("name", "data", "kwargs", "want"), CHECKS, ids=[c[0] for c in CHECKS])
def test_check_rules(
    name: str, data: bytes, kwargs: dict[str, Any], want: list[tuple[str, Severity, int]]
) -> None:
    """Each rule of check_psc fires alone on its case, with severity and offset."""
    got = [(v.code, v.severity, v.offset) for v in check_psc(data, **kwargs)]
    assert got == want


def test_check_reports_every_violation() -> None:
    """All violations in one pass."""
    data = _desc(
        [PscEntry(gfn=1, cur_page=2, operation=9), PscEntry(gfn=3, operation=1, pagesize=1)],
        end_entry=2,
        reserved=5,
    )
    codes = [v.code for v in check_psc(data)]
    assert codes == [
        "psc-end-entry",
        "psc-hdr-reserved",
        "psc-entry-cur-page",
        "psc-entry-operation",
        "psc-entry-unaligned",
    ]


def test_to_json() -> None:
    """The decode JSON: header ints, each entry with its offset, liveness and operation name."""
    doc = parse_psc(TWO).to_json()
    assert doc == {
        "cur_entry": 0,
        "end_entry": 1,
        "reserved_0x4": 0,
        "entries": [
            {
                "index": 0,
                "offset": 8,
                "live": True,
                "cur_page": 0,
                "gfn": 0x200,
                "gpa": 0x200000,
                "operation": {"value": 2, "name": "SHARED"},
                "pagesize": 1,
                "npages": 512,
                "reserved_63_57": 0,
            },
            {
                "index": 1,
                "offset": 16,
                "live": True,
                "cur_page": 1,
                "gfn": 0x400,
                "gpa": 0x400000,
                "operation": {"value": 1, "name": "PRIVATE"},
                "pagesize": 0,
                "npages": 1,
                "reserved_63_57": 0,
            },
        ],
    }
    tail = parse_psc(build_psc(parse_psc(TWO).entries, end_entry=0)).to_json()
    assert tail["entries"] == [{**e, "live": e["index"] == 0} for e in doc["entries"]]  # type: ignore[attr-defined]
    odd = parse_psc(build_psc([PscEntry(operation=9)], cur_entry=1)).to_json()
    assert odd["entries"] == [
        {
            "index": 0,
            "offset": 8,
            "live": False,
            "cur_page": 0,
            "gfn": 0,
            "gpa": 0,
            "operation": {"value": 9, "name": None},
            "pagesize": 0,
            "npages": 1,
            "reserved_63_57": 0,
        }
    ]
