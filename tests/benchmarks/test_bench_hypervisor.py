"""Extended guest requests through the handler and the VMM (test firmware, no crypto), side by
side with the same job written with raw ``struct`` / ``os`` / ``fcntl`` calls over bytearrays
(``test_baseline_raw_ext_request``: the floor a Python model cannot go below). The raw job does
what the model does for a merged request: KVM's validation and presets, the exit, the VMM's
shared OFD lock, read, replaced-file check and blob compare, the certificate write, the
bounce-buffer guest request, the register write-back; it builds no typed results."""

from __future__ import annotations

import fcntl
import os
import struct
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertEntry, CertGuid, build_cert_table, build_page, parse_page
from ghcb.guest import Guest
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

if TYPE_CHECKING:
    import pathlib

pytestmark = pytest.mark.benchmark

ENTRIES = [
    CertEntry(CertGuid.ARK, b"\x01" * 1639),
    CertEntry(CertGuid.ASK, b"\x02" * 1677),
    CertEntry(CertGuid.VCEK, b"\x03" * 1350),
]
PAGE = 4096


def _setup(tmp_path: pathlib.Path, abi: Any) -> tuple[Vmm, Vcpu, bytes, GuestMemory, int]:
    guest = Guest()
    store = CertificateStore(tmp_path / "certs.blob", create=True)
    store.update(build_cert_table(ENTRIES))
    firmware = RecordingFirmware(respond=lambda r: (r, 0))
    vcpu = Vcpu(Vm(firmware, cert_abi=abi), guest.memory, guest.layout.ghcb)
    ghcb = build_page(guest.request_page())
    return Vmm(guest.memory, store), vcpu, ghcb, guest.memory, guest.layout.ghcb


@pytest.mark.parametrize("abi", [MergedAbi(), V15Abi()], ids=["merged", "v15"])
def test_ext_guest_request(benchmark: Any, tmp_path: pathlib.Path, abi: Any) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    vmm, vcpu, ghcb, memory, gpa = _setup(tmp_path, abi)
    firmware = vcpu.vm.firmware

    def one() -> None:
        memory.guest_write(gpa, ghcb)
        vmm.run(vcpu)
        firmware.requests.clear()  # type: ignore[attr-defined]

    benchmark.extra_info["requests_per_second"] = True  # printed by the conftest summary
    benchmark(one)
    answered = parse_page(memory.guest_read(gpa, PAGE))
    assert (answered.sw_exit_info_1, answered.sw_exit_info_2, answered.rbx) == (0, 0, 4)


