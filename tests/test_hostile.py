"""Hostile certificate tables: every example triggers at least its labels, a strict parse fails
exactly when an error is reported, and every code of the checker has a mutation."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from hypothesis import given, settings

from ghcb import CertTableError, Severity, check_cert_table, parse_cert_table
from ghcb import certs as certs_module
from ghcb import strategies as gst
from ghcb._extras import MissingExtraError, raise_missing_extra
from ghcb.strategies import CERT_VIOLATION_CODES, ERROR_CODES, HostileCertTable

#: The codes and severities of the table in ghcb.certs' docstring.
DOCUMENTED = dict(
    re.findall(r"^``([a-z0-9-]+)``\s+(error|warning)\s", certs_module.__doc__ or "", re.M)
)


def test_every_documented_code_has_a_mutation() -> None:
    """The strategy knows exactly the codes ghcb.certs documents, and which are errors."""
    assert len(DOCUMENTED) == 13
    assert set(DOCUMENTED) == CERT_VIOLATION_CODES
    assert {c for c, sev in DOCUMENTED.items() if sev == "error"} == ERROR_CODES


def check_example(example: HostileCertTable) -> None:
    found = check_cert_table(example.data, limit_per_code=None)
    codes = {v.code for v in found}
    assert example.violations <= codes, example.mutation
    errors = {v.code for v in found if v.severity is Severity.ERROR}
    if errors:
        with pytest.raises(CertTableError) as e:
            parse_cert_table(example.data)
        assert e.value.rule in errors, example.mutation
    else:
        parse_cert_table(example.data)


@settings(max_examples=200)
@given(gst.hostile_cert_tables())
def test_hostile_tables_report_their_labels(example: HostileCertTable) -> None:
    """check_cert_table reports at least the labels; strict parse fails iff an error is
    reported (and then with one of the reported error codes)."""
    check_example(example)


@pytest.mark.parametrize("code", sorted(CERT_VIOLATION_CODES))
def test_each_code_on_its_own(code: str) -> None:
    """Aimed at one code, every example carries it (15 examples per code)."""

    @settings(max_examples=15)
    @given(gst.hostile_cert_tables(violations=[code]))
    def run(example: HostileCertTable) -> None:
        assert code in example.violations
        assert example.mutation.startswith(f"{code}: ")
        check_example(example)

    run()


def test_labels_are_exact_for_simple_examples() -> None:
    """The simplest example of a few codes, with its exact bytes' verdict."""
    wrap = gst.hostile_cert_tables(violations=["u32-wrap"])
    seen: list[HostileCertTable] = []

    @settings(max_examples=1, database=None)
    @given(wrap)
    def first(example: HostileCertTable) -> None:
        seen.append(example)

    first()
    (example,) = seen
    assert example.violations == {"u32-wrap", "out-of-bounds"}
    with pytest.raises(CertTableError) as e:
        parse_cert_table(example.data)
    assert e.value.rule == "u32-wrap"


def test_bad_arguments() -> None:
    """Unknown codes and an empty selection raise TypeError when the strategy is built."""
    with pytest.raises(TypeError, match="not-a-code"):
        gst.hostile_cert_tables(violations=["not-a-code"])
    with pytest.raises(TypeError):
        gst.hostile_cert_tables(violations=[])
    with pytest.raises(TypeError, match=r"\['u32-wrap'\]"):
        gst.hostile_cert_tables(violations="u32-wrap")


def test_missing_hypothesis_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without hypothesis, importing ghcb.strategies raises MissingExtraError (an ImportError)
    with the pip line, not a bare ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    for name in ("ghcb.strategies", "ghcb._hostile"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError) as e:
        importlib.import_module("ghcb.strategies")
    assert isinstance(e.value, ImportError)
    assert e.value.name == "hypothesis"
    assert e.value.extra == "hypothesis"
    assert str(e.value) == (
        "ghcb.strategies needs the 'hypothesis' package: pip install 'ghcb[hypothesis]'"
    )
    assert isinstance(e.value.__cause__, ModuleNotFoundError)


def test_other_missing_modules_are_not_disguised() -> None:
    """A missing module other than the extra's own package (say, one of hypothesis's own
    dependencies) is left to propagate as the ModuleNotFoundError it is."""
    raise_missing_extra(ModuleNotFoundError("x", name="attr"), extra="hypothesis", needed_by="t")
    with pytest.raises(MissingExtraError):
        raise_missing_extra(
            ModuleNotFoundError("x", name="hypothesis.strategies"),
            extra="hypothesis",
            needed_by="t",
        )
