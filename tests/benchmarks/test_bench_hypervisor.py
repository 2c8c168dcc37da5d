"""Extended guest requests through the handler and the VMM (test firmware, no crypto)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertEntry, CertGuid, build_cert_table, parse_page
from ghcb.hypervisor import (
    CertificateStore,
    GuestMemory,
    MergedAbi,
    RecordingFirmware,
    V15Abi,
    Vcpu,
    Vm,
    Vmm,
)
from tests.helpers import GHCB, report_request_guest

if TYPE_CHECKING:
    import pathlib

pytestmark = pytest.mark.benchmark

ENTRIES = [
    CertEntry(CertGuid.ARK, b"\x01" * 1639),
    CertEntry(CertGuid.ASK, b"\x02" * 1677),
    CertEntry(CertGuid.VCEK, b"\x03" * 1350),
]


def _setup(tmp_path: pathlib.Path, abi: Any) -> tuple[Vmm, Vcpu, bytes, GuestMemory]:
    memory, ghcb = report_request_guest()
    store = CertificateStore(tmp_path / "certs.blob")
    store.update(build_cert_table(ENTRIES))
    firmware = RecordingFirmware(respond=lambda r: (r, 0))
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), memory, GHCB)
    return Vmm(memory, store), vcpu, ghcb, memory


@pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=["merged", "v15"])
def test_ext_guest_request(benchmark: Any, tmp_path: pathlib.Path, abi: Any) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    vmm, vcpu, ghcb, memory = _setup(tmp_path, abi)
    firmware = vcpu.vm.firmware

    def one() -> None:
        memory.guest_write(GHCB, ghcb)
        vmm.run(vcpu)
        firmware.requests.clear()  # type: ignore[attr-defined]

    benchmark.extra_info["requests_per_second"] = True  # printed by the conftest summary
    benchmark(one)
    answered = parse_page(memory.guest_read(GHCB, 4096))
    assert (answered.sw_exit_info_1, answered.sw_exit_info_2) == (0, 0)


def test_baseline_cert_table_build(benchmark: Any) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    assert len(benchmark(build_cert_table, ENTRIES)) == 4762
