"""KVM's scratch-area rules (``setup_vmgexit_scratch`` and its callers), path by path, with the
exact values KVM checks."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb import ExitCode, GhcbErr, GhcbPage
from ghcb.errors import InputTypeError
from ghcb.hypervisor.rules import Validator
from ghcb.hypervisor.scratch import (
    _SPEC_HANDLER,
    _SPEC_STRING_IO,
    GHCB_SCRATCH_AREA_LIMIT,
    SPEC_SCRATCH,
    HandlerStop,
    ScratchArea,
    ScratchError,
    ScratchUse,
    StopKind,
    scratch_outcome,
    scratch_use,
    setup_scratch,
)

GHCB = 0x7F000  # a page-aligned GHCB GPA
ALL64 = (1 << 64) - 1
OUT_STR_8 = 0x0014  # IOIO EXITINFO1: OUT, string (bit 2), 8-bit (bit 4)
IN_STR_32 = 0x0045  # IN (bit 0), string, 32-bit (bit 6)


def _rule(sw_scratch: int, min_len: int, version: int = 2) -> str | None:
    got = setup_scratch(sw_scratch, min_len, ghcb_gpa=GHCB, ghcb_version=version)
    return got.rule if isinstance(got, ScratchError) else None


@pytest.mark.parametrize(
    ("sw_scratch", "min_len", "version", "rule"),
    [
        (GHCB + 0x800, 0, 2, "zero-length"),  # WARN_ON_ONCE(!min_len)
        (0, 8, 2, "no-gpa"),  # "scratch gpa not provided"
        (ALL64 - 3, 8, 1, "wraps"),  # scratch_gpa_end < scratch_gpa_beg
        (GHCB + 0x7FF, 1, 2, "outside-shared-buffer"),  # before the buffer
        (GHCB + 0xFEF, 2, 2, "outside-shared-buffer"),  # ends at 0xFF1 > 0xFF0
        (GHCB + 0xFF0, 1, 1, "outside-shared-buffer"),  # in the page, v1 too
        (GHCB + 0x1000, 8, 2, "outside-ghcb-v2"),  # the next page, GHCB v2
        (GHCB - 0x1000, GHCB_SCRATCH_AREA_LIMIT + 1, 1, "too-large"),  # v1, 16 pages + 1
        (GHCB + 0x800, 0x7F0, 2, None),  # the whole buffer
        (GHCB + 0xFEF, 1, 2, None),  # the last byte
        (GHCB - 0x1000, GHCB_SCRATCH_AREA_LIMIT, 1, None),  # v1, exactly 16 pages outside
    ],
)
def test_setup_scratch_rules(sw_scratch: int, min_len: int, version: int, rule: str | None) -> None:
    """Each check of setup_vmgexit_scratch at its boundary."""
    assert _rule(sw_scratch, min_len, version) == rule


_SHARED = "is in the GHCB page but not inside its shared buffer [0x7f800, 0x7fff0)"


@pytest.mark.parametrize(
    ("sw_scratch", "min_len", "version", "rule", "message"),
    [
        (GHCB + 0x800, 0, 2, "zero-length", "scratch length 0 (KVM warns)"),
        (0, 8, 2, "no-gpa", "sw_scratch is 0: scratch GPA not provided"),
        (ALL64 - 3, 8, 1, "wraps", "sw_scratch 0xfffffffffffffffc + length 0x8 wraps past 2**64"),
        (GHCB + 0x7FF, 1, 2, "outside-shared-buffer", f"scratch [0x7f7ff, 0x7f800) {_SHARED}"),
        (GHCB + 0xFEF, 2, 2, "outside-shared-buffer", f"scratch [0x7ffef, 0x7fff1) {_SHARED}"),
        (
            GHCB + 0x1000,
            8,
            2,
            "outside-ghcb-v2",
            "sw_scratch 0x80000 is outside the GHCB page 0x7f000; GHCB v2 requires the scratch "
            "area in the GHCB",
        ),
        (
            GHCB - 0x1000,
            GHCB_SCRATCH_AREA_LIMIT + 1,
            1,
            "too-large",
            "scratch length 0x10001 exceeds KVM's limit 0x10000",
        ),
    ],
)
def test_setup_scratch_errors_say_why(
    sw_scratch: int, min_len: int, version: int, rule: str, message: str
) -> None:
    """Each refusal names the check, the values it compared and KVM's function; the guest
    reads EXITINFO2 = GHCB_ERR_INVALID_SCRATCH_AREA at SW_SCRATCH."""
    got = setup_scratch(sw_scratch, min_len, ghcb_gpa=GHCB, ghcb_version=version)
    assert got == ScratchError(rule, message, SPEC_SCRATCH)
    assert got.reason == GhcbErr.INVALID_SCRATCH_AREA


def test_validator_must_be_a_validator() -> None:
    with pytest.raises(InputTypeError) as info:
        setup_scratch(0x5000, 8, ghcb_gpa=GHCB, ghcb_version=1, validator=_any("current"))
    err = info.value
    assert (err.message, err.rule, err.spec) == (
        "validator must be a Validator, not 'current'",
        "input-type",
        SPEC_SCRATCH,
    )


def _any(value: object) -> Any:
    return value


@pytest.mark.parametrize("name", ["sw_scratch", "min_len", "ghcb_gpa", "ghcb_version"])
def test_setup_scratch_checks_every_argument(name: str) -> None:
    """Each C u64 argument must be an int: a typed error naming it."""
    args: dict[str, Any] = {
        "sw_scratch": GHCB + 0x800,
        "min_len": 8,
        "ghcb_gpa": GHCB,
        "ghcb_version": 2,
    }
    args[name] = "x"
    with pytest.raises(InputTypeError) as info:
        setup_scratch(args.pop("sw_scratch"), args.pop("min_len"), **args)
    assert (info.value.message, info.value.spec) == (
        f"{name} must be an int, not str",
        SPEC_SCRATCH,
    )


def test_outside_area_is_not_synced_by_default() -> None:
    """``sync`` defaults to False: KVM copies the area in, and back only when asked."""
    assert setup_scratch(0x5000, 24, ghcb_gpa=GHCB, ghcb_version=1) == ScratchArea(
        0x5000, 24, in_ghcb=False, sync=False
    )


def test_accepted_areas() -> None:
    """In the GHCB the area is the rest of the shared buffer; outside it, min_len bytes."""
    inside = setup_scratch(GHCB + 0x900, 8, ghcb_gpa=GHCB, ghcb_version=2, sync=True)
    assert inside == ScratchArea(GHCB + 0x900, 0xFF0 - 0x900, in_ghcb=True, sync=False)
    assert inside.offset == 0x900
    outside = setup_scratch(0x5000, 24, ghcb_gpa=GHCB, ghcb_version=1, sync=True)
    assert outside == ScratchArea(0x5000, 24, in_ghcb=False, sync=True)
    assert outside.offset is None
    err = setup_scratch(0, 8, ghcb_gpa=GHCB, ghcb_version=2)
    assert isinstance(err, ScratchError)
    assert (err.code, err.reason, err.offset) == (
        "invalid-scratch-area",
        GhcbErr.INVALID_SCRATCH_AREA,
        0x3A8,
    )


@pytest.mark.parametrize(
    ("code", "info1", "info2", "version", "want"),
    [
        (ExitCode.MMIO_READ, 0xFEE00000, 0, 2, ("mmio-zero-length", StopKind.NO_OP, None)),
        (ExitCode.MMIO_WRITE, 0, 9, 2, ("mmio-length", StopKind.BAD_INPUT, GhcbErr.INVALID_INPUT)),
        (ExitCode.IOIO, 0x0004, 1, 2, ("ioio-no-size", StopKind.NO_OP, None)),
        (ExitCode.IOIO, OUT_STR_8, 0, 2, ("ioio-zero-count", StopKind.NO_OP, None)),
        (ExitCode.IOIO, OUT_STR_8, 1 << 31, 2, ("ioio-count", StopKind.RUN_FAILS, None)),
        (ExitCode.IOIO, IN_STR_32, 1 << 29, 2, ("ioio-overflow", StopKind.RUN_FAILS, None)),
    ],
)
def test_handler_stops(
    code: int, info1: int, info2: int, version: int, want: tuple[str, StopKind, GhcbErr | None]
) -> None:
    """The handler answers before the scratch area: no-ops, MMIO length, IOIO counts."""
    got = scratch_use(code, info1, info2, ghcb_version=version)
    assert isinstance(got, HandlerStop)
    assert (got.rule, got.kind, got.reason) == want


@pytest.mark.parametrize(
    ("code", "info1", "info2", "version", "want"),
    [
        (ExitCode.MMIO_READ, 0, 8, 2, ScratchUse(8, sync=True)),
        (ExitCode.MMIO_WRITE, 0, 9, 1, ScratchUse(9, sync=False)),  # v1: no 8-byte limit
        (ExitCode.PSC, 0, 0, 2, ScratchUse(8, sync=True)),  # sizeof(struct psc_hdr)
        (ExitCode.IOIO, OUT_STR_8, 3, 2, ScratchUse(3, sync=False)),
        (ExitCode.IOIO, IN_STR_32, 0x1FFFFFFF, 2, ScratchUse(0x7FFFFFFC, sync=True)),
        (ExitCode.IOIO, 0x0010, 5, 2, None),  # not a string: port I/O, no scratch
        (ExitCode.CPUID, 0, 0, 2, None),
        (ExitCode.SNP_GUEST_REQUEST, 0x1000, 0x2000, 2, None),
    ],
)
def test_scratch_use(
    code: int, info1: int, info2: int, version: int, want: ScratchUse | None
) -> None:
    """The bytes each exit asks of the scratch area, and whether KVM copies them back."""
    assert scratch_use(code, info1, info2, ghcb_version=version) == want


def test_outcome_from_page() -> None:
    """A page's sw_scratch counts only when valid; ghcb_gpa=None takes the scratch's page."""
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.PSC, sw_exit_info_1=0, sw_exit_info_2=0, sw_scratch=GHCB + 0x800
    )
    assert scratch_outcome(page, ghcb_gpa=None, ghcb_version=2) == ScratchArea(
        GHCB + 0x800, 0x7F0, in_ghcb=True, sync=False
    )
    got = scratch_outcome(page, ghcb_gpa=GHCB + 0x1000, ghcb_version=2)
    assert isinstance(got, ScratchError)
    assert got.rule == "outside-ghcb-v2"
    unset = page.replace(valid_bitmap=bytes(16))
    got = scratch_outcome(unset, ghcb_gpa=None, ghcb_version=2)
    assert isinstance(got, ScratchError)
    assert got.rule == "no-gpa"
    cpuid = page.with_fields(sw_exit_code=ExitCode.CPUID)
    assert scratch_outcome(cpuid, ghcb_gpa=None, ghcb_version=2) is None


V15 = Validator.V15


@pytest.mark.parametrize(
    ("code", "info1", "info2", "want"),
    [
        (ExitCode.MMIO_READ, 0, 0, ScratchUse(0, sync=True)),  # no "if (!len) return 1"
        (ExitCode.MMIO_WRITE, 0, 9, ScratchUse(9, sync=False)),  # no "len > 8" on v2
        (ExitCode.PSC, 0, 0x18, ScratchUse(0x18, sync=True)),  # control->exit_info_2
        (ExitCode.IOIO, 0x0004, 1, ScratchUse(0, sync=False)),  # no size check: 0 bytes
        (ExitCode.IOIO, OUT_STR_8, 0, ScratchUse(0, sync=False)),  # no "if (!bytes)"
    ],
)
def test_v15_scratch_use(code: int, info1: int, info2: int, want: ScratchUse) -> None:
    """The seed tree before the 2026 hardening series: the lengths go straight through."""
    assert scratch_use(code, info1, info2, ghcb_version=2, validator=V15) == want


def test_v15_string_io_limits_kept() -> None:
    """sev_es_string_io's INT_MAX and overflow checks are in both trees."""
    got = scratch_use(ExitCode.IOIO, OUT_STR_8, 1 << 31, ghcb_version=2, validator=V15)
    assert isinstance(got, HandlerStop)
    assert got.kind is StopKind.RUN_FAILS


