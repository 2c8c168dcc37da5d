"""check_page: every violation of KVM's rules and every suspicious byte, with offsets."""

from __future__ import annotations

import pytest

from ghcb import ExitCode, GhcbPage, Severity, build_page, check_page
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
