"""The certificate/TCB race that KVM's documented file locks prevent — with real processes.

Several requester processes each run a VMM and a vCPU whose firmware signs with the TCB
currently in a shared "firmware state" file; one updater process changes that TCB and the
certificate blob together (TCB first, then — after a pause — the blob), as a host tool doing
SNP_COMMIT would. Every request checks that the certificates it got name the TCB the firmware
used. With the locks (shared while a VMM serves a request until the request reached firmware,
exclusive during an update) there are no mismatches; with locking off there are.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from typing import TYPE_CHECKING

import pytest

from ghcb import CertEntry, CertGuid, build_cert_table
from ghcb.certs import parse_cert_table
from ghcb.hypervisor import CertificateStore, MergedAbi, V15Abi, Vcpu, Vm, Vmm
from ghcb.schemas.page import PAGE_SIZE
from tests.helpers import CERTS, GHCB, RESP, report_request_guest

if TYPE_CHECKING:
    import pathlib
    from multiprocessing.queues import Queue

DELAY = 0.002  # the firmware's work, and the updater's pause between TCB and blob
REQUESTERS, REQUESTS, UPDATES = 3, 30, 30


def blob_for(tcb: int) -> bytes:
    """A certificate table whose VCEK names ``tcb``."""
    return build_cert_table(
        [CertEntry(CertGuid.VCEK, b"VCEK for TCB " + tcb.to_bytes(8, "little"))]
    )


class TcbFirmware:
    """Answers with the TCB in the firmware state file at the moment it signs."""

    def __init__(self, tcb_path: str) -> None:
        self.tcb_path = tcb_path

    def guest_request(self, request: bytes) -> tuple[bytes, int]:
        time.sleep(DELAY)  # the firmware call takes time: the window the lock must cover
        with open(self.tcb_path, "rb") as fh:
            tcb = fh.read()
        return tcb.ljust(PAGE_SIZE, b"\0"), 0


def write_tcb(path: str, tcb: int) -> None:
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(tcb.to_bytes(8, "little"))
    os.replace(tmp, path)  # atomic: the firmware reads one TCB or the other


def requester(
    blob_path: str, tcb_path: str, locking: bool, v15: bool, out: Queue[tuple[int, list[int]]]
) -> None:
    memory, ghcb = report_request_guest()
    vm = Vm(TcbFirmware(tcb_path), cert_abi=V15Abi() if v15 else MergedAbi())
    vcpu = Vcpu(vm, memory, GHCB)
    vmm = Vmm(memory, CertificateStore(blob_path, locking=locking))
    mismatches, seen = 0, []
    for _ in range(REQUESTS):
        memory.guest_write(GHCB, ghcb)
        memory.guest_write(CERTS, bytes(4 * PAGE_SIZE))
        vmm.run(vcpu)
        fw_tcb = int.from_bytes(memory.guest_read(RESP, 8), "little")
        entries = parse_cert_table(memory.guest_read(CERTS, 4 * PAGE_SIZE), strict=False)
        cert_tcb = int.from_bytes(entries[0].data[-8:], "little") if entries else -1
        mismatches += cert_tcb != fw_tcb
        seen.append(fw_tcb)
        time.sleep(DELAY / 2)  # let the updater in
    out.put((mismatches, seen))


def updater(blob_path: str, tcb_path: str, locking: bool) -> None:
    store = CertificateStore(blob_path, locking=locking)
    for tcb in range(1, UPDATES + 1):

        def change_firmware(tcb: int = tcb) -> None:
            write_tcb(tcb_path, tcb)
            time.sleep(DELAY)  # e.g. SNP_COMMIT, then fetching the new VCEK

        store.update(blob_for(tcb), with_firmware=change_firmware)
        time.sleep(DELAY)


def race(tmp_path: pathlib.Path, *, locking: bool, v15: bool) -> tuple[int, set[int]]:
    blob_path, tcb_path = str(tmp_path / "certs.blob"), str(tmp_path / "tcb")
    write_tcb(tcb_path, 0)
    CertificateStore(blob_path).update(blob_for(0))
    ctx = multiprocessing.get_context("spawn")
    out: Queue[tuple[int, list[int]]] = ctx.Queue()
    procs = [
        ctx.Process(target=requester, args=(blob_path, tcb_path, locking, v15, out))
        for _ in range(REQUESTERS)
    ]
    procs.append(ctx.Process(target=updater, args=(blob_path, tcb_path, locking)))
    for p in procs:
        p.start()
    results: list[tuple[int, list[int]]] = []
    deadline = time.monotonic() + 120
    while len(results) < REQUESTERS:
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not failed, f"a race process failed: exit codes {failed}"
            assert time.monotonic() < deadline, "race processes did not finish"
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return sum(m for m, _ in results), {t for _, seen in results for t in seen}


@pytest.mark.parametrize("v15", [False, True], ids=["merged-immediate-exit", "v15-notify-done"])
def test_locks_keep_certificates_and_tcb_together(tmp_path: pathlib.Path, v15: bool) -> None:
    """With the locks: zero mismatches, while the TCB really changed under the requests."""
    mismatches, tcbs = race(tmp_path, locking=True, v15=v15)
    assert mismatches == 0
    assert len(tcbs) >= 3  # updates interleaved with the requests


def test_without_locks_the_race_shows(tmp_path: pathlib.Path) -> None:
    """The same run without locks produces mismatches (so the test above can fail)."""
    mismatches, _ = race(tmp_path, locking=False, v15=False)
    assert mismatches > 0
