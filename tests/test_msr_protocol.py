"""The GHCB MSR protocol in the reference vCPU: every path of KVM's
``sev_handle_vmgexit_msr_protocol`` with the exact MSR value written back, or the exact
``kvm_run`` bytes of the termination exit (arch/x86/kvm/svm/sev.c, quoted per test)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from ghcb._fast import flat_fields
from ghcb.codes import KvmExit, MsrCode, PscOp
from ghcb.hypervisor import (
    ApResetHold,
    CpuidTable,
    GuestMemory,
    HypervisorUsageError,
    Interrupted,
    MapGpaExit,
    Platform,
    RecordingFirmware,
    Released,
    Resumed,
    RunFailed,
    Terminated,
    Vcpu,
    Vm,
)
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.hypervisor.msr_protocol import MsrPscRequest, MsrSettings, msr_protocol
from ghcb.hypervisor.psc import decode_hypercall_exit, with_hypercall_ret
from ghcb.hypervisor.results import system_event_run
from ghcb.msr import SevInfoResp, decode_msr
from ghcb.psc import GHCB_MSR_PSC_RESP_ERROR
from ghcb.schemas.kvm import (
    KVM_HC_MAP_GPA_RANGE,
    KVM_MAP_GPA_RANGE_DECRYPTED,
    KVM_MAP_GPA_RANGE_ENCRYPTED,
    KVM_MAP_GPA_RANGE_PAGE_SZ_4K,
    kvm_system_event,
)
from tests.helpers import load_table

GHCB = 0x1000
KVM_TABLE = load_table("kvm")
EVENT = KVM_TABLE["system_event"]
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
EXIT_REASON = 8  # offsetof(struct kvm_run, exit_reason)
UNION = KVM_TABLE["kvm_run"]["exit_union_offset"]
DECRYPTED = KVM_MAP_GPA_RANGE_DECRYPTED | KVM_MAP_GPA_RANGE_PAGE_SZ_4K
ENCRYPTED = KVM_MAP_GPA_RANGE_ENCRYPTED | KVM_MAP_GPA_RANGE_PAGE_SZ_4K
CPUID_8000001F = (0x1, 0x0000_0173, 0x0000_01FD, 0x0000_0001)  # a Genoa-like leaf


def make_vcpu(*, snp: bool = True, registered: int = GHCB, **vm: Any) -> Vcpu:
    memory = GuestMemory()
    memory.map(GHCB)
    memory.map(0x5000)
    return Vcpu(Vm(RecordingFirmware(), snp=snp, **vm), memory, registered)


def event_fields(kvm_run: bytes) -> tuple[int, int, int, int]:
    """(exit_reason, system_event.type, ndata, data[0]) read at the table's offsets."""
    offset = {f["name"]: UNION + f["offset"] for f in EVENT["field"]}
    return (
        U32.unpack_from(kvm_run, EXIT_REASON)[0],
        U32.unpack_from(kvm_run, offset["type"])[0],
        U32.unpack_from(kvm_run, offset["ndata"])[0],
        U64.unpack_from(kvm_run, offset["data_0"])[0],
    )


def test_system_event_constants_match_the_table() -> None:
    """exit_reason 24, type 6, ndata 1 (uapi/linux/kvm.h; sev.c out_terminate)."""
    assert EVENT["exit_reason"] == int(KvmExit.SYSTEM_EVENT) == 24
    run = system_event_run(bytes(288), 0x1234_5100)
    assert event_fields(run) == (24, EVENT["type_sev_term"], EVENT["ndata"], 0x1234_5100)
    assert run[:8] == bytes(8)
    assert run[UNION + 16 :] == bytes(288 - UNION - 16)


def test_system_event_schema_matches_the_table() -> None:
    """The construct schema's first fields sit where the table puts them."""
    fields = {f.name: (f.offset, f.size) for f in flat_fields(kvm_system_event)}
    for row in EVENT["field"]:
        assert fields[row["name"]] == (row["offset"], row["size"])
    assert kvm_system_event.sizeof() == 8 + 16 * 8


