"""KVM's GHCB validator as data: what ``sev_es_validate_vmgexit`` requires per exit code, and the
``GHCB_ERR_*`` each failure produces — the one table the vCPU and ``check_page`` both use.

Source: Linux ``arch/x86/kvm/svm/sev.c`` ``sev_es_validate_vmgexit`` (ghcb-facts.md §5.1),
transcribed independently in ``spec/tables/exit_codes.toml``; the v15-era tree from the seed
patch series (May 2024, ``[PATCH v15 18/20]`` and ``19/20``). The order of the checks is
KVM's, and :func:`findings` yields them in that order, so the first error is the reason KVM
writes to SW_EXITINFO2:

1. ``if (svm->sev_es.ghcb->ghcb_usage) { reason = GHCB_ERR_INVALID_USAGE; goto vmgexit_err; }``
2. ``reason = GHCB_ERR_MISSING_INPUT;`` then sw_exit_code, sw_exit_info_1 and sw_exit_info_2
   must be valid (``kvm_ghcb_sw_exit_code_is_valid`` …).
3. ``switch (exit_code)``: per exit code, required valid fields and conditions; every failure
   keeps ``reason = GHCB_ERR_MISSING_INPUT`` (SNP-only exits from a non-SNP guest too).
4. ``default: reason = GHCB_ERR_INVALID_EVENT;``

What the exit handlers check after the validator accepted a page (the scratch area of MMIO,
string IOIO and PSC, the MMIO length: ``GHCB_ERR_INVALID_SCRATCH_AREA`` /
``GHCB_ERR_INVALID_INPUT`` written by the handler) is :mod:`ghcb.hypervisor.scratch`.

"Valid" is the bit in the snapshot of the guest's bitmap; a field read for a condition is its
value if valid, else 0 (``vcpu->arch.regs`` are zeroed, then filled from valid fields).

Two validators (:class:`Validator`): ``CURRENT`` (merged KVM) and ``V15`` (the seed patch's
tree): there a plain Guest Request checks only ``sev_snp_guest`` (no page alignment, no
equality check — ``snp_setup_guest_buf`` fails later) and an Extended Guest Request needs RAX
and RBX valid (``!kvm_ghcb_rax_is_valid(svm) || !kvm_ghcb_rbx_is_valid(svm)``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from ghcb.codes import ExitCode, GhcbErr
from ghcb.page import FIELDS, GHCB_DEFAULT_USAGE, VALID_BIT, GhcbPage, require_page
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "ALWAYS_REQUIRED",
    "KVM_EXIT_RULES",
    "SPEC_KVM_VALIDATE",
    "SPEC_V15_VALIDATE",
    "V15_EXIT_RULES",
    "ExitRule",
    "Finding",
    "InputRule",
    "Validator",
    "accepts",
    "findings",
    "first_error",
    "required_inputs",
]

SPEC_KVM_VALIDATE: Final = "Linux arch/x86/kvm/svm/sev.c sev_es_validate_vmgexit"
SPEC_V15_VALIDATE: Final = "v15 seed series sev_es_validate_vmgexit ([PATCH v15 18/20, 19/20])"
_ALL64: Final = (1 << 64) - 1
_PAGE_MASK: Final = PAGE_SIZE - 1  # PAGE_ALIGNED(x): x & (PAGE_SIZE - 1) == 0
_OFFSET: Final = {f.name: f.offset for f in FIELDS}

#: "sw_exit_code, sw_exit_info_1 and sw_exit_info_2 must all be marked valid" (every exit).
ALWAYS_REQUIRED: Final = frozenset({"sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"})


class Validator(enum.Enum):
    """Which tree's ``sev_es_validate_vmgexit``."""

    CURRENT = "current"
    V15 = "v15"


