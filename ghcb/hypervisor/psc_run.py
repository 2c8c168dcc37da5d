"""The ``KVM_EXIT_HYPERCALL`` exit of a page state change, and the VMM's side of it.

For each range of a PSC KVM hands to userspace, ``KVM_RUN`` returns with ``exit_reason =
KVM_EXIT_HYPERCALL`` and ``kvm_run.hypercall`` = ``{nr = KVM_HC_MAP_GPA_RANGE, args[0] = GPA,
args[1] = 4 KiB pages, args[2] = KVM_MAP_GPA_RANGE_* attributes, ret = 0}`` (Linux
``include/uapi/linux/kvm.h``, ``arch/x86/kvm/svm/sev.c`` ``snp_begin_psc`` /
``snp_begin_psc_msr``); userspace converts the range and writes ``ret`` before the next
``KVM_RUN``. The layout is :data:`ghcb.schemas.kvm.kvm_hypercall_exit`; the engines that make
these exits are in :mod:`ghcb.hypervisor.psc` (which re-exports this module's names), on the
``begin`` / ``complete`` / ``complete_run`` base here (the exit bytes, the call order).
"""

from __future__ import annotations

import struct
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

from ghcb._fast import flat_fields
from ghcb.codes import Errno, KvmExit, PscOp
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.kvm_abi import KVM_RUN_SIZE, kvm_run_bytes
from ghcb.schemas.kvm import (
    KVM_HC_MAP_GPA_RANGE,
    KVM_MAP_GPA_RANGE_DECRYPTED,
    KVM_MAP_GPA_RANGE_ENCRYPTED,
    KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
    KVM_MAP_GPA_RANGE_PAGE_SZ_4K,
    KVM_RUN_EXIT_UNION_OFFSET,
    kvm_hypercall_exit,
    kvm_run_prefix,
)
from ghcb.schemas.page import PAGE_SIZE

__all__ = [
    "ConvertibleMemory",
    "HostMemory",
    "HypercallExit",
    "MapGpaRange",
    "checked_kvm_run",
    "decode_hypercall_exit",
    "map_gpa_range_exit",
    "vmm_map_gpa_range",
    "with_hypercall_ret",
]

SPEC_RUN: Final = "Linux uapi/linux/kvm.h kvm_run.hypercall (KVM_EXIT_HYPERCALL)"
_U64: Final = (1 << 64) - 1
_GPA_LIMIT: Final = 1 << 52
_Done = TypeVar("_Done")
_ERR_EINVAL: Final = -int(Errno.EINVAL) & _U64  # QEMU: run->hypercall.ret = -EINVAL

# -- kvm_run: the prefix and the hypercall exit, from the schemas ----------------------------
_RUN_FIELDS: Final = {
    f.name: (f.offset, struct.Struct("<" + f.fmt))
    for f in flat_fields(kvm_run_prefix)
    + flat_fields(kvm_hypercall_exit, KVM_RUN_EXIT_UNION_OFFSET)
    if f.kind == "int"
}
_HC: Final = flat_fields(kvm_hypercall_exit, KVM_RUN_EXIT_UNION_OFFSET)
_HC_STRUCT: Final = struct.Struct("<" + "".join(f.fmt for f in _HC))


class HostMemory(Protocol):
    """What the engines use of guest memory: KVM's host mapping
    (:class:`~ghcb.hypervisor.memory.GuestMemory` is one)."""

    def host_read(self, gpa: int, size: int) -> bytes: ...

    def host_write(self, gpa: int, data: bytes) -> None: ...


class ConvertibleMemory(HostMemory, Protocol):
    """What :func:`vmm_map_gpa_range` uses: the page states too."""

    def mapped_count(self, gpa: int, npages: int) -> int: ...

    def set_shared(
        self,
        gpa: int,
        npages: int = 1,  # pragma: no mutate - a Protocol stub's default never runs
        *,
        shared: bool,
    ) -> None: ...


