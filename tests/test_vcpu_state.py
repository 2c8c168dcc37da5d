"""KVM's per-vCPU state and its mapping of the GHCB (``ghcb.hypervisor._vcpu_state``): where
``ghcb_set_<field>`` writes (offset and valid bit, cross-checked with spec/tables/page.toml), a
new vCPU's state, ``sev_es_sync_from_ghcb``'s copy of ``sw_scratch``, the handler-context
``is_mapped`` outside guest memory, and ``sev_es_unmap_ghcb`` leaving no GHCB behind for the
MSR protocol's AP reset hold (Linux ``arch/x86/kvm/svm/sev.c``, ``svm.h``, ``svm.c``)."""

from __future__ import annotations

import pytest

from ghcb import ExitCode, GhcbPage, build_page
from ghcb.codes import MsrCode
from ghcb.hypervisor import (
    ApResetHold,
    GuestMemory,
    Interrupted,
    RecordingFirmware,
    Released,
    Resumed,
    Vcpu,
    Vm,
)
from ghcb.hypervisor._vcpu_state import OFFSET, _ghcb_write, _GhcbWrite
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.page import GHCB_PROTOCOL_MAX, VALID_BIT
from tests.helpers import load_table

GHCB = 0x1000


def _vcpu() -> tuple[Vcpu, GuestMemory]:
    memory = GuestMemory()
    memory.map(GHCB)
    return Vcpu(Vm(RecordingFirmware()), memory, GHCB), memory


def _write_request(memory: GuestMemory, code: int, **fields: int) -> None:
    values = {"sw_exit_code": code, "sw_exit_info_1": 0, "sw_exit_info_2": 0} | fields
    page = GhcbPage.empty().with_fields(**values).replace(protocol_version=GHCB_PROTOCOL_MAX)
    memory.guest_write(GHCB, build_page(page))


