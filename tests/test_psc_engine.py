"""KVM's PSC handling (ghcb.hypervisor.psc): every path of snp_begin_psc / snp_complete_one_psc
and of the MSR request, with the exact descriptor, kvm_run and EXITINFO2 bytes.

Expected kvm_run bytes are assembled from spec/tables/kvm.toml and psc.toml offsets; the C
condition each case exercises is quoted beside it (arch/x86/kvm/svm/sev.c).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghcb.codes import PscErr
from ghcb.errors import FieldValueError, GhcbError, InputTypeError, LengthError, Severity
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.memory import GuestMemory
from ghcb.hypervisor.psc import (
    GhcbPsc,
    MapGpaRange,
    MsrDone,
    MsrPsc,
    PscDone,
    decode_hypercall_exit,
    vmm_map_gpa_range,
    with_hypercall_ret,
)
from ghcb.hypervisor.psc_answer import PscExit, kvm_psc_answer, kvm_psc_answer_in_page
from ghcb.hypervisor.rules import Validator
from ghcb.psc import PscEntry, build_psc, check_psc, parse_psc
from tests.helpers import load_table, load_vectors

if TYPE_CHECKING:
    from collections.abc import Sequence

KVM = load_table("kvm")
PSC = load_table("psc")
RUN_SIZE = KVM["kvm_run"]["exit_union_offset"] + KVM["kvm_run"]["exit_union_size"]
UNION = KVM["kvm_run"]["exit_union_offset"]
EXIT_REASON = next(f["offset"] for f in KVM["kvm_run"]["field"] if f["name"] == "exit_reason")
HC = {f["name"]: f["offset"] for f in PSC["hypercall"]["field"]}
ERR = PSC["exitinfo2"]
FLAGS = PSC["map_gpa_range"]
ENC, SZ_2M = FLAGS["encrypted"], FLAGS["page_sz_2m"]

GHCB = 0x1000
DESC = GHCB + 0x800  # the start of the shared buffer
PAGE = 4096


def _run(gpa: int, npages: int, attributes: int, base: bytes | None = None) -> bytes:
    """The kvm_run bytes KVM leaves for one KVM_HC_MAP_GPA_RANGE exit (by the tables)."""
    out = bytearray(base or bytes(RUN_SIZE))
    struct.pack_into("<I", out, EXIT_REASON, PSC["hypercall"]["exit_reason"])
    for name, value in (
        ("nr", PSC["hypercall"]["nr_map_gpa_range"]),
        ("args_0", gpa),
        ("args_1", npages),
        ("args_2", attributes),
        ("ret", 0),
    ):
        struct.pack_into("<Q", out, UNION + HC[name], value)
    return bytes(out)


class Setup:
    """A GHCB page with a descriptor in its shared buffer, and private guest RAM."""

    def __init__(
        self, entries: Sequence[PscEntry], *, cur_entry: int = 0, end_entry: int | None = None
    ) -> None:
        self.memory = GuestMemory()
        self.memory.map(GHCB)
        self.memory.map(0x100000, 1024, shared=False)  # GFN 0x100..0x4ff
        self.data = build_psc(entries, cur_entry=cur_entry, end_entry=end_entry)
        self.memory.host_write(DESC, self.data)

    def engine(self, **kwargs: Any) -> GhcbPsc:
        return GhcbPsc.in_ghcb(self.memory, GHCB, DESC, **kwargs)

    def desc(self) -> bytes:
        return self.memory.host_read(DESC, len(self.data))


def _entry_bytes(**fields: int) -> bytes:
    return PscEntry(**fields).encode().to_bytes(8, "little")


# -- the GHCB descriptor ----------------------------------------------------------------------
def test_one_private_page_exact_bytes() -> None:
    """One 4 KiB entry: one exit (args: GPA, 1, ENCRYPTED|4K), then cur_page 1, cur_entry 1."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    engine = s.engine()
    step = engine.begin()
    assert step == MapGpaRange(_run(0x100000, 1, ENC), 0x100000, 1, ENC)
    assert s.desc() == s.data  # nothing written before the range completes
    assert vmm_map_gpa_range(s.memory, step) == 0
    assert s.memory.is_shared(0x100000) is False
    done = engine.complete(0)
    assert done == PscDone(ERR["OK"])
    assert s.desc() == bytes.fromhex("0100000000000000") + _entry_bytes(
        gfn=0x100, operation=1, cur_page=1
    )
    assert engine.done
    assert engine.exits == 1


def test_contiguous_entries_coalesce() -> None:
    """Three adjacent shared 4K entries are one exit of 3 pages ("while (++idx <= idx_end)":
    same operation, gfn == entry_start.gfn + npages, cur_page 0, same page size); the
    fourth (a gap) is a second exit; cur_entry moves per range."""
    entries = [PscEntry(gfn=g, operation=2) for g in (0x100, 0x101, 0x102, 0x104)]
    s = Setup(entries)
    engine = s.engine()
    first = engine.begin()
    assert first == MapGpaRange(_run(0x100000, 3, 0), 0x100000, 3, 0)
    assert vmm_map_gpa_range(s.memory, first) == 0
    second = engine.complete(0)
    assert second == MapGpaRange(_run(0x104000, 1, 0), 0x104000, 1, 0)
    after_first = bytes.fromhex("0300030000000000") + b"".join(
        _entry_bytes(gfn=g, operation=2, cur_page=1) for g in (0x100, 0x101, 0x102)
    )
    assert s.desc() == after_first + _entry_bytes(gfn=0x104, operation=2)
    assert vmm_map_gpa_range(s.memory, second) == 0
    assert engine.complete(0) == PscDone(0)
    assert engine.exits == 2  # KVM_EXIT_HYPERCALL exits counted
    assert s.desc()[:4] == bytes.fromhex("04000300")
    assert [s.memory.is_shared(0x100000 + i * PAGE) for i in range(5)] == [1, 1, 1, 0, 1]


def test_operation_change_splits_ranges() -> None:
    """entry.operation != entry_start.operation ends the range."""
    s = Setup([PscEntry(gfn=0x100, operation=2), PscEntry(gfn=0x101, operation=1)])
    engine = s.engine()
    assert engine.begin().npages == 1  # type: ignore[union-attr]
    step = engine.complete(0)
    assert step == MapGpaRange(_run(0x101000, 1, ENC), 0x101000, 1, ENC)


@pytest.mark.parametrize(
    ("second", "npages"),
    [
        (PscEntry(gfn=0x101, operation=1, cur_page=1), 1),  # "entry.cur_page" breaks
        (PscEntry(gfn=0x101, operation=1, pagesize=1), 1),  # "!!entry.pagesize != huge"
        (PscEntry(gfn=0x102, operation=1), 1),  # "entry.gfn != entry_start.gfn + npages"
        (PscEntry(gfn=0x101, operation=1, reserved_63_57=1), 2),  # reserved bits: joins
    ],
    ids=["cur-page", "page-size", "gap", "reserved-joins"],
)
def test_coalescing_breaks(second: PscEntry, npages: int) -> None:
    """Each condition that ends a range, alone."""
    s = Setup([PscEntry(gfn=0x100, operation=1), second])
    step = s.engine().begin()
    assert step == MapGpaRange(_run(0x100000, npages, ENC), 0x100000, npages, ENC)


