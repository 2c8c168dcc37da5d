"""KVM's GHCB scratch-area rules as pure functions on page values — the one copy the reference
vCPU and :func:`ghcb.check_page` both use.

Source: Linux ``arch/x86/kvm/svm/sev.c`` (merged tree, ghcb-facts.md §5.2-§5.3):
``setup_vmgexit_scratch``, its callers in ``sev_handle_vmgexit`` (MMIO read/write, PSC) and
``sev_es_string_io`` (string IOIO, reached through ``io_interception`` in ``svm.c``). These run
in the exit *handler*, after ``sev_es_validate_vmgexit`` accepted the page and after KVM wrote
EXITINFO1 = EXITINFO2 = 0 (``svm_vmgexit_success(svm, 0)``), so a scratch failure is a
handler-time answer: ``svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_SCRATCH_AREA)``, i.e.
EXITINFO1 = 2, EXITINFO2 = 3. No other exit KVM accepts goes through the scratch area (the
guest requests read their pages by GPA; the v15 tree routes the same three exits). The rules,
in KVM's order, each quoted beside its check below.

Two trees (:class:`~ghcb.hypervisor.rules.Validator`): ``CURRENT`` is the merged tree, which
carries the May 2026 GHCB hardening series (Message-ID
``20260501202250.2115252-{2..6}-seanjc@google.com``: "Require in-GHCB scratch area if GHCB v2+ is
in use", "Ignore MMIO requests of length '0'", "Reject MMIO requests larger than 8 bytes with
GHCB v2+", "Ignore Port I/O requests of length '0'", PSC's minimum length = the header).
``V15`` is the seed tree before it: no zero-length, version or MMIO-size checks, PSC asks for
``exit_info_2`` bytes, and an in-GHCB area is exactly the requested length. The lists below are
the merged tree's; each check says where the v15 tree differs.

``scratch_use`` (the handler, before the scratch area):
  * MMIO: ``len = exit_info_2``; ``if (!len) return 1`` (no-op, 0/0); ``ghcb_version >= 2 &&
    len > 8`` -> GHCB_ERR_INVALID_INPUT; then ``setup_vmgexit_scratch(svm, !is_write, len)``
    (v15: neither early check).
  * IOIO: no size bit (EXITINFO1 bits 6:4 zero) -> no-op (v15: no such check); not a string ->
    no scratch; a string: ``exit_info_2 > INT_MAX`` or ``count * size`` overflowing an ``int``
    -> ``-EINVAL`` (KVM_RUN fails, both trees); ``!bytes`` -> no-op (v15: no such check);
    ``setup_vmgexit_scratch(svm, in, bytes)``.
  * PSC: ``setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr))`` (v15: ``exit_info_2``).

``setup_scratch`` (``setup_vmgexit_scratch``), every failure GHCB_ERR_INVALID_SCRATCH_AREA:
  1. ``min_len`` zero (``WARN_ON_ONCE(!min_len)``; no merged caller passes 0; v15: no check);
  2. ``sw_scratch`` zero ("scratch gpa not provided"; an invalid sw_scratch reads as 0);
  3. ``sw_scratch + min_len`` wraps past 2**64;
  4. the scratch begins in the GHCB page (``(scratch_gpa_beg & PAGE_MASK) == ghcb_gpa``): it
     must lie wholly in the shared buffer [GHCB+0x800, GHCB+0xFF0); the area KVM then uses is
     the rest of the buffer (``ghcb_sa_len = ghcb_scratch_end - scratch_gpa_beg``; v15: ``len``);
  5. outside the GHCB: refused when the VM's GHCB version is >= 2 (v15: allowed); else at most
     ``GHCB_SCRATCH_AREA_LIMIT`` (16 pages) and exactly ``min_len`` bytes, read from guest memory
     (a read failure is ``-EFAULT``: KVM_RUN fails — the caller's memory question, not a rule).

API (values are plain ints; ``ghcb_version`` is the VM's configured version, ``sev->ghcb_version``:
2 for every SNP VM, not the page's ``protocol_version``):

* :func:`setup_scratch` ``(sw_scratch, min_len, *, ghcb_gpa, ghcb_version, sync=False,
  validator=CURRENT)`` -> :class:`ScratchArea` ``(gpa, length, in_ghcb, sync)`` or
  :class:`ScratchError`.
* :func:`scratch_use` ``(exit_code, exit_info_1, exit_info_2, *, ghcb_version,
  validator=CURRENT)`` ->
  :class:`ScratchUse` ``(min_len, sync)``, :class:`HandlerStop` (the handler answers before
  the scratch area: a no-op, a bad input, or KVM_RUN failing) or ``None`` (the exit does not
  use the scratch area).
* :func:`scratch_outcome` ``(page, *, ghcb_gpa, ghcb_version, validator=CURRENT)``: both in
  one step for a page
  the validator accepted; ``ghcb_gpa=None`` takes the page holding ``sw_scratch`` as the GHCB
  (a captured page does not say where it lived).

Every :class:`ScratchError` and :class:`HandlerStop` carries ``code`` (the
:func:`ghcb.check_page` violation code), ``reason`` (the GHCB_ERR_* written to EXITINFO2, or
``None``), ``rule`` (which check), ``message``, ``offset`` (the page field it blames) and
``spec`` (the C line). Limits are in ``spec/tables/page.toml`` ``[kvm_scratch]``.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

from ghcb._fast import check_int
from ghcb.codes import ExitCode, GhcbErr
from ghcb.errors import InputTypeError
from ghcb.exitinfo import IoioInfo
from ghcb.hypervisor.rules import Validator
from ghcb.page import FIELDS, GhcbPage, require_page
from ghcb.schemas.page import PAGE_SIZE
from ghcb.schemas.psc import PSC_HDR_SIZE

__all__ = [
    "GHCB_SCRATCH_AREA_LIMIT",
    "INT_MAX",
    "MMIO_MAX_LEN_V2",
    "PSC_SCRATCH_MIN_LEN",
    "SCRATCH_IN_GHCB_VERSION",
    "SHARED_BUFFER_BEG",
    "SHARED_BUFFER_END",
    "SPEC_SCRATCH",
    "HandlerStop",
    "ScratchArea",
    "ScratchError",
    "ScratchUse",
    "StopKind",
    "scratch_outcome",
    "scratch_use",
    "setup_scratch",
]

SPEC_SCRATCH: Final = "Linux arch/x86/kvm/svm/sev.c setup_vmgexit_scratch"
_SPEC_HANDLER: Final = "Linux arch/x86/kvm/svm/sev.c sev_handle_vmgexit"
_SPEC_STRING_IO: Final = "Linux arch/x86/kvm/svm/sev.c sev_es_string_io"
_OFFSET: Final = {f.name: f.offset for f in FIELDS}
_ALL64: Final = (1 << 64) - 1
_PAGE_MASK: Final = _ALL64 & ~(PAGE_SIZE - 1)  # PAGE_MASK as a u64

#: ``#define GHCB_SCRATCH_AREA_LIMIT (16ULL * PAGE_SIZE)``: most bytes KVM copies in from a
#: scratch area outside the GHCB.
GHCB_SCRATCH_AREA_LIMIT: Final = 16 * PAGE_SIZE
#: ``offsetof(struct ghcb, shared_buffer)``: where an in-GHCB scratch area may begin.
SHARED_BUFFER_BEG: Final = _OFFSET["shared_buffer"]
#: ``offsetof(struct ghcb, reserved_0xff0)``: where an in-GHCB scratch area must end.
SHARED_BUFFER_END: Final = _OFFSET["reserved_0xff0"]
#: "GHCB v2 requires the scratch area to be within the GHCB":
#: ``if (to_kvm_sev_info(svm->vcpu.kvm)->ghcb_version >= 2) goto e_scratch;``
SCRATCH_IN_GHCB_VERSION: Final = 2
#: ``if (to_kvm_sev_info(vcpu->kvm)->ghcb_version >= 2 && len > 8)`` -> GHCB_ERR_INVALID_INPUT.
MMIO_MAX_LEN_V2: Final = 8
#: ``setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr))`` (sev-common.h ``struct psc_hdr``).
PSC_SCRATCH_MIN_LEN: Final = PSC_HDR_SIZE
#: ``if (svm->vmcb->control.exit_info_2 > INT_MAX) return -EINVAL;`` (and the ``int`` bytes).
INT_MAX: Final = (1 << 31) - 1

_MMIO: Final = frozenset({int(ExitCode.MMIO_READ), int(ExitCode.MMIO_WRITE)})


class ScratchArea(NamedTuple):
    """The scratch area KVM accepted: what the handler reads and writes."""

    gpa: int
    """``scratch_gpa_beg``: the guest's ``sw_scratch``."""
    length: int
    """``ghcb_sa_len``: in the GHCB, the rest of the shared buffer from ``gpa``; outside it,
    exactly ``min_len`` (the bytes KVM copies in, and back when ``sync``)."""
    in_ghcb: bool
    """The area lies in the GHCB's shared buffer (KVM works on the mapped page itself)."""
    sync: bool
    """Outside the GHCB: KVM writes the area back to guest memory before the next entry
    (``ghcb_sa_sync``: MMIO read, string IN, PSC); always False in the GHCB."""

    @property
    def offset(self) -> int | None:
        """Offset of the area in the GHCB page when ``in_ghcb``, else ``None``."""
        return self.gpa & (PAGE_SIZE - 1) if self.in_ghcb else None


