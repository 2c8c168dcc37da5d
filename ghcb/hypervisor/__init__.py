"""The reference hypervisor: KVM's handling of SNP (Extended) Guest Requests, sans IO.

* :mod:`~ghcb.hypervisor.memory` — guest memory with private and shared backings.
* :mod:`~ghcb.hypervisor.rules` — KVM's GHCB validator as one table (also behind
  :func:`ghcb.check_page`).
* :mod:`~ghcb.hypervisor.kvm_abi` — one object per certificate-exit ABI / KVM tree
  (:class:`DisabledAbi`, :class:`MergedAbi`, :class:`V15Abi`): ``kvm_run`` codec, guest-request
  handlers, completion callback, and the VMM's ``ret`` values.
* :mod:`~ghcb.hypervisor.vcpu` — the vCPU: ``sev_handle_vmgexit``'s order, the GHCB writes
  when KVM makes them, a table-driven state machine; :mod:`~ghcb.hypervisor.vm` the VM's
  settings, :mod:`~ghcb.hypervisor.results` what KVM_RUN returns.
* :mod:`~ghcb.hypervisor.msr_protocol` — the GHCB MSR protocol;
  :mod:`~ghcb.hypervisor.events` — the other GHCB events (MMIO, IOIO, AP creation, ...);
  :mod:`~ghcb.hypervisor.devices` — the pluggable CPUID/MSR/hypercall/device models;
  :mod:`~ghcb.hypervisor.psc` — page-state changes; :mod:`~ghcb.hypervisor.scratch` — the
  scratch-area rules.
* :mod:`~ghcb.hypervisor.vmm` — the VMM side: rate limiting and the KVM_RUN loop.
* :mod:`~ghcb.hypervisor.store` / :mod:`~ghcb.hypervisor.locking` — the certificate store
  with the KVM-documented file locks.
* :mod:`~ghcb.hypervisor.firmware` — the firmware protocol and a recording test double;
  :mod:`~ghcb.hypervisor.simfw` — the simulated SNP firmware (guest messages, signed reports);
  :mod:`~ghcb.hypervisor.pki` — the synthetic AMD chain (ARK, ASK/ASVK, VCEK/VLEK).
* :mod:`~ghcb.hypervisor.errors` — errors split by blame.

The names below are loaded on first use (PEP 562 ``__getattr__``): ``import ghcb`` and the
modules that need one part (the validator, the PSC engine) do not import the whole hypervisor
(the simulated firmware, the PKI with ``cryptography.x509``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ghcb.hypervisor.devices import (
        CpuidTable,
        Devices,
        KvmHypercalls,
        MsrTable,
        NoPmu,
        Platform,
        RecordingDevices,
    )
    from ghcb.hypervisor.errors import HostError, HypervisorBug, HypervisorUsageError
    from ghcb.hypervisor.firmware import Firmware, FirmwareFailure, RecordingFirmware
    from ghcb.hypervisor.kvm_abi import CertAbi, DisabledAbi, VmmAnswer, with_immediate_exit
    from ghcb.hypervisor.locking import LockError
    from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
    from ghcb.hypervisor.pki import Chain, ChainError, chain
    from ghcb.hypervisor.simfw import FirmwareConfig, SimulatedFirmware, default_vmpcks
    from ghcb.hypervisor.store import CertificateStore, Lease, StoreError
    from ghcb.hypervisor.vcpu import (
        KVM_RUN_SIZE,
        ApResetHold,
        CertsExit,
        DoneExit,
        Halted,
        Interrupted,
        MapGpaExit,
        MergedAbi,
        Released,
        Resumed,
        RunFailed,
        RunResult,
        Terminated,
        Unhandled,
        V15Abi,
        Vcpu,
        Vm,
        decode_kvm_run,
        encode_kvm_run,
    )
    from ghcb.hypervisor.vmm import TokenBucket, Vmm

__all__ = [
    "KVM_RUN_SIZE",
    "ApResetHold",
    "CertAbi",
    "CertificateStore",
    "CertsExit",
    "Chain",
    "ChainError",
    "CpuidTable",
    "Devices",
    "DisabledAbi",
    "DoneExit",
    "Firmware",
    "FirmwareConfig",
    "FirmwareFailure",
    "GuestMemory",
    "GuestMemoryError",
    "Halted",
    "HostError",
    "HypervisorBug",
    "HypervisorUsageError",
    "Interrupted",
    "KvmHypercalls",
    "Lease",
    "LockError",
    "MapGpaExit",
    "MergedAbi",
    "MsrTable",
    "NoPmu",
    "Platform",
    "RecordingDevices",
    "RecordingFirmware",
    "Released",
    "Resumed",
    "RunFailed",
    "RunResult",
    "SimulatedFirmware",
    "StoreError",
    "Terminated",
    "TokenBucket",
    "Unhandled",
    "V15Abi",
    "Vcpu",
    "Vm",
    "Vmm",
    "VmmAnswer",
    "chain",
    "decode_kvm_run",
    "default_vmpcks",
    "encode_kvm_run",
    "with_immediate_exit",
]

#: Where each public name lives: imported from there on first access.
_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "ghcb.hypervisor.devices": (
        "CpuidTable",
        "Devices",
        "KvmHypercalls",
        "MsrTable",
        "NoPmu",
        "Platform",
        "RecordingDevices",
    ),
    "ghcb.hypervisor.errors": (
        "HostError",
        "HypervisorBug",
        "HypervisorUsageError",
    ),
    "ghcb.hypervisor.firmware": (
        "Firmware",
        "FirmwareFailure",
        "RecordingFirmware",
    ),
    "ghcb.hypervisor.kvm_abi": (
        "CertAbi",
        "DisabledAbi",
        "VmmAnswer",
        "with_immediate_exit",
    ),
    "ghcb.hypervisor.locking": ("LockError",),
    "ghcb.hypervisor.memory": (
        "GuestMemory",
        "GuestMemoryError",
    ),
    "ghcb.hypervisor.pki": (
        "Chain",
        "ChainError",
        "chain",
    ),
    "ghcb.hypervisor.simfw": (
        "FirmwareConfig",
        "SimulatedFirmware",
        "default_vmpcks",
    ),
    "ghcb.hypervisor.store": (
        "CertificateStore",
        "Lease",
        "StoreError",
    ),
    "ghcb.hypervisor.vcpu": (
        "ApResetHold",
        "CertsExit",
        "DoneExit",
        "Halted",
        "Interrupted",
        "KVM_RUN_SIZE",
        "MapGpaExit",
        "MergedAbi",
        "Released",
        "Resumed",
        "RunFailed",
        "RunResult",
        "Terminated",
        "Unhandled",
        "V15Abi",
        "Vcpu",
        "Vm",
        "decode_kvm_run",
        "encode_kvm_run",
    ),
    "ghcb.hypervisor.vmm": (
        "TokenBucket",
        "Vmm",
    ),
}
_LAZY: Final = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str) -> object:
    """PEP 562: import the submodule that defines ``name`` and cache the value here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
