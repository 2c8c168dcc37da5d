"""Conformance checks over captured GHCB pages: every finding, not just the first, and the answer
KVM would write.

A ``check_*`` function walks the whole input and returns every :class:`~ghcb.errors.Violation`
(stable ``code``, severity, offset, message, spec reference). Errors are what KVM would refuse:
first its validator (``sev_es_validate_vmgexit``, ghcb-facts.md §5.1, through the one rule table
:mod:`ghcb.hypervisor.rules` the reference vCPU uses), then the exit handler's checks a page
alone decides (the scratch area and MMIO length, ghcb-facts.md §5.2-§5.3, through
:mod:`ghcb.hypervisor.scratch`, the vCPU's copy too). Warnings are legal but suspicious bytes.

:func:`check_page_full` adds KVM's answer (:class:`KvmResponse`) per tree: what KVM writes to
SW_EXITINFO1/2 and at which :class:`Stage` — the validator's ``2 / GHCB_ERR_*`` when it refuses
the page, else the handler's (written after KVM preset 0/0: ``svm_vmgexit_success(svm, 0)``):
``2 / GHCB_ERR_INVALID_SCRATCH_AREA`` or ``2 / GHCB_ERR_INVALID_INPUT``, a failing KVM_RUN, an
exit to userspace, or the answer the page decides (list below); else, when the rest depends on
the host, the preset 0/0.

Page violation codes:

==========================  ========  ============================================================
code                        severity  meaning
==========================  ========  ============================================================
``page-length``             error     the input is not 4096 bytes (nothing else is checked)
``invalid-usage``           error     ``ghcb_usage`` != 0: KVM answers GHCB_ERR_INVALID_USAGE
``invalid-event``           error     an exit code KVM does not accept: GHCB_ERR_INVALID_EVENT
``missing-input``           error     a field the exit requires is not marked valid: MISSING_INPUT
``snp-only``                error     an SNP-only exit from a non-SNP guest (``snp=False``)
``request-page-unaligned``  error     a guest request's EXITINFO1/2 is not 4 KiB aligned
``request-page-equal``      error     a guest request's request and response pages are the same
``mmio-length``             error     MMIO length > 8 with GHCB v2+ (merged tree): INVALID_INPUT
``invalid-scratch-area``    error     ``sw_scratch`` breaks ``setup_vmgexit_scratch`` (zero, wraps,
                                      in the GHCB page but outside its shared buffer, outside the
                                      GHCB on v2+, over 16 pages): INVALID_SCRATCH_AREA; or a
                                      string IOIO count KVM refuses with KVM_RUN -EINVAL
``ap-jump-table-op``        error     AP_JUMP_TABLE with EXITINFO1 neither SET (0) nor GET (1):
                                      the handler's ``default:`` answers INVALID_INPUT
``unsupported-event``       error     UNSUPPORTED_EVENT: KVM has no handling, KVM_RUN fails
                                      (``ret = -EINVAL``)
``undefined-valid-bit``     warning   a bitmap bit set that marks no field (a reserved qword or
                                      the bitmap itself; ``x87_state_gpa``, qword 128, has none)
``x87-state-gpa``           warning   ``x87_state_gpa`` non-zero: no valid bit can mark it and KVM
                                      never reads it
``reserved-nonzero``        warning   non-zero bytes in a reserved gap
``protocol-version``        warning   ``protocol_version`` outside GHCB_PROTOCOL_MIN..MAX
==========================  ========  ============================================================

Where a page's answer needs the host's view, the checker asks for it: ``ghcb_gpa`` (the GHCB's
GPA; ``None`` takes the page holding ``sw_scratch`` as the GHCB, since a captured page does not
say where it lived) and ``ghcb_version`` (the VM's configured GHCB version, 2 for every SNP VM).
A view KVM cannot have is a typed error: a GPA of 0 (``if (!ghcb_gpa) return 1;``: no GHCB, KVM
writes nothing), an SNP VM of version 1 (KVM_SEV_INIT2 ``-EINVAL``). The GHCB is taken as the
registered one (an SNP VM's other GPA fails KVM_RUN before the validator).

KVM's answer, case by case of ``sev_handle_vmgexit``'s switch (after the validator and the
preset ``svm_vmgexit_success(svm, 0)``; :class:`Stage` says which):

* decided by the page (``answered``, ``handler``, ``run-fails``, ``exits-to-userspace``):
  HV_FEATURES 0 / ``GHCB_HV_FT_SUPPORTED``; AP_JUMP_TABLE SET (EXITINFO1 0) 0/0 and any
  EXITINFO1 but SET/GET 2 / INVALID_INPUT (``default:``); NMI_COMPLETE, READ/WRITE_DR7, INVD,
  WBINVD, MONITOR, MWAIT, RDTSCP 0/0 (their intercepts write no exit info); UNSUPPORTED_EVENT
  ``-EINVAL`` (KVM_RUN fails); TERM_REQUEST a ``KVM_EXIT_SYSTEM_EVENT`` with 0/0 in the GHCB;
  the scratch and MMIO-length answers and the handlers' no-ops (MMIO length 0, IOIO without
  size, string count 0) 0/0; a PSC whose descriptor is in the GHCB's shared buffer: the first
  ``KVM_HC_MAP_GPA_RANGE`` exit (``exits-to-userspace``, 0/0) or, with no exit to make, 0 /
  ``VMGEXIT_PSC_ERROR_*`` (:func:`ghcb.hypervisor.psc_answer.kvm_psc_answer_in_page`; the VMM takes
  ``KVM_HC_MAP_GPA_RANGE`` exits, as QEMU does).
* decided by the host (``accepted``, the preset 0/0 reported): AP_JUMP_TABLE GET (``sev->
  ap_jump_table``), AP_HLT_LOOP (halt until a SIPI), AP_CREATION (the target vCPU, SEV
  features, MAXPHYADDR), MMIO and IOIO accesses (devices, userspace), CPUID / MSR / VMMCALL
  (the CPUID and MSR tables, hypercalls; registers written back), RDTSC / RDPMC (the SVM
  intercept table, the vPMU), guest requests (firmware, certificates), a PSC descriptor outside
  the GHCB (guest memory) or one the v15 tree reads past its buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ghcb._fast import check_int
from ghcb._kvm_answer import PRESET, KvmResponse, Stage, psc_response, switch_response
from ghcb.codes import ApJumpTableOp, ExitCode, HvResp
from ghcb.errors import FieldValueError, InputTypeError, LengthError, Severity, Violation
from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi
from ghcb.hypervisor.rules import Validator, findings, first_error
from ghcb.hypervisor.scratch import (
    SCRATCH_IN_GHCB_VERSION,
    HandlerStop,
    ScratchArea,
    ScratchError,
    StopKind,
    scratch_outcome,
)
from ghcb.page import (
    FIELDS,
    GHCB_PROTOCOL_MAX,
    GHCB_PROTOCOL_MIN,
    SPEC_BITMAP,
    SPEC_LAYOUT,
    GhcbPage,
    parse_page,
    require_page,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "ABI_VALIDATORS",
    "DEFAULT_GHCB_VERSION",
    "KvmResponse",
    "PageCheck",
    "Stage",
    "check_page",
    "check_page_full",
    "check_page_record",
    "expected_response",
]

_OFFSET: Final = {f.name: f.offset for f in FIELDS}
_U64_MAX: Final = (1 << 64) - 1
_SPEC_HOST: Final = "Linux arch/x86/kvm/svm/sev.c (control->ghcb_gpa, sev->ghcb_version)"
_MALFORMED: Final = int(HvResp.MALFORMED_INPUT)
#: The certificate-exit ABI names (``--abi``) and the tree whose validator each runs.
ABI_VALIDATORS: Final[Mapping[str, Validator]] = {
    MergedAbi.name: MergedAbi.validator,
    V15Abi.name: V15Abi.validator,
}
#: KVM_SEV_INIT2's default and every SNP VM's version ("if (snp_active && data->ghcb_version <
#: 2) return -EINVAL"; "if (es_active && !data->ghcb_version) data->ghcb_version = 2").
DEFAULT_GHCB_VERSION: Final = GHCB_PROTOCOL_MAX


@dataclass(frozen=True, slots=True)
class PageCheck:
    """A page's violations under one tree and KVM's answer under every tree."""

    validator: Validator
    """The tree :attr:`violations` and :attr:`expected_response` are for."""
    violations: tuple[Violation, ...]
    """As :func:`check_page` returns them for :attr:`validator`."""
    expected_response: KvmResponse | None
    """KVM's answer under :attr:`validator`; ``None`` when the input is not a page."""
    responses: Mapping[str, KvmResponse]
    """KVM's answer per ABI name of :data:`ABI_VALIDATORS` (``merged``, ``v15``); empty when
    the input is not a page."""

    @property
    def ok(self) -> bool:
        """No error-severity violation."""
        return not any(v.severity is Severity.ERROR for v in self.violations)

    @property
    def responses_differ(self) -> bool:
        """The trees answer the page differently."""
        return len({(r.exit_info_1, r.exit_info_2) for r in self.responses.values()}) > 1


