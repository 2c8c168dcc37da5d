"""Guest memory for the reference hypervisor: sparse 4 KiB pages, each private or shared.

An SEV-SNP guest backed by ``guest_memfd`` has two backings per guest page: the private one
(guest_memfd, encrypted with the guest's key, what the guest sees while the page is private)
and the shared one (the memslot's userspace mapping, what the guest sees while the page is
shared). The model keeps both:

* the **guest** side (:meth:`GuestMemory.guest_read` / :meth:`guest_write`) sees the backing
  its page state selects: private pages their private bytes, shared pages their shared bytes;
* the **host** side (:meth:`host_read` / :meth:`host_write` / :meth:`host_map`, used by KVM's
  model and by the VMM) always goes through the memslot's userspace mapping, i.e. the *shared*
  backing, whatever the page's state. That is what KVM does: ``kvm_read_guest`` /
  ``kvm_write_guest`` copy through ``__gfn_to_hva_memslot`` and ``kvm_vcpu_map`` maps the
  same host page (virt/kvm/kvm_main.c); neither consults the private attribute. So a write into
  a page the guest holds private *succeeds* and the guest never sees it (it reads its private
  backing). Only a GPA no page is mapped at fails (``-EFAULT`` in KVM: no memslot).

Converting a page (:meth:`set_shared`) switches which backing the guest sees; neither backing
is copied or cleared (as guest_memfd conversions do not preserve contents, a guest re-validates
and rewrites what it converts). Backings are allocated on first touch, and a memory holds at
most :data:`MAX_PAGES` pages. Every operation checks the whole range before it changes
anything: a failed call changes nothing.
"""

from __future__ import annotations

from typing import Final

from ghcb._bytes import byte_string
from ghcb.errors import InputTypeError
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.schemas.page import PAGE_SIZE

__all__ = ["MAX_PAGES", "GuestMemory", "GuestMemoryError"]

_PAGE_MASK: Final = PAGE_SIZE - 1
_GPA_LIMIT: Final = 1 << 52  # x86-64 physical addresses: at most 52 bits (MAXPHYADDR)
#: The most pages one :class:`GuestMemory` maps (1 GiB): a model, not a VM image.
MAX_PAGES: Final = 1 << 18
_SPEC: Final = "ghcb.hypervisor.memory model (guest_memfd private/shared backings)"
_ZERO_PAGE: Final = bytes(PAGE_SIZE)


class GuestMemoryError(HypervisorUsageError):
    """A guest-memory operation the model refuses: an unmapped GPA, a bad range or argument.

    The vCPU and the VMM turn it into what KVM answers when ``kvm_read_guest`` or
    ``kvm_write_guest`` fails; raised to a caller, it is the caller's mistake.
    """


class _Page:
    __slots__ = ("private", "shared", "state_shared")

    def __init__(self, state_shared: bool) -> None:
        self.state_shared = state_shared
        self.shared: bytearray | None = None  # the host mapping (memslot userspace address)
        self.private: bytearray | None = None  # guest_memfd

    def host(self) -> bytearray:
        if self.shared is None:
            self.shared = bytearray(PAGE_SIZE)
        return self.shared

    def guest(self) -> bytearray:
        if self.state_shared:
            return self.host()
        if self.private is None:
            self.private = bytearray(PAGE_SIZE)
        return self.private


