"""KVM's per-vCPU state and its mapping of the GHCB, for :mod:`ghcb.hypervisor.vcpu` (which
holds the state machine and its rules).

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``struct vcpu_sev_es_state``,
``sev_es_sync_from_ghcb``, ``sev_es_sync_to_ghcb``, ``sev_es_unmap_ghcb``,
``setup_vmgexit_scratch``'s ``ghcb_sa``), ``arch/x86/kvm/svm/svm.h`` (``ghcb_set_*``). The
methods under "handler context" are what :mod:`~ghcb.hypervisor.kvm_abi` and
:mod:`~ghcb.hypervisor.events` handlers use (``RequestContext`` / ``EventContext``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final, NamedTuple

from ghcb._fast import struct_format
from ghcb.hypervisor.errors import HypervisorBug
from ghcb.hypervisor.kvm_abi import KVM_RUN_SIZE
from ghcb.hypervisor.memory import GuestMemory, GuestMemoryError
from ghcb.hypervisor.results import Resumed, Via
from ghcb.page import FIELDS, VALID_BIT, GhcbPage, parse_page

if TYPE_CHECKING:
    import threading

    from ghcb.hypervisor.firmware import Firmware
    from ghcb.hypervisor.vcpu import Vcpu
    from ghcb.hypervisor.vm import Vm

__all__ = ["EXIT_INFO", "OFFSET", "USAGE", "ScratchCopy", "VcpuState"]

OFFSET: Final = {f.name: f.offset for f in FIELDS}
_BITMAP: Final = slice(OFFSET["valid_bitmap"], OFFSET["valid_bitmap"] + 16)
_ZERO_BITMAP: Final = bytes(16)
_U64: Final = struct.Struct("<Q")
USAGE: Final = struct.Struct("<" + next(f.fmt for f in FIELDS if f.name == "ghcb_usage"))
# sw_exit_code, sw_exit_info_1, sw_exit_info_2, sw_scratch: adjacent in struct ghcb_save_area
EXIT_INFO: Final = struct_format(
    tuple(
        f
        for f in FIELDS
        if f.name in ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2", "sw_scratch")
    )
)
# GHCB_MSR_AP_RESET_HOLD_RESULT_POS / _MASK: the result field of the 0x007 response
_WRITTEN_BACK: Final = ("rax", "rbx", "rcx", "rdx")  # sev_es_sync_to_ghcb
_COPIED_IN: Final = ("rax", "rbx", "rcx", "rdx", "rsi", "cpl")  # sev_es_sync_from_ghcb
# (name, valid bit, offset, unpack_from) of each register sev_es_sync_from_ghcb copies.
_COPIED: Final = tuple(
    (f.name, VALID_BIT[f.name], f.offset, struct.Struct("<" + f.fmt).unpack_from)
    for f in FIELDS
    if f.name in _COPIED_IN
)
_SCRATCH_BIT: Final = VALID_BIT["sw_scratch"]


class _GhcbWrite(NamedTuple):
    """Where ``ghcb_set_<field>()`` of some fields writes: each field's offset, and the valid
    bits to set as (bitmap byte offset, mask) pairs, merged per byte."""

    offsets: tuple[int, ...]
    bits: tuple[tuple[int, int], ...]


def _ghcb_write(*names: str) -> _GhcbWrite:
    masks: dict[int, int] = {}
    for name in names:
        byte = OFFSET["valid_bitmap"] + VALID_BIT[name] // 8
        masks[byte] = masks.get(byte, 0) | 1 << VALID_BIT[name] % 8
    return _GhcbWrite(tuple(OFFSET[name] for name in names), tuple(masks.items()))


_SET_INFO: Final = _ghcb_write("sw_exit_info_1", "sw_exit_info_2")
_SET_INFO_2: Final = _ghcb_write("sw_exit_info_2")
_SYNC_TO_GHCB: Final = _ghcb_write(*_WRITTEN_BACK)


class ScratchCopy:
    """KVM's copy of a scratch area outside the GHCB (``svm->sev_es.ghcb_sa``, filled by
    "kvm_read_guest(svm->vcpu.kvm, scratch_gpa_beg, scratch_va, min_len)") as the
    :class:`~ghcb.hypervisor.psc.HostMemory` a PSC engine reads and writes: its updates land
    in the copy, which ``sev_es_unmap_ghcb`` writes back to the guest. The engine stays
    within ``ghcb_sa_len`` (``in_ghcb=False``)."""

    def __init__(self, gpa: int, view: memoryview) -> None:
        self._gpa = gpa
        self._view = view

    def _span(self, gpa: int, size: int) -> slice:
        start = gpa - self._gpa
        # unreachable: the PSC engine reads and writes only within ghcb_sa_len (in_ghcb=False)
        if start < 0 or size < 0 or start + size > len(self._view):  # pragma: no cover, no mutate
            msg = f"{size} bytes at {gpa:#x} are outside the scratch copy"  # pragma: no mutate
            raise HypervisorBug(msg)  # pragma: no mutate
        return slice(start, start + size)

    def host_read(self, gpa: int, size: int) -> bytes:
        return self._view[self._span(gpa, size)].tobytes()

    def host_write(self, gpa: int, data: bytes) -> None:
        self._view[self._span(gpa, len(data))] = data


class VcpuState:
    """What KVM keeps per vCPU (``struct vcpu_svm`` / ``vcpu_sev_es_state``) and the GHCB
    mapping; :class:`~ghcb.hypervisor.vcpu.Vcpu` adds the state machine."""

    def __init__(
        self, vm: Vm, memory: GuestMemory, vcpu_id: int, ghcb_gpa: int, runnable: bool
    ) -> None:
        self.vm = vm
        self.memory = memory
        self.vcpu_id = vcpu_id
        self.ghcb_gpa = ghcb_gpa
        self.ghcb_msr = ghcb_gpa  # control->ghcb_gpa: the GHCB MSR as the guest last wrote it
        self.regs: dict[str, int] = dict.fromkeys(_COPIED_IN, 0)
        self.exit_info_1 = self.exit_info_2 = 0  # control->exit_info_1 / exit_info_2
        self.sw_scratch = 0  # svm->sev_es.sw_scratch
        self.nmi_masked = False  # "svm->nmi_masked = false;" (__svm_vcpu_reset)
        self.kvm_run: bytes = bytes(KVM_RUN_SIZE)  # the kvm_run page as it stands
        self.runnable = bool(runnable)  # mp_state RUNNABLE (else HALTED)
        self.vmsa_gpa: int | None = None  # the guest's VMSA in use (None: KVM's own)
        self.snp_vmsa_gpa: int | None = None  # sev_es.snp_vmsa_gpa (None: INVALID_PAGE)
        self.ap_waiting_for_reset = False  # sev_es.snp_ap_waiting_for_reset
        self.update_requested = False  # KVM_REQ_UPDATE_PROTECTED_GUEST_STATE pending
        self.received_first_sipi = False  # sev_es.received_first_sipi
        self._hold: Via | None = None  # sev_es.ap_reset_hold_type (None: AP_RESET_HOLD_NONE)
        self._map: memoryview | None = None  # svm->sev_es.ghcb_map
        self._mapped_gpa = 0
        self._sa: tuple[int, bytearray] | None = None  # ghcb_sa outside the GHCB, to sync
        self._valid = 0  # svm->sev_es.valid_bitmap (KVM's snapshot)
        self._undefined: str | None = None

    # -- handler context (RequestContext / EventContext) ----------------------------------
    @property
    def firmware(self) -> Firmware:
        return self.vm.firmware

    @property
    def guest_req_lock(self) -> threading.Lock:
        return self.vm.lock

    @property
    def guest_resp_buf(self) -> bytearray:
        return self.vm.guest_resp_buf

    @property
    def mapped_gpa(self) -> int:
        return self._mapped_gpa

    def is_valid(self, name: str) -> bool:
        return bool(self._valid >> VALID_BIT[name] & 1)

    def read_guest(self, gpa: int, size: int) -> bytes | None:
        try:
            return self.memory.host_read(gpa, size)
        except GuestMemoryError:
            return None

    def write_guest(self, gpa: int, data: bytes | bytearray) -> bool:
        try:
            self.memory.host_write(gpa, data)
        except GuestMemoryError:
            return False
        return True

    def is_mapped(self, gpa: int) -> bool:
        try:
            return self.memory.is_mapped(gpa)
        except GuestMemoryError:
            return False

    def set_exit_info(self, info1: int, info2: int) -> None:
        self._ghcb_set(_SET_INFO, info1, info2)

    def set_exit_info_2(self, info2: int) -> None:
        self._ghcb_set(_SET_INFO_2, info2)

    def note_undefined(self, what: str) -> None:
        self._undefined = what

    def vcpu_by_id(self, vcpu_id: int) -> Vcpu | None:
        return self.vm.vcpus.get(vcpu_id)

    def map_scratch(self, gpa: int, length: int, in_ghcb: bool, sync: bool) -> memoryview | None:
        """``svm->sev_es.ghcb_sa``: in the GHCB, the mapped page's own bytes; outside it, a
        buffer "kvm_read_guest(svm->vcpu.kvm, scratch_gpa_beg, scratch_va, min_len)" filled,
        written back before the next entry when ``sync`` (``sev_es_unmap_ghcb``)."""
        view = self._map
        if view is None:  # pragma: no cover - handlers run only with the GHCB mapped
            raise HypervisorBug("scratch area without a mapped GHCB")  # pragma: no mutate
        if in_ghcb:
            start = gpa - self._mapped_gpa
            return view[start : start + length]
        data = self.read_guest(gpa, length)
        if data is None:
            return None
        buffer = bytearray(data)
        if sync:
            self._sa = (gpa, buffer)
        return memoryview(buffer)

    def _sync_from_ghcb(self, view: memoryview) -> int:
        """``sev_es_sync_from_ghcb``: "memset(vcpu->arch.regs, 0, …)", then each register
        "kvm_ghcb_get_<reg>_if_valid"; exit_info_1/2 copied unconditionally, sw_scratch if
        valid; the bitmap snapshotted (returned), then "memset(ghcb->save.valid_bitmap, 0, …)"
        in the mapped page."""
        self._valid = bits = int.from_bytes(view[_BITMAP], "little")
        self.regs = {
            name: unpack(view, offset)[0] if bits >> bit & 1 else 0
            for name, bit, offset, unpack in _COPIED
        }
        _, self.exit_info_1, self.exit_info_2, scratch = EXIT_INFO.unpack_from(
            view, OFFSET["sw_exit_code"]
        )
        self.sw_scratch = scratch if bits >> _SCRATCH_BIT & 1 else 0
        view[_BITMAP] = _ZERO_BITMAP
        return bits

    # -- the GHCB --------------------------------------------------------------------------
    def _ghcb_set(self, where: _GhcbWrite, *values: int) -> None:
        """``ghcb_set_<field>`` for each field of ``where``: "__set_bit(GHCB_BITMAP_IDX(field),
        …valid_bitmap); ghcb->save.field = value;" in the mapped page."""
        view = self._map
        if view is None:  # pragma: no cover - handlers run only with the GHCB mapped
            raise HypervisorBug("GHCB write without a mapped GHCB")  # pragma: no mutate
        for offset, value in zip(where.offsets, values, strict=True):
            _U64.pack_into(view, offset, value)
        for byte, mask in where.bits:
            view[byte] |= mask

    def _page(self) -> GhcbPage | None:
        return None if self._map is None else parse_page(self._map.tobytes())

    def _unmap(self) -> None:
        self._map = None
        self._sa = None

    def _enter_guest(self) -> Resumed:
        """``svm_prepare_switch_to_guest`` → ``sev_es_unmap_ghcb``: "ap_reset_hold_type =
        AP_RESET_HOLD_NONE"; an outside scratch area "if (svm->sev_es.ghcb_sa_sync)
        kvm_write_guest(...)"; ``sev_es_sync_to_ghcb``: "ghcb_set_rax(ghcb,
        vcpu->arch.regs[VCPU_REGS_RAX]);" (and RBX, RCX, RDX), unmap. Without a GHCB (an MSR
        request) the guest reads the GHCB MSR."""
        self._hold = None
        if self._map is None:
            return Resumed(None, msr=self.ghcb_msr)
        if self._sa is not None:
            gpa, buffer = self._sa
            self.write_guest(gpa, buffer)
        regs = self.regs
        self._ghcb_set(_SYNC_TO_GHCB, *(regs[name] for name in _WRITTEN_BACK))
        page = parse_page(self._map.tobytes())
        self._unmap()
        return Resumed(page, self._undefined)