def test_2m_entries_coalesce() -> None:
    """Two adjacent 2 MiB entries: one exit of 1024 pages, DECRYPTED | PAGE_SZ_2M; both
    entries then read cur_page 512."""
    s = Setup(
        [PscEntry(gfn=0x200, operation=2, pagesize=1), PscEntry(gfn=0x400, operation=2, pagesize=1)]
    )
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x200000, 1024, SZ_2M), 0x200000, 1024, SZ_2M)
    assert engine.complete(0) == PscDone(0)
    assert s.desc() == bytes.fromhex("0200010000000000") + _entry_bytes(
        gfn=0x200, operation=2, pagesize=1, cur_page=512
    ) + _entry_bytes(gfn=0x400, operation=2, pagesize=1, cur_page=512)


def test_partial_2m_entry_continues_as_4k_with_2m_flag() -> None:
    """cur_page 3 of a 2M entry: "npages -= cur_page; gfn += cur_page; huge = false" — but
    args[2] takes PAGE_SZ_2M from entry_start.pagesize (quirk kept)."""
    s = Setup([PscEntry(gfn=0x200, operation=1, pagesize=1, cur_page=3)])
    engine = s.engine()
    assert engine.begin() == MapGpaRange(
        _run(0x203000, 509, ENC | SZ_2M), 0x203000, 509, ENC | SZ_2M
    )
    assert engine.complete(0) == PscDone(0)
    assert s.desc()[8:] == _entry_bytes(gfn=0x200, operation=1, pagesize=1, cur_page=512)


def test_partial_start_coalesces_on_original_gfn() -> None:
    """After a partial start, the next entry joins when its gfn == entry_start.gfn + npages
    with npages already reduced: a 4K entry at 0x200 + 511 joins, and the exit covers GFN
    0x201..0x400 — one page past the 2M entry that was never asked for (KVM quirk)."""
    s = Setup(
        [PscEntry(gfn=0x200, operation=2, pagesize=1, cur_page=1), PscEntry(gfn=0x3FF, operation=2)]
    )
    engine = s.engine()
    step = engine.begin()
    assert step == MapGpaRange(_run(0x201000, 512, SZ_2M), 0x201000, 512, SZ_2M)
    assert vmm_map_gpa_range(s.memory, step) == 0
    assert s.memory.is_shared(0x400000) is True  # GFN 0x400: in no entry
    assert engine.complete(0) == PscDone(0)
    assert s.desc()[8:] == _entry_bytes(
        gfn=0x200, operation=2, pagesize=1, cur_page=512
    ) + _entry_bytes(gfn=0x3FF, operation=2, cur_page=1)


def test_done_entries_skipped_with_cur_entry_increment() -> None:
    """A done entry (cur_page == npages): "guest_psc->hdr.cur_entry++", no exit for it."""
    s = Setup([PscEntry(gfn=0x100, operation=1, cur_page=1), PscEntry(gfn=0x200, operation=1)])
    engine = s.engine()
    step = engine.begin()
    assert step == MapGpaRange(_run(0x200000, 1, ENC), 0x200000, 1, ENC)
    assert s.desc()[:4] == bytes.fromhex("01000100")  # cur_entry 1 written already


def test_cur_entry_past_end_entry_is_success() -> None:
    """No cur_entry check: "if (idx > idx_end)" → success 0, nothing written."""
    s = Setup([PscEntry(gfn=0x100, operation=1)] * 3, cur_entry=3, end_entry=1)
    engine = s.engine()
    assert engine.begin() == PscDone(ERR["OK"])
    assert s.desc() == s.data


@pytest.mark.parametrize(
    ("offset", "end_entry", "want"),
    [
        (0, 252, ERR["OK"]),  # 2032 bytes: max_nr_entries 253
        (0, 253, ERR["INVALID_HDR"]),  # "if (idx_end >= max_nr_entries)"
        (0x7E0, 0, ERR["OK"]),  # 16 bytes left: the header and 1 entry
        (0x7E0, 1, ERR["INVALID_HDR"]),
    ],
)
def test_end_entry_against_the_window(offset: int, end_entry: int, want: int) -> None:
    """max_nr_entries = (ghcb_sa_len - 8) / 8, from the descriptor to the shared buffer's end;
    end_entry at or past it is INVALID_HDR before anything is processed."""
    memory = GuestMemory()
    memory.map(GHCB)
    gpa = DESC + offset
    # cur_entry past end_entry so a valid header answers 0 without exits
    header = struct.pack("<HHI", 0xFFFF, end_entry, 0)
    memory.host_write(gpa, header)
    engine = GhcbPsc.in_ghcb(memory, GHCB, gpa)
    assert engine.max_nr_entries == (0x7F0 - offset - 8) // 8
    assert engine.begin() == PscDone(want)
    assert memory.host_read(gpa, 8) == header


@pytest.mark.parametrize(
    "entry",
    [
        PscEntry(gfn=0x100, operation=1, cur_page=2),  # "entry_start.cur_page > npages" (4K)
        PscEntry(gfn=0x200, operation=1, pagesize=1, cur_page=513),  # (2M)
        PscEntry(gfn=0x201, operation=1, pagesize=1),  # "!IS_ALIGNED(gfn, npages)"
        PscEntry(gfn=0x201, operation=3, pagesize=1),  # checked before the operation
    ],
    ids=["cur-page-4k", "cur-page-2m", "unaligned-2m", "unaligned-psmash"],
)
def test_invalid_entry_after_progress(entry: PscEntry) -> None:
    """A bad entry after a converted one: the first stays done (cur_entry 1, cur_page 1),
    the answer is INVALID_ENTRY."""
    s = Setup([PscEntry(gfn=0x100, operation=2), entry])
    engine = s.engine()
    assert engine.begin().npages == 1  # type: ignore[union-attr]
    assert engine.complete(0) == PscDone(ERR["INVALID_ENTRY"])
    assert s.desc() == bytes.fromhex("0100010000000000") + _entry_bytes(
        gfn=0x100, operation=2, cur_page=1
    ) + entry.encode().to_bytes(8, "little")


def test_userspace_error_is_generic() -> None:
    """ "if (vcpu->run->hypercall.ret)" → GENERIC; the in-flight range is not marked."""
    s = Setup([PscEntry(gfn=0x100, operation=2), PscEntry(gfn=0x101, operation=2)])
    engine = s.engine()
    engine.begin()
    assert engine.complete(5) == PscDone(ERR["GENERIC"])
    assert s.desc() == s.data
    assert PscDone(ERR["GENERIC"]).error is PscErr.GENERIC


