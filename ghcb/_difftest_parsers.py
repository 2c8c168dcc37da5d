"""The parsers under test of :mod:`ghcb.difftest`: a Python callable (:func:`cert_parser`) or a
command run once per input (:func:`command_parser`), each answering a :class:`Verdict`.

The command's protocol: the table on stdin; the entries as JSON ``[{"guid": "...", "offset": n,
"length": n}]`` on stdout and exit 0 to accept, or a non-zero exit to reject. Each call is
bounded: killed after ``timeout`` seconds or ``max_output`` bytes of output (a fault), stdin
from a temporary file, stderr discarded.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "CertParser",
    "Entry",
    "Verdict",
    "cert_parser",
    "command_parser",
]

#: A parser's answer for one entry: ``(guid, offset, length)``, the GUID as ``str(uuid)``.
Entry = tuple[str, int, int]

DEFAULT_TIMEOUT: Final = 5.0
#: Output of one call beyond this is a fault (a parser that lists more is not listing entries).
DEFAULT_MAX_OUTPUT: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a parser answered for one input: accepted (with its entries) or rejected;
    ``fault`` says why the answer is not usable (timeout, signal, bad output); ``detail``
    what the parser said (its exception, its exit status)."""

    accepted: bool
    entries: tuple[Entry, ...] = ()
    fault: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        """The verdict as JSON."""
        return {
            "accepted": self.accepted,
            "entries": [{"guid": g, "offset": o, "length": n} for g, o, n in self.entries],
            "fault": self.fault,
            "detail": self.detail,
        }


class CertParser(Protocol):
    """A parser under test: bytes in, :class:`Verdict` out."""

    def __call__(self, data: bytes, /) -> Verdict: ...


def _guid(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    if isinstance(value, str):
        return str(uuid.UUID(value))
    raise ValueError(f"a GUID must be a UUID string, uuid.UUID or 16 bytes, not {value!r}")


def _number(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, not {value!r}")
    return value


def _entries(result: object) -> tuple[Entry, ...]:
    """A parser's entry list: mappings ``{guid, offset, length}`` or ``(guid, offset,
    length)`` sequences.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(result, Iterable) or isinstance(result, str | bytes | Mapping):
        raise ValueError(f"expected a list of entries, not {type(result).__name__}")
    out = []
    for item in result:
        if isinstance(item, Mapping):
            missing = {"guid", "offset", "length"} - set(item)
            if missing:
                raise ValueError(f"an entry lacks {sorted(missing)}")
            guid, offset, length = item["guid"], item["offset"], item["length"]
        elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 3:
            guid, offset, length = item
        else:
            raise ValueError(f"an entry must be {{guid, offset, length}}, not {item!r}")
        out.append((_guid(guid), _number(offset, "offset"), _number(length, "length")))
    return tuple(out)


def cert_parser(func: Callable[[bytes], object]) -> CertParser:
    """A Python parser under test: ``func(data)`` returns the entries (mappings ``{"guid",
    "offset", "length"}`` or ``(guid, offset, length)`` tuples; a GUID as a UUID string,
    ``uuid.UUID`` or 16 bytes) or raises any exception to reject. It runs in this process,
    so nothing bounds its time or memory: use :func:`command_parser` for a parser that may
    hang."""
    if not callable(func):
        raise TypeError(f"cert_parser needs a callable, not {func!r}")

    def parse(data: bytes) -> Verdict:
        try:
            result = func(data)
        except Exception as e:  # the parser's own way to reject, whatever it raises
            return Verdict(False, detail=f"{type(e).__name__}: {e}"[:200])
        try:
            return Verdict(True, _entries(result))
        except ValueError as e:
            return Verdict(False, fault=f"bad result: {e}"[:200])

    return parse


def command_parser(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> CertParser:
    """A parser run as a subprocess per input: the table on stdin, JSON entries on stdout and
    exit 0 to accept, non-zero to reject. A call that runs past ``timeout`` seconds or prints
    more than ``max_output`` bytes is killed and is a fault, as is death by a signal.

    Raises:
        TypeError: ``argv`` is empty or not strings; bad limits.
    """
    words = list(argv)
    if not words or not all(isinstance(w, str) for w in words):
        raise TypeError("command_parser needs a non-empty list of strings")
    if not timeout > 0 or max_output < 1:
        raise TypeError("timeout and max_output must be positive")

    def parse(data: bytes) -> Verdict:
        return _run_command(words, data, timeout, max_output)

    return parse


def _run_command(argv: list[str], data: bytes, timeout: float, max_output: int) -> Verdict:
    """One call: ``data`` from a temporary file on stdin, stdout read until EOF within the
    time and size bounds (stderr discarded)."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(data)
        stdin.seek(0)
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    assert proc.stdout is not None
    out = bytearray()
    deadline = time.monotonic() + timeout
    fault: str | None = None
    with proc, selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        while fault is None:
            left = deadline - time.monotonic()
            if left <= 0:
                fault = f"timeout: no answer within {timeout:g} s"
            elif selector.select(left):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
                if len(out) > max_output:
                    fault = f"more than {max_output} bytes of output"
        if fault is None:
            try:
                status = proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                fault = f"timeout: no exit within {timeout:g} s"
        if fault is not None:
            proc.kill()
            proc.wait()
            return Verdict(False, fault=fault)
    if status < 0:
        return Verdict(False, fault=f"killed by signal {-status}")
    if status:
        return Verdict(False, detail=f"exit status {status}")
    try:
        return Verdict(True, _entries(json.loads(out)))
    except (ValueError, UnicodeDecodeError) as e:
        return Verdict(False, fault=f"exit 0 without an entry list: {e}"[:200])
