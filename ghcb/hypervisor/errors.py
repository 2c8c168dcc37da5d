"""The reference hypervisor's errors, split by who is to blame (as h11 splits local and remote
protocol errors).

* The **guest** is never blamed by an exception: whatever bytes it writes are answered on the
  wire (EXITINFO1/2, RBX) or by a failed ``KVM_RUN`` (:class:`~ghcb.hypervisor.vcpu.RunFailed`),
  exactly as KVM answers them.
* :class:`HypervisorUsageError` — the **caller** drove the model out of protocol or passed a
  value of the wrong type or range (h11's ``LocalProtocolError``).
* :class:`HostError` — the **host's environment** failed: the certificate store, a file lock,
  the firmware. The VMM answers the guest GENERIC for these; they reach a caller only from the
  store or the firmware used directly.
* :class:`HypervisorBug` — an internal invariant broke. It is deliberately *not* a
  :class:`~ghcb.errors.GhcbError`, so a fuzz harness can tell a leaked internal error from a
  caller's mistake.
"""

from __future__ import annotations

from ghcb.errors import GhcbError

__all__ = ["HostError", "HypervisorBug", "HypervisorUsageError"]


class HypervisorUsageError(GhcbError):
    """The caller drove the vCPU or the VMM out of protocol, or passed a bad argument."""


class HostError(GhcbError):
    """The host's environment failed (certificate store, lock, firmware)."""


class HypervisorBug(RuntimeError):
    """An internal invariant of the reference hypervisor broke (never the caller's fault)."""
