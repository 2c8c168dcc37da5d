"""Hypothesis entry point: ``st.from_type(GhcbPage)`` and ``st.from_type(CertEntry)`` work in
any test once ghcb is installed (pyproject ``[project.entry-points.hypothesis]``)."""

from __future__ import annotations


def _hypothesis_setup_hook() -> None:
    from hypothesis import strategies as st

    from ghcb.certs import CertEntry
    from ghcb.page import GhcbPage
    from ghcb.strategies import cert_entries, pages

    st.register_type_strategy(GhcbPage, pages())
    st.register_type_strategy(CertEntry, cert_entries())
