#!/usr/bin/env python3
"""Fuzz the reference hypervisor with hostile GHCBs and userspace answers.

Invariant: whatever a guest writes into its GHCB and request page, and whatever a VMM writes
into ``kvm_run``, the vCPU returns a result or raises ``ghcb.GhcbError`` — nothing else — and
a ``Resumed`` page is exactly what is in guest memory.

Input layout (so that seeds can be real pages): byte 0 = flags (bits 0-3: page i private,
bit 4: firmware fails, bit 5: not an SNP guest, bits 6-7: ABI 0 disabled / 1 merged /
2 v15), byte 1 = msg_type of the request, then 288 bytes of the VMM's ``kvm_run`` answer,
then the GHCB page (zero-padded to 4096 bytes).

Run: ./fuzz/fuzz_handler.py fuzz/corpus/handler -max_len=4400 -runs=100000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ghcb"]):
    from ghcb import GhcbError, build_page
    from ghcb.hypervisor import (
        KVM_RUN_SIZE,
        CertsExit,
        GuestMemory,
        MergedAbi,
        RecordingFirmware,
        Resumed,
        V15Abi,
        Vcpu,
        Vm,
    )

GHCB, REQ, RESP, CERTS = 0x1000, 0x7F000, 0x7E000, 0x80000
ABIS = [None, MergedAbi(), V15Abi(), MergedAbi(exit_reason=42)]
PAGE = 4096


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, msg_type = data[0], data[1]
    kvm_run = data[2 : 2 + KVM_RUN_SIZE].ljust(KVM_RUN_SIZE, b"\0")
    ghcb = data[2 + KVM_RUN_SIZE : 2 + KVM_RUN_SIZE + PAGE].ljust(PAGE, b"\0")
    memory = GuestMemory()
    for i, gpa in enumerate((GHCB, REQ, RESP, CERTS)):
        memory.map(gpa, shared=not flags >> i & 1)
    request = bytearray(PAGE)
    request[0x34] = msg_type
    memory.guest_write(REQ, bytes(request))
    memory.guest_write(GHCB, ghcb)
    vm = Vm(
        RecordingFirmware(fail=bool(flags & 0x10)), snp=not flags & 0x20, cert_abi=ABIS[flags >> 6]
    )
    vcpu = Vcpu(vm, memory, GHCB)
    try:
        result = vcpu.run()
        for _ in range(3):
            if not isinstance(result, CertsExit):
                break
            result = vcpu.complete(kvm_run)
    except GhcbError:
        return
    answered = isinstance(result, Resumed) and result.page is not None
    if answered and memory.guest_read(GHCB, PAGE) != build_page(result.page):
        raise AssertionError("the returned page is not what the guest sees")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
