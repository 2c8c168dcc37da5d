"""Fuzz targets: executions per second of each harness's ``check_one`` over its corpus.

One round is one pass over the harness's committed corpus (``fuzz/corpus/<name>/``), so the
throughput section prints executions per second (corpus files / median round). Beside each
harness, its baseline is a plain loop over the same inputs through the surface's bare reader
(no cross-checks, no second backend, no rebuild): the ratio is what the harness's invariants
cost. The goal of issue 9: the certificate harness at 5,000 executions per second or more.
Under libFuzzer the same targets run slower (atheris instruments every ghcb line).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import GhcbError, check_page, decode_msr, parse_cert_table, parse_page
from ghcb._input import read_input
from ghcb.guest_msg import HDR_SIZE, MsgHeader, parse_payload
from ghcb.hypervisor import KVM_RUN_SIZE
from ghcb.report import parse_report
from ghcb.schemas.page import PAGE_SIZE
from tests.helpers import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.benchmark

FUZZ = ROOT / "fuzz"
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))
CORPORA = {h: [p.read_bytes() for p in sorted((FUZZ / "corpus" / h).iterdir())] for h in HARNESSES}


def _target(harness: str) -> Callable[[bytes], None]:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    check_one: Callable[[bytes], None] = importlib.import_module(f"fuzz_{harness}").check_one
    return check_one


def _guest_msg(data: bytes) -> object:
    surface, rest = data[0] % 3, data[1:]
    if surface == 0:
        return parse_report(rest)
    if surface == 1:
        return parse_payload(rest[0], rest[1:])
    return MsgHeader.from_bytes(rest[:HDR_SIZE])


#: The bare reader of each surface, in the harness's input layout.
READERS: dict[str, Callable[[bytes], object]] = {
    "certs": lambda d: parse_cert_table(d, strict=False),
    "page": check_page,
    "handler": lambda d: parse_page(d[2 + KVM_RUN_SIZE :].ljust(PAGE_SIZE, b"\0")[:PAGE_SIZE]),
    "msr": lambda d: [
        decode_msr(int.from_bytes(d[i : i + 8], "little")) for i in range(0, len(d) - 7, 8)
    ],
    "guest_msg": _guest_msg,
    "input": lambda d: read_input(io.BytesIO(d[3:]), limit=d[1] * 16),
}


def _plain_loop(read: Callable[[bytes], object], inputs: list[bytes]) -> None:
    for data in inputs:
        with contextlib.suppress(GhcbError, IndexError):
            read(data)


def _harness_loop(check_one: Callable[[bytes], None], inputs: list[bytes]) -> None:
    for data in inputs:
        check_one(data)


def test_every_harness_has_a_reader() -> None:
    assert sorted(READERS) == HARNESSES


@pytest.mark.parametrize("harness", HARNESSES)
def test_baseline_plain_loop(benchmark: Any, harness: str) -> None:
    benchmark.group = f"fuzz-{harness}"
    inputs = CORPORA[harness]
    benchmark.extra_info["executions_per_round"] = len(inputs)
    benchmark(_plain_loop, READERS[harness], inputs)


@pytest.mark.parametrize("harness", HARNESSES)
def test_check_one(benchmark: Any, harness: str) -> None:
    benchmark.group = f"fuzz-{harness}"
    inputs = CORPORA[harness]
    benchmark.extra_info["executions_per_round"] = len(inputs)
    benchmark(_harness_loop, _target(harness), inputs)
