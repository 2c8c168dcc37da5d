"""GHCB events in the reference vCPU: every path of KVM's handlers other than the guest
requests, with the exact GHCB the guest reads afterwards (EXITINFO1/2, RAX-RDX), the device
accesses, and the kvm_run bytes of an exit (arch/x86/kvm/svm/sev.c ``sev_handle_vmgexit`` and
the SVM intercepts, quoted per test)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghcb import ExitCode, GhcbPage, build_page
from ghcb.codes import Errno, GhcbErr, PscErr, PscOp
from ghcb.exitinfo import EventInjection, IoioInfo, TermRequestInfo
from ghcb.hypervisor import (
    ApResetHold,
    CpuidTable,
    GuestMemory,
    Halted,
    HypervisorUsageError,
    MapGpaExit,
    MergedAbi,
    MsrTable,
    Platform,
    RecordingDevices,
    RecordingFirmware,
    Released,
    Resumed,
    RunFailed,
    Terminated,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
    devices,
    events,
)
from ghcb.hypervisor.psc import decode_hypercall_exit, vmm_map_gpa_range, with_hypercall_ret
from ghcb.hypervisor.psc_answer import kvm_psc_answer
from ghcb.hypervisor.results import system_event_run
from ghcb.hypervisor.vm import DEFAULT_CBIT
from ghcb.page import GHCB_PROTOCOL_MAX
from ghcb.psc import PscEntry, build_psc
from ghcb.schemas.kvm import KVM_MAP_GPA_RANGE_DECRYPTED
from ghcb.schemas.page import PAGE_SIZE
from tests.helpers import load_table
from tests.test_hypervisor import answered, at_exit

GHCB, AP_GHCB, VMSA, SCRATCH = 0x1000, 0x2000, 0x3000, 0x1800
OUTSIDE = 0x4000  # a page outside the GHCB (v1 scratch areas)
GP = 0x8000_030D  # SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT | X86_TRAP_GP


class Env:
    """One SNP (or SEV-ES) VM with a BSP whose GHCB is at 0x1000 and an AP (id 1) not yet
    runnable."""

    def __init__(self, *, snp: bool = True, **vm: Any) -> None:
        self.memory = GuestMemory()
        for gpa in (GHCB, AP_GHCB, VMSA, OUTSIDE):
            self.memory.map(gpa)
        self.devices = RecordingDevices(
            mmio={0xFED0_0000: bytes(range(1, 9))}, ports={0x71: b"\x5a"}
        )
        self.msrs = MsrTable({0xC001_0131: 0x1_0000_0003})
        table = CpuidTable({(0x8000_001F, 0): (1, 0x173, 0x1FD, 1), (1, 0): (0xA, 0xB, 0xC, 0xD)})
        platform = Platform(cpuid=table, msrs=self.msrs, devices=self.devices)
        self.vm = Vm(RecordingFirmware(), snp=snp, platform=platform, **vm)
        self.bsp = Vcpu(self.vm, self.memory, GHCB)
        self.ap = Vcpu(self.vm, self.memory, AP_GHCB, vcpu_id=1, runnable=False)

    def request(self, code: int, gpa: int = GHCB, data: bytes = b"", **fields: int) -> GhcbPage:
        """The GHCB the guest writes, ``data`` at the start of its shared buffer."""
        values = {"sw_exit_code": code, "sw_exit_info_1": 0, "sw_exit_info_2": 0} | fields
        page = GhcbPage.empty().with_fields(**values).replace(protocol_version=GHCB_PROTOCOL_MAX)
        page = page.replace(shared_buffer=data.ljust(len(page.shared_buffer), b"\0"))
        self.memory.guest_write(gpa, build_page(page))
        return page

    def run(self, code: int, data: bytes = b"", **fields: int) -> tuple[GhcbPage, Any]:
        page = self.request(code, data=data, **fields)
        return page, self.bsp.run()


def regs(page: GhcbPage, **override: int) -> dict[str, int]:
    return {n: page.get_if_valid(n) for n in ("rax", "rbx", "rcx", "rdx")} | override


def resumed(page: GhcbPage, info1: int = 0, info2: int = 0, **reg: int) -> Resumed:
    return Resumed(answered(page, regs(page, **reg), info1, info2))


def test_constants_match_the_table() -> None:
    """spec/tables/kvm.toml [events] == the Python constants (each defined once)."""
    table = load_table("kvm")["events"]
    assert table == {
        "svm_sev_feat_snp_active": events.SVM_SEV_FEAT_SNP_ACTIVE,
        "ap_vmsa_refused_alignment": events.PMD_SIZE,
        "maxphyaddr_default": events.MAXPHYADDR_DEFAULT,
        "x86_trap_gp": events.X86_TRAP_GP,
        "msr_gp_exit_info_2": EventInjection(vector=events.X86_TRAP_GP).encode(),
        "kvm_enosys": devices.KVM_ENOSYS,
        "kvm_eperm": devices.KVM_EPERM,
        "kvm_einval": devices.KVM_EINVAL,
        "kvm_hc_vapic_poll_irq": devices.KVM_HC_VAPIC_POLL_IRQ,
        "default_cbit": DEFAULT_CBIT,
    }
    assert table["msr_gp_exit_info_2"] == GP


# -- events answered in EXITINFO -----------------------------------------------------------------
@pytest.mark.parametrize(("features", "info2"), [(None, 3), (0x21, 0x21)])
def test_hv_features(features: int | None, info2: int) -> None:
    """ "svm_vmgexit_success(svm, GHCB_HV_FT_SUPPORTED);": EXITINFO1 = 0, EXITINFO2 = 0x3."""
    env = Env() if features is None else Env(hv_features=features)
    page, result = env.run(ExitCode.HV_FEATURES)
    assert result == resumed(page, 0, info2)


class TestApJumpTable:
    def test_set_then_get(self) -> None:
        """ "case 0: sev->ap_jump_table = control->exit_info_2;" then "case 1:
        svm_vmgexit_success(svm, sev->ap_jump_table);"."""
        env = Env()
        page, result = env.run(ExitCode.AP_JUMP_TABLE, sw_exit_info_1=0, sw_exit_info_2=0xCAFE0)
        assert result == resumed(page)
        assert env.vm.ap_jump_table == 0xCAFE0
        page, result = env.run(ExitCode.AP_JUMP_TABLE, sw_exit_info_1=1, sw_exit_info_2=7)
        assert result == resumed(page, 0, 0xCAFE0)

    @pytest.mark.parametrize("op", [2, 1 << 32, 2**64 - 1])
    def test_other_operations(self, op: int) -> None:
        """ "default: ... svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_INPUT);" — the whole
        EXITINFO1 is compared."""
        page, result = Env().run(ExitCode.AP_JUMP_TABLE, sw_exit_info_1=op)
        assert result == resumed(page, 2, GhcbErr.INVALID_INPUT)


