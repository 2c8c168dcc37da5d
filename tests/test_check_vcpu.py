"""``ghcb.check.expected_response`` against the reference vCPU: for every page whose answer the
page alone decides, the vCPU (arch/x86/kvm/svm/sev.c ``sev_handle_vmgexit`` modelled) writes
the same SW_EXITINFO1/2 and stops the same way.

Restriction: pages answered ``accepted`` (the preset 0/0, the rest from host state: devices,
CPUID/MSR tables, other vCPUs, the AP jump table, firmware, guest memory) are not compared —
:func:`expected_response` does not claim the handler's answer for them. Each run is a fresh
SNP VM whose GHCB (registered) is at 0x1000, so ``ghcb_gpa=0x1000`` and version 2.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ghcb import ExitCode, GhcbPage, build_page, parse_page
from ghcb.check import KvmResponse, Stage, expected_response
from ghcb.hypervisor import (
    ApResetHold,
    GuestMemory,
    MapGpaExit,
    RecordingFirmware,
    Resumed,
    RunFailed,
    Terminated,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
)
from ghcb.hypervisor.rules import Validator
from ghcb.hypervisor.scratch import SHARED_BUFFER_BEG, SHARED_BUFFER_END
from ghcb.psc import PscEntry, build_psc
from ghcb.strategies import requests

GHCB = 0x1000
_STOPS: dict[Stage, tuple[type, ...]] = {
    Stage.VALIDATOR: (Resumed,),
    Stage.HANDLER: (Resumed,),
    Stage.ANSWERED: (Resumed,),
    Stage.RUN_FAILS: (RunFailed,),
    Stage.EXITS: (Terminated, MapGpaExit, Unhandled),
}


def vcpu_answer(page: GhcbPage, validator: Validator = Validator.CURRENT) -> tuple[Any, int, int]:
    """Run ``page`` once on a fresh vCPU of ``validator``'s tree (certificates off: the merged
    tree; the v15 ABI: the v15 tree): the run result and the EXITINFO1/2 the guest's GHCB holds
    afterwards."""
    memory = GuestMemory()
    memory.map(GHCB)
    vm = Vm(RecordingFirmware(), cert_abi=V15Abi() if validator is Validator.V15 else None)
    assert vm.abi.validator is validator
    vcpu = Vcpu(vm, memory, GHCB)
    memory.guest_write(GHCB, build_page(page))
    result = vcpu.run()
    after = parse_page(memory.guest_read(GHCB, 4096))
    return result, after.sw_exit_info_1, after.sw_exit_info_2


_SCRATCH = st.sampled_from(
    [0, GHCB + SHARED_BUFFER_BEG, GHCB + 0x900, GHCB + SHARED_BUFFER_END - 8, GHCB + 0xFF8]
) | st.integers(0, 2**64 - 1)
_INFO = st.sampled_from([0, 1, 2, 8, 9, 0x14, 0x201, 1 << 31, 2**64 - 1]) | st.integers(
    0, 2**64 - 1
)
_ENTRIES = st.lists(
    st.builds(
        PscEntry,
        gfn=st.integers(0, 0x1FF),
        operation=st.integers(0, 4),
        pagesize=st.integers(0, 1),
        cur_page=st.sampled_from([0, 1, 512, 513]),
    ),
    max_size=4,
)


@st.composite
def decided_pages(draw: st.DrawFn) -> GhcbPage:
    """Pages of every exit KVM accepts (:func:`ghcb.strategies.requests`), EXITINFO1/2 and the
    scratch GPA redrawn around KVM's boundaries, sometimes a PSC descriptor in the shared
    buffer, sometimes a valid bit cleared."""
    page = draw(requests())
    if draw(st.booleans()):
        page = page.with_fields(sw_exit_info_1=draw(_INFO), sw_exit_info_2=draw(_INFO))
    if page.is_valid("sw_scratch") and draw(st.booleans()):
        page = page.with_fields(sw_scratch=draw(_SCRATCH))
    if page.sw_exit_code == ExitCode.PSC:
        entries = draw(_ENTRIES)
        end = draw(st.sampled_from([None, 0, 252, 253]))
        desc = build_psc(entries, end_entry=end) if entries else bytes(8)
        at = max(0, min(page.sw_scratch - GHCB - SHARED_BUFFER_BEG, 2032 - len(desc)))
        buffer = bytearray(page.shared_buffer)
        buffer[at : at + len(desc)] = desc
        page = page.replace(shared_buffer=bytes(buffer))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(sorted(page.valid_fields)))
        page = page.replace(valid_bitmap=bytes(16)).with_fields(
            **{n: page.get_if_valid(n) for n in page.valid_fields if n != name}
        )
    return page.replace(protocol_version=2)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(page=decided_pages(), validator=st.sampled_from(Validator))
def test_expected_response_is_the_vcpus(page: GhcbPage, validator: Validator) -> None:
    """Where the page decides KVM's answer, the reference vCPU gives exactly that answer."""
    want = expected_response(page, ghcb_gpa=GHCB, validator=validator)
    event(want.stage.value)
    if want.stage is Stage.ACCEPTED:
        return  # host state decides the rest (module docstring)
    result, info1, info2 = vcpu_answer(page, validator)
    assert isinstance(result, _STOPS[want.stage]), (want, result)
    assert KvmResponse(info1, info2, want.stage) == want


