"""pytest fixtures for testing a VMM, a guest driver or a parser against ghcb's reference.

Installing ghcb registers this module as a pytest plugin (``pytest11`` entry point ``ghcb``;
``-p no:ghcb`` turns it off), so a test asks for the fixtures by name:

* ``ghcb_product`` — the AMD product (``"Milan"``; parametrize it for ``"Genoa"``/``"Turin"``);
* ``ghcb_signer`` — the key that signs reports, ``"vcek"`` or ``"vlek"``;
* ``ghcb_abi`` — the certificate-exit ABI: ``MergedAbi()`` (``KVM_EXIT_SNP_REQ_CERTS``) by
  default; ``V15Abi()`` (the seed patch's ``KVM_EXIT_VMGEXIT``) or ``DisabledAbi()`` by
  indirect parametrization with their names (``"merged"``, ``"v15"``, ``"disabled"``), by
  direct parametrization with ABI objects, or for a whole run with ``--ghcb-abi=all``;
* ``ghcb_pki`` — the synthetic AMD chain of the product (:func:`ghcb.hypervisor.pki.chain`:
  ARK, ASK, ASVK, VCEK, VLEK and their keys), the one the firmware signs with;
* ``ghcb_cert_blob`` — the certificate table the host serves (ARK, ASK or ASVK, VCEK or VLEK);
* ``ghcb_hypervisor`` — a host (:class:`ghcb.demo.Host`): the reference vCPU (``.vcpu``) and
  VMM (``.vmm``, serving ``ghcb_cert_blob`` from ``.store``), the simulated SNP firmware
  (``.firmware``), a guest's memory (``.guest``), an injected clock (``.clock``) and every
  KVM_RUN result the VMM saw (``.events``);
* ``ghcb_guest`` — the guest's driver (:class:`ghcb.guest.SnpGuestDriver`, Linux
  ``sev-guest``'s request loop) wired to that host: ``get_report``, ``get_ext_report``.

Everything is built per test (the chain's keys are generated once per process, ~3 s the first
time), with nothing shared between tests but that cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import pytest

if TYPE_CHECKING:
    from ghcb.demo import Host
    from ghcb.guest import SnpGuestDriver
    from ghcb.hypervisor.kvm_abi import CertAbi
    from ghcb.hypervisor.pki import Chain

__all__ = [
    "ghcb_abi",
    "ghcb_cert_blob",
    "ghcb_guest",
    "ghcb_hypervisor",
    "ghcb_pki",
    "ghcb_product",
    "ghcb_signer",
]

#: The ABI a test gets unless it or ``--ghcb-abi`` asks for others: merged KVM's.
DEFAULT_ABI: Final = "merged"


def _abis() -> dict[str, CertAbi]:
    from ghcb.hypervisor.kvm_abi import DisabledAbi, MergedAbi, V15Abi

    return {abi.name: abi for abi in (MergedAbi(), V15Abi(), DisabledAbi())}


def _abi_names(option: str) -> list[str]:
    known = _abis()
    names = list(known) if option == "all" else [n.strip() for n in option.split(",")]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise pytest.UsageError(
            f"--ghcb-abi takes 'all' or names from {sorted(known)}, not {option!r}"
        )
    return names


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--ghcb-abi``: the ABIs every test that uses ``ghcb_abi`` runs under."""
    group = parser.getgroup("ghcb", "ghcb reference hypervisor fixtures")
    group.addoption(
        "--ghcb-abi",
        default=None,
        metavar="NAMES",
        help="run each test that uses ghcb_abi (and does not parametrize it) under these "
        "certificate-exit ABIs: comma-separated merged, v15, disabled, or all "
        f"(default: {DEFAULT_ABI})",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check ``--ghcb-abi`` once, before collection."""
    option = config.getoption("ghcb_abi", None)
    if option is not None:
        _abi_names(option)


def _parametrizes(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With ``--ghcb-abi``, parametrize every test that uses ``ghcb_abi`` but does not
    parametrize it itself."""
    option = metafunc.config.getoption("ghcb_abi", None)
    if option is None or "ghcb_abi" not in metafunc.fixturenames:
        return
    if _parametrizes(metafunc, "ghcb_abi"):
        return
    names = _abi_names(option)
    metafunc.parametrize("ghcb_abi", names, indirect=True, ids=names)


def _signer(value: str) -> Literal["vcek", "vlek"]:
    if value == "vcek":
        return "vcek"
    if value == "vlek":
        return "vlek"
    raise pytest.UsageError(f"ghcb_signer must be 'vcek' or 'vlek', not {value!r}")


@pytest.fixture
def ghcb_product() -> str:
    """The AMD product of the chain and the firmware: ``"Milan"`` (override or parametrize
    with ``"Genoa"`` or ``"Turin"``)."""
    return "Milan"


@pytest.fixture
def ghcb_signer() -> str:
    """The key the firmware signs reports with and whose chain the host serves: ``"vcek"``
    (or ``"vlek"``: VLEK, and the ASVK under the ASK GUID)."""
    return "vcek"


@pytest.fixture
def ghcb_abi(request: pytest.FixtureRequest) -> CertAbi:
    """The certificate-exit ABI of the host's KVM: an ABI object, or its name when
    parametrized indirectly (``merged``, ``v15``, ``disabled``); default ``MergedAbi()``."""
    from ghcb.hypervisor.kvm_abi import DisabledAbi, MergedAbi, V15Abi

    value = getattr(request, "param", DEFAULT_ABI)
    if isinstance(value, DisabledAbi | MergedAbi | V15Abi):
        return value
    abis = _abis()
    if value not in abis:
        raise pytest.UsageError(f"ghcb_abi: {value!r} is not one of {sorted(abis)}")
    return abis[value]


@pytest.fixture
def ghcb_pki(ghcb_product: str) -> Chain:
    """The synthetic AMD chain of ``ghcb_product`` (the firmware's: the same object)."""
    from ghcb.hypervisor.pki import chain

    return chain(ghcb_product)


@pytest.fixture
def ghcb_cert_blob(ghcb_pki: Chain, ghcb_signer: str) -> bytes:
    """The certificate table the host serves: ARK, ASK, VCEK (or ARK, ASVK, VLEK), in the
    canonical layout (:func:`ghcb.build_cert_table`)."""
    return ghcb_pki.cert_table(_signer(ghcb_signer))


@pytest.fixture
def ghcb_hypervisor(
    tmp_path_factory: pytest.TempPathFactory,
    ghcb_abi: CertAbi,
    ghcb_product: str,
    ghcb_signer: str,
    ghcb_cert_blob: bytes,
) -> Host:
    """A host running one guest: the reference vCPU and VMM for ``ghcb_abi``, the simulated
    firmware for ``ghcb_product`` signing with ``ghcb_signer``, and a certificate store
    holding ``ghcb_cert_blob`` (in a temporary directory of its own)."""
    from ghcb.demo import Host
    from ghcb.hypervisor.simfw import FirmwareConfig, SimulatedFirmware
    from ghcb.tcb import Product

    config = FirmwareConfig(product=Product(ghcb_product), signing_key=_signer(ghcb_signer))
    host = Host(tmp_path_factory.mktemp("ghcb"), ghcb_abi, SimulatedFirmware(config))
    host.store.update(ghcb_cert_blob)
    return host


@pytest.fixture
def ghcb_guest(ghcb_hypervisor: Host) -> SnpGuestDriver:
    """The guest's driver (Linux ``sev-guest``'s logic) on ``ghcb_hypervisor``, with the
    host's injected clock (BUSY retries take no time)."""
    return ghcb_hypervisor.driver