def test_nmi_complete() -> None:
    """ "svm->nmi_masked = false; kvm_make_request(KVM_REQ_EVENT, vcpu); ret = 1;" (from
    masked: an NMI was being handled)."""
    env = Env()
    env.bsp.nmi_masked = True
    page, result = env.run(ExitCode.NMI_COMPLETE)
    assert result == resumed(page)
    assert env.bsp.nmi_masked is False


def test_unsupported_event_fails_run() -> None:
    """ "ret = -EINVAL;": KVM_RUN fails; the next one enters the guest with 0/0."""
    env = Env()
    page, result = env.run(ExitCode.UNSUPPORTED_EVENT, sw_exit_info_1=5)
    assert result == RunFailed(Errno.EINVAL, "SVM_VMGEXIT_UNSUPPORTED_EVENT")
    assert env.bsp.run() == resumed(page)


class TestTermRequest:
    def test_system_event_exit(self) -> None:
        """KVM_EXIT_SYSTEM_EVENT / SEV_TERM with data[0] = control->ghcb_gpa (the GHCB GPA,
        not the reason); the reason is EXITINFO1 [3:0] set, [11:4] code; the GHCB keeps
        KVM's presets and the next KVM_RUN enters the guest."""
        env = Env()
        info1 = TermRequestInfo(reason_set=1, reason_code=0xC).encode()
        page, result = env.run(ExitCode.TERM_REQUEST, sw_exit_info_1=info1, sw_exit_info_2=9)
        assert result == Terminated(system_event_run(bytes(288), GHCB), GHCB, 1, 0xC, "ghcb")
        assert env.memory.guest_read(GHCB, PAGE_SIZE) == build_page(at_exit(page))
        assert env.bsp.run() == resumed(page)


# -- AP reset hold (GHCB form) --------------------------------------------------------------------
def test_ap_hlt_loop_hold_and_sipi() -> None:
    """AP_HLT_LOOP: "ap_reset_hold_type = AP_RESET_HOLD_NAE_EVENT; kvm_emulate_ap_reset_hold":
    the vCPU holds with EXITINFO1/2 = 0/0 preset; the first SIPI writes nothing; a later one
    "svm_vmgexit_success(svm, 1)": the guest reads EXITINFO2 = 1."""
    env = Env()
    page, result = env.run(ExitCode.AP_HLT_LOOP)
    assert result == ApResetHold("ghcb")
    assert env.bsp.run() == ApResetHold("ghcb")
    assert env.bsp.sipi() == Released(first=True)
    assert env.bsp.run() == resumed(page)
    page, result = env.run(ExitCode.AP_HLT_LOOP)
    assert result == ApResetHold("ghcb")
    assert env.bsp.sipi() == Released(first=False)
    assert env.bsp.run() == resumed(page, 0, 1)


