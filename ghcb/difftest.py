"""Differential testing of another certificate-table parser against ghcb's verdict.

``ghcb difftest certs -- CMD ARGS...`` runs a foreign parser once per input, the table on its
stdin. It prints the entries as JSON, ``[{"guid": "...", "offset": n, "length": n}]``, and
exits 0 to accept, or exits non-zero to reject. In Python, :func:`cert_parser` wraps a
callable that returns the entries or raises to reject; :func:`command_parser` is the
subprocess form (bounded time per call, bounded output).

:func:`difftest` feeds the parser every golden vector (``spec/vectors/certs.json``: valid
tables from AMD's and the peers' tests, and the hostile ones of peers.md §4.4; the synthetic
Milan chain's table), the simplest
hostile table for each code of :func:`ghcb.check_cert_table`
(:func:`ghcb.strategies.hostile_cert_tables`), then generated tables, valid and hostile,
``max_examples`` per search. The reference is a strict :func:`ghcb.parse_cert_table`: it
accepts exactly the tables with no error finding and returns ``(guid, offset, length)`` per
entry. A disagreement is one of

* ``accepts-invalid`` — the parser accepts a table ghcb must reject;
* ``rejects-valid`` — the parser rejects a table ghcb accepts;
* ``different-entries`` — both accept, with different entries;
* ``parser-fault`` — the parser timed out, died by a signal or printed no entry list.

Each search asks hypothesis (``find``) for an input that disagrees in a way not seen yet —
a new kind, or a new first error (the rule a strict parse stops at) — and shrinks it, so
every class is reported once, minimised, with the violation codes that explain it. The
search is seeded (``seed``), so the same parser gives the same report.

Requires the hypothesis package (``pip install 'ghcb[hypothesis]'``). The command is in
:mod:`ghcb.cli._kit`.
"""

from __future__ import annotations

import functools
import random
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ghcb._difftest_parsers import (
    DEFAULT_TIMEOUT,
    CertParser,
    Verdict,
    cert_parser,
    command_parser,
)
from ghcb._extras import raise_missing_extra
from ghcb.certs import check_cert_table, located_entries
from ghcb.errors import CertTableError, Severity
from ghcb.vectors import cert_vectors

if TYPE_CHECKING:
    from pathlib import Path

    from hypothesis import strategies as st

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_TIMEOUT",
    "CertParser",
    "DiffReport",
    "Disagreement",
    "Verdict",
    "cert_parser",
    "command_parser",
    "difftest",
    "ghcb_verdict",
]

DEFAULT_MAX_EXAMPLES: Final = 100
#: Parser calls one search may spend shrinking a disagreement (then the smallest so far).
SHRINK_BUDGET: Final = 300
#: Searches for new kinds of disagreement (each class is reported once).
MAX_CLASSES: Final = 24
#: Bytes of an input shown in a report (its size and SHA-256 are always given).
SHOW_BYTES: Final = 4096
#: Codes whose tables are 16 KiB or more: fed once (the simplest hostile table), not generated.
_HUGE: Final = frozenset({"too-large", "too-many-entries"})


# -- comparing --------------------------------------------------------------------------------
def ghcb_verdict(data: bytes) -> Verdict:
    """The reference: a strict :func:`ghcb.parse_cert_table` (its first error in ``detail``)."""
    try:
        located = located_entries(data)
    except CertTableError as e:
        return Verdict(False, detail=e.rule)
    return Verdict(True, tuple((str(i.guid), i.offset, i.length) for i, _ in located))


