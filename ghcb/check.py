"""Conformance checks over captured GHCB pages: every finding, not just the first.

A ``check_*`` function walks the whole input and returns every :class:`~ghcb.errors.Violation`
(stable ``code``, severity, offset, message, spec reference). Errors are what KVM would refuse
(``sev_es_validate_vmgexit``, ghcb-facts.md §5.1); warnings are legal but suspicious bytes.

Page violation codes:

=========================  ========  ==============================================================
code                       severity  meaning
=========================  ========  ==============================================================
``page-length``            error     the input is not 4096 bytes (nothing else is checked)
``invalid-usage``          error     ``ghcb_usage`` != 0: KVM answers GHCB_ERR_INVALID_USAGE
``invalid-event``          error     an exit code KVM does not accept: GHCB_ERR_INVALID_EVENT
``missing-input``          error     a field the exit requires is not marked valid: MISSING_INPUT
``request-page-unaligned`` error     a guest request's EXITINFO1/2 is not 4 KiB aligned
``request-page-equal``     error     a guest request's request and response pages are the same
``undefined-valid-bit``    warning   a bitmap bit set that belongs to no field
``reserved-nonzero``       warning   non-zero bytes in a reserved gap
``protocol-version``       warning   ``protocol_version`` outside GHCB_PROTOCOL_MIN..MAX
=========================  ========  ==============================================================
"""

from __future__ import annotations

from typing import Final

from ghcb.codes import ExitCode
from ghcb.errors import LengthError, Severity, Violation
from ghcb.page import (
    FIELDS,
    GHCB_DEFAULT_USAGE,
    GHCB_PROTOCOL_MAX,
    GHCB_PROTOCOL_MIN,
    KVM_EXIT_RULES,
    SPEC_BITMAP,
    SPEC_KVM_VALIDATE,
    SPEC_LAYOUT,
    GhcbPage,
    parse_page,
    require_page,
    required_inputs,
)
from ghcb.schemas.page import PAGE_SIZE

__all__ = ["check_page", "check_page_record"]

_OFFSET: Final = {f.name: f.offset for f in FIELDS}
_PAGE_ALIGN: Final = PAGE_SIZE - 1  # KVM: PAGE_ALIGNED(exit_info_1) && PAGE_ALIGNED(exit_info_2)


def check_page(data: bytes | bytearray | memoryview) -> list[Violation]:
    """Every rule a captured GHCB page breaks, in offset order within each check.

    Raises:
        InputTypeError: ``data`` is not bytes-like.
    """
    try:
        page = parse_page(data)
    except LengthError as e:
        return [
            Violation(
                code=e.rule, severity=Severity.ERROR, offset=None, message=e.message, spec=e.spec
            )
        ]
    return check_page_record(page)


def _v(code: str, severity: Severity, offset: int | None, message: str, spec: str) -> Violation:
    return Violation(code=code, severity=severity, offset=offset, message=message, spec=spec)


def check_page_record(page: GhcbPage) -> list[Violation]:
    """As :func:`check_page`, on an already parsed page.

    Raises:
        InputTypeError: ``page`` is not a :class:`GhcbPage`.
    """
    require_page(page, "check_page_record")
    out: list[Violation] = []
    err, warn = Severity.ERROR, Severity.WARNING
    # "ghcb_usage must be 0 else INVALID_USAGE" (checked first by KVM)
    if page.ghcb_usage != GHCB_DEFAULT_USAGE:
        out.append(
            _v(
                "invalid-usage",
                err,
                _OFFSET["ghcb_usage"],
                f"ghcb_usage is {page.ghcb_usage:#x}; KVM accepts only 0",
                SPEC_KVM_VALIDATE,
            )
        )
    code = page.exit_code
    needed = required_inputs(page)
    if needed is None:
        name = code.name if isinstance(code, ExitCode) else "unknown"
        out.append(
            _v(
                "invalid-event",
                err,
                _OFFSET["sw_exit_code"],
                f"sw_exit_code {int(code):#x} ({name}) is not an exit KVM accepts",
                SPEC_KVM_VALIDATE,
            )
        )
        needed = frozenset({"sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"})
    valid = page.valid_fields
    for name in sorted(needed - valid, key=_OFFSET.__getitem__):
        out.append(
            _v(
                "missing-input",
                err,
                _OFFSET[name],
                f"{name} is required for exit {_name(code)} but not marked valid",
                SPEC_KVM_VALIDATE,
            )
        )
    rule = KVM_EXIT_RULES.get(code) if isinstance(code, ExitCode) else None
    if rule is not None and rule.request_pages:
        # "EXITINFO1 and EXITINFO2 both 4 KiB aligned; EXITINFO1 != EXITINFO2"
        for name in ("sw_exit_info_1", "sw_exit_info_2"):
            value = getattr(page, name)
            if value & _PAGE_ALIGN:
                out.append(
                    _v(
                        "request-page-unaligned",
                        err,
                        _OFFSET[name],
                        f"{name} = {value:#x} is not a 4 KiB aligned page address",
                        SPEC_KVM_VALIDATE,
                    )
                )
        if page.sw_exit_info_1 == page.sw_exit_info_2:
            out.append(
                _v(
                    "request-page-equal",
                    err,
                    _OFFSET["sw_exit_info_2"],
                    "request and response pages are the same page",
                    SPEC_KVM_VALIDATE,
                )
            )
    for bit in page.undefined_valid_bits:
        out.append(
            _v(
                "undefined-valid-bit",
                warn,
                _OFFSET["valid_bitmap"] + bit // 8,
                f"valid bit {bit} is set but belongs to no field (offset {bit * 8:#x})",
                SPEC_BITMAP,
            )
        )
    for field, value in zip(FIELDS, page.values, strict=True):
        if field.name.startswith("reserved_") and isinstance(value, bytes) and any(value):
            first = next(i for i, b in enumerate(value) if b)
            out.append(
                _v(
                    "reserved-nonzero",
                    warn,
                    field.offset + first,
                    f"{field.name} has non-zero bytes",
                    SPEC_LAYOUT,
                )
            )
    if not GHCB_PROTOCOL_MIN <= page.protocol_version <= GHCB_PROTOCOL_MAX:
        out.append(
            _v(
                "protocol-version",
                warn,
                _OFFSET["protocol_version"],
                f"protocol_version {page.protocol_version} is outside "
                f"{GHCB_PROTOCOL_MIN}..{GHCB_PROTOCOL_MAX}",
                "Linux asm/sev.h",
            )
        )
    return out


def _name(code: ExitCode | int) -> str:
    return code.name if isinstance(code, ExitCode) else f"{int(code):#x}"
