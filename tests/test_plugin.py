"""The pytest plugin, exercised as an installed plugin is: pytester runs test files that only
name the fixtures (the plugin comes from the ``pytest11`` entry point), the README's example
among them."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest

from tests.helpers import ROOT

pytest_plugins = ["pytester"]

MARKER = "<!-- ghcb-example: pytest-plugin -->"


def readme_example() -> str:
    """The ```py block right after the marker in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(re.escape(MARKER) + r"\n```py\n(.*?)```", text, flags=re.S)
    assert match is not None, "README.md lost the pytest-plugin example"
    return match.group(1)


def test_entry_point_is_installed() -> None:
    """pytest finds the plugin through the pytest11 entry point named ghcb."""
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("ghcb") == "ghcb.pytest_plugin"


def test_readme_example_passes(pytester: pytest.Pytester) -> None:
    """The README's example, pasted into a test file, passes: the VMM's INVALID_LEN answer
    under both ABIs, and a report with certificates that verifies."""
    pytester.makepyfile(test_my_vmm=readme_example())
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*test_vmm_asks_for_more_pages?merged? PASSED*",
            "*test_vmm_asks_for_more_pages?v15? PASSED*",
            "*test_guest_gets_a_verifiable_report PASSED*",
        ]
    )


FIXTURES_TEST = """
from ghcb.certs import CertGuid, parse_cert_table
from ghcb.demo import Host
from ghcb.guest import SnpGuestDriver
from ghcb.hypervisor import MergedAbi
from ghcb.hypervisor.pki import Chain


def test_defaults(ghcb_product, ghcb_signer, ghcb_abi, ghcb_pki, ghcb_cert_blob,
                  ghcb_hypervisor, ghcb_guest):
    assert (ghcb_product, ghcb_signer, ghcb_abi) == ("Milan", "vcek", MergedAbi())
    assert isinstance(ghcb_pki, Chain) and ghcb_pki.product == "Milan"
    assert ghcb_cert_blob == ghcb_pki.cert_table()
    assert [e.kind for e in parse_cert_table(ghcb_cert_blob)] == [
        CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK]
    assert isinstance(ghcb_hypervisor, Host)
    assert ghcb_hypervisor.firmware.chain is ghcb_pki
    assert ghcb_hypervisor.abi is ghcb_abi
    assert ghcb_hypervisor.vcpu.vm.abi is ghcb_abi
    with ghcb_hypervisor.store.lease() as lease:
        assert lease.data == ghcb_cert_blob
    assert isinstance(ghcb_guest, SnpGuestDriver)
    assert ghcb_guest.guest is ghcb_hypervisor.guest


def test_fresh_host_per_test(ghcb_hypervisor, ghcb_guest):
    assert ghcb_guest.counter == 0
    ghcb_guest.get_report()
    assert ghcb_guest.counter == 2
"""


def test_fixtures(pytester: pytest.Pytester) -> None:
    """Each fixture is what it says, they are wired to each other, and nothing leaks from one
    test to the next (the second test's guest starts at sequence number 0 again)."""
    pytester.makepyfile(test_fixtures=FIXTURES_TEST, test_again=FIXTURES_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_vlek_signer(pytester: pytest.Pytester) -> None:
    """``ghcb_signer = "vlek"``: the host serves ARK, ASVK, VLEK and the firmware signs with
    the VLEK, which the report verifies against."""
    pytester.makepyfile(
        """
        import pytest
        from ghcb.certs import CertGuid, parse_cert_table
        from ghcb.report import verify_report

        @pytest.fixture
        def ghcb_signer():
            return "vlek"

        def test_vlek(ghcb_guest, ghcb_pki, ghcb_cert_blob):
            kinds = [e.kind for e in parse_cert_table(ghcb_cert_blob)]
            assert kinds == [CertGuid.ARK, CertGuid.ASK, CertGuid.VLEK]
            response, certs = ghcb_guest.get_ext_report(pages=2)
            assert certs[: len(ghcb_cert_blob)] == ghcb_cert_blob
            assert verify_report(response.report, ghcb_pki.vlek)
            assert not verify_report(response.report, ghcb_pki.vcek)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


ABI_TEST = """
import pytest
from ghcb.hypervisor import V15Abi

def test_any(ghcb_abi):
    assert ghcb_abi.name in ("merged", "v15", "disabled")

@pytest.mark.parametrize("ghcb_abi", [V15Abi()])
def test_pinned(ghcb_abi):
    assert ghcb_abi == V15Abi()

def test_without_abi():
    pass
"""


def test_ghcb_abi_option(pytester: pytest.Pytester) -> None:
    """``--ghcb-abi=all`` runs every test that uses ghcb_abi under each ABI (ids by name),
    leaves a test that parametrizes it itself alone, and a bad name is a usage error."""
    pytester.makepyfile(test_abis=ABI_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--ghcb-abi=all")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*test_any?merged? PASSED*", "*test_any?v15? PASSED*", "*test_any?disabled? PASSED*"]
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--ghcb-abi=v15,merged")
    result.assert_outcomes(passed=4)
    result = pytester.runpytest("-p", "no:cacheprovider", "--ghcb-abi=v16")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ghcb-abi takes 'all' or names from*'v16'*"])


def test_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    """``-p no:ghcb`` removes the fixtures."""
    pytester.makepyfile("def test_x(ghcb_pki):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:ghcb")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'ghcb_pki' not found*"])
