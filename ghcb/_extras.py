"""Optional dependencies: importing a module that needs an install extra without it raises
:class:`MissingExtraError` (an ``ImportError``) with the ``pip install`` line that fixes it,
not a bare ``ModuleNotFoundError`` from deep inside the import.

The extras are declared in ``pyproject.toml`` (``[project.optional-dependencies]``):
``hypothesis`` for :mod:`ghcb.strategies`, :mod:`ghcb.difftest` and the pytest plugin's
strategies.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXTRAS", "MissingExtraError", "raise_missing_extra"]


class MissingExtraError(ImportError):
    """A module of ghcb needs an optional dependency that is not installed.

    ``extra`` is the install extra that brings it (``pip install 'ghcb[<extra>]'``), ``name``
    the missing module (as :class:`ImportError` has it).
    """

    def __init__(self, module: str, extra: str, *, needed_by: str) -> None:
        self.extra = extra
        self.needed_by = needed_by
        super().__init__(
            f"{needed_by} needs the {module!r} package: pip install 'ghcb[{extra}]'",
            name=module,
        )


def raise_missing_extra(error: ModuleNotFoundError, *, extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtraError` if ``error`` is the top-level package of ``extra``
    missing (not one of that package's own imports failing); else return, so the caller
    re-raises ``error``.

    Use as::

        try:
            from hypothesis import strategies as st
        except ModuleNotFoundError as e:
            raise_missing_extra(e, extra="hypothesis", needed_by=__name__)
            raise
    """
    missing = (error.name or "").partition(".")[0]
    if missing == EXTRAS.get(extra):
        raise MissingExtraError(missing, extra, needed_by=needed_by) from error


#: The top-level package each extra of pyproject.toml brings (only the ones ghcb imports).
EXTRAS: Final = {"hypothesis": "hypothesis"}
