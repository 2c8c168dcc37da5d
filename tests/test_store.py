"""The certificate store: typed errors instead of "no certificates", table checks on write and
read, the KVM-documented locks (shared lease, exclusive update; fcntl(2) F_OFD_SETLKW), and
updates that stay atomic when the updater is SIGKILLed anywhere."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import pytest

from ghcb import CertEntry, CertGuid, build_cert_table, check_cert_table
from ghcb.errors import Severity
from ghcb.hypervisor import CertificateStore, HostError, Lease, StoreError
from ghcb.hypervisor import store as store_module
from ghcb.hypervisor.locking import NoLock, OfdLock
from tests.race_support import SAFETY, Hold, churn, churn_blob, fresh_processes

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Iterator

    from ghcb.errors import Violation

OLD = build_cert_table([CertEntry(CertGuid.ARK, b"ark"), CertEntry(CertGuid.VCEK, b"vcek 1")])
NEW = build_cert_table([CertEntry(CertGuid.ARK, b"ark"), CertEntry(CertGuid.VCEK, b"vcek 2")])
OTHER = build_cert_table([CertEntry(CertGuid.VCEK, b"vcek 3")])


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    """A blob file holding ``OLD``."""
    p = tmp_path / "certs.blob"
    p.write_bytes(OLD)
    return p


def exclusive_free(path: pathlib.Path) -> bool:
    """Whether a new open of ``path`` gets an exclusive OFD lock right now (never waits)."""
    fd = os.open(path, os.O_RDWR)
    try:
        return OfdLock(fd).try_exclusive()
    finally:
        os.close(fd)


def temp_files(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp." in p.name and p.name[0] == ".")


def replace_file(path: pathlib.Path, data: bytes) -> None:
    """Another updater's rename: ``path`` names a new inode holding ``data``."""
    tmp = path.with_name("replacement")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- a missing file is an error, not "no certificates" -----------------------------------------