class MapGpaRange(NamedTuple):
    """``return 0``: ``KVM_RUN`` returns with ``KVM_EXIT_HYPERCALL`` / ``KVM_HC_MAP_GPA_RANGE``.

    ``kvm_run`` is the exact bytes (prefix + exit union) KVM leaves; the other fields are
    ``args[0..2]`` decoded.
    """

    kvm_run: bytes
    gpa: int
    npages: int
    attributes: int

    @property
    def private(self) -> bool:
        """Whether the range becomes private (``KVM_MAP_GPA_RANGE_ENCRYPTED``)."""
        return bool(self.attributes & KVM_MAP_GPA_RANGE_ENCRYPTED)


class HypercallExit(NamedTuple):
    """The integer fields of a ``KVM_EXIT_HYPERCALL`` ``kvm_run``."""

    exit_reason: int
    nr: int
    args: tuple[int, int, int, int, int, int]
    ret: int
    flags: int


def checked_kvm_run(kvm_run: object) -> bytes:
    """``kvm_run`` bytes (prefix + exit union), or the bytes of a :class:`MapGpaRange`.

    Raises:
        HypervisorUsageError: not bytes-like, or not :data:`KVM_RUN_SIZE` bytes long.
    """
    if isinstance(kvm_run, MapGpaRange):
        kvm_run = kvm_run.kvm_run
    return kvm_run_bytes(kvm_run)  # kvm_abi's check: bytes-like, KVM_RUN_SIZE long, as bytes


def decode_hypercall_exit(kvm_run: bytes | MapGpaRange) -> HypercallExit:
    """The hypercall exit fields of ``kvm_run`` bytes (whatever ``exit_reason`` says)."""
    raw = checked_kvm_run(kvm_run)
    offset, reason = _RUN_FIELDS["exit_reason"]
    nr, *args, ret, flags = _HC_STRUCT.unpack_from(raw, KVM_RUN_EXIT_UNION_OFFSET)
    a = tuple(args)
    return HypercallExit(
        reason.unpack_from(raw, offset)[0], nr, (a[0], a[1], a[2], a[3], a[4], a[5]), ret, flags
    )


def _write(base: bytes, values: dict[str, int]) -> bytes:
    out = bytearray(base)
    for name, value in values.items():
        offset, packer = _RUN_FIELDS[name]
        packer.pack_into(out, offset, value)
    return bytes(out)


def with_hypercall_ret(kvm_run: bytes | MapGpaRange, ret: int) -> bytes:
    """``kvm_run`` with ``hypercall.ret`` set: what userspace writes before the next KVM_RUN.

    Raises:
        HypervisorUsageError: ``kvm_run`` is not ``kvm_run`` bytes, ``ret`` not a u64.
    """
    return _write(checked_kvm_run(kvm_run), {"ret": _u64(ret, "hypercall.ret")})


