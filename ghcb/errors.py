"""The ``ghcb`` error hierarchy and the ``Violation`` record.

Every failure on bad bytes or bad values raises a subclass of :class:`GhcbError`, which is
itself a :class:`ValueError`. Each error carries the ``field`` / ``offset`` / ``rule`` it is
about and the ``spec`` reference of the rule, so a caller (or a conformance report) can say
exactly what was wrong and where. Low-level exceptions (``struct.error``, construct's
``ConstructError``) are wrapped once, at the public boundary, with ``raise ... from e``.

Errors are split by cause:

* :class:`LengthError`: an input or a byte field has the wrong length.
* :class:`FieldValueError`: an integer is outside its field's width, or has the wrong type.
* :class:`UnknownFieldError`: a field name the structure does not have.
* :class:`NoValidBitError`: a valid-bitmap question about a field the bitmap cannot cover.
* :class:`InputTypeError`: the input is not bytes-like at all (also a ``TypeError``).
* :class:`CertTableError`: a certificate table breaks a rule (``rule`` is the violation code).

Not a ``GhcbError``: ``ghcb.MissingExtraError`` (an :class:`ImportError`, from
``ghcb._extras``), raised by a module that needs an install extra that is missing
(``ghcb.strategies``, ``ghcb.difftest`` without hypothesis); its message is the ``pip install``
line that fixes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CertTableError",
    "FieldValueError",
    "GhcbError",
    "InputTypeError",
    "LengthError",
    "NoValidBitError",
    "Severity",
    "UnknownFieldError",
    "Violation",
]


class GhcbError(ValueError):
    """Root of every error ``ghcb`` raises on bad input or misuse.

    Never raised directly: raise the subclass that names the cause.

    Attributes:
        message: what went wrong, in one sentence.
        field: the structure field concerned (dotted for nested structures), if any.
        offset: the byte offset concerned within the input, if any.
        rule: a short stable identifier of the rule broken (e.g. ``"page-length"``).
        spec: where the rule comes from (spec section or Linux header).
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        spec: str,
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        if type(self) is GhcbError:
            raise TypeError("GhcbError is abstract: raise one of its subclasses")
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.spec = spec
        self.field = field
        self.offset = offset

    def __str__(self) -> str:
        where = []
        if self.field is not None:
            where.append(f"field {self.field}")
        if self.offset is not None:
            where.append(f"offset {self.offset:#x}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.message}{loc} [rule {self.rule}; {self.spec}]"

    def __reduce__(self) -> tuple[object, ...]:  # keep errors picklable across processes
        return (
            _rebuild,
            (type(self), self.message, self.rule, self.spec, self.field, self.offset),
        )


def _rebuild(
    cls: type[GhcbError],
    message: str,
    rule: str,
    spec: str,
    field: str | None,
    offset: int | None,
) -> GhcbError:
    return cls(message, rule=rule, spec=spec, field=field, offset=offset)


class LengthError(GhcbError):
    """An input, or a fixed-size byte field, has the wrong length."""


class FieldValueError(GhcbError):
    """A value does not fit its field (out of range, negative, wrong type)."""


class UnknownFieldError(GhcbError):
    """A field name that the structure does not define."""


class NoValidBitError(GhcbError):
    """The field has no bit in the 128-bit GHCB valid bitmap (e.g. ``x87_state_gpa``)."""


class InputTypeError(GhcbError, TypeError):
    """The input is not bytes-like (or not an ``int`` where an integer is required)."""


class CertTableError(GhcbError):
    """A certificate table breaks a rule; ``rule`` is the ``check_cert_table`` code."""


class Severity(enum.StrEnum):
    """How bad a :class:`Violation` is."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One finding of a ``check_*`` function: a rule the input breaks.

    ``code`` is a stable, kebab-case identifier a test can assert on; ``offset`` is the byte
    offset within the checked input (``None`` when the finding is about the input as a
    whole); ``spec`` names the source of the rule.
    """

    code: str
    severity: Severity
    offset: int | None
    message: str
    spec: str

    def to_json(self) -> dict[str, object]:
        """The JSON object of the CLI contract (DESIGN.md §3)."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "offset": self.offset,
            "message": self.message,
            "spec": self.spec,
        }
