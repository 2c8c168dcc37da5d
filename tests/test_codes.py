"""Tolerant enum decoding: known values become members, unknown ones stay plain ints."""

from __future__ import annotations

import pytest

from ghcb import codes


@pytest.mark.parametrize(
    "cls",
    [
        codes.ExitCode,
        codes.MsrCode,
        codes.HvResp,
        codes.GhcbErr,
        codes.VmmError,
        codes.FirmwareStatus,
        codes.MsgType,
        codes.PscOp,
        codes.TermReasonSet,
        codes.GenTermReason,
        codes.LinuxTermReason,
        codes.EventType,
    ],
)
def test_from_int(cls: type[codes._Code]) -> None:
    """from_int maps every member's value to that member and keeps an unknown value as int."""
    for member in cls:
        assert cls.from_int(int(member)) is member
    unknown = max(int(m) for m in cls) + 1
    result = cls.from_int(unknown)
    assert result == unknown
    assert type(result) is int


def test_firmware_alias() -> None:
    """INAVLID_CONFIG is Linux's typo alias of INVALID_CONFIG."""
    alias = codes.FirmwareStatus["INAVLID_CONFIG"]
    assert alias is codes.FirmwareStatus.INVALID_CONFIG
    assert codes.FirmwareStatus.from_int(3) is codes.FirmwareStatus.INVALID_CONFIG
    assert codes.FirmwareStatus.INVALID_CONFIG.name == "INVALID_CONFIG"


def test_hv_features_keep_unknown_bits() -> None:
    """HvFeature keeps bits it does not name."""
    flags = codes.HvFeature.from_int(0x3 | 1 << 40)
    assert codes.HvFeature.SNP in flags
    assert codes.HvFeature.SNP_AP_CREATION in flags
    assert int(flags) == 0x3 | 1 << 40


def test_exit_codes_are_64_bit() -> None:
    """SVM_EXIT_ERR is the all-ones u64."""
    assert codes.ExitCode.ERR == 2**64 - 1