def _u64(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64:
        raise HypervisorUsageError(
            f"{what} must be an int in 0..2**64-1, not {value!r}", rule="field-range", spec=SPEC_RUN
        )
    return value


def map_gpa_range_exit(base: bytes, gpa: int, npages: int, attributes: int) -> MapGpaRange:
    """KVM's writes for one range: ``exit_reason = KVM_EXIT_HYPERCALL``, ``hypercall.nr =
    KVM_HC_MAP_GPA_RANGE``, ``ret = 0``, ``args[0..2]``, over ``base`` (other fields kept)."""
    run = _write(
        base,
        {
            "exit_reason": KvmExit.HYPERCALL,
            "nr": KVM_HC_MAP_GPA_RANGE,
            "ret": 0,
            "args_0": gpa,
            "args_1": npages,
            "args_2": attributes,
        },
    )
    return MapGpaRange(run, gpa, npages, attributes)


# -- the VMM side -----------------------------------------------------------------------------
def vmm_map_gpa_range(memory: ConvertibleMemory, step: MapGpaRange | bytes) -> int:
    """Userspace's answer to a ``KVM_HC_MAP_GPA_RANGE`` exit: convert the range, return
    ``hypercall.ret``.

    What QEMU does (``kvm_handle_hc_map_gpa_range`` → ``kvm_convert_memory(gpa, npages *
    4096, attributes & KVM_MAP_GPA_RANGE_ENCRYPTED)``), on this model's memory: the page-size
    flags are ignored; a range whose pages are all mapped is converted (all or nothing) and
    the answer is 0; a range with no mapped page is ignored with 0 when it becomes shared
    ("non-assigned region to shared") and refused when it becomes private; a partly mapped
    range, zero pages, or another hypercall number is refused. A refusal is ``-EINVAL`` as
    QEMU writes it into the u64 ``ret`` — QEMU then stops the VM; a VMM that passes it on
    with :meth:`GhcbPsc.complete` lets the guest see GENERIC.
    """
    call = decode_hypercall_exit(step)  # a MapGpaRange is read as its kvm_run
    if call.nr != KVM_HC_MAP_GPA_RANGE:
        return _ERR_EINVAL
    gpa, npages, attributes = call.args[:3]
    private = bool(attributes & KVM_MAP_GPA_RANGE_ENCRYPTED)
    if npages == 0 or gpa % PAGE_SIZE or gpa + npages * PAGE_SIZE > _GPA_LIMIT:
        return _ERR_EINVAL
    # bounded by the memory's page set, not by npages (args[1] is any u64)
    mapped = memory.mapped_count(gpa, npages)
    if mapped == 0 and not private:
        return 0
    if mapped != npages:
        return _ERR_EINVAL
    memory.set_shared(gpa, npages, shared=not private)
    return 0


# -- the engines' exit machinery (ghcb.hypervisor.psc: GhcbPsc, MsrPsc) ---------------------
_NEW, _AWAIT, _DONE = "new", "await", "done"


class _Engine(Generic[_Done]):
    """``begin`` / ``complete`` / ``complete_run`` and the exit KVM writes; ``_Done`` is the
    engine's final answer."""

    _spec: str = SPEC_RUN

    def __init__(self, kvm_run: bytes | None, exit_enabled: bool) -> None:
        self._run = bytes(KVM_RUN_SIZE) if kvm_run is None else checked_kvm_run(kvm_run)
        self._exit_enabled = bool(exit_enabled)
        self._state = _NEW
        self.exits = 0  # KVM_EXIT_HYPERCALL exits made so far

    @property
    def done(self) -> bool:
        """Whether the final answer was given."""
        return self._state == _DONE

    def begin(self) -> MapGpaRange | _Done:
        """Run KVM's handler for the request (once)."""
        self._expect(_NEW, "begin")
        return self._begin()

    def complete(self, ret: int) -> MapGpaRange | _Done:
        """The next ``KVM_RUN`` after userspace wrote ``hypercall.ret = ret`` into the exit."""
        self._expect(_AWAIT, "complete")
        return self.complete_run(with_hypercall_ret(self._run, ret))

    def complete_run(self, kvm_run: bytes) -> MapGpaRange | _Done:
        """The next ``KVM_RUN`` with ``kvm_run`` as userspace left it (``hypercall.ret`` is
        read from it; it is the base of KVM's writes for a further exit)."""
        self._expect(_AWAIT, "complete")
        self._run = checked_kvm_run(kvm_run)
        return self._complete(decode_hypercall_exit(self._run).ret)

    def _expect(self, state: str, what: str) -> None:
        if self._state != state:
            raise HypervisorUsageError(
                f"{what}() in state {self._state!r} (expected {state!r})",
                rule="psc-state",
                spec=self._spec,
            )

    def _exit(self, gpa: int, npages: int, attributes: int) -> MapGpaRange:
        step = map_gpa_range_exit(self._run, gpa, npages, attributes)
        self._run = step.kvm_run
        self._state = _AWAIT
        self.exits += 1
        return step

    def _begin(self) -> MapGpaRange | _Done:
        raise NotImplementedError

    def _complete(self, ret: int) -> MapGpaRange | _Done:
        raise NotImplementedError


def _attributes(operation: int, pagesize: int) -> int:
    enc = KVM_MAP_GPA_RANGE_ENCRYPTED if operation == PscOp.PRIVATE else KVM_MAP_GPA_RANGE_DECRYPTED
    return enc | (KVM_MAP_GPA_RANGE_PAGE_SZ_2M if pagesize else KVM_MAP_GPA_RANGE_PAGE_SZ_4K)
