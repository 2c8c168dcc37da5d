"""Conformance checks over captured GHCB pages: every finding, not just the first.

A ``check_*`` function walks the whole input and returns every :class:`~ghcb.errors.Violation`
(stable ``code``, severity, offset, message, spec reference). Errors are what KVM would refuse
(``sev_es_validate_vmgexit``, ghcb-facts.md §5.1, through the one rule table
:mod:`ghcb.hypervisor.rules` the reference vCPU uses); warnings are legal but suspicious bytes.

Page violation codes:

=========================  ========  ==============================================================
code                       severity  meaning
=========================  ========  ==============================================================
``page-length``            error     the input is not 4096 bytes (nothing else is checked)
``invalid-usage``          error     ``ghcb_usage`` != 0: KVM answers GHCB_ERR_INVALID_USAGE
``invalid-event``          error     an exit code KVM does not accept: GHCB_ERR_INVALID_EVENT
``missing-input``          error     a field the exit requires is not marked valid: MISSING_INPUT
``snp-only``               error     an SNP-only exit from a non-SNP guest (``snp=False``)
``request-page-unaligned`` error     a guest request's EXITINFO1/2 is not 4 KiB aligned
``request-page-equal``     error     a guest request's request and response pages are the same
``undefined-valid-bit``    warning   a bitmap bit set that belongs to no field
``reserved-nonzero``       warning   non-zero bytes in a reserved gap
``protocol-version``       warning   ``protocol_version`` outside GHCB_PROTOCOL_MIN..MAX
=========================  ========  ==============================================================
"""

from __future__ import annotations

from typing import Final

from ghcb.errors import LengthError, Severity, Violation
from ghcb.hypervisor.rules import Validator, findings
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

__all__ = ["check_page", "check_page_record"]

_OFFSET: Final = {f.name: f.offset for f in FIELDS}


def check_page(
    data: bytes | bytearray | memoryview,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
) -> list[Violation]:
    """Every rule a captured GHCB page breaks: KVM's validator findings first, in the order
    KVM checks them (so the first error is the reason KVM answers), then the warnings.

    Args:
        data: the 4096 page bytes.
        snp: judge as KVM does for an SEV-SNP guest (SNP-only exits accepted).
        validator: which tree's validator (:class:`~ghcb.hypervisor.rules.Validator`).

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
    return check_page_record(page, snp=snp, validator=validator)


def _v(code: str, severity: Severity, offset: int | None, message: str, spec: str) -> Violation:
    return Violation(code=code, severity=severity, offset=offset, message=message, spec=spec)


def check_page_record(
    page: GhcbPage, *, snp: bool = True, validator: Validator = Validator.CURRENT
) -> list[Violation]:
    """As :func:`check_page`, on an already parsed page.

    Raises:
        InputTypeError: ``page`` is not a :class:`GhcbPage`.
    """
    require_page(page, "check_page_record")
    err, warn = Severity.ERROR, Severity.WARNING
    # KVM's validator: the one rule table (ghcb.hypervisor.rules), in KVM's order.
    out = [
        _v(f.code, err, f.offset, f.message, f.spec)
        for f in findings(page, snp=snp, validator=validator)
    ]
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
