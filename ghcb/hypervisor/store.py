"""The host's certificate store: the blob file the VMM hands to guests, read and replaced under
the file locks KVM documents (see :mod:`ghcb.hypervisor.locking`).

Sources: the seed patch's api.rst text and the merged amd-memory-encryption.rst §21: "the VMM
[should] obtain a shared or exclusive lock on the path the certificate blob file resides at
before reading it [...] and [...] continue to hold the lock until the attestation request is
actually sent to firmware"; tools that update the firmware TCB or endorsement key "should
similarly take an exclusive lock on the certificate blob for the duration of any updates to
firmware or the certificate blob contents". Locks are OFD locks, fcntl(2) ``F_OFD_SETLKW``.

The file holds a certificate table (GHCB spec §4.1.8.1), checked with
:func:`ghcb.check_cert_table` whenever it is written or read (errors refuse it, warnings such
as ``not-x509`` do not); an **empty file means "no certificates"**. A missing file is a
:class:`StoreError`, never "no certificates" (``create=True`` creates an empty one).

Atomic update
-------------
A crash (even SIGKILL) at any point of :meth:`CertificateStore.update` leaves ``path`` naming
the complete old blob or the complete new one, and the lock protocol still holds:

1. *Updater*: open ``path``, take the **exclusive** lock, then check that the descriptor's
   inode is still the one at ``path`` (an updater that waited on the lock may hold an inode
   that was replaced meanwhile: then close and reopen). Run ``with_firmware()`` (the TCB /
   VLEK change). Write the new blob to ``.<name>.tmp.<pid>`` in the same directory, fsync it,
   take the exclusive lock on it too (the new inode is published locked), ``os.replace`` it
   over ``path`` (atomic rename(2)), fsync the directory. Then rewrite the old, now unlinked
   inode in place with the new blob, for VMMs of other implementations that opened the old
   inode and wait on its lock; close the old inode (its waiters now read the new blob), then
   the new one (the next updater or reader of ``path`` proceeds). Temp files of a killed
   updater are removed by the next update (under the exclusive lock, so never a live one).
2. *Reader* (:meth:`CertificateStore.lease`): open, take the **shared** lock, read, then
   compare ``fstat(fd)`` with ``stat(path)`` (inode and device): if the file was replaced
   while the reader waited (or, without locks, while it read), close and retry (at most
   :data:`MAX_REOPENS` times, then :class:`StoreError`). A lease therefore always holds the
   lock on the inode at ``path``, so no update can run until it is released.

Remaining windows, all about *other* implementations that lock ``path`` without re-checking
the inode afterwards (this module's readers and updaters re-check):

* A foreign VMM that opened the old inode before the rename and waits on its lock reads a
  partial blob if the updater is killed while rewriting that unlinked inode (``path`` itself
  is never partial).
* Such a VMM then holds its shared lock on the *unlinked* inode, which does not block the
  next updater (it locks the inode at ``path``): a second update right after the first can
  change the firmware before that VMM's request reaches it. Keeping the new inode locked until
  the old one is rewritten and released narrows, but cannot close, that window.
* A foreign updater that writes in place into the inode it locked loses its blob if that inode
  was replaced while it waited. Every updater of one blob file must follow step 1.

A crash between ``with_firmware()`` and the rename leaves the new firmware state with the old
blob: atomicity covers the file, not the firmware; re-run the update. A symbolic link at
``path`` is followed: its target is replaced. The file's permission bits are kept, not its
owner.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING, Final

from ghcb._bytes import byte_string
from ghcb.certs import check_cert_table
from ghcb.errors import InputTypeError, Severity
from ghcb.hypervisor.errors import HostError, HypervisorUsageError
from ghcb.hypervisor.locking import OfdLock

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ghcb.hypervisor.locking import LockFactory

__all__ = ["MAX_REOPENS", "CertificateStore", "Lease", "StoreError"]

#: How often :meth:`CertificateStore.lease` / ``update`` reopen a file that was replaced while
#: they waited for its lock before giving up.
MAX_REOPENS: Final = 100

_SPEC: Final = "KVM api.rst KVM_EXIT_VMGEXIT REQ_CERTS (certificate blob and its lock)"
_CHUNK: Final = 1 << 16


class StoreError(HostError):
    """The certificate store cannot serve or take a blob: the file is missing or unreadable,
    holds (or would hold) no valid certificate table, or kept being replaced while read."""


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

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class CertificateStore:
    """The host's certificate blob file (the table the VMM hands to guests).

    Args:
        path: the blob file; it must exist unless ``create`` is set.
        create: create ``path`` empty ("no certificates") if it is missing, here and in
            :meth:`update`.
        lock: makes the lock for an open file (default :class:`OfdLock`, the OFD locks KVM
            documents); ``lock=NoLock`` turns locking off, only to show the race it prevents.

    Raises:
        StoreError: ``path`` is missing (and ``create`` is not set) or not a regular file.
        HypervisorUsageError: ``path`` is not a path, ``lock`` not callable.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = False, lock: LockFactory = OfdLock
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not callable(lock):
            raise HypervisorUsageError(
                "CertificateStore(path, lock=...) needs a str or os.PathLike path and a "
                f"callable lock factory, not {type(path).__name__} / {type(lock).__name__}",
                rule="input-type",
                spec=_SPEC,
            )
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise HypervisorUsageError(
                "the blob path must be a text path", rule="input-type", spec=_SPEC
            )
        self.create = create
        self.lock = lock
        self._valid: bytes | None = None  # the last blob that passed the table check
        try:
            if create:
                _create_empty(self.path)
            st = os.stat(self.path)
        except FileNotFoundError as e:
            raise _missing(self.path) from e
        except OSError as e:
            raise _io_error(self.path, e) from e
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"certificate blob {self.path!r} is not a regular file",
                rule="store-not-file",
                spec=_SPEC,
            )

    def lease(self) -> Lease:
        """Open the blob, take a shared lock, read and check it; the lock lasts until the
        lease is released.

        Raises:
            StoreError: the file is missing or unreadable, is not a valid certificate table,
                or was replaced :data:`MAX_REOPENS` times while this waited for its lock.
            LockError: the lock could not be taken.
        """
        for _ in range(MAX_REOPENS):
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError as e:
                raise _missing(self.path) from e
            except OSError as e:
                raise _io_error(self.path, e) from e
            try:
                self.lock(fd).shared()
                st = os.fstat(fd)
                data = _read_all(fd, st.st_size)
                # Replaced while we waited for the lock (or read without one)? Then the
                # inode we hold is no longer the blob: retry on the one at path.
                current = _is_current(st, self.path)
                if current and data != self._valid:  # a bytes compare: checked blobs stay cheap
                    _check_table(data, self.path)
                    self._valid = data
            except BaseException as e:
                os.close(fd)
                if isinstance(e, OSError):
                    raise _io_error(self.path, e) from e
                raise
            if current:
                return Lease(fd, data)
            os.close(fd)
        raise _replaced(self.path)

    def update(self, blob: bytes, *, with_firmware: Callable[[], None] | None = None) -> None:
        """Replace the blob atomically under an exclusive lock, running ``with_firmware``
        (e.g. the TCB or VLEK change the blob must match) inside the same lock.

        Args:
            blob: a certificate table without errors (see :func:`ghcb.check_cert_table`), or
                ``b""`` for "no certificates".
            with_firmware: called once the exclusive lock is held, before the blob changes.
                Its exceptions propagate and leave the blob as it was.

        Never call this while holding a :class:`Lease` of the same file: OFD locks belong to
        the open file, so the update would wait for the caller's own lease forever.

        Raises:
            StoreError: ``blob`` is not a valid table (refused before anything is touched),
                the file is missing (without ``create``), or an I/O step failed.
            LockError: the lock could not be taken.
        """
        try:  # the package's one bytes converter: any buffer of bytes, nothing else
            blob = byte_string(blob, what="the new blob", spec=_SPEC)
        except InputTypeError as e:
            raise HypervisorUsageError(e.message, rule=e.rule, spec=_SPEC) from e
        if with_firmware is not None and not callable(with_firmware):
            raise HypervisorUsageError(
                "with_firmware must be callable (or None)", rule="input-type", spec=_SPEC
            )
        _check_table(blob, "the new blob")
        target = os.path.realpath(self.path)  # replace a symlink's target, not the link
        fd = self._open_current(target)
        new_fd: int | None = None
        try:
            if with_firmware is not None:
                with_firmware()
            try:
                new_fd = self._publish(fd, target, blob)
                # Other VMMs may have opened the old inode and wait on its lock: when we close
                # it they read it, so it gets the new blob too. It is no longer at ``path``,
                # so a crash here cannot tear what ``path`` names.
                _write_all(fd, blob)
                os.ftruncate(fd, len(blob))
            except OSError as e:
                raise _io_error(target, e) from e
        finally:
            os.close(fd)  # drops the old inode's lock first: its waiters read the new blob
            if new_fd is not None:
                os.close(new_fd)  # then the new one: the next updater may start
        self._valid = blob

    def _open_current(self, target: str) -> int:
        """A read-write descriptor of the inode at ``target``, exclusively locked."""
        for _ in range(MAX_REOPENS):
            try:
                try:
                    fd = os.open(target, os.O_RDWR)
                except FileNotFoundError as e:
                    if not self.create:
                        raise _missing(target) from e
                    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _io_error(target, e) from e
            try:
                self.lock(fd).exclusive()
                current = _is_current(os.fstat(fd), target)
            except BaseException as e:
                os.close(fd)
                if isinstance(e, OSError):
                    raise _io_error(target, e) from e
                raise
            if current:
                return fd
            os.close(fd)  # another updater replaced it while we waited: lock the new one
        raise _replaced(target)

    def _publish(self, fd: int, target: str, blob: bytes) -> int:
        """Write ``blob`` to a temp file, lock it and rename it over ``target``; return its
        (locked) descriptor. ``fd`` is the old inode, exclusively locked."""
        directory, name = os.path.split(target)
        directory = directory or os.curdir
        _remove_stale_temps(directory, name)  # a killed updater's; we hold the lock
        tmp = os.path.join(directory, f"{_temp_prefix(name)}{os.getpid()}")
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        new_fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(new_fd, mode)  # whatever the umask
            _write_all(new_fd, blob)
            os.fsync(new_fd)  # the data is on disk before the name points at it
            # Published locked: readers of the new inode wait until the update is over.
            self.lock(new_fd).exclusive()
            os.replace(tmp, target)  # rename(2): path names the old or the new inode
        except BaseException:
            os.close(new_fd)
            _unlink_quietly(tmp)
            raise
        try:
            _fsync_dir(directory)  # the rename is durable
        except BaseException:
            os.close(new_fd)
            raise
        return new_fd


