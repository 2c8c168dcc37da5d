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
        codes.SavicOp,
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


def test_codes_the_tables_once_lacked() -> None:
    """Linux's newer firmware statuses, CR2 and CR write-trap exits and the Secure AVIC
    operations decode by name (issue 10 item 5)."""
    assert codes.FirmwareStatus.from_int(0x28) is codes.FirmwareStatus.SHUTDOWN_INCOMPLETE
    assert codes.FirmwareStatus.from_int(0x3A) is codes.FirmwareStatus.IN_USE
    assert codes.FirmwareStatus.from_int(0x34) == 0x34  # not defined in psp-sev.h
    assert type(codes.FirmwareStatus.from_int(0x34)) is int
    assert codes.ExitCode.from_int(0x002) is codes.ExitCode.READ_CR2
    assert codes.ExitCode.from_int(0x012) is codes.ExitCode.WRITE_CR2
    traps = [codes.ExitCode.from_int(0x090 + n) for n in range(16)]
    assert [t.name for t in traps if isinstance(t, codes.ExitCode)] == [
        f"CR{n}_WRITE_TRAP" for n in range(16)
    ]
    assert codes.SavicOp.from_int(1) is codes.SavicOp.UNREGISTER_GPA
    assert codes.SAVIC_SELF_GPA == 2**64 - 1