def test_v15_setup_scratch() -> None:
    """v15: zero length and an outside area on v2 pass; the in-GHCB area is ``len`` long."""
    assert setup_scratch(
        GHCB + 0x800, 0, ghcb_gpa=GHCB, ghcb_version=2, validator=V15
    ) == ScratchArea(GHCB + 0x800, 0, in_ghcb=True, sync=False)
    assert setup_scratch(
        GHCB + 0x1000, 8, ghcb_gpa=GHCB, ghcb_version=2, sync=True, validator=V15
    ) == ScratchArea(GHCB + 0x1000, 8, in_ghcb=False, sync=True)
    too_large = setup_scratch(
        GHCB + 0x1000, GHCB_SCRATCH_AREA_LIMIT + 1, ghcb_gpa=GHCB, ghcb_version=2, validator=V15
    )
    assert isinstance(too_large, ScratchError)
    assert too_large.rule == "too-large"
    wraps = setup_scratch(ALL64, 2, ghcb_gpa=GHCB, ghcb_version=2, validator=V15)
    assert isinstance(wraps, ScratchError)
    assert wraps.rule == "wraps"


_STRING_IO_FAILS = "KVM_RUN fails (-EINVAL)"


@pytest.mark.parametrize(
    ("code", "info1", "info2", "want"),
    [
        (
            ExitCode.MMIO_READ,
            0xFEE00000,
            0,
            ("MMIO length 0: no access", _SPEC_HANDLER, 0x3A0, None),
        ),
        (
            ExitCode.MMIO_WRITE,
            0,
            9,
            ("MMIO length 0x9 exceeds 8 bytes (GHCB v2+)", _SPEC_HANDLER, 0x3A0, "mmio-length"),
        ),
        (
            ExitCode.IOIO,
            0x0004,
            1,
            ("IOIO without an operand size: no access", _SPEC_HANDLER, 0x398, None),
        ),
        (
            ExitCode.IOIO,
            OUT_STR_8,
            0,
            ("string IOIO count 0: no access", _SPEC_STRING_IO, 0x3A0, None),
        ),
        (
            ExitCode.IOIO,
            OUT_STR_8,
            1 << 31,
            (
                f"string IOIO count 0x80000000 exceeds INT_MAX: {_STRING_IO_FAILS}",
                _SPEC_STRING_IO,
                0x3A0,
                "invalid-scratch-area",
            ),
        ),
        (
            ExitCode.IOIO,
            IN_STR_32,
            1 << 29,
            (
                f"string IOIO count 0x20000000 x size 4 overflows an int: {_STRING_IO_FAILS}",
                _SPEC_STRING_IO,
                0x3A0,
                "invalid-scratch-area",
            ),
        ),
    ],
)
def test_handler_stops_say_where(
    code: int, info1: int, info2: int, want: tuple[str, str, int, str | None]
) -> None:
    """Each stop names the values, the C function, the field read (SW_EXITINFO1 0x398 or
    SW_EXITINFO2 0x3A0) and check_page's code for it."""
    got = scratch_use(code, info1, info2, ghcb_version=2)
    assert isinstance(got, HandlerStop)
    assert (got.message, got.spec, got.offset, got.code) == want


