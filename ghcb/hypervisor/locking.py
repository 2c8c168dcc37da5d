"""File locks for the certificate blob: the one module that does file I/O for the hypervisor.

KVM's documentation (seed patch api.rst; merged amd-memory-encryption.rst) recommends: the
VMM takes a *shared* lock on the certificate blob file before reading it and holds it until
the attestation request has reached firmware; tools that change the firmware's TCB or
endorsement key (SNP_COMMIT, SNP_SET_CONFIG, SNP_VLEK_LOAD) take an *exclusive* lock for the
whole update, blob included. The locks are Linux open-file-description locks
(``fcntl(F_OFD_SETLKW)``): owned by the open file, not the process, so two opens in one
process contend like two processes do, and closing the file drops the lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Final

from ghcb.hypervisor.errors import HostError

__all__ = ["LockError", "OfdLock"]

# struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; }
# on Linux x86-64/arm64: 2 + 2 + 4 (pad) + 8 + 8 + 4 + 4 (pad) = 32 bytes. l_pid must be 0
# for OFD locks; l_len = 0 locks the whole file.
_FLOCK: Final = struct.Struct("@hhxxxxqqi4x")
_SETLKW: Final = getattr(fcntl, "F_OFD_SETLKW", None)


class LockError(HostError):
    """A certificate-blob lock could not be taken or released."""


class OfdLock:
    """A whole-file OFD lock on an open file descriptor (``fcntl.flock`` where the platform
    has no OFD locks)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def shared(self) -> None:
        """Wait for and take a shared (read) lock."""
        self._set(fcntl.F_RDLCK, fcntl.LOCK_SH)

    def exclusive(self) -> None:
        """Wait for and take an exclusive (write) lock."""
        self._set(fcntl.F_WRLCK, fcntl.LOCK_EX)

    def release(self) -> None:
        """Drop the lock."""
        self._set(fcntl.F_UNLCK, fcntl.LOCK_UN)

    def _set(self, lock_type: int, flock_op: int) -> None:
        try:
            if _SETLKW is not None:
                fcntl.fcntl(self.fd, _SETLKW, _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0))
            else:  # pragma: no cover - non-Linux
                fcntl.flock(self.fd, flock_op)
        except OSError as e:
            raise LockError(
                f"lock operation failed: {e.strerror}", rule="lock", spec="fcntl(2) F_OFD_SETLKW"
            ) from e
