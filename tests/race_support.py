"""Processes for the certificate-store tests: the certificate/TCB race (test_cert_race.py) and
an updater to SIGKILL (test_store.py).

The race is forced, not likely: every wait is on shared state (a start barrier, the number of
finished updates, and whether the updater is blocked on a blob lock), never on time. Each
wait has a generous safety timeout that only turns a hang into a failure with a message.

* The updater changes the firmware TCB and the blob together (``CertificateStore.update`` with
  ``with_firmware``), one update whenever someone waits for one, until every requester is
  done. Its exclusive lock is an :class:`InstrumentedLock`: it says when it has to wait.
* Requester ``i`` waits, before its ``k``-th request, until ``k`` updates are done (so the TCB
  changes under the requests), then runs an Extended Guest Request through a ``Vmm``.
* The firmware, called while the VMM holds its lease (with locks and ``notify``), reads the
  number of updates ``u`` and waits until ``u + 2`` updates are done *or the updater is
  blocked on a lock*, then signs with the TCB in the firmware state file.

  With locks the updater cannot finish an update while the lease is held (the lease locks the
  inode at ``path``): it ends up blocked, the firmware goes on, and the certificates match
  the TCB — always. Without locks (or with the lease dropped before firmware, and no other
  requester to block the updater) the updater is never blocked, so the firmware waits for two
  more updates: the certificates, read before ``u`` was, name at most TCB ``u + 1`` (update
  ``u + 2`` starts only after ``u + 1`` is counted), the firmware signs with ``u + 2`` or
  later — a mismatch on every request, always.

Updates happen only when a process waits for one (each request asks for at most two more),
so a run makes fewer updates than the store's reopen bound (``MAX_REOPENS``; checked): a
reader that keeps finding the blob replaced cannot run out of retries either.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ghcb import CertEntry, CertGuid, build_cert_table, parse_page
from ghcb.certs import parse_cert_table
from ghcb.hypervisor import CertificateStore, MergedAbi, V15Abi, Vcpu, Vm, Vmm
from ghcb.hypervisor import store as store_module
from ghcb.hypervisor.locking import NoLock, OfdLock
from ghcb.hypervisor.store import MAX_REOPENS
from ghcb.schemas.page import PAGE_SIZE
from tests.helpers import CERTS, GHCB, RESP, report_request_guest

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.context import BaseContext, ForkServerContext
    from multiprocessing.queues import Queue
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Barrier, Condition, Event

    from ghcb.hypervisor.locking import LockFactory

#: Every wait gives up after this long and fails the test (it never decides a pass).
SAFETY = 60.0

Locks = Literal["ofd", "none"]
Result = tuple[str, int, list[int]]  # ("ok", mismatches, firmware TCBs) or ("error", 0, [])


class RaceTimeout(AssertionError):
    """A wait hit the safety timeout: a bug (a hang), never a scheduling accident."""


class Aborted(Exception):
    """Another race process failed; stop."""


def blob_for(tcb: int) -> bytes:
    """A certificate table whose VCEK names ``tcb``."""
    return build_cert_table(
        [CertEntry(CertGuid.VCEK, b"VCEK for TCB " + tcb.to_bytes(8, "little"))]
    )


def write_tcb(path: str, tcb: int) -> None:
    """Set the firmware TCB (atomically: the firmware reads one TCB or the other)."""
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(tcb.to_bytes(8, "little"))
    os.replace(tmp, path)


def read_tcb(path: str) -> int:
    with open(path, "rb") as fh:
        return int.from_bytes(fh.read(), "little")


@dataclass
class RaceState:
    """What the race processes share (all values are guarded by ``cond``)."""

    cond: Condition
    start: Barrier
    updates: Synchronized[int]  # updates finished (blob and TCB changed and counted)
    wanted: Synchronized[int]  # the number of updates someone waits for
    blocked: Synchronized[int]  # 1 while the updater waits for its exclusive lock
    done: Synchronized[int]  # requesters finished (or failed)
    abort: Synchronized[int]  # 1 once any race process failed
    out: Queue[Result]
    requesters: int

    @classmethod
    def make(cls, ctx: BaseContext, requesters: int) -> RaceState:
        return cls(
            cond=ctx.Condition(),
            start=ctx.Barrier(requesters + 1),
            updates=ctx.Value("q", 0),
            wanted=ctx.Value("q", 0),
            blocked=ctx.Value("i", 0),
            done=ctx.Value("i", 0),
            abort=ctx.Value("i", 0),
            out=ctx.Queue(),
            requesters=requesters,
        )

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (holding ``cond``) until ``predicate()``; fail clearly instead of hanging."""
        if not self.cond.wait_for(lambda: predicate() or bool(self.abort.value), SAFETY):
            self.abort.value = 1
            self.cond.notify_all()
            raise RaceTimeout(f"pid {os.getpid()}: no progress in {SAFETY} s waiting for {what}")
        if self.abort.value:
            raise Aborted

    def await_updates(self, updates: int, who: str) -> None:
        """Ask for ``updates`` finished updates and wait for them."""
        with self.cond:
            self.want(updates)
            self.wait(lambda: self.updates.value >= updates, f"update {updates} ({who})")

    def want(self, updates: int) -> None:
        """Ask the updater for ``updates`` finished updates (holding ``cond``)."""
        if updates > self.wanted.value:
            self.wanted.value = updates
            self.cond.notify_all()