@dataclass(frozen=True, slots=True)
class InputRule:
    """``require`` must be valid too when ``(value(field) & mask) == equals`` (``!=`` if
    ``negate``). The value is the field's if its valid bit is set, else 0, as KVM reads it."""

    field: str
    mask: int
    equals: int
    require: frozenset[str]
    negate: bool = False

    def applies(self, page: GhcbPage) -> bool:
        """Whether the condition holds on ``page``."""
        hit = page.get_if_valid(self.field) & self.mask == self.equals
        return hit != self.negate


@dataclass(frozen=True, slots=True)
class ExitRule:
    """What KVM's validator requires of one accepted exit code."""

    required: frozenset[str] = frozenset()
    when: tuple[InputRule, ...] = ()
    snp_only: bool = False
    """Accepted only from an SNP guest."""
    request_pages: bool = False
    """SW_EXITINFO1 and SW_EXITINFO2 must be 4 KiB aligned and different (guest requests)."""


def _rule(
    *required: str,
    when: tuple[InputRule, ...] = (),
    snp_only: bool = False,
    request_pages: bool = False,
) -> ExitRule:
    return ExitRule(frozenset(required), when, snp_only, request_pages)


#: The exit codes current KVM accepts, with their extra required inputs; any other code is
#: answered with GHCB_ERR_INVALID_EVENT.
KVM_EXIT_RULES: Final[Mapping[ExitCode, ExitRule]] = {
    ExitCode.READ_DR7: _rule(),
    ExitCode.WRITE_DR7: _rule("rax"),
    ExitCode.RDTSC: _rule(),
    ExitCode.RDPMC: _rule("rcx"),
    # "RAX and RCX; plus XCR0 if RAX (leaf) == 0xD"
    ExitCode.CPUID: _rule("rax", "rcx", when=(InputRule("rax", _ALL64, 0xD, frozenset({"xcr0"})),)),
    ExitCode.INVD: _rule(),
    # "if EXITINFO1 bit2 (string): SW_SCRATCH; else if OUT (bit0 = 0): RAX"
    ExitCode.IOIO: _rule(
        when=(
            InputRule("sw_exit_info_1", 0x4, 0x4, frozenset({"sw_scratch"})),
            InputRule("sw_exit_info_1", 0x5, 0x0, frozenset({"rax"})),
        )
    ),
    # "RCX; if EXITINFO1 != 0 (write): RAX and RDX"
    ExitCode.MSR: _rule(
        "rcx", when=(InputRule("sw_exit_info_1", _ALL64, 0, frozenset({"rax", "rdx"}), True),)
    ),
    ExitCode.VMMCALL: _rule("rax", "cpl"),
    ExitCode.RDTSCP: _rule(),
    ExitCode.WBINVD: _rule(),
    ExitCode.MONITOR: _rule("rax", "rcx", "rdx"),
    ExitCode.MWAIT: _rule("rax", "rcx"),
    ExitCode.MMIO_READ: _rule("sw_scratch"),
    ExitCode.MMIO_WRITE: _rule("sw_scratch"),
    # "RAX unless low 32 bits of EXITINFO1 == 2 (DESTROY)"
    ExitCode.AP_CREATION: _rule(
        snp_only=True,
        when=(InputRule("sw_exit_info_1", 0xFFFFFFFF, 2, frozenset({"rax"}), True),),
    ),
    ExitCode.NMI_COMPLETE: _rule(),
    ExitCode.AP_HLT_LOOP: _rule(),
    ExitCode.AP_JUMP_TABLE: _rule(),
    ExitCode.UNSUPPORTED_EVENT: _rule(),
    ExitCode.HV_FEATURES: _rule(),
    ExitCode.TERM_REQUEST: _rule(),
    ExitCode.PSC: _rule("sw_scratch", snp_only=True),
    # "if (!sev_snp_guest(vcpu->kvm) || !PAGE_ALIGNED(control->exit_info_1) ||
    #  !PAGE_ALIGNED(control->exit_info_2) || control->exit_info_1 == control->exit_info_2)"
    ExitCode.SNP_GUEST_REQUEST: _rule(snp_only=True, request_pages=True),
    ExitCode.SNP_EXT_GUEST_REQUEST: _rule(snp_only=True, request_pages=True),
}

