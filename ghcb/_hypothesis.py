"""Hypothesis entry point: ``st.from_type(GhcbPage)`` and ``st.from_type(CertEntry)`` work in
any test once ghcb is installed (pyproject ``[project.entry-points.hypothesis]``).

Hypothesis runs this hook while ``import hypothesis`` is still under way — possibly from
:mod:`ghcb.strategies`' own first import — so the strategies are looked up lazily
(``st.deferred``), on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from ghcb.certs import CertEntry
    from ghcb.page import GhcbPage


def _pages() -> st.SearchStrategy[GhcbPage]:
    from ghcb.strategies import pages

    return pages()


def _cert_entries() -> st.SearchStrategy[CertEntry]:
    from ghcb.strategies import cert_entries

    return cert_entries()


def _hypothesis_setup_hook() -> None:
    from hypothesis import strategies as st

    from ghcb.certs import CertEntry
    from ghcb.page import GhcbPage

    st.register_type_strategy(GhcbPage, st.deferred(_pages))
    st.register_type_strategy(CertEntry, st.deferred(_cert_entries))
