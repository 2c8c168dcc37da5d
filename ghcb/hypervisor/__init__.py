"""The reference hypervisor: KVM's handling of SNP (Extended) Guest Requests, sans IO.

* :mod:`~ghcb.hypervisor.memory` — guest memory with private and shared pages.
* :mod:`~ghcb.hypervisor.vcpu` — the vCPU: validation, guest requests, both certificate-exit
  ABIs (the v15 seed patch's and the merged ``KVM_EXIT_SNP_REQ_CERTS``).
* :mod:`~ghcb.hypervisor.vmm` — the VMM side: certificate store with file locks, rate
  limiting, the KVM_RUN loop.
* :mod:`~ghcb.hypervisor.firmware` — the firmware protocol and a recording test double.
"""

from __future__ import annotations

from ghcb.hypervisor.errors import HostError, HypervisorBug, HypervisorUsageError
from ghcb.hypervisor.firmware import Firmware, FirmwareFailure, RecordingFirmware
from ghcb.hypervisor.locking import LockError
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.hypervisor.store import CertificateStore, Lease
from ghcb.hypervisor.vcpu import (
    KVM_RUN_SIZE,
    CertsExit,
    Interrupted,
    MergedAbi,
    Resumed,
    RunFailed,
    RunResult,
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
    "CertificateStore",
    "CertsExit",
    "Firmware",
    "FirmwareFailure",
    "GuestMemory",
    "GuestMemoryError",
    "HostError",
    "HypervisorBug",
    "HypervisorUsageError",
    "Interrupted",
    "Lease",
    "LockError",
    "MergedAbi",
    "RecordingFirmware",
    "Resumed",
    "RunFailed",
    "RunResult",
    "TokenBucket",
    "Unhandled",
    "V15Abi",
    "Vcpu",
    "Vm",
    "Vmm",
    "decode_kvm_run",
    "encode_kvm_run",
]
