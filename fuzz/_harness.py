"""What every harness shares: instrumented imports under libFuzzer, plain imports otherwise.

A harness module defines ``check_one(data: bytes) -> None`` (its invariant in the module
docstring) and ends with ``if __name__ == "__main__": fuzz(check_one)``. Run as a script, its
``ghcb`` imports are instrumented for coverage (atheris); imported (the replay test
``tests/test_fuzz_replay.py``, the benchmarks), atheris is never loaded, so the corpora and
the regression files replay in the normal suite without it.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def instrumented(module: str) -> contextlib.AbstractContextManager[object]:
    """The context to import ``ghcb`` in: atheris's instrumentation when ``module`` is the
    script libFuzzer runs (``"__main__"``), else nothing."""
    if module != "__main__":
        return contextlib.nullcontext()
    import atheris  # the fuzz extra: pip install -e '.[fuzz]'

    return atheris.instrument_imports(include=["ghcb"])  # type: ignore[no-any-return]


def fuzz(check_one: Callable[[bytes], None]) -> None:
    """Hand ``check_one`` to libFuzzer with the command line's options (corpus dirs,
    ``-max_len``, ``-max_total_time``, ...); a raised exception is a crash (exit 77)."""
    import atheris

    atheris.Setup(sys.argv, check_one)
    atheris.Fuzz()