# -- SEV_INFO --------------------------------------------------------------------------------
class TestSevInfo:
    def test_default_answer(self) -> None:
        """ "set_ghcb_msr(svm, GHCB_MSR_SEV_INFO((__u64)sev->ghcb_version, GHCB_VERSION_MIN,
        sev_enc_bit));": max 2 [63:48], min 1 [47:32], C-bit 51 [31:24], code 0x001."""
        assert make_vcpu().run(gpa=0x002) == Resumed(None, msr=0x0002_0001_3300_0001)

    @pytest.mark.parametrize(
        ("settings", "value"),
        [
            ({"ghcb_version": 1, "ghcb_version_min": 1, "cbit": 47}, 0x0001_0001_2F00_0001),
            ({"ghcb_version": 0xFFFF, "ghcb_version_min": 0, "cbit": 0xFF}, 0xFFFF_0000_FF00_0001),
        ],
    )
    def test_configurable(self, settings: dict[str, Any], value: int) -> None:
        """The range and the C-bit are the VM's (``sev->ghcb_version``, ``sev_enc_bit``)."""
        assert make_vcpu(**settings).run(gpa=0x002) == Resumed(None, msr=value)
        assert (
            SevInfoResp(
                max_version=settings["ghcb_version"],
                min_version=settings["ghcb_version_min"],
                cbit_position=settings["cbit"],
            ).encode()
            == value
        )

    def test_reserved_bits_are_ignored(self) -> None:
        """The request's bits 63:12 are reserved: set_ghcb_msr replaces the whole value."""
        assert make_vcpu().run(gpa=0xFFFF_FFFF_FFFF_F002) == Resumed(
            None, msr=0x0002_0001_3300_0001
        )

    def test_not_snp_too(self) -> None:
        """SEV_INFO is not SNP-only."""
        assert make_vcpu(snp=False).run(gpa=0x002).msr == 0x0002_0001_3300_0001  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        "bad", [{"ghcb_version": 0x10000}, {"cbit": 256}, {"hv_features": 1 << 52}, {"cbit": True}]
    )
    def test_settings_must_fit_their_fields(self, bad: dict[str, Any]) -> None:
        with pytest.raises(HypervisorUsageError):
            Vm(RecordingFirmware(), **bad)


# -- CPUID -----------------------------------------------------------------------------------
class TestCpuid:
    @pytest.mark.parametrize("register", [0, 1, 2, 3])
    def test_register_selection(self, register: int) -> None:
        """ "if (cpuid_reg == 0) cpuid_value = RAX; else if (cpuid_reg == 1) RBX; else if
        (cpuid_reg == 2) RCX; else RDX;" → bits 63:32, code 0x005, bits 31:12 kept."""
        vcpu = make_vcpu(platform=Platform(cpuid=CpuidTable({(0x8000001F, 0): CPUID_8000001F})))
        request = 0x8000001F << 32 | register << 30 | 0x004
        expect = CPUID_8000001F[register] << 32 | register << 30 | 0x005
        assert vcpu.run(gpa=request) == Resumed(None, msr=expect)

    def test_reserved_bits_29_12_are_kept(self) -> None:
        """set_ghcb_msr_bits rewrites only GHCB_MSR_CPUID_VALUE (63:32) and GHCBInfo: the
        guest's reserved bits 29:12 come back as it wrote them."""
        vcpu = make_vcpu(platform=Platform(cpuid=CpuidTable({(1, 0): (0xA, 0xB, 0xC, 0xD)})))
        request = 1 << 32 | 3 << 30 | 0x3FFFF000 | 0x004
        assert vcpu.run(gpa=request) == Resumed(None, msr=0xD << 32 | 3 << 30 | 0x3FFFF000 | 5)

    def test_missing_leaf_reads_zero(self) -> None:
        """kvm_cpuid for an AMD guest: a leaf not in the table is all zeros."""
        assert make_vcpu().run(gpa=0x4000_0000 << 32 | 1 << 30 | 0x004) == Resumed(
            None, msr=1 << 30 | 0x005
        )

    def test_sub_leaf_is_zero(self) -> None:
        """ "vcpu->arch.regs[VCPU_REGS_RCX] = 0;": the MSR form always reads sub-leaf 0."""
        table = CpuidTable({(0xD, 0): (1, 2, 3, 4), (0xD, 1): (5, 6, 7, 8)})
        vcpu = make_vcpu(platform=Platform(cpuid=table))
        assert vcpu.run(gpa=0xD << 32 | 0x004) == Resumed(None, msr=1 << 32 | 0x005)


