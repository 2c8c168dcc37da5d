"""Hypothesis strategies for GHCB pages, certificate tables and the values around them.

Requires the hypothesis package (``pip install 'ghcb[test]'``); ``ghcb`` itself does not
import this module. Every strategy draws a *record* and builds the bytes from it, so failing
examples shrink to simple pages and short tables. The ``hypothesis`` entry point registers
``st.from_type(GhcbPage)`` and ``st.from_type(CertEntry)``.

Examples::

    from hypothesis import given
    from ghcb import strategies as gst

    @given(gst.cert_tables(max_size=4))
    def test_my_parser_never_crashes(blob: bytes) -> None: ...

    @given(gst.pages(exit_codes=[ExitCode.SNP_EXT_GUEST_REQUEST]))
    def test_my_handler(page: GhcbPage) -> None: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from ghcb.certs import CertEntry, CertGuid, build_cert_table
from ghcb.codes import ExitCode, FirmwareStatus, MsrCode, VmmError
from ghcb.exitinfo import pack_guest_error
from ghcb.msr import MsrMessage, msr_layout, msr_record
from ghcb.page import FIELDS, VALID_BIT, GhcbPage
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence

__all__ = [
    "cert_entries",
    "cert_tables",
    "guest_errors",
    "guest_request_pages",
    "msr_messages",
    "pages",
]

_INT_FIELDS = {f.name: f for f in FIELDS if f.kind == "int"}


def _check_names(names: Sequence[str] | None, what: str) -> None:
    if names is None:
        return
    unknown = [n for n in names if n not in VALID_BIT]
    if unknown:
        raise TypeError(f"{what}: {unknown} are not fields with a valid bit")


def pages(
    *,
    exit_codes: Sequence[int] | None = None,
    valid_fields: Sequence[str] | None = None,
    shared_buffer: bool = False,
) -> st.SearchStrategy[GhcbPage]:
    """GHCB pages: register values drawn per field, marked valid with ``with_fields``.

    Requires the hypothesis package.

    Args:
        exit_codes: the SW_EXITCODE values to draw from (default: every :class:`ExitCode`).
        valid_fields: the fields that may be set and marked valid (default: every field with a
            valid bit).
        shared_buffer: also draw shared-buffer contents.

    Example::

        pages(exit_codes=[ExitCode.CPUID], valid_fields=["rax", "rcx"]).example()
    """
    _check_names(valid_fields, "valid_fields")
    names = sorted(set(valid_fields or VALID_BIT) - {"sw_exit_code"})
    codes = st.sampled_from(list(exit_codes) if exit_codes is not None else list(ExitCode))

    @st.composite
    def build(draw: st.DrawFn) -> GhcbPage:
        chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        values: dict[str, object] = {
            name: draw(st.integers(0, _INT_FIELDS[name].max_value)) for name in chosen
        }
        values["sw_exit_code"] = int(draw(codes))
        page = GhcbPage.empty().with_fields(**values).replace(protocol_version=2)
        if shared_buffer:
            size = len(page.shared_buffer)
            page = page.replace(shared_buffer=draw(st.binary(min_size=size, max_size=size)))
        return page

    return build()


def guest_request_pages(*, extended: bool | None = None) -> st.SearchStrategy[GhcbPage]:
    """Pages a Linux guest writes for SNP (Extended) Guest Requests: page-aligned, distinct
    request and response GPAs; for extended requests RAX = a page-aligned certificate GPA and
    RBX = a page count, all marked valid.

    Requires the hypothesis package.

    Args:
        extended: only extended (True), only plain (False), or both (None).
    """
    gfns = st.integers(min_value=1, max_value=(1 << 40) - 1)
    codes = [ExitCode.SNP_EXT_GUEST_REQUEST, ExitCode.SNP_GUEST_REQUEST]
    if extended is not None:
        codes = codes[:1] if extended else codes[1:]

    @st.composite
    def build(draw: st.DrawFn) -> GhcbPage:
        request, response = draw(st.lists(gfns, min_size=2, max_size=2, unique=True))
        code = draw(st.sampled_from(codes))
        values = {
            "sw_exit_code": code,
            "sw_exit_info_1": request * PAGE_SIZE,
            "sw_exit_info_2": response * PAGE_SIZE,
        }
        if code == ExitCode.SNP_EXT_GUEST_REQUEST:
            values["rax"] = draw(gfns) * PAGE_SIZE
            values["rbx"] = draw(st.integers(0, 8))
        return GhcbPage.empty().with_fields(**values).replace(protocol_version=2)

    return build()


def cert_entries(
    *, guids: st.SearchStrategy[uuid.UUID] | None = None, max_data: int = 2048
) -> st.SearchStrategy[CertEntry]:
    """One certificate entry: a GUID (registry or other, never the null GUID) and non-empty
    data (not PEM-looking, so building keeps it as is).

    Requires the hypothesis package.
    """
    registry = st.sampled_from([m.value for m in CertGuid])
    chosen = guids if guids is not None else registry | st.uuids()
    data = st.binary(min_size=1, max_size=max_data).filter(lambda b: not b.startswith(b"-"))
    return st.builds(CertEntry, chosen.filter(lambda g: g.int != 0), data)


def cert_tables(
    *,
    min_size: int = 0,
    max_size: int | None = None,
    entries: st.SearchStrategy[CertEntry] | None = None,
    pad_to_page: bool | None = None,
) -> st.SearchStrategy[bytes]:
    """Well-formed certificate tables (the bytes ``build_cert_table`` writes), from lists of
    distinct-GUID entries.

    Requires the hypothesis package.

    Args:
        min_size, max_size: bounds on the number of entries.
        entries: the entry strategy (default :func:`cert_entries`).
        pad_to_page: pad to whole pages (True), never (False), or either (None).
    """
    if min_size < 0 or (max_size is not None and max_size < min_size):
        raise TypeError("need 0 <= min_size <= max_size")
    lists = st.lists(
        entries or cert_entries(max_data=256),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda e: e.guid_bytes,
    )
    pads = st.booleans() if pad_to_page is None else st.just(pad_to_page)
    return st.builds(lambda es, pad: build_cert_table(es, pad_to_page=pad), lists, pads)


def guest_errors() -> st.SearchStrategy[int]:
    """SW_EXITINFO2 values of guest requests: named VMM errors and firmware statuses, and
    arbitrary u32 halves.

    Requires the hypothesis package.
    """
    vmm = st.sampled_from(list(VmmError)) | st.integers(0, 2**32 - 1)
    fw = st.sampled_from(list(FirmwareStatus)) | st.integers(0, 2**32 - 1)
    return st.builds(pack_guest_error, vmm, fw)


def msr_messages(*, codes: Sequence[MsrCode] | None = None) -> st.SearchStrategy[MsrMessage]:
    """GHCB MSR protocol records with every field drawn within its bit width.

    Requires the hypothesis package.
    """
    chosen = list(codes) if codes is not None else list(MsrCode)

    @st.composite
    def build(draw: st.DrawFn) -> MsrMessage:
        code = draw(st.sampled_from(chosen))
        fields = {f.name: draw(st.integers(0, f.mask)) for f in msr_layout(code)}
        return msr_record(code, **fields)

    return build()
