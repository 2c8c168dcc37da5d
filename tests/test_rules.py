"""One rule table: the vCPU's validator and ``check_page`` agree on every page — valid, hostile
and mutated — for both validators and both kinds of guest."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ghcb import GhcbErr, GhcbPage, Severity, build_page, check_page, parse_page
from ghcb import strategies as gst
from ghcb.check import Stage, expected_response
from ghcb.guest import Guest
from ghcb.hypervisor import MergedAbi, RecordingFirmware, Resumed, V15Abi, Vcpu, Vm
from ghcb.hypervisor.rules import (
    KVM_EXIT_RULES,
    V15_EXIT_RULES,
    findings,
    first_error,
)
from ghcb.page import FIELDS

VALIDATOR_REASONS = {GhcbErr.INVALID_USAGE, GhcbErr.MISSING_INPUT, GhcbErr.INVALID_EVENT}
HANDLER_CODES = {"invalid-scratch-area", "mmio-length"}
_OFFSETS = [f.offset for f in FIELDS if f.kind == "int"]


@st.composite
def mutated_pages(draw: st.DrawFn) -> bytes:
    """A valid guest-request page with a few bytes (often in the fields KVM reads) changed."""
    data = bytearray(build_page(draw(gst.guest_request_pages())))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.sampled_from([*_OFFSETS, 0x3F0, 0x3F8, 0xFFC]) | st.integers(0, 4095))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data)


ANY_PAGE = st.one_of(
    gst.pages().map(build_page),
    gst.guest_request_pages().map(build_page),
    mutated_pages(),
    st.binary(min_size=4096, max_size=4096),
)


def vcpu_answer(data: bytes, abi: Any, snp: bool) -> tuple[int, int] | None:
    """(EXITINFO1, EXITINFO2) the vCPU writes for ``data`` at the registered GHCB, when it
    resumes the guest with an answer."""
    guest = Guest()
    guest.memory.guest_write(guest.layout.ghcb, data)
    vcpu = Vcpu(Vm(RecordingFirmware(), snp=snp, cert_abi=abi), guest.memory, guest.layout.ghcb)
    result = vcpu.run()
    if isinstance(result, Resumed) and result.page is not None:
        return result.page.sw_exit_info_1, result.page.sw_exit_info_2
    return None


@settings(max_examples=400, derandomize=True, deadline=None)
@given(data=ANY_PAGE, abi=st.sampled_from([None, MergedAbi(), V15Abi()]), snp=st.booleans())
def test_vcpu_and_check_page_agree(data: bytes, abi: Any, snp: bool) -> None:
    """check_page's errors are the validator's findings, then the handler's page checks; the
    first is the reason the vCPU answers; expected_response is the vCPU's answer."""
    validator = Vm(RecordingFirmware(), cert_abi=abi).abi.validator
    ghcb_gpa = Guest().layout.ghcb
    errors = [
        v
        for v in check_page(data, snp=snp, validator=validator, ghcb_gpa=ghcb_gpa)
        if v.severity is Severity.ERROR
    ]
    page = parse_page(data)
    validator_codes = [f.code for f in findings(page, snp=snp, validator=validator)]
    assert [v.code for v in errors][: len(validator_codes)] == validator_codes
    assert {v.code for v in errors[len(validator_codes) :]} <= HANDLER_CODES
    answer = vcpu_answer(data, abi, snp)
    reason = first_error(page, snp=snp, validator=validator)
    want = expected_response(page, snp=snp, validator=validator, ghcb_gpa=ghcb_gpa)
    if validator_codes:
        assert reason is not None
        assert answer == (2, reason) == (want.exit_info_1, want.exit_info_2)
        assert want.stage is Stage.VALIDATOR
    else:
        assert reason is None
        assert want.stage is not Stage.VALIDATOR
        assert answer is None or not (answer[0] == 2 and answer[1] in VALIDATOR_REASONS)
        if answer is not None and want.stage is Stage.HANDLER:
            assert answer == (want.exit_info_1, want.exit_info_2)


def test_validators_differ_only_on_guest_requests() -> None:
    """The two tables are one table but for the guest requests' rows."""
    differ = {code for code in KVM_EXIT_RULES if KVM_EXIT_RULES[code] != V15_EXIT_RULES[code]}
    assert {c.name for c in differ} == {"SNP_GUEST_REQUEST", "SNP_EXT_GUEST_REQUEST"}


def test_first_error_is_kvm_order() -> None:
    """Usage first, then the exit fields, then the event: INVALID_USAGE beats everything."""
    page = GhcbPage.empty().replace(ghcb_usage=1, sw_exit_code=0x1234)
    assert [f.reason for f in findings(page)] == [
        GhcbErr.INVALID_USAGE,
        GhcbErr.MISSING_INPUT,
        GhcbErr.MISSING_INPUT,
        GhcbErr.MISSING_INPUT,
        GhcbErr.INVALID_EVENT,
    ]
    assert first_error(page) == GhcbErr.INVALID_USAGE