class ScratchError(NamedTuple):
    """``setup_vmgexit_scratch`` refused the area: ``goto e_scratch``, EXITINFO1 = 2,
    EXITINFO2 = GHCB_ERR_INVALID_SCRATCH_AREA."""

    rule: str
    """Which check: ``zero-length``, ``no-gpa``, ``wraps``, ``outside-shared-buffer``,
    ``outside-ghcb-v2`` or ``too-large``."""
    message: str
    spec: str
    code: str = "invalid-scratch-area"
    reason: GhcbErr | None = GhcbErr.INVALID_SCRATCH_AREA
    offset: int = _OFFSET["sw_scratch"]


class StopKind(enum.Enum):
    """How a handler ends before the scratch area."""

    NO_OP = "no-op"
    """``return 1``: the guest resumes with EXITINFO1/2 = 0/0 as preset."""
    BAD_INPUT = "bad-input"
    """``svm_vmgexit_bad_input(svm, reason)``: EXITINFO1 = 2, EXITINFO2 = ``reason``."""
    RUN_FAILS = "run-fails"
    """``return -EINVAL``: KVM_RUN fails; the GHCB keeps EXITINFO1/2 = 0/0 as preset."""


class HandlerStop(NamedTuple):
    """The handler answers before it sets up the scratch area."""

    kind: StopKind
    rule: str
    """``mmio-zero-length``, ``mmio-length``, ``ioio-no-size``, ``ioio-zero-count``,
    ``ioio-count`` or ``ioio-overflow``."""
    message: str
    spec: str
    offset: int
    code: str | None = None
    """The :func:`ghcb.check_page` violation code, ``None`` for a no-op."""
    reason: GhcbErr | None = None


