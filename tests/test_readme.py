"""The README's Python example runs as written."""

from __future__ import annotations

import re

from tests.helpers import ROOT


def test_readme_example_runs() -> None:
    """Every ```python block of README.md executes without error."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