def check_page(
    data: bytes | bytearray | memoryview,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
    ghcb_gpa: int | None = None,
    ghcb_version: int = DEFAULT_GHCB_VERSION,
) -> list[Violation]:
    """Every rule a captured GHCB page breaks: KVM's validator findings first, in the order
    KVM checks them (so the first error is the reason KVM answers), then the handler's page
    checks, then the warnings.

    Args:
        data: the 4096 page bytes.
        snp: judge as KVM does for an SEV-SNP guest (SNP-only exits accepted).
        validator: which tree (:class:`~ghcb.hypervisor.rules.Validator`).
        ghcb_gpa: the GHCB's GPA, or ``None`` (module docstring).
        ghcb_version: the VM's GHCB protocol version.

    Raises:
        InputTypeError: ``data`` is not bytes-like, ``validator`` not a Validator, ``snp`` not
            a bool.
        FieldValueError: ``ghcb_gpa`` or ``ghcb_version`` is not one KVM can have.
    """
    return list(
        check_page_full(
            data, snp=snp, validator=validator, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version
        ).violations
    )


def _check_host(validator: object, snp: object, ghcb_gpa: int | None, ghcb_version: int) -> None:
    """The caller's tree and the host's view must be ones KVM can have: a
    :class:`~ghcb.hypervisor.rules.Validator`, a bool ``snp``, a non-zero page-aligned u64 GHCB
    GPA (bits 11:0 set would be the MSR protocol; 0 is no GHCB: ``if (!ghcb_gpa) return 1;``,
    KVM writes nothing), a GHCB version in GHCB_VERSION_MIN..MAX and >= 2 for an SNP VM
    (KVM_SEV_INIT2: ``if (snp_active && data->ghcb_version < 2) return -EINVAL;``)."""
    if not isinstance(validator, Validator):
        raise InputTypeError(
            f"validator must be a Validator, not {validator!r}", rule="input-type", spec=_SPEC_HOST
        )
    if not isinstance(snp, bool):
        raise InputTypeError(f"snp must be a bool, not {snp!r}", rule="input-type", spec=_SPEC_HOST)
    if ghcb_gpa is not None:
        check_int(ghcb_gpa, _U64_MAX, "ghcb_gpa", _SPEC_HOST)
        if not ghcb_gpa or ghcb_gpa & (PAGE_SIZE - 1):
            why = "0: KVM has no GHCB and writes nothing" if not ghcb_gpa else "not page aligned"
            raise FieldValueError(
                f"ghcb_gpa = {ghcb_gpa:#x} is {why}",
                rule="field-range",
                spec=_SPEC_HOST,
                field="ghcb_gpa",
            )
    least = SCRATCH_IN_GHCB_VERSION if snp else GHCB_PROTOCOL_MIN
    if check_int(ghcb_version, GHCB_PROTOCOL_MAX, "ghcb_version", _SPEC_HOST) < least:
        raise FieldValueError(
            f"ghcb_version = {ghcb_version} is outside {least}..{GHCB_PROTOCOL_MAX}"
            + (" for an SNP VM (KVM_SEV_INIT2 -EINVAL)" if snp else ""),
            rule="field-range",
            spec=_SPEC_HOST,
            field="ghcb_version",
        )