# -- ghcb_set_<field> (svm.h DEFINE_GHCB_ACCESSORS) ------------------------------------------
def test_ghcb_set_writes_each_field_and_its_valid_bit() -> None:
    """``ghcb_set_<field>``: "__set_bit(GHCB_BITMAP_IDX(field), ghcb->save.valid_bitmap);
    ghcb->save.field = value;" — GHCB_BITMAP_IDX is offsetof(field) / 8 into the bitmap at
    0x3F0; every u64 field with a bit in spec/tables/page.toml."""
    table = load_table("page")
    bitmap = table["page"]["valid_bitmap_offset"]
    rows = [r for r in table["field"] if "bit" in r and r["kind"] == "u64"]
    assert len(rows) == 24
    for row in rows:
        bit = row["bit"]
        assert _ghcb_write(row["name"]) == _GhcbWrite(
            (row["offset"],), ((bitmap + bit // 8, 1 << bit % 8),)
        ), row["name"]


def test_ghcb_set_merges_the_bits_of_one_bitmap_byte() -> None:
    """The fields KVM sets together, with their bits merged per bitmap byte: svm_vmgexit_*'s
    EXITINFO1/2 (bits 115, 116: byte 0x3FE) and sev_es_sync_to_ghcb's RAX (bit 63: byte
    0x3F7), RBX (99), RCX (97), RDX (98) (byte 0x3FC)."""
    assert _ghcb_write("sw_exit_info_1", "sw_exit_info_2") == ((0x398, 0x3A0), ((0x3FE, 0x18),))
    assert _ghcb_write("sw_exit_info_2") == ((0x3A0,), ((0x3FE, 0x10),))
    assert _ghcb_write("rax", "rbx", "rcx", "rdx") == (
        (0x1F8, 0x318, 0x308, 0x310),
        ((0x3F7, 0x80), (0x3FC, 0x0E)),
    )
    assert (OFFSET["valid_bitmap"], VALID_BIT["rax"]) == (0x3F0, 63)


# -- a new vCPU ------------------------------------------------------------------------------
def test_new_vcpu_state() -> None:
    """A new vCPU as KVM creates it: ``vcpu->arch.regs`` zero (kvm_arch_vcpu_create), EXITINFO
    and ``sev_es.sw_scratch`` zero, "svm->nmi_masked = false;" (__svm_vcpu_reset), no valid
    bits in ``sev_es.valid_bitmap``, ``snp_vmsa_gpa`` INVALID_PAGE and KVM's own VMSA, no
    SIPI received yet, no GHCB mapped."""
    vcpu, _ = _vcpu()
    assert vcpu.regs == {"rax": 0, "rbx": 0, "rcx": 0, "rdx": 0, "rsi": 0, "cpl": 0}
    assert (vcpu.exit_info_1, vcpu.exit_info_2, vcpu.sw_scratch) == (0, 0, 0)
    assert vcpu.nmi_masked is False
    assert not any(vcpu.is_valid(name) for name in VALID_BIT)
    assert (vcpu.vmsa_gpa, vcpu.snp_vmsa_gpa) == (None, None)
    assert vcpu.received_first_sipi is False
    assert (vcpu.ap_waiting_for_reset, vcpu.update_requested) == (False, False)
    assert vcpu.mapped_gpa == 0


def test_nmi_complete_unmasks_nmis() -> None:
    """SVM_VMGEXIT_NMI_COMPLETE: "svm->nmi_masked = false;" after an NMI was injected
    (svm_inject_nmi: "svm->nmi_masked = true;", which the model leaves to its caller)."""
    vcpu, memory = _vcpu()
    vcpu.nmi_masked = True
    _write_request(memory, ExitCode.NMI_COMPLETE)
    assert isinstance(vcpu.run(), Resumed)
    assert vcpu.nmi_masked is False


# -- sev_es_sync_from_ghcb ---------------------------------------------------------------------
@pytest.mark.parametrize("valid", [True, False])
def test_sw_scratch_is_copied_only_if_valid(valid: bool) -> None:
    """ "svm->sev_es.sw_scratch = kvm_ghcb_get_sw_scratch_if_valid(svm);": the guest's value
    when its bit is set, else 0 (a CPUID exit, which does not use it)."""
    vcpu, memory = _vcpu()
    fields = {"rax": 1, "rcx": 0}
    _write_request(memory, ExitCode.CPUID, **fields, **({"sw_scratch": 0x1800} if valid else {}))
    if not valid:  # the value in the page, its bit clear
        memory.guest_write(GHCB + OFFSET["sw_scratch"], (0x1800).to_bytes(8, "little"))
    vcpu.run()
    assert vcpu.sw_scratch == (0x1800 if valid else 0)
    assert vcpu.is_valid("sw_scratch") is valid
    assert (vcpu.exit_info_1, vcpu.exit_info_2) == (0, 0)


# -- handler context -------------------------------------------------------------------------
def test_is_mapped_beyond_guest_memory() -> None:
    """gfn_to_pfn of a GPA no memslot can hold (52 bits and up) is a noslot pfn: not mapped
    (``__snp_handle_guest_req``'s "if (is_error_noslot_pfn(req_pfn)) return -EINVAL;")."""
    vcpu, _ = _vcpu()
    assert vcpu.is_mapped(GHCB) is True
    assert vcpu.is_mapped(GHCB + 0x1000) is False
    assert vcpu.is_mapped(1 << 52) is False
    assert vcpu.is_mapped(-1) is False


# -- sev_es_unmap_ghcb -------------------------------------------------------------------------
def test_msr_hold_after_a_ghcb_exit_has_no_ghcb() -> None:
    """After a GHCB exit, ``sev_es_unmap_ghcb`` leaves nothing mapped; an AP reset hold by
    the MSR protocol then has no GHCB: -EINTR in the hold carries no page, and after the
    first SIPI ("Use the values as initially set by the VMM") the guest resumes reading the
    GHCB MSR (AP_RESET_HOLD_RESP 0x007, result 0)."""
    vcpu, memory = _vcpu()
    _write_request(memory, ExitCode.NMI_COMPLETE)
    assert isinstance(vcpu.run(), Resumed)
    assert vcpu.run(gpa=int(MsrCode.AP_RESET_HOLD_REQ)) == ApResetHold("msr")
    assert vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 1)) == Interrupted(None)
    assert vcpu.sipi() == Released(first=True)
    assert vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0)) == Resumed(
        None, msr=MsrCode.AP_RESET_HOLD_RESP
    )