class ScratchUse(NamedTuple):
    """What the handler asks of the scratch area: ``setup_vmgexit_scratch(svm, sync,
    min_len)``."""

    min_len: int
    sync: bool


def setup_scratch(
    sw_scratch: int,
    min_len: int,
    *,
    ghcb_gpa: int,
    ghcb_version: int,
    sync: bool = False,
    validator: Validator = Validator.CURRENT,
) -> ScratchArea | ScratchError:
    """``setup_vmgexit_scratch``: the accepted area, or why KVM answers INVALID_SCRATCH_AREA.

    Args:
        sw_scratch: ``svm->sev_es.sw_scratch`` (the page's value if valid, else 0).
        min_len: the bytes the handler needs (:class:`ScratchUse`).
        ghcb_gpa: the GHCB's GPA (``control->ghcb_gpa``, page aligned).
        ghcb_version: the VM's GHCB protocol version (``sev->ghcb_version``).
        sync: copy an outside area back to guest memory (``ghcb_sa_sync``).
        validator: which tree (module docstring).

    Raises:
        InputTypeError: a value is not an int, ``validator`` not a Validator.
        FieldValueError: a value is not a u64.
    """
    _u64s(sw_scratch=sw_scratch, min_len=min_len, ghcb_gpa=ghcb_gpa, ghcb_version=ghcb_version)
    merged = _tree(validator) is Validator.CURRENT
    # "if (WARN_ON_ONCE(!min_len)) goto e_scratch;" (merged only)
    if merged and not min_len:
        return ScratchError("zero-length", "scratch length 0 (KVM warns)", SPEC_SCRATCH)
    # "if (!scratch_gpa_beg) { pr_err("vmgexit: scratch gpa not provided\n"); goto e_scratch;"
    if not sw_scratch:
        return ScratchError("no-gpa", "sw_scratch is 0: scratch GPA not provided", SPEC_SCRATCH)
    # "scratch_gpa_end = scratch_gpa_beg + min_len; if (scratch_gpa_end < scratch_gpa_beg)"
    end = (sw_scratch + min_len) & _ALL64
    if end < sw_scratch:
        return ScratchError(
            "wraps",
            f"sw_scratch {sw_scratch:#x} + length {min_len:#x} wraps past 2**64",
            SPEC_SCRATCH,
        )
    # "if ((scratch_gpa_beg & PAGE_MASK) == control->ghcb_gpa) { /* within GHCB */"
    if sw_scratch & _PAGE_MASK == ghcb_gpa:
        beg, stop = ghcb_gpa + SHARED_BUFFER_BEG, ghcb_gpa + SHARED_BUFFER_END
        # "if (scratch_gpa_beg < ghcb_scratch_beg || scratch_gpa_end > ghcb_scratch_end)"
        if sw_scratch < beg or end > stop:
            return ScratchError(
                "outside-shared-buffer",
                f"scratch [{sw_scratch:#x}, {end:#x}) is in the GHCB page but not inside its "
                f"shared buffer [{beg:#x}, {stop:#x})",
                SPEC_SCRATCH,
            )
        # "svm->sev_es.ghcb_sa_len = ghcb_scratch_end - scratch_gpa_beg;" (v15: "= len")
        length = stop - sw_scratch if merged else min_len
        return ScratchArea(sw_scratch, length, in_ghcb=True, sync=False)
    # "if (to_kvm_sev_info(svm->vcpu.kvm)->ghcb_version >= 2) goto e_scratch;" (merged only)
    if merged and ghcb_version >= SCRATCH_IN_GHCB_VERSION:
        return ScratchError(
            "outside-ghcb-v2",
            f"sw_scratch {sw_scratch:#x} is outside the GHCB page {ghcb_gpa:#x}; "
            f"GHCB v{ghcb_version} requires the scratch area in the GHCB",
            SPEC_SCRATCH,
        )
    # "if (min_len > GHCB_SCRATCH_AREA_LIMIT)"
    if min_len > GHCB_SCRATCH_AREA_LIMIT:
        return ScratchError(
            "too-large",
            f"scratch length {min_len:#x} exceeds KVM's limit {GHCB_SCRATCH_AREA_LIMIT:#x}",
            SPEC_SCRATCH,
        )
    # "svm->sev_es.ghcb_sa_sync = sync; ... svm->sev_es.ghcb_sa_len = min_len;"
    return ScratchArea(sw_scratch, min_len, in_ghcb=False, sync=sync)