class InstrumentedLock(OfdLock):
    """The updater's OFD lock, raising ``blocked`` while it has to wait for its exclusive
    lock (fcntl(2): F_OFD_SETLK fails with EAGAIN/EACCES on a conflicting lock, then
    F_OFD_SETLKW waits)."""

    def __init__(self, fd: int, *, state: RaceState) -> None:
        super().__init__(fd)
        self.state = state

    def exclusive(self) -> None:
        if self.try_exclusive():
            return
        with self.state.cond:
            self.state.blocked.value = 1
            self.state.cond.notify_all()
        try:
            super().exclusive()
        finally:
            with self.state.cond:
                self.state.blocked.value = 0


class TcbFirmware:
    """Signs with the TCB in the firmware state file, after waiting (see the module doc)."""

    def __init__(self, tcb_path: str, state: RaceState) -> None:
        self.tcb_path = tcb_path
        self.state = state
        self.calls = 0

    def guest_request(self, request: bytes) -> tuple[bytes, int]:
        s = self.state
        self.calls += 1
        with s.cond:
            target = s.updates.value + 2
            s.want(target)
            s.wait(
                lambda: s.updates.value >= target or bool(s.blocked.value),
                f"update {target} or a blocked updater (in firmware)",
            )
        tcb = read_tcb(self.tcb_path)
        return tcb.to_bytes(8, "little").ljust(PAGE_SIZE, b"\0"), 0


def _lock_for(locks: Locks) -> LockFactory:
    return OfdLock if locks == "ofd" else NoLock


def requester(
    state: RaceState,
    blob_path: str,
    tcb_path: str,
    requests: int,
    locks: Locks,
    v15: bool,
    notify: bool,
) -> None:
    """Make ``requests`` Extended Guest Requests; report mismatches and firmware TCBs."""
    try:
        memory, ghcb = report_request_guest()
        firmware = TcbFirmware(tcb_path, state)
        vcpu = Vcpu(Vm(firmware, cert_abi=V15Abi() if v15 else MergedAbi()), memory, GHCB)
        vmm = Vmm(memory, CertificateStore(blob_path, lock=_lock_for(locks)), notify=notify)
        state.start.wait(SAFETY)
        mismatches, seen = 0, []
        for k in range(1, requests + 1):
            state.await_updates(k, f"request {k}")
            memory.guest_write(GHCB, ghcb)
            memory.guest_write(CERTS, bytes(4 * PAGE_SIZE))
            vmm.run(vcpu)
            answer = parse_page(memory.guest_read(GHCB, PAGE_SIZE))
            assert answer.sw_exit_info_2 == 0, f"request {k}: {answer.sw_exit_info_2:#x}"
            assert firmware.calls == k, f"request {k} did not reach firmware"
            fw_tcb = int.from_bytes(memory.guest_read(RESP, 8), "little")
            (entry,) = parse_cert_table(memory.guest_read(CERTS, 4 * PAGE_SIZE))
            cert_tcb = int.from_bytes(entry.data[-8:], "little")
            mismatches += cert_tcb != fw_tcb
            seen.append(fw_tcb)
        state.out.put(("ok", mismatches, seen))
    except BaseException:
        _fail(state, traceback.format_exc())
        raise
    finally:
        with state.cond:
            state.done.value += 1
            state.cond.notify_all()


def updater(state: RaceState, blob_path: str, tcb_path: str, locks: Locks) -> None:
    """Change TCB and blob together, one update per demand, until every requester is done."""
    try:
        lock: LockFactory = (
            functools.partial(InstrumentedLock, state=state) if locks == "ofd" else NoLock
        )
        store = CertificateStore(blob_path, lock=lock)
        state.start.wait(SAFETY)
        while True:
            with state.cond:
                state.wait(
                    lambda: (
                        state.done.value == state.requesters
                        or state.wanted.value > state.updates.value
                    ),
                    "a request for an update, or every requester done",
                )
                if state.done.value == state.requesters:
                    return
                tcb = state.updates.value + 1
            store.update(blob_for(tcb), with_firmware=functools.partial(write_tcb, tcb_path, tcb))
            with state.cond:
                state.updates.value = tcb
                state.cond.notify_all()
    except Aborted:
        pass
    except BaseException:
        _fail(state, traceback.format_exc())
        raise