def test_no_userspace_exit_is_generic() -> None:
    """ "if (!user_exit_on_hypercall(kvm, KVM_HC_MAP_GPA_RANGE))" → GENERIC, no exit."""
    s = Setup([PscEntry(gfn=0x100, operation=2)])
    assert s.engine(exit_enabled=False).begin() == PscDone(ERR["GENERIC"])
    assert s.desc() == s.data


def test_psmash_unsmash_complete_without_exit() -> None:
    """Operations other than private/shared: "__snp_complete_one_psc(svm); goto next_range"."""
    entries = [
        PscEntry(gfn=0x200, operation=3, pagesize=1),
        PscEntry(gfn=0x400, operation=3, pagesize=1),  # coalesced with the first
        PscEntry(gfn=0x600, operation=4, pagesize=1),
        PscEntry(gfn=0x10, operation=0),
        PscEntry(gfn=0x100, operation=1),
    ]
    s = Setup(entries)
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x100000, 1, ENC), 0x100000, 1, ENC)
    assert s.desc()[:4] == bytes.fromhex("04000400")
    marked = parse_psc(s.desc()).entries
    assert [e.cur_page for e in marked] == [512, 512, 512, 1, 0]


def test_v1_scratch_outside_ghcb_is_invalid_hdr() -> None:
    """A v1 scratch area outside the GHCB is an 8-byte copy: max_nr_entries 0 → INVALID_HDR."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    engine = GhcbPsc(s.memory, DESC, 8)
    assert engine.max_nr_entries == 0
    assert engine.begin() == PscDone(ERR["INVALID_HDR"])


def test_oversized_window_is_generic() -> None:
    """ "WARN_ON_ONCE(max_nr_entries > VMGEXIT_PSC_MAX_COUNT)" → GENERIC."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    assert GhcbPsc(s.memory, DESC, 8 + 254 * 8).begin() == PscDone(ERR["GENERIC"])


def test_v15_has_no_warn_on_a_large_copy() -> None:
    """v15 has no max_nr_entries: a 4 KiB copy outside the GHCB (exit_info_2 = 4096) is
    processed, where the merged tree's WARN_ON_ONCE answers GENERIC."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    engine = GhcbPsc(s.memory, DESC, 4096, validator=Validator.V15, in_ghcb=False)
    assert engine.begin() == MapGpaRange(_run(0x100000, 1, ENC), 0x100000, 1, ENC)
    merged = GhcbPsc(s.memory, DESC, 4096, in_ghcb=False)
    assert merged.begin() == PscDone(ERR["GENERIC"])


def test_v15_short_area() -> None:
    """v15 takes exit_info_2 as the length, even below the header: in the GHCB KVM still reads
    the page; a 4-byte copy outside it ends inside the header (undefined past it)."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    in_page = GhcbPsc(s.memory, DESC, 0, validator=Validator.V15)
    assert in_page.begin() == MapGpaRange(_run(0x100000, 1, ENC), 0x100000, 1, ENC)
    outside = GhcbPsc(s.memory, DESC, 4, validator=Validator.V15, in_ghcb=False)
    done = outside.begin()
    assert isinstance(done, PscDone)
    assert done.exit_info_2 == ERR["OK"]  # end_entry read as 0, entry 0 as zeros: no action
    assert done.undefined is not None
    with pytest.raises(HypervisorUsageError):
        GhcbPsc(s.memory, DESC, 4)  # the merged tree always has the header


def test_hypercall_exit_bytes_exact() -> None:
    """The first 64 bytes of a PSC exit, typed out: exit_reason 3 (uapi/linux/kvm.h
    "#define KVM_EXIT_HYPERCALL 3") at offset 8, hypercall.nr 12 (KVM_HC_MAP_GPA_RANGE) at 32,
    args[0..2] = gpa 0x100000, npages 1, attributes KVM_MAP_GPA_RANGE_ENCRYPTED at 40..63."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    first = s.engine().begin()
    assert isinstance(first, MapGpaRange)
    assert first.kvm_run[:64] == bytes.fromhex(
        "0000000000000000"
        "0300000000000000"
        "0000000000000000"
        "0000000000000000"
        "0c00000000000000"
        "0000100000000000"
        "0100000000000000"
        "1000000000000000"
    )


def test_kvm_run_fields_kvm_does_not_write_are_kept() -> None:
    """KVM writes exit_reason, nr, ret, args[0..2]; args[3..5], flags and the rest stay."""
    base = bytes(range(256)) + bytes(range(32))
    s = Setup([PscEntry(gfn=0x100, operation=1), PscEntry(gfn=0x300, operation=2)])
    engine = s.engine(kvm_run=base)
    first = engine.begin()
    assert isinstance(first, MapGpaRange)
    assert first.kvm_run == _run(0x100000, 1, ENC, base)
    mine = with_hypercall_ret(first, 0)
    mine = mine[: UNION + HC["flags"]] + b"\x01" + mine[UNION + HC["flags"] + 1 :]
    second = engine.complete_run(mine)
    assert isinstance(second, MapGpaRange)
    assert second.kvm_run == _run(0x300000, 1, 0, mine)
    assert decode_hypercall_exit(second).flags & 0xFF == 1


def test_reserved_bits_ignored_and_kept() -> None:
    """Reserved header and entry bits are not checked ("struct psc_entry ... reserved : 7" is
    never read) and survive KVM's cur_page write (a bit-field store)."""
    entry = PscEntry(gfn=0x100, operation=2, reserved_63_57=0x7F)
    s = Setup([entry])
    s.memory.host_write(DESC + 4, b"\xff\xff\xff\xff")  # hdr.reserved
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x100000, 1, 0), 0x100000, 1, 0)
    assert engine.complete(0) == PscDone(ERR["OK"])
    assert s.desc() == bytes.fromhex("01000000ffffffff") + _entry_bytes(
        gfn=0x100, operation=2, reserved_63_57=0x7F, cur_page=1
    )


def test_descriptor_reread_after_userspace() -> None:
    """KVM re-reads the header at every range ("idx_end = READ_ONCE(...)"): a VMM that grows
    end_entry past the area between exits gets INVALID_HDR, the first range kept."""
    s = Setup([PscEntry(gfn=0x100, operation=2), PscEntry(gfn=0x200, operation=2)])
    engine = s.engine()
    engine.begin()
    s.memory.host_write(DESC + 2, struct.pack("<H", 253))
    assert engine.complete(0) == PscDone(ERR["INVALID_HDR"])
    assert s.desc()[:4] == bytes.fromhex("0100fd00")


