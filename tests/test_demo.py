"""`ghcb demo`: every step of the end-to-end story holds, with its exact facts."""

from __future__ import annotations

import io
import json

from ghcb.certs import CertGuid
from ghcb.cli import main
from ghcb.demo import format_text, run_demo

CHAIN = sorted(str(g.value) for g in (CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK))


def test_story_facts() -> None:
    """Both ABIs: INVALID_LEN with 2 pages, then a verified v5 report with ARK/ASK/VCEK and the
    guest counter at 4; BUSY twice on an injected clock; after a TCB update only the new VCEK
    verifies."""
    merged, v15, busy, tcb = run_demo()
    for step in (merged, v15):
        assert step.ok
        assert step.facts == {
            "first_try": {"exit_info_2": 1 << 32, "npages": 2},
            "report_version": 5,
            "report_data_ok": True,
            "signature_valid": True,
            "chain_valid": True,
            "certificates": CHAIN,
            "guest_counter": 4,
        }
    assert "KVM exit 43 (certificate request)" in "\n".join(merged.lines)
    assert "KVM exit 40 (DONE notification)" in "\n".join(v15.lines)
    assert (busy.ok, busy.facts) == (True, {"busy_retries": 2, "seconds": 4.0})
    assert tcb.ok
    assert tcb.facts["old_vcek_verifies"] is False
    assert tcb.facts["signature_valid"] is True
    assert format_text([merged]).splitlines()[0] == f"1. {merged.title}"


def test_cli_json() -> None:
    """`ghcb demo --json`: one object, ok, four steps, exit 0."""
    out = io.StringIO()
    assert main(["demo", "--json"], out) == 0
    doc = json.loads(out.getvalue())
    assert doc["ok"] is True
    assert [step["ok"] for step in doc["steps"]] == [True] * 4