# -- GHCB GPA: preferred and registered --------------------------------------------------------
class TestGhcbGpa:
    def test_preferred_gpa_is_none(self) -> None:
        """ "set_ghcb_msr_bits(svm, GHCB_MSR_PREF_GPA_NONE, ...)" + 0x011."""
        assert make_vcpu().run(gpa=0x010) == Resumed(None, msr=0xFFFF_FFFF_FFFF_F011)

    def test_register_echoes_and_registers(self) -> None:
        """ "svm->sev_es.ghcb_registered_gpa = gfn_to_gpa(gfn);" and the GFN echoed with
        0x013; a GHCB exit at the new GPA is handled, one at the old GPA fails -EINVAL
        ("vmgexit: GHCB GPA [%#llx] is not registered")."""
        vcpu = make_vcpu()
        assert vcpu.run(gpa=0x5012) == Resumed(None, msr=0x5013)
        assert vcpu.ghcb_gpa == 0x5000
        assert vcpu.run(gpa=GHCB) == RunFailed(22, "GHCB GPA differs from the registered one")

    def test_unregistered_guest_fails_its_first_ghcb_exit(self) -> None:
        """An SNP guest that never registered (registered GPA 0) fails -EINVAL."""
        vcpu = make_vcpu(registered=0)
        assert isinstance(vcpu.run(gpa=GHCB), RunFailed)

    def test_full_52_bit_gfn(self) -> None:
        """GHCB_MSR_GPA_VALUE_MASK is GENMASK_ULL(51, 0): bits 63:12 are the GFN, no reserved
        bits; KVM registers whatever the guest sends."""
        vcpu = make_vcpu()
        assert vcpu.run(gpa=0xFFFF_FFFF_FFFF_F012) == Resumed(None, msr=0xFFFF_FFFF_FFFF_F013)
        assert vcpu.ghcb_gpa == 0xFFFF_FFFF_FFFF_F000

    @pytest.mark.parametrize("request_", [0x010, 0x5012, 0x1_0000_1014])
    def test_snp_only_requests_terminate_a_non_snp_guest(self, request_: int) -> None:
        """ "if (!is_sev_snp_guest(vcpu)) goto out_terminate;" for PREF_GPA, REG_GPA and
        PSC: KVM_EXIT_SYSTEM_EVENT / SEV_TERM with data[0] = the MSR value."""
        vcpu = make_vcpu(snp=False)
        result = vcpu.run(gpa=request_)
        assert isinstance(result, Terminated)
        assert (result.data, result.reason_set, result.reason_code, result.via) == (
            request_,
            None,
            None,
            "msr",
        )
        assert event_fields(result.kvm_run) == (24, 6, 1, request_)
        assert vcpu.ghcb_gpa == GHCB  # nothing registered


# -- HV features -------------------------------------------------------------------------------
@pytest.mark.parametrize(("features", "value"), [(None, 0x3081), (0x23, 0x23081), (0, 0x081)])
def test_hv_features(features: int | None, value: int) -> None:
    """ "set_ghcb_msr_bits(svm, GHCB_HV_FT_SUPPORTED, GHCB_MSR_HV_FT_MASK, ...)" + 0x081;
    KVM's GHCB_HV_FT_SUPPORTED is SNP | SNP_AP_CREATION = 0x3, configurable here."""
    settings: dict[str, Any] = {} if features is None else {"hv_features": features}
    assert make_vcpu(**settings).run(gpa=0xFFFF_0000_0000_0080) == Resumed(None, msr=value)