def _kind(expected: Verdict, got: Verdict) -> str | None:
    if got.fault is not None:
        return "parser-fault"
    if expected.accepted and not got.accepted:
        return "rejects-valid"
    if got.accepted and not expected.accepted:
        return "accepts-invalid"
    if got.accepted and got.entries != expected.entries:
        return "different-entries"
    return None


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One input on which the parser and ghcb disagree.

    ``source`` names it (``golden:<vector>``, ``hostile:<code>``, ``generated``);
    ``violations`` are the codes :func:`ghcb.check_cert_table` reports for it, errors first:
    what makes ghcb reject it, or the warnings a parser may trip over.
    """

    kind: str
    source: str
    data: bytes
    violations: tuple[str, ...]
    expected: Verdict
    got: Verdict

    def to_json(self) -> dict[str, object]:
        """The disagreement as JSON (the input's hex cut at :data:`SHOW_BYTES` bytes)."""
        import hashlib

        return {
            "kind": self.kind,
            "source": self.source,
            "violations": list(self.violations),
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "hex": self.data[:SHOW_BYTES].hex(),
            "hex_truncated": len(self.data) > SHOW_BYTES,
            "ghcb": self.expected.to_json(),
            "parser": self.got.to_json(),
        }


def _explain(data: bytes) -> tuple[str, ...]:
    found = check_cert_table(data)
    errors = [v.code for v in found if v.severity is Severity.ERROR]
    warnings = [v.code for v in found if v.severity is not Severity.ERROR]
    return tuple(dict.fromkeys(errors + warnings))


@dataclass
class DiffReport:
    """What :func:`difftest` found: inputs fed per phase and every disagreement."""

    inputs: dict[str, int] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)
    calls: int = 0

    @property
    def ok(self) -> bool:
        """No disagreement."""
        return not self.disagreements

    def to_json(self) -> dict[str, object]:
        """The report as JSON (``ok``, ``inputs``, ``calls``, ``disagreements``)."""
        return {
            "ok": self.ok,
            "inputs": self.inputs,
            "calls": self.calls,
            "disagreement_count": len(self.disagreements),
            "disagreements": [d.to_json() for d in self.disagreements],
        }


#: What an input the parser was not asked about (the budget was spent) counts as: agreement.
_UNASKED: Final = (Verdict(True), Verdict(True), None)


class _Oracle:
    """The parser with a cache (hypothesis asks about the same bytes more than once) and a
    budget of calls: once spent, inputs it has not seen are answered "agrees" — the same
    answer on every later call, so a search stays consistent."""

    def __init__(self, parser: CertParser, report: DiffReport) -> None:
        self.parser = parser
        self.report = report
        self.cache: dict[bytes, tuple[Verdict, Verdict, str | None]] = {}
        self.budget: int | None = None

    def compare(self, data: bytes) -> tuple[Verdict, Verdict, str | None] | None:
        """``(ghcb's verdict, the parser's, kind of disagreement or None)``, or None when the
        budget is spent and ``data`` is new."""
        hit = self.cache.get(data)
        if hit is None:
            if self.budget is not None:
                if self.budget <= 0:
                    return None
                self.budget -= 1
            expected = ghcb_verdict(data)
            self.report.calls += 1
            got = self.parser(data)
            hit = (expected, got, _kind(expected, got))
            if len(self.cache) < 65536:
                self.cache[data] = hit
        return hit

    def disagreement(self, source: str, data: bytes) -> Disagreement | None:
        """The disagreement on ``data``, with the codes that explain it, or None."""
        expected, got, kind = self.compare(data) or _UNASKED
        if kind is None:
            return None
        return Disagreement(kind, source, data, _explain(data), expected, got)