# -- AP creation -----------------------------------------------------------------------------------
class TestApCreation:
    def create(self, env: Env, request: int = 1, apic: int = 1, **fields: int) -> Any:
        values: dict[str, Any] = {
            "sw_exit_info_1": apic << 32 | request,
            "sw_exit_info_2": VMSA,
            "rax": 1,
        }
        return env.run(ExitCode.AP_CREATION, **(values | fields))

    def test_create_starts_the_ap(self) -> None:
        """CREATE with RAX = sev->vmsa_features (SNP_ACTIVE) and a page-aligned VMSA: 0/0;
        "target_svm->sev_es.snp_vmsa_gpa = ...exit_info_2; ... snp_ap_waiting_for_reset =
        true;" and the target kicked: its next KVM_RUN takes the VMSA
        (sev_snp_init_protected_guest_state) and runs its guest's VMGEXIT."""
        env = Env()
        page, result = self.create(env)
        assert result == resumed(page)
        assert (env.ap.snp_vmsa_gpa, env.ap.ap_waiting_for_reset, env.ap.update_requested) == (
            VMSA,
            True,
            True,
        )
        ap_page = env.request(ExitCode.HV_FEATURES, gpa=AP_GHCB)
        result = env.ap.run()
        assert result == Resumed(answered(ap_page, regs(ap_page), 0, 3))
        assert (env.ap.vmsa_gpa, env.ap.runnable, env.ap.snp_vmsa_gpa) == (VMSA, True, None)

    def test_create_on_init_waits(self) -> None:
        """CREATE_ON_INIT: no kick ("if (request != SVM_VMGEXIT_AP_CREATE_ON_INIT)"): the AP
        stays halted."""
        env = Env()
        page, result = self.create(env, request=0)
        assert result == resumed(page)
        assert env.ap.update_requested is False
        assert env.ap.run() == Halted()

    def test_destroy(self) -> None:
        """DESTROY needs no RAX; "snp_vmsa_gpa = INVALID_PAGE": the AP's VMSA is dropped and
        it halts ("vmsa_pa = INVALID_PAGE")."""
        env = Env()
        self.create(env)
        env.request(ExitCode.HV_FEATURES, gpa=AP_GHCB)
        env.ap.run()
        page = env.request(ExitCode.AP_CREATION, sw_exit_info_1=1 << 32 | 2, sw_exit_info_2=0)
        assert env.bsp.run() == resumed(page)
        assert (env.ap.snp_vmsa_gpa, env.ap.ap_waiting_for_reset, env.ap.update_requested) == (
            None,
            True,
            True,
        )
        assert env.ap.run() == Halted()
        assert (env.ap.vmsa_gpa, env.ap.runnable) == (None, False)

    def test_unmapped_vmsa_halts_the_ap(self) -> None:
        """ "slot = gfn_to_memslot(vcpu->kvm, gfn); if (!slot) return;": accepted, but the AP
        stays halted without a VMSA."""
        env = Env()
        page, result = self.create(env, sw_exit_info_2=0x7000)
        assert result == resumed(page)
        assert env.ap.run() == Halted()

    @pytest.mark.parametrize(
        ("fields", "why"),
        [
            ({"sw_exit_info_1": 7 << 32 | 1}, "no vCPU with that APIC ID"),
            ({"rax": 0}, "RAX != sev->vmsa_features"),
            ({"rax": 0x41}, "RAX != sev->vmsa_features"),
            ({"sw_exit_info_2": VMSA + 8}, "page_address_valid: not page aligned"),
            ({"sw_exit_info_2": VMSA + 1}, "page_address_valid: not page aligned (bit 0)"),
            ({"sw_exit_info_2": 1 << 36 | 0x1000}, "page_address_valid: above MAXPHYADDR 36"),
            ({"sw_exit_info_2": 0x20_0000}, "2 MiB aligned VMSA (the SNP erratum)"),
            ({"sw_exit_info_2": 0}, "2 MiB aligned VMSA (the SNP erratum)"),
            ({"sw_exit_info_1": 1 << 32 | 3}, "unknown request"),
            (
                {"sw_exit_info_1": 1 << 32 | 1 << 16 | 1},
                "VMPL in bits 16+ (the whole u32 compared)",
            ),
        ],
    )
    def test_invalid_requests(self, fields: dict[str, int], why: str) -> None:
        """Every "return -EINVAL" of sev_snp_ap_creation → "svm_vmgexit_bad_input(svm,
        GHCB_ERR_INVALID_INPUT)": EXITINFO1 = 2, EXITINFO2 = 5; the target is untouched."""
        env = Env()
        page, result = self.create(env, **fields)
        assert result == resumed(page, 2, GhcbErr.INVALID_INPUT), why
        assert (env.ap.snp_vmsa_gpa, env.ap.ap_waiting_for_reset) == (None, False)

    def test_maxphyaddr_from_cpuid(self) -> None:
        """cpuid_query_maxphyaddr: leaf 0x80000008 EAX[7:0] when 0x80000000 reaches it (EAX
        0x3030: 48 physical and, in bits 15:8, 48 linear address bits)."""
        table = CpuidTable({(0x8000_0000, 0): (0x8000_0008, 0, 0, 0),
                            (0x8000_0008, 0): (0x3030, 0, 0, 0)})  # fmt: skip
        env = Env()
        env.vm.platform.cpuid = table
        page, result = self.create(env, sw_exit_info_2=1 << 40 | 0x1000)
        assert result == resumed(page)
        env = Env()
        env.vm.platform.cpuid = table
        page, result = self.create(env, sw_exit_info_2=1 << 48 | 0x1000)
        assert result == resumed(page, 2, GhcbErr.INVALID_INPUT)

    def test_missing_rax_and_non_snp(self) -> None:
        """The validator: "if (lower_32_bits(control->exit_info_1) != SVM_VMGEXIT_AP_DESTROY)
        if (!kvm_ghcb_rax_is_valid(svm)) goto vmgexit_err;" and "if (!is_sev_snp_guest(vcpu))
        goto vmgexit_err;": MISSING_INPUT."""
        env = Env()
        page = env.request(ExitCode.AP_CREATION, sw_exit_info_1=1 << 32 | 1, sw_exit_info_2=VMSA)
        assert env.bsp.run() == resumed(page, 2, GhcbErr.MISSING_INPUT)
        env = Env(snp=False)
        page, result = self.create(env)
        assert result == resumed(page, 2, GhcbErr.MISSING_INPUT)