def check_page_full(
    data: bytes | bytearray | memoryview,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
    ghcb_gpa: int | None = None,
    ghcb_version: int = DEFAULT_GHCB_VERSION,
) -> PageCheck:
    """:func:`check_page`'s violations and KVM's answer to the page, per tree.

    Args:
        data: the 4096 page bytes.
        snp: judge as KVM does for an SEV-SNP guest.
        validator: the tree of the violations and of ``expected_response``.
        ghcb_gpa: the GHCB's GPA, or ``None`` (module docstring).
        ghcb_version: the VM's GHCB protocol version.

    Raises:
        InputTypeError: ``data`` is not bytes-like, ``validator`` not a Validator, ``snp`` not
            a bool.
        FieldValueError: ``ghcb_gpa`` or ``ghcb_version`` is not one KVM can have.
    """
    _check_host(validator, snp, ghcb_gpa, ghcb_version)
    try:
        page = parse_page(data)
    except LengthError as e:
        length = Violation(
            code=e.rule, severity=Severity.ERROR, offset=None, message=e.message, spec=e.spec
        )
        return PageCheck(validator, (length,), None, {})
    answers = {
        tree: expected_response(
            page, snp=snp, validator=tree, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version
        )
        for tree in Validator
    }
    violations = check_page_record(
        page, snp=snp, validator=validator, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version
    )
    responses = {name: answers[tree] for name, tree in ABI_VALIDATORS.items()}
    return PageCheck(validator, tuple(violations), answers[validator], responses)