# -- termination -------------------------------------------------------------------------------
class TestTermination:
    def test_term_request(self) -> None:
        """ "reason_set = get_ghcb_msr_bits(..._SET_MASK, ..._SET_POS)" ([15:12]),
        "reason_code = ..." ([23:16]); "goto out_terminate": data[0] = the MSR value; the
        rest of kvm_run is as it stood."""
        vcpu = make_vcpu()
        value = 0xAB00_0000_0004_1100  # set 1 (Linux), code 4 (CPUID), reserved bits set
        result = vcpu.run(gpa=value)
        assert result == Terminated(system_event_run(bytes(288), value), value, 1, 4, "msr")
        assert event_fields(result.kvm_run) == (24, 6, 1, value)
        assert vcpu.kvm_run == result.kvm_run
        assert vcpu.state.value == "mapped"

    def test_guest_runs_on_after_termination(self) -> None:
        """The exit leaves no callback: the next KVM_RUN enters the guest, which reads its
        own MSR value (KVM did not change it)."""
        vcpu = make_vcpu()
        vcpu.run(gpa=0x0100)
        assert vcpu.run() == Resumed(None, msr=0x0100)
        assert vcpu.state.value == "idle"

    def test_immediate_exit_after_termination(self) -> None:
        """-EINTR first if userspace sets immediate_exit, nothing mapped."""
        vcpu = make_vcpu()
        result = vcpu.run(gpa=0x0100)
        assert isinstance(result, Terminated)
        assert vcpu.run(kvm_run=with_immediate_exit(result.kvm_run, 1)) == Interrupted(None)
        assert vcpu.run(kvm_run=with_immediate_exit(result.kvm_run, 0)) == Resumed(None, msr=0x100)


# -- AP reset hold -----------------------------------------------------------------------------
class TestApResetHold:
    def test_hold_and_release(self) -> None:
        """ "kvm_emulate_ap_reset_hold", result preset 0 ("Preset the result to a non-SIPI
        return"), code 0x007; the first SIPI writes nothing ("First SIPI: Use the values as
        initially set by the VMM"), a later one sets the result to 1: 0x1007."""
        vcpu = make_vcpu()
        assert vcpu.run(gpa=0xDEAD_0006) == ApResetHold("msr")
        assert vcpu.ghcb_msr == 0x007  # bits 63:12 are the result: the request's bits go
        assert vcpu.run() == ApResetHold("msr")  # KVM_RUN blocks
        assert vcpu.sipi() == Released(first=True)
        assert vcpu.run() == Resumed(None, msr=0x007)
        assert vcpu.run(gpa=0x006) == ApResetHold("msr")
        assert vcpu.sipi() == Released(first=False)
        assert vcpu.run() == Resumed(None, msr=0x1007)

    def test_interrupted_while_held(self) -> None:
        vcpu = make_vcpu()
        vcpu.run(gpa=0x006)
        held = with_immediate_exit(vcpu.kvm_run, 1)
        assert vcpu.run(kvm_run=held) == Interrupted(None)
        assert vcpu.state.value == "held"

    def test_sipi_only_in_hold(self) -> None:
        with pytest.raises(HypervisorUsageError):
            make_vcpu().sipi()


# -- everything else ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        0x016,  # VMPL_REQ: KVM does not handle it
        0x001,  # a response code sent as a request
        0x0123_4567_8900_0FFF,  # an unknown code
        0x003,
        0x0081,
        int(MsrCode.PSC_RESP),
    ],
)
def test_unknown_codes_keep_the_value(value: int) -> None:
    """ "default: /* Error, keep GHCB MSR value as-is */ break;": the guest resumes and reads
    its own value."""
    vcpu = make_vcpu()
    assert vcpu.run(gpa=value) == Resumed(None, msr=value)
    assert decode_msr(vcpu.ghcb_msr).code == value & 0xFFF