# -- MMIO -----------------------------------------------------------------------------------------
class TestMmio:
    def test_write(self) -> None:
        """ "kvm_sev_es_mmio(vcpu, is_write, control->exit_info_1, len, ghcb_sa)": the device
        gets the scratch area's first ``len`` bytes."""
        env = Env()
        page, result = env.run(
            ExitCode.MMIO_WRITE,
            data=b"\x11\x22\x33\x44\x55",
            sw_exit_info_1=0xFED0_0040,
            sw_exit_info_2=4,
            sw_scratch=SCRATCH,
        )
        assert result == resumed(page)
        assert env.devices.log == [("mmio_write", 0xFED0_0040, b"\x11\x22\x33\x44")]

    def test_read_lands_in_the_shared_buffer(self) -> None:
        """A read writes the device's bytes into the GHCB's shared buffer at sw_scratch."""
        env = Env()
        page, result = env.run(
            ExitCode.MMIO_READ, sw_exit_info_1=0xFED0_0000, sw_exit_info_2=8, sw_scratch=SCRATCH
        )
        buffer = bytearray(page.shared_buffer)
        buffer[SCRATCH - GHCB - 0x800 : SCRATCH - GHCB - 0x800 + 8] = bytes(range(1, 9))
        assert result == Resumed(
            answered(page.replace(shared_buffer=bytes(buffer)), regs(page), 0, 0)
        )

    @pytest.mark.parametrize(
        ("fields", "info1", "info2"),
        [
            ({"sw_exit_info_2": 0}, 0, 0),  # "if (!len) return 1;"
            ({"sw_exit_info_2": 9}, 2, GhcbErr.INVALID_INPUT),  # v2: "len > 8"
            ({"sw_scratch": OUTSIDE}, 2, GhcbErr.INVALID_SCRATCH_AREA),  # v2: in the GHCB
            ({"sw_scratch": GHCB + 0xFEC}, 2, GhcbErr.INVALID_SCRATCH_AREA),  # past 0xFF0
            ({"sw_scratch": GHCB + 0x7FF}, 2, GhcbErr.INVALID_SCRATCH_AREA),  # before 0x800
        ],
    )
    def test_bad_input(self, fields: dict[str, int], info1: int, info2: int) -> None:
        """sev_handle_vmgexit / setup_vmgexit_scratch: no device access."""
        env = Env()
        values: dict[str, Any] = {
            "sw_exit_info_1": 0xFED0_0000,
            "sw_exit_info_2": 8,
            "sw_scratch": SCRATCH,
        }
        page, result = env.run(ExitCode.MMIO_READ, **(values | fields))
        assert result == resumed(page, info1, info2)
        assert env.devices.log == []

    def test_v1_scratch_outside_the_ghcb(self) -> None:
        """GHCB v1: an area outside the GHCB is copied in ("kvm_read_guest") and, for a
        read, back before the guest runs ("if (svm->sev_es.ghcb_sa_sync) kvm_write_guest")."""
        env = Env(snp=False, ghcb_version=1)
        page, result = env.run(
            ExitCode.MMIO_READ, sw_exit_info_1=0xFED0_0000, sw_exit_info_2=16, sw_scratch=OUTSIDE
        )
        assert result == resumed(page)
        assert env.memory.guest_read(OUTSIDE, 16) == bytes(range(1, 9)) * 2

    def test_v1_unreadable_scratch_fails_run(self) -> None:
        """ "if (kvm_read_guest(...)) { ... return -EFAULT; }"."""
        env = Env(snp=False, ghcb_version=1)
        _, result = env.run(
            ExitCode.MMIO_WRITE, sw_exit_info_1=0, sw_exit_info_2=8, sw_scratch=0x9000
        )
        assert result == RunFailed(Errno.EFAULT, "kvm_read_guest of the scratch area failed")


# -- IOIO -----------------------------------------------------------------------------------------
def ioio(port: int, size: int, *, in_: bool = False, string: bool = False) -> int:
    bits = {1: {"size8": 1}, 2: {"size16": 1}, 4: {"size32": 1}}.get(size, {})
    return IoioInfo(port=port, type_in=int(in_), string=int(string), **bits).encode()