def difftest(
    parser: CertParser,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = 0,
    spec: str | Path | None = None,
) -> DiffReport:
    """Compare ``parser`` with ghcb on the golden vectors, the simplest hostile table per
    violation code, and generated tables (see the module docstring).

    Args:
        parser: from :func:`cert_parser` or :func:`command_parser`.
        max_examples: generated inputs per search (0: golden and hostile vectors only).
        seed: the generator's seed (the same seed and parser give the same report).
        spec: the ``spec/`` folder with the golden vectors (:func:`ghcb.vectors.spec_dir`).

    Raises:
        MissingExtraError: hypothesis is not installed.
        VectorsUnavailable: no golden vectors.
        TypeError: bad arguments.
    """
    if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 0:
        raise TypeError(f"max_examples must be an int >= 0, not {max_examples!r}")
    hyp = _hypothesis()
    report = DiffReport()
    oracle = _Oracle(parser, report)
    golden = cert_vectors(spec)
    for vector in golden:
        found = oracle.disagreement(f"golden:{vector.name}", vector.data)
        if found is not None:
            report.disagreements.append(found)
    with warnings.catch_warnings():  # the repr of a 16 KiB example, which is never shown
        warnings.simplefilter("ignore", hyp.errors.HypothesisWarning)
        hostile = list(_simplest_hostile(hyp, seed))
    for code, data in hostile:
        found = oracle.disagreement(f"hostile:{code}", data)
        if found is not None:
            report.disagreements.append(found)
    report.inputs = {"golden": len(golden), "hostile": len(hostile), "generated": 0}
    if max_examples:
        before = report.calls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hyp.errors.HypothesisWarning)
            report.disagreements.extend(_search(hyp, oracle, max_examples, seed))
        report.inputs["generated"] = report.calls - before
    return report


def _hypothesis() -> Any:
    try:
        import hypothesis
    except ModuleNotFoundError as e:
        raise_missing_extra(e, extra="hypothesis", needed_by="ghcb difftest")
        raise
    return hypothesis


def _settings(hyp: Any, max_examples: int) -> Any:
    return hyp.settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(hyp.Phase.generate, hyp.Phase.shrink),  # no "explain": it re-runs the parser
        suppress_health_check=list(hyp.HealthCheck),
    )


@functools.lru_cache(maxsize=4)
def _simplest_hostile(hyp: Any, seed: int) -> list[tuple[str, bytes]]:
    """The minimal example of each code of :func:`ghcb.strategies.hostile_cert_tables`
    (computed once per process and seed: the search does not involve the parser)."""
    from ghcb.strategies import CERT_VIOLATION_CODES, hostile_cert_tables

    out = []
    for code in sorted(CERT_VIOLATION_CODES):
        example = hyp.find(
            hostile_cert_tables(violations=[code]),
            lambda _: True,
            settings=_settings(hyp, 1),
            random=random.Random(seed),
        )
        out.append((code, example.data))
    return out


def _tables(hyp: Any) -> st.SearchStrategy[bytes]:
    from ghcb.strategies import CERT_VIOLATION_CODES, cert_tables, hostile_cert_tables

    small = sorted(CERT_VIOLATION_CODES - _HUGE)
    strategies = hyp.strategies
    return strategies.one_of(  # type: ignore[no-any-return]
        cert_tables(max_size=4), hostile_cert_tables(violations=small).map(lambda h: h.data)
    )


def _signature(expected: Verdict, kind: str) -> tuple[str, str | None]:
    """A class of disagreement: its kind and the rule a strict parse stops at."""
    return kind, None if expected.accepted else expected.detail


def _search(hyp: Any, oracle: _Oracle, max_examples: int, seed: int) -> list[Disagreement]:
    """One ``find`` per new class of disagreement, each shrunk within :data:`SHRINK_BUDGET`
    parser calls after its search, until a search finds nothing new."""
    seen: set[tuple[str, str | None]] = set()
    found: list[Disagreement] = []
    tables = _tables(hyp)
    for _ in range(MAX_CLASSES):

        def new_class(data: bytes) -> bool:
            expected, _, kind = oracle.compare(data) or _UNASKED
            if kind is None or _signature(expected, kind) in seen:
                return False
            if oracle.budget is None:  # the first hit: from now on, shrinking
                oracle.budget = SHRINK_BUDGET
            return True

        oracle.budget = None
        try:
            data = hyp.find(
                tables,
                new_class,
                settings=_settings(hyp, max_examples),
                random=random.Random(seed + len(found)),
            )
        except hyp.errors.NoSuchExample:
            break
        finally:
            oracle.budget = None
        d = oracle.disagreement("generated", data)
        if d is None:  # pragma: no cover - find returns an input its condition accepted
            break
        seen.add(_signature(d.expected, d.kind))
        found.append(d)
    return found
