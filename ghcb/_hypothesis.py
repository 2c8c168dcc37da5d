"""Hypothesis entry point: ``st.from_type(GhcbPage)``, ``st.from_type(CertEntry)``,
``st.from_type(HostileCertTable)`` and ``st.from_type(KvmExit)`` work in any test once ghcb is
installed (pyproject ``[project.entry-points.hypothesis]``).

Hypothesis runs this hook while ``import hypothesis`` is still under way — possibly from
:mod:`ghcb.strategies`' own first import — so the strategies are looked up lazily
(``st.deferred``), on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from ghcb._samples import HostileCertTable, KvmExit
    from ghcb.certs import CertEntry
    from ghcb.page import GhcbPage


def _pages() -> st.SearchStrategy[GhcbPage]:
    from ghcb.strategies import pages

    return pages()


def _cert_entries() -> st.SearchStrategy[CertEntry]:
    from ghcb.strategies import cert_entries

    return cert_entries()


def _hostile() -> st.SearchStrategy[HostileCertTable]:
    from ghcb.strategies import hostile_cert_tables

    return hostile_cert_tables()


def _kvm_exits() -> st.SearchStrategy[KvmExit]:
    from ghcb.strategies import kvm_exits

    return kvm_exits()


def _hypothesis_setup_hook() -> None:
    from hypothesis import strategies as st

    from ghcb._samples import HostileCertTable, KvmExit
    from ghcb.certs import CertEntry
    from ghcb.page import GhcbPage

    st.register_type_strategy(GhcbPage, st.deferred(_pages))
    st.register_type_strategy(CertEntry, st.deferred(_cert_entries))
    st.register_type_strategy(HostileCertTable, st.deferred(_hostile))
    st.register_type_strategy(KvmExit, st.deferred(_kvm_exits))
