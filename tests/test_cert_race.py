"""The certificate/TCB race that KVM's documented file locks prevent — with real processes,
and with every outcome forced by shared state, not by timing (see tests/race_support.py).

Requester processes each run a VMM and a vCPU whose firmware signs with the TCB in a shared
"firmware state" file; one updater process changes that TCB and the certificate blob together
(``CertificateStore.update(..., with_firmware=...)``), as a host tool doing SNP_COMMIT would.
Each request checks that the certificates it got name the TCB the firmware used.

KVM docs (seed patch api.rst, KVM_EXIT_VMGEXIT REQ_CERTS): the VMM holds a shared lock on the
blob "until the attestation request is actually sent to firmware"; updaters hold an exclusive
lock "for the duration of any updates to firmware or the certificate blob contents".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.race_support import run_race

if TYPE_CHECKING:
    import pathlib

REQUESTERS, REQUESTS = 3, 12


def paths(tmp_path: pathlib.Path) -> tuple[str, str]:
    return str(tmp_path / "certs.blob"), str(tmp_path / "tcb")


@pytest.mark.parametrize("v15", [False, True], ids=["merged-immediate-exit", "v15-notify-done"])
def test_locks_keep_certificates_and_tcb_together(tmp_path: pathlib.Path, v15: bool) -> None:
    """With the locks: zero mismatches, while the TCB really changed under every requester
    (before its k-th request at least k updates were done)."""
    results = run_race(
        *paths(tmp_path), requesters=REQUESTERS, requests=REQUESTS, locks="ofd", v15=v15
    )
    assert [m for m, _ in results] == [0] * REQUESTERS
    for _, seen in results:
        assert seen == sorted(seen)
        assert all(tcb >= k for k, tcb in enumerate(seen, 1))
        assert seen[-1] >= REQUESTS


def test_without_locks_every_request_mismatches(tmp_path: pathlib.Path) -> None:
    """The same run with a no-op lock: the firmware changes between reading the blob and
    signing, on every request (so the test above can fail)."""
    results = run_race(*paths(tmp_path), requesters=REQUESTERS, requests=REQUESTS, locks="none")
    assert [m for m, _ in results] == [REQUESTS] * REQUESTERS


@pytest.mark.parametrize("v15", [False, True], ids=["merged", "v15"])
def test_lock_dropped_before_firmware_mismatches(tmp_path: pathlib.Path, v15: bool) -> None:
    """With the locks but the VMM releasing its lease right after writing the certificates
    (``notify=False``), one requester: nothing holds the updater back before firmware, so
    every request mismatches."""
    results = run_race(
        *paths(tmp_path), requesters=1, requests=REQUESTS, locks="ofd", v15=v15, notify=False
    )
    assert results == [(REQUESTS, results[0][1])]