# -- the raw floor -----------------------------------------------------------------------------
_Q = struct.Struct("<Q")
_QQQ = struct.Struct("<QQQ")
_FLOCK_SH = struct.pack("@hhxxxxqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
# Offsets of struct ghcb (ghcb-facts.md §1): rax 0x1F8, rbx 0x318, rcx 0x308, rdx 0x310,
# sw_exit_code/info1/info2 0x390/0x398/0x3A0, valid_bitmap 0x3F0, ghcb_usage 0xFFC.
_RAX, _RBX, _RCX, _RDX, _EXIT, _BITMAP, _USAGE = 0x1F8, 0x318, 0x308, 0x310, 0x390, 0x3F0, 0xFFC
_NEEDED = (1 << (_EXIT // 8)) | (1 << (_EXIT // 8 + 1)) | (1 << (_EXIT // 8 + 2))
_RAX_RBX = (1 << (_RAX // 8)) | (1 << (_RBX // 8))


def _bit(view: bytearray, offset: int) -> None:
    view[_BITMAP + offset // 64] |= 1 << (offset // 8 % 8)


def raw_ext_request(
    pages: dict[int, bytearray], ghcb_gpa: int, blob_path: str, cache: list[bytes]
) -> None:
    """KVM's and the VMM's work for one merged Extended Guest Request, written directly."""
    ghcb = pages[ghcb_gpa]
    bits = int.from_bytes(ghcb[_BITMAP : _BITMAP + 16], "little")
    code, info1, info2 = _QQQ.unpack_from(ghcb, _EXIT)
    rax = _Q.unpack_from(ghcb, _RAX)[0] if bits >> (_RAX // 8) & 1 else 0
    rbx = _Q.unpack_from(ghcb, _RBX)[0] if bits >> (_RBX // 8) & 1 else 0
    ghcb[_BITMAP : _BITMAP + 16] = bytes(16)
    if ghcb[_USAGE] or bits & _NEEDED != _NEEDED or code != 0x80000012:
        raise AssertionError
    if info1 & 0xFFF or info2 & 0xFFF or info1 == info2:
        raise AssertionError
    _QQQ.pack_into(ghcb, _EXIT + 8, 0, 0, 0)
    _bit(ghcb, _EXIT + 8)
    _bit(ghcb, _EXIT + 16)
    if pages[info1][0x34] != 5 or bits & _RAX_RBX != _RAX_RBX or rax & 0xFFF:
        raise AssertionError
    kvm_run = bytearray(288)
    struct.pack_into("<I", kvm_run, 8, 43)
    _QQQ.pack_into(kvm_run, 32, rax, rbx, 0)
    # the VMM: shared OFD lock, read, check against the last checked blob, write, hold
    gpa, npages, _ = _QQQ.unpack_from(kvm_run, 32)
    fd = os.open(blob_path, os.O_RDONLY)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK_SH)
    st = os.fstat(fd)
    blob = os.pread(fd, st.st_size + 1, 0)
    now = os.stat(blob_path)  # the store's check that the file was not replaced meanwhile
    if blob != cache[0] or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
        raise AssertionError
    if (len(blob) + PAGE - 1) // PAGE > npages:
        raise AssertionError
    for i in range(0, len(blob), PAGE):
        pages[gpa + i][: min(PAGE, len(blob) - i)] = blob[i : i + PAGE]
    kvm_run[1] = 1  # immediate_exit
    # KVM's completion: ret 0 → the guest request through a bounce buffer
    if _Q.unpack_from(kvm_run, 48)[0] != 0:
        raise AssertionError
    request = bytes(pages[info1])
    pages[info2][:] = request  # the test firmware echoes
    _Q.pack_into(ghcb, _EXIT + 16, 0)
    os.close(fd)  # -EINTR: the VMM drops the lock
    # entering the guest: RAX/RBX/RCX/RDX written back, valid
    for offset, value in ((_RAX, rax), (_RBX, rbx), (_RCX, 0), (_RDX, 0)):
        _Q.pack_into(ghcb, offset, value)
        _bit(ghcb, offset)


def test_baseline_raw_ext_request(benchmark: Any, tmp_path: pathlib.Path) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    guest = Guest()
    layout = guest.layout
    blob = build_cert_table(ENTRIES)
    path = str(tmp_path / "certs.blob")
    with open(path, "wb") as fh:
        fh.write(blob)
    pages = {
        gpa: bytearray(guest.memory.guest_read(gpa, PAGE))
        for gpa in (
            layout.ghcb,
            layout.request,
            layout.response,
            *(layout.certs + i * PAGE for i in range(layout.cert_pages)),
        )
    }
    ghcb = build_page(guest.request_page())

    def one() -> None:
        pages[layout.ghcb][:] = ghcb
        raw_ext_request(pages, layout.ghcb, path, [blob])

    benchmark(one)
    answered = parse_page(bytes(pages[layout.ghcb]))
    assert (answered.sw_exit_info_1, answered.sw_exit_info_2, answered.rbx) == (0, 0, 4)
    assert bytes(pages[layout.certs]) == blob[:PAGE]


def test_baseline_cert_table_build(benchmark: Any) -> None:
    benchmark.group = "hypervisor-ext-guest-request"
    assert len(benchmark(build_cert_table, ENTRIES)) == 4762
