"""The ``ghcb`` command imports the testing kit's modules (and hypothesis) only when one of
their commands runs: every other command starts without them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("ghcb.difftest", "ghcb.vectors", "ghcb._vectors_c", "ghcb._difftest_parsers")

PROBE = r"""
import contextlib, io, json, sys
words = json.loads(sys.argv[1])
import ghcb.cli
if words:
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        try:
            ghcb.cli.main(words, quiet)
        except SystemExit:  # --help
            pass
heavy = [m for m in sys.modules if m.startswith(("ghcb.", "hypothesis", "subprocess"))]
print(json.dumps(sorted(heavy)))
"""


def loaded(*words: str) -> set[str]:
    """The modules of interest a fresh interpreter has after ``ghcb WORDS``."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(words))],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(proc.stdout))


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["msr", "decode", "0x1"],
        ["difftest", "certs", "--help"],
        ["vectors", "export", "--help"],
        ["difftest", "certs", "--seed", "x", "--", "true"],
    ],
)
def test_kit_modules_load_only_when_their_command_runs(words: list[str]) -> None:
    """Importing ghcb.cli, running another command, asking a kit command's help or giving it
    bad arguments imports none of them, nor hypothesis, nor subprocess."""
    modules = loaded(*words)
    assert "ghcb.cli" in modules
    assert not modules & {*HEAVY, "hypothesis", "subprocess"}


def test_kit_command_loads_its_module(tmp_path: object) -> None:
    """The module comes in when the command runs (export: ghcb.vectors, not ghcb.difftest)."""
    modules = loaded("vectors", "export", str(tmp_path))
    assert {"ghcb.vectors", "ghcb._vectors_c"} <= modules
    assert not modules & {"ghcb.difftest", "hypothesis"}
