"""Resource bounds on hostile inputs up to 16 MiB: memory and work grow at most linearly.

Every public reader of untrusted bytes is run on a hostile input at a small and at a 16 times
larger size, and the test asserts on what it can count exactly, never on time:

* memory: the ``tracemalloc`` peak of the call (its result included) stays within a small
  multiple of the input, and grows no faster than the input;
* work: the Python function calls and C calls the call makes (``sys.setprofile`` events) grow
  no faster than the input; for readers that must refuse a wrong-length input at once
  (page, report, guest message, the input reader), they do not grow at all.

The certificate-table inputs are the dstack amplification (many entries claiming one large
range: 1 MiB and 16 MiB) and the entry flood (a 24-byte entry per 24 bytes, the walk's worst
case: 32 KiB and 512 KiB for memory, 16 KiB and 256 KiB for work, as a parse holds a Python
object per entry and an unlimited check a finding per entry; the 16 MiB sizes are kept for the
inputs that stay cheap).
"""

from __future__ import annotations

import contextlib
import io
import struct
import sys
import tracemalloc
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from ghcb import GhcbError, check_cert_table, check_page, parse_cert_table, parse_page
from ghcb._input import read_input
from ghcb.guest_msg import open_message, parse_payload
from ghcb.report import check_report, parse_report

if TYPE_CHECKING:
    from types import FrameType

MIB = 1 << 20
ENTRY = struct.Struct("<16sII")  # typed by hand: the inputs must not come from ghcb
KEY = bytes(32)
#: Growth allowed beyond linear for a 16x larger input (allocator and list growth slack).
SLACK = 1.25
#: Memory allowed for a reader that refuses an input by its length: no copy of the input
#: (the input reader keeps its 64 KiB read chunks).
REFUSAL_PEAK = 256 * 1024


Reader = Callable[[bytes], object]


def _call(read: Reader, data: bytes) -> None:
    with contextlib.suppress(GhcbError):  # a refusal is an answer: what it cost is measured
        read(data)


def peak(read: Reader, data: bytes) -> int:
    """Bytes allocated at the peak of ``read(data)`` beyond what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _call(read, data)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def work(read: Reader, data: bytes) -> int:
    """Function calls, C calls and returns made by ``read(data)`` (profile events)."""
    events = 0

    def tick(frame: FrameType, event: str, arg: object) -> None:
        nonlocal events
        events += 1

    previous = sys.getprofile()
    sys.setprofile(tick)
    try:
        _call(read, data)
    finally:
        sys.setprofile(previous)
    return events


def amplification(size: int, entries: int = 480) -> bytes:
    """dstack's blob: ``entries`` distinct GUIDs each claiming all the data after the header."""
    start = (entries + 1) * ENTRY.size
    header = b"".join(
        ENTRY.pack((i + 1).to_bytes(16, "little"), start, size - start) for i in range(entries)
    )
    return header + bytes(ENTRY.size) + b"\x5a" * (size - start)


def flood(size: int) -> bytes:
    """A 24-byte entry per 24 bytes, distinct GUIDs, no data: the most entries per byte."""
    n = size // ENTRY.size - 1
    rows = b"".join(ENTRY.pack((i + 1).to_bytes(16, "little"), 0, 0) for i in range(n))
    return rows + bytes(ENTRY.size)


CERT_READERS: dict[str, Reader] = {
    "parse-strict": parse_cert_table,
    "parse-lenient": lambda d: parse_cert_table(d, strict=False),
    "check": check_cert_table,
    "check-unlimited": lambda d: check_cert_table(d, limit_per_code=None),
}
#: Peak memory allowed per input byte, by input and reader: the amplification blob is never
#: copied; a flood entry (24 bytes) may cost a CertEntry (parse) or a Violation with its
#: message (a check listing every finding).
FACTORS: dict[str, dict[str, float]] = {
    "amplification": dict.fromkeys(CERT_READERS, 1.5),
    "flood": {"parse-strict": 8, "parse-lenient": 8, "check": 8, "check-unlimited": 30},
}


@pytest.mark.parametrize(
    ("make", "small"),
    [(amplification, 1 * MIB), (flood, MIB // 32)],
    ids=["amplification", "flood"],
)
@pytest.mark.parametrize("reader", sorted(CERT_READERS))
def test_cert_table_memory_is_linear(make: Callable[[int], bytes], small: int, reader: str) -> None:
    read = CERT_READERS[reader]
    factor = FACTORS[make.__name__][reader]
    peaks = []
    for size in (small, 16 * small):
        data = make(size)
        peaks.append(peak(read, data))
        assert peaks[-1] <= factor * len(data), (size, peaks[-1] / len(data))
    assert peaks[1] <= 16 * SLACK * peaks[0], peaks


@pytest.mark.parametrize(
    ("make", "small"),
    [(amplification, 1 * MIB), (flood, MIB // 64)],
    ids=["amplification", "flood"],
)
@pytest.mark.parametrize("reader", sorted(CERT_READERS))
def test_cert_table_work_is_linear(make: Callable[[int], bytes], small: int, reader: str) -> None:
    read = CERT_READERS[reader]
    small_work, large_work = (work(read, make(size)) for size in (small, 16 * small))
    assert large_work <= 16 * SLACK * small_work, (small_work, large_work)


def test_amplification_work_does_not_grow_with_the_data() -> None:
    # 480 entries either way: only the claimed range grows, and no byte of it is copied.
    for reader in CERT_READERS.values():
        small, large = (work(reader, amplification(size)) for size in (MIB, 16 * MIB))
        assert large == small


HEX_TEXT = {MIB: b"41" * MIB, 16 * MIB: b"41" * (16 * MIB)}  # a hex dump of the same input
REFUSERS: dict[str, Reader] = {
    "parse_page": parse_page,
    "check_page": check_page,
    "parse_report": parse_report,
    "parse_report-strict": lambda d: parse_report(d, strict=True),
    "check_report": check_report,
    "open_message": lambda d: open_message(KEY, d),
    "parse_payload": lambda d: parse_payload(5, d),
    "read_input-binary": lambda d: read_input(io.BytesIO(d), limit=4096),
    "read_input-hex": lambda d: read_input(io.BytesIO(HEX_TEXT[len(d)]), limit=4096),
}


@pytest.mark.parametrize("reader", sorted(REFUSERS))
def test_long_inputs_are_refused_without_copy_or_work(reader: str) -> None:
    read = REFUSERS[reader]
    hostile = {size: b"\x41" * size for size in (MIB, 16 * MIB)}
    peaks = [peak(read, data) for data in hostile.values()]
    assert max(peaks) <= REFUSAL_PEAK, peaks
    small, large = (work(read, data) for data in hostile.values())
    assert large == small, (small, large)


def test_long_inputs_are_refused() -> None:
    data = b"\x41" * (16 * MIB)
    for name, read in REFUSERS.items():
        if name == "check_page":
            assert check_page(data)[0].code == "page-length"
        elif name == "check_report":
            assert [v.code for v in check_report(data)] == ["report-length"]
        else:
            with pytest.raises(GhcbError):
                read(data)
