"""check_page: every violation of KVM's rules and every suspicious byte, with offsets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghcb import ExitCode, GhcbPage, Severity, build_page, check_page
from ghcb import check as check_module
from ghcb.check import (
    ABI_VALIDATORS,
    KvmResponse,
    PageCheck,
    Stage,
    check_page_full,
    expected_response,
)
from ghcb.errors import FieldValueError, InputTypeError
from ghcb.hypervisor.rules import Validator
from tests.helpers import load_vectors, vector_bytes

PAGES = load_vectors("pages")["vectors"]


def _codes(page: GhcbPage) -> list[tuple[str, int | None]]:
    return [(v.code, v.offset) for v in check_page(build_page(page))]


def _request(**extra: int) -> GhcbPage:
    fields = {
        "sw_exit_code": ExitCode.SNP_GUEST_REQUEST,
        "sw_exit_info_1": 0x7F000,
        "sw_exit_info_2": 0x7E000,
        "protocol_version": 2,
        **extra,
    }
    return GhcbPage.empty().with_fields(**fields)


def test_clean_vectors_have_no_findings() -> None:
    """The three Linux-built golden pages are clean."""
    for vec in PAGES[:3]:
        assert check_page(vector_bytes(vec["file"])) == [], vec["name"]


def test_coconut_vector_warnings() -> None:
    """Stray bit 127 and non-zero reserved bytes are warnings at their offsets."""
    found = check_page(vector_bytes(PAGES[3]["file"]))
    assert [(v.code, v.severity, v.offset) for v in found] == [
        ("undefined-valid-bit", Severity.WARNING, 0x3FF),
        ("reserved-nonzero", Severity.WARNING, 0x0),
        ("reserved-nonzero", Severity.WARNING, 0xFF0),
    ]


def test_invalid_usage() -> None:
    """ghcb_usage != 0 is an error at 0xFFC."""
    assert _codes(_request(ghcb_usage=1)) == [("invalid-usage", 0xFFC)]


def test_invalid_event() -> None:
    """An exit KVM does not accept is an error at 0x390."""
    page = _request().with_fields(sw_exit_code=ExitCode.SNP_RUN_VMPL)
    assert _codes(page) == [("invalid-event", 0x390)]
    page = _request().with_fields(sw_exit_code=0x8000_1234)
    assert check_page(build_page(page))[0].message.startswith("sw_exit_code 0x80001234 (unknown)")


def test_missing_inputs_each_reported() -> None:
    """Every missing required field is its own finding, in KVM's order: the three exit fields
    first, then the exit's own fields, each group by offset."""
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.MSR, sw_exit_info_1=1, protocol_version=2
    )
    assert _codes(page) == [
        ("missing-input", 0x3A0),  # sw_exit_info_2
        ("missing-input", 0x1F8),  # rax (write)
        ("missing-input", 0x308),  # rcx
        ("missing-input", 0x310),  # rdx (write)
    ]


def test_snp_only_and_v15_validator() -> None:
    """snp=False: an SNP-only exit is an error; the v15 validator has no page checks for a
    guest request but needs RAX/RBX for an extended one."""
    assert _codes(_request()) == []
    found = check_page(build_page(_request()), snp=False)
    assert [(v.code, v.offset) for v in found] == [("snp-only", 0x390)]
    unaligned = build_page(_request(sw_exit_info_1=0x7F001))
    assert [v.code for v in check_page(unaligned)] == ["request-page-unaligned"]
    assert check_page(unaligned, validator=Validator.V15) == []
    ext = build_page(_request(sw_exit_code=ExitCode.SNP_EXT_GUEST_REQUEST))
    assert check_page(ext) == []
    assert [(v.code, v.offset) for v in check_page(ext, validator=Validator.V15)] == [
        ("missing-input", 0x1F8),  # rax
        ("missing-input", 0x318),  # rbx
    ]


@pytest.mark.parametrize(
    ("info1", "info2", "want"),
    [
        (0x7F001, 0x7E000, [("request-page-unaligned", 0x398)]),
        (0x7F000, 0x7E800, [("request-page-unaligned", 0x3A0)]),
        (0x7F000, 0x7F000, [("request-page-equal", 0x3A0)]),
    ],
)
def test_request_pages(info1: int, info2: int, want: list[tuple[str, int]]) -> None:
    """Guest request pages must be 4 KiB aligned and different."""
    assert _codes(_request(sw_exit_info_1=info1, sw_exit_info_2=info2)) == want


