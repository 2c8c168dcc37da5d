"""Replay every fuzz corpus file and every fuzz regression through its harness, without atheris.

Each ``fuzz/fuzz_<name>.py`` harness keeps its target as ``check_one(data: bytes)`` and imports
atheris only when libFuzzer runs it, so ``make test`` checks the committed corpora
(``fuzz/corpus/<name>/``) and the minimised crashes (``tests/data/fuzz-regressions/<name>/``)
on every run. Also checked: the corpora hold every seed ``fuzz/make_corpus.py`` derives from
``spec/vectors/``, each harness has its libFuzzer options, and the ClusterFuzzLite build names
every harness.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import TYPE_CHECKING

import pytest

from tests.helpers import ROOT

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable
    from types import ModuleType

FUZZ = ROOT / "fuzz"
REGRESSIONS = ROOT / "tests" / "data" / "fuzz-regressions"
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))


def _module(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


def _target(harness: str) -> Callable[[bytes], None]:
    check_one: Callable[[bytes], None] = _module(f"fuzz_{harness}").check_one
    return check_one


def _inputs() -> list[tuple[str, pathlib.Path]]:
    out: list[tuple[str, pathlib.Path]] = []
    for harness in HARNESSES:
        for folder in (FUZZ / "corpus" / harness, REGRESSIONS / harness):
            if folder.is_dir():
                out.extend((harness, p) for p in sorted(folder.iterdir()) if p.is_file())
    return out


INPUTS = _inputs()


@pytest.mark.parametrize(
    ("harness", "path"),
    INPUTS,
    ids=[f"{h}/{p.parent.parent.name}/{p.name}" for h, p in INPUTS],
)
def test_replay(harness: str, path: pathlib.Path) -> None:
    _target(harness)(path.read_bytes())


def test_every_harness_has_a_corpus_and_options() -> None:
    assert HARNESSES == ["certs", "guest_msg", "handler", "input", "msr", "page"]
    for harness in HARNESSES:
        assert any((FUZZ / "corpus" / harness).iterdir()), harness
        options = (FUZZ / f"fuzz_{harness}.options").read_text()
        assert re.fullmatch(r"\[libfuzzer\]\nmax_len = \d+\n", options), harness


def test_harnesses_state_their_invariant_and_need_no_atheris() -> None:
    for harness in HARNESSES:
        module = _module(f"fuzz_{harness}")
        assert module.__doc__ is not None
        assert "Invariant" in module.__doc__, harness
        script = FUZZ / f"fuzz_{harness}.py"
        assert script.read_text().startswith("#!/usr/bin/env python3\n")
        assert os.access(script, os.X_OK), (
            f"{script.name} must be executable (libFuzzer re-runs it)"
        )
    assert "atheris" not in sys.modules


def test_corpora_hold_every_seed() -> None:
    seeds = _module("make_corpus").seeds()
    assert sorted(seeds) == HARNESSES
    for harness, files in seeds.items():
        for name, data in files.items():
            assert (FUZZ / "corpus" / harness / name).read_bytes() == data, (harness, name)


def test_guest_msg_seeds_are_sealed_with_the_harness_key() -> None:
    assert _module("make_corpus").GUEST_MSG_KEY == _module("fuzz_guest_msg").KEY


def test_regression_folders_are_harnesses() -> None:
    folders = {p.name for p in REGRESSIONS.iterdir() if p.is_dir()}
    assert folders <= set(HARNESSES)


def test_clusterfuzzlite_build_names_every_harness() -> None:
    build = (ROOT / ".clusterfuzzlite" / "build.sh").read_text()
    listed = re.search(r"^HARNESSES=\(([^)]*)\)$", build, re.MULTILINE)
    assert listed is not None
    assert sorted(listed.group(1).split()) == HARNESSES
    assert 'compile_python_fuzzer "fuzz/fuzz_${name}.py"' in build
    assert "language: python" in (ROOT / ".clusterfuzzlite" / "project.yaml").read_text()
    dockerfile = (ROOT / ".clusterfuzzlite" / "Dockerfile").read_text()
    assert "FROM gcr.io/oss-fuzz-base/base-builder-python" in dockerfile