def test_every_decided_stage_is_reached() -> None:
    """The exits the switch decides, one page each, against the vCPU (exact values)."""
    cases: dict[ExitCode, tuple[int, KvmResponse]] = {
        ExitCode.HV_FEATURES: (0, KvmResponse(0, 3, Stage.ANSWERED)),
        ExitCode.AP_JUMP_TABLE: (2, KvmResponse(2, 5, Stage.HANDLER)),
        ExitCode.UNSUPPORTED_EVENT: (0, KvmResponse(0, 0, Stage.RUN_FAILS)),
        ExitCode.TERM_REQUEST: (0x201, KvmResponse(0, 0, Stage.EXITS)),
        ExitCode.NMI_COMPLETE: (0, KvmResponse(0, 0, Stage.ANSWERED)),
        ExitCode.WBINVD: (0, KvmResponse(0, 0, Stage.ANSWERED)),
    }
    for code, (info1, want) in cases.items():
        page = GhcbPage.empty().with_fields(
            sw_exit_code=code, sw_exit_info_1=info1, sw_exit_info_2=0
        )
        page = page.replace(protocol_version=2)
        assert expected_response(page, ghcb_gpa=GHCB) == want, code
        result, got1, got2 = vcpu_answer(page)
        assert isinstance(result, _STOPS[want.stage]), (code, result)
        assert (got1, got2) == (want.exit_info_1, want.exit_info_2), code
    # AP_HLT_LOOP is host state (the vCPU holds until a SIPI): not claimed
    hlt = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.AP_HLT_LOOP, sw_exit_info_1=0, sw_exit_info_2=0
    )
    assert expected_response(hlt, ghcb_gpa=GHCB) == KvmResponse(0, 0, Stage.ACCEPTED)
    assert isinstance(vcpu_answer(hlt)[0], ApResetHold)


def test_psc_first_answer() -> None:
    """A PSC descriptor in the shared buffer: the first KVM_HC_MAP_GPA_RANGE exit, or the
    final 0 / VMGEXIT_PSC_ERROR_* when none is needed, as the vCPU gives it."""
    base = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.PSC,
        sw_exit_info_1=0,
        sw_exit_info_2=0,
        sw_scratch=GHCB + SHARED_BUFFER_BEG,
    )
    one = build_psc([PscEntry(gfn=0x100, operation=2)])
    bad_hdr = build_psc([PscEntry(gfn=0x100, operation=2)], end_entry=253)
    bad_entry = build_psc([PscEntry(gfn=0x101, operation=2, pagesize=1)])
    for desc, want, stop in [
        (one, KvmResponse(0, 0, Stage.EXITS), MapGpaExit),
        (bad_hdr, KvmResponse(0, 0x1_0000_0001, Stage.ANSWERED), Resumed),
        (bad_entry, KvmResponse(0, 0x1_0000_0002, Stage.ANSWERED), Resumed),
    ]:
        page = base.replace(shared_buffer=desc.ljust(2032, b"\0"), protocol_version=2)
        assert expected_response(page, ghcb_gpa=GHCB) == want
        result, info1, info2 = vcpu_answer(page)
        assert isinstance(result, stop)
        assert (info1, info2) == (want.exit_info_1, want.exit_info_2)
    # v15 sets up a descriptor outside the GHCB (no v2 check): it is in guest memory
    outside = base.with_fields(sw_scratch=0x5000, sw_exit_info_2=16)
    v15 = expected_response(outside, ghcb_gpa=GHCB, validator=Validator.V15)
    assert v15 == KvmResponse(0, 0, Stage.ACCEPTED)
    assert expected_response(outside, ghcb_gpa=GHCB) == KvmResponse(2, 3, Stage.HANDLER)