def test_protocol_version_warning() -> None:
    """A protocol version outside 1..2 is a warning."""
    found = check_page(build_page(_request(protocol_version=3)))
    assert [(v.code, v.severity) for v in found] == [("protocol-version", Severity.WARNING)]


@pytest.mark.parametrize("size", [0, 100, 4097])
def test_wrong_length_is_one_violation(size: int) -> None:
    """A wrong-length capture gives one page-length error and nothing else."""
    found = check_page(bytes(size))
    assert [(v.code, v.severity, v.offset) for v in found] == [
        ("page-length", Severity.ERROR, None)
    ]


GHCB_GPA = 0x7F000


def _mmio(length: int, scratch: int = GHCB_GPA + 0x800) -> GhcbPage:
    return GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.MMIO_WRITE,
        sw_exit_info_1=0xFEE00000,
        sw_exit_info_2=length,
        sw_scratch=scratch,
        protocol_version=2,
    )


def _full(page: GhcbPage, **kw: Any) -> PageCheck:
    return check_page_full(build_page(page), ghcb_gpa=GHCB_GPA, **kw)


def _answers(check: PageCheck) -> dict[str, tuple[int, int, Stage]]:
    return {name: tuple(r) for name, r in check.responses.items()}  # type: ignore[misc]


def test_mmio_length_is_a_handler_answer() -> None:
    """MMIO len > 8 on GHCB v2: merged KVM answers 2/INVALID_INPUT after its validator
    accepted the page; the v15 tree has no such check."""
    check = _full(_mmio(9))
    assert [(v.code, v.severity, v.offset) for v in check.violations] == [
        ("mmio-length", Severity.ERROR, 0x3A0)
    ]
    assert check.expected_response == KvmResponse(2, 5, Stage.HANDLER)
    assert _answers(check) == {"merged": (2, 5, Stage.HANDLER), "v15": (0, 0, Stage.ACCEPTED)}
    assert check.responses_differ
    assert not check.ok
    assert _full(_mmio(9), validator=Validator.V15).violations == ()
    # v1 (an SEV-ES VM: an SNP VM is v2): up to 0x7fffffff
    assert _full(_mmio(9), snp=False, ghcb_version=1).violations == ()


@pytest.mark.parametrize(
    ("scratch", "length", "gpa", "message"),
    [
        (GHCB_GPA + 0xFEC, 8, GHCB_GPA, "not inside its shared buffer"),
        (GHCB_GPA + 0x400, 8, GHCB_GPA, "not inside its shared buffer"),
        (GHCB_GPA + 0x1800, 8, GHCB_GPA, "requires the scratch area in the GHCB"),
        (0xFFFF_FFFF_FFFF_FFFC, 8, GHCB_GPA, "wraps past 2**64"),
    ],
)
def test_invalid_scratch_area(scratch: int, length: int, gpa: int, message: str) -> None:
    """setup_vmgexit_scratch's refusals: 2/INVALID_SCRATCH_AREA at the handler, merged tree."""
    check = check_page_full(build_page(_mmio(length, scratch)), ghcb_gpa=gpa)
    assert [(v.code, v.offset) for v in check.violations] == [("invalid-scratch-area", 0x3A8)]
    assert message in check.violations[0].message
    assert check.expected_response == KvmResponse(2, 3, Stage.HANDLER)


def test_scratch_ghcb_gpa_unknown() -> None:
    """Without ghcb_gpa the page holding sw_scratch is taken as the GHCB."""
    page = _mmio(8, scratch=0x1234_5800)
    assert check_page(build_page(page)) == []
    assert [v.code for v in check_page(build_page(page), ghcb_gpa=GHCB_GPA)] == [
        "invalid-scratch-area"
    ]


def test_scratch_zero_not_double_reported() -> None:
    """An invalid sw_scratch is the validator's missing-input, not a second finding."""
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.MMIO_READ, sw_exit_info_1=0, sw_exit_info_2=8, protocol_version=2
    )
    assert _codes(page) == [("missing-input", 0x3A8)]
    assert expected_response(page) == KvmResponse(2, 4, Stage.VALIDATOR)
    valid_zero = page.with_fields(sw_scratch=0)
    assert _codes(valid_zero) == [("invalid-scratch-area", 0x3A8)]


