"""parse_page / build_page against raw struct on the same page (run with `make bench`)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from ghcb import build_page, parse_page
from ghcb.page import FIELD_NAMES
from tests.helpers import vector_bytes

pytestmark = pytest.mark.benchmark

PAGE = vector_bytes("pages/snp_ext_guest_request.bin")
# Two raw baselines, typed by hand from python-anchors.md Appendix A (not derived from ghcb):
# "lossy" skips the reserved gaps as padding (the anchors' figure, 569 ns there); "lossless"
# reads them as bytes, which is the work ghcb does so that any page round-trips.
LOSSY = struct.Struct(
    "<203xB116xQ24xQ16xQ88xQ24xQ264xQQQ8xQQQQQQQQQQQ16xQQQQ56xQ16sQ1016x2032s10xHI"
)
LOSSLESS = struct.Struct(
    "<203sB116sQ24sQ16sQ88sQ24sQ264sQQQ8sQQQQQQQQQQQ16sQQQQ56sQ16sQ1016s2032s10sHI"
)
LOSSY_TUPLE = LOSSY.unpack_from(PAGE)
LOSSLESS_TUPLE = LOSSLESS.unpack_from(PAGE)
PARSED = parse_page(PAGE)


@pytest.mark.benchmark(group="page-parse")
def test_baseline_lossy_struct_unpack(benchmark: Any) -> None:
    assert benchmark(LOSSY.unpack_from, PAGE) == LOSSY_TUPLE


@pytest.mark.benchmark(group="page-parse")
def test_baseline_lossless_struct_unpack(benchmark: Any) -> None:
    assert benchmark(LOSSLESS.unpack_from, PAGE) == LOSSLESS_TUPLE


@pytest.mark.benchmark(group="page-parse")
def test_parse_page_struct(benchmark: Any) -> None:
    assert benchmark(parse_page, PAGE) == PARSED


@pytest.mark.benchmark(group="page-parse")
def test_parse_page_construct(benchmark: Any) -> None:
    assert benchmark(parse_page, PAGE, backend="construct") == PARSED


@pytest.mark.benchmark(group="page-build")
def test_baseline_lossy_struct_pack(benchmark: Any) -> None:
    assert benchmark(LOSSY.pack, *LOSSY_TUPLE) == PAGE


@pytest.mark.benchmark(group="page-build")
def test_baseline_lossless_struct_pack(benchmark: Any) -> None:
    assert benchmark(LOSSLESS.pack, *LOSSLESS_TUPLE) == PAGE


@pytest.mark.benchmark(group="page-build")
def test_build_page_struct(benchmark: Any) -> None:
    assert benchmark(build_page, PARSED) == PAGE


@pytest.mark.benchmark(group="page-build")
def test_build_page_construct(benchmark: Any) -> None:
    assert benchmark(build_page, PARSED, backend="construct") == PAGE


# The hypervisor's edit: set four response registers (and their valid bits) and emit bytes.
# Positions in the LOSSLESS tuple (layout order), checked against ghcb.page.FIELD_NAMES below.
RAX, RBX, INFO1, INFO2 = 11, 15, 30, 31
assert [FIELD_NAMES[i] for i in (RAX, RBX, INFO1, INFO2)] == [
    "rax",
    "rbx",
    "sw_exit_info_1",
    "sw_exit_info_2",
]


def _raw_edit() -> bytes:
    values = list(LOSSLESS.unpack_from(PAGE))
    values[RAX], values[RBX], values[INFO1], values[INFO2] = 1, 2, 0, 0x100000000
    return LOSSLESS.pack(*values)


def _ghcb_edit() -> bytes:
    page = parse_page(PAGE).with_fields(rax=1, rbx=2, sw_exit_info_1=0, sw_exit_info_2=0x100000000)
    return build_page(page)


@pytest.mark.benchmark(group="page-edit")
def test_baseline_lossless_unpack_edit_pack(benchmark: Any) -> None:
    assert len(benchmark(_raw_edit)) == 4096


@pytest.mark.benchmark(group="page-edit")
def test_parse_with_fields_build(benchmark: Any) -> None:
    out = benchmark(_ghcb_edit)
    assert out[:0x3F0] == _raw_edit()[:0x3F0]