# -- the v15 tree: end_entry against VMGEXIT_PSC_MAX_COUNT, not the area ----------------------
def test_v15_checks_end_entry_against_max_count() -> None:
    """v15 "if (idx_end >= VMGEXIT_PSC_MAX_COUNT)": the requested length (exit_info_2 = 16,
    one entry) does not bound the entries; entry 1 is read from the GHCB page beyond it."""
    s = Setup([PscEntry(gfn=0x100, operation=1), PscEntry(gfn=0x101, operation=1)])
    merged = GhcbPsc(s.memory, DESC, 16)
    assert merged.begin() == PscDone(ERR["INVALID_HDR"])  # max_nr_entries 1
    v15 = GhcbPsc(s.memory, DESC, 16, validator=Validator.V15)
    assert v15.max_nr_entries == 253
    assert v15.begin() == MapGpaRange(_run(0x100000, 2, ENC), 0x100000, 2, ENC)
    assert v15.complete(0) == PscDone(ERR["OK"], None)
    header = struct.pack("<HHI", 0, 253, 0)
    s.memory.host_write(DESC, header)
    assert GhcbPsc(s.memory, DESC, 16, validator=Validator.V15).begin() == PscDone(
        ERR["INVALID_HDR"]
    )


def test_v15_past_the_ghcb_page_is_undefined() -> None:
    """A descriptor at GHCB+0xFE0 with end_entry 5: entries 3.. lie past the GHCB page, in
    host memory KVM's mapping does not cover. The model reads zeros (operation 0: done
    without action), drops the writes, and answers with ``undefined`` set."""
    memory = GuestMemory()
    memory.map(GHCB, 2)
    gpa = GHCB + 0xFE0
    memory.host_write(gpa, struct.pack("<HHI", 3, 5, 0))
    memory.host_write(GHCB + 0x1000, b"\xff" * 64)  # the next guest page is not KVM's
    engine = GhcbPsc(memory, gpa, 16, validator=Validator.V15)
    done = engine.begin()
    assert isinstance(done, PscDone)
    assert done.exit_info_2 == ERR["OK"]
    assert done.undefined is not None
    assert "past KVM's 32-byte buffer" in done.undefined
    assert memory.host_read(GHCB + 0x1000, 64) == b"\xff" * 64
    # the header is in the page: three zero entries (GFN 0, not adjacent to each other),
    # each its own no-action range, so hdr.cur_entry = 3 + 3
    assert memory.host_read(gpa, 2) == b"\x06\x00"


def test_v15_copy_outside_the_ghcb() -> None:
    """v1 scratch outside the GHCB (v15 allows it): a copy of exit_info_2 bytes; entries past
    it are undefined (zeros in the model)."""
    s = Setup([PscEntry(gfn=0x100, operation=2)], end_entry=1)
    engine = GhcbPsc(s.memory, DESC, 16, validator=Validator.V15, in_ghcb=False)
    assert engine.begin() == MapGpaRange(_run(0x100000, 1, 0), 0x100000, 1, 0)
    done = engine.complete(0)
    assert isinstance(done, PscDone)
    assert done.exit_info_2 == ERR["OK"]
    assert done.undefined is not None


# -- the MSR request --------------------------------------------------------------------------
def _msr(gfn: int, op: int, high: int = 0) -> int:
    return high << 56 | op << 52 | gfn << 12 | int(PSC["msr"]["req"])


@pytest.mark.parametrize(("op", "attributes"), [(1, ENC), (2, 0)])
def test_msr_one_page(op: int, attributes: int) -> None:
    """GHCB_MSR_PSC_REQ: one 4K exit; ret 0 → GHCB_MSR_PSC_RESP, else RESP_ERROR."""
    engine = MsrPsc(_msr(0x123, op, high=0xAB))  # bits 63:56 ignored
    step = engine.begin()
    assert step == MapGpaRange(_run(0x123000, 1, attributes), 0x123000, 1, attributes)
    assert engine.complete(0) == MsrDone(PSC["msr"]["resp"])
    assert engine.done
    with pytest.raises(HypervisorUsageError, match="complete\\(\\) in state 'done'"):
        engine.complete(0)
    again = MsrPsc(_msr(0x123, op))
    again.begin()
    assert again.complete(1) == MsrDone(PSC["msr"]["resp_error"])


@pytest.mark.parametrize("op", [0, 3, 4, 15])
def test_msr_bad_operation(op: int) -> None:
    """ "op != SNP_PAGE_STATE_PRIVATE && op != SNP_PAGE_STATE_SHARED" → RESP_ERROR at once."""
    engine = MsrPsc(_msr(0x123, op))
    assert engine.begin() == MsrDone(PSC["msr"]["resp_error"])
    assert engine.done
    assert engine.exits == 0


def test_msr_without_userspace_exit() -> None:
    """ "!user_exit_on_hypercall(...)" → RESP_ERROR."""
    assert MsrPsc(_msr(1, 1), exit_enabled=False).begin() == MsrDone(PSC["msr"]["resp_error"])


# -- misuse -----------------------------------------------------------------------------------
def test_out_of_order_calls_raise() -> None:
    """complete before begin, begin twice, complete after done: HypervisorUsageError."""
    s = Setup([PscEntry(gfn=0x100, operation=1)])
    engine = s.engine()

    def misuse(call: Any, message: str) -> None:
        with pytest.raises(HypervisorUsageError) as info:
            call()
        assert (info.value.message, info.value.rule, info.value.spec) == (
            message,
            "psc-state",
            "Linux arch/x86/kvm/svm/sev.c snp_begin_psc / snp_complete_one_psc",
        )

    misuse(lambda: engine.complete(0), "complete() in state 'new' (expected 'await')")
    engine.begin()
    misuse(engine.begin, "begin() in state 'await' (expected 'new')")
    with pytest.raises(HypervisorUsageError):
        engine.complete(-1)
    with pytest.raises(HypervisorUsageError):
        engine.complete_run(bytes(10))
    engine.complete(0)
    misuse(
        lambda: engine.complete_run(bytes(RUN_SIZE)),
        "complete() in state 'done' (expected 'await')",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"desc_gpa": 0, "sa_len": 8},
        {"desc_gpa": DESC, "sa_len": 7},
        {"desc_gpa": DESC, "sa_len": 16 * PAGE + 1},
        {"desc_gpa": DESC, "sa_len": 8, "kvm_run": bytes(5)},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    """Bad GPA, window or kvm_run: HypervisorUsageError."""
    with pytest.raises(HypervisorUsageError):
        GhcbPsc(GuestMemory(), **kwargs)


def test_bad_msr_and_window() -> None:
    """An MSR value without GHCBInfo 0x014; a header outside the shared buffer."""
    with pytest.raises(HypervisorUsageError):
        MsrPsc(0x015)
    for desc in (GHCB + 0x7F8, GHCB + 0xFE9):
        with pytest.raises(HypervisorUsageError) as info:
            GhcbPsc.in_ghcb(GuestMemory(), GHCB, desc)
        assert (info.value.message, info.value.rule, info.value.spec) == (
            f"PSC header at {desc:#x} is not in the shared buffer of the GHCB at 0x1000",
            "invalid-scratch-area",
            "Linux arch/x86/kvm/svm/sev.c setup_vmgexit_scratch",
        )


