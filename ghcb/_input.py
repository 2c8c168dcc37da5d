"""Reading a structure's bytes the way people have them: a binary file or a hex dump.

One entry point, :func:`read_input`, takes a binary stream and returns the structure's bytes.
The form is told from the first bytes (``form="auto"``): text made only of printable ASCII and
whitespace is a hex dump, anything else is binary. Hex dumps, in the layouts the usual tools
write:

* plain hex, whitespace anywhere (``xxd -p``, ``od -An -t x1``, a pasted ``de ad be ef``);
* ``xxd`` (``00000000: 0000 0000 ...  ................``);
* ``hexdump -C`` (``00000000  00 00 ... 00  |................|``, ``*`` for repeated lines,
  the end address last);
* ``od -A x -t x1`` (``000000 00 00 ...``, ``*`` and the end address as hexdump's).

Address columns are checked: each line must start where the previous one ended (after a
``*``, the repeated line fills the gap). Hex text is decoded with :func:`binascii.unhexlify`.

Reads are bounded: at most ``limit + 1`` bytes of binary input (the structure's maximum plus
the byte that proves the input is too long), and for a hex dump at most
``_TEXT_PER_BYTE * (skip + limit + 1) + _TEXT_SLACK`` characters of text, read line by line
(lines of at most ``MAX_LINE`` characters), so ``/dev/zero`` or an endless pipe is refused at
once. A ``*`` gap is filled arithmetically: a dump claiming terabytes allocates nothing.

Every refusal is an :class:`InputError` (a :class:`~ghcb.errors.GhcbError`) whose ``rule`` says
why: ``input-too-long``, ``input-not-hex``, ``input-offset``, ``input-encoding``,
``input-unreadable``.
"""

from __future__ import annotations

import binascii
import io
import os
import re
import stat
import sys
from typing import TYPE_CHECKING, BinaryIO, Final, Literal

from ghcb.errors import GhcbError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MAX_LINE",
    "MAX_STREAM_SKIP",
    "MAX_TEXT_SKIP",
    "Form",
    "InputError",
    "read_input",
    "read_path",
]

SPEC: Final = "ghcb command line: input forms (README 'Input')"

Form = Literal["auto", "binary", "hex"]

#: The longest hex-dump line accepted (``xxd -c 256`` writes about 900 characters).
MAX_LINE: Final = 4096
#: The furthest offset a stream that cannot seek (a pipe, a device) is read through to.
MAX_STREAM_SKIP: Final = 1 << 32
#: Skipped bytes of a hex dump the text budget pays for (``*`` runs are free).
MAX_TEXT_SKIP: Final = 1 << 24
#: Characters of dump text allowed per byte wanted (``xxd -c 1`` writes 17 per byte).
_TEXT_PER_BYTE: Final = 64
_TEXT_SLACK: Final = 1 << 16
#: Bytes of binary input asked of the stream at a time (asking ``limit + 1`` at once would
#: allocate that much whatever the input's size).
_CHUNK: Final = 1 << 20
#: Characters of a hex dump read at a time.
_TEXT_CHUNK: Final = 1 << 16
#: Bytes looked at to tell text from binary.
_SNIFF: Final = 512
_WHITESPACE: Final = b" \t\n\r\v\f"
_PRINTABLE: Final = bytes(range(0x20, 0x7F)) + _WHITESPACE
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")

_XXD: Final = re.compile(rb"([0-9a-fA-F]+):[ \t]?(.*)")
_HEXDUMP_C: Final = re.compile(
    rb"([0-9a-fA-F]{4,})  ((?:[0-9a-fA-F]{2} {1,2})*[0-9a-fA-F]{2})(?: +\|.*\|)? *"
)
_OD: Final = re.compile(rb"([0-9a-fA-F]{6,})((?: +[0-9a-fA-F]{2})+)[ \t]*")
_ADDRESS_ONLY: Final = re.compile(rb"([0-9a-fA-F]+)[ \t]*")
_REPEAT: Final = re.compile(rb"\*[ \t]*")
_NOT_HEX: Final = re.compile(rb"[^0-9a-fA-F]")


