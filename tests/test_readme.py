"""The README's examples run as written: every ```python block, and every ```sh block's
``$ command`` lines (in order, in one scratch directory with ``spec/`` linked in, stderr
merged into stdout), each printing exactly the output shown under it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
SH_BLOCKS = [b for b in re.findall(r"```sh\n(.*?)```", README, flags=re.S) if "$ ghcb" in b]


def test_readme_example_runs() -> None:
    """Every ```python block of README.md executes without error."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def commands(block: str) -> list[tuple[str, list[str]]]:
    """``(command, shown output lines)`` for each ``$ `` line of a block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def run_shell(command: str, cwd: Path) -> tuple[int, str]:
    """``command`` through ``sh`` with this interpreter's ``ghcb`` first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "spec").symlink_to(ROOT / "spec")
    return folder


def test_sh_blocks_exist() -> None:
    """The command-line section has runnable examples."""
    assert len(SH_BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(SH_BLOCKS)))
def test_readme_sh_block(index: int, scratch: Path) -> None:
    """Each ``$ ghcb ...`` line runs (blocks in README order share the directory) and prints
    exactly the lines shown under it; none ends in a traceback."""
    for command, shown in commands(SH_BLOCKS[index]):
        status, output = run_shell(command, scratch)
        assert "Traceback" not in output, command
        assert status in (0, 1, 2, 141), command
        lines = [line.rstrip() for line in output.splitlines()]
        assert lines == shown, command


def test_readme_stays_in_the_repository() -> None:
    """No reference to files outside the repository (a newcomer has only the clone)."""
    assert "../" not in README
    assert "/work/" not in README
    for path in re.findall(r"`((?:spec|tests|ghcb|fuzz)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), path


def test_license_is_the_declared_one() -> None:
    """LICENSE holds the MIT licence pyproject.toml declares."""
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the ghcb authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
