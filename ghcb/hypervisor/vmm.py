"""The VMM side of the certificate exit: rate limiting, and the loop that services a vCPU's
userspace exits for either ABI with the blob of a :class:`~ghcb.hypervisor.store.CertificateStore`.

Sources: the seed patch's api.rst text (ret 1 INVALID_LEN with the page count in
``data_npages``, 2 BUSY, other non-zero GENERIC; NOTIFY_DONE), the merged ABI (ret 0 /
ENOSPC with ``npages`` / EAGAIN / EIO; ``immediate_exit``), and their shared locking scheme
(see :mod:`ghcb.hypervisor.locking`); GHCB spec §4.1.7 (a hypervisor may throttle guest
requests and answer BUSY). Which ``ret`` and which field mean what is the ABI object's
(:mod:`ghcb.hypervisor.kvm_abi`); the VMM only decides the answer.

The VMM writes the blob into ``[gpa, gpa + len(blob))`` only when ``npages`` pages hold it
(``pages_needed(len(blob)) <= npages``), never outside ``[gpa, gpa + npages * 4096)``. It
writes through its own mapping of guest memory (the shared backing, as QEMU does): into a page
the guest holds private the write lands where the guest does not look. A GPA with no memory,
a missing or corrupt store or a lock failure answers GENERIC and writes nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ghcb.certs import pages_needed
from ghcb.hypervisor.errors import HostError, HypervisorUsageError
from ghcb.hypervisor.kvm_abi import VmmAnswer, with_immediate_exit
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.hypervisor.store import CertificateStore
from ghcb.hypervisor.vcpu import CertsExit, Interrupted, RunResult, Vcpu
from ghcb.schemas.certs import CERT_ENTRY_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

    from ghcb.hypervisor.kvm_abi import CertAbi
    from ghcb.hypervisor.store import Lease

__all__ = ["TokenBucket", "Vmm"]

_EMPTY_TABLE: Final = bytes(CERT_ENTRY_SIZE)
_SPEC_VMM: Final = "ghcb.hypervisor.vmm"


def _finite(value: float) -> bool:
    """A number that converts to a finite float (2**2000 does not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_SPEC_RATE: Final = "GHCB spec §4.1.7 (BUSY)"


@dataclass
class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second of ``clock``.

    The clock is injected (tests pass a fake one). A clock that goes backwards credits nothing
    until it passes its highest reading again, so the bucket never over-credits and never
    holds a negative or non-finite count.
    """

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        rate_ok = isinstance(self.rate, int | float) and not isinstance(self.rate, bool)
        burst_ok = isinstance(self.burst, int) and not isinstance(self.burst, bool)
        if not (rate_ok and burst_ok and _finite(self.rate) and _finite(self.burst)):
            raise HypervisorUsageError(
                f"rate must be a finite number and burst an int, not {self.rate!r} / "
                f"{self.burst!r}",
                rule="rate-limit",
                spec=_SPEC_RATE,
            )
        if self.rate < 0 or self.burst < 1:
            raise HypervisorUsageError(
                "rate must be >= 0 and burst >= 1", rule="rate-limit", spec=_SPEC_RATE
            )
        if not callable(self.clock):
            raise HypervisorUsageError("clock must be callable", rule="rate-limit", spec=_SPEC_RATE)
        self.tokens = float(self.burst)
        self.stamp = self._now()

    def _now(self) -> float:
        now = self.clock()
        if not isinstance(now, int | float) or not math.isfinite(now):
            raise HypervisorUsageError(
                f"clock returned {now!r}, not a finite number", rule="rate-limit", spec=_SPEC_RATE
            )
        return float(now)

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self._now()
        if now > self.stamp:  # backwards or still: no credit, keep the highest reading
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Vmm:
    """Services certificate exits for one VM.

    Args:
        memory: the guest's memory (the VMM writes certificates through the host side).
        store: where the certificate blob comes from.
        limiter: answer BUSY (v15 ret 2 / merged EAGAIN) when it has no token.
        trace: called with each KVM_RUN result :meth:`run` sees and, for a certificate exit,
            the ``kvm_run`` bytes the VMM answered (``None`` otherwise) — to watch the exchange.
        notify: hold the blob's lock until the request has reached firmware, learning when
            through ``immediate_exit`` (merged) or NOTIFY_DONE (v15), as KVM documents.
            ``False`` drops the lock right after writing the certificates (the race the
            documentation warns about).
    """

    def __init__(
        self,
        memory: GuestMemory,
        store: CertificateStore,
        *,
        limiter: TokenBucket | None = None,
        notify: bool = True,
        trace: Callable[[RunResult, bytes | None], None] | None = None,
    ) -> None:
        if not isinstance(memory, GuestMemory) or not isinstance(store, CertificateStore):
            raise HypervisorUsageError(
                "Vmm(memory, store) needs a GuestMemory and a CertificateStore",
                rule="input-type",
                spec=_SPEC_VMM,
            )
        if limiter is not None and not isinstance(limiter, TokenBucket):
            raise HypervisorUsageError(
                "limiter must be a TokenBucket or None", rule="input-type", spec=_SPEC_VMM
            )
        self.memory = memory
        self.store = store
        self.limiter = limiter
        if trace is not None and not callable(trace):
            raise HypervisorUsageError("trace must be callable", rule="input-type", spec=_SPEC_VMM)
        self.notify = bool(notify)
        self.trace = trace
        self._lease: Lease | None = None

    def run(self, vcpu: Vcpu) -> RunResult:
        """KVM_RUN on ``vcpu`` until the guest is answered (or KVM_RUN fails), servicing every
        certificate exit in between; the blob's lock is released once the request reached
        firmware (the -EINTR of ``immediate_exit``, or the v15 DONE exit) and in any case
        before returning."""
        if not isinstance(vcpu, Vcpu) or vcpu.memory is not self.memory:
            raise HypervisorUsageError(
                "Vmm.run needs a Vcpu of this VMM's guest memory", rule="input-type", spec=_SPEC_VMM
            )
        abi = vcpu.vm.abi
        result = vcpu.run()
        try:
            while True:
                answer = self.service(abi, result) if isinstance(result, CertsExit) else None
                if self.trace is not None:
                    self.trace(result, answer)
                if answer is not None:
                    result = vcpu.complete(answer)
                elif isinstance(result, Interrupted):
                    # "…exits with -EINTR, at which point the lock can be dropped"; then
                    # KVM_RUN again with immediate_exit cleared, to enter the guest
                    self.release()
                    result = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0))
                else:
                    return result
        finally:
            self.release()

    def service(self, abi: CertAbi, exit_: CertsExit) -> bytes:
        """The ``kvm_run`` bytes answering ``exit_`` (a lock may stay held: see ``release``)."""
        if exit_.done:
            self.release()  # v15 STATUS_DONE: the request reached firmware
            return exit_.kvm_run
        if self.limiter is not None and not self.limiter.take():
            return abi.reply(exit_.kvm_run, VmmAnswer.BUSY, hold=False)
        answer, need = self._supply(exit_.gpa, exit_.npages)
        hold = answer is VmmAnswer.OK and self._lease is not None and self.notify
        if not hold:
            self.release()
        return abi.reply(exit_.kvm_run, answer, npages=need, hold=hold)

    def _supply(self, gpa: int, npages: int) -> tuple[VmmAnswer, int | None]:
        """Write the blob for a request of ``npages`` pages at ``gpa``; on OK the shared lock
        stays held in ``self._lease``. Every failure releases it."""
        try:
            self._lease = self.store.lease()
        except (OSError, HostError):  # missing or corrupt blob, lock failure
            return VmmAnswer.GENERIC, None
        try:
            blob = self._lease.data
            if not blob and not npages:
                return VmmAnswer.OK, None  # no certificates, no buffer: nothing to write
            blob = blob or _EMPTY_TABLE  # no certificates: the empty table
            need = pages_needed(len(blob))
            if need > npages:
                self.release()
                return VmmAnswer.TOO_SMALL, need
            self.memory.host_write(gpa, blob)
        except GuestMemoryError:
            self.release()
            return VmmAnswer.GENERIC, None
        except BaseException:
            self.release()
            raise
        return VmmAnswer.OK, None

    def release(self) -> None:
        """Drop the blob's lock if one is held."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    @property
    def holding_lock(self) -> bool:
        """Whether a blob lock is held (between supplying certificates and completion)."""
        return self._lease is not None and self._lease.held
