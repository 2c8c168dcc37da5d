"""``ghcb.hypervisor`` loads its names on first use (PEP 562), so ``import ghcb`` (the codecs,
the validator, the PSC answer) does not import the vCPU, the simulated firmware, the PKI or
``cryptography.x509``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import ghcb.hypervisor as hv

HEAVY = (
    "ghcb.hypervisor.vcpu",
    "ghcb.hypervisor.simfw",
    "ghcb.hypervisor.pki",
    "ghcb.hypervisor.store",
    "cryptography.x509",
)


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    return out.split(",") if out else []


def test_import_ghcb_stays_light() -> None:
    assert _loaded_after("import ghcb") == []
    assert _loaded_after("import ghcb.hypervisor") == []


def test_a_name_loads_its_module() -> None:
    assert _loaded_after("from ghcb.hypervisor import Vcpu") == ["ghcb.hypervisor.vcpu"]
    assert _loaded_after("import ghcb.certs as c; c.cert_names") == []


@pytest.mark.parametrize("name", hv.__all__)
def test_every_name_resolves_to_its_module(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each public name is the object its submodule defines, and listed by dir(); the first
    use goes through ``__getattr__`` (the name dropped from the package here, as in a fresh
    interpreter) and caches the object in the package."""
    source = next(mod for mod, names in hv._SOURCES.items() if name in names)
    want = getattr(importlib.import_module(source), name)
    monkeypatch.delitem(vars(hv), name, raising=False)
    assert getattr(hv, name) is want
    assert vars(hv)[name] is want
    assert name in dir(hv)


def test_table_is_all_and_unknown_names_fail() -> None:
    listed = [name for names in hv._SOURCES.values() for name in names]
    assert sorted(listed) == sorted(hv.__all__)
    assert len(listed) == len(set(listed))
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = hv.Nope
    from ghcb.hypervisor import devices  # submodules still import as attributes

    assert devices.__name__ == "ghcb.hypervisor.devices"