#: The v15-era validator: the same table but for the two guest requests.
V15_EXIT_RULES: Final[Mapping[ExitCode, ExitRule]] = {
    **KVM_EXIT_RULES,
    # v15 18/20: "case SVM_VMGEXIT_GUEST_REQUEST: if (!sev_snp_guest(vcpu->kvm)) goto vmgexit_err;"
    ExitCode.SNP_GUEST_REQUEST: _rule(snp_only=True),
    # v15 19/20: "if (!sev_snp_guest(vcpu->kvm) || !kvm_ghcb_rax_is_valid(svm) ||
    #             !kvm_ghcb_rbx_is_valid(svm)) goto vmgexit_err;"
    ExitCode.SNP_EXT_GUEST_REQUEST: _rule("rax", "rbx", snp_only=True),
}

_TABLES: Final = {Validator.CURRENT: KVM_EXIT_RULES, Validator.V15: V15_EXIT_RULES}
_SPECS: Final = {Validator.CURRENT: SPEC_KVM_VALIDATE, Validator.V15: SPEC_V15_VALIDATE}


def _mask(names: frozenset[str]) -> int:
    return sum(1 << VALID_BIT[name] for name in names)


#: The tables keyed by plain int exit codes (the same rows; what a raw SW_EXITCODE looks up).
_BY_INT: Final[dict[Validator, dict[int, ExitRule]]] = {
    validator: {int(code): rule for code, rule in table.items()}
    for validator, table in _TABLES.items()
}
#: Per validator and exit code: the valid bits an accepted page must have (always + row).
_MASKS: Final[dict[Validator, dict[int, int]]] = {
    validator: {int(code): _mask(ALWAYS_REQUIRED | rule.required) for code, rule in table.items()}
    for validator, table in _TABLES.items()
}


class Finding(NamedTuple):
    """One rule of the validator a page breaks.

    ``code`` is the stable violation code of :func:`ghcb.check_page`; ``reason`` the
    ``GHCB_ERR_*`` KVM writes to SW_EXITINFO2 if this is the first finding.
    """

    code: str
    reason: GhcbErr
    offset: int
    message: str
    spec: str


def _name(code: ExitCode | int) -> str:
    return code.name if isinstance(code, ExitCode) else f"{int(code):#x}"


def _known(code: ExitCode | int) -> str:
    return code.name if isinstance(code, ExitCode) else "unknown"