class TestIoio:
    def test_out(self) -> None:
        """kvm_fast_pio_out: the low ``size`` bytes of RAX to the port."""
        env = Env()
        page, result = env.run(ExitCode.IOIO, sw_exit_info_1=ioio(0x3F8, 1), rax=0x1234_5641)
        assert result == resumed(page)
        assert env.devices.log == [("io_out", 0x3F8, b"\x41")]

    @pytest.mark.parametrize(
        ("size", "rax"),
        [(1, 0x1122_3344_5566_775A), (2, 0x1122_3344_5566_5A5A), (4, 0x5A5A_5A5A)],
    )
    def test_in(self, size: int, rax: int) -> None:
        """complete_fast_pio_in: "For size less than 4 we merge, else we zero extend"."""
        env = Env()
        page, result = env.run(
            ExitCode.IOIO, sw_exit_info_1=ioio(0x71, size, in_=True), rax=0x1122_3344_5566_7788
        )
        assert result == resumed(page, rax=rax)
        assert env.devices.log == [("io_in", 0x71, b"\x5a" * size)]

    @pytest.mark.parametrize(
        ("size", "rax"), [(1, 0x1122_3344_5566_7702), (2, 0x1122_3344_5566_0102)]
    )
    def test_in_merges_little_endian(self, size: int, rax: int) -> None:
        """complete_fast_pio_in: the port's bytes land in RAX's low ``size`` bytes, least
        significant first; every other bit of RAX (bit 0 included) is kept."""
        env = Env()
        env.devices.ports[0x60] = b"\x02\x01"
        page, result = env.run(
            ExitCode.IOIO, sw_exit_info_1=ioio(0x60, size, in_=True), rax=0x1122_3344_5566_7789
        )
        assert result == resumed(page, rax=rax)

    def test_in_from_an_undecoded_port(self) -> None:
        """A port no device decodes reads all ones (RecordingDevices: the bus floats)."""
        env = Env()
        page, result = env.run(ExitCode.IOIO, sw_exit_info_1=ioio(0x80, 2, in_=True), rax=0)
        assert result == resumed(page, rax=0xFFFF)
        assert env.devices.log == [("io_in", 0x80, b"\xff\xff")]

    def test_no_size_is_a_no_op(self) -> None:
        """ "if (!((control->exit_info_1 & SVM_IOIO_SIZE_MASK) >> SVM_IOIO_SIZE_SHIFT))
        return 1;"."""
        env = Env()
        page, result = env.run(ExitCode.IOIO, sw_exit_info_1=ioio(0x3F8, 0), rax=1)
        assert result == resumed(page)
        assert env.devices.log == []

    def test_string_out_and_in(self) -> None:
        """sev_es_string_io: ``count`` items of ``size`` bytes through the scratch area."""
        env = Env()
        page, result = env.run(
            ExitCode.IOIO,
            data=b"abc",
            sw_exit_info_1=ioio(0x3F8, 1, string=True),
            sw_exit_info_2=3,
            sw_scratch=SCRATCH,
        )
        assert result == resumed(page)
        assert env.devices.log == [("io_out", 0x3F8, bytes([c])) for c in b"abc"]
        page, result = env.run(
            ExitCode.IOIO,
            sw_exit_info_1=ioio(0x71, 2, in_=True, string=True),
            sw_exit_info_2=2,
            sw_scratch=SCRATCH,
        )
        assert isinstance(result, Resumed)
        assert result.page is not None
        assert result.page.shared_buffer[:4] == b"\x5a" * 4

    @pytest.mark.parametrize(
        ("count", "size", "reason"),
        [
            (2**31, 1, "string IOIO count 0x80000000 exceeds INT_MAX: KVM_RUN fails (-EINVAL)"),
            (
                2**30,
                2,
                "string IOIO count 0x40000000 x size 2 overflows an int: KVM_RUN fails (-EINVAL)",
            ),
        ],
    )
    def test_string_count_overflow_fails_run(self, count: int, size: int, reason: str) -> None:
        """ "if (svm->vmcb->control.exit_info_2 > INT_MAX) return -EINVAL;" and
        "check_mul_overflow(count, size, &bytes)" → -EINVAL."""
        env = Env()
        _, result = env.run(
            ExitCode.IOIO,
            sw_exit_info_1=ioio(0x3F8, size, string=True),
            sw_exit_info_2=count,
            sw_scratch=SCRATCH,
        )
        assert result == RunFailed(Errno.EINVAL, reason)

    @pytest.mark.parametrize(
        ("code", "fields", "what"),
        [
            (ExitCode.IOIO, {"sw_exit_info_1": ioio(0x71, 2, in_=True)}, "io_in"),
            (
                ExitCode.IOIO,
                {
                    "sw_exit_info_1": ioio(0x71, 2, in_=True, string=True),
                    "sw_exit_info_2": 1,
                    "sw_scratch": SCRATCH,
                },
                "io_in",
            ),
            (
                ExitCode.MMIO_READ,
                {"sw_exit_info_1": 0xFED0_0000, "sw_exit_info_2": 2, "sw_scratch": SCRATCH},
                "mmio_read",
            ),
        ],
    )
    def test_device_answering_the_wrong_size_is_misuse(
        self, code: ExitCode, fields: dict[str, Any], what: str
    ) -> None:
        """A device model that answers a read with other than the bytes asked for is the
        caller's bug: named, with the size it owed."""

        class Short(RecordingDevices):
            def mmio_read(self, gpa: int, size: int) -> bytes:
                return b"\x01"

            def io_in(self, port: int, size: int) -> bytes:
                return b"\x01"

        env = Env()
        env.vm.platform = Platform(devices=Short())
        with pytest.raises(HypervisorUsageError) as info:
            env.run(code, **fields)
        assert str(info.value) == (
            f"{what} must return 2 bytes, not b'\\x01' [rule device; {devices._SPEC}]"
        )

    def test_string_outside_the_ghcb(self) -> None:
        """GHCB v2: "GHCB v2 requires the scratch area to be within the GHCB"."""
        env = Env()
        page, result = env.run(
            ExitCode.IOIO,
            sw_exit_info_1=ioio(0x3F8, 1, string=True),
            sw_exit_info_2=1,
            sw_scratch=OUTSIDE,
        )
        assert result == resumed(page, 2, GhcbErr.INVALID_SCRATCH_AREA)


