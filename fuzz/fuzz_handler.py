#!/usr/bin/env python3
"""Fuzz the reference hypervisor with hostile GHCBs and userspace answers.

Invariant: whatever a guest writes into its GHCB and request page, and whatever a VMM writes
into ``kvm_run``, the vCPU returns a result — the harness drives it only as the protocol allows,
so any exception is a leaked internal error (``HypervisorBug`` or worse), never the caller's —
and a ``Resumed`` / ``Interrupted`` page is exactly what KVM's mapping of the GHCB holds.

Input layout (so that seeds can be real pages): byte 0 = flags (bits 0-3: page i private,
bit 4: firmware fails, bit 5: not an SNP guest, bits 6-7: ABI 0 disabled / 1 merged /
2 v15 / 3 merged with an unknown exit reason), byte 1 = msg_type of the request, then 288
bytes of the VMM's ``kvm_run`` answer, then the GHCB page (zero-padded to 4096 bytes).

Run: ./fuzz/fuzz_handler.py NEW_DIR fuzz/corpus/handler -max_len=4400
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb import build_page
    from ghcb.guest import Guest
    from ghcb.hypervisor import (
        KVM_RUN_SIZE,
        CertsExit,
        Interrupted,
        MergedAbi,
        RecordingFirmware,
        Resumed,
        RunFailed,
        V15Abi,
        Vcpu,
        Vm,
    )
    from ghcb.hypervisor.kvm_abi import with_immediate_exit

ABIS = [None, MergedAbi(), V15Abi(), MergedAbi(exit_reason=42)]
PAGE = 4096


def check_one(data: bytes) -> None:
    """One guest exchange: the GHCB and flags from ``data``, the VMM's answer from it too."""
    if len(data) < 2:
        return
    flags, msg_type = data[0], data[1]
    kvm_run = data[2 : 2 + KVM_RUN_SIZE].ljust(KVM_RUN_SIZE, b"\0")
    ghcb = data[2 + KVM_RUN_SIZE : 2 + KVM_RUN_SIZE + PAGE].ljust(PAGE, b"\0")
    guest = Guest(msg_type=msg_type)
    layout, memory = guest.layout, guest.memory
    for i, gpa in enumerate((layout.ghcb, layout.request, layout.response, layout.certs)):
        memory.set_shared(gpa, shared=not flags >> i & 1)
    memory.guest_write(layout.ghcb, ghcb)
    vm = Vm(
        RecordingFirmware(fail=bool(flags & 0x10)), snp=not flags & 0x20, cert_abi=ABIS[flags >> 6]
    )
    vcpu = Vcpu(vm, memory, layout.ghcb)
    result = vcpu.run()
    for _ in range(4):  # at most: exit, DONE exit / -EINTR, enter the guest
        if isinstance(result, CertsExit):
            result = vcpu.complete(kvm_run)
        elif isinstance(result, Interrupted | RunFailed):
            result = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0))
        else:
            break
    page = result.page if isinstance(result, Resumed | Interrupted) else None
    if page is not None and memory.host_read(layout.ghcb, PAGE) != build_page(page):
        raise AssertionError("the returned page is not what KVM's mapping holds")


if __name__ == "__main__":
    fuzz(check_one)
