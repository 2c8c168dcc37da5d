"""Hostile arguments to the public API end in a GhcbError subclass, never a bare exception."""

from __future__ import annotations

import array
import io
import json
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import (
    ExitCode,
    FieldValueError,
    GhcbError,
    GhcbPage,
    HvFeature,
    HvResponse,
    InputTypeError,
    MsrCode,
    UnknownFieldError,
    UnknownMsr,
    decode_msr,
    encode_msr,
    parse_page,
    required_inputs,
)
from ghcb.check import check_page_record
from ghcb.cli import main
from ghcb.msr import msr_layout, msr_record

if TYPE_CHECKING:
    from collections.abc import Callable

RAW_MSR = UnknownMsr(info=0xFFF, data=0)
BAD_BACKEND: Any = "ctypes"

CASES: list[tuple[str, Callable[[], object], type[GhcbError]]] = [
    ("required_inputs(None)", lambda: required_inputs(None), InputTypeError),  # type: ignore[arg-type]
    ("check_page_record(bytes)", lambda: check_page_record(bytes(4096)), InputTypeError),  # type: ignore[arg-type]
    ("is_valid(list)", lambda: GhcbPage().is_valid(["rax"]), UnknownFieldError),  # type: ignore[arg-type]
    ("with_fields(**{1: ...})", lambda: GhcbPage().replace(**{"": 1}), UnknownFieldError),
    ("malformed('x')", lambda: HvResponse.malformed("x"), InputTypeError),  # type: ignore[arg-type]
    ("malformed(2.7)", lambda: HvResponse.malformed(2.7), InputTypeError),  # type: ignore[arg-type]
    ("malformed(True)", lambda: HvResponse.malformed(True), InputTypeError),
    ("malformed(-1)", lambda: HvResponse.malformed(-1), FieldValueError),
    ("exception(None)", lambda: HvResponse.exception(None), InputTypeError),  # type: ignore[arg-type]
    ("UnknownMsr(info='x')", lambda: UnknownMsr(info="x", data=1), InputTypeError),  # type: ignore[arg-type]
    ("UnknownMsr(info=True)", lambda: UnknownMsr(info=True, data=0), InputTypeError),
    ("UnknownMsr(known code)", lambda: UnknownMsr(info=4, data=1), FieldValueError),
    ("UnknownMsr(data=2**52)", lambda: UnknownMsr(info=0xFFF, data=2**52), FieldValueError),
    ("msr_record(0x999)", lambda: msr_record(0x999), FieldValueError),  # type: ignore[arg-type]
    ("msr_layout(None)", lambda: msr_layout(None), FieldValueError),  # type: ignore[arg-type]
    ("decode_msr(backend='x')", lambda: decode_msr(0xFFF, backend=BAD_BACKEND), InputTypeError),
    ("encode_msr(backend='x')", lambda: encode_msr(RAW_MSR, backend=BAD_BACKEND), InputTypeError),
    ("HvFeature.from_int(-1)", lambda: HvFeature.from_int(-1), FieldValueError),
    ("HvFeature.from_int('x')", lambda: HvFeature.from_int("x"), InputTypeError),  # type: ignore[arg-type]
    ("ExitCode.from_int(None)", lambda: ExitCode.from_int(None), InputTypeError),  # type: ignore[arg-type]
    ("MsrCode.from_int(True)", lambda: MsrCode.from_int(True), InputTypeError),
]


@pytest.mark.parametrize(
    ("call", "error"), [(c, e) for _, c, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_typed_errors(call: Callable[[], object], error: type[GhcbError]) -> None:
    """Each hostile call raises the package's own error."""
    with pytest.raises(error):
        call()


def test_wide_memoryview_counts_bytes() -> None:
    """A memoryview of 4-byte items holding 4096 bytes is a page (len counts bytes)."""
    view = memoryview(array.array("I", [0x01020304] * 1024))
    assert parse_page(view) == parse_page(bytes(view))


def test_strided_and_multidimensional_views() -> None:
    """A strided byte view is its bytes; a non-contiguous view of wider items cannot be read
    as bytes and is an InputTypeError."""
    strided = memoryview(bytes(range(256)) * 32)[::2]
    assert parse_page(strided) == parse_page(bytes(strided))
    wide = memoryview(array.array("I", range(2048)))[::2]
    with pytest.raises(InputTypeError):
        parse_page(wide)


@pytest.mark.parametrize(
    "argv",
    [
        ["msr", "decode", "--json"],
        ["page", "nope", "--json"],
        ["certs", "check", "x", "--max-size", "-5", "--json"],
        ["--json"],
    ],
)
def test_cli_usage_errors_are_json(argv: list[str]) -> None:
    """Unusable arguments: one JSON object and exit status 2, even from argparse."""
    out = io.StringIO()
    assert main(argv, out) == 2
    doc: Any = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert doc["error"]["code"] == "usage"
