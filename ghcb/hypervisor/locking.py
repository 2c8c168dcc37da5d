"""File locks for the certificate blob: the one module that takes file locks for the hypervisor.

KVM's documentation (seed patch api.rst; merged amd-memory-encryption.rst) recommends: the
VMM takes a *shared* lock on the certificate blob file before reading it and holds it until
the attestation request has reached firmware; tools that change the firmware's TCB or
endorsement key (SNP_COMMIT, SNP_SET_CONFIG, SNP_VLEK_LOAD) take an *exclusive* lock for the
whole update, blob included. The locks are Linux open-file-description locks
(``fcntl(F_OFD_SETLKW)``): owned by the open file, not the process, so two opens in one
process contend like two processes do, and closing the file drops the lock.

:class:`~ghcb.hypervisor.store.CertificateStore` takes a *lock factory*: a callable that
turns an open file descriptor into a :class:`FileLock`. :class:`OfdLock` is the real one;
:class:`NoLock` takes no lock at all and exists only to show the race the locks prevent.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable
from typing import Final, Protocol, TypeAlias

from ghcb.hypervisor.errors import HostError

__all__ = ["FileLock", "LockError", "LockFactory", "NoLock", "OfdLock"]

# struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; }
# on Linux x86-64/arm64: 2 + 2 + 4 (pad) + 8 + 8 + 4 + 4 (pad) = 32 bytes. l_pid must be 0
# for OFD locks; l_len = 0 locks the whole file.
_FLOCK: Final = struct.Struct("@hhxxxxqqi4x")
#: The whole-file ``struct flock`` of each lock type, packed once.
_FLOCKS: Final = {
    kind: _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0)
    for kind in (fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK)
}
#: flock(2)'s operation for each lock type, where the platform has no OFD locks.
_FLOCK_OPS: Final = {
    fcntl.F_RDLCK: fcntl.LOCK_SH,
    fcntl.F_WRLCK: fcntl.LOCK_EX,
    fcntl.F_UNLCK: fcntl.LOCK_UN,
}
_SETLKW: Final = getattr(fcntl, "F_OFD_SETLKW", None)
_SETLK: Final = getattr(fcntl, "F_OFD_SETLK", None)
# fcntl(2): F_SETLK / F_OFD_SETLK "returns -1 and sets errno to EACCES or EAGAIN" when a
# conflicting lock is held.
_CONFLICT: Final = frozenset({errno.EACCES, errno.EAGAIN})
_SPEC: Final = "fcntl(2) F_OFD_SETLKW"


class LockError(HostError):
    """A certificate-blob lock could not be taken or released."""


class FileLock(Protocol):
    """A whole-file lock on one open file descriptor (what the certificate store needs)."""

    def shared(self) -> None:
        """Wait for and take a shared (read) lock."""
        ...

    def exclusive(self) -> None:
        """Wait for and take an exclusive (write) lock (the descriptor is open for writing)."""
        ...

    def release(self) -> None:
        """Drop the lock."""
        ...


#: Makes the lock for an open file descriptor (e.g. the class :class:`OfdLock` itself).
LockFactory: TypeAlias = Callable[[int], FileLock]


class OfdLock:
    """A whole-file OFD lock on an open file descriptor (``fcntl.flock`` where the platform
    has no OFD locks)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def shared(self) -> None:
        """Wait for and take a shared (read) lock."""
        self._set(fcntl.F_RDLCK, wait=True)

    def exclusive(self) -> None:
        """Wait for and take an exclusive (write) lock."""
        self._set(fcntl.F_WRLCK, wait=True)

    def try_shared(self) -> bool:
        """Take a shared lock if no exclusive lock is held elsewhere; never waits."""
        return self._set(fcntl.F_RDLCK)

    def try_exclusive(self) -> bool:
        """Take an exclusive lock if no other lock is held; never waits."""
        return self._set(fcntl.F_WRLCK)

    def release(self) -> None:
        """Drop the lock (an unlock never conflicts, so it never waits)."""
        self._set(fcntl.F_UNLCK)

    def _set(self, lock_type: int, *, wait: bool = False) -> bool:
        try:
            if _SETLKW is not None and _SETLK is not None:
                fcntl.fcntl(self.fd, _SETLKW if wait else _SETLK, _FLOCKS[lock_type])
            else:  # pragma: no cover - non-Linux
                op = _FLOCK_OPS[lock_type]
                fcntl.flock(self.fd, op if wait else op | fcntl.LOCK_NB)
        except OSError as e:
            if not wait and e.errno in _CONFLICT:
                return False
            raise LockError(f"lock operation failed: {e.strerror}", rule="lock", spec=_SPEC) from e
        return True


class NoLock:
    """Takes no lock at all: the race KVM's locking scheme prevents, for demonstrations and
    tests only (``CertificateStore(path, lock=NoLock)``)."""

    def __init__(self, fd: int) -> None:
        """Keeps nothing: there is no lock to take on ``fd``."""

    def shared(self) -> None:
        """Take nothing."""

    def exclusive(self) -> None:
        """Take nothing."""

    def release(self) -> None:
        """Drop nothing."""
