"""The host's certificate store: the blob file the VMM hands to guests, read and replaced under
the file locks KVM documents (see :mod:`ghcb.hypervisor.locking`).

Sources: the seed patch's api.rst text and the merged amd-memory-encryption.rst §21 (shared
lock from reading the blob until the request reached firmware; exclusive lock for the whole
update of firmware TCB / endorsement key and blob).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ghcb.hypervisor.locking import OfdLock

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CertificateStore", "Lease"]


class Lease:
    """A certificate blob read under a shared lock, held until :meth:`release`."""

    def __init__(self, fd: int | None, data: bytes) -> None:
        self._fd = fd
        self.data = data

    def release(self) -> None:
        """Drop the lock (closing the file drops the OFD lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether the lock is still held."""
        return self._fd is not None


class CertificateStore:
    """The host's certificate blob file (the table the VMM hands to guests).

    Args:
        path: the blob file (created empty if missing).
        locking: take the KVM-documented locks (turn off only to show the race they prevent).
    """

    def __init__(self, path: str | os.PathLike[str], *, locking: bool = True) -> None:
        self.path = os.fspath(path)
        self.locking = locking
        if not os.path.exists(self.path):
            with open(self.path, "wb"):
                pass

    def lease(self) -> Lease:
        """Open the blob, take a shared lock, read it; the lock lasts until released."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.locking:
                OfdLock(fd).shared()
            data = _read_all(fd)
        except BaseException:
            os.close(fd)
            raise
        return Lease(fd, data)

    def update(self, blob: bytes, *, with_firmware: Callable[[], None] | None = None) -> None:
        """Replace the blob under an exclusive lock, running ``with_firmware`` (e.g. the TCB
        or VLEK change the blob must match) inside the same lock."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if self.locking:
                OfdLock(fd).exclusive()
            if with_firmware is not None:
                with_firmware()
            os.ftruncate(fd, 0)
            os.pwrite(fd, blob, 0)
        finally:
            os.close(fd)  # drops the lock


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
