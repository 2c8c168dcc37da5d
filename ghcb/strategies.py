"""Hypothesis strategies for GHCB pages, certificate tables and the values around them.

Requires the hypothesis package (``pip install 'ghcb[hypothesis]'``; without it, importing
this module raises :class:`ghcb.MissingExtraError`, an ``ImportError`` saying so);
``ghcb`` itself does not import this module. Every strategy draws a *record* and builds the
bytes from it, so failing examples shrink to simple pages and short tables. The
``hypothesis`` entry point registers ``st.from_type`` for :class:`~ghcb.GhcbPage`,
:class:`~ghcb.CertEntry`, :class:`HostileCertTable` and :class:`KvmExit`.

Valid values: :func:`pages`, :func:`requests` (exactly the inputs KVM requires per exit),
:func:`guest_request_pages`, :func:`cert_entries`, :func:`cert_tables`, :func:`guest_errors`,
:func:`msr_messages`, :func:`kvm_exits` (the ``kvm_run`` of both certificate-exit ABIs).
Hostile values: :func:`hostile_cert_tables` (each labelled with the violation codes it must
trigger), :func:`exit_info2_values` (every SW_EXITINFO2 encoding and any u64).

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

from ghcb._extras import raise_missing_extra

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as e:
    raise_missing_extra(e, extra="hypothesis", needed_by=__name__)
    raise

from ghcb._fast import flat_fields
from ghcb._hostile import CERT_VIOLATION_CODES, ERROR_CODES, hostile_cert_tables
from ghcb._samples import HostileCertTable, KvmExit
from ghcb.certs import CertEntry, CertGuid, build_cert_table
from ghcb.codes import ExitCode, FirmwareStatus, GhcbErr, MsrCode, VmmError
from ghcb.exitinfo import EventInjection, pack_guest_error
from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi, encode_kvm_run
from ghcb.hypervisor.rules import (
    ALWAYS_REQUIRED,
    KVM_EXIT_RULES,
    V15_EXIT_RULES,
    Validator,
    required_inputs,
)
from ghcb.msr import MsrMessage, msr_layout, msr_record
from ghcb.page import FIELDS, GHCB_PROTOCOL_MAX, VALID_BIT, GhcbPage
from ghcb.schemas.kvm import (
    KVM_USER_VMGEXIT_REQ_CERTS,
    REQ_CERTS_STATUS_PENDING,
    kvm_user_vmgexit,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping, Sequence

__all__ = [
    "CERT_VIOLATION_CODES",
    "ERROR_CODES",
    "HostileCertTable",
    "KvmExit",
    "cert_entries",
    "cert_tables",
    "exit_info2_values",
    "guest_errors",
    "guest_request_pages",
    "hostile_cert_tables",
    "kvm_exits",
    "msr_messages",
    "pages",
    "requests",
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


def exit_info2_values() -> st.SearchStrategy[int]:
    """SW_EXITINFO2 values a guest may read back: SNP_GUEST_ERR packings
    (:func:`guest_errors`, both GENERIC values among them), GHCB_ERR_* reasons (after
    EXITINFO1 = 2), event injections (after EXITINFO1 = 1, every field in its bit width,
    reserved bits too), and any u64 — for decoders that must answer every value.

    Requires the hypothesis package.

    Example::

        exit_info2_values().example()
    """
    named = st.sampled_from([pack_guest_error(vmm, 0) for vmm in VmmError])  # fw_err = 0
    reasons = st.sampled_from(list(GhcbErr)).map(int)
    events = st.fixed_dictionaries(
        {f.name: st.integers(0, f.mask) for f in EventInjection.FIELDS}
    ).map(lambda fields: EventInjection(**fields).encode())
    return st.one_of(named, guest_errors(), reasons, events, st.integers(0, (1 << 64) - 1))


#: ``kvm_user_vmgexit.req_certs.ret`` is a u32 (the seed patch's uapi kvm.h).
_V15_RET_MAX = next(f.max_value for f in flat_fields(kvm_user_vmgexit) if f.name == "ret")


def kvm_exits(*, abi: MergedAbi | V15Abi | None = None) -> st.SearchStrategy[KvmExit]:
    """Certificate exits KVM writes for an Extended Guest Request: ``KVM_EXIT_SNP_REQ_CERTS``
    ``{gpa, npages, ret = 0}`` (merged) or ``KVM_EXIT_VMGEXIT`` ``{type = REQ_CERTS, data_gpa,
    data_npages, flags = 0, status = PENDING, ret}`` (v15, where KVM leaves ``ret`` as
    userspace last wrote it). The GPA is page-aligned (KVM checked it) and the page count is
    the guest's RBX: any u64.

    Requires the hypothesis package.

    Args:
        abi: ``MergedAbi()`` (any exit number), ``V15Abi()``, or None for both.

    Raises:
        TypeError: ``abi`` is not one of those.

    Example::

        kvm_exits(abi=MergedAbi()).example().kvm_run
    """
    if abi is not None and not isinstance(abi, MergedAbi | V15Abi):
        raise TypeError(f"abi must be MergedAbi(), V15Abi() or None, not {abi!r}")
    abis: list[MergedAbi | V15Abi] = [abi] if abi is not None else [MergedAbi(), V15Abi()]
    u64 = (1 << 64) - 1
    gpas = st.integers(0, u64 // PAGE_SIZE).map(lambda gfn: gfn * PAGE_SIZE)

    @st.composite
    def build(draw: st.DrawFn) -> KvmExit:
        chosen = draw(st.sampled_from(abis))
        gpa, npages = draw(gpas), draw(st.integers(0, 8) | st.integers(0, u64))
        fields: dict[str, int]
        if isinstance(chosen, MergedAbi):
            fields = {"gpa": gpa, "npages": npages, "ret": 0}
        else:
            ret = draw(st.integers(0, _V15_RET_MAX))
            fields = {
                "type": KVM_USER_VMGEXIT_REQ_CERTS,
                "data_gpa": gpa,
                "data_npages": npages,
                "flags": 0,
                "status": REQ_CERTS_STATUS_PENDING,
                "ret": ret,
            }
        return KvmExit(chosen, fields, encode_kvm_run(chosen, fields))

    return build()


_RULE_TABLES = {Validator.CURRENT: KVM_EXIT_RULES, Validator.V15: V15_EXIT_RULES}


def requests(
    *, exit_codes: Sequence[ExitCode] | None = None, validator: Validator = Validator.CURRENT
) -> st.SearchStrategy[GhcbPage]:
    """GHCB pages an SEV-SNP guest writes that carry exactly the inputs KVM's validator
    requires for their exit (:func:`ghcb.required_inputs`, the rule table of
    :mod:`ghcb.hypervisor.rules`): those fields and no others are marked valid, so KVM
    accepts the page and clearing any one valid bit makes it answer GHCB_ERR_MISSING_INPUT.

    Values on which a rule's condition turns (CPUID leaf 0xD, an IOIO string or OUT, an MSR
    write, AP destroy) are drawn often; guest-request pages get distinct page-aligned GPAs.

    Requires the hypothesis package.

    Args:
        exit_codes: exit codes to draw from (default: every exit KVM accepts).
        validator: which tree's validator (``Validator.V15``: the seed patch's).

    Raises:
        TypeError: an exit code the validator does not accept, or no code at all.

    Example::

        requests(exit_codes=[ExitCode.CPUID]).example()
    """
    table = _RULE_TABLES.get(validator)
    if table is None:
        raise TypeError(f"validator must be a Validator, not {validator!r}")
    codes = list(table) if exit_codes is None else list(exit_codes)
    rejected = [c for c in codes if c not in table]
    if rejected or not codes:
        raise TypeError(f"exit_codes must be exits KVM accepts, not {rejected or 'nothing'}")
    gfns = st.integers(min_value=1, max_value=(1 << 40) - 1)

    @st.composite
    def build(draw: st.DrawFn) -> GhcbPage:
        code = draw(st.sampled_from(codes))
        rule = table[code]
        turning: dict[str, list[int]] = {}
        for cond in rule.when:
            turning.setdefault(cond.field, []).append(cond.equals)
        names = set(ALWAYS_REQUIRED | rule.required)
        for cond in rule.when:
            names |= cond.require
        values: dict[str, int] = {}
        for name in sorted(names):
            anything = st.integers(0, _INT_FIELDS[name].max_value)
            special = turning.get(name)
            values[name] = draw(st.sampled_from(special) | anything if special else anything)
        values["sw_exit_code"] = int(code)
        if rule.request_pages:
            request, response = draw(st.lists(gfns, min_size=2, max_size=2, unique=True))
            values["sw_exit_info_1"], values["sw_exit_info_2"] = (
                request * PAGE_SIZE,
                response * PAGE_SIZE,
            )
        page = _page(values, ALWAYS_REQUIRED | rule.required)
        needed = required_inputs(page, validator=validator) or frozenset()
        return _page(values, needed)

    return build()


def _page(values: Mapping[str, int], names: frozenset[str]) -> GhcbPage:
    chosen = {name: values[name] for name in names}
    return GhcbPage.empty().with_fields(**chosen).replace(protocol_version=GHCB_PROTOCOL_MAX)