def _u64s(**values: object) -> None:
    """Each value a u64 (the C's types), else a typed error naming it."""
    for name, value in values.items():
        check_int(value, _ALL64, name, SPEC_SCRATCH)


def _tree(validator: object) -> Validator:
    if not isinstance(validator, Validator):
        raise InputTypeError(
            f"validator must be a Validator, not {validator!r}",
            rule="input-type",
            spec=SPEC_SCRATCH,
        )
    return validator


def _stop(
    kind: StopKind,
    rule: str,
    message: str,
    spec: str,
    field: str,
    code: str | None = None,
    reason: GhcbErr | None = None,
) -> HandlerStop:
    return HandlerStop(kind, rule, message, spec, _OFFSET[field], code, reason)


def scratch_use(
    exit_code: int,
    exit_info_1: int,
    exit_info_2: int,
    *,
    ghcb_version: int,
    validator: Validator = Validator.CURRENT,
) -> ScratchUse | HandlerStop | None:
    """What an accepted exit's handler does before or with the scratch area.

    Returns:
        :class:`ScratchUse` for ``setup_vmgexit_scratch``; :class:`HandlerStop` when the
        handler answers first; ``None`` when the exit does not use the scratch area.

    Raises:
        InputTypeError: a value is not an int, ``validator`` not a Validator.
        FieldValueError: a value is not a u64.
    """
    _u64s(
        exit_code=exit_code,
        exit_info_1=exit_info_1,
        exit_info_2=exit_info_2,
        ghcb_version=ghcb_version,
    )
    merged = _tree(validator) is Validator.CURRENT
    if exit_code in _MMIO:
        # v15: "ret = setup_vmgexit_scratch(svm, !is_write, control->exit_info_2);"
        if not merged:
            return ScratchUse(exit_info_2, sync=exit_code == ExitCode.MMIO_READ)
        # "u64 len = control->exit_info_2; if (!len) return 1;"
        if not exit_info_2:
            return _stop(
                StopKind.NO_OP,
                "mmio-zero-length",
                "MMIO length 0: no access",
                _SPEC_HANDLER,
                "sw_exit_info_2",
            )
        # "if (to_kvm_sev_info(vcpu->kvm)->ghcb_version >= 2 && len > 8)"
        if ghcb_version >= SCRATCH_IN_GHCB_VERSION and exit_info_2 > MMIO_MAX_LEN_V2:
            return _stop(
                StopKind.BAD_INPUT,
                "mmio-length",
                f"MMIO length {exit_info_2:#x} exceeds {MMIO_MAX_LEN_V2} bytes (GHCB v2+)",
                _SPEC_HANDLER,
                "sw_exit_info_2",
                "mmio-length",
                GhcbErr.INVALID_INPUT,
            )
        # "ret = setup_vmgexit_scratch(svm, !is_write, len);"
        return ScratchUse(exit_info_2, sync=exit_code == ExitCode.MMIO_READ)
    if exit_code == ExitCode.PSC:
        # "setup_vmgexit_scratch(svm, true, sizeof(struct psc_hdr))"; v15: control->exit_info_2
        return ScratchUse(PSC_SCRATCH_MIN_LEN if merged else exit_info_2, sync=True)
    if exit_code == ExitCode.IOIO:
        return _ioio_use(exit_info_1, exit_info_2, merged)
    return None


