"""The VMM side of the certificate exit: a certificate store with file locks, rate limiting,
and the loop that services a vCPU's userspace exits for either ABI.

Sources: the seed patch's api.rst text (ret 1 INVALID_LEN with the page count in
``data_npages``, 2 BUSY, other non-zero GENERIC; NOTIFY_DONE), the merged ABI (ret 0 /
ENOSPC with ``npages`` / EAGAIN / EIO; ``immediate_exit``), and their shared locking scheme
(see :mod:`ghcb.hypervisor.locking`); GHCB spec §4.1.7 (a hypervisor may throttle guest
requests and answer BUSY).

The VMM writes the blob into ``[gpa, gpa + len(blob))`` only when ``npages`` pages hold it
(``pages_needed(len(blob)) <= npages``), never outside ``[gpa, gpa + npages * 4096)``, and
only into shared guest pages (else it answers GENERIC / EIO).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ghcb.certs import pages_needed
from ghcb.codes import Errno, VmmError
from ghcb.errors import GhcbError
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.memory import GuestMemoryError
from ghcb.hypervisor.vcpu import (
    CertsExit,
    MergedAbi,
    RunResult,
    V15Abi,
    Vcpu,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.schemas.certs import CERT_ENTRY_SIZE
from ghcb.schemas.kvm import REQ_CERTS_FLAGS_NOTIFY_DONE

if TYPE_CHECKING:
    from collections.abc import Callable

    from ghcb.hypervisor.memory import GuestMemory
    from ghcb.hypervisor.store import CertificateStore, Lease

__all__ = ["TokenBucket", "Vmm"]

_EMPTY_TABLE: Final = bytes(CERT_ENTRY_SIZE)


@dataclass
class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second of ``clock``."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1:
            raise HypervisorUsageError(
                "rate must be >= 0 and burst >= 1", rule="rate-limit", spec="GHCB spec §4.1.7"
            )
        self.tokens = float(self.burst)
        self.stamp = self.clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self.clock()
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
        notify: hold the blob's lock until the request has reached firmware, learning when
            through ``immediate_exit`` (merged) or NOTIFY_DONE (v15), as KVM documents.
    """

    def __init__(
        self,
        memory: GuestMemory,
        store: CertificateStore,
        *,
        limiter: TokenBucket | None = None,
        notify: bool = True,
    ) -> None:
        self.memory = memory
        self.store = store
        self.limiter = limiter
        self.notify = notify
        self._lease: Lease | None = None

    def run(self, vcpu: Vcpu) -> RunResult:
        """KVM_RUN on ``vcpu`` until the guest is answered (or KVM_RUN fails), servicing every
        certificate exit in between; the blob's lock is released once the request is done."""
        abi = vcpu.vm.cert_abi
        result = vcpu.run()
        try:
            while isinstance(result, CertsExit):
                if abi is None:  # pragma: no cover - the vCPU exits only with an ABI
                    raise HypervisorUsageError("exit without ABI", rule="vmm", spec="")
                result = vcpu.complete(self.service(abi, result))
        finally:
            self.release()
        return result

    def service(self, abi: MergedAbi | V15Abi, exit_: CertsExit) -> bytes:
        """The ``kvm_run`` bytes answering ``exit_`` (a lock may stay held: see ``release``)."""
        _prefix, body = decode_kvm_run(abi, exit_.kvm_run)
        if exit_.done:
            self.release()  # v15 STATUS_DONE: the request reached firmware
            return exit_.kvm_run
        merged = isinstance(abi, MergedAbi)
        fields = dict(body)
        immediate_exit = 0
        if self.limiter is not None and not self.limiter.take():
            fields["ret"] = Errno.EAGAIN if merged else VmmError.BUSY
        else:
            fields["ret"] = self._supply(exit_, merged, fields)
            if self._lease is not None:  # certificates supplied: learn when firmware is done
                if self.notify and merged:
                    immediate_exit = 1
                elif self.notify:
                    fields["flags"] = body["flags"] | REQ_CERTS_FLAGS_NOTIFY_DONE
                else:
                    self.release()
        return encode_kvm_run(abi, fields, immediate_exit=immediate_exit)

    def _supply(self, exit_: CertsExit, merged: bool, fields: dict[str, int]) -> int:
        """Write the blob for ``exit_`` and return ``ret``; on success the shared lock stays
        held in ``self._lease``. Every failure releases it."""
        generic = Errno.EIO if merged else VmmError.GENERIC_V15
        try:
            self._lease = self.store.lease()
        except (OSError, GhcbError):  # missing blob, lock failure: the guest gets GENERIC
            return generic
        try:
            blob = self._lease.data
            if not blob and not exit_.npages:
                return 0  # no certificates and no buffer: nothing to write (as KVM's own mode)
            blob = blob or _EMPTY_TABLE
            need = pages_needed(len(blob))
            if need > exit_.npages:
                fields["npages" if merged else "data_npages"] = need
                self.release()
                return Errno.ENOSPC if merged else VmmError.INVALID_LEN
            self.memory.host_write(exit_.gpa, blob)
        except GuestMemoryError:
            self.release()
            return generic
        except BaseException:
            self.release()
            raise
        return 0

    def release(self) -> None:
        """Drop the blob's lock if one is held."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    @property
    def holding_lock(self) -> bool:
        """Whether a blob lock is held (between supplying certificates and completion)."""
        return self._lease is not None and self._lease.held
