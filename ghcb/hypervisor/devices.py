"""What KVM's GHCB event handlers ask of the rest of the host: the guest's CPUID table, its
MSRs and performance counters, the VMMCALL hypercalls and the MMIO / port-I/O devices —
pluggable, with defaults that answer as a plain KVM VM does.

Sources: Linux ``arch/x86/kvm/cpuid.c`` (``kvm_cpuid``: a leaf missing from an AMD guest's
table reads as zeros — "Intel CPUID semantics treats any query for an out-of-range leaf as if
the highest basic leaf was queried", only for Intel-compatible guests), ``arch/x86/kvm/x86.c``
(``kvm_emulate_rdmsr`` / ``kvm_emulate_wrmsr``, ``kvm_emulate_hypercall``: ``-KVM_EPERM`` at
CPL > 0, ``-KVM_ENOSYS`` for an unknown number), ``include/uapi/linux/kvm_para.h``
(``KVM_HC_*``), ``include/linux/kvm_para.h`` (``KVM_ENOSYS`` 1000, ``KVM_EPERM`` EPERM).

A device that MMIO or port I/O reaches stands for both KVM's in-kernel devices and the
userspace VMM behind ``KVM_EXIT_MMIO`` / ``KVM_EXIT_IO``: the model answers the access at once
(userspace's answer is what the callback returns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from ghcb.hypervisor.errors import HypervisorUsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KVM_EINVAL",
    "KVM_ENOSYS",
    "KVM_EPERM",
    "KVM_HC_VAPIC_POLL_IRQ",
    "CpuidModel",
    "CpuidTable",
    "Devices",
    "HypercallModel",
    "KvmHypercalls",
    "MsrModel",
    "MsrTable",
    "NoPmu",
    "Platform",
    "PmcModel",
    "RecordingDevices",
]

_SPEC: Final = "ghcb.hypervisor.devices (pluggable host models)"
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
KVM_ENOSYS: Final = 1000  # include/linux/kvm_para.h
KVM_EPERM: Final = 1  # include/linux/kvm_para.h: "#define KVM_EPERM EPERM"
KVM_EINVAL: Final = 22  # include/linux/kvm_para.h: "#define KVM_EINVAL EINVAL"
KVM_HC_VAPIC_POLL_IRQ: Final = 1  # uapi/linux/kvm_para.h: "ret = 0;" in kvm_emulate_hypercall


@runtime_checkable
class CpuidModel(Protocol):
    """The guest's CPUID table: ``(eax, ebx, ecx, edx)`` for a leaf and sub-leaf."""

    def cpuid(self, function: int, index: int) -> tuple[int, int, int, int]:
        """The four 32-bit registers CPUID returns."""
        ...