def _ioio_use(exit_info_1: int, exit_info_2: int, merged: bool) -> ScratchUse | HandlerStop | None:
    info = IoioInfo.decode(exit_info_1)
    # "size = (io_info & SVM_IOIO_SIZE_MASK) >> SVM_IOIO_SIZE_SHIFT;" (bits 6:4 as a number)
    size = info.size8 | info.size16 << 1 | info.size32 << 2
    # sev_handle_vmgexit: "if (!((control->exit_info_1 & SVM_IOIO_SIZE_MASK) >> ...)) return 1;"
    # (merged only)
    if merged and not size:
        return _stop(
            StopKind.NO_OP,
            "ioio-no-size",
            "IOIO without an operand size: no access",
            _SPEC_HANDLER,
            "sw_exit_info_1",
        )
    # io_interception: "if (string) { if (is_sev_es_guest(vcpu)) return sev_es_string_io(...)"
    if not info.string:
        return None
    # "if (svm->vmcb->control.exit_info_2 > INT_MAX) return -EINVAL;"
    if exit_info_2 > INT_MAX:
        return _stop(
            StopKind.RUN_FAILS,
            "ioio-count",
            f"string IOIO count {exit_info_2:#x} exceeds INT_MAX: KVM_RUN fails (-EINVAL)",
            _SPEC_STRING_IO,
            "sw_exit_info_2",
            "invalid-scratch-area",
        )
    # "if (unlikely(check_mul_overflow(count, size, &bytes))) return -EINVAL;"
    nbytes = exit_info_2 * size
    if nbytes > INT_MAX:
        return _stop(
            StopKind.RUN_FAILS,
            "ioio-overflow",
            f"string IOIO count {exit_info_2:#x} x size {size} overflows an int: "
            "KVM_RUN fails (-EINVAL)",
            _SPEC_STRING_IO,
            "sw_exit_info_2",
            "invalid-scratch-area",
        )
    # "if (!bytes) return 1;" (merged only)
    if merged and not nbytes:
        return _stop(
            StopKind.NO_OP,
            "ioio-zero-count",
            "string IOIO count 0: no access",
            _SPEC_STRING_IO,
            "sw_exit_info_2",
        )
    # "r = setup_vmgexit_scratch(svm, in, bytes);"
    return ScratchUse(nbytes, sync=bool(info.type_in))