# -- page state change -------------------------------------------------------------------------
class TestPsc:
    def exit_of(self, vcpu: Vcpu, value: int) -> MapGpaExit:
        result = vcpu.run(gpa=value)
        assert isinstance(result, MapGpaExit)
        return result

    def test_exit_then_answer(self) -> None:
        """snp_begin_psc_msr: "vcpu->run->exit_reason = KVM_EXIT_HYPERCALL; hypercall.nr =
        KVM_HC_MAP_GPA_RANGE; ... args[0] = gpa; args[1] = 1; args[2] = ... DECRYPTED |
        KVM_MAP_GPA_RANGE_PAGE_SZ_4K"; snp_complete_psc_msr: ret 0 → GHCB_MSR_PSC_RESP."""
        vcpu = make_vcpu()
        value = 0xFF << 56 | PscOp.SHARED << 52 | 0x5 << 12 | 0x014  # bits 63:56 ignored
        result = self.exit_of(vcpu, value)
        assert (result.gpa, result.npages, result.attributes) == (0x5000, 1, DECRYPTED)
        call = decode_hypercall_exit(result.kvm_run)
        assert (call.exit_reason, call.nr, call.args[:3], call.ret) == (
            KvmExit.HYPERCALL,
            KVM_HC_MAP_GPA_RANGE,
            (0x5000, 1, DECRYPTED),
            0,
        )
        assert vcpu.state.value == "await-hypercall"
        assert vcpu.complete(with_hypercall_ret(result.kvm_run, 0)) == Resumed(None, msr=0x015)

    def test_private_and_userspace_failure(self) -> None:
        """ "if (vcpu->run->hypercall.ret) set_ghcb_msr(svm, GHCB_MSR_PSC_RESP_ERROR);"."""
        vcpu = make_vcpu()
        result = self.exit_of(vcpu, PscOp.PRIVATE << 52 | 0x5 << 12 | 0x014)
        assert result.attributes == ENCRYPTED
        answer = vcpu.complete(with_hypercall_ret(result.kvm_run, 2**64 - 22))
        assert answer == Resumed(None, msr=GHCB_MSR_PSC_RESP_ERROR)
        assert GHCB_MSR_PSC_RESP_ERROR == 0x8000_0000_0000_0015

    @pytest.mark.parametrize("op", [0, 3, 4, 15])
    def test_bad_operation(self, op: int) -> None:
        """ "if (op != SNP_PAGE_STATE_PRIVATE && op != SNP_PAGE_STATE_SHARED) {
        set_ghcb_msr(svm, GHCB_MSR_PSC_RESP_ERROR); return 1; }"."""
        value = op << 52 | 0x5 << 12 | 0x014
        assert make_vcpu().run(gpa=value) == Resumed(None, msr=GHCB_MSR_PSC_RESP_ERROR)

    def test_no_userspace_exit(self) -> None:
        """ "if (!user_exit_on_hypercall(vcpu->kvm, KVM_HC_MAP_GPA_RANGE))" → RESP_ERROR."""
        vcpu = make_vcpu(map_gpa_range=False)
        value = PscOp.SHARED << 52 | 0x5 << 12 | 0x014
        assert vcpu.run(gpa=value) == Resumed(None, msr=GHCB_MSR_PSC_RESP_ERROR)

    def test_immediate_exit_on_completion(self) -> None:
        """The callback runs, then -EINTR; the next KVM_RUN enters the guest."""
        vcpu = make_vcpu()
        result = self.exit_of(vcpu, PscOp.SHARED << 52 | 0x5 << 12 | 0x014)
        run = with_immediate_exit(with_hypercall_ret(result.kvm_run, 0), 1)
        assert vcpu.complete(run) == Interrupted(None)
        assert vcpu.run(kvm_run=with_immediate_exit(run, 0)) == Resumed(None, msr=0x015)

    def test_request_carries_the_whole_value(self) -> None:
        """msr_protocol hands GHCB_MSR_PSC_REQ to snp_begin_psc_msr with the MSR value as the
        guest wrote it (bits 63:56 included: the engine ignores them)."""
        settings = MsrSettings(
            snp=True, ghcb_version=2, ghcb_version_min=1, cbit=51, hv_features=3, cpuid=CpuidTable()
        )
        value = 0xAB << 56 | PscOp.SHARED << 52 | 0x5 << 12 | 0x014
        assert msr_protocol(value, settings) == MsrPscRequest(value)

    def test_completion_only_when_pending(self) -> None:
        with pytest.raises(HypervisorUsageError):
            make_vcpu().complete(bytes(288))
