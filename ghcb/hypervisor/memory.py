"""Guest memory for the reference hypervisor: sparse 4 KiB pages, each private or shared.

An SEV-SNP guest's private pages are encrypted with its key; the host only sees shared pages
through its memslots. The model here:

* the **guest** side (:meth:`GuestMemory.guest_read` / :meth:`guest_write`) can touch any
  mapped page, private or shared;
* the **host** side (:meth:`host_read` / :meth:`host_write`, used by the handler and the VMM)
  can touch only mapped *shared* pages. Touching an unmapped or a private page raises
  :class:`GuestMemoryError` (a :class:`~ghcb.errors.GhcbError`), which the handler turns into
  what KVM does when ``kvm_read_guest``/``kvm_write_guest`` fail (see ``ghcb.hypervisor.vcpu``).

KVM itself checks only the alignment of the certificate GPA (the seed patch and the merged
code alike); whether the pages are shared and mapped is found out when userspace writes
them. Reads and writes never touch bytes outside the range asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ghcb.errors import GhcbError
from ghcb.schemas.page import PAGE_SIZE

__all__ = ["GuestMemory", "GuestMemoryError"]

_PAGE_MASK: Final = PAGE_SIZE - 1
_GPA_LIMIT: Final = 1 << 52  # x86-64 physical addresses: at most 52 bits (MAXPHYADDR)


class GuestMemoryError(GhcbError):
    """The host touched guest memory it cannot reach (unmapped or private page)."""


@dataclass(slots=True)
class _Page:
    data: bytearray
    shared: bool


class GuestMemory:
    """Sparse guest-physical memory in 4 KiB pages."""

    def __init__(self) -> None:
        self._pages: dict[int, _Page] = {}

    # -- layout -------------------------------------------------------------------------------
    def map(self, gpa: int, npages: int = 1, *, shared: bool = True) -> None:
        """Map ``npages`` zeroed pages from page-aligned ``gpa``.

        Raises:
            GuestMemoryError: ``gpa`` not page aligned, beyond 52 bits, or already mapped.
        """
        self._check_range(gpa, npages * PAGE_SIZE, aligned=True)
        for gfn in range(gpa // PAGE_SIZE, gpa // PAGE_SIZE + npages):
            if gfn in self._pages:
                raise self._error(gfn * PAGE_SIZE, "page-mapped", "page is already mapped")
        for gfn in range(gpa // PAGE_SIZE, gpa // PAGE_SIZE + npages):
            self._pages[gfn] = _Page(bytearray(PAGE_SIZE), shared)

    def set_shared(self, gpa: int, npages: int = 1, *, shared: bool) -> None:
        """Convert pages between private and shared (what a page-state change does)."""
        for gfn in self._gfns(gpa, npages * PAGE_SIZE):
            self._page(gfn).shared = shared

    def is_shared(self, gpa: int) -> bool:
        """Whether the page holding ``gpa`` is mapped and shared."""
        page = self._pages.get(gpa // PAGE_SIZE)
        return page is not None and page.shared

    def is_mapped(self, gpa: int) -> bool:
        """Whether the page holding ``gpa`` is mapped (private or shared)."""
        return gpa // PAGE_SIZE in self._pages

    # -- access -------------------------------------------------------------------------------
    def guest_read(self, gpa: int, size: int) -> bytes:
        """Read as the guest: any mapped page."""
        return self._read(gpa, size, host=False)

    def guest_write(self, gpa: int, data: bytes) -> None:
        """Write as the guest: any mapped page."""
        self._write(gpa, data, host=False)

    def host_read(self, gpa: int, size: int) -> bytes:
        """Read as the host (KVM or the VMM): shared pages only."""
        return self._read(gpa, size, host=True)

    def host_write(self, gpa: int, data: bytes) -> None:
        """Write as the host: shared pages only; nothing is written unless all of it can be."""
        self._write(gpa, data, host=True)

    # -- internals ----------------------------------------------------------------------------
    def _read(self, gpa: int, size: int, *, host: bool) -> bytes:
        out = bytearray()
        for gfn, start, stop in self._spans(gpa, size, host=host):
            out += self._pages[gfn].data[start:stop]
        return bytes(out)

    def _write(self, gpa: int, data: bytes, *, host: bool) -> None:
        spans = self._spans(gpa, len(data), host=host)  # checks every page first
        pos = 0
        for gfn, start, stop in spans:
            self._pages[gfn].data[start:stop] = data[pos : pos + stop - start]
            pos += stop - start

    def _spans(self, gpa: int, size: int, *, host: bool) -> list[tuple[int, int, int]]:
        self._check_range(gpa, size, aligned=False)
        spans = []
        pos, end = gpa, gpa + size
        while pos < end:
            gfn = pos // PAGE_SIZE
            page = self._pages.get(gfn)
            if page is None:
                raise self._error(pos, "unmapped", "no page is mapped there")
            if host and not page.shared:
                raise self._error(pos, "private", "the page is private to the guest")
            stop = min(end, (gfn + 1) * PAGE_SIZE)
            spans.append((gfn, pos & _PAGE_MASK, (pos & _PAGE_MASK) + stop - pos))
            pos = stop
        return spans

    def _gfns(self, gpa: int, size: int) -> range:
        self._check_range(gpa, size, aligned=True)
        return range(gpa // PAGE_SIZE, (gpa + size) // PAGE_SIZE)

    def _page(self, gfn: int) -> _Page:
        page = self._pages.get(gfn)
        if page is None:
            raise self._error(gfn * PAGE_SIZE, "unmapped", "no page is mapped there")
        return page

    def _check_range(self, gpa: int, size: int, *, aligned: bool) -> None:
        if not isinstance(gpa, int) or not isinstance(size, int) or gpa < 0 or size < 0:
            raise self._error(None, "bad-range", f"bad guest range ({gpa!r}, {size!r})")
        if gpa + size > _GPA_LIMIT:
            raise self._error(gpa, "bad-range", "range goes past the 52-bit physical space")
        if aligned and (gpa & _PAGE_MASK or size & _PAGE_MASK):
            raise self._error(gpa, "unaligned", "page operations need 4 KiB alignment")

    @staticmethod
    def _error(gpa: int | None, rule: str, what: str) -> GuestMemoryError:
        where = "" if gpa is None else f" at GPA {gpa:#x}"
        return GuestMemoryError(f"guest memory{where}: {what}", rule=rule, spec=_SPEC, offset=gpa)


_SPEC: Final = "ghcb.hypervisor.memory model (SEV-SNP private/shared pages)"