def test_in_ghcb_gpa_errors() -> None:
    """Each GPA is a 52-bit int: its name, the value, rule and spec in the error; GPA 0 and
    the last GHCB page below 2**52 are accepted."""
    memory = GuestMemory()
    for ghcb, desc, bad in (
        (2**52, 0x800, "ghcb_gpa must be a 52-bit GPA, not 4503599627370496"),
        (-1, 0x800, "ghcb_gpa must be a 52-bit GPA, not -1"),
        (GHCB, 2**52, "desc_gpa must be a 52-bit GPA, not 4503599627370496"),
        (GHCB, True, "desc_gpa must be a 52-bit GPA, not True"),
    ):
        with pytest.raises(HypervisorUsageError) as info:
            GhcbPsc.in_ghcb(memory, ghcb, desc)
        assert (info.value.message, info.value.rule, info.value.spec) == (
            bad,
            "input-type",
            "Linux arch/x86/kvm/svm/sev.c snp_begin_psc / snp_complete_one_psc",
        )
    memory.map(0)
    assert GhcbPsc.in_ghcb(memory, 0, 0x800).begin() == PscDone(ERR["OK"])
    top = 2**52 - PAGE
    memory.map(top)
    assert GhcbPsc.in_ghcb(memory, top, top + 0x800).begin() == PscDone(ERR["OK"])


def test_decode_hypercall_exit_every_field() -> None:
    """exit_reason from its own offset (8), nr, args[0..5], ret and flags from the exit
    union, each at its kvm.h offset."""
    raw = bytearray(b"\xee" * 8 + bytes(RUN_SIZE - 8))  # request_interrupt_window ... not read
    struct.pack_into("<I", raw, EXIT_REASON, 3)
    for i, name in enumerate(("nr", *(f"args_{n}" for n in range(6)), "ret", "flags")):
        struct.pack_into("<Q", raw, UNION + HC[name], 0x1111_1111_1111_1111 * (i + 1))
    call = decode_hypercall_exit(bytes(raw))
    v = [0x1111_1111_1111_1111 * (i + 1) for i in range(9)]
    assert call == (3, v[0], tuple(v[1:7]), v[7], v[8])


@pytest.mark.parametrize("ret", [-1, 2**64, "0"])
def test_with_hypercall_ret_errors(ret: object) -> None:
    """hypercall.ret is a u64."""
    with pytest.raises(HypervisorUsageError) as info:
        with_hypercall_ret(bytes(RUN_SIZE), ret)  # type: ignore[arg-type]
    assert (info.value.message, info.value.rule, info.value.spec) == (
        f"hypercall.ret must be an int in 0..2**64-1, not {ret!r}",
        "field-range",
        "Linux uapi/linux/kvm.h kvm_run.hypercall (KVM_EXIT_HYPERCALL)",
    )


# -- edges of the walk (sev.c snp_begin_psc / __snp_complete_one_psc) -------------------------
def test_entries_before_cur_entry_are_never_touched() -> None:
    """The walk starts at hdr.cur_entry ("idx_start = hdr.cur_entry") and
    __snp_complete_one_psc marks only the in-flight entries ("for (idx = psc_idx;
    psc_inflight; ...)"): entry 0, before cur_entry 1, keeps cur_page 0."""
    s = Setup([PscEntry(gfn=0x100, operation=1), PscEntry(gfn=0x200, operation=2)], cur_entry=1)
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x200000, 1, 0), 0x200000, 1, 0)
    assert engine.complete(0) == PscDone(ERR["OK"])
    assert s.desc() == bytes.fromhex("0200010000000000") + _entry_bytes(
        gfn=0x100, operation=1
    ) + _entry_bytes(gfn=0x200, operation=2, cur_page=1)


def test_done_entry_skipped_after_cur_entry() -> None:
    """A done entry at index 2 (cur_entry 2) is skipped to index 3 ("idx++" in the
    for-loop); the entries before cur_entry are never read, though entry 1 would join."""
    entries = [
        PscEntry(gfn=0x100, operation=1),
        PscEntry(gfn=0x101, operation=1),
        PscEntry(gfn=0x102, operation=1, cur_page=1),  # done: cur_page == npages
        PscEntry(gfn=0x200, operation=2),
    ]
    s = Setup(entries, cur_entry=2)
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x200000, 1, 0), 0x200000, 1, 0)
    assert s.desc()[:2] == b"\x03\x00"  # "guest_psc->hdr.cur_entry++"
    assert engine.complete(0) == PscDone(ERR["OK"])
    assert s.desc()[:4] == bytes.fromhex("04000300")
    assert parse_psc(s.desc()).entries[:2] == tuple(entries[:2])


def test_end_entry_ends_coalescing() -> None:
    """ "while (++idx <= idx_end)": an adjacent entry past end_entry does not join; it is
    never processed (cur_page stays 0) and the answer is 0."""
    s = Setup([PscEntry(gfn=0x100, operation=2), PscEntry(gfn=0x101, operation=2)], end_entry=0)
    engine = s.engine()
    assert engine.begin() == MapGpaRange(_run(0x100000, 1, 0), 0x100000, 1, 0)
    assert engine.complete(0) == PscDone(ERR["OK"])
    assert s.desc() == bytes.fromhex("0100000000000000") + _entry_bytes(
        gfn=0x100, operation=2, cur_page=1
    ) + _entry_bytes(gfn=0x101, operation=2)


def test_area_entries_truncate() -> None:
    """max_nr_entries = (ghcb_sa_len - sizeof(struct psc_hdr)) / sizeof(struct psc_entry) is
    an integer division: 12 bytes left in the shared buffer hold the header and no entry, so
    end_entry 0 is INVALID_HDR."""
    memory = GuestMemory()
    memory.map(GHCB)
    gpa = GHCB + 0xFE4  # 12 bytes before the shared buffer's end (GHCB + 0xFF0)
    memory.host_write(gpa, build_psc([], cur_entry=0, end_entry=0)[:8])
    engine = GhcbPsc.in_ghcb(memory, GHCB, gpa)
    assert engine.max_nr_entries == 0
    assert type(engine.max_nr_entries) is int
    assert engine.begin() == PscDone(ERR["INVALID_HDR"])