def expected_response(
    page: GhcbPage,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
    ghcb_gpa: int | None = None,
    ghcb_version: int = DEFAULT_GHCB_VERSION,
) -> KvmResponse:
    """What KVM writes to SW_EXITINFO1/2 for ``page``: the validator's answer
    (:func:`~ghcb.hypervisor.rules.first_error`, the one rule table), else the exit handler's
    scratch-area / MMIO-length answer (:func:`~ghcb.hypervisor.scratch.scratch_outcome`), else
    the handler's answer where the page decides it (module docstring), else the 0/0 KVM
    presets.

    Raises:
        InputTypeError: ``page`` is not a :class:`~ghcb.page.GhcbPage`, ``validator`` not a
            :class:`~ghcb.hypervisor.rules.Validator`, ``snp`` not a bool.
        FieldValueError: ``ghcb_gpa`` or ``ghcb_version`` is not one KVM can have.
    """
    require_page(page, "expected_response")
    _check_host(validator, snp, ghcb_gpa, ghcb_version)
    # sev_es_validate_vmgexit: "svm_vmgexit_bad_input(svm, reason);" (EXITINFO1 = 2)
    reason = first_error(page, snp=snp, validator=validator)
    if reason is not None:
        return KvmResponse(_MALFORMED, int(reason), Stage.VALIDATOR)
    # sev_handle_vmgexit: "svm_vmgexit_success(svm, 0);" then the handler
    step = scratch_outcome(page, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version, validator=validator)
    if isinstance(step, ScratchError | HandlerStop) and step.reason is not None:
        return KvmResponse(_MALFORMED, int(step.reason), Stage.HANDLER)
    if isinstance(step, HandlerStop):
        # "return -EINVAL;" (string IOIO count) or a no-op "return 1;" with the preset 0/0
        return KvmResponse(
            0, 0, Stage.RUN_FAILS if step.kind is StopKind.RUN_FAILS else Stage.ANSWERED
        )
    if isinstance(step, ScratchArea):
        return psc_response(page, step, validator) if page.sw_exit_code == ExitCode.PSC else PRESET
    return switch_response(page)


def _v(code: str, severity: Severity, offset: int | None, message: str, spec: str) -> Violation:
    return Violation(code=code, severity=severity, offset=offset, message=message, spec=spec)