@pytest.mark.parametrize(
    ("info1", "count", "want"),
    [
        (0x0024, 3, ScratchUse(6, sync=False)),  # OUTS, 16-bit (bit 5): size 2
        (OUT_STR_8, 0x7FFFFFFF, ScratchUse(0x7FFFFFFF, sync=False)),  # count and bytes = INT_MAX
    ],
)
def test_string_io_bytes(info1: int, count: int, want: ScratchUse) -> None:
    """bytes = count x size (SVM_IOIO_SIZE_MASK bits 6:4 as a number); "exit_info_2 >
    INT_MAX" and check_mul_overflow into an int refuse only above INT_MAX."""
    assert scratch_use(ExitCode.IOIO, info1, count, ghcb_version=2) == want


@pytest.mark.parametrize("name", ["exit_code", "exit_info_1", "exit_info_2", "ghcb_version"])
def test_scratch_use_checks_every_argument(name: str) -> None:
    args: dict[str, Any] = {
        "exit_code": ExitCode.MMIO_READ,
        "exit_info_1": 0,
        "exit_info_2": 8,
        "ghcb_version": 2,
    }
    args[name] = "x"
    with pytest.raises(InputTypeError) as info:
        scratch_use(args.pop("exit_code"), args.pop("exit_info_1"), args.pop("exit_info_2"), **args)
    assert info.value.message == f"{name} must be an int, not str"