class TestMissingFile:
    def test_missing_file_is_a_store_error(self, tmp_path: pathlib.Path) -> None:
        """A wrong path is a typed HostError (the VMM answers GENERIC), and creates nothing."""
        with pytest.raises(StoreError) as info:
            CertificateStore(tmp_path / "typo.blob")
        assert isinstance(info.value, HostError)
        assert info.value.rule == "store-missing"
        assert not (tmp_path / "typo.blob").exists()

    def test_directory_is_refused(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(StoreError, match="not a regular file"):
            CertificateStore(tmp_path)

    def test_create_makes_an_empty_store(self, tmp_path: pathlib.Path) -> None:
        """``create=True``: a missing file becomes an empty one, i.e. no certificates."""
        store = CertificateStore(tmp_path / "certs.blob", create=True)
        assert (tmp_path / "certs.blob").read_bytes() == b""
        with store.lease() as lease:
            assert lease.data == b""

    def test_create_keeps_an_existing_blob(self, path: pathlib.Path) -> None:
        with CertificateStore(path, create=True).lease() as lease:
            assert lease.data == OLD

    def test_file_vanishing_later_is_a_store_error(self, path: pathlib.Path) -> None:
        """Removed after construction: lease and update fail; only ``create`` recreates it."""
        store = CertificateStore(path)
        path.unlink()
        with pytest.raises(StoreError, match="does not exist"):
            store.lease()
        with pytest.raises(StoreError, match="does not exist"):
            store.update(NEW)
        assert not path.exists()
        CertificateStore(path, create=True).update(NEW)
        assert path.read_bytes() == NEW


# -- only valid certificate tables in, only valid tables out ------------------------------------
CORRUPT = {
    "truncated": OLD[:30],
    "no-terminator": OLD[:24],
    "out-of-bounds": OLD[: len(OLD) - 1],
    "duplicate-guid": build_cert_table([CertEntry(CertGuid.VCEK, b"a")])[:24] * 2 + bytes(24),
    "garbage": b"\xff" * 100,
}


class TestTableChecks:
    @pytest.mark.parametrize("blob", CORRUPT.values(), ids=CORRUPT.keys())
    def test_update_refuses_a_corrupt_table(self, path: pathlib.Path, blob: bytes) -> None:
        """Refused before anything is touched: no firmware change, same bytes, same inode."""
        calls: list[int] = []
        inode = path.stat().st_ino
        with pytest.raises(StoreError, match="not a valid certificate table") as info:
            CertificateStore(path).update(blob, with_firmware=lambda: calls.append(1))
        assert isinstance(info.value.rule, str)
        assert info.value.rule != ""
        assert (calls, path.read_bytes(), path.stat().st_ino) == ([], OLD, inode)
        assert temp_files(path.parent) == []

    def test_update_takes_empty_and_warnings(self, path: pathlib.Path) -> None:
        """``b""`` means no certificates; warnings (here ``not-x509``) do not refuse a table."""
        store = CertificateStore(path)
        store.update(b"")
        assert path.read_bytes() == b""
        store.update(NEW)  # b"vcek 2" is not X.509: a warning
        assert path.read_bytes() == NEW

    @pytest.mark.parametrize("blob", CORRUPT.values(), ids=CORRUPT.keys())
    def test_lease_refuses_a_file_corrupted_behind_its_back(
        self, path: pathlib.Path, blob: bytes
    ) -> None:
        """A corrupt file is a StoreError (the VMM answers GENERIC and writes nothing), and
        the lock is not kept."""
        store = CertificateStore(path)
        with store.lease() as lease:
            assert lease.data == OLD
        path.write_bytes(blob)  # in place, no lock: someone else's mistake
        with pytest.raises(StoreError, match="not a valid certificate table"):
            store.lease()
        assert exclusive_free(path)

    def test_lease_checks_only_new_bytes(
        self, path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Unchanged bytes are not checked again (a bytes compare); changed ones are."""
        checks: list[int] = []
        real = check_cert_table

        def counting(data: bytes) -> list[Violation]:
            checks.append(len(data))
            return real(data)

        monkeypatch.setattr("ghcb.hypervisor.store.check_cert_table", counting)
        store = CertificateStore(path)
        for _ in range(3):
            store.lease().release()
        assert checks == [len(OLD)]
        store.update(NEW)  # checked once, on the way in
        store.lease().release()
        assert checks == [len(OLD), len(NEW)]
        path.write_bytes(OTHER)
        store.lease().release()
        assert checks == [len(OLD), len(NEW), len(OTHER)]


# -- the locks -----------------------------------------------------------------------------------
class SignallingLock(OfdLock):
    """An OFD lock that calls ``hook`` before it may wait: for the tests below to act while
    the other side is known to hold its descriptor."""

    def __init__(self, fd: int, hook: Callable[[str], None]) -> None:
        super().__init__(fd)
        self.hook = hook

    def shared(self) -> None:
        self.hook("shared")
        super().shared()

    def exclusive(self) -> None:
        if not self.try_exclusive():
            self.hook("exclusive-blocked")
            super().exclusive()


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as e:
            out.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


class TestLocks:
    def test_lease_holds_the_shared_lock(self, path: pathlib.Path) -> None:
        """From lease() to release(): no exclusive lock for anyone, shared ones for all."""
        store = CertificateStore(path)
        lease = store.lease()
        assert lease.held
        assert not exclusive_free(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert OfdLock(fd).try_shared()  # other VMMs read concurrently
        finally:
            os.close(fd)
        lease.release()
        assert not lease.held
        assert exclusive_free(path)
        lease.release()  # idempotent

    def test_no_lock_holds_nothing(self, path: pathlib.Path) -> None:
        with CertificateStore(path, lock=NoLock).lease() as lease:
            assert lease.data == OLD
            assert exclusive_free(path)

    def test_update_waits_for_the_lease(self, path: pathlib.Path) -> None:
        """An update (firmware included) cannot start while a lease is held."""
        blocked = threading.Event()
        firmware: list[bytes] = []
        store = CertificateStore(path, lock=lambda fd: SignallingLock(fd, lambda _: blocked.set()))
        lease = CertificateStore(path).lease()
        thread, out = in_thread(
            lambda: store.update(NEW, with_firmware=lambda: firmware.append(path.read_bytes()))
        )
        try:
            assert blocked.wait(SAFETY), "the updater never tried the lock"
            assert (firmware, path.read_bytes()) == ([], OLD)
        finally:
            lease.release()
            thread.join(SAFETY)
        assert out == [None]
        assert (firmware, path.read_bytes()) == ([OLD], NEW)

    def test_reader_that_waited_on_a_replaced_file_reopens(self, path: pathlib.Path) -> None:
        """A reader opened the blob and waits for its lock; meanwhile an updater replaces the
        file (and rewrites the old inode with something else). The reader notices and leases
        the blob now at ``path``."""
        opened = threading.Event()
        held = os.open(path, os.O_RDWR)
        OfdLock(held).exclusive()  # an update in progress
        reader = CertificateStore(path, lock=lambda fd: SignallingLock(fd, lambda _: opened.set()))
        thread, out = in_thread(reader.lease)
        try:
            assert opened.wait(SAFETY), "the reader never opened the blob"
            replace_file(path, NEW)
            os.pwrite(held, OTHER, 0)  # the old inode: valid, but no longer the blob
        finally:
            os.close(held)  # drops the lock
            thread.join(SAFETY)
        (lease,) = out
        assert isinstance(lease, Lease)
        assert lease.data == NEW
        assert not exclusive_free(path)  # the lock is on the inode at path
        lease.release()

    def test_updater_that_waited_on_a_replaced_file_reopens(self, path: pathlib.Path) -> None:
        """The same for an updater: it must lock and replace the inode now at ``path``."""
        blocked = threading.Event()
        held = os.open(path, os.O_RDWR)
        OfdLock(held).exclusive()
        store = CertificateStore(path, lock=lambda fd: SignallingLock(fd, lambda _: blocked.set()))
        thread, out = in_thread(lambda: store.update(OTHER))
        try:
            assert blocked.wait(SAFETY), "the updater never tried the lock"
            replace_file(path, NEW)
        finally:
            os.close(held)
            thread.join(SAFETY)
        assert out == [None]
        assert path.read_bytes() == OTHER

    def test_reader_gives_up_on_a_file_replaced_every_time(
        self, path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Bounded retries: a file replaced on every attempt is a StoreError, not a hang."""
        monkeypatch.setattr(store_module, "MAX_REOPENS", 5)
        attempts: list[str] = []

        def replace(kind: str) -> None:
            attempts.append(kind)
            replace_file(path, NEW)

        store = CertificateStore(path, lock=lambda fd: SignallingLock(fd, replace))
        with pytest.raises(StoreError, match="replaced 5 times") as info:
            store.lease()
        assert info.value.rule == "store-replaced"
        assert attempts == ["shared"] * 5
        assert exclusive_free(path)


# -- atomic updates ------------------------------------------------------------------------------
class TestAtomicUpdate:
    def test_update_replaces_the_inode_and_rewrites_the_old_one(self, path: pathlib.Path) -> None:
        """The blob gets a new inode (rename); a VMM that opened the old inode before (and,
        with locks, waited on it) reads the new blob from it too. Permissions stay."""
        path.chmod(0o640)
        before = path.stat().st_ino
        foreign = os.open(path, os.O_RDONLY)
        try:
            CertificateStore(path).update(NEW)
            assert os.pread(foreign, 1 << 16, 0) == NEW
        finally:
            os.close(foreign)
        assert path.stat().st_ino != before
        assert path.read_bytes() == NEW
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert exclusive_free(path)
        assert temp_files(path.parent) == []

    def test_symlink_target_is_replaced(self, path: pathlib.Path) -> None:
        link = path.with_name("link.blob")
        link.symlink_to(path.name)
        CertificateStore(link).update(NEW)
        assert link.is_symlink()
        assert path.read_bytes() == NEW

    def test_stale_temp_files_are_removed(self, path: pathlib.Path) -> None:
        """A killed updater's ``.<name>.tmp.<pid>`` goes with the next update."""
        (path.parent / ".certs.blob.tmp.99999").write_bytes(b"half a blob")
        (path.parent / ".other.blob.tmp.99999").write_bytes(b"not ours")
        CertificateStore(path).update(NEW)
        assert temp_files(path.parent) == [".other.blob.tmp.99999"]

    def test_failing_firmware_changes_nothing(self, path: pathlib.Path) -> None:
        def fail() -> None:
            raise RuntimeError("SNP_COMMIT failed")

        with pytest.raises(RuntimeError, match="SNP_COMMIT"):
            CertificateStore(path).update(NEW, with_firmware=fail)
        assert path.read_bytes() == OLD
        assert exclusive_free(path)
        assert temp_files(path.parent) == []


#: Where a held updater is killed, and which blob ``path`` must then hold.
HOLDS: dict[Hold, str] = {
    "firmware": "old",  # inside with_firmware()
    "temp-write": "old",  # half of the temp file written
    "before-rename": "old",  # temp file written, fsynced, locked
    "after-rename": "new",  # renamed, directory not yet fsynced
    "old-rewrite": "new",  # half of the old (unlinked) inode rewritten
}
#: Kills at arbitrary points: after this many ms of updating (where they land varies; what
#: must hold does not).
DELAYS_MS = [0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 11.0, 15.0] * 3


def test_sigkill_mid_update_leaves_old_or_new_blob(tmp_path: pathlib.Path) -> None:
    """SIGKILL a real updater process (large distinct tables) at fixed points and at
    arbitrary ones: ``path`` always holds exactly the old or the new blob, its lock died with
    the updater, and a fresh store leases it."""
    ctx = fresh_processes()
    path, tcb = tmp_path / "certs.blob", tmp_path / "tcb"
    blobs = [churn_blob(i) for i in range(3)]
    assert len(set(blobs)) == 3
    assert all(256 << 10 <= len(b) <= (1 << 20) + 1024 for b in blobs)
    CertificateStore(path, create=True).update(blobs[0])
    current = 0  # the number of the blob at path
    plan: list[Hold | float] = [*HOLDS, *DELAYS_MS]
    for kill in plan:
        index = ctx.Value("q", current, lock=False)  # no lock a killed process could keep
        ready = ctx.Event()
        hold = kill if isinstance(kill, str) else None
        proc = ctx.Process(
            target=churn, args=(str(path), str(tcb), current + 1, index, hold, ready)
        )
        proc.start()
        try:
            assert ready.wait(SAFETY), f"kill {kill!r}: the updater never got ready"
            if isinstance(kill, float):
                time.sleep(kill / 1000)
        finally:
            proc.kill()
            proc.join(SAFETY)
        assert proc.exitcode == -signal.SIGKILL
        if isinstance(kill, str):
            expected = [current if HOLDS[kill] == "old" else current + 1]
        else:
            expected = [index.value - 1, index.value]
        data = path.read_bytes()
        found = [i for i in expected if data == blobs[i % 3]]
        assert found, f"kill {kill!r}: {len(data)} bytes at path, not blob {expected}"
        current = found[0]
        if kill in ("temp-write", "before-rename"):
            assert temp_files(tmp_path) != []  # left for the next update to remove
        assert exclusive_free(path), f"kill {kill!r}: the lock outlived the updater"
        with CertificateStore(path).lease() as lease:
            assert lease.data == data
    CertificateStore(path).update(blobs[0])
    assert temp_files(tmp_path) == []


# -- typed I/O errors and the lock primitives ----------------------------------------------------
def test_unusable_path_is_a_store_io_error(tmp_path: pathlib.Path) -> None:
    """An OSError other than "missing" (here ENOTDIR: a file used as a directory) is a
    StoreError with rule ``store-io`` and the OS's reason, not a leaked OSError."""
    (tmp_path / "file").write_bytes(b"")
    bad = tmp_path / "file" / "certs.blob"
    with pytest.raises(StoreError) as info:
        CertificateStore(bad)
    err = info.value
    assert (err.message, err.rule, err.spec) == (
        f"certificate blob {str(bad)!r}: Not a directory",
        "store-io",
        store_module._SPEC,
    )


def test_missing_and_replaced_errors_cite_the_kvm_text(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every StoreError names KVM's documentation of the blob and its lock."""
    with pytest.raises(StoreError) as missing:
        CertificateStore(path.with_name("absent"))
    monkeypatch.setattr(store_module, "MAX_REOPENS", 1)
    store = CertificateStore(
        path, lock=lambda fd: SignallingLock(fd, lambda _: replace_file(path, NEW))
    )
    with pytest.raises(StoreError) as replaced:
        store.lease()
    assert missing.value.spec == replaced.value.spec == store_module._SPEC
    assert (missing.value.rule, replaced.value.rule) == ("store-missing", "store-replaced")


def test_temp_file_removed_by_someone_else_is_no_error(tmp_path: pathlib.Path) -> None:
    """A stale temp file gone between the directory scan and its unlink (another cleaner) is
    not an error."""
    store_module._unlink_quietly(str(tmp_path / ".certs.blob.tmp.1"))
    assert list(tmp_path.iterdir()) == []


class Contended(NamedTuple):
    thread: threading.Thread
    out: list[object]
    release: Callable[[], None]
    """Close the holder's file (dropping its exclusive lock) and join the thread."""


@contextlib.contextmanager
def against_an_exclusive_holder(
    path: pathlib.Path, take: Callable[[OfdLock], object]
) -> Iterator[Contended]:
    """``take(OfdLock(other))`` in a thread while another open file of ``path`` holds the
    exclusive lock. On exit the holder is released if it was not (so a lock that wrongly
    waits cannot hang the test), then ``other`` closes."""
    held = [os.open(path, os.O_RDWR)]
    other = os.open(path, os.O_RDONLY)

    def release() -> None:
        if held:
            os.close(held.pop())
        thread.join(SAFETY)

    try:
        OfdLock(held[0]).exclusive()
        thread, out = in_thread(lambda: take(OfdLock(other)))
        try:
            yield Contended(thread, out, release)
        finally:
            release()
    finally:
        if held:
            os.close(held.pop())
        os.close(other)


def test_try_shared_refuses_without_waiting(path: pathlib.Path) -> None:
    """``try_shared`` against another open file's exclusive lock returns False at once
    (F_OFD_SETLK, EAGAIN); a waiting lock would block until the holder closes."""
    with against_an_exclusive_holder(path, OfdLock.try_shared) as contended:
        contended.thread.join(SAFETY)
        assert contended.out == [False]


#: How long a waiting lock is watched before the holder lets go. The correct lock cannot
#: return while the exclusive lock is held, however long this is; a lock that did not wait
#: returns within it (that is what the test catches).
WATCH = 0.2


def test_shared_waits_for_the_exclusive_holder(path: pathlib.Path) -> None:
    """``shared`` (F_OFD_SETLKW) blocks while another open file holds the exclusive lock and
    returns holding the shared lock once it is dropped: it never returns early, lockless."""
    with against_an_exclusive_holder(path, OfdLock.shared) as contended:
        contended.thread.join(WATCH)
        assert (contended.thread.is_alive(), contended.out) == (True, [])
        contended.release()  # the waiter goes on
        assert contended.out == [None]
        assert not exclusive_free(path)  # the waiter's file holds the shared lock now
    assert exclusive_free(path)


def test_release_drops_the_lock_and_keeps_the_file_open(path: pathlib.Path) -> None:
    """``release`` (F_UNLCK) drops the lock on a descriptor that stays open."""
    fd = os.open(path, os.O_RDWR)
    try:
        lock = OfdLock(fd)
        lock.exclusive()
        assert not exclusive_free(path)
        lock.release()
        assert exclusive_free(path)
        lock.shared()
        assert not exclusive_free(path)
        lock.release()
        assert exclusive_free(path)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_read_all_follows_a_file_that_grew(tmp_path: pathlib.Path) -> None:
    """The size from fstat is a hint: a file that grew since is read to its end, in chunks;
    the exact size is one read."""
    blob = bytes(range(256)) * 1025  # 262,400 bytes: more than four 64 KiB chunks
    p = tmp_path / "grown"
    p.write_bytes(blob)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert store_module._read_all(fd, 10) == blob
        assert store_module._read_all(fd, len(blob)) == blob
        assert store_module._read_all(fd, 0) == blob
    finally:
        os.close(fd)


def test_directory_fsync(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that cannot fsync a directory (EINVAL) is fine; any other error is not."""

    def failing(code: int) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(os, "fsync", failing(errno.EINVAL))
    store_module._fsync_dir(str(tmp_path))
    monkeypatch.setattr(os, "fsync", failing(errno.EIO))
    with pytest.raises(OSError, match="Input/output error") as info:
        store_module._fsync_dir(str(tmp_path))
    assert info.value.errno == errno.EIO


def test_lease_errors_name_the_blob(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way lease() fails after the store was made names the blob's path and says what
    went wrong: a corrupt table (the checker's first error), an I/O error under the lock,
    the file gone, its directory replaced by a file, and a file replaced on every retry."""
    directory = tmp_path / "d"
    directory.mkdir()
    path = directory / "certs.blob"
    path.write_bytes(OLD)
    store = CertificateStore(path)
    name = repr(store.path)

    bad = OLD[:-1]
    path.write_bytes(bad)
    first = next(v for v in check_cert_table(bad) if v.severity is Severity.ERROR)
    with pytest.raises(StoreError) as corrupt:
        store.lease()
    assert corrupt.value.message.startswith(
        f"{store.path} is not a valid certificate table: {first.message}"
    )
    path.write_bytes(OLD)

    def failing(fd: int) -> OfdLock:
        lock = OfdLock(fd)

        def shared() -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        lock.shared = shared  # type: ignore[method-assign]
        return lock

    with pytest.raises(StoreError) as io_error:
        CertificateStore(path, lock=failing).lease()
    assert (io_error.value.message, io_error.value.rule) == (
        f"certificate blob {name}: {os.strerror(errno.EIO)}",
        "store-io",
    )

    path.unlink()
    with pytest.raises(StoreError) as missing:
        store.lease()
    assert missing.value.message == (
        f"certificate blob {name} does not exist (create=True creates it empty)"
    )

    directory.rmdir()
    directory.write_bytes(b"")
    with pytest.raises(StoreError) as not_a_directory:
        store.lease()
    assert (not_a_directory.value.message, not_a_directory.value.rule) == (
        f"certificate blob {name}: Not a directory",
        "store-io",
    )

    directory.unlink()
    directory.mkdir()
    path.write_bytes(OLD)
    monkeypatch.setattr(store_module, "MAX_REOPENS", 1)
    racing = CertificateStore(
        path, lock=lambda fd: SignallingLock(fd, lambda _: replace_file(path, NEW))
    )
    with pytest.raises(StoreError) as replaced:
        racing.lease()
    assert replaced.value.message == (
        f"certificate blob {name} was replaced 1 times while waiting for its lock"
    )
