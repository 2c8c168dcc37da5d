"""Extended guest requests through the handler and the VMM (test firmware, no crypto)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertEntry, CertGuid, ExitCode, GhcbPage, MsgType, build_cert_table, build_page
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
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import pathlib

pytestmark = pytest.mark.benchmark

GHCB, REQ, RESP, CERTS = 0x1000, 0x7F000, 0x7E000, 0x80000
ENTRIES = [
    CertEntry(CertGuid.ARK, b"\x01" * 1639),
    CertEntry(CertGuid.ASK, b"\x02" * 1677),
    CertEntry(CertGuid.VCEK, b"\x03" * 1350),
]


def _setup(tmp_path: pathlib.Path, abi: Any) -> tuple[Vmm, Vcpu, bytes, GuestMemory]:
    memory = GuestMemory()
    for gpa in (GHCB, REQ, RESP):
        memory.map(gpa)
    memory.map(CERTS, 4)
    request = bytearray(PAGE_SIZE)
    request[0x34] = MsgType.REPORT_REQ
    memory.guest_write(REQ, bytes(request))
    store = CertificateStore(tmp_path / "certs.blob")
    store.update(build_cert_table(ENTRIES))
    firmware = RecordingFirmware(respond=lambda r: (r, 0))
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), memory, GHCB)
    page = (
        GhcbPage.empty()
        .with_fields(
            sw_exit_code=ExitCode.SNP_EXT_GUEST_REQUEST,
            sw_exit_info_1=REQ,
            sw_exit_info_2=RESP,
            rax=CERTS,
            rbx=4,
        )
        .replace(protocol_version=2)
    )
    return Vmm(memory, store), vcpu, build_page(page), memory


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


def test_baseline_cert_table_build(benchmark: Any) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    assert len(benchmark(build_cert_table, ENTRIES)) == 4762