# -- the SVM intercepts ----------------------------------------------------------------------------
class TestIntercepts:
    def test_cpuid(self) -> None:
        """kvm_emulate_cpuid: EAX/ECX as u32 in, all four registers out (zero-extended)."""
        env = Env()
        page, result = env.run(ExitCode.CPUID, rax=1 << 32 | 0x8000_001F, rcx=0, rbx=7, rdx=9)
        assert result == resumed(page, rax=1, rbx=0x173, rcx=0x1FD, rdx=1)

    def test_rdmsr(self) -> None:
        """ "kvm_rax_write(vcpu, data & -1u); kvm_rdx_write(vcpu, (data >> 32) & -1u);"."""
        page, result = Env().run(ExitCode.MSR, rcx=1 << 32 | 0xC001_0131)
        assert result == resumed(page, rax=3, rdx=1)

    def test_wrmsr(self) -> None:
        """ "u64 data = kvm_read_edx_eax(vcpu);"."""
        env = Env()
        page, result = env.run(
            ExitCode.MSR, sw_exit_info_1=1, rcx=0xC001_0131, rax=0xFFFF_0000_0000_0005, rdx=2
        )
        assert result == resumed(page)
        assert env.msrs.values[0xC001_0131] == 0x2_0000_0005

    @pytest.mark.parametrize("write", [0, 1])
    def test_unknown_msr_injects_gp(self, write: int) -> None:
        """svm_complete_emulated_msr: "svm_vmgexit_inject_exception(svm, X86_TRAP_GP);":
        EXITINFO1 = 1, EXITINFO2 = 0x8000030D; the registers go back unchanged."""
        page, result = Env().run(ExitCode.MSR, sw_exit_info_1=write, rcx=0x10, rax=1, rdx=2)
        assert result == resumed(page, 1, GP)
        assert EventInjection(vector=13).encode() == GP

    @pytest.mark.parametrize(
        ("rax", "cpl", "ret"),
        [
            (1, 0, 0),
            (1, 3, 2**64 - 1),
            (12, 3, 2**64 - 1),
            (12, 0, 2**64 - 22),
            (99, 0, 2**64 - 1000),
        ],
    )
    def test_vmmcall(self, rax: int, cpl: int, ret: int) -> None:
        """kvm_emulate_hypercall: "if (cpl) { ret = -KVM_EPERM; ..." , VAPIC_POLL_IRQ 0,
        else -KVM_ENOSYS (64-bit for a protected guest)."""
        page, result = Env().run(ExitCode.VMMCALL, rax=rax, cpl=cpl)
        assert result == resumed(page, rax=ret)

    def test_vmmcall_passes_rbx_rcx_rdx_rsi(self) -> None:
        """ "a0 = kvm_rbx_read(vcpu); a1 = kvm_rcx_read(vcpu); a2 = kvm_rdx_read(vcpu);
        a3 = kvm_rsi_read(vcpu);" then "kvm_rax_write(vcpu, ret);"."""

        class Recording:
            def __init__(self) -> None:
                self.calls: list[tuple[int, tuple[int, int, int, int], int]] = []

            def hypercall(self, nr: int, args: tuple[int, int, int, int], cpl: int) -> int:
                self.calls.append((nr, args, cpl))
                return 0x1234

        hypercalls = Recording()
        env = Env()
        env.vm.platform = Platform(hypercalls=hypercalls)
        page, result = env.run(ExitCode.VMMCALL, rax=99, rbx=1, rcx=2, rdx=3, rsi=4, cpl=3)
        assert result == resumed(page, rax=0x1234)
        assert hypercalls.calls == [(99, (1, 2, 3, 4), 3)]

    def test_vmmcall_map_gpa_range_exit(self) -> None:
        """KVM_HC_MAP_GPA_RANGE: "vcpu->run->exit_reason = KVM_EXIT_HYPERCALL; ... ret = 0;
        args[0..2] = gpa, npages, attrs; flags = KVM_EXIT_HYPERCALL_LONG_MODE"; then
        complete_hypercall_exit: "kvm_rax_write(vcpu, ret);" (no conversion by KVM itself)."""
        env = Env()
        page, result = env.run(ExitCode.VMMCALL, rax=12, rbx=0x4000, rcx=2, rdx=0x10, cpl=0)
        assert isinstance(result, MapGpaExit)
        assert (result.gpa, result.npages, result.attributes) == (0x4000, 2, 0x10)
        call = decode_hypercall_exit(result.kvm_run)
        assert (call.nr, call.args[:3], call.ret, call.flags) == (12, (0x4000, 2, 0x10), 0, 1)
        final = env.bsp.complete(with_hypercall_ret(result.kvm_run, 2**64 - 22))
        assert final == resumed(page, rax=2**64 - 22, rbx=0x4000, rcx=2, rdx=0x10)

    @pytest.mark.parametrize(
        ("fields", "ret"),
        [
            ({"rbx": 0x4008, "rcx": 1}, 2**64 - 22),  # "!PAGE_ALIGNED(gpa)"
            ({"rbx": 0x4000, "rcx": 0}, 2**64 - 22),  # "!npages"
            ({"rbx": 0x4000, "rcx": 2**64 - 1}, 2**64 - 22),  # gfn + npages wraps
            ({"rbx": 0x4001, "rcx": 1}, 2**64 - 22),  # bit 0 of the GPA
            ({"rbx": 0x1000, "rcx": 2**64 - 1}, 2**64 - 22),  # gfn 1 + npages wraps to 0
        ],
    )
    def test_vmmcall_map_gpa_range_refused(self, fields: dict[str, Any], ret: int) -> None:
        """ "ret = -KVM_EINVAL;" for a bad range; with no userspace exit enabled
        "ret = -KVM_ENOSYS;"."""
        page, result = Env().run(ExitCode.VMMCALL, rax=12, cpl=0, **fields)
        assert result == resumed(page, rax=ret)
        page, result = Env(map_gpa_range=False).run(
            ExitCode.VMMCALL, rax=12, rbx=0x4000, rcx=1, cpl=0
        )
        assert result == resumed(page, rax=2**64 - 1000)

    def test_vmmcall_map_gpa_range_largest(self) -> None:
        """gfn 1 + (2**64 - 2) pages is 2**64 - 1: no wrap, so the range goes to userspace."""
        env = Env()
        _, result = env.run(ExitCode.VMMCALL, rax=12, rbx=0x1000, rcx=2**64 - 2, cpl=0)
        assert isinstance(result, MapGpaExit)
        assert (result.gpa, result.npages, result.attributes) == (0x1000, 2**64 - 2, 0)

    @pytest.mark.parametrize(
        "code",
        [
            ExitCode.READ_DR7,
            ExitCode.WRITE_DR7,
            ExitCode.INVD,
            ExitCode.WBINVD,
            ExitCode.RDTSCP,
            ExitCode.MONITOR,
            ExitCode.MWAIT,
        ],
    )
    def test_no_ops(self, code: ExitCode) -> None:
        """DR7 ("if (sev_es_guest(vcpu->kvm)) return 1;"), INVD/WBINVD (NOPs),
        MONITOR/MWAIT (emulate_as_nop), RDTSCP (#UD queued through the VMCB): 0/0 and the
        registers back as the guest sent them."""
        page, result = Env().run(code, rax=5, rcx=6, rdx=7)
        assert result == resumed(page)

    def test_no_handler(self) -> None:
        """RDTSC: svm_exit_handlers has no entry ("svm_handle_invalid_exit"): Unhandled, the
        GHCB as KVM left it at the exit."""
        env = Env()
        page, result = env.run(ExitCode.RDTSC, rcx=0)
        assert result == Unhandled(ExitCode.RDTSC)
        assert env.memory.guest_read(GHCB, PAGE_SIZE) == build_page(at_exit(page))

    def test_a_code_without_a_handler_is_not_handled(self) -> None:
        """svm_invoke_exit_handler: an exit code with no entry in svm_exit_handlers →
        svm_handle_invalid_exit (the vCPU accepts no such code; the table says so itself)."""
        env = Env()
        assert events.handle_event(env.bsp, 0x7FFF) == events.NotHandled(0x7FFF)

    def test_rdpmc_without_pmu(self) -> None:
        """kvm_emulate_rdpmc: "if (kvm_pmu_rdpmc(vcpu, ecx, &data)) { kvm_inject_gp(vcpu, 0);
        return 1; }": the #GP goes through the VMCB; the GHCB reads 0/0, registers as sent."""
        page, result = Env().run(ExitCode.RDPMC, rcx=1, rax=5, rdx=6)
        assert result == resumed(page)

    def test_rdpmc_with_pmu(self) -> None:
        """ "kvm_rax_write(vcpu, (u32)data); kvm_rdx_write(vcpu, data >> 32);"."""

        class Pmu:
            def rdpmc(self, index: int) -> int | None:
                return 0x1_2345_6789_ABCD if index == 1 else None

        env = Env()
        env.vm.platform = Platform(pmcs=Pmu())
        page, result = env.run(ExitCode.RDPMC, rcx=1 << 32 | 1)
        assert result == resumed(page, rax=0x6789_ABCD, rdx=0x1_2345)


