#!/usr/bin/env python3
"""Fuzz the command line's input reader: binary files and hex dumps (``ghcb._input``).

Invariant: whatever the stream holds, ``read_input`` returns at most ``limit`` bytes or raises
``ghcb.GhcbError`` (``InputError``) — nothing else, no hang — and reads no more than its
documented bound (binary: the 512-byte sniff or the structure's end, whichever is further;
hex dump: 64 characters per byte wanted plus 64 KiB of slack, plus the chunk that crossed it).
Binary input reads exactly: the whole input when it fits ``limit`` (else ``input-too-long``),
the ``limit``-byte window at ``offset`` (else ``input-offset`` past the end). Whatever a hex
dump decodes to reads back the same from its plain-hex and its ``xxd`` dump: the forms agree.

Input layout: byte 0 = flags (bits 0-1: form auto / binary / hex / auto, bit 2: an offset is
given, bit 3: the stream cannot seek), byte 1 = limit / 16, byte 2 = offset / 16, then the
stream's bytes.

Run: ./fuzz/fuzz_input.py NEW_DIR fuzz/corpus/input -max_len=4200
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb._input import _CHUNK, _SNIFF, _TEXT_PER_BYTE, _TEXT_SLACK, InputError, read_input

if TYPE_CHECKING:
    from ghcb._input import Form

FORMS: tuple[Form, ...] = ("auto", "binary", "hex", "auto")
SCALE = 16
XXD_LINE = 16


class Stream(io.BytesIO):
    """A byte stream that counts what is read from it and may refuse to seek."""

    def __init__(self, data: bytes, *, seekable: bool = True) -> None:
        super().__init__(data)
        self.taken = 0
        self._seekable = seekable

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return super().seek(offset, whence)


def xxd(data: bytes) -> bytes:
    """``data`` as ``xxd`` writes it (16 bytes a line, 2-byte groups, the text column)."""
    lines = []
    for at in range(0, len(data), XXD_LINE):
        row = data[at : at + XXD_LINE]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"{at:08x}: {groups:<39}  {text}\n")
    return "".join(lines).encode()


def _read(stream: Stream, limit: int, offset: int | None, form: Form) -> bytes | None:
    try:
        out = read_input(stream, limit=limit, offset=offset, form=form, name="fuzz")
    except InputError:
        return None
    if len(out) > limit:
        raise AssertionError(f"{len(out)} bytes read for a {limit}-byte structure")
    return out


def check_one(data: bytes) -> None:
    """One stream through the reader with the flags, limit and offset of ``data``."""
    if len(data) < 3:
        return
    flags, limit, body = data[0], data[1] * SCALE, data[3:]
    offset = data[2] * SCALE if flags & 4 else None
    form = FORMS[flags & 3]
    stream = Stream(body, seekable=not flags & 8)
    out = _read(stream, limit, offset, form)
    want = (offset or 0) + limit + 1
    if stream.taken > max(_SNIFF, want) + _TEXT_PER_BYTE * want + _TEXT_SLACK + _CHUNK:
        raise AssertionError(f"read {stream.taken} bytes for a {limit}-byte structure")
    if form == "binary":
        if stream.taken > max(_SNIFF, want):
            raise AssertionError(f"read {stream.taken} binary bytes for {want}")
        start = offset or 0
        if offset is None:
            expected = body if len(body) <= limit else None
        else:
            expected = body[start : start + limit] if start <= len(body) else None
        if out != expected:
            raise AssertionError(f"binary read {out!r}, expected {expected!r}")
    elif out is not None:
        for dump in (out.hex().encode(), xxd(out)):
            again = _read(Stream(dump), len(out), None, "hex")
            if again != out:
                raise AssertionError(f"{dump!r} reads back as {again!r}, not {out!r}")


if __name__ == "__main__":
    fuzz(check_one)