def _check_table(blob: bytes, what: str) -> None:
    """Refuse ``blob`` unless it is empty or a certificate table without errors."""
    if not blob:
        return  # no certificates
    errors = [v for v in check_cert_table(blob) if v.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise StoreError(
            f"{what} is not a valid certificate table: {first.message}"
            + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""),
            rule=first.code,  # the check_cert_table code, as CertTableError's rule
            spec=first.spec,
            offset=first.offset,
        )


def _create_empty(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _is_current(st: os.stat_result, path: str) -> bool:
    """Whether ``path`` still names the inode ``st`` describes."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return now.st_ino == st.st_ino and now.st_dev == st.st_dev


def _read_all(fd: int, size_hint: int) -> bytes:
    """The whole file: one ``pread`` of ``size_hint + 1`` bytes when the size is right (the
    extra byte proves the end), more reads only if the file grew."""
    data = os.pread(fd, size_hint + 1, 0)
    if len(data) <= size_hint:
        return data
    chunks = [data]
    offset = len(data)
    while chunk := os.pread(fd, _CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _temp_prefix(name: str) -> str:
    return f".{name}.tmp."


def _remove_stale_temps(directory: str, name: str) -> None:
    prefix = _temp_prefix(name)
    with os.scandir(directory) as entries:
        stale = [e.path for e in entries if e.name.startswith(prefix)]
    for path in stale:
        _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    except OSError as e:  # some filesystems cannot fsync a directory
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(dfd)


def _missing(path: str) -> StoreError:
    return StoreError(
        f"certificate blob {path!r} does not exist (create=True creates it empty)",
        rule="store-missing",
        spec=_SPEC,
    )


def _replaced(path: str) -> StoreError:
    return StoreError(
        f"certificate blob {path!r} was replaced {MAX_REOPENS} times while waiting for its lock",
        rule="store-replaced",
        spec=_SPEC,
    )


def _io_error(path: str, e: OSError) -> StoreError:
    return StoreError(f"certificate blob {path!r}: {e.strerror or e}", rule="store-io", spec=_SPEC)