def _fail(state: RaceState, message: str) -> None:
    state.out.put(("error: " + message, 0, []))
    with state.cond:
        state.abort.value = 1
        state.cond.notify_all()


def fresh_processes() -> ForkServerContext:
    """A multiprocessing context whose children start clean, as with spawn, but forked from
    a server that has imported ghcb once (spawn re-imports it in every child: ~0.4 s each)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # also hands the server our sys.path
    return ctx


def run_race(
    blob_path: str,
    tcb_path: str,
    *,
    requesters: int,
    requests: int,
    locks: Locks,
    v15: bool = False,
    notify: bool = True,
) -> list[tuple[int, list[int]]]:
    """Run one race; return each requester's ``(mismatches, firmware TCBs)``."""
    ctx = fresh_processes()
    write_tcb(tcb_path, 0)
    CertificateStore(blob_path, create=True).update(blob_for(0))
    state = RaceState.make(ctx, requesters)
    args = (state, blob_path, tcb_path)
    procs = [
        ctx.Process(target=requester, args=(*args, requests, locks, v15, notify))
        for _ in range(requesters)
    ]
    procs.append(ctx.Process(target=updater, args=(*args, locks)))
    try:
        for p in procs:
            p.start()
        results = []
        for _ in range(requesters):
            status, mismatches, seen = state.out.get(timeout=SAFETY)
            assert status == "ok", status
            results.append((mismatches, seen))
        for p in procs:
            p.join(SAFETY)
            assert p.exitcode == 0, f"race process exit code {p.exitcode}"
        assert state.updates.value < MAX_REOPENS, "more updates than a reader may reopen"
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        state.out.close()
        state.out.join_thread()


# -- an updater to kill (test_store.py) -------------------------------------------------------
Hold = Literal["firmware", "temp-write", "before-rename", "after-rename", "old-rewrite"]

#: The large tables the churning updater alternates between (256 KiB to 1 MiB).
CHURN_SIZES = (256 << 10, 640 << 10, 1 << 20)


def churn_blob(i: int) -> bytes:
    """The ``i``-th of the distinct large tables (ARK, ASK and VCEK of distinct sizes)."""
    size = CHURN_SIZES[i % len(CHURN_SIZES)]
    return build_cert_table(
        [
            CertEntry(CertGuid.ARK, bytes([1 + i % 3]) * (size // 4)),
            CertEntry(CertGuid.ASK, bytes([4 + i % 3]) * (size // 4)),
            CertEntry(CertGuid.VCEK, bytes([7 + i % 3]) * (size // 2)),
        ]
    )


def _hang(ready: Event) -> None:
    ready.set()
    while True:  # until SIGKILL
        signal.pause()


class _HoldingLock(OfdLock):
    """The churning updater's lock: its second exclusive lock of an update is the one on the
    written and fsynced temp file, right before the rename."""

    def __init__(self, fd: int, *, hook: Callable[[], None]) -> None:
        super().__init__(fd)
        self.hook = hook

    def exclusive(self) -> None:
        super().exclusive()
        self.hook()


def churn(
    blob_path: str,
    tcb_path: str,
    first: int,
    index: Synchronized[int],
    hold: Hold | None,
    ready: Event,
) -> None:
    """Update the store with ``churn_blob(first)``, ``churn_blob(first + 1)``, ... until
    killed, publishing in ``index`` the number of the blob being written. With ``hold``, the
    first update stops at that point (sets ``ready``, waits for SIGKILL)."""
    locks = writes = 0

    def stop_at(point: Hold) -> None:
        if hold == point:
            _hang(ready)

    def on_lock() -> None:
        nonlocal locks
        locks += 1
        if locks == 2:
            stop_at("before-rename")

    real_write, real_fsync_dir = store_module._write_all, store_module._fsync_dir

    def write(fd: int, data: bytes) -> None:
        nonlocal writes
        writes += 1
        point: Hold = "temp-write" if writes == 1 else "old-rewrite"
        if hold == point:
            os.pwrite(fd, data[: len(data) // 2], 0)  # half written, then killed
            _hang(ready)
        real_write(fd, data)

    def fsync_dir(directory: str) -> None:
        stop_at("after-rename")
        real_fsync_dir(directory)

    def firmware(i: int) -> None:
        write_tcb(tcb_path, i)
        stop_at("firmware")

    store_module._write_all = write
    store_module._fsync_dir = fsync_dir
    store = CertificateStore(blob_path, lock=functools.partial(_HoldingLock, hook=on_lock))
    if hold is None:
        ready.set()
    i = first
    while True:
        index.value = i
        store.update(churn_blob(i), with_firmware=functools.partial(firmware, i))
        i += 1