class InputError(GhcbError):
    """The input cannot be read as the bytes of a structure (before any structure rule)."""


def _error(message: str, rule: str, offset: int | None = None) -> InputError:
    return InputError(message, rule=rule, spec=SPEC, offset=offset)


class _Sink:
    """Keeps the bytes ``[skip, skip + want)`` of everything added, counting the rest.

    Pieces are kept as they come and joined once (a single piece, the usual binary read, is
    returned as it is: no copy)."""

    __slots__ = ("kept", "pieces", "seen", "skip", "want")

    def __init__(self, skip: int, want: int) -> None:
        self.skip = skip
        self.want = want
        self.seen = 0
        self.kept = 0
        self.pieces: list[bytes] = []

    @property
    def full(self) -> bool:
        """Done: past the skipped bytes with every wanted byte kept (``want`` may be 0: then
        done once the offset is reached — found by fuzz_input)."""
        return self.kept >= self.want and self.seen >= self.skip

    def _keep(self, piece: bytes) -> None:
        if piece:
            self.pieces.append(piece)
            self.kept += len(piece)

    def add(self, chunk: bytes) -> None:
        start = max(0, self.skip - self.seen)
        self.seen += len(chunk)
        if start < len(chunk) and not self.full:
            self._keep(chunk[start : start + self.want - self.kept])

    def add_repeat(self, pattern: bytes, count: int) -> None:
        """``pattern * count`` without building more of it than is kept."""
        total = len(pattern) * count
        start = max(0, self.skip - self.seen)
        if start < total and not self.full:
            room = self.want - self.kept
            first = start // len(pattern)
            reps = min(count - first, room // len(pattern) + 2)
            lead = start - first * len(pattern)
            self._keep((pattern * reps)[lead : lead + room])
        self.seen += total

    def result(self) -> bytes:
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


def read_input(
    stream: BinaryIO,
    *,
    limit: int,
    offset: int | None = None,
    form: Form = "auto",
    name: str = "input",
) -> bytes:
    """The bytes of one structure from ``stream``: binary, or a hex dump of it.

    Args:
        stream: a binary stream (a file opened ``"rb"``, ``sys.stdin.buffer``, ``BytesIO``).
        limit: the structure's maximum size in bytes.
        offset: None: the whole input is the structure, and more than ``limit`` bytes is an
            error. An int: the structure starts ``offset`` bytes into the (decoded) input and
            is at most ``limit`` bytes; whatever follows is not read.
        form: ``"auto"`` (tell a hex dump from binary by the first bytes), ``"binary"`` or
            ``"hex"``.
        name: how to name the input in messages (a path, ``"stdin"``).

    Returns:
        At most ``limit`` bytes (fewer when the input ends first: the structure's own rules
        judge the length).

    Raises:
        InputError: too long (``input-too-long``), not a hex dump the reader knows
            (``input-not-hex``), ``offset`` past the end (``input-offset``), UTF-16 text
            (``input-encoding``), a read failed (``input-unreadable``).
    """
    if limit < 0 or (offset is not None and offset < 0):
        raise ValueError("limit and offset must be >= 0")
    sink = _Sink(0 if offset is None else offset, limit + 1 if offset is None else limit)
    try:
        first = stream.read(_SNIFF)
        if form == "auto":
            form = _sniff(first, name)
        if form == "hex":
            _read_hex(first, stream, sink, name)
        else:
            _read_binary(first, stream, sink, name)
    except OSError as e:
        raise _error(f"{name}: read failed: {e.strerror or e}", "input-unreadable") from e
    if sink.seen < sink.skip:
        raise _error(
            f"{name}: offset {sink.skip} ({sink.skip:#x}) is past the end of the input "
            f"({sink.seen} bytes)",
            "input-offset",
        )
    if offset is None and sink.kept > limit:
        raise _error(
            f"{name}: too long: more than {limit} bytes, the structure's maximum "
            "(--offset N takes one structure from a larger dump)",
            "input-too-long",
        )
    return sink.result()


def read_path(
    path: str,
    *,
    limit: int,
    offset: int | None = None,
    form: Form = "auto",
) -> bytes:
    """:func:`read_input` from a file, or from standard input when ``path`` is ``-``.

    Raises:
        InputError: as :func:`read_input`; ``input-unreadable`` when the file cannot be
            opened (missing, a directory, no permission).
    """
    if path == "-":
        return read_input(sys.stdin.buffer, limit=limit, offset=offset, form=form, name="stdin")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; open errors are reported apart
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror or e}", "input-unreadable") from e
    with fh:
        return read_input(fh, limit=limit, offset=offset, form=form, name=path)


