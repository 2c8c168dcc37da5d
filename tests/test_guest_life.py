"""A Linux SNP guest's whole life through the reference hypervisor (issue 11 "Done when"): it
negotiates, registers its GHCB, converts pages, requests an extended report, starts an AP and
terminates — every exchange's bytes asserted — and fails as Linux does when the host answers
wrong (ghcb.guest_life; sources quoted there)."""

from __future__ import annotations

import io
import json
import struct
from typing import TYPE_CHECKING, Any

import pytest

from ghcb.cli import main
from ghcb.codes import ExitCode, GenTermReason, LinuxTermReason, TermReasonSet
from ghcb.guest import Guest
from ghcb.guest_life import AP_GHCB, VMSA, Exchange, GuestLife, GuestTerminated
from ghcb.hypervisor import (
    CertificateStore,
    CpuidTable,
    MergedAbi,
    Platform,
    SimulatedFirmware,
    Terminated,
    Vm,
    Vmm,
    default_vmpcks,
)
from ghcb.hypervisor.results import system_event_run
from ghcb.hypervisor.simfw import FirmwareConfig
from ghcb.schemas.page import PAGE_SIZE
from ghcb.simulate import SimulateOptions, simulate

if TYPE_CHECKING:
    from pathlib import Path

CPUID = CpuidTable({(0x8000_001F, 0): (0x1_001F, 0x173, 0x1FD, 0x1)})
TERM_GEN = 0x100  # GHCB_MSR_TERM_REQ, set 0, reason 0

#: The whole life, exchange by exchange: (via, code, request, response, EXITINFO1 read back,
#: vCPU, userspace exits).
LIFE = [
    Exchange("msr", 0x002, 0x002, 0x0002_0001_3300_0001),  # SEV_INFO: v1..v2, C-bit 51
    Exchange("msr", 0x080, 0x080, 0x3081),  # HV features: SNP | AP_CREATION
    # the GHCB page (GFN 1) made shared: one KVM_HC_MAP_GPA_RANGE exit, then PSC_RESP 0
    Exchange("msr", 0x014, 2 << 52 | 1 << 12 | 0x014, 0x015, exits=("hypercall",)),
    Exchange("msr", 0x012, 0x1012, 0x1013),  # GHCB registered at GFN 1, echoed
    Exchange("msr", 0x004, 0x8000_001F << 32 | 1 << 30 | 0x004, 0x173 << 32 | 1 << 30 | 0x005),
    # the driver's response, request and 4 certificate pages: one coalesced range of 6
    Exchange("ghcb", ExitCode.PSC, 0, 0, 0, exits=("hypercall",)),
    # the extended report: certificates from userspace, -EINTR when it reached firmware
    Exchange("ghcb", ExitCode.SNP_EXT_GUEST_REQUEST, 0x7F000, 0, 0, exits=("certs", "eintr")),
    Exchange("ghcb", ExitCode.AP_CREATION, 1 << 32 | 1, 0, 0),  # APIC ID 1, CREATE
    Exchange("msr", 0x012, 0x2012, 0x2013, vcpu=1),  # the AP registers its GHCB
    Exchange("ghcb", ExitCode.HV_FEATURES, 0, 3, 0, vcpu=1),
    Exchange("msr", 0x100, TERM_GEN, TERM_GEN, exits=("system_event",)),
]


def make_life(tmp_path: Path, **vm: Any) -> GuestLife:
    # A firmware per life: it keeps each VMPCK's message sequence number, and a module-level
    # one would carry them into a second run of the suite in the same process (mutmut does).
    firmware = SimulatedFirmware(FirmwareConfig())
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    store.update(firmware.chain.cert_table("vcek"))
    guest = Guest()
    settings: dict[str, Any] = {"cert_abi": MergedAbi(), "platform": Platform(cpuid=CPUID)} | vm
    return GuestLife(guest, Vm(firmware, **settings), Vmm(guest.memory, store), default_vmpcks()[0])


def test_whole_life(tmp_path: Path) -> None:
    """Every exchange of the life, exactly; the report verifies against the table the host
    wrote; memory, registrations and the AP's VMSA as KVM left them; the termination's
    kvm_run bytes."""
    life = make_life(tmp_path)
    memory = life.memory
    layout = life.guest.layout
    driver_pages = [layout.request, layout.response] + [
        layout.certs + i * PAGE_SIZE for i in range(layout.cert_pages)
    ]
    assert not any(memory.is_shared(gpa) for gpa in [layout.ghcb, *driver_pages])
    outcome = life.live(b"\x42" * 64, pages=4)
    assert life.trace == LIFE
    assert outcome.error is None
    assert outcome.report is not None
    assert outcome.report.attestation_report.report_data == b"\x42" * 64
    firmware = life.bsp.vm.firmware
    assert isinstance(firmware, SimulatedFirmware)
    assert outcome.certs[:16] == firmware.chain.cert_table("vcek")[:16]
    assert all(memory.is_shared(gpa) for gpa in [layout.ghcb, AP_GHCB, *driver_pages])
    assert (life.bsp.ghcb_gpa, life.ap.ghcb_gpa) == (layout.ghcb, AP_GHCB)
    assert (life.ap.vmsa_gpa, life.ap.runnable) == (VMSA, True)
    assert not memory.is_shared(VMSA)
    done = outcome.terminated
    assert (done.reason_set, done.reason_code) == (0, 0)
    assert done.result == Terminated(system_event_run(bytes(288), TERM_GEN), TERM_GEN, 0, 0, "msr")
    run = done.result.kvm_run
    assert struct.unpack_from("<IIIQ", run, 8)[0] == 24  # exit_reason KVM_EXIT_SYSTEM_EVENT
    assert struct.unpack_from("<IIQ", run, 32) == (6, 1, TERM_GEN)  # SEV_TERM, ndata, data[0]


