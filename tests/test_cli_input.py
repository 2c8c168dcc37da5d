"""ghcb._input: binary and hex-dump input, bounded reads, one typed error per refusal."""

from __future__ import annotations

import io
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from ghcb._input import MAX_LINE, MAX_STREAM_SKIP, InputError, read_input, read_path

if TYPE_CHECKING:
    import pathlib

    from ghcb._input import Form

# 70 bytes: a line of letters, three zero lines (collapsed by hexdump and od), 6 bytes more.
DATA = bytes(range(0x41, 0x51)) + bytes(48) + b"GHCB\x01\x02"

# Captured from the tools (xxd 2022, util-linux hexdump, GNU od) on DATA.
DUMPS = {
    "xxd": """\
00000000: 4142 4344 4546 4748 494a 4b4c 4d4e 4f50  ABCDEFGHIJKLMNOP
00000010: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000020: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000030: 0000 0000 0000 0000 0000 0000 0000 0000  ................
00000040: 4748 4342 0102                           GHCB..
""",
    "hexdump-C": """\
00000000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|
00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
*
00000040  47 48 43 42 01 02                                 |GHCB..|
00000046
""",
    "od": """\
000000 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50
000010 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
*
000040 47 48 43 42 01 02
000046
""",
    "xxd-p": """\
4142434445464748494a4b4c4d4e4f500000000000000000000000000000
000000000000000000000000000000000000000000000000000000000000
00000000474843420102
""",
    "spaced": "41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50\r\n"
    + "00 " * 48
    + "\r\n47 48 43 42 01 02\r\n",
    "utf8-bom": "\ufeff" + DATA.hex(),
}