def test_string_io_count_fails_kvm_run() -> None:
    """A string IOIO count over INT_MAX: KVM_RUN fails -EINVAL, the GHCB keeps 0/0."""
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.IOIO,
        sw_exit_info_1=0x0014,  # OUTSB
        sw_exit_info_2=1 << 31,
        sw_scratch=GHCB_GPA + 0x800,
        protocol_version=2,
    )
    check = _full(page)
    assert [v.code for v in check.violations] == ["invalid-scratch-area"]
    assert "INT_MAX" in check.violations[0].message
    assert _answers(check) == {
        "merged": (0, 0, Stage.RUN_FAILS),
        "v15": (0, 0, Stage.RUN_FAILS),
    }


def test_expected_response_per_stage() -> None:
    """Validator first (2/reason), accepted pages 0/0; the ABI map names both trees."""
    assert ABI_VALIDATORS == {"merged": Validator.CURRENT, "v15": Validator.V15}
    usage = _full(_request(ghcb_usage=1))
    assert usage.expected_response == KvmResponse(2, 2, Stage.VALIDATOR)
    unaligned = _full(_request(sw_exit_info_1=0x7F001))
    assert _answers(unaligned) == {
        "merged": (2, 4, Stage.VALIDATOR),
        "v15": (0, 0, Stage.ACCEPTED),
    }
    assert unaligned.expected_response is not None
    assert unaligned.expected_response.to_json() == {"exit_info_1": 2, "exit_info_2": 4}
    clean = _full(_request())
    assert clean.ok
    assert not clean.responses_differ
    assert clean.expected_response == KvmResponse(0, 0, Stage.ACCEPTED)
    short = check_page_full(bytes(10))
    assert (short.expected_response, dict(short.responses), short.ok) == (None, {}, False)


def test_x87_state_gpa_and_bit_messages() -> None:
    """x87_state_gpa set is a warning; a stray valid bit names the region it would mark."""
    page = _request(x87_state_gpa=0x5000)
    found = check_page(build_page(page))
    assert [(v.code, v.severity, v.offset) for v in found] == [
        ("x87-state-gpa", Severity.WARNING, 0x400)
    ]
    bitmap = bytearray(build_page(_request()))
    bitmap[0x3F0] |= 1  # bit 0: the qword at 0x0, in reserved_0x0
    stray = check_page(bytes(bitmap))
    assert [(v.code, v.offset) for v in stray] == [("undefined-valid-bit", 0x3F0)]
    assert stray[0].message.endswith("the qword at 0x0 is in reserved_0x0")


CHECK_PAGES = load_vectors("pages_check")["vectors"]


@pytest.mark.parametrize("vec", CHECK_PAGES, ids=[v["name"] for v in CHECK_PAGES])
@pytest.mark.parametrize("abi", sorted(ABI_VALIDATORS))
def test_golden_check_pages(vec: dict[str, Any], abi: str) -> None:
    """Each golden page of pages_check.json: exactly its violations, in order, and KVM's
    answer, per ABI tree and as its host says to judge it."""
    host = vec.get("host", {})
    check = check_page_full(
        vector_bytes(vec["file"]),
        validator=ABI_VALIDATORS[abi],
        snp=host.get("snp", True),
        ghcb_gpa=host.get("ghcb_gpa"),
        ghcb_version=host.get("ghcb_version", 2),
    )
    got = [
        {"code": v.code, "severity": v.severity.value, "offset": v.offset} for v in check.violations
    ]
    assert got == vec["expect"]["violations"][abi]
    want = vec["expect"]["expected_response"][abi]
    resp = check.expected_response
    if want is None:
        assert resp is None
    else:
        assert resp is not None
        assert {**resp.to_json(), "stage": resp.stage.value} == want
        assert check.responses[abi] == resp


def test_golden_check_pages_cover_every_code() -> None:
    """Every violation code of the check.py table has a golden page."""
    seen = {
        v["code"]
        for vec in CHECK_PAGES
        for found in vec["expect"]["violations"].values()
        for v in found
    }
    table = check_module.__doc__ or ""
    documented = set(re.findall(r"^``([a-z0-9-]+)``", table, re.MULTILINE))
    assert seen == documented


