"""One rule table: the vCPU's validator and ``check_page`` agree on every page — valid, hostile
and mutated — for both validators and both kinds of guest."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghcb import ExitCode, GhcbErr, GhcbPage, Severity, build_page, check_page, parse_page
from ghcb import strategies as gst
from ghcb.check import Stage, expected_response
from ghcb.codes import ApCreationOp
from ghcb.errors import InputTypeError
from ghcb.exitinfo import IoioInfo
from ghcb.guest import Guest
from ghcb.hypervisor import MergedAbi, RecordingFirmware, Resumed, V15Abi, Vcpu, Vm
from ghcb.hypervisor.rules import (
    ALWAYS_REQUIRED,
    KVM_EXIT_RULES,
    SPEC_KVM_VALIDATE,
    SPEC_V15_VALIDATE,
    V15_EXIT_RULES,
    Validator,
    accepts,
    findings,
    first_error,
    required_inputs,
)
from ghcb.page import FIELDS, VALID_BIT

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


# -- the conditional inputs of sev_es_validate_vmgexit, each condition both ways ----------------
# Linux arch/x86/kvm/svm/sev.c (gregkh 00b9744a) sev_es_validate_vmgexit; the same rows in the
# v15 tree. Each case: the exit, the fields the guest marks valid, the fields KVM then requires
# beyond SW_EXITCODE/SW_EXITINFO1/SW_EXITINFO2.
_OUT, _IN = IoioInfo(port=0x80, size8=1), IoioInfo(port=0x80, size8=1, type_in=1)
_OUTS, _INS = (
    IoioInfo(port=0x80, size8=1, string=1),
    IoioInfo(port=0x80, size8=1, type_in=1, string=1),
)
_DESTROY = int(ApCreationOp.DESTROY)
CONDITIONAL = [
    # case SVM_EXIT_CPUID: "if (vcpu->arch.regs[VCPU_REGS_RAX] == 0xd)
    #                          if (!kvm_ghcb_xcr0_is_valid(svm)) goto vmgexit_err;"
    pytest.param(ExitCode.CPUID, {"rax": 0xD, "rcx": 0}, {"rax", "rcx", "xcr0"}, id="cpuid-d"),
    pytest.param(ExitCode.CPUID, {"rax": 0xC, "rcx": 0}, {"rax", "rcx"}, id="cpuid-c"),
    pytest.param(ExitCode.CPUID, {"rax": 0xD}, {"rax", "rcx", "xcr0"}, id="cpuid-d-no-rcx"),
    # the whole 64-bit register is compared, not the low half
    pytest.param(ExitCode.CPUID, {"rax": 1 << 32 | 0xD, "rcx": 0}, {"rax", "rcx"}, id="cpuid-hi"),
    # case SVM_EXIT_IOIO: "if (control->exit_info_1 & SVM_IOIO_STR_MASK) {
    #   if (!kvm_ghcb_sw_scratch_is_valid(svm)) goto vmgexit_err; } else {
    #   if (!(control->exit_info_1 & SVM_IOIO_TYPE_MASK))
    #     if (!kvm_ghcb_rax_is_valid(svm)) goto vmgexit_err; }"
    pytest.param(ExitCode.IOIO, {"sw_exit_info_1": _OUT.encode()}, {"rax"}, id="out"),
    pytest.param(ExitCode.IOIO, {"sw_exit_info_1": _IN.encode()}, set(), id="in"),
    pytest.param(
        ExitCode.IOIO,
        {"sw_exit_info_1": _OUTS.encode()},
        {"sw_scratch"},
        id="outs",
    ),
    pytest.param(  # a string IN needs the scratch area only (the else branch is not taken)
        ExitCode.IOIO, {"sw_exit_info_1": _INS.encode()}, {"sw_scratch"}, id="ins"
    ),
    # case SVM_EXIT_MSR: "if (!kvm_ghcb_rcx_is_valid(svm)) goto vmgexit_err;
    #   if (control->exit_info_1) { if (!kvm_ghcb_rax_is_valid(svm) ||
    #                                   !kvm_ghcb_rdx_is_valid(svm)) goto vmgexit_err; }"
    pytest.param(ExitCode.MSR, {"sw_exit_info_1": 0, "rcx": 0x10}, {"rcx"}, id="rdmsr"),
    pytest.param(
        ExitCode.MSR, {"sw_exit_info_1": 1, "rcx": 0x10}, {"rcx", "rax", "rdx"}, id="wrmsr"
    ),
    pytest.param(ExitCode.MSR, {"sw_exit_info_1": 1}, {"rcx", "rax", "rdx"}, id="wrmsr-no-rcx"),
    pytest.param(  # any non-zero EXITINFO1 is a write
        ExitCode.MSR, {"sw_exit_info_1": 1 << 63, "rcx": 0x10}, {"rcx", "rax", "rdx"}, id="msr-hi"
    ),
    # case SVM_VMGEXIT_AP_CREATION: "if (lower_32_bits(control->exit_info_1) !=
    #   SVM_VMGEXIT_AP_DESTROY) if (!kvm_ghcb_rax_is_valid(svm)) goto vmgexit_err;"
    pytest.param(ExitCode.AP_CREATION, {"sw_exit_info_1": _DESTROY}, set(), id="ap-destroy"),
    pytest.param(  # the APIC ID in bits 63:32 is not part of the operation
        ExitCode.AP_CREATION, {"sw_exit_info_1": 5 << 32 | _DESTROY}, set(), id="ap-destroy-id"
    ),
    pytest.param(
        ExitCode.AP_CREATION, {"sw_exit_info_1": int(ApCreationOp.CREATE)}, {"rax"}, id="ap-create"
    ),
    pytest.param(  # low half 0 (CREATE_ON_INIT), DESTROY only in the high half
        ExitCode.AP_CREATION, {"sw_exit_info_1": _DESTROY << 32}, {"rax"}, id="ap-destroy-high"
    ),
]
ABI_VALIDATORS = [(None, Validator.CURRENT), (V15Abi(), Validator.V15)]


def _by_offset(names: set[str]) -> list[str]:
    offsets = {f.name: f.offset for f in FIELDS}
    return sorted(names, key=offsets.__getitem__)


@pytest.mark.parametrize(("abi", "validator"), ABI_VALIDATORS, ids=["current", "v15"])
@pytest.mark.parametrize(("code", "fields", "required"), CONDITIONAL)
def test_conditional_inputs(
    abi: Any, validator: Validator, code: ExitCode, fields: dict[str, int], required: set[str]
) -> None:
    """A field a condition requires is MISSING_INPUT (EXITINFO1 = 2, EXITINFO2 = 4) when it is
    not valid; marked valid (or not required), the validator accepts the page."""
    offsets = {f.name: f.offset for f in FIELDS}
    exit_fields = {"sw_exit_code": code, "sw_exit_info_1": 0, "sw_exit_info_2": 0}
    page = GhcbPage.empty().with_fields(**(exit_fields | fields))
    assert required_inputs(page, validator=validator) == ALWAYS_REQUIRED | required
    missing = _by_offset(required - fields.keys())
    assert [(f.code, f.reason, f.offset) for f in findings(page, validator=validator)] == [
        ("missing-input", GhcbErr.MISSING_INPUT, offsets[name]) for name in missing
    ]
    complete = page.with_fields(**dict.fromkeys(missing, 0))
    assert list(findings(complete, validator=validator)) == []
    assert first_error(complete, validator=validator) is None
    answer = vcpu_answer(build_page(complete), abi, True)
    assert answer is None or not (answer[0] == 2 and answer[1] in VALIDATOR_REASONS)
    if missing:
        assert first_error(page, validator=validator) == GhcbErr.MISSING_INPUT
        assert vcpu_answer(build_page(page), abi, True) == (2, GhcbErr.MISSING_INPUT)


def test_condition_reads_an_invalid_register_as_zero() -> None:
    """KVM zeroes vcpu->arch.regs, then copies RAX only "if valid": a CPUID page with 0xD
    written in RAX but not marked valid misses RAX, and XCR0 is not required (leaf 0)."""
    page = (
        GhcbPage.empty()
        .with_fields(sw_exit_code=ExitCode.CPUID, sw_exit_info_1=0, sw_exit_info_2=0, rcx=0)
        .replace(rax=0xD)
    )
    assert required_inputs(page) == ALWAYS_REQUIRED | {"rax", "rcx"}
    assert [(f.code, f.offset) for f in findings(page)] == [("missing-input", 0x1F8)]
    assert vcpu_answer(build_page(page), None, True) == (2, GhcbErr.MISSING_INPUT)


# -- what each finding says, and the fast accept ---------------------------------------------------
def test_findings_name_the_rule_field_and_source() -> None:
    """Every finding: its code, KVM's reason, the offset of the field, a message naming the
    field and value, and the validator it comes from."""
    page = GhcbPage.empty().replace(ghcb_usage=1, sw_exit_code=0x1234)
    assert [f[:4] for f in findings(page)] == [
        ("invalid-usage", GhcbErr.INVALID_USAGE, 0xFFC, "ghcb_usage is 0x1; KVM accepts only 0"),
        *(
            ("missing-input", GhcbErr.MISSING_INPUT, offset, f"{name} {_NOT_VALID % '0x1234'}")
            for name, offset in _EXIT_FIELDS
        ),
        (
            "invalid-event",
            GhcbErr.INVALID_EVENT,
            0x390,
            "sw_exit_code 0x1234 (unknown) is not an exit KVM accepts",
        ),
    ]
    assert {f.spec for f in findings(page)} == {SPEC_KVM_VALIDATE}
    known = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.SNP_RUN_VMPL, sw_exit_info_1=0, sw_exit_info_2=0
    )
    assert [f.message for f in findings(known, validator=Validator.V15)] == [
        "sw_exit_code 0x80000018 (SNP_RUN_VMPL) is not an exit KVM accepts"
    ]
    assert {f.spec for f in findings(known, validator=Validator.V15)} == {SPEC_V15_VALIDATE}
    cpuid = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.CPUID, sw_exit_info_1=0, sw_exit_info_2=0, rcx=0
    )
    assert [f[3:] for f in findings(cpuid)] == [(f"rax {_NOT_VALID % 'CPUID'}", SPEC_KVM_VALIDATE)]


_NOT_VALID = "is required for exit %s but not marked valid"
_EXIT_FIELDS = [("sw_exit_code", 0x390), ("sw_exit_info_1", 0x398), ("sw_exit_info_2", 0x3A0)]


@pytest.mark.parametrize("validator", list(Validator))
def test_guest_request_findings(validator: Validator) -> None:
    """A guest request from a non-SNP guest: "snp-only", then (current KVM) each page rule —
    "!PAGE_ALIGNED(control->exit_info_1) || !PAGE_ALIGNED(control->exit_info_2) ||
    control->exit_info_1 == control->exit_info_2"; the v15 tree checks only sev_snp_guest."""
    spec = {Validator.CURRENT: SPEC_KVM_VALIDATE, Validator.V15: SPEC_V15_VALIDATE}[validator]
    current = validator is Validator.CURRENT
    snp_only = (
        "snp-only",
        GhcbErr.MISSING_INPUT,
        0x390,
        "exit SNP_GUEST_REQUEST is accepted only from an SEV-SNP guest",
        spec,
    )
    unaligned = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.SNP_GUEST_REQUEST, sw_exit_info_1=0x7F008, sw_exit_info_2=0x7E010
    )
    pages = [
        (
            "request-page-unaligned",
            GhcbErr.MISSING_INPUT,
            offset,
            f"{name} = {value:#x} is not a 4 KiB aligned page address",
            spec,
        )
        for name, offset, value in [
            ("sw_exit_info_1", 0x398, 0x7F008),
            ("sw_exit_info_2", 0x3A0, 0x7E010),
        ]
    ]
    want = [snp_only, *pages] if current else [snp_only]
    assert list(findings(unaligned, snp=False, validator=validator)) == want
    assert list(findings(unaligned, validator=validator)) == want[1:]
    same = unaligned.with_fields(sw_exit_info_1=0x7F000, sw_exit_info_2=0x7F000)
    equal = (
        "request-page-equal",
        GhcbErr.MISSING_INPUT,
        0x3A0,
        "request and response pages are the same page",
        spec,
    )
    assert list(findings(same, validator=validator)) == ([equal] if current else [])


