"""The vCPU's own rules (ghcb/hypervisor/vcpu.py), beside the per-event tests of
test_hypervisor.py / test_events.py / test_msr_protocol.py: the constructor's checks
(KVM_CREATE_VCPU ids, the registered GHCB GFN), caller misuse named exactly (message, rule,
spec), rule 9 (a device model's bad answer leaves the GHCB mapped), sev_handle_vmgexit's use of
ghcb_usage, AP creation's request bits once consumed, and the page state change plumbing: the
kvm_run bytes KVM writes its KVM_EXIT_HYPERCALL over, the vCPU's kvm_run after each exit, and a
descriptor whose ranges need two exits (arch/x86/kvm/svm/sev.c, quoted per test)."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb import ExitCode, build_page
from ghcb.codes import GhcbErr, KvmExit, PscErr, PscOp
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    GuestMemory,
    HypervisorUsageError,
    MapGpaExit,
    Platform,
    RecordingDevices,
    RecordingFirmware,
    Resumed,
    RunFailed,
    Vcpu,
    Vm,
)
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.hypervisor.psc import decode_hypercall_exit, vmm_map_gpa_range, with_hypercall_ret
from ghcb.hypervisor.vcpu import _SPEC_MODEL
from ghcb.msr import PscReq, encode_msr
from ghcb.psc import PscEntry, build_psc
from ghcb.schemas.kvm import (
    KVM_HC_MAP_GPA_RANGE,
    KVM_MAP_GPA_RANGE_DECRYPTED,
    KVM_MAP_GPA_RANGE_ENCRYPTED,
)
from tests.test_events import AP_GHCB, GHCB, SCRATCH, VMSA, Env, ioio, resumed

U32_MAX = 0xFFFF_FFFF
PATTERN = 0xA5A5_A5A5_A5A5_A5A5  # what kvm_run held before KVM wrote an exit over it
STALE_RUN = with_immediate_exit(bytes([0xA5]) * KVM_RUN_SIZE, 0)
MSR_PSC_SHARED = encode_msr(PscReq(operation=PscOp.SHARED, gfn=5))  # GHCB_MSR_PSC_REQ


def usage_error(excinfo: pytest.ExceptionInfo[HypervisorUsageError]) -> tuple[str, str, str]:
    return excinfo.value.message, excinfo.value.rule, excinfo.value.spec


def vm_and_memory() -> tuple[Vm, GuestMemory]:
    memory = GuestMemory()
    memory.map(GHCB)
    return Vm(RecordingFirmware()), memory


# -- Vcpu(): KVM_CREATE_VCPU -------------------------------------------------------------------
class TestConstructor:
    @pytest.mark.parametrize("bad", ["vm", "memory"])
    def test_needs_a_vm_and_a_guest_memory(self, bad: str) -> None:
        """Either argument of the wrong type is refused, named, and nothing is registered."""
        vm, memory = vm_and_memory()
        args: dict[str, Any] = {"vm": vm, "memory": memory, bad: object()}
        with pytest.raises(HypervisorUsageError) as info:
            Vcpu(args["vm"], args["memory"], GHCB)
        assert usage_error(info) == (
            "Vcpu(vm, memory, ghcb_gpa) needs a Vm and a GuestMemory",
            "input-type",
            _SPEC_MODEL,
        )
        assert vm.vcpus == {}

    @pytest.mark.parametrize("gpa", [GHCB + 1, -0x1000, 1 << 64, True])
    def test_ghcb_gpa_is_a_gfn(self, gpa: object) -> None:
        """GHCB_MSR_REG_GPA registers a GFN (sev-common.h: GHCB_MSR_GPA_REG_VALUE_POS 12): the
        GHCB GPA is a page address below 2**64."""
        vm, memory = vm_and_memory()
        with pytest.raises(HypervisorUsageError) as info:
            Vcpu(vm, memory, gpa)  # type: ignore[arg-type]
        assert usage_error(info) == (
            f"ghcb_gpa must be a page-aligned u64, not {gpa!r}",
            "input-type",
            "sev-common.h GHCB_MSR_REG_GPA (a GFN)",
        )

    def test_highest_page_is_a_ghcb_gpa(self) -> None:
        vm, memory = vm_and_memory()
        assert Vcpu(vm, memory, (1 << 64) - 0x1000).ghcb_gpa == 0xFFFF_FFFF_FFFF_F000

    def test_ids_count_up_from_zero(self) -> None:
        """With no id given, the next free one: 0 first, then one past the highest."""
        vm, memory = vm_and_memory()
        first = Vcpu(vm, memory, GHCB)
        second = Vcpu(vm, memory, GHCB)
        fifth = Vcpu(vm, memory, GHCB, vcpu_id=5)
        sixth = Vcpu(vm, memory, GHCB)
        assert [v.vcpu_id for v in (first, second, fifth, sixth)] == [0, 1, 5, 6]
        assert vm.vcpus == {0: first, 1: second, 5: fifth, 6: sixth}

    def test_largest_u32_id(self) -> None:
        """KVM_CREATE_VCPU takes a u32 id (the AP's APIC ID for AP creation): 0xFFFFFFFF fits."""
        vm, memory = vm_and_memory()
        vcpu = Vcpu(vm, memory, GHCB, vcpu_id=U32_MAX)
        assert (vcpu.vcpu_id, vm.vcpus) == (U32_MAX, {U32_MAX: vcpu})

    @pytest.mark.parametrize("vcpu_id", [-1, U32_MAX + 1, 0])
    def test_id_not_a_free_u32(self, vcpu_id: int) -> None:
        """An id out of u32 range, or one the VM already has (kvm_vm_ioctl_create_vcpu:
        "if (kvm_get_vcpu_by_id(kvm, id)) { r = -EEXIST; ..."), is refused, named."""
        vm, memory = vm_and_memory()
        existing = Vcpu(vm, memory, GHCB)
        with pytest.raises(HypervisorUsageError) as info:
            Vcpu(vm, memory, GHCB, vcpu_id=vcpu_id)
        assert usage_error(info) == (
            f"vcpu_id {vcpu_id} is not a free u32 id of this VM",
            "input-type",
            "KVM_CREATE_VCPU (-EEXIST)",
        )
        assert vm.vcpus == {0: existing}


# -- caller misuse, named --------------------------------------------------------------------
class TestMisuse:
    @pytest.mark.parametrize(
        ("call", "message"),
        [
            ("complete", "complete is not allowed in state idle"),
            ("sipi", "sipi is not allowed in state idle"),
        ],
    )
    def test_input_not_allowed_in_state(self, call: str, message: str) -> None:
        """Module rule 8: an input the state has no transition for is refused before anything
        changes."""
        env = Env()
        args = (bytes(KVM_RUN_SIZE),) if call == "complete" else ()
        with pytest.raises(HypervisorUsageError) as info:
            getattr(env.bsp, call)(*args)
        assert usage_error(info) == (message, "vcpu-state", "ghcb.hypervisor.vcpu rules 1-9")
        assert env.bsp.state.value == "idle"

    @pytest.mark.parametrize("gpa", [-1, 1 << 64, 0.0])
    def test_gpa_not_a_u64(self, gpa: object) -> None:
        env = Env()
        with pytest.raises(HypervisorUsageError) as info:
            env.bsp.run(gpa=gpa)  # type: ignore[arg-type]
        assert usage_error(info) == (f"gpa must be a u64, not {gpa!r}", "input-type", _SPEC_MODEL)

    def test_all_ones_gpa_is_an_msr_request(self) -> None:
        """2**64 - 1 is a u64 with GHCBInfo 0xFFF: an MSR protocol request of no known code,
        "default: /* Error, keep GHCB MSR value as-is */"."""
        assert Env().bsp.run(gpa=(1 << 64) - 1) == Resumed(None, msr=(1 << 64) - 1)

    def test_gpa_while_an_exit_is_behind(self) -> None:
        """Module rule 6: after a failed KVM_RUN (an SNP guest's unregistered GHCB GPA:
        "if (sev_snp_guest(...) && !ghcb_gpa_is_registered(svm, ghcb_gpa)) return -EINVAL;")
        the next KVM_RUN enters the guest: it takes no GHCB MSR value."""
        env = Env()
        env.request(ExitCode.HV_FEATURES, gpa=AP_GHCB)
        assert isinstance(env.bsp.run(gpa=AP_GHCB), RunFailed)
        with pytest.raises(HypervisorUsageError) as info:
            env.bsp.run(gpa=GHCB)
        assert usage_error(info) == (
            "an exit is pending: this KVM_RUN enters the guest, it takes no gpa",
            "vcpu-state",
            _SPEC_MODEL,
        )
        assert env.bsp.state.value == "mapped"


def test_device_error_leaves_the_ghcb_mapped() -> None:
    """Module rule 9: a device model answering IN with the wrong size raises (rule "device")
    after KVM mapped the GHCB and preset EXITINFO1/2 = 0; the vCPU stays MAPPED, so the next
    KVM_RUN enters the guest (sev_es_sync_to_ghcb) instead of handling a new VMGEXIT."""

    class Short(RecordingDevices):
        def io_in(self, port: int, size: int) -> bytes:
            return b"\x01"

    env = Env()
    env.vm.platform = Platform(devices=Short())
    page = env.request(ExitCode.IOIO, sw_exit_info_1=ioio(0x71, 2, in_=True), rax=0)
    with pytest.raises(HypervisorUsageError) as info:
        env.bsp.run()
    assert info.value.rule == "device"
    assert env.bsp.state.value == "mapped"
    assert env.bsp.run() == resumed(page)
    assert env.bsp.state.value == "idle"


def test_usage_beats_a_valid_exit() -> None:
    """sev_es_validate_vmgexit: "if (ghcb_usage) { reason = GHCB_ERR_INVALID_USAGE; goto
    vmgexit_err; }" — for an exit whose every other check passes (HV_FEATURES with its exit
    fields valid), usage 1 is EXITINFO1 = 2, EXITINFO2 = 2, not the HV_FEATURES answer."""
    env = Env()
    page = env.request(ExitCode.HV_FEATURES).replace(ghcb_usage=1)
    env.memory.guest_write(GHCB, build_page(page))
    assert env.bsp.run() == resumed(page, 2, GhcbErr.INVALID_USAGE)


def test_ap_creation_request_is_consumed() -> None:
    """vcpu_enter_guest: "if (kvm_check_request(KVM_REQ_UPDATE_PROTECTED_GUEST_STATE, vcpu))"
    clears the request; sev_snp_init_protected_guest_state: "svm->sev_es.
    snp_ap_waiting_for_reset = false;" — both down once the AP has taken its VMSA."""
    env = Env()
    page = env.request(ExitCode.AP_CREATION, sw_exit_info_1=1 << 32 | 1, sw_exit_info_2=VMSA, rax=1)
    assert env.bsp.run() == resumed(page)
    env.request(ExitCode.HV_FEATURES, gpa=AP_GHCB)
    assert isinstance(env.ap.run(), Resumed)
    assert (env.ap.update_requested, env.ap.ap_waiting_for_reset) == (False, False)
    assert (env.ap.vmsa_gpa, env.ap.runnable) == (VMSA, True)


# -- page state change through the vCPU ------------------------------------------------------
class TestPsc:
    def test_msr_exit_is_written_over_kvm_run(self) -> None:
        """snp_begin_psc_msr writes exit_reason, hypercall.nr, args[0..2] and ret over the
        kvm_run page as userspace left it: args[3..5] and flags keep its bytes; the vCPU's
        kvm_run is the exit's."""
        env = Env()
        result = env.bsp.run(gpa=MSR_PSC_SHARED, kvm_run=STALE_RUN)
        assert isinstance(result, MapGpaExit)
        assert decode_hypercall_exit(result.kvm_run) == (
            KvmExit.HYPERCALL,
            KVM_HC_MAP_GPA_RANGE,
            (0x5000, 1, KVM_MAP_GPA_RANGE_DECRYPTED, PATTERN, PATTERN, PATTERN),
            0,
            PATTERN,
        )
        assert env.bsp.kvm_run == result.kvm_run

    def test_ghcb_exit_is_written_over_kvm_run(self) -> None:
        """snp_begin_psc: the same writes over kvm_run as it stands."""
        env = Env()
        desc = build_psc([PscEntry(gfn=4, operation=PscOp.SHARED)])
        env.request(ExitCode.PSC, data=desc, sw_scratch=SCRATCH)
        result = env.bsp.run(kvm_run=STALE_RUN)
        assert isinstance(result, MapGpaExit)
        assert decode_hypercall_exit(result.kvm_run).args[3:] == (PATTERN,) * 3
        assert decode_hypercall_exit(result.kvm_run).flags == PATTERN

    def test_ghcb_psc_without_userspace_exit(self) -> None:
        """snp_begin_psc: "if (!user_exit_on_hypercall(vcpu->kvm, KVM_HC_MAP_GPA_RANGE)) {
        snp_complete_psc(svm, VMGEXIT_PSC_ERROR_GENERIC); return 1; }"."""
        env = Env(map_gpa_range=False)
        desc = build_psc([PscEntry(gfn=4, operation=PscOp.SHARED)])
        page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH)
        assert result == resumed(page, 0, PscErr.GENERIC)

    def test_two_ranges_two_exits(self) -> None:
        """Entries of different operations do not coalesce: snp_complete_one_psc marks the
        first range done and "goto next_range" exits again for the second; each exit is the
        vCPU's kvm_run; after the second 0 the guest reads both entries done, cur_entry 2."""
        env = Env()
        env.memory.map(0x5000, shared=True)
        desc = build_psc(
            [PscEntry(gfn=4, operation=PscOp.SHARED), PscEntry(gfn=5, operation=PscOp.PRIVATE)]
        )
        page, first = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH)
        assert isinstance(first, MapGpaExit)
        assert (first.gpa, first.npages, first.attributes) == (
            0x4000,
            1,
            KVM_MAP_GPA_RANGE_DECRYPTED,
        )
        assert env.bsp.kvm_run == first.kvm_run
        second = env.bsp.complete(
            with_hypercall_ret(first.kvm_run, vmm_map_gpa_range(env.memory, first.kvm_run))
        )
        assert isinstance(second, MapGpaExit)
        assert (second.gpa, second.npages, second.attributes) == (
            0x5000,
            1,
            KVM_MAP_GPA_RANGE_ENCRYPTED,
        )
        assert env.bsp.kvm_run == second.kvm_run
        assert env.bsp.state.value == "await-hypercall"
        final = env.bsp.complete(
            with_hypercall_ret(second.kvm_run, vmm_map_gpa_range(env.memory, second.kvm_run))
        )
        done = build_psc(
            [
                PscEntry(gfn=4, operation=PscOp.SHARED, cur_page=1),
                PscEntry(gfn=5, operation=PscOp.PRIVATE, cur_page=1),
            ],
            end_entry=1,
        )
        done = b"\x02\x00" + done[2:]  # hdr.cur_entry = 2
        assert final == resumed(
            page.replace(shared_buffer=done.ljust(len(page.shared_buffer), b"\0"))
        )
        assert (env.memory.is_shared(0x4000), env.memory.is_shared(0x5000)) == (True, False)
