"""The records :mod:`ghcb.strategies` yields beside plain bytes and pages, kept free of
hypothesis so the ``hypothesis`` entry point (:mod:`ghcb._hypothesis`) can register them while
hypothesis itself is still being imported."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi

__all__ = ["HostileCertTable", "KvmExit"]


class HostileCertTable(NamedTuple):
    """A hostile table: its bytes, the codes :func:`ghcb.check_cert_table` must report for it
    (at least these), and what was done to the valid table it came from."""

    data: bytes
    violations: frozenset[str]
    mutation: str


class KvmExit(NamedTuple):
    """A certificate exit as KVM leaves it in ``kvm_run``: the ABI, the exit struct's fields
    KVM wrote, and the ``kvm_run`` bytes (prefix + exit union) a VMM reads."""

    abi: MergedAbi | V15Abi
    fields: Mapping[str, int]
    kvm_run: bytes
