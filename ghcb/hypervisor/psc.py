"""KVM's Page State Change handling, sans IO: the GHCB descriptor and the MSR request.

Sources: Linux ``arch/x86/kvm/svm/sev.c`` (``snp_begin_psc``, ``snp_complete_one_psc``,
``__snp_complete_one_psc``, ``snp_complete_psc``, ``snp_begin_psc_msr``,
``snp_complete_psc_msr``, the ``SVM_VMGEXIT_PSC`` case of ``sev_handle_vmgexit``,
``setup_vmgexit_scratch``), ``include/uapi/linux/kvm.h`` (``kvm_run.hypercall``), QEMU
``target/i386/kvm/kvm.c`` ``kvm_handle_hc_map_gpa_range`` and ``accel/kvm/kvm-all.c``
``kvm_convert_memory`` (the VMM side); ghcb-facts.md §7. Descriptor layouts:
:mod:`ghcb.psc`.

API (stable; the vCPU wires it into its transition table):

* ``GhcbPsc(memory, desc_gpa, sa_len)`` — one ``SVM_VMGEXIT_PSC``, created after
  ``setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr))`` succeeded; ``sa_len`` is the
  ``ghcb_sa_len`` it set (``GhcbPsc.in_ghcb`` computes it for a descriptor inside the GHCB).
  ``MsrPsc(msr)`` — one ``GHCB_MSR_PSC_REQ`` (the caller has checked the SNP guest).
* ``begin()`` runs KVM's handler and returns a step: :class:`MapGpaRange` (``return 0``:
  ``KVM_RUN`` returns with a ``KVM_EXIT_HYPERCALL``; ``kvm_run`` holds its exact bytes) or the
  final answer: :class:`PscDone` (``return 1``: the caller writes SW_EXITINFO1 = 0 and
  SW_EXITINFO2 = ``exit_info_2`` to the GHCB, as ``svm_vmgexit_no_action`` does, and resumes
  the guest) or :class:`MsrDone` (the GHCB MSR value the guest reads).
* ``complete(ret)`` is the next ``KVM_RUN`` after userspace set ``kvm_run.hypercall.ret``
  (``complete_run(kvm_run)`` takes the whole ``kvm_run`` bytes userspace left); it returns the
  next step. ``vmm_map_gpa_range(memory, step)`` is the VMM's side of a step;
  :func:`ghcb.hypervisor.psc_answer.kvm_psc_answer` runs a captured descriptor to its end.
* Calls out of order raise :class:`~ghcb.hypervisor.errors.HypervisorUsageError` before
  anything changes; the guest's bytes never raise.

KVM's rules, in its order (sev.c):

1. ``snp_begin_psc``: no userspace exit for KVM_HC_MAP_GPA_RANGE enabled
   (``user_exit_on_hypercall``, ``KVM_CAP_EXIT_HYPERCALL``: ``exit_enabled=False``) →
   GENERIC. ``max_nr_entries = (ghcb_sa_len - 8) / 8`` above VMGEXIT_PSC_MAX_COUNT →
   GENERIC (a ``WARN_ON_ONCE``: a descriptor in the GHCB holds at most 253; a v1 scratch
   outside the GHCB is an 8-byte copy, so 0 entries and every descriptor INVALID_HDR).
2. ``next_range``: ``end_entry >= max_nr_entries`` → INVALID_HDR. There is **no** check of
   ``cur_entry`` against ``end_entry``: ``cur_entry > end_entry`` processes nothing and
   answers success (0). Reserved bits of the header and entries are ignored.
3. From ``cur_entry`` to ``end_entry``: an entry with ``cur_page > npages`` (1 or 512) or a
   2 MiB GFN not 512-aligned → INVALID_ENTRY (entries before it stay done). A partially done
   entry continues at ``gfn + cur_page`` for ``npages - cur_page`` pages, as 4 KiB. A fully
   done entry (``cur_page == npages``) is skipped and the guest's ``hdr.cur_entry`` is
   incremented in place. The operation is not checked here. All entries done → success (0).
4. Coalescing: following entries join the range while their operation equals the first's,
   ``gfn == first.gfn + npages`` (the first entry's *original* GFN plus the pages so far: after
   a partial first entry this is not the next GFN — a KVM quirk modelled as is), their
   ``cur_page`` is 0 and their page size equals the range's (4 KiB after a partial start).
5. Private/shared: ``KVM_EXIT_HYPERCALL`` with ``nr = KVM_HC_MAP_GPA_RANGE``, ``ret = 0``,
   ``args[0]`` = GPA, ``args[1]`` = pages, ``args[2]`` = ENCRYPTED (private) or DECRYPTED,
   ``|`` PAGE_SZ_2M when the *first entry's* ``pagesize`` is set (even when a partial start
   made the range 4 KiB), else PAGE_SZ_4K. ``args[3..5]`` and ``flags`` keep what ``kvm_run``
   held. Any other operation (PSMASH 3, UNSMASH 4, undefined): the range is marked done with
   no exit and processing continues with the next range.
6. ``snp_complete_one_psc`` (next KVM_RUN): ``hypercall.ret != 0`` → GENERIC, the range not
   marked; else ``__snp_complete_one_psc`` sets each entry of the range to ``cur_page = 512``
   (2 MiB entry) or ``1``, ``hdr.cur_entry`` past the range, and rule 1 runs again.
7. MSR (``snp_begin_psc_msr``): operation (bits 55:52) not private/shared, or no userspace
   exit enabled → ``GHCB_MSR_PSC_RESP_ERROR``; else one 4 KiB page exit (GPA = bits 51:12
   ``<< 12``). Completion: ``ret != 0`` → RESP_ERROR, else ``GHCB_MSR_PSC_RESP`` (0x015, data
   0). Bits 63:56 are ignored.

The V15 tree (``validator=Validator.V15``: the seed series' base and every tree before the May
2026 hardening, Message-ID ``20260501202250.2115252-10-seanjc@google.com``) differs in one rule:
``setup_vmgexit_scratch(svm, true, control->exit_info_2)`` and ``if (idx_end >=
VMGEXIT_PSC_MAX_COUNT)`` — no ``max_nr_entries``, no ``WARN_ON_ONCE``. Entries up to 252 are
read and written wherever they fall: in the GHCB page (its reserved tail, protocol_version and
ghcb_usage bytes included) and, past the page or past a v1 copy outside the GHCB, in host
memory KVM does not own. The model reads zeros there, drops the writes and says so in
:attr:`PscDone.undefined`.

No PSC path fails ``KVM_RUN``: KVM answers in SW_EXITINFO2 (or the MSR). The only failures
are ``setup_vmgexit_scratch``'s (v1 scratch outside the GHCB: ``-EFAULT`` when it cannot be
read, ``-ENOMEM``), which the vCPU handles before creating a :class:`GhcbPsc`.

KVM reads and writes the descriptor through ``ghcb_sa``: the GHCB's host mapping (here
``memory.host_read`` / ``host_write`` of the descriptor's bytes, and nothing else) or, for an
area outside the GHCB, its copy (the vCPU passes
:class:`~ghcb.hypervisor._vcpu_state.ScratchCopy`, which ``sev_es_unmap_ghcb`` writes back). The
descriptor is re-read at every step, as KVM re-reads it.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ghcb._fast import bit_fields, flat_fields
from ghcb.codes import MsrCode, PscErr, PscOp
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.psc_run import (
    _DONE,
    _GPA_LIMIT,
    _U64,
    ConvertibleMemory,
    HostMemory,
    HypercallExit,
    MapGpaRange,
    _attributes,
    _Engine,
    decode_hypercall_exit,
    vmm_map_gpa_range,
    with_hypercall_ret,
)
from ghcb.hypervisor.rules import Validator
from ghcb.hypervisor.scratch import (
    GHCB_SCRATCH_AREA_LIMIT,
    PSC_SCRATCH_MIN_LEN,
    SCRATCH_IN_GHCB_VERSION,
    SPEC_SCRATCH,
    ScratchArea,
    setup_scratch,
)
from ghcb.msr import GHCB_MSR_INFO_MASK
from ghcb.psc import GHCB_MSR_PSC_RESP_ERROR
from ghcb.schemas.msr import MSR_SCHEMAS
from ghcb.schemas.page import PAGE_SIZE
from ghcb.schemas.psc import (
    PSC_ENTRY_SIZE,
    PSC_HDR_SIZE,
    PSC_PAGES_2M,
    PSC_PAGES_4K,
    VMGEXIT_PSC_MAX_COUNT,
    psc_entry,
    psc_hdr,
)

__all__ = [
    "ConvertibleMemory",
    "GhcbPsc",
    "HostMemory",
    "HypercallExit",
    "MapGpaRange",
    "MsrDone",
    "MsrPsc",
    "PscDone",
    "decode_hypercall_exit",
    "vmm_map_gpa_range",
    "with_hypercall_ret",
]

SPEC: Final = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc / snp_complete_one_psc"
SPEC_MSR: Final = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc_msr / snp_complete_psc_msr"

_U16: Final = 0xFFFF

# -- the descriptor, from the schemas --------------------------------------------------------
_HDR_OFFSET: Final = {f.name: f.offset for f in flat_fields(psc_hdr)}
_CUR_ENTRY: Final = _HDR_OFFSET["cur_entry"]
_HDR_STRUCT: Final = struct.Struct("<" + "".join(f.fmt for f in flat_fields(psc_hdr)))
_ENTRY: Final = {f.name: (f.shift, f.mask) for f in bit_fields(psc_entry)}
_CUR_PAGE_SHIFT, _CUR_PAGE_MASK = _ENTRY["cur_page"]
_U16_STRUCT: Final = struct.Struct("<H")
_U64_STRUCT: Final = struct.Struct("<Q")
# GHCB MSR PSC request fields (bits 55:52 operation, 51:12 GFN)
_MSR_PSC: Final = {f.name: (f.shift, f.mask) for f in bit_fields(MSR_SCHEMAS[MsrCode.PSC_REQ])}


# -- steps ------------------------------------------------------------------------------------
class PscDone(NamedTuple):
    """``return 1`` from a GHCB PSC: SW_EXITINFO1 = 0, SW_EXITINFO2 = ``exit_info_2``."""

    exit_info_2: int
    #: Set when the v15 tree's KVM read or wrote past its buffer on the way (host memory the
    #: model cannot know): what happened and the value the model used instead.
    undefined: str | None = None

    @property
    def error(self) -> PscErr | int:
        """The answer as a :class:`~ghcb.codes.PscErr`."""
        return PscErr.from_int(self.exit_info_2)


class MsrDone(NamedTuple):
    """``return 1`` from an MSR PSC request: the GHCB MSR value the guest reads."""

    msr: int


class GhcbPsc(_Engine[PscDone]):
    """One ``SVM_VMGEXIT_PSC``: KVM's ``snp_begin_psc`` over the descriptor at ``desc_gpa``.

    Args:
        memory: guest memory (KVM's host mapping of the GHCB is ``host_read``/``host_write``).
        desc_gpa: the descriptor's GPA (``sw_scratch``).
        sa_len: ``ghcb_sa_len`` from ``setup_vmgexit_scratch``: from the descriptor to the end
            of the shared buffer (8..2032), or 8 for a v1 scratch area outside the GHCB;
            8..``GHCB_SCRATCH_AREA_LIMIT`` accepted (V15: the requested ``exit_info_2``,
            0..``GHCB_SCRATCH_AREA_LIMIT``).
        kvm_run: ``kvm_run`` as it stands (KVM writes an exit over it); zeros by default.
        exit_enabled: whether userspace enabled exits for KVM_HC_MAP_GPA_RANGE.
        validator: the KVM tree: ``CURRENT`` (merged, with the May 2026 hardening) or ``V15``
            (the seed's tree: ``end_entry`` checked against VMGEXIT_PSC_MAX_COUNT, not the
            area, so entries past the area are read and written).
        in_ghcb: whether the area is in the GHCB page (KVM's pointer is into its mapping, up
            to the page's end) or a copy of ``sa_len`` bytes (a v1 area outside the GHCB).
            Only the V15 tree can reach past the area; there, bytes past KVM's buffer read as
            zeros, writes to them are dropped, and :attr:`PscDone.undefined` says so.
    """

    _spec = SPEC

    def __init__(
        self,
        memory: HostMemory,
        desc_gpa: int,
        sa_len: int,
        *,
        kvm_run: bytes | None = None,
        exit_enabled: bool = True,
        validator: Validator = Validator.CURRENT,
        in_ghcb: bool = True,
    ) -> None:
        if type(desc_gpa) is not int or not 0 < desc_gpa < _GPA_LIMIT:
            raise HypervisorUsageError(
                f"desc_gpa must be a non-zero 52-bit GPA, not {desc_gpa!r}",
                rule="bad-range",
                spec=SPEC,
            )
        if not isinstance(validator, Validator) or not all(
            callable(getattr(memory, name, None)) for name in ("host_read", "host_write")
        ):
            raise HypervisorUsageError(
                f"validator must be a Validator and memory a HostMemory, not {validator!r}, "
                f"{type(memory).__name__}",
                rule="input-type",
                spec=SPEC,
            )
        # merged: setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr)); v15: exit_info_2,
        # which may be anything (no "WARN_ON_ONCE(!min_len)" there)
        least = 0 if validator is Validator.V15 else PSC_HDR_SIZE
        if type(sa_len) is not int or not least <= sa_len <= GHCB_SCRATCH_AREA_LIMIT:
            raise HypervisorUsageError(
                f"sa_len must be {least}..{GHCB_SCRATCH_AREA_LIMIT}, not {sa_len!r}",
                rule="bad-range",
                spec=SPEC,
            )
        super().__init__(kvm_run, exit_enabled)
        self._memory = memory
        self._gpa = desc_gpa
        self._v15 = validator is Validator.V15
        # KVM's buffer: the GHCB mapping up to its page's end, or the kvzalloc'd copy
        self._bounds = PAGE_SIZE - (desc_gpa & (PAGE_SIZE - 1)) if in_ghcb else sa_len
        # merged: max_nr_entries = (ghcb_sa_len - sizeof(struct psc_hdr)) / sizeof(entry);
        # v15: "if (idx_end >= VMGEXIT_PSC_MAX_COUNT)"
        area_entries = max(0, sa_len - PSC_HDR_SIZE) // PSC_ENTRY_SIZE
        self.max_nr_entries = VMGEXIT_PSC_MAX_COUNT if self._v15 else area_entries
        self._warn = not self._v15 and area_entries > VMGEXIT_PSC_MAX_COUNT
        self._batch: tuple[int, int] | None = None  # sev_es->psc: (cur_idx, batch_size)
        self._undefined: str | None = None

    @classmethod
    def in_ghcb(
        cls,
        memory: HostMemory,
        ghcb_gpa: int,
        desc_gpa: int,
        *,
        kvm_run: bytes | None = None,
        exit_enabled: bool = True,
        validator: Validator = Validator.CURRENT,
    ) -> GhcbPsc:
        """The engine for a descriptor inside the GHCB at ``ghcb_gpa``: ``sa_len`` as
        ``setup_vmgexit_scratch`` sets it (:func:`~ghcb.hypervisor.scratch.setup_scratch`: the
        rest of the shared buffer from ``desc_gpa``).

        Raises:
            HypervisorUsageError: a GPA not a 52-bit int, or the header not in the shared
                buffer (the scratch check the vCPU makes first would have refused it:
                INVALID_SCRATCH_AREA).
        """
        for name, gpa in (("ghcb_gpa", ghcb_gpa), ("desc_gpa", desc_gpa)):
            if type(gpa) is not int or not 0 <= gpa < _GPA_LIMIT:
                raise HypervisorUsageError(
                    f"{name} must be a 52-bit GPA, not {gpa!r}", rule="input-type", spec=SPEC
                )
        area = setup_scratch(
            desc_gpa, PSC_SCRATCH_MIN_LEN, ghcb_gpa=ghcb_gpa, ghcb_version=SCRATCH_IN_GHCB_VERSION
        )
        if not isinstance(area, ScratchArea) or not area.in_ghcb:
            raise HypervisorUsageError(
                f"PSC header at {desc_gpa:#x} is not in the shared buffer of the GHCB at "
                f"{ghcb_gpa:#x}",
                rule="invalid-scratch-area",
                spec=SPEC_SCRATCH,
            )
        return cls(
            memory,
            desc_gpa,
            area.length,
            kvm_run=kvm_run,
            exit_enabled=exit_enabled,
            validator=validator,
        )

    # -- descriptor access (KVM's READ_ONCE / writes through ghcb_sa) --------------------------
    def _read(self, offset: int, size: int) -> bytes:
        inside = max(0, min(size, self._bounds - offset))
        if inside < size and self._undefined is None:
            self._undefined = (
                f"v15 snp_begin_psc: read of {size} bytes at descriptor offset {offset:#x} is "
                f"past KVM's {self._bounds}-byte buffer (undefined host memory); the model used "
                "zeros"
            )
        data = self._memory.host_read(self._gpa + offset, inside) if inside else b""
        return data + bytes(size - inside)

    def _write(self, offset: int, data: bytes) -> None:
        # Bytes past the buffer are dropped. No note of its own: KVM read the same bytes first
        # (the entry it marks; the header, read at every range, before cur_entry), which noted.
        inside = max(0, min(len(data), self._bounds - offset))
        if inside:
            self._memory.host_write(self._gpa + offset, data[:inside])

    def _entry(self, idx: int) -> int:
        offset = PSC_HDR_SIZE + idx * PSC_ENTRY_SIZE
        value: int = _U64_STRUCT.unpack(self._read(offset, PSC_ENTRY_SIZE))[0]
        return value

    def _set_cur_entry(self, value: int) -> None:
        self._write(_CUR_ENTRY, _U16_STRUCT.pack(value & _U16))

    def _finish(self, value: PscErr) -> PscDone:
        # snp_complete_psc: memset(&svm->sev_es.psc, 0, ...); svm_vmgexit_no_action(svm, ret)
        self._batch = None
        self._state = _DONE
        return PscDone(int(value), self._undefined)

    def _complete_one(self, cur_idx: int, batch: int) -> None:
        # __snp_complete_one_psc: each in-flight entry gets cur_page = pagesize ? 512 : 1,
        # then hdr.cur_entry = the index past them.
        for idx in range(cur_idx, cur_idx + batch):
            entry = self._entry(idx)
            done = PSC_PAGES_2M if _field(entry, "pagesize") else PSC_PAGES_4K
            entry = entry & ~(_CUR_PAGE_MASK << _CUR_PAGE_SHIFT) | done << _CUR_PAGE_SHIFT
            self._write(PSC_HDR_SIZE + idx * PSC_ENTRY_SIZE, _U64_STRUCT.pack(entry))
        self._batch = None
        self._set_cur_entry(cur_idx + batch)

    def _begin(self) -> MapGpaRange | PscDone:
        # snp_begin_psc: if (!user_exit_on_hypercall(kvm, KVM_HC_MAP_GPA_RANGE)) -> GENERIC
        if not self._exit_enabled:
            return self._finish(PscErr.GENERIC)
        # if (WARN_ON_ONCE(max_nr_entries > VMGEXIT_PSC_MAX_COUNT)) -> GENERIC (merged only)
        if self._warn:
            return self._finish(PscErr.GENERIC)
        while True:  # next_range: (WARN_ON_ONCE(batch_size) cannot fire: _batch is None here)
            idx_start, idx_end, _ = _HDR_STRUCT.unpack(self._read(0, PSC_HDR_SIZE))
            # if (idx_end >= max_nr_entries) -> VMGEXIT_PSC_ERROR_INVALID_HDR
            # (v15: "if (idx_end >= VMGEXIT_PSC_MAX_COUNT)")
            if idx_end >= self.max_nr_entries:
                return self._finish(PscErr.INVALID_HDR)
            # for (idx = idx_start; idx <= idx_end; idx++): find the next range to process
            idx = idx_start
            while idx <= idx_end:
                start = self._entry(idx)
                gfn = _field(start, "gfn")
                huge = bool(_field(start, "pagesize"))
                npages = PSC_PAGES_2M if huge else PSC_PAGES_4K
                cur_page = _field(start, "cur_page")
                # if (entry_start.cur_page > npages || !IS_ALIGNED(gfn, npages)) -> INVALID_ENTRY
                if cur_page > npages or gfn % npages:
                    return self._finish(PscErr.INVALID_ENTRY)
                if cur_page:  # a partially done 2M entry continues as 4K pages
                    npages -= cur_page
                    gfn += cur_page
                    huge = False
                if npages:
                    break
                # guest_psc->hdr.cur_entry++ (the guest's value, incremented in place)
                current = _U16_STRUCT.unpack(self._read(_CUR_ENTRY, 2))[0]
                self._set_cur_entry(current + 1)
                idx += 1
            if idx > idx_end:  # nothing more to process
                return self._finish(PscErr.NONE)
            cur_idx, batch = idx, 1
            operation = _field(start, "operation")
            # while (++idx <= idx_end): join entries with adjacent GPAs and the same operation
            start_gfn = _field(start, "gfn")
            while idx + 1 <= idx_end:
                idx += 1
                entry = self._entry(idx)
                if (
                    _field(entry, "operation") != operation
                    or _field(entry, "gfn") != start_gfn + npages
                    or _field(entry, "cur_page")
                    or bool(_field(entry, "pagesize")) != huge
                ):
                    break
                batch += 1
                npages += PSC_PAGES_2M if huge else PSC_PAGES_4K
            if operation in (PscOp.PRIVATE, PscOp.SHARED):
                self._batch = (cur_idx, batch)
                # args[2]: the *first entry's* pagesize picks PAGE_SZ_2M / PAGE_SZ_4K
                attributes = _attributes(operation, _field(start, "pagesize"))
                return self._exit(gfn << 12, npages, attributes)
            # default (PSMASH, UNSMASH, undefined): the range is done without action
            self._complete_one(cur_idx, batch)

    def _complete(self, ret: int) -> MapGpaRange | PscDone:
        # snp_complete_one_psc: if (vcpu->run->hypercall.ret) -> GENERIC (range not marked)
        if ret:
            return self._finish(PscErr.GENERIC)
        batch = self._batch
        if batch is None:  # unreachable: _AWAIT is only entered by _exit, with a batch in flight
            msg = "no PSC range in flight"  # pragma: no mutate
            raise HypervisorUsageError(msg, rule="psc-state", spec=SPEC)  # pragma: no mutate
        self._complete_one(*batch)
        return self._begin()  # "Handle the next range (if any)."


def _field(entry: int, name: str) -> int:
    shift, mask = _ENTRY[name]
    return entry >> shift & mask


class MsrPsc(_Engine[MsrDone]):
    """One ``GHCB_MSR_PSC_REQ``: KVM's ``snp_begin_psc_msr`` / ``snp_complete_psc_msr``.

    Args:
        msr: the GHCB MSR value the guest wrote (GHCBInfo 0x014).
        kvm_run: ``kvm_run`` as it stands; zeros by default.
        exit_enabled: whether userspace enabled exits for KVM_HC_MAP_GPA_RANGE.
    """

    _spec = SPEC_MSR

    def __init__(
        self, msr: int, *, kvm_run: bytes | None = None, exit_enabled: bool = True
    ) -> None:
        if (
            type(msr) is not int
            or not 0 <= msr <= _U64
            or msr & GHCB_MSR_INFO_MASK != MsrCode.PSC_REQ
        ):
            raise HypervisorUsageError(
                f"an MSR PSC request is a u64 with GHCBInfo {MsrCode.PSC_REQ:#x}, not {msr!r}",
                rule="msr-code",
                spec=SPEC_MSR,
            )
        super().__init__(kvm_run, exit_enabled)
        self.msr = msr

    def _begin(self) -> MapGpaRange | MsrDone:
        op_shift, op_mask = _MSR_PSC["operation"]
        gfn_shift, gfn_mask = _MSR_PSC["gfn"]
        operation = self.msr >> op_shift & op_mask  # GHCB_MSR_PSC_REQ_TO_OP
        gpa = (self.msr >> gfn_shift & gfn_mask) << 12  # gfn_to_gpa(GHCB_MSR_PSC_REQ_TO_GFN)
        # op != SNP_PAGE_STATE_PRIVATE && op != SNP_PAGE_STATE_SHARED -> RESP_ERROR
        if operation not in (PscOp.PRIVATE, PscOp.SHARED) or not self._exit_enabled:
            self._state = _DONE
            return MsrDone(GHCB_MSR_PSC_RESP_ERROR)
        return self._exit(gpa, 1, _attributes(operation, 0))  # one 4K page

    def _complete(self, ret: int) -> MsrDone:
        # snp_complete_psc_msr: ret ? GHCB_MSR_PSC_RESP_ERROR : GHCB_MSR_PSC_RESP
        self._state = _DONE
        return MsrDone(GHCB_MSR_PSC_RESP_ERROR if ret else int(MsrCode.PSC_RESP))
