"""Fixtures: every codec test runs on both backends (ids "struct" and "construct")."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import providers as _providers

if TYPE_CHECKING:
    from ghcb.page import Backend

# "ci" (the default, what `make test` runs) is derandomized: the same examples every run, so a
# test never fails by chance; "dev" explores with fresh random examples.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=50)
# `make mutation`: as "ci", but mutmut runs the suite again and again in one process, so a
# @given method of a test class meets several instances (several executors).
settings.register_profile(
    "mutation",
    parent=settings.get_profile("ci"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Hypothesis (>= 6.131) also draws literals from the source of every *local* module imported so
# far, so a derandomized test drew other examples depending on which tests ran before it
# (test_rules.py before test_hypervisor_states.py lost the machine's CertsExit). The pool is
# frozen empty here: every test draws the same examples in any order or subset (mutmut runs
# subsets). Private API: if it moves, this does nothing and the order sensitivity returns.
if hasattr(_providers, "_get_local_constants") and hasattr(_providers, "_local_constants"):
    _providers._get_local_constants = lambda: _providers._local_constants


@pytest.fixture(params=["struct", "construct"], ids=["struct", "construct"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The codec backend under test."""
    return cast("Backend", request.param)


@pytest.fixture(scope="session")
def omne() -> object:
    """omne-attest (the ``interop`` extra): an independent SNP verifier with AMD's real Milan
    chain and a real report. ``make test`` sets GHCB_INTEROP=1, so there a missing package is
    a failure, not a skip."""
    if os.environ.get("GHCB_INTEROP") == "1":
        import omne_attest  # type: ignore[import-untyped]

        return omne_attest
    return pytest.importorskip("omne_attest")