def read(data: bytes, **kwargs: object) -> bytes:
    return read_input(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", DUMPS.values(), ids=DUMPS.keys())
def test_dump_forms(text: str) -> None:
    """Each tool's dump reads back to exactly the bytes; --offset takes a window."""
    raw = text.encode()
    assert read(raw, limit=70) == DATA
    assert read(raw, limit=8, offset=0x3C) == DATA[0x3C:0x44]
    assert read(raw, limit=100, offset=70) == b""
    with pytest.raises(InputError) as e:
        read(raw, limit=69)
    assert e.value.rule == "input-too-long"


def test_binary_and_offset() -> None:
    """Binary input: whole, or a window at an offset (the rest is not read)."""
    assert read(DATA, limit=70) == DATA
    assert read(DATA, limit=4, offset=64) == b"GHCB"
    assert read(DATA, limit=4, offset=68) == b"\x01\x02"
    assert read(b"", limit=10) == b""
    with pytest.raises(InputError) as e:
        read(DATA, limit=4, offset=71)
    assert e.value.rule == "input-offset"
    assert "offset 71 (0x47) is past the end of the input (70 bytes)" in e.value.message


def test_forced_forms() -> None:
    """form= overrides the guess: hex text read as binary is its characters."""
    text = DATA.hex().encode()
    assert read(text, limit=140, form="binary") == text
    assert read(text, limit=70, form="hex") == DATA


class _Endless(io.RawIOBase):
    """An endless stream that counts what was read from it."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = len(buf)
        buf[:n] = (self.pattern * (n // len(self.pattern) + 1))[:n]
        self.served += n
        return n


@pytest.mark.parametrize(
    ("pattern", "most"),
    [(b"\0", 4097 + 512), (b"00", 64 * 4097 + (1 << 16) + (1 << 16)), (b"\n", 64 * 4097 + 2 << 16)],
    ids=["zero", "hex-digits", "newlines"],
)
def test_endless_input_is_refused_at_once(pattern: bytes, most: int) -> None:
    """/dev/zero and endless pipes: "too long" after a bounded read."""
    stream = _Endless(pattern)
    with pytest.raises(InputError) as e:
        read_input(stream, limit=4096)  # type: ignore[arg-type]
    assert e.value.rule == "input-too-long"
    assert stream.served <= most


def test_repeat_claiming_terabytes_allocates_nothing() -> None:
    """A '*' gap is filled arithmetically: a 1 TiB claim is "too long", at once."""
    dump = b"00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n"
    dump += b"10000000000\n"
    with pytest.raises(InputError) as e:
        read(dump, limit=4096)
    assert e.value.rule == "input-too-long"
    assert read(dump, limit=16, offset=(1 << 40) - 16) == bytes(16)


@pytest.mark.parametrize(
    ("text", "rule", "words"),
    [
        (b"zz", "input-not-hex", "'z' is not a hex digit"),
        (b"abc", "input-not-hex", "odd number of hex digits"),
        (b"00000000: 0000\n00000004: 0000\n", "input-not-hex", "address 0x4, expected 0x2"),
        (b"000000 00 01\n*\n*\n", "input-not-hex", "'*' must follow a data line"),
        (b"000000 00 01\n*\n", "input-not-hex", "ends in '*'"),
        (b"000000 00 01\n000002\n000002 00\n", "input-not-hex", "text after the end address"),
        (b"000000 00 01\n*\n000005\n", "input-not-hex", "does not end the '*' run"),
        (b"000000 00 01\nhello there\n", "input-not-hex", "line 2 of the hex dump"),
        (b"00000000: 0" + b"0" * MAX_LINE, "input-not-hex", "longer than 4096"),
        ("\ufeff00".encode("utf-16"), "input-encoding", "UTF-16"),
    ],
)
def test_refusals(text: bytes, rule: str, words: str) -> None:
    """Each refusal is an InputError with its rule and a message that says why."""
    with pytest.raises(InputError) as e:
        read(text, limit=4096)
    assert e.value.rule == rule
    assert words in e.value.message


def test_paths(tmp_path: pathlib.Path) -> None:
    """read_path: files, and open failures as input-unreadable."""
    path = tmp_path / "dump.txt"
    path.write_text(DUMPS["hexdump-C"])
    assert read_path(str(path), limit=70) == DATA
    for bad, words in [(tmp_path, "Is a directory"), (tmp_path / "no", "No such file")]:
        with pytest.raises(InputError) as e:
            read_path(str(bad), limit=70)
        assert e.value.rule == "input-unreadable"
        assert words in e.value.message
    with pytest.raises(InputError) as e:
        read_path("/proc/self/mem", limit=70)  # open succeeds, read fails (EIO)
    assert e.value.rule == "input-unreadable"


def test_seekable_offset_skips_without_reading(tmp_path: pathlib.Path) -> None:
    """--offset into a large file seeks: only the window is read."""
    path = tmp_path / "big.bin"
    with path.open("wb") as fh:
        fh.seek(1 << 30)
        fh.write(b"GHCB")
    assert read_path(str(path), limit=4, offset=1 << 30) == b"GHCB"
    with pytest.raises(InputError) as e:
        read_path(str(path), limit=4, offset=(1 << 30) + 5)
    assert e.value.rule == "input-offset"


def test_read_allocates_what_it_reads(tmp_path: pathlib.Path) -> None:
    """A small file under a large limit costs its size, not the limit."""
    path = tmp_path / "small.bin"
    path.write_bytes(bytes(1000))
    tracemalloc.start()
    try:
        assert read_path(str(path), limit=64 << 20) == bytes(1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


class _Pipe(io.BytesIO):
    """An in-memory stream that cannot seek (a pipe)."""

    def seekable(self) -> bool:
        return False


def test_offset_through_a_stream() -> None:
    """A pipe is read through to the offset; past MAX_STREAM_SKIP it is refused at once
    rather than read for hours (a file seeks instead)."""
    assert read_input(_Pipe(DATA), limit=4, offset=64) == b"GHCB"
    with pytest.raises(InputError) as e:
        read_input(_Pipe(DATA), limit=4, offset=MAX_STREAM_SKIP + 1000)
    assert e.value.rule == "input-offset"
    assert "give a file" in e.value.message
    with open("/dev/zero", "rb") as zero:  # a device: read through, not sought
        assert read_input(zero, limit=4, offset=1 << 20) == bytes(4)


_XXD_64 = "".join(
    f"{at:08x}: {' '.join(['0000'] * 8)}  ................\n" for at in range(0, 64, 16)
).encode()


@pytest.mark.parametrize(
    ("data", "form", "end"),
    [
        (bytes(528), "binary", 528),  # past the 512-byte sniff (fuzz_input's crash a8a803de)
        (b"00" * 600, "hex", 600),  # past the first 512 characters of plain hex
        (_XXD_64, "hex", 64),  # past the first xxd line
    ],
    ids=["binary", "plain-hex", "xxd"],
)
def test_zero_length_window_through_a_stream(data: bytes, form: Form, end: int) -> None:
    """``limit=0`` at an offset: the stream is still read through to the offset (the reader
    used to stop once it had the 0 bytes wanted and call the offset past the end)."""
    assert read_input(_Pipe(data), limit=0, offset=end, form=form) == b""
    assert read_input(_Pipe(data), limit=0, offset=end - 1, form=form) == b""
    with pytest.raises(InputError) as e:
        read_input(_Pipe(data), limit=0, offset=end + 1, form=form)
    assert e.value.rule == "input-offset"
    assert f"past the end of the input ({end} bytes)" in e.value.message


def test_hex_offset_budget_counts_compressed_runs_free() -> None:
    """A '*' run far into a dump costs no text: a window 1 TiB in reads at once."""
    dump = b"000000 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10\n*\n10000000000\n"
    assert read(dump, limit=16, offset=(1 << 40) - 16) == bytes(range(1, 17))