def _sniff(first: bytes, name: str) -> Form:
    if first.startswith(_UTF16_BOMS):
        raise _error(
            f"{name}: UTF-16 text (byte-order mark); save the hex dump as ASCII, "
            "or give --input-format binary",
            "input-encoding",
        )
    text = first.removeprefix(_UTF8_BOM)
    if text and not text.translate(None, _PRINTABLE) and not text.isspace():
        return "hex"
    return "binary"


def _read_binary(first: bytes, stream: BinaryIO, sink: _Sink, name: str) -> None:
    sink.add(first)
    skipping = sink.seen < sink.skip
    if skipping and not _seek_ahead(stream, sink) and sink.skip - sink.seen > MAX_STREAM_SKIP:
        raise _error(
            f"{name}: offset {sink.skip:#x} is more than a stream is read through to reach "
            f"({MAX_STREAM_SKIP:#x} bytes): give a file",
            "input-offset",
        )
    while not sink.full:
        if sink.seen < sink.skip:
            chunk = stream.read(min(_CHUNK, sink.skip - sink.seen))
        else:
            chunk = stream.read(min(_CHUNK, sink.want - sink.kept))
        if not chunk:
            return
        sink.add(chunk)


def _seekable_file(stream: BinaryIO) -> bool:
    """Whether positions in ``stream`` are byte offsets: a regular file, or an in-memory
    stream (a pipe, a terminal or a device such as /dev/zero is read through instead)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: not an fd
        return stream.seekable()
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _seek_ahead(stream: BinaryIO, sink: _Sink) -> bool:
    """Skip to the offset by seeking in a file (no read of the bytes before the structure);
    counts what was skipped, never past the end. False: the stream must be read through."""
    try:
        if not _seekable_file(stream):
            return False
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        target = min(here + sink.skip - sink.seen, end)
        stream.seek(target)
    except OSError:
        return False  # not seekable after all: the caller reads and drops the bytes
    sink.seen += target - here
    return True


def _read_hex(first: bytes, stream: BinaryIO, sink: _Sink, name: str) -> None:
    # A dump's skipped bytes cost text only where it is not '*'-compressed: the budget counts
    # at most MAX_TEXT_SKIP of them (a longer uncompressed run is "too long").
    budget = _TEXT_PER_BYTE * (min(sink.skip, MAX_TEXT_SKIP) + sink.want) + _TEXT_SLACK
    first = first.removeprefix(_UTF8_BOM)
    head = first.lstrip(_WHITESPACE).split(b"\n", 1)[0].rstrip()
    if _XXD.fullmatch(head) or _HEXDUMP_C.fullmatch(head) or _OD.fullmatch(head):
        _read_addressed(_lines(first, stream, budget, name), sink, name)
    else:
        _read_plain(first, stream, sink, budget, name)


def _too_much_text(name: str, budget: int) -> InputError:
    return _error(
        f"{name}: too long: the hex dump goes on past {budget} characters, more than the "
        "structure's maximum needs",
        "input-too-long",
    )


def _read_plain(first: bytes, stream: BinaryIO, sink: _Sink, budget: int, name: str) -> None:
    pending = b""
    chunk = first
    used = 0
    while chunk and not sink.full:
        used += len(chunk)
        if used > budget:
            raise _too_much_text(name, budget)
        digits = pending + chunk.translate(None, _WHITESPACE)
        cut = len(digits) & ~1
        pending = digits[cut:]
        try:
            sink.add(binascii.unhexlify(digits[:cut]))
        except binascii.Error:
            bad = _NOT_HEX.search(digits)
            char = digits[bad.start() : bad.start() + 1] if bad else b"?"
            raise _error(
                f"{name}: not binary input nor a hex dump the reader knows: "
                f"{char.decode('ascii', 'replace')!r} is not a hex digit "
                "(formats: plain hex, xxd, hexdump -C, od -A x -t x1)",
                "input-not-hex",
            ) from None
        chunk = stream.read(_TEXT_CHUNK)
    if pending and not sink.full:
        raise _error(f"{name}: odd number of hex digits", "input-not-hex")


def _lines(first: bytes, stream: BinaryIO, budget: int, name: str) -> Iterator[bytes]:
    """The dump's lines (without the newline), each at most ``MAX_LINE`` characters, the
    whole at most ``budget``."""
    buf = first
    used = len(first)
    while True:
        cut = buf.find(b"\n")
        while cut < 0:
            if len(buf) > MAX_LINE:
                raise _error(f"{name}: a hex-dump line is longer than {MAX_LINE}", "input-not-hex")
            chunk = stream.read(_TEXT_CHUNK)
            if not chunk:
                if buf:
                    yield buf
                return
            used += len(chunk)
            if used > budget:
                raise _too_much_text(name, budget)
            buf += chunk
            cut = buf.find(b"\n")
        if cut > MAX_LINE:
            raise _error(f"{name}: a hex-dump line is longer than {MAX_LINE}", "input-not-hex")
        yield buf[:cut]
        buf = buf[cut + 1 :]


def _read_addressed(lines: Iterator[bytes], sink: _Sink, name: str) -> None:
    """xxd / hexdump -C / od -A x: every line's address is where the previous one ended."""
    base: int | None = None
    previous = b""
    repeat = False
    ended = False
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r").rstrip()
        if not line:
            continue
        if ended:
            raise _bad_line(name, number, "text after the end address")
        if _REPEAT.fullmatch(line):
            if repeat or not previous:
                raise _bad_line(name, number, "'*' must follow a data line")
            repeat = True
            continue
        address, data = _parse_line(line, name, number)
        if base is None:
            base = address
        here = base + sink.seen
        if repeat:
            gap = address - here
            if gap < 0 or gap % len(previous):
                raise _bad_line(name, number, f"address {address:#x} does not end the '*' run")
            sink.add_repeat(previous, gap // len(previous))
            here = address
            repeat = False
        if address != here:
            raise _bad_line(name, number, f"address {address:#x}, expected {here:#x}")
        if data is None:
            ended = True
            continue
        sink.add(data)
        previous = data
        if sink.full:
            return
    if repeat:
        raise _error(f"{name}: the dump ends in '*' without its end address", "input-not-hex")


def _parse_line(line: bytes, name: str, number: int) -> tuple[int, bytes | None]:
    """``(address, bytes)`` of one dump line; ``bytes`` is None for an end-address line."""
    if m := _XXD.fullmatch(line):
        tokens = m.group(2).split(b"  ", 1)[0].split()
    elif (m := _HEXDUMP_C.fullmatch(line)) or (m := _OD.fullmatch(line)):
        tokens = m.group(2).split()
    elif m := _ADDRESS_ONLY.fullmatch(line):
        return int(m.group(1), 16), None
    else:
        raise _bad_line(name, number, "not an xxd, hexdump -C or od -A x -t x1 line")
    try:
        data = binascii.unhexlify(b"".join(tokens))
    except binascii.Error:
        raise _bad_line(name, number, "bad hex digits") from None
    return int(m.group(1), 16), data


def _bad_line(name: str, number: int, why: str) -> InputError:
    return _error(f"{name}: line {number} of the hex dump: {why}", "input-not-hex")
