"""Guest memory: two backings per page (private, shared), the host always through the shared
one, every operation all-or-nothing, bounded allocation."""

from __future__ import annotations

import tracemalloc

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