def findings(
    page: GhcbPage, *, snp: bool = True, validator: Validator = Validator.CURRENT
) -> Iterator[Finding]:
    """Every rule of KVM's validator ``page`` breaks, in the order KVM checks them.

    Args:
        page: the GHCB as the guest wrote it (its valid bitmap is KVM's snapshot).
        snp: whether the guest is an SEV-SNP guest.
        validator: which tree's validator.

    Raises:
        InputTypeError: ``page`` is not a :class:`GhcbPage`.
    """
    require_page(page, "findings")
    spec = _SPECS[validator]
    if page.ghcb_usage != GHCB_DEFAULT_USAGE:
        yield Finding(
            "invalid-usage",
            GhcbErr.INVALID_USAGE,
            _OFFSET["ghcb_usage"],
            f"ghcb_usage is {page.ghcb_usage:#x}; KVM accepts only 0",
            spec,
        )
    valid = page.valid_bits
    code = page.exit_code
    yield from _missing(ALWAYS_REQUIRED, valid, code, spec)
    rule = _BY_INT[validator].get(code)
    if rule is None:
        yield Finding(
            "invalid-event",
            GhcbErr.INVALID_EVENT,
            _OFFSET["sw_exit_code"],
            f"sw_exit_code {int(code):#x} ({_known(code)}) is not an exit KVM accepts",
            spec,
        )
        return
    if rule.snp_only and not snp:
        yield Finding(
            "snp-only",
            GhcbErr.MISSING_INPUT,
            _OFFSET["sw_exit_code"],
            f"exit {_name(code)} is accepted only from an SEV-SNP guest",
            spec,
        )
    needed = set(rule.required)
    for cond in rule.when:
        if cond.applies(page):
            needed |= cond.require
    yield from _missing(needed, valid, code, spec)
    if rule.request_pages:
        for name in ("sw_exit_info_1", "sw_exit_info_2"):
            value = page.sw_exit_info_1 if name == "sw_exit_info_1" else page.sw_exit_info_2
            if value & _PAGE_MASK:
                yield Finding(
                    "request-page-unaligned",
                    GhcbErr.MISSING_INPUT,
                    _OFFSET[name],
                    f"{name} = {value:#x} is not a 4 KiB aligned page address",
                    spec,
                )
        if page.sw_exit_info_1 == page.sw_exit_info_2:
            yield Finding(
                "request-page-equal",
                GhcbErr.MISSING_INPUT,
                _OFFSET["sw_exit_info_2"],
                "request and response pages are the same page",
                spec,
            )


def _missing(
    names: frozenset[str] | set[str], valid: int, code: ExitCode | int, spec: str
) -> Iterator[Finding]:
    for name in sorted(names, key=_OFFSET.__getitem__):
        if not valid >> VALID_BIT[name] & 1:
            yield Finding(
                "missing-input",
                GhcbErr.MISSING_INPUT,
                _OFFSET[name],
                f"{name} is required for exit {_name(code)} but not marked valid",
                spec,
            )


def accepts(
    code: int,
    usage: int,
    bits: int,
    info1: int,
    info2: int,
    *,
    snp: bool = True,
    validator: Validator = Validator.CURRENT,
) -> bool:
    """The validator's fast accept: True when a page with these values passes every check of
    its exit's row and that row has no conditional rule (read through precomputed valid-bit
    masks); False means "ask :func:`findings`" (it may still be accepted)."""
    rule = _BY_INT[validator].get(code)
    if rule is None or rule.when or usage or (rule.snp_only and not snp):
        return False
    mask = _MASKS[validator][code]
    if bits & mask != mask:
        return False
    return not rule.request_pages or not (
        info1 & _PAGE_MASK or info2 & _PAGE_MASK or info1 == info2
    )


def first_error(
    page: GhcbPage, *, snp: bool = True, validator: Validator = Validator.CURRENT
) -> GhcbErr | None:
    """The ``GHCB_ERR_*`` KVM's validator answers for ``page``, or None if it accepts it.

    A page every check of its row passes is accepted without walking :func:`findings` (the
    same table, read through precomputed valid-bit masks); anything else is the first finding.
    """
    if accepts(
        page.sw_exit_code,
        page.ghcb_usage,
        page.valid_bits,
        page.sw_exit_info_1,
        page.sw_exit_info_2,
        snp=snp,
        validator=validator,
    ):
        return None
    first = next(findings(page, snp=snp, validator=validator), None)
    return None if first is None else first.reason


def required_inputs(
    page: GhcbPage, *, validator: Validator = Validator.CURRENT
) -> frozenset[str] | None:
    """The fields KVM requires to be valid for ``page``'s exit, or ``None`` if the exit code
    is not one KVM accepts (it would answer GHCB_ERR_INVALID_EVENT)."""
    require_page(page, "required_inputs")
    rule = _BY_INT[validator].get(page.sw_exit_code)
    if rule is None:
        return None
    needed = set(ALWAYS_REQUIRED | rule.required)
    for cond in rule.when:
        if cond.applies(page):
            needed |= cond.require
    return frozenset(needed)
