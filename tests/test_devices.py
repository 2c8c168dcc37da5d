"""The pluggable host models of ``ghcb.hypervisor.devices``: a CPUID table's validation and
its zeros for a missing leaf (``kvm_cpuid`` for an AMD guest), ``kvm_emulate_hypercall``'s
u64 RAX values, the recording devices' reads of unknown addresses and their log,
``Platform``'s protocol checks and ``device_bytes`` — each error with its exact message, rule
and spec (Linux ``arch/x86/kvm/cpuid.c``, ``arch/x86/kvm/x86.c``, ``include/linux/kvm_para.h``)."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb.hypervisor import (
    CpuidTable,
    HypervisorUsageError,
    KvmHypercalls,
    MsrTable,
    NoPmu,
    Platform,
    RecordingDevices,
)
from ghcb.hypervisor import devices as devices_module
from ghcb.hypervisor.devices import KVM_ENOSYS, KVM_EPERM, KVM_HC_VAPIC_POLL_IRQ, device_bytes

SPEC = devices_module._SPEC

U32 = 0xFFFF_FFFF
U64 = (1 << 64) - 1


# -- CpuidTable (KVM_SET_CPUID2 entries) ----------------------------------------------------
def test_cpuid_table_takes_u32_bounds() -> None:
    """Function, index and the four registers are u32s: 0 and 0xFFFFFFFF both fit."""
    table = CpuidTable({(U32, U32): (U32, 0, U32, 0), (0, 0): (0, U32, 0, U32)})
    assert table.cpuid(U32, U32) == (U32, 0, U32, 0)
    assert table.cpuid(0, 0) == (0, U32, 0, U32)


def test_cpuid_missing_leaf_reads_zeros() -> None:
    """kvm_cpuid for an AMD guest: a leaf (or sub-leaf) the table lacks reads as zeros in all
    four registers."""
    table = CpuidTable({(1, 0): (0xA, 0xB, 0xC, 0xD)})
    assert table.cpuid(1, 1) == (0, 0, 0, 0)
    assert table.cpuid(0x8000_0000, 0) == (0, 0, 0, 0)
    assert CpuidTable().cpuid(0, 0) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("key", "regs"),
    [
        ((1, 0, 0), (1, 2, 3, 4)),  # a key of three
        ((1,), (1, 2, 3, 4)),
        ("ab", (1, 2, 3, 4)),  # not a tuple
        ((1, 0), (1, 2, 3)),  # three registers
        ((1, 0), [1, 2, 3, 4]),
        ((1, 0), (1 << 32, 0, 0, 0)),  # a register past u32
        ((1, 0), (0, 0, 0, -1)),
        ((1 << 32, 0), (0, 0, 0, 0)),  # a function past u32
        ((1, -1), (0, 0, 0, 0)),
        ((1, 0), (1.0, 0, 0, 0)),  # not ints
        ((1, 0), (True, 0, 0, 0)),
        ((1, 0), ("1", 0, 0, 0)),
    ],
)
def test_cpuid_table_refuses_bad_entries(key: Any, regs: Any) -> None:
    with pytest.raises(HypervisorUsageError) as info:
        CpuidTable({key: regs})
    assert info.value.message == (
        f"CPUID entry {key!r}: {regs!r} must be (function, index): 4 u32 registers"
    )
    assert (info.value.rule, info.value.spec) == ("input-type", SPEC)


# -- KvmHypercalls (kvm_emulate_hypercall) --------------------------------------------------
@pytest.mark.parametrize("cpl", [1, 3])
def test_hypercall_above_cpl0_is_eperm(cpl: int) -> None:
    """ "if (cpl) { ret = -KVM_EPERM; goto out; }": RAX = -1 as a u64, whatever the number."""
    for nr in (1, 5, 12):
        assert KvmHypercalls().hypercall(nr, (0, 0, 0, 0), cpl) == -KVM_EPERM & U64 == U64


def test_hypercall_at_cpl0() -> None:
    """KVM_HC_VAPIC_POLL_IRQ (1): "ret = 0;"; an unknown number: "ret = -KVM_ENOSYS;" (-1000
    as a u64)."""
    assert KvmHypercalls().hypercall(KVM_HC_VAPIC_POLL_IRQ, (0, 0, 0, 0), 0) == 0
    assert KvmHypercalls().hypercall(0x7F, (1, 2, 3, 4), 0) == -KVM_ENOSYS & U64 == U64 - 999


# -- MsrTable / NoPmu -------------------------------------------------------------------------
def test_msr_table_faults_on_unknown_index() -> None:
    msrs = MsrTable({0x10: 5})
    assert (msrs.rdmsr(0x10), msrs.rdmsr(0x11)) == (5, None)
    assert (msrs.wrmsr(0x10, 7), msrs.wrmsr(0x11, 7)) == (True, False)
    assert msrs.values == {0x10: 7}
    assert NoPmu().rdpmc(0) is None


# -- RecordingDevices ---------------------------------------------------------------------------
def test_recording_devices_reads_and_log() -> None:
    """MMIO with nothing there reads zeros, a port nobody decodes all ones; a known address
    repeats its bytes to the size asked; every access is logged with its bytes."""
    devices = RecordingDevices(mmio={0x100: b"\x01\x02"}, ports={0x70: b"\x5a"})
    assert devices.mmio_read(0x200, 3) == b"\0\0\0"
    assert devices.mmio_read(0x100, 5) == b"\x01\x02\x01\x02\x01"
    assert devices.io_in(0x71, 2) == b"\xff\xff"
    assert devices.io_in(0x70, 4) == b"\x5a" * 4
    devices.mmio_write(0x300, b"\x09")
    devices.io_out(0x80, b"\x01\x02")
    assert devices.log == [
        ("mmio_read", 0x200, b"\0\0\0"),
        ("mmio_read", 0x100, b"\x01\x02\x01\x02\x01"),
        ("io_in", 0x71, b"\xff\xff"),
        ("io_in", 0x70, b"\x5a\x5a\x5a\x5a"),
        ("mmio_write", 0x300, b"\x09"),
        ("io_out", 0x80, b"\x01\x02"),
    ]


# -- Platform -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "proto"),
    [
        ("cpuid", "CpuidModel"),
        ("msrs", "MsrModel"),
        ("hypercalls", "HypercallModel"),
        ("devices", "Devices"),
        ("pmcs", "PmcModel"),
    ],
)
def test_platform_refuses_a_model_without_its_protocol(name: str, proto: str) -> None:
    bad: dict[str, Any] = {name: object()}
    with pytest.raises(HypervisorUsageError) as info:
        Platform(**bad)
    assert info.value.message == f"Platform.{name} must implement {proto}"
    assert (info.value.rule, info.value.spec) == ("input-type", SPEC)


def test_platform_defaults() -> None:
    platform = Platform()
    assert platform.cpuid == CpuidTable()
    assert platform.msrs == MsrTable()
    assert platform.devices == RecordingDevices()


# -- device_bytes -------------------------------------------------------------------------------
def test_device_bytes_accepts_exact_size() -> None:
    assert device_bytes(b"\1\2", 2, "io_in") == b"\1\2"
    assert device_bytes(bytearray(b"\3"), 1, "mmio_read") == b"\3"


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"\1\2\3", "b'\\x01\\x02\\x03'"),
        (b"", "b''"),
        ("ab", "'ab'"),
        (None, "None"),
        (bytes(50), "b'" + "\\x00" * 9 + "\\x"),  # the answer's repr cut at 40 characters
    ],
)
def test_device_bytes_refuses_other_answers(data: object, shown: str) -> None:
    """A device answer of the wrong size or type is the caller's bug (rule "device", which
    the vCPU treats as a failed host, leaving the GHCB mapped)."""
    with pytest.raises(HypervisorUsageError) as info:
        device_bytes(data, 2, "io_in")
    assert info.value.message == f"io_in must return 2 bytes, not {shown}"
    assert (info.value.rule, info.value.spec) == ("device", SPEC)