def test_psc_descriptor_as_kvm_left_it(tmp_path: Path) -> None:
    """After the GHCB page-state change the guest's descriptor reads cur_entry 6 (past
    end_entry 5) and every entry's cur_page 1 (__snp_complete_one_psc)."""
    life = make_life(tmp_path)
    life.boot()
    life.share_driver_pages()
    ghcb = life.memory.guest_read(life.guest.layout.ghcb + 0x800, 8 + 6 * 8)
    assert struct.unpack_from("<HHI", ghcb) == (6, 5, 0)
    entries = struct.unpack_from("<6Q", ghcb, 8)
    assert [e & 0xFFF for e in entries] == [1] * 6
    assert [e >> 12 & (1 << 40) - 1 for e in entries] == [0x7E, 0x7F, 0x80, 0x81, 0x82, 0x83]


@pytest.mark.parametrize(
    ("settings", "reason", "failed"),
    [
        # "GHCB_MSR_PROTO_MIN(val) > GHCB_PROTOCOL_MAX" → GEN / PROT_UNSUPPORTED
        ({"ghcb_version_min": 3, "ghcb_version": 3}, (0, GenTermReason.PROT_UNSUPPORTED), 0x002),
        # "if (!(sev_hv_features & GHCB_HV_FT_SNP))" → GEN / SNP_UNSUPPORTED
        ({"hv_features": 0x2}, (0, GenTermReason.SNP_UNSUPPORTED), 0x080),
        # "if (ghcb_version < 2) return 0;" — no request, then SNP_UNSUPPORTED
        ({"ghcb_version": 1}, (0, GenTermReason.SNP_UNSUPPORTED), 0x002),
        # no KVM_HC_MAP_GPA_RANGE exit: PSC_RESP_ERROR → LINUX / PSC
        ({"map_gpa_range": False}, (1, LinuxTermReason.PSC), 0x014),
    ],
)
def test_guest_terminates_like_linux(
    tmp_path: Path, settings: dict[str, Any], reason: tuple[int, int], failed: int
) -> None:
    """The guest's checks fail → ``sev_es_terminate(set, reason)``: the last exchange is the
    MSR termination request with that reason, after the request that failed."""
    life = make_life(tmp_path, **settings)
    with pytest.raises(GuestTerminated) as info:
        life.boot()
    assert (info.value.reason_set, info.value.reason_code) == reason
    value = reason[1] << 16 | reason[0] << 12 | 0x100
    assert life.trace[-1] == Exchange("msr", 0x100, value, value, exits=("system_event",))
    assert life.trace[-2].code == failed


def test_registration_mismatch_terminates(tmp_path: Path) -> None:
    """ "(GHCB_MSR_REG_GPA_RESP_VAL(val) != pfn)" → LINUX / REGISTER: a host that does not
    answer REG_GPA (a non-SNP VM terminates the guest itself: out_terminate)."""
    life = make_life(tmp_path, snp=False)
    life.negotiate()
    with pytest.raises(GuestTerminated) as info:
        life.register_ghcb()
    assert info.value.result == Terminated(
        system_event_run(bytes(288), 0x1012), 0x1012, None, None, "msr"
    )


@pytest.mark.parametrize(
    ("settings", "trace_len"),
    [({"hv_features": 0x1}, 0), ({"vmsa_features": 0x41}, 1)],
)
def test_ap_not_started(tmp_path: Path, settings: dict[str, Any], trace_len: int) -> None:
    """Without GHCB_HV_FT_SNP_AP_CREATION Linux does not ask; with SEV features KVM does not
    expect, "lower_32_bits(ghcb->save.sw_exit_info_1)" is 2: the AP does not start."""
    life = make_life(tmp_path, **settings)
    life.negotiate()
    life.hv_features = settings.get("hv_features", 0x3)
    life.set_page_state_msr(life.guest.layout.ghcb, shared=True)
    life.register_ghcb()
    before = len(life.trace)
    assert life.start_ap() is False
    assert len(life.trace) - before == trace_len
    if trace_len:
        assert (life.trace[-1].exit_info_1, life.trace[-1].response) == (2, 5)
    assert life.ap.run() == life.ap.run()  # halted, nothing pending


def test_simulate_trace_json() -> None:
    """``ghcb simulate --trace --json``: ``trace`` lists every exchange in order with
    via/code/response (and the request, the vCPU, the exits)."""
    doc = simulate(SimulateOptions(trace=True))
    assert doc["ok"] is True
    assert doc["trace"] == [e.to_json() for e in LIFE]
    assert doc["terminated"] == {"reason_set": TermReasonSet.GEN, "reason_code": 0}
    assert doc["ap_started"] is True
    assert doc["exit_info_2"] == 0


def test_cli_simulate_trace() -> None:
    """``ghcb simulate --trace``: the JSON ``trace`` key, and every exchange in the text."""
    out = io.StringIO()
    assert main(["simulate", "--trace", "--json"], out) == 0
    assert json.loads(out.getvalue())["trace"] == [e.to_json() for e in LIFE]
    out = io.StringIO()
    assert main(["simulate", "--trace"], out) == 0
    text = out.getvalue()
    assert "the guest's life: 11 exchanges" in text
    assert "vCPU0 MSR  0x002 SEV_INFO_REQ     0x0000000000000002 -> 0x0002000133000001" in text
    assert "terminated: reason set 0, code 0" in text