class GuestMemory:
    """Sparse guest-physical memory in 4 KiB pages."""

    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[int, _Page] = {}

    # -- layout -------------------------------------------------------------------------------
    def map(self, gpa: int, npages: int = 1, *, shared: bool = True) -> None:
        """Map ``npages`` zeroed pages from page-aligned ``gpa``.

        Raises:
            GuestMemoryError: ``gpa`` not page aligned, beyond 52 bits, already mapped, or
                more than :data:`MAX_PAGES` pages in all.
        """
        first = self._first_gfn(gpa, npages)
        if len(self._pages) + npages > MAX_PAGES:
            raise _error(gpa, "too-large", f"a guest memory maps at most {MAX_PAGES} pages")
        for gfn in range(first, first + npages):
            if gfn in self._pages:
                raise _error(gfn * PAGE_SIZE, "page-mapped", "page is already mapped")
        for gfn in range(first, first + npages):
            self._pages[gfn] = _Page(bool(shared))

    def set_shared(self, gpa: int, npages: int = 1, *, shared: bool) -> None:
        """Convert pages between private and shared (what a page-state change does); all or
        nothing: an unmapped page anywhere in the range converts none."""
        first = self._first_gfn(gpa, npages)
        pages = [self._page(gfn) for gfn in range(first, first + npages)]
        for page in pages:
            page.state_shared = bool(shared)

    def is_shared(self, gpa: int) -> bool:
        """Whether the page holding ``gpa`` is mapped and shared."""
        page = self._pages.get(_gfn(gpa))
        return page is not None and page.state_shared

    def is_mapped(self, gpa: int) -> bool:
        """Whether the page holding ``gpa`` is mapped (private or shared)."""
        return _gfn(gpa) in self._pages

    def mapped_count(self, gpa: int, npages: int) -> int:
        """How many of the ``npages`` pages from page-aligned ``gpa`` are mapped, in at most
        :data:`MAX_PAGES` steps whatever ``npages`` is (the range is never walked when it is
        longer than the mapping).

        Raises:
            GuestMemoryError: ``gpa`` not page aligned, ``npages`` not positive, or the range
                beyond 52 bits.
        """
        first = self._first_gfn(gpa, npages)
        if npages <= len(self._pages):
            return sum(1 for gfn in range(first, first + npages) if gfn in self._pages)
        return sum(1 for gfn in self._pages if first <= gfn < first + npages)

    # -- access -------------------------------------------------------------------------------
    def guest_read(self, gpa: int, size: int) -> bytes:
        """Read as the guest: each page's private or shared backing, as its state says."""
        return self._read(gpa, size, host=False)

    def guest_write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Write as the guest: each page's private or shared backing, as its state says."""
        self._write(gpa, data, host=False)

    def host_read(self, gpa: int, size: int) -> bytes:
        """Read as the host (``kvm_read_guest``, the VMM): the shared backing of any mapped
        page."""
        return self._read(gpa, size, host=True)

    def host_write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Write as the host (``kvm_write_guest``, the VMM): the shared backing of any mapped
        page; nothing is written unless all of it can be."""
        self._write(gpa, data, host=True)

    def host_map(self, gpa: int) -> memoryview:
        """The host mapping of the page at page-aligned ``gpa`` (``kvm_vcpu_map``): writes
        through the view land in guest memory at once."""
        page = self._page(self._first_gfn(gpa, 1))
        return memoryview(page.host())

    # -- internals ----------------------------------------------------------------------------
    def _read(self, gpa: int, size: int, *, host: bool) -> bytes:
        # Fast path: a non-empty range within one mapped page (what KVM and the VMM read).
        if type(gpa) is int and type(size) is int and gpa >= 0 and size > 0:
            start = gpa & _PAGE_MASK
            page = self._pages.get(gpa >> 12)
            if page is not None and start + size <= PAGE_SIZE:
                data = _view(page, host)
                if size == PAGE_SIZE:
                    return bytes(data)
                return memoryview(data)[start : start + size].tobytes()
        spans = self._spans(gpa, size)
        return b"".join(
            memoryview(_view(page, host))[start:stop].tobytes() for page, start, stop in spans
        )

    def _write(self, gpa: int, data: bytes | bytearray | memoryview, *, host: bool) -> None:
        raw = _as_bytes(data)
        size = len(raw)
        if type(gpa) is int and gpa >= 0 and size > 0:  # fast path: within one mapped page
            start = gpa & _PAGE_MASK
            page = self._pages.get(gpa >> 12)
            if page is not None and start + size <= PAGE_SIZE:
                (page.host() if host else page.guest())[start : start + size] = raw
                return
        spans = self._spans(gpa, size)  # checks every page first
        source = memoryview(raw)
        pos = 0
        for page, start, stop in spans:
            (page.host() if host else page.guest())[start:stop] = source[pos : pos + stop - start]
            pos += stop - start

    def _spans(self, gpa: int, size: int) -> list[tuple[_Page, int, int]]:
        _check_range(gpa, size)
        spans = []
        pos, end = gpa, gpa + size
        while pos < end:
            gfn = pos >> 12
            page = self._pages.get(gfn)
            if page is None:
                raise _error(pos, "unmapped", "no page is mapped there")
            stop = min(end, (gfn + 1) * PAGE_SIZE)
            spans.append((page, pos & _PAGE_MASK, (pos & _PAGE_MASK) + stop - pos))
            pos = stop
        return spans

    def _first_gfn(self, gpa: int, npages: int) -> int:
        if not _is_int(npages) or npages < 1:
            raise _error(None, "bad-range", f"npages must be a positive int, not {npages!r}")
        _check_range(gpa, npages * PAGE_SIZE)
        if gpa & _PAGE_MASK:
            raise _error(gpa, "unaligned", "page operations need 4 KiB alignment")
        return gpa >> 12

    def _page(self, gfn: int) -> _Page:
        page = self._pages.get(gfn)
        if page is None:
            raise _error(gfn * PAGE_SIZE, "unmapped", "no page is mapped there")
        return page


def _view(page: _Page, host: bool) -> bytes | bytearray:
    """The bytes a read sees (the zero page for a backing not allocated yet)."""
    data = page.shared if host or page.state_shared else page.private
    return _ZERO_PAGE if data is None else data


def _as_bytes(data: object) -> bytes | bytearray:
    if type(data) is bytes or type(data) is bytearray:
        return data
    try:  # the package's one bytes converter
        return byte_string(data, what="data", spec=_SPEC)
    except InputTypeError as e:
        raise _error(None, e.rule, e.message) from e


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _gfn(gpa: int) -> int:
    _check_range(gpa, 1)  # a GPA names a byte: it must lie below 2**52
    return gpa >> 12


def _check_range(gpa: object, size: object) -> None:
    if type(gpa) is not int or type(size) is not int:  # bool and int subclasses refused too
        raise _error(None, "bad-range", f"bad guest range ({gpa!r}, {size!r})")
    if gpa < 0 or size < 0 or gpa + size > _GPA_LIMIT:
        raise _error(gpa if gpa >= 0 else None, "bad-range", "range outside the 52-bit space")


def _error(gpa: int | None, rule: str, what: str) -> GuestMemoryError:
    where = "" if gpa is None else f" at GPA {gpa:#x}"
    return GuestMemoryError(f"guest memory{where}: {what}", rule=rule, spec=_SPEC, offset=gpa)