def test_outcome_follows_the_validator_and_sync() -> None:
    """An MMIO read outside the GHCB (GHCB v1): KVM copies it back (sync); length 0 is a no-op
    in the merged tree ("if (!control->exit_info_2)") but reaches setup_vmgexit_scratch in v15,
    which has no WARN_ON_ONCE(!min_len)."""
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.MMIO_READ,
        sw_exit_info_1=0xFEE00000,
        sw_exit_info_2=8,
        sw_scratch=0x5000,
    )
    assert scratch_outcome(page, ghcb_gpa=GHCB, ghcb_version=1) == ScratchArea(
        0x5000, 8, in_ghcb=False, sync=True
    )
    empty = page.with_fields(sw_exit_info_2=0)
    stop = scratch_outcome(empty, ghcb_gpa=GHCB, ghcb_version=1)
    assert isinstance(stop, HandlerStop)
    assert stop.rule == "mmio-zero-length"
    v15 = scratch_outcome(empty, ghcb_gpa=GHCB, ghcb_version=1, validator=Validator.V15)
    assert v15 == ScratchArea(0x5000, 0, in_ghcb=False, sync=True)


def test_outcome_needs_a_page() -> None:
    with pytest.raises(InputTypeError) as info:
        scratch_outcome(_any(bytes(4096)), ghcb_gpa=GHCB, ghcb_version=2)
    assert info.value.message == "scratch_outcome needs a GhcbPage, not bytes"
