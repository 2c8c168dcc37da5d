"""Guest memory: two backings per page (private, shared), the host always through the shared
one, every operation all-or-nothing, bounded allocation."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from ghcb.hypervisor import GuestMemory, GuestMemoryError
from ghcb.hypervisor.memory import MAX_PAGES
from ghcb.schemas.page import PAGE_SIZE


def test_views_follow_the_page_state() -> None:
    """Shared: guest and host see the same bytes. Private: the guest sees its private backing,
    the host the shared one; converting switches the guest's view and copies nothing."""
    m = GuestMemory()
    m.map(0x1000)
    m.guest_write(0x1000, b"shared")
    assert m.host_read(0x1000, 6) == b"shared"
    m.set_shared(0x1000, shared=False)
    assert m.guest_read(0x1000, 6) == bytes(6)  # a fresh private backing
    m.guest_write(0x1000, b"secret")
    m.host_write(0x1000, b"host!!")
    assert (m.guest_read(0x1000, 6), m.host_read(0x1000, 6)) == (b"secret", b"host!!")
    m.set_shared(0x1000, shared=True)
    assert m.guest_read(0x1000, 6) == b"host!!"
    assert m.is_shared(0x1000)
    assert m.is_mapped(0x1FFF)
    assert not m.is_mapped(0x2000)


def test_host_map_writes_through() -> None:
    """kvm_vcpu_map: a view of the host backing; writes land in guest memory at once."""
    m = GuestMemory()
    m.map(0x1000)
    view = m.host_map(0x1000)
    view[8:10] = b"\x01\x02"
    assert m.guest_read(0x1008, 2) == b"\x01\x02"
    with pytest.raises(GuestMemoryError):
        m.host_map(0x1008)


def test_accesses_across_pages() -> None:
    """A range over two pages reads and writes both; over a private page the guest's view
    splits between backings."""
    m = GuestMemory()
    m.map(0x1000, 2)
    m.guest_write(0x1FFE, b"abcd")
    assert m.host_read(0x1FFE, 4) == b"abcd"
    m.set_shared(0x2000, shared=False)
    assert m.guest_read(0x1FFE, 4) == b"ab\0\0"


def test_set_shared_is_all_or_nothing() -> None:
    """Converting a range with an unmapped page in it converts none."""
    m = GuestMemory()
    m.map(0x1000, 2)
    with pytest.raises(GuestMemoryError) as e:
        m.set_shared(0x1000, 3, shared=False)
    assert e.value.rule == "unmapped"
    assert e.value.offset == 0x3000
    assert m.is_shared(0x1000)
    assert m.is_shared(0x2000)


def test_writes_are_all_or_nothing() -> None:
    """A write running into an unmapped page writes nothing."""
    m = GuestMemory()
    m.map(0x1000)
    with pytest.raises(GuestMemoryError):
        m.host_write(0x1FF0, b"x" * 32)
    assert m.host_read(0x1000, PAGE_SIZE) == bytes(PAGE_SIZE)