# -- page state change (the engine: ghcb.hypervisor.psc; its own tests: test_psc_engine) ------
class TestPsc:
    def desc(self, *entries: PscEntry, end: int | None = None) -> bytes:
        return build_psc(list(entries), end_entry=end)

    def test_coalesced_range_then_answer(self) -> None:
        """SVM_VMGEXIT_PSC: "setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr))", then
        snp_begin_psc: two adjacent 4 KiB shared entries → one KVM_EXIT_HYPERCALL (GPA
        0x4000, 2 pages, DECRYPTED | 4K); after userspace's 0: each entry cur_page = 1,
        hdr.cur_entry = 2, "svm_vmgexit_no_action(svm, 0)"; the pages are shared."""
        env = Env()
        env.memory.set_shared(OUTSIDE, shared=False)
        env.memory.map(0x5000, shared=False)
        desc = self.desc(
            PscEntry(gfn=4, operation=PscOp.SHARED), PscEntry(gfn=5, operation=PscOp.SHARED)
        )
        page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH)
        assert isinstance(result, MapGpaExit)
        assert (result.gpa, result.npages, result.attributes) == (
            0x4000,
            2,
            KVM_MAP_GPA_RANGE_DECRYPTED,
        )
        assert env.bsp.state.value == "await-hypercall"
        ret = vmm_map_gpa_range(env.memory, result.kvm_run)
        final = env.bsp.complete(with_hypercall_ret(result.kvm_run, ret))
        done = self.desc(
            PscEntry(gfn=4, operation=PscOp.SHARED, cur_page=1),
            PscEntry(gfn=5, operation=PscOp.SHARED, cur_page=1),
            end=1,
        )
        done = b"\x02\x00" + done[2:]  # hdr.cur_entry = 2
        assert final == resumed(page.replace(shared_buffer=done.ljust(2032, b"\0")))
        assert env.memory.is_shared(0x4000)
        assert env.memory.is_shared(0x5000)

    def test_userspace_failure_is_generic(self) -> None:
        """snp_complete_one_psc: "if (vcpu->run->hypercall.ret) { snp_complete_psc(svm,
        VMGEXIT_PSC_ERROR_GENERIC); ...": EXITINFO2 = 0x100 << 32, entries untouched."""
        env = Env()
        desc = self.desc(PscEntry(gfn=4, operation=PscOp.PRIVATE))
        page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH)
        assert isinstance(result, MapGpaExit)
        final = env.bsp.complete(with_hypercall_ret(result.kvm_run, 1))
        assert final == resumed(page, 0, PscErr.GENERIC)

    @pytest.mark.parametrize(
        ("entries", "end", "info2"),
        [
            ([PscEntry(gfn=4, operation=2)], 253, PscErr.INVALID_HDR),  # end >= max entries
            ([PscEntry(gfn=1, operation=2, pagesize=1)], None, PscErr.INVALID_ENTRY),  # gfn % 512
            ([PscEntry(gfn=4, operation=2, cur_page=2)], None, PscErr.INVALID_ENTRY),
            ([PscEntry(gfn=4, operation=3)], None, PscErr.NONE),  # PSMASH: done, no exit
        ],
    )
    def test_answered_without_exit(
        self, entries: list[PscEntry], end: int | None, info2: int
    ) -> None:
        """snp_begin_psc's checks: "if (idx_end >= max_nr_entries)" INVALID_HDR;
        "if (entry_start.cur_page > npages || !IS_ALIGNED(gfn, npages))" INVALID_ENTRY; an
        operation other than private/shared is completed without an exit."""
        env = Env()
        _page, result = env.run(ExitCode.PSC, data=self.desc(*entries, end=end), sw_scratch=SCRATCH)
        assert isinstance(result, Resumed)
        assert result.page is not None
        assert (result.page.sw_exit_info_1, result.page.sw_exit_info_2) == (0, info2)

    @pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=str)
    def test_exit_info_2_zero_is_guest_input(self, abi: MergedAbi | V15Abi) -> None:
        """EXITINFO2 = 0 is the guest's: merged "setup_vmgexit_scratch(svm, true,
        sizeof(struct psc_hdr))"; v15 "setup_vmgexit_scratch(svm, true, control->exit_info_2)"
        (no "WARN_ON_ONCE(!min_len)"; in the GHCB "ghcb_sa_len = len" = 0) and snp_begin_psc
        "if (idx_end >= VMGEXIT_PSC_MAX_COUNT)": both trees proceed to the userspace exit
        (GPA 0x5000, 1 page, ENCRYPTED), then cur_page 1, cur_entry 1, EXITINFO 0/0."""
        env = Env(cert_abi=abi)
        env.memory.map(0x5000)
        desc = bytes.fromhex("00000000000000000050000000001000")  # gfn 5 private, end 0
        page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH, sw_exit_info_2=0)
        assert isinstance(result, MapGpaExit)
        assert (result.gpa, result.npages, result.attributes) == (0x5000, 1, 0x10)
        ret = vmm_map_gpa_range(env.memory, result.kvm_run)
        final = env.bsp.complete(with_hypercall_ret(result.kvm_run, ret))
        after = bytes.fromhex("01000000000000000150000000001000")
        assert final == resumed(page.replace(shared_buffer=after.ljust(2032, b"\0")))

    @pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=["merged", "v15"])
    def test_end_entry_against_the_tree(self, abi: MergedAbi | V15Abi) -> None:
        """EXITINFO2 = 16 (header + 1 entry), end_entry 1, two PSMASH entries: v15's
        "if (idx_end >= VMGEXIT_PSC_MAX_COUNT)" (not the area's 1 entry) accepts them, as
        kvm_psc_answer(..., validator=V15) does; each marked done without an exit (merged: the
        area is the rest of the shared buffer, 2032 bytes, so both fit too)."""
        env = Env(cert_abi=abi)
        desc = bytes.fromhex("000001000000000000600000000030000070000000003000")
        page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=SCRATCH, sw_exit_info_2=16)
        done = bytes.fromhex("020001000000000001600000000030000170000000003000")
        assert result == resumed(page.replace(shared_buffer=done.ljust(2032, b"\0")))
        assert kvm_psc_answer(desc, validator=abi.validator).exit_info_2 == PscErr.NONE

    def test_v15_outside_area_progress_reaches_the_guest(self) -> None:
        """v15 allows a scratch area outside the GHCB on v2 (no "ghcb_version >= 2" refusal):
        KVM copies exit_info_2 = 24 bytes in ("kvm_read_guest(...scratch_va, len)"),
        snp_begin_psc updates that copy (svm->sev_es.ghcb_sa) across the userspace exit, and
        sev_es_unmap_ghcb "kvm_write_guest(..., ghcb_sa, ghcb_sa_len)" writes it back: the
        guest reads cur_entry 2 and both entries' cur_page 1; the GHCB's buffer is untouched."""
        env = Env(cert_abi=V15Abi())
        env.memory.map(0x5000)
        desc = bytes.fromhex("000001000000000000500000000010000060000000003000")
        env.memory.guest_write(OUTSIDE, desc)
        page, result = env.run(ExitCode.PSC, sw_scratch=OUTSIDE, sw_exit_info_2=24)
        assert isinstance(result, MapGpaExit)
        assert (result.gpa, result.npages, result.attributes) == (0x5000, 1, 0x10)
        assert env.memory.guest_read(OUTSIDE, 24) == desc  # not written back during the exit
        ret = vmm_map_gpa_range(env.memory, result.kvm_run)
        final = env.bsp.complete(with_hypercall_ret(result.kvm_run, ret))
        assert final == resumed(page)
        assert env.memory.guest_read(OUTSIDE, 32) == bytes.fromhex(
            "0200010000000000015000000000100001600000000030000000000000000000"
        )

    @settings(max_examples=60, deadline=None)
    @given(
        abi=st.sampled_from([MergedAbi(), V15Abi()]),
        version=st.sampled_from([1, 2]),
        scratch=st.sampled_from([SCRATCH, SCRATCH + 0x7E8, OUTSIDE, OUTSIDE + 0xFF8]),
        info2=st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1)),
        desc=st.binary(max_size=64),
    )
    def test_guest_bytes_never_raise(
        self, abi: MergedAbi | V15Abi, version: int, scratch: int, info2: int, desc: bytes
    ) -> None:
        """Whatever the guest puts in EXITINFO2, SW_SCRATCH and the descriptor (in or outside
        the GHCB), KVM answers: an exit, a resumed guest or a KVM_RUN error; never an
        exception."""
        env = Env(cert_abi=abi, ghcb_version=version)
        env.memory.guest_write(OUTSIDE, desc)
        _page, result = env.run(ExitCode.PSC, data=desc, sw_scratch=scratch, sw_exit_info_2=info2)
        assert isinstance(result, MapGpaExit | Resumed | RunFailed)
        if isinstance(result, MapGpaExit):
            final = env.bsp.complete(with_hypercall_ret(result.kvm_run, 1))
            assert isinstance(final, Resumed)

    def test_merged_v1_outside_area_has_no_entries(self) -> None:
        """Merged, GHCB v1, scratch outside the GHCB: an 8-byte copy ("ghcb_sa_len = min_len"
        = sizeof(struct psc_hdr)), so max_nr_entries = 0 and "if (idx_end >= max_nr_entries)"
        answers INVALID_HDR; the guest's descriptor is written back unchanged."""
        env = Env(cert_abi=MergedAbi(), ghcb_version=1)
        desc = bytes.fromhex("00000000000000000060000000003000")
        env.memory.guest_write(OUTSIDE, desc)
        page, result = env.run(ExitCode.PSC, sw_scratch=OUTSIDE)
        assert result == resumed(page, 0, PscErr.INVALID_HDR)
        assert env.memory.guest_read(OUTSIDE, 16) == desc

    def test_scratch_outside_and_non_snp(self) -> None:
        """PSC needs SNP and SW_SCRATCH (validator: MISSING_INPUT) and, in v2, a scratch area
        in the GHCB (INVALID_SCRATCH_AREA)."""
        env = Env()
        page, result = env.run(ExitCode.PSC, sw_scratch=OUTSIDE)
        assert result == resumed(page, 2, GhcbErr.INVALID_SCRATCH_AREA)
        page, result = env.run(ExitCode.PSC)
        assert result == resumed(page, 2, GhcbErr.MISSING_INPUT)
        env = Env(snp=False)
        page, result = env.run(ExitCode.PSC, sw_scratch=SCRATCH)
        assert result == resumed(page, 2, GhcbErr.MISSING_INPUT)
