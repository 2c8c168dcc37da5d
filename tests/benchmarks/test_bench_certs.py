"""Certificate tables: parse against a raw struct.iter_unpack loop; check on a hostile blob."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest

from ghcb.certs import CertEntry, build_cert_table, check_cert_table, parse_cert_table

pytestmark = pytest.mark.benchmark

ENTRY = struct.Struct("<16sII")  # typed by hand: the baseline must not come from ghcb
ZERO = bytes(24)
SIZES = (3, 64, 1000)
TABLES = {
    n: build_cert_table([CertEntry(uuid.UUID(int=i + 1), bytes([i % 251]) * 32) for i in range(n)])
    for n in SIZES
}


def baseline_uuid(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """The anchors' loop: iter_unpack to the terminator, UUID per entry, slice the data."""
    usable = len(data) - len(data) % 24
    out: list[tuple[uuid.UUID, bytes]] = []
    for guid, offset, length in ENTRY.iter_unpack(memoryview(data)[:usable]):
        if not offset and not length and guid == ZERO[:16]:
            return out
        out.append((uuid.UUID(bytes=guid), data[offset : offset + length]))
    raise ValueError("unterminated")


def baseline_raw(data: bytes) -> list[tuple[bytes, bytes]]:
    """The same loop keeping raw GUID bytes (no UUID), no validation at all."""
    usable = len(data) - len(data) % 24
    out: list[tuple[bytes, bytes]] = []
    for guid, offset, length in ENTRY.iter_unpack(memoryview(data)[:usable]):
        if not offset and not length and guid == ZERO[:16]:
            return out
        out.append((guid, data[offset : offset + length]))
    raise ValueError("unterminated")


@pytest.mark.parametrize("n", SIZES)
def test_baseline_struct_iter_unpack_uuid(benchmark: Any, n: int) -> None:
    benchmark.group = f"certs-parse-{n:04d}"
    assert len(benchmark(baseline_uuid, TABLES[n])) == n


@pytest.mark.parametrize("n", SIZES)
def test_baseline_struct_iter_unpack_raw(benchmark: Any, n: int) -> None:
    benchmark.group = f"certs-parse-{n:04d}"
    assert len(benchmark(baseline_raw, TABLES[n])) == n


@pytest.mark.parametrize("n", SIZES)
def test_parse_cert_table(benchmark: Any, n: int) -> None:
    benchmark.group = f"certs-parse-{n:04d}"
    assert len(benchmark(parse_cert_table, TABLES[n])) == n


def _amplification(size: int) -> bytes:
    unit = b"\x11" * 16 + (24).to_bytes(4, "little") + (size - 24).to_bytes(4, "little")
    blob = unit * (size // 24)
    return blob + bytes(size - len(blob))


AMPLIFICATION = _amplification(1 << 20)


def test_check_amplification_1mib(benchmark: Any) -> None:
    benchmark.group = "certs-check-amplification"
    found = benchmark(check_cert_table, AMPLIFICATION)
    assert found[0].code == "missing-terminator"