@dataclass(frozen=True)
class CpuidTable:
    """A CPUID table (``KVM_SET_CPUID2`` entries): ``{(function, index): (eax, ebx, ecx,
    edx)}``; a leaf it lacks reads as zeros, as ``kvm_cpuid`` answers an AMD guest."""

    entries: Mapping[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, regs in self.entries.items():
            ok = (
                isinstance(key, tuple)
                and len(key) == 2
                and isinstance(regs, tuple)
                and len(regs) == 4
                and all(_is_u(v, _U32) for v in (*key, *regs))
            )
            if not ok:
                raise HypervisorUsageError(
                    f"CPUID entry {key!r}: {regs!r} must be (function, index): 4 u32 registers",
                    rule="input-type",
                    spec=_SPEC,
                )

    def cpuid(self, function: int, index: int) -> tuple[int, int, int, int]:
        return self.entries.get((function, index), (0, 0, 0, 0))


@runtime_checkable
class MsrModel(Protocol):
    """The guest's MSRs as KVM's ``kvm_get_msr`` / ``kvm_set_msr`` see them."""

    def rdmsr(self, index: int) -> int | None:
        """The 64-bit value, or None when the read faults (#GP)."""
        ...

    def wrmsr(self, index: int, value: int) -> bool:
        """Whether the write was accepted (False: #GP)."""
        ...


@dataclass
class MsrTable:
    """MSRs held in a dict: reading or writing an index not in it faults (#GP), as KVM
    answers an MSR it does not emulate (``ignore_msrs`` off)."""

    values: dict[int, int] = field(default_factory=dict)

    def rdmsr(self, index: int) -> int | None:
        return self.values.get(index)

    def wrmsr(self, index: int, value: int) -> bool:
        if index not in self.values:
            return False
        self.values[index] = value
        return True


@runtime_checkable
class PmcModel(Protocol):
    """The guest's performance counters as ``kvm_pmu_rdpmc`` reads them (RDPMC)."""

    def rdpmc(self, index: int) -> int | None:
        """The 64-bit counter ``index`` (ECX), or None when the read faults (#GP)."""
        ...


@dataclass(frozen=True)
class NoPmu:
    """A guest without a vPMU: ``kvm_pmu_rdpmc`` fails ("if (!pmu->version) return 1;")."""

    def rdpmc(self, index: int) -> int | None:
        return None


@runtime_checkable
class HypercallModel(Protocol):
    """VMMCALL (``kvm_emulate_hypercall``): the value written to RAX."""

    def hypercall(self, nr: int, args: tuple[int, int, int, int], cpl: int) -> int:
        """RAX after the hypercall ``nr`` with RBX, RCX, RDX, RSI (a u64)."""
        ...


@dataclass(frozen=True)
class KvmHypercalls:
    """``kvm_emulate_hypercall`` for a guest without PV features: "if (cpl) { ret =
    -KVM_EPERM; goto out; }", ``KVM_HC_VAPIC_POLL_IRQ`` → 0, anything else ``-KVM_ENOSYS``
    (64-bit: "if (vcpu->arch.guest_state_protected) return true;" in
    ``is_64_bit_hypercall``)."""

    def hypercall(self, nr: int, args: tuple[int, int, int, int], cpl: int) -> int:
        if cpl:
            return -KVM_EPERM & _U64
        if nr == KVM_HC_VAPIC_POLL_IRQ:
            return 0
        return -KVM_ENOSYS & _U64


@runtime_checkable
class Devices(Protocol):
    """MMIO and port-I/O devices (in-kernel or the VMM's)."""

    def mmio_read(self, gpa: int, size: int) -> bytes:
        """``size`` bytes read at ``gpa``."""
        ...

    def mmio_write(self, gpa: int, data: bytes) -> None:
        """``data`` written at ``gpa``."""
        ...

    def io_in(self, port: int, size: int) -> bytes:
        """``size`` bytes read from ``port``."""
        ...

    def io_out(self, port: int, data: bytes) -> None:
        """``data`` written to ``port``."""
        ...


@dataclass
class RecordingDevices:
    """Devices that record every access (``log``: ``(kind, address, bytes)``) and read from
    ``mmio`` / ``ports`` (bytes repeated to the size asked); an address with nothing there
    reads as zeros (MMIO) or all ones (a port nobody decodes: the bus floats)."""

    mmio: dict[int, bytes] = field(default_factory=dict)
    ports: dict[int, bytes] = field(default_factory=dict)
    log: list[tuple[str, int, bytes]] = field(default_factory=list)

    def mmio_read(self, gpa: int, size: int) -> bytes:
        data = _repeat(self.mmio.get(gpa, b"\0"), size)
        self.log.append(("mmio_read", gpa, data))
        return data

    def mmio_write(self, gpa: int, data: bytes) -> None:
        self.log.append(("mmio_write", gpa, bytes(data)))

    def io_in(self, port: int, size: int) -> bytes:
        data = _repeat(self.ports.get(port, b"\xff"), size)
        self.log.append(("io_in", port, data))
        return data

    def io_out(self, port: int, data: bytes) -> None:
        self.log.append(("io_out", port, bytes(data)))


@dataclass
class Platform:
    """The pluggable models a VM's exits reach (:class:`~ghcb.hypervisor.vcpu.Vm`)."""

    cpuid: CpuidModel = field(default_factory=CpuidTable)
    msrs: MsrModel = field(default_factory=MsrTable)
    hypercalls: HypercallModel = field(default_factory=KvmHypercalls)
    devices: Devices = field(default_factory=RecordingDevices)
    pmcs: PmcModel = field(default_factory=NoPmu)

    def __post_init__(self) -> None:
        for name, proto in (
            ("cpuid", CpuidModel),
            ("msrs", MsrModel),
            ("hypercalls", HypercallModel),
            ("devices", Devices),
            ("pmcs", PmcModel),
        ):
            if not isinstance(getattr(self, name), proto):
                raise HypervisorUsageError(
                    f"Platform.{name} must implement {proto.__name__}",
                    rule="input-type",
                    spec=_SPEC,
                )


def device_bytes(data: object, size: int, what: str) -> bytes:
    """A device's answer checked to be exactly ``size`` bytes (a device returning anything
    else is the caller's bug)."""
    if not isinstance(data, bytes | bytearray) or len(data) != size:
        raise HypervisorUsageError(
            f"{what} must return {size} bytes, not {data!r:.40}", rule="device", spec=_SPEC
        )
    return bytes(data)


def _repeat(pattern: bytes, size: int) -> bytes:
    return (pattern * (size // max(len(pattern), 1) + 1))[:size]


def _is_u(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit
