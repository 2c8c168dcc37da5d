"""The public Hypothesis strategies produce what they promise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghcb import (
    CertEntry,
    ExitCode,
    GhcbPage,
    Severity,
    build_page,
    check_cert_table,
    check_page,
    decode_msr,
    encode_msr,
    parse_cert_table,
    parse_page,
    unpack_guest_error,
)
from ghcb import strategies as gst

if TYPE_CHECKING:
    from ghcb.msr import MsrMessage


@given(gst.pages(exit_codes=[ExitCode.CPUID], valid_fields=["rax", "rcx"]))
def test_pages_respect_arguments(page: GhcbPage) -> None:
    """Only the given exit codes and valid fields appear; pages round-trip."""
    assert page.exit_code is ExitCode.CPUID
    assert page.valid_fields <= {"rax", "rcx", "sw_exit_code"}
    assert parse_page(build_page(page)) == page


@given(gst.guest_request_pages())
def test_guest_request_pages_pass_kvm_checks(page: GhcbPage) -> None:
    """Guest-request pages draw no error from the page checker."""
    errors = [v for v in check_page(build_page(page)) if v.severity is Severity.ERROR]
    assert errors == []
    if page.exit_code is ExitCode.SNP_EXT_GUEST_REQUEST:
        assert {"rax", "rbx"} <= page.valid_fields


@given(gst.cert_tables(max_size=5))
def test_cert_tables_are_clean(blob: bytes) -> None:
    """Generated tables parse and have no error findings."""
    parse_cert_table(blob)
    assert not [v for v in check_cert_table(blob) if v.severity is Severity.ERROR]


@given(gst.guest_errors())
def test_guest_errors_are_u64(value: int) -> None:
    """Packed EXITINFO2 values split back into two u32 halves."""
    vmm, fw = unpack_guest_error(value)
    assert value == int(vmm) << 32 | int(fw)


@given(gst.msr_messages())
def test_msr_messages_roundtrip(message: MsrMessage) -> None:
    """Every generated MSR record encodes and decodes to itself."""
    assert decode_msr(encode_msr(message)) == message


@given(st.from_type(GhcbPage), st.from_type(CertEntry))
def test_entry_point_registers_types(page: GhcbPage, entry: CertEntry) -> None:
    """The hypothesis entry point makes from_type work for pages and entries."""
    assert isinstance(page, GhcbPage)
    assert isinstance(entry, CertEntry)


def test_bad_arguments() -> None:
    """Invalid arguments raise TypeError eagerly."""
    with pytest.raises(TypeError):
        gst.pages(valid_fields=["x87_state_gpa"])
    with pytest.raises(TypeError):
        gst.cert_tables(min_size=3, max_size=1)