def scratch_outcome(
    page: GhcbPage,
    *,
    ghcb_gpa: int | None,
    ghcb_version: int,
    validator: Validator = Validator.CURRENT,
) -> ScratchArea | ScratchError | HandlerStop | None:
    """The scratch-area step of the handler for a page KVM's validator accepted.

    Args:
        page: the GHCB as the guest wrote it.
        ghcb_gpa: the GHCB's GPA; ``None`` takes the page holding ``sw_scratch`` as the GHCB.
        ghcb_version: the VM's GHCB protocol version.
        validator: which tree (module docstring).

    Returns:
        ``None`` if the exit does not use the scratch area; else :func:`scratch_use`'s stop, or
        :func:`setup_scratch`'s area or error.

    Raises:
        InputTypeError: ``page`` is not a :class:`~ghcb.page.GhcbPage`, a value not an int
            (``ghcb_gpa`` may be ``None``), ``validator`` not a Validator.
        FieldValueError: ``ghcb_gpa`` or ``ghcb_version`` is not a u64.
    """
    require_page(page, "scratch_outcome")
    if ghcb_gpa is not None:
        _u64s(ghcb_gpa=ghcb_gpa)
    use = scratch_use(
        page.sw_exit_code,
        page.sw_exit_info_1,
        page.sw_exit_info_2,
        ghcb_version=ghcb_version,
        validator=validator,
    )
    if not isinstance(use, ScratchUse):
        return use
    # sev_es_sync_from_ghcb: "svm->sev_es.sw_scratch = kvm_ghcb_get_sw_scratch_if_valid(svm);"
    scratch = page.get_if_valid("sw_scratch")
    gpa = scratch & _PAGE_MASK if ghcb_gpa is None else ghcb_gpa
    return setup_scratch(
        scratch,
        use.min_len,
        ghcb_gpa=gpa,
        ghcb_version=ghcb_version,
        sync=use.sync,
        validator=validator,
    )