def test_golden_check_files_match_patches() -> None:
    """Each generated page file is exactly its JSON patches (make_pages.py's output)."""
    for vec in CHECK_PAGES:
        if "patches" not in vec:
            continue
        page = bytearray(4096)
        for p in vec["patches"]:
            raw = bytes.fromhex(p["hex"])
            page[p["offset"] : p["offset"] + len(raw)] = raw
        assert vector_bytes(vec["file"]) == bytes(page[: vec.get("size", 4096)]), vec["name"]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"ghcb_gpa": 0x7F001}, FieldValueError),
        ({"ghcb_gpa": -0x1000}, FieldValueError),
        ({"ghcb_gpa": 1 << 64}, FieldValueError),
        ({"ghcb_gpa": "0x7f000"}, InputTypeError),
        ({"ghcb_version": 0}, FieldValueError),
        ({"ghcb_version": 3}, FieldValueError),
        ({"ghcb_version": True}, InputTypeError),
        ({"ghcb_gpa": 0}, FieldValueError),  # "if (!ghcb_gpa) return 1;": nothing written
        ({"ghcb_version": 1, "snp": True}, FieldValueError),  # KVM_SEV_INIT2: -EINVAL
        ({"validator": "v15"}, InputTypeError),
        ({"validator": None}, InputTypeError),
        ({"snp": 1}, InputTypeError),
    ],
)
def test_host_view_checked(kw: dict[str, Any], error: type[Exception]) -> None:
    """A GHCB GPA or version KVM cannot have is a typed error, before anything is judged."""
    data = build_page(_request())
    with pytest.raises(error) as info:
        check_page(data, **kw)
    assert str(info.value).startswith(next(iter(kw)))
    with pytest.raises(error):
        expected_response(_request(), **kw)
    with pytest.raises(error):
        check_page_full(bytes(10), **kw)


_SCRATCH_EXITS = [ExitCode.MMIO_READ, ExitCode.MMIO_WRITE, ExitCode.PSC, ExitCode.IOIO]


@st.composite
def scratch_pages(draw: st.DrawFn) -> bytes:
    """Pages of the exits that use the scratch area, with lengths and scratch GPAs around
    KVM's boundaries (in and around the GHCB's shared buffer, wrapping, huge counts)."""
    near = st.sampled_from([0, 8, 9, 0x7F0, 0x7F1, 0x10000, 0x10001, 1 << 31, (1 << 64) - 1])
    page = GhcbPage.empty().with_fields(
        sw_exit_code=draw(st.sampled_from(_SCRATCH_EXITS)),
        sw_exit_info_1=draw(
            st.sampled_from([0, 0x4, 0x14, 0x15, 0x45, 0x25]) | st.integers(0, 2**64 - 1)
        ),
        sw_exit_info_2=draw(near | st.integers(0, 2**64 - 1)),
        sw_scratch=draw(
            st.sampled_from(
                [0, GHCB_GPA + 0x7FF, GHCB_GPA + 0x800, GHCB_GPA + 0xFE8, GHCB_GPA + 0xFF0]
            )
            | st.integers(0, 2**64 - 1)
        ),
        protocol_version=2,
    )
    return build_page(page)


_STAGE_OF_CODE = {
    "mmio-length": {Stage.HANDLER},
    "invalid-scratch-area": {Stage.HANDLER, Stage.RUN_FAILS},
}


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    data=scratch_pages(),
    vm=st.sampled_from([(True, 2), (False, 2), (False, 1)]),  # an SNP VM is v2 (KVM_SEV_INIT2)
    gpa=st.sampled_from([None, GHCB_GPA]),
)
def test_first_error_is_the_answer(data: bytes, vm: tuple[bool, int], gpa: int | None) -> None:
    """For every tree: no error <=> KVM accepts; a validator error first <=> the validator's
    2/reason; else the handler code's stage; the answer is always a u64 pair."""
    snp, version = vm
    for tree in Validator:
        check = check_page_full(data, snp=snp, validator=tree, ghcb_gpa=gpa, ghcb_version=version)
        resp = check.expected_response
        assert resp is not None
        errors = [v for v in check.violations if v.severity is Severity.ERROR]
        if not errors:
            assert resp.stage.accepts
            assert resp.exit_info_1 == 0
            assert resp.stage is Stage.ANSWERED or resp.exit_info_2 == 0
        elif errors[0].code in _STAGE_OF_CODE:
            assert resp.stage in _STAGE_OF_CODE[errors[0].code]
        else:
            assert resp.stage is Stage.VALIDATOR
            assert resp.exit_info_1 == 2