def test_map_is_bounded_and_lazy() -> None:
    """A huge map is refused at once; the largest allowed map allocates no page bytes until
    they are touched."""
    m = GuestMemory()
    with pytest.raises(GuestMemoryError) as e:
        m.map(0, 1 << 24)
    assert e.value.rule == "too-large"
    tracemalloc.start()
    try:
        m.map(0, MAX_PAGES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_PAGES * 200  # the page records, never MAX_PAGES * 4096 bytes
    assert m.guest_read((MAX_PAGES - 1) * PAGE_SIZE, 8) == bytes(8)
    with pytest.raises(GuestMemoryError):
        m.map(MAX_PAGES * PAGE_SIZE)


def test_remapping_is_refused() -> None:
    """Mapping a page twice is the caller's mistake; nothing changes."""
    m = GuestMemory()
    m.map(0x2000)
    with pytest.raises(GuestMemoryError) as e:
        m.map(0x1000, 2)
    assert e.value.rule == "page-mapped"
    assert not m.is_mapped(0x1000)


SPEC = "ghcb.hypervisor.memory model (guest_memfd private/shared backings)"
LIMIT = 1 << 52  # MAXPHYADDR: 52 bits


def small_memory() -> GuestMemory:
    memory = GuestMemory()
    memory.map(0x1000, 2)
    return memory


#: Every refusal: the call, its rule, GPA (the error's offset) and message.
ERRORS = [
    (lambda m: m.map(0x1800), "unaligned", 0x1800, "page operations need 4 KiB alignment"),
    (lambda m: m.map(0x1000, 0), "bad-range", None, "npages must be a positive int, not 0"),
    (lambda m: m.map(0x1000, True), "bad-range", None, "npages must be a positive int, not True"),
    (lambda m: m.map(0x2000), "page-mapped", 0x2000, "page is already mapped"),
    (
        lambda m: m.map(LIMIT - 0x1000, 2),
        "bad-range",
        LIMIT - 0x1000,
        "range outside the 52-bit space",
    ),
    (lambda m: m.map(-0x1000), "bad-range", None, "range outside the 52-bit space"),
    (lambda m: m.map("0"), "bad-range", None, "bad guest range ('0', 4096)"),
    (lambda m: m.host_read(0x2FFF, 2), "unmapped", 0x3000, "no page is mapped there"),
    (lambda m: m.guest_read(0x800, 0x900), "unmapped", 0x800, "no page is mapped there"),
    (lambda m: m.host_write(0x2FFF, b"ab"), "unmapped", 0x3000, "no page is mapped there"),
    (lambda m: m.guest_write(0x1000, "ab"), "input-type", None, None),
    (lambda m: m.host_read(0x1000, -1), "bad-range", 0x1000, "range outside the 52-bit space"),
    (lambda m: m.host_read(0x1000, 1.0), "bad-range", None, "bad guest range (4096, 1.0)"),
    (lambda m: m.host_read(0, -1), "bad-range", 0, "range outside the 52-bit space"),
    (lambda m: m.is_mapped(-1), "bad-range", None, "range outside the 52-bit space"),
    (lambda m: m.is_shared(LIMIT + 1), "bad-range", LIMIT + 1, "range outside the 52-bit space"),
    (lambda m: m.is_mapped(LIMIT), "bad-range", LIMIT, "range outside the 52-bit space"),
    (
        lambda m: m.set_shared(0x2000, 2, shared=False),
        "unmapped",
        0x3000,
        "no page is mapped there",
    ),
    (lambda m: m.host_map(0x3000), "unmapped", 0x3000, "no page is mapped there"),
    (
        lambda m: m.mapped_count(0x1000, -1),
        "bad-range",
        None,
        "npages must be a positive int, not -1",
    ),
]


@pytest.mark.parametrize(("call", "rule", "gpa", "what"), ERRORS)
def test_errors_are_exact(call: Any, rule: str, gpa: int | None, what: str | None) -> None:
    """Rule, spec, GPA and message of each refusal; nothing changes on the way out."""
    memory = small_memory()
    memory.host_write(0x1000, b"\x55" * 2 * PAGE_SIZE)
    with pytest.raises(GuestMemoryError) as info:
        call(memory)
    err = info.value
    assert (err.rule, err.spec, err.offset) == (rule, SPEC, gpa)
    if what is not None:
        where = "" if gpa is None else f" at GPA {gpa:#x}"
        assert err.message == f"guest memory{where}: {what}"
    assert memory.host_read(0x1000, 2 * PAGE_SIZE) == b"\x55" * 2 * PAGE_SIZE
    assert [memory.is_mapped(g) for g in (0, 0x1000, 0x2000, 0x3000)] == [0, 1, 1, 0]


def test_edges() -> None:
    """The last byte below 2**52 is addressable; page-end reads and writes, empty ones;
    ``mapped_count`` both ways (walking the range, walking the map)."""
    memory = GuestMemory()
    memory.map(LIMIT - PAGE_SIZE, shared=False)
    memory.guest_write(LIMIT - 2, b"xy")
    assert memory.guest_read(LIMIT - 2, 2) == b"xy"
    assert memory.host_read(LIMIT - 2, 2) == b"\0\0"  # private: the host sees the shared side
    assert memory.guest_read(LIMIT - 1, 0) == b""
    assert memory.mapped_count(LIMIT - PAGE_SIZE, 1) == 1
    memory = small_memory()
    memory.host_write(0x1FFE, b"abcd")  # across the page boundary
    assert memory.host_read(0x1000, PAGE_SIZE)[-2:] == b"ab"
    assert memory.host_read(0x1FFF, 1) == b"b"
    assert memory.host_read(0x2000, 2) == b"cd"
    assert memory.guest_read(0x1FFE, 4) == b"abcd"
    memory.host_write(0x1000, b"")
    assert memory.host_read(0x1000, 0) == b""
    assert [memory.mapped_count(0, n) for n in (1, 2, 3, 4)] == [0, 1, 2, 2]
    assert memory.mapped_count(0x2000, 1 << 30) == 1
    assert memory.mapped_count(0, 1 << 30) == 2
    assert (memory.is_shared(0x1FFF), memory.is_shared(0x3000)) == (True, False)


def test_map_takes_exactly_max_pages() -> None:
    """MAX_PAGES pages in all are allowed, one more is refused ("too-large", at the GPA of the
    map that would exceed it); nothing is mapped by the refused call."""
    memory = small_memory()
    with pytest.raises(GuestMemoryError) as info:
        memory.map(0x3000, MAX_PAGES - 1)
    err = info.value
    assert (err.rule, err.spec, err.offset) == ("too-large", SPEC, 0x3000)
    limit = f"a guest memory maps at most {MAX_PAGES} pages"
    assert err.message == f"guest memory at GPA 0x3000: {limit}"
    assert not memory.is_mapped(0x3000)
    memory.map(0x3000, MAX_PAGES - 2)  # 2 + (MAX_PAGES - 2): exactly the limit
    assert memory.mapped_count(0, MAX_PAGES + 1) == MAX_PAGES


def test_mapped_count_walking_the_map_ends_before_the_range_end() -> None:
    """Walking the map (npages above the mapped count): a page at GPA + npages pages is past
    the range and not counted."""
    memory = GuestMemory()
    memory.map(0x1000)
    memory.map(0x4000)
    assert memory.mapped_count(0x1000, 3) == 1  # GFN 1..3: the page at GFN 4 is not in it
    assert memory.mapped_count(0x1000, 4) == 2


def test_host_map_of_the_last_page() -> None:
    """The page just below 2**52 can be host-mapped (the check covers one page)."""
    memory = GuestMemory()
    memory.map(LIMIT - PAGE_SIZE)
    view = memory.host_map(LIMIT - PAGE_SIZE)
    view[-1] = 0x5A
    assert memory.host_read(LIMIT - 1, 1) == b"\x5a"
    # the last GPA of the 52-bit space names a page like any other
    assert (memory.is_mapped(LIMIT - 1), memory.is_shared(LIMIT - 1)) == (True, True)
    assert GuestMemory().is_mapped(LIMIT - 1) is False


def test_single_bytes_in_the_first_pages() -> None:
    """One byte at GPA 0 and at GPA 1 reads and writes that byte (not the page's last one,
    not a page at another GFN)."""
    memory = GuestMemory()
    memory.map(0)
    memory.map(0x1000000)  # GFN 0x1000
    memory.host_write(0x1000000, b"\xee" * 8)
    memory.host_write(0, b"\x11")
    memory.guest_write(1, b"\x22")
    assert (memory.host_read(0, 1), memory.guest_read(1, 1)) == (b"\x11", b"\x22")
    assert memory.host_read(0, 3) == b"\x11\x22\x00"
    assert memory.host_read(0xFFF, 1) == b"\x00"
    assert memory.host_read(0x1000000, 8) == b"\xee" * 8


def test_cross_page_accesses_keep_host_and_guest_apart() -> None:
    """Across pages, a guest write lands in the private backing of a private page (the host
    reads its shared backing: zeros) and a host read sees the shared backing."""
    memory = GuestMemory()
    memory.map(0x1000, 2, shared=False)
    memory.guest_write(0x1FFE, b"abcd")
    assert memory.guest_read(0x1FFE, 4) == b"abcd"
    assert memory.host_read(0x1FFE, 4) == bytes(4)
    memory.host_write(0x1FFE, b"WXYZ")
    assert memory.host_read(0x1FFE, 4) == b"WXYZ"
    assert memory.guest_read(0x1FFE, 4) == b"abcd"


def test_write_over_three_pages() -> None:
    """A write spanning three pages puts each byte at its own GPA."""
    memory = GuestMemory()
    memory.map(0x1000, 3)
    data = bytes(i % 251 for i in range(PAGE_SIZE + 4))
    memory.host_write(0x1FFE, data)
    assert memory.host_read(0x1FFE, len(data)) == data
    assert memory.host_read(0x3000, 2) == data[-2:]


def test_write_takes_any_byte_buffer() -> None:
    """bytes, bytearray and memoryview data are written alike."""
    memory = small_memory()
    memory.guest_write(0x1000, memoryview(b"view"))
    memory.host_write(0x1004, bytearray(b"ba"))
    memory.host_write(0x1006, b"by")
    assert memory.host_read(0x1000, 8) == b"viewbaby"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.guest_write(0x1000, "ab"), "data must be bytes-like, not str"),
        (lambda m: m.host_write("0x1000", b"ab"), "bad guest range ('0x1000', 2)"),
        (lambda m: m.host_write(None, b"ab"), "bad guest range (None, 2)"),
    ],
)
def test_write_refusals_name_the_argument(call: Any, message: str) -> None:
    """A non-buffer ``data`` (rule input-type) or a non-int GPA (bad-range): the model's
    error, never a TypeError; nothing is written."""
    memory = small_memory()
    with pytest.raises(GuestMemoryError) as info:
        call(memory)
    assert (info.value.spec, info.value.offset) == (SPEC, None)
    assert info.value.message == f"guest memory: {message}"
    assert memory.host_read(0x1000, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)