def test_v15_buffer_ends_at_the_page_end_from_an_odd_gpa() -> None:
    """v15, descriptor at GHCB + 0xFE1 (KVM does not align sw_scratch): KVM's mapping ends 31
    bytes on, inside entry 2. Its first 7 bytes are read from the page (and its cur_page
    written there), the rest is undefined: zeros read, the write past the page dropped."""
    memory = GuestMemory()
    memory.map(GHCB, 2)
    gpa = GHCB + 0xFE1
    memory.host_write(gpa, struct.pack("<HHI", 2, 3, 0) + bytes(0x1F - 8))
    memory.host_write(GHCB + PAGE, b"\xff" * 64)  # the next guest page is not KVM's
    done = GhcbPsc(memory, gpa, 16, validator=Validator.V15).begin()
    assert done == PscDone(
        ERR["OK"],
        "v15 snp_begin_psc: read of 8 bytes at descriptor offset 0x18 is past KVM's 31-byte "
        "buffer (undefined host memory); the model used zeros",
    )
    # entries 2 and 3 (GFN 0, operation 0) are two no-action ranges: cur_entry 2 + 2
    assert memory.host_read(gpa, 2) == b"\x04\x00"
    assert memory.host_read(gpa + 0x18, 7) == b"\x01" + bytes(6)  # entry 2: cur_page 1
    assert memory.host_read(GHCB + PAGE, 64) == b"\xff" * 64


def test_v15_past_the_top_of_the_gpa_space() -> None:
    """v15, descriptor in the last 8 bytes below 2**52: only the header is in KVM's mapping;
    entries 0 and 1 lie past it (and past 2**52): read as zeros without touching guest
    memory, each a no-action range, their cur_page writes dropped."""
    memory = GuestMemory()
    top = 2**52 - PAGE
    memory.map(top)
    gpa = 2**52 - 8
    memory.host_write(gpa, struct.pack("<HHI", 0, 1, 0))
    done = GhcbPsc(memory, gpa, 8, validator=Validator.V15).begin()
    assert done == PscDone(
        ERR["OK"],
        "v15 snp_begin_psc: read of 8 bytes at descriptor offset 0x8 is past KVM's 8-byte "
        "buffer (undefined host memory); the model used zeros",
    )
    assert memory.host_read(gpa, 8) == bytes.fromhex("0200010000000000")


# -- exact refusals of the constructors --------------------------------------------------------
_SPEC = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc / snp_complete_one_psc"
_SPEC_MSR = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc_msr / snp_complete_psc_msr"


def _refused(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str | None, str | None]:
    with pytest.raises(HypervisorUsageError) as info:
        call(*args, **kwargs)
    return info.value.message, info.value.rule, info.value.spec


def test_desc_gpa_range() -> None:
    """sw_scratch 0 is "scratch gpa not provided" in setup_vmgexit_scratch; any other GPA below
    2**52 is taken (1 and 2**52 - 1 included)."""
    memory = GuestMemory()
    for bad in (0, 2**52):
        assert _refused(GhcbPsc, memory, bad, 8) == (
            f"desc_gpa must be a non-zero 52-bit GPA, not {bad}",
            "bad-range",
            _SPEC,
        )
    for good in (1, 2**52 - 1):
        assert GhcbPsc(memory, good, 8, in_ghcb=False).max_nr_entries == 0


def test_sa_len_range() -> None:
    """ghcb_sa_len: the header at least (merged; v15 takes exit_info_2 from 0), at most
    GHCB_SCRATCH_AREA_LIMIT (16 pages): the largest is taken and trips the WARN_ON_ONCE."""
    memory = GuestMemory()
    assert _refused(GhcbPsc, memory, DESC, 7) == (
        "sa_len must be 8..65536, not 7",
        "bad-range",
        _SPEC,
    )
    assert _refused(GhcbPsc, memory, DESC, -1, validator=Validator.V15) == (
        "sa_len must be 0..65536, not -1",
        "bad-range",
        _SPEC,
    )
    assert _refused(GhcbPsc, memory, DESC, 16 * PAGE + 1) == (
        "sa_len must be 8..65536, not 65537",
        "bad-range",
        _SPEC,
    )
    largest = GhcbPsc(memory, DESC, 16 * PAGE, in_ghcb=False)
    assert largest.max_nr_entries == (16 * PAGE - 8) // 8
    assert largest.begin() == PscDone(ERR["GENERIC"])


def test_memory_and_validator_types() -> None:
    """memory needs host_read and host_write; validator is a Validator."""
    assert _refused(GhcbPsc, object(), DESC, 8) == (
        "validator must be a Validator and memory a HostMemory, not "
        "<Validator.CURRENT: 'current'>, object",
        "input-type",
        _SPEC,
    )
    assert _refused(GhcbPsc, GuestMemory(), DESC, 8, validator="v15") == (
        "validator must be a Validator and memory a HostMemory, not 'v15', GuestMemory",
        "input-type",
        _SPEC,
    )


@pytest.mark.parametrize(
    "msr", [0x015, 2**64 + 0x014, 0x014 - 2**64, -1, 0, 2**64 - 1, "0x14"], ids=repr
)
def test_msr_request_refusals(msr: object) -> None:
    """The MSR value is a u64 with GHCBInfo GHCB_MSR_PSC_REQ (0x014) in bits 11:0."""
    assert _refused(MsrPsc, msr) == (
        f"an MSR PSC request is a u64 with GHCBInfo 0x14, not {msr!r}",
        "msr-code",
        _SPEC_MSR,
    )


def test_msr_exit_keeps_kvm_run() -> None:
    """The MSR request's exit is written over kvm_run as it stands, like the GHCB form's:
    args[3..5], flags and the rest keep their bytes."""
    base = bytes(range(256)) + bytes(range(32))
    step = MsrPsc(_msr(0x123, 2), kvm_run=base).begin()
    assert step == MapGpaRange(_run(0x123000, 1, 0, base), 0x123000, 1, 0)


# -- the VMM side -----------------------------------------------------------------------------
def test_vmm_map_gpa_range_as_qemu() -> None:
    """Mapped → converted, 0; unmapped to shared → ignored, 0; unmapped to private, partly
    mapped, other hypercall → -EINVAL (as QEMU writes it), nothing converted."""
    einval = (1 << 64) - 22
    memory = GuestMemory()
    memory.map(0x10000, 2, shared=False)
    assert vmm_map_gpa_range(memory, _run(0x10000, 2, 0)) == 0
    assert memory.is_shared(0x10000)
    assert memory.is_shared(0x11000)
    assert vmm_map_gpa_range(memory, _run(0x10000, 1, ENC | SZ_2M)) == 0
    assert not memory.is_shared(0x10000)
    assert vmm_map_gpa_range(memory, _run(0x80000, 4, 0)) == 0
    assert vmm_map_gpa_range(memory, _run(0x80000, 4, ENC)) == einval
    assert vmm_map_gpa_range(memory, _run(0x11000, 2, ENC)) == einval
    assert memory.is_shared(0x11000)
    assert vmm_map_gpa_range(memory, _run(0x10000, 0, ENC)) == einval
    other = bytearray(_run(0x10000, 1, 0))
    struct.pack_into("<Q", other, UNION + HC["nr"], 11)
    assert vmm_map_gpa_range(memory, bytes(other)) == einval


