"""The one conversion of a caller's bytes argument, shared by every public function.

Wire structures are byte strings, so an argument is read as bytes exactly when it is a buffer
of 1-byte items (``bytes``, ``bytearray``, a ``memoryview`` of format ``B``/``b``/``c``, an
``array('B')``, an ``mmap``, ...), contiguous or not: a strided or multi-dimensional view is
read in logical (C) order and copied. Everything else is an
:class:`~ghcb.errors.InputTypeError` with ``rule="input-type"``: objects that are not buffers,
released memoryviews, and buffers of wider items (an ``array('I')`` holds integers in the
host's byte order, not wire bytes; its ``len`` counts items).
"""

from __future__ import annotations

from typing import Final

from ghcb.errors import InputTypeError

__all__ = ["RULE", "byte_string", "byte_view", "view_bytes"]

#: The ``rule`` of every refused argument.
RULE: Final = "input-type"


def byte_view(data: object, *, what: str, spec: str) -> memoryview:
    """``data`` as a 1-D, C-contiguous view of unsigned bytes (copied only when strided).

    Args:
        data: the caller's argument.
        what: how to name the argument in an error (``"a GHCB page"``).
        spec: the spec reference of the structure the argument should hold.

    Raises:
        InputTypeError: ``data`` is not a buffer, is a released memoryview, or holds items
            wider than one byte.
    """
    if type(data) is bytes:
        return memoryview(data)
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise InputTypeError(
            f"{what} must be bytes-like, not {type(data).__name__}", rule=RULE, spec=spec
        ) from None
    except ValueError as e:  # a released memoryview
        raise InputTypeError(f"{what} is unreadable: {e}", rule=RULE, spec=spec) from e
    if view.itemsize != 1:
        raise InputTypeError(
            f"{what} must be a buffer of bytes, not of {view.itemsize}-byte items "
            f"(format {view.format!r})",
            rule=RULE,
            spec=spec,
        )
    if view.c_contiguous:
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    return memoryview(view.tobytes())


def view_bytes(view: memoryview) -> bytes:
    """The bytes of a byte view, without a copy when it spans a whole ``bytes`` object."""
    base = view.obj
    return base if type(base) is bytes and len(base) == len(view) else view.tobytes()


def byte_string(data: object, *, what: str, spec: str) -> bytes:
    """``data`` as ``bytes`` (itself when it already is), read as :func:`byte_view` reads it.

    Raises:
        InputTypeError: as :func:`byte_view`.
    """
    if type(data) is bytes:
        return data
    return view_bytes(byte_view(data, what=what, spec=spec))