def check_page_record(
    page: GhcbPage,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
    ghcb_gpa: int | None = None,
    ghcb_version: int = DEFAULT_GHCB_VERSION,
) -> list[Violation]:
    """As :func:`check_page`, on an already parsed page.

    Raises:
        InputTypeError: ``page`` is not a :class:`GhcbPage`, ``validator`` not a Validator,
            ``snp`` not a bool.
        FieldValueError: ``ghcb_gpa`` or ``ghcb_version`` is not one KVM can have.
    """
    require_page(page, "check_page_record")
    _check_host(validator, snp, ghcb_gpa, ghcb_version)
    err = Severity.ERROR
    # KVM's validator: the one rule table (ghcb.hypervisor.rules), in KVM's order.
    out = [
        _v(f.code, err, f.offset, f.message, f.spec)
        for f in findings(page, snp=snp, validator=validator)
    ]
    out.extend(_handler(page, validator, ghcb_gpa, ghcb_version))
    out.extend(_warnings(page))
    return out


def _handler(
    page: GhcbPage, validator: Validator, ghcb_gpa: int | None, ghcb_version: int
) -> Iterator[Violation]:
    """The handler's page checks (AP_JUMP_TABLE request, UNSUPPORTED_EVENT, scratch area, MMIO
    length), whether or not the validator accepts the page; a scratch GPA of 0 because
    sw_scratch is not valid is the validator's ``missing-input`` already."""
    code = page.sw_exit_code
    if code == ExitCode.AP_JUMP_TABLE and page.sw_exit_info_1 not in _JUMP_TABLE_OPS:
        yield _v(
            "ap-jump-table-op",
            Severity.ERROR,
            _OFFSET["sw_exit_info_1"],
            f"AP_JUMP_TABLE request {page.sw_exit_info_1:#x} is neither SET (0) nor GET (1): "
            "KVM answers INVALID_INPUT",
            _SPEC_SWITCH,
        )
    if code == ExitCode.UNSUPPORTED_EVENT:
        yield _v(
            "unsupported-event",
            Severity.ERROR,
            _OFFSET["sw_exit_code"],
            "UNSUPPORTED_EVENT: KVM does not handle it and KVM_RUN fails (-EINVAL)",
            _SPEC_SWITCH,
        )
    step = scratch_outcome(page, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version, validator=validator)
    if not isinstance(step, ScratchError | HandlerStop) or step.code is None:
        return
    if isinstance(step, ScratchError) and step.rule == "no-gpa" and not page.is_valid("sw_scratch"):
        return
    yield _v(step.code, Severity.ERROR, step.offset, step.message, step.spec)


_JUMP_TABLE_OPS: Final = frozenset(int(op) for op in ApJumpTableOp)
_SPEC_SWITCH: Final = "Linux arch/x86/kvm/svm/sev.c sev_handle_vmgexit"


def _covering(offset: int) -> str:
    return next(f.name for f in FIELDS if f.offset <= offset < f.offset + f.size)


def _warnings(page: GhcbPage) -> Iterator[Violation]:
    warn = Severity.WARNING
    for bit in page.undefined_valid_bits:
        yield _v(
            "undefined-valid-bit",
            warn,
            _OFFSET["valid_bitmap"] + bit // 8,
            f"valid bit {bit} is set but marks no field: the qword at {bit * 8:#x} is in "
            f"{_covering(bit * 8)}",
            SPEC_BITMAP,
        )
    if page.x87_state_gpa:
        yield _v(
            "x87-state-gpa",
            warn,
            _OFFSET["x87_state_gpa"],
            f"x87_state_gpa is {page.x87_state_gpa:#x}: no valid bit can mark it (qword "
            f"{_OFFSET['x87_state_gpa'] // 8} is past the 128-bit bitmap) and KVM never reads it",
            SPEC_BITMAP,
        )
    for field, value in zip(FIELDS, page.values, strict=True):
        if field.name.startswith("reserved_") and isinstance(value, bytes) and any(value):
            first = next(i for i, b in enumerate(value) if b)
            yield _v(
                "reserved-nonzero",
                warn,
                field.offset + first,
                f"{field.name} has non-zero bytes",
                SPEC_LAYOUT,
            )
    if not GHCB_PROTOCOL_MIN <= page.protocol_version <= GHCB_PROTOCOL_MAX:
        yield _v(
            "protocol-version",
            warn,
            _OFFSET["protocol_version"],
            f"protocol_version {page.protocol_version} is outside "
            f"{GHCB_PROTOCOL_MIN}..{GHCB_PROTOCOL_MAX}",
            "Linux asm/sev.h",
        )