def test_vmm_map_gpa_range_huge_count() -> None:
    """args[1] = 2**40 pages (the whole 52-bit space) answers at once: counted from the
    memory's pages, not by walking the range (it looped ~10**12 times)."""
    einval = (1 << 64) - 22
    memory = GuestMemory()
    assert vmm_map_gpa_range(memory, _run(0, 1 << 40, 0)) == 0  # nothing mapped: ignored
    assert vmm_map_gpa_range(memory, _run(0, 1 << 40, ENC)) == einval
    memory.map(0xF_0000_0000, 2, shared=False)
    assert vmm_map_gpa_range(memory, _run(0, 1 << 40, 0)) == einval  # partly mapped
    assert not memory.is_shared(0xF_0000_0000)
    assert vmm_map_gpa_range(memory, _run(0x1000, (1 << 40) - 1, 0)) == einval
    assert vmm_map_gpa_range(memory, _run(0, (1 << 40) + 1, 0)) == einval  # past 52 bits
    assert memory.mapped_count(0, 1 << 40) == 2
    assert memory.mapped_count(0xF_0000_1000, 1) == 1


# -- property: any descriptor -----------------------------------------------------------------
class RecordingMemory:
    """Guest memory that records every host access."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.touched: list[tuple[int, int]] = []

    def host_read(self, gpa: int, size: int) -> bytes:
        self.touched.append((gpa, size))
        return self.memory.host_read(gpa, size)

    def host_write(self, gpa: int, data: bytes) -> None:
        self.touched.append((gpa, len(data)))
        self.memory.host_write(gpa, data)


ENTRIES = st.builds(
    PscEntry,
    cur_page=st.sampled_from([0] * 8 + [1, 2, 3, 511, 512, 513, 4095]),
    gfn=st.integers(0, 8).map(lambda n: n * 512)
    | st.integers(0x100, 0x10F)
    | st.integers(0, 0x1000)
    | st.just(2**40 - 1),
    operation=st.sampled_from([1, 1, 1, 2, 2, 2, 0, 3, 4, 15]),
    pagesize=st.sampled_from([0, 0, 1]),
    reserved_63_57=st.sampled_from([0, 0, 0x7F]),
)


@settings(max_examples=300)
@given(
    entries=st.lists(ENTRIES, min_size=1, max_size=12),
    cur=st.integers(0, 2) | st.integers(0, 14),
    end=st.integers(0, 14),
    offset=st.sampled_from([0x7A0, 0x7D0, 0x7E0, 0x7E8])
    | st.integers(0, 0x7E8 // 8).map(lambda n: n * 8),
    failing=st.sets(st.integers(1, 4), max_size=2),
    validator=st.sampled_from(Validator),
)
def test_any_descriptor(
    entries: list[PscEntry],
    cur: int,
    end: int,
    offset: int,
    failing: set[int],
    validator: Validator,
) -> None:
    """For any descriptor anywhere in the shared buffer, both trees: the engine ends within
    end - cur + 1 exits, touches only KVM's buffer (merged: the area; v15: up to the GHCB
    page's end), and answers what check_psc predicts (INVALID_HDR / INVALID_ENTRY / 0), or
    GENERIC when userspace fails a range."""
    memory = GuestMemory()
    memory.map(GHCB)
    gpa = DESC + offset
    data = build_psc(entries, cur_entry=cur, end_entry=end)[: 0x7F0 - offset]
    memory.host_write(gpa, data)
    recorder = RecordingMemory(memory)
    engine = GhcbPsc.in_ghcb(recorder, GHCB, gpa, validator=validator)
    v15 = validator is Validator.V15
    window = (gpa, GHCB + PAGE if v15 else gpa + 8 + 8 * engine.max_nr_entries)
    step = engine.begin()
    exits = 0
    while isinstance(step, MapGpaRange):
        exits += 1
        assert exits <= end - cur + 1
        assert step.gpa % PAGE == 0
        assert 1 <= step.npages <= 253 * 512
        step = engine.complete(1 if exits in failing else 0)
    assert isinstance(step, PscDone)
    assert all(window[0] <= a and a + n <= window[1] for a, n in recorder.touched)
    seen = memory.host_read(gpa, window[1] - gpa)
    usable = (seen + bytes(2032))[:2032] if v15 else seen
    errors = [
        v.code
        for v in check_psc(usable, max_entries=engine.max_nr_entries)
        if v.severity is Severity.ERROR
    ]
    if "psc-end-entry" in errors:
        assert step.exit_info_2 == ERR["INVALID_HDR"]
    elif step.exit_info_2 == ERR["GENERIC"]:
        assert failing & set(range(1, exits + 1))
    else:
        assert step.exit_info_2 == (ERR["INVALID_ENTRY"] if errors else ERR["OK"])
    assert (step.undefined is not None) <= v15
    if step.exit_info_2 == ERR["OK"] and cur <= end and step.undefined is None:
        final = parse_psc(usable)
        assert final.cur_entry == end + 1
        assert all(e.cur_page == e.npages for e in final.entries[cur : end + 1])


# -- kvm_psc_answer: what KVM answers a captured descriptor -----------------------------------
def test_kvm_psc_answer() -> None:
    """Two 2M shared entries and a PSMASH: one exit of 1024 pages, 0, every entry marked."""
    data = build_psc(
        [
            PscEntry(gfn=0x200, operation=2, pagesize=1),
            PscEntry(gfn=0x400, operation=2, pagesize=1),
            PscEntry(gfn=0x10, operation=3),
        ]
    )
    answer = kvm_psc_answer(data)
    assert answer.exits == (PscExit(0x200000, 1024, SZ_2M),)
    assert answer.exit_info_2 == ERR["OK"]
    assert answer.error is PscErr.NONE
    assert answer.descriptor == bytes.fromhex("0300020000000000") + b"".join(
        _entry_bytes(**f)
        for f in (
            {"gfn": 0x200, "operation": 2, "pagesize": 1, "cur_page": 512},
            {"gfn": 0x400, "operation": 2, "pagesize": 1, "cur_page": 512},
            {"gfn": 0x10, "operation": 3, "cur_page": 1},
        )
    )
    failed = kvm_psc_answer(data, ret=1)
    assert failed.exits == answer.exits
    assert failed.exit_info_2 == ERR["GENERIC"]
    assert failed.descriptor == data


def test_kvm_psc_answer_window_and_trees() -> None:
    """At offset 2016 one entry fits: end_entry 1 is INVALID_HDR (merged); the v15 tree reads
    entry 1 from the GHCB page tail (zeros: done without action) and answers 0."""
    data = build_psc([PscEntry(gfn=0x100, operation=1)], end_entry=1)
    assert kvm_psc_answer(data, offset=2016).error is PscErr.INVALID_HDR
    v15 = kvm_psc_answer(data, offset=2016, validator=Validator.V15)
    assert v15.exits == (PscExit(0x100000, 1, ENC),)
    assert v15.error is PscErr.NONE
    assert v15.undefined is None  # 0xFF0..0xFFF is still the GHCB page
    past = build_psc([PscEntry(gfn=0x100, operation=1)], end_entry=3)
    assert kvm_psc_answer(past, offset=2016, validator=Validator.V15).undefined is not None


_ANSWER_SPEC = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc"


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "field", "offset", "message"),
    [
        # the room left is the error's offset: 2032 - offset
        (
            bytes(2033),
            {},
            LengthError,
            None,
            2032,
            "2033 bytes do not fit the shared buffer from offset 0",
        ),
        (
            bytes(2032),
            {"offset": 1},
            LengthError,
            None,
            2031,
            "2032 bytes do not fit the shared buffer from offset 1",
        ),
        (
            bytes(16),
            {"offset": 2024},
            LengthError,
            None,
            8,
            "16 bytes do not fit the shared buffer from offset 2024",
        ),
        (
            bytes(8),
            {"offset": 2025},
            FieldValueError,
            "offset",
            None,
            "offset must be 0..2024 in the shared buffer, not 2025",
        ),
        (
            bytes(8),
            {"offset": -1},
            FieldValueError,
            "offset",
            None,
            "offset must be 0..2024 in the shared buffer, not -1",
        ),
        (
            bytes(8),
            {"offset": True},
            FieldValueError,
            "offset",
            None,
            "offset must be 0..2024 in the shared buffer, not True",
        ),
        (bytes(8), {"ret": -1}, FieldValueError, "ret", None, "ret must be a u64, not -1"),
        (
            bytes(8),
            {"ret": 1 << 64},
            FieldValueError,
            "ret",
            None,
            f"ret must be a u64, not {1 << 64}",
        ),
        ("00", {}, InputTypeError, None, None, "a PSC descriptor must be bytes-like, not str"),
    ],
)
def test_kvm_psc_answer_bad_input(
    data: object,
    kwargs: dict[str, Any],
    error: type[GhcbError],
    field: str | None,
    offset: int | None,
    message: str,
) -> None:
    """Too long for the buffer, a bad offset or ret, not bytes: typed errors naming the field,
    the room left (offset) and the rule, citing snp_begin_psc."""
    with pytest.raises(error) as info:
        kvm_psc_answer(data, **kwargs)
    rule = {LengthError: "psc-too-long", FieldValueError: "field-range"}.get(error, "input-type")
    assert (info.value.message, info.value.rule) == (message, rule)
    assert (info.value.field, info.value.offset, info.value.spec) == (field, offset, _ANSWER_SPEC)


def test_kvm_psc_answer_limits() -> None:
    """The defaults (offset 0, every exit answered 0) take a whole-buffer descriptor; the
    largest ``ret`` (a u64) and any bytes-like ``data`` are accepted."""
    whole = kvm_psc_answer(bytes(2032))  # entry 0 of zeros: marked done without an exit
    assert (whole.exits, whole.exit_info_2) == ((), ERR["OK"])
    done = bytes.fromhex("0100000000000000") + _entry_bytes(gfn=0, operation=0, cur_page=1)
    assert whole.descriptor == done.ljust(2032, b"\0")
    # the last header offset: no room for entry 0, so end_entry 0 is past the window
    assert kvm_psc_answer(bytes(8), offset=2024).exit_info_2 == ERR["INVALID_HDR"]
    data = build_psc([PscEntry(gfn=0x10, operation=1)])
    answer = kvm_psc_answer(bytearray(data), ret=(1 << 64) - 1)
    assert answer.exits == (PscExit(0x10000, 1, ENC),)
    assert answer.exit_info_2 == ERR["GENERIC"]


def test_kvm_psc_answer_in_page() -> None:
    """A descriptor at 0xFE0 in a whole page: one exit answered 0, the descriptor to the end
    of the shared buffer (0xFF0) as KVM leaves it; an empty descriptor reads back empty."""
    entry = PscEntry(gfn=0x10, operation=1)
    page = bytearray(PAGE)
    page[0xFE0:0xFF0] = build_psc([entry])
    answer = kvm_psc_answer_in_page(bytes(page), 0xFE0)
    assert answer.exits == (PscExit(0x10000, 1, ENC),)
    assert answer.exit_info_2 == ERR["OK"]
    assert answer.descriptor == bytes.fromhex("0100000000000000") + _entry_bytes(
        gfn=0x10, operation=1, cur_page=1
    )
    assert kvm_psc_answer(b"").descriptor == b""


def test_kvm_psc_answer_in_page_last_header() -> None:
    """The last header offset, 0xFE8, is taken: an 8-byte area has room for no entry
    ("max_nr_entries = (len - sizeof(struct psc_hdr)) / sizeof(struct psc_entry)" is 0), so
    end_entry 0 is INVALID_HDR ("if (idx_end >= max_nr_entries)")."""
    answer = kvm_psc_answer_in_page(bytes(PAGE), 0xFE8)
    assert (answer.exits, answer.exit_info_2, answer.descriptor) == (
        (),
        ERR["INVALID_HDR"],
        bytes(8),
    )


@pytest.mark.parametrize(
    ("size", "offset"),
    [(PAGE - 1, 0x800), (PAGE, 0x7FF), (PAGE, 0xFE9), (PAGE + 1, 0x800)],
)
def test_kvm_psc_answer_in_page_bad_input(size: int, offset: int) -> None:
    """Not one page, or no room for the header in the shared buffer (0x800..0xFE8)."""
    with pytest.raises(FieldValueError) as info:
        kvm_psc_answer_in_page(bytes(size), offset)
    message = f"need a {PAGE}-byte page and a header offset in the shared buffer, not {size}"
    assert info.value.message == f"{message} bytes at {offset}"
    assert (info.value.rule, info.value.field, info.value.spec) == (
        "field-range",
        "offset",
        _ANSWER_SPEC,
    )


# -- spec/vectors/psc.json --------------------------------------------------------------------
VECTORS = load_vectors("psc")["vectors"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_spec_vectors(vec: dict[str, Any]) -> None:
    """Each golden descriptor: KVM's exits, SW_EXITINFO2, the bytes afterwards, violations."""
    data = bytes.fromhex(vec["descriptor"])
    tree = Validator(vec["tree"])
    answer = kvm_psc_answer(data, offset=vec["offset"], ret=vec["ret"], validator=tree)
    assert [(e.gpa, e.npages, e.attributes) for e in answer.exits] == [
        (e["gpa"], e["npages"], e["attributes"]) for e in vec["exits"]
    ]
    assert answer.exit_info_2 == vec["exit_info_2"]
    assert answer.descriptor.hex() == vec["descriptor_after"]
    window = 253 if tree is Validator.V15 else (2032 - 8 - vec["offset"]) // 8
    assert [v.code for v in check_psc(data, max_entries=window)] == vec["violations"]


def test_vectors_cover_every_answer() -> None:
    """The vectors reach every SW_EXITINFO2 value and both trees."""
    assert {v["exit_info_2"] for v in VECTORS} == set(ERR.values())
    assert {v["tree"] for v in VECTORS} == {"current", "v15"}
