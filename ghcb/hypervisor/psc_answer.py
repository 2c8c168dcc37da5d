"""What KVM answers a captured PSC descriptor: the engine run to its end, sans IO.

For a descriptor as it sits in a GHCB's shared buffer (``ghcb psc decode``'s question "what
would KVM do with this?"), :func:`kvm_psc_answer` places it in a scratch GHCB, runs
:class:`~ghcb.hypervisor.psc.GhcbPsc` (the merged or the v15 tree) and answers every
``KVM_HC_MAP_GPA_RANGE`` exit with the same ``hypercall.ret`` (0: userspace converts every
range), and reports the exits, SW_EXITINFO2 and the descriptor as KVM leaves it. At most
``VMGEXIT_PSC_MAX_COUNT`` exits: every exit completes at least one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ghcb._bytes import byte_string
from ghcb.codes import PscErr
from ghcb.errors import FieldValueError, LengthError
from ghcb.hypervisor.errors import HypervisorBug
from ghcb.hypervisor.memory import GuestMemory
from ghcb.hypervisor.psc import GhcbPsc, MapGpaRange, PscDone
from ghcb.hypervisor.rules import Validator
from ghcb.hypervisor.scratch import SHARED_BUFFER_BEG, SHARED_BUFFER_END
from ghcb.psc import PSC_MAX_BYTES
from ghcb.schemas.page import PAGE_SIZE

__all__ = ["PscAnswer", "PscExit", "kvm_psc_answer", "kvm_psc_answer_in_page"]

SPEC: Final = "Linux arch/x86/kvm/svm/sev.c snp_begin_psc"
_GHCB_GPA: Final = PAGE_SIZE  # where the scratch GHCB lives (any mapped page would do)


@dataclass(frozen=True, slots=True)
class PscExit:
    """One ``KVM_HC_MAP_GPA_RANGE`` exit: ``args[0..2]``."""

    gpa: int
    npages: int
    attributes: int


@dataclass(frozen=True, slots=True)
class PscAnswer:
    """KVM's whole answer: the exits in order, SW_EXITINFO2 (SW_EXITINFO1 is 0), the
    descriptor bytes afterwards, and the v15 tree's note when it ran past its buffer."""

    exits: tuple[PscExit, ...]
    exit_info_2: int
    descriptor: bytes
    undefined: str | None = None

    @property
    def error(self) -> PscErr | int:
        """SW_EXITINFO2 as a :class:`~ghcb.codes.PscErr`."""
        return PscErr.from_int(self.exit_info_2)


def kvm_psc_answer(
    data: object,
    *,
    offset: int = 0,
    ret: int = 0,
    validator: Validator = Validator.CURRENT,
) -> PscAnswer:
    """Run KVM's PSC handling over ``data`` placed at ``offset`` in a GHCB shared buffer.

    Args:
        data: the descriptor bytes (at most the rest of the shared buffer; bytes after them
            read as zeros).
        offset: where ``sw_scratch`` points, from the start of the shared buffer (0..2024).
        ret: the ``hypercall.ret`` userspace gives every exit (non-zero: KVM answers GENERIC
            after the first).
        validator: the KVM tree (``CURRENT`` or ``V15``; v15 sees the whole GHCB page).

    Raises:
        LengthError: ``data`` does not fit the shared buffer from ``offset``.
        FieldValueError: ``offset`` or ``ret`` out of range.
        InputTypeError: ``data`` is not bytes-like.
    """
    raw = byte_string(data, what="a PSC descriptor", spec=SPEC)
    if type(offset) is not int or not 0 <= offset <= PSC_MAX_BYTES - 8:
        raise FieldValueError(
            f"offset must be 0..{PSC_MAX_BYTES - 8} in the shared buffer, not {offset!r}",
            rule="field-range",
            spec=SPEC,
            field="offset",
        )
    if type(ret) is not int or not 0 <= ret < 1 << 64:
        raise FieldValueError(
            f"ret must be a u64, not {ret!r}", rule="field-range", spec=SPEC, field="ret"
        )
    if len(raw) > PSC_MAX_BYTES - offset:
        raise LengthError(
            f"{len(raw)} bytes do not fit the shared buffer from offset {offset}",
            rule="psc-too-long",
            spec=SPEC,
            offset=PSC_MAX_BYTES - offset,
        )
    memory = GuestMemory()
    memory.map(_GHCB_GPA)
    gpa = _GHCB_GPA + SHARED_BUFFER_BEG + offset
    if raw:
        memory.host_write(gpa, raw)
    return _run(memory, gpa, len(raw), ret, validator)


def kvm_psc_answer_in_page(
    page: bytes, offset: int, *, validator: Validator = Validator.CURRENT
) -> PscAnswer:
    """:func:`kvm_psc_answer` for a descriptor at ``offset`` in a whole GHCB page (what
    :func:`ghcb.check.expected_response` has): the v15 tree reads its entries past the shared
    buffer from the page's own tail, as KVM reads its mapping; every exit answered with 0.

    Raises:
        FieldValueError: ``page`` is not one page, or ``offset`` does not leave a PSC header
            inside the shared buffer.
    """
    if len(page) != PAGE_SIZE or not SHARED_BUFFER_BEG <= offset <= SHARED_BUFFER_END - 8:
        raise FieldValueError(
            f"need a {PAGE_SIZE}-byte page and a header offset in the shared buffer, not "
            f"{len(page)} bytes at {offset!r}",
            rule="field-range",
            spec=SPEC,
            field="offset",
        )
    memory = GuestMemory()
    memory.map(_GHCB_GPA)
    memory.host_write(_GHCB_GPA, page)
    gpa = _GHCB_GPA + offset
    return _run(memory, gpa, SHARED_BUFFER_END - offset, 0, validator)


def _run(memory: GuestMemory, gpa: int, size: int, ret: int, validator: Validator) -> PscAnswer:
    engine = GhcbPsc.in_ghcb(memory, _GHCB_GPA, gpa, validator=validator)
    exits: list[PscExit] = []
    step = engine.begin()
    while isinstance(step, MapGpaRange):
        exits.append(PscExit(step.gpa, step.npages, step.attributes))
        step = engine.complete(ret)
    if not isinstance(step, PscDone):  # pragma: no cover - a GHCB PSC ends in PscDone
        raise HypervisorBug(f"GHCB PSC ended in {step!r}")  # pragma: no mutate - unreachable
    after = memory.host_read(gpa, size)  # b"" for an empty descriptor
    return PscAnswer(tuple(exits), step.exit_info_2, after, step.undefined)