@pytest.mark.parametrize("api", [findings, required_inputs])
def test_not_a_page_is_input_type_error(api: Any) -> None:
    """The public validator APIs refuse anything but a GhcbPage, naming themselves."""
    data: Any = bytes(4096)
    with pytest.raises(InputTypeError) as info:
        list(api(data))  # findings is a generator: it checks on the first next()
    assert info.value.message == f"{api.__name__} needs a GhcbPage, not bytes"


def _bits(*names: str) -> int:
    return sum(1 << VALID_BIT[name] for name in (*ALWAYS_REQUIRED, *names))


@pytest.mark.parametrize(
    ("args", "kwargs", "want"),
    [
        # a guest request with its pages: accepted from an SNP guest (the default)
        ((ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F000, 0x7E000), {}, True),
        ((ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F000, 0x7E000), {"snp": False}, False),
        ((ExitCode.SNP_GUEST_REQUEST, 1, _bits(), 0x7F000, 0x7E000), {}, False),  # usage
        ((ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F008, 0x7E000), {}, False),
        ((ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F000, 0x7E008), {}, False),
        ((ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F000, 0x7F000), {}, False),
        # v15: no page rules
        (
            (ExitCode.SNP_GUEST_REQUEST, 0, _bits(), 0x7F008, 0x7F008),
            {"validator": Validator.V15},
            True,
        ),
        ((ExitCode.RDTSC, 0, _bits(), 5, 5), {}, True),  # no page rule on other exits
        ((ExitCode.RDTSC, 1, _bits(), 0, 0), {"snp": False}, False),  # usage, not SNP-only
        ((ExitCode.WRITE_DR7, 0, _bits("rax"), 0, 0), {}, True),
        ((ExitCode.WRITE_DR7, 0, _bits("rcx"), 0, 0), {}, False),
        ((ExitCode.WRITE_DR7, 0, _bits("rax", "rcx", "xcr0"), 0, 0), {}, True),  # extra bits
        ((ExitCode.CPUID, 0, _bits("rax", "rcx", "xcr0"), 0, 0), {}, False),  # conditional row
        ((0x1234, 0, _bits(), 0, 0), {}, False),
    ],
)
def test_accepts_fast_path(args: tuple[int, ...], kwargs: dict[str, Any], want: bool) -> None:
    """``accepts`` is True only for a page its row accepts without a condition; False sends
    the page to :func:`findings` (whose answer it must never contradict)."""
    assert accepts(*args, **kwargs) is want


def test_first_error_passes_the_guest_and_the_validator_on() -> None:
    """first_error answers for the guest kind and validator it is given, whether or not the
    fast accept applies: an SNP-only exit from a non-SNP guest, and v15's "RAX and RBX" rule
    for the Extended Guest Request ("!kvm_ghcb_rax_is_valid(svm) ||
    !kvm_ghcb_rbx_is_valid(svm)"), which current KVM does not have."""
    request = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.SNP_GUEST_REQUEST, sw_exit_info_1=0x7F000, sw_exit_info_2=0x7E000
    )
    assert first_error(request) is None
    assert first_error(request, snp=False) == GhcbErr.MISSING_INPUT
    assert first_error(request.replace(ghcb_usage=1)) == GhcbErr.INVALID_USAGE
    ext = request.with_fields(sw_exit_code=ExitCode.SNP_EXT_GUEST_REQUEST)
    assert first_error(ext) is None
    assert first_error(ext, validator=Validator.V15) == GhcbErr.MISSING_INPUT
    assert first_error(ext.with_fields(rax=0, rbx=0), validator=Validator.V15) is None
