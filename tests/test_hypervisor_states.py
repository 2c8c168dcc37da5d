"""Any sequence of guest requests and userspace answers leaves the vCPU in a defined state,
and nothing but GhcbError escapes (h2's state x input exhaustiveness, as a Hypothesis
state machine)."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ghcb import ExitCode, GhcbError, GhcbPage, build_page
from ghcb.codes import Errno
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    CertsExit,
    GuestMemory,
    Interrupted,
    MergedAbi,
    RecordingFirmware,
    Resumed,
    RunFailed,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.schemas.page import PAGE_SIZE

GHCB, REQ, RESP, CERTS = 0x1000, 0x7F000, 0x7E000, 0x80000
GPAS = st.sampled_from(
    [REQ, RESP, CERTS, REQ, RESP, CERTS, 0, CERTS + 8, GHCB, 0xDEAD000, 2**64 - 4096]
)
CODES = st.sampled_from(
    [
        ExitCode.SNP_GUEST_REQUEST,
        ExitCode.SNP_EXT_GUEST_REQUEST,
        ExitCode.CPUID,
        ExitCode.RDTSC,
        ExitCode.SNP_RUN_VMPL,
        0x1234,
    ]
)
RETS = st.one_of(
    st.sampled_from([0, 1, 2, 1 << 31, Errno.ENOSPC, Errno.EAGAIN, Errno.EIO]),
    st.integers(min_value=0, max_value=2**32 - 1),
)


SEEN: set[str] = set()


class VcpuMachine(RuleBasedStateMachine):
    """A guest that writes arbitrary GHCBs and a VMM that answers arbitrarily."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = GuestMemory()
        for gpa in (GHCB, REQ, RESP):
            self.memory.map(gpa)
        self.memory.map(CERTS, 2)
        self.firmware = RecordingFirmware()
        self.vcpu: Vcpu | None = None
        self.exit: CertsExit | None = None  # a CertsExit whose callback is pending
        self.mapped = False  # the GHCB stays mapped: the next KVM_RUN enters the guest
        self.results: list[Any] = []

    @rule(
        abi=st.sampled_from([None, MergedAbi(), V15Abi(), MergedAbi(exit_reason=42)]),
        snp=st.booleans(),
    )
    @precondition(lambda self: self.vcpu is None)
    def boot(self, abi: Any, snp: bool) -> None:
        self.vcpu = Vcpu(Vm(self.firmware, snp=snp, cert_abi=abi), self.memory, GHCB)

    @rule(
        code=CODES,
        info1=GPAS,
        info2=GPAS,
        rax=GPAS,
        rbx=st.integers(0, 2**64 - 1),
        usage=st.sampled_from([0, 0, 1]),
        bits=st.booleans(),
        msg_type=st.integers(0, 255),
        private=st.sampled_from([None, REQ, RESP, CERTS, GHCB]),
    )
    def guest_writes(
        self,
        code: int,
        info1: int,
        info2: int,
        rax: int,
        rbx: int,
        usage: int,
        bits: bool,
        msg_type: int,
        private: int | None,
    ) -> None:
        for gpa in (GHCB, REQ, RESP, CERTS):
            self.memory.set_shared(gpa, shared=True)
        page = GhcbPage.empty().with_fields(
            sw_exit_code=code, sw_exit_info_1=info1, sw_exit_info_2=info2, rax=rax, rbx=rbx, rcx=0
        )
        if not bits:
            page = page.cleared_bitmap()
        page = page.replace(ghcb_usage=usage, protocol_version=2)
        self.memory.guest_write(GHCB, build_page(page))
        self.memory.guest_write(REQ + 0x34, bytes([msg_type]))
        if private is not None:
            self.memory.set_shared(private, shared=False)

    @rule(
        code=st.sampled_from(
            [ExitCode.SNP_GUEST_REQUEST, ExitCode.SNP_EXT_GUEST_REQUEST, ExitCode.CPUID]
        ),
        rbx=st.sampled_from([0, 1, 2, 2**64 - 1]),
        msg_type=st.sampled_from([5, 3]),
        private=st.sampled_from([None, None, None, REQ, CERTS]),
    )
    def guest_writes_request(self, code: int, rbx: int, msg_type: int, private: int | None) -> None:
        """A well-formed request (CPUID: leaf 1 with RAX/RCX), sometimes with a private page,
        followed by KVM_RUN when the vCPU is ready for one."""
        self.guest_writes(
            code, REQ, RESP, CERTS if code != ExitCode.CPUID else 1, rbx, 0, True, msg_type, private
        )
        if self.vcpu is not None and self.exit is None and not self.mapped:
            self.run()

    @rule(immediate=st.sampled_from([0, 0, 0, 1]))
    @precondition(lambda self: self.vcpu is not None)
    def run(self, immediate: int = 0) -> None:
        assert self.vcpu is not None
        kvm_run = with_immediate_exit(self.vcpu.kvm_run, immediate)
        try:
            result = self.vcpu.run(kvm_run=kvm_run)
        except GhcbError:
            assert self.exit is not None  # only misuse: run() while an exit is outstanding
            return
        assert self.exit is None
        if immediate:  # wants_to_run is false: -EINTR, the guest does not run
            assert isinstance(result, Interrupted)
            assert (result.page is None) == (not self.mapped)
            return self.record(result, was_mapped=self.mapped)
        if self.mapped:  # KVM_RUN after a failure / -EINTR / DONE exit enters the guest
            assert isinstance(result, Resumed)
            assert result.page is not None
        self.record(result)

    @rule(
        ret=RETS,
        npages=st.integers(0, 2**64 - 1),
        flags=st.integers(0, 255),
        immediate=st.integers(0, 1),
        garbage=st.booleans(),
    )
    @precondition(lambda self: self.vcpu is not None)
    def userspace_answers(
        self, ret: int, npages: int, flags: int, immediate: int, garbage: bool
    ) -> None:
        assert self.vcpu is not None
        abi = self.vcpu.vm.abi
        if self.exit is None:
            kvm_run = with_immediate_exit(self.vcpu.kvm_run, immediate)
        elif garbage:
            kvm_run = bytes(KVM_RUN_SIZE - 1)
        else:
            _, body = decode_kvm_run(abi, self.exit.kvm_run)
            fields = {**body, "ret": ret, abi.npages_field: npages}
            if "flags" in fields:
                fields["flags"] = flags
            kvm_run = encode_kvm_run(abi, fields, immediate_exit=immediate)
        was_mapped = self.mapped
        try:
            result = self.vcpu.complete(kvm_run)
        except GhcbError:
            assert (self.exit is None and not self.mapped) or garbage
            return
        assert self.exit is not None or self.mapped
        self.exit = None
        self.record(result, was_mapped=was_mapped)

    def record(self, result: Any, *, was_mapped: bool = True) -> None:
        assert isinstance(result, Resumed | CertsExit | Interrupted | RunFailed | Unhandled)
        self.results.append(result)
        SEEN.add(type(result).__name__)
        # an -EINTR before any VMGEXIT (nothing mapped) leaves nothing mapped
        interrupted_mapped = isinstance(result, Interrupted) and (
            result.page is not None or was_mapped
        )
        self.mapped = (
            interrupted_mapped
            or isinstance(result, RunFailed)
            or (isinstance(result, CertsExit) and result.done)
        )
        if isinstance(result, CertsExit) and not result.done:
            self.exit = result
        if isinstance(result, Resumed | Interrupted) and result.page is not None:
            # what KVM wrote is in the host view of the GHCB (the guest's own view differs
            # only when it holds the page private)
            assert self.memory.host_read(GHCB, PAGE_SIZE) == build_page(result.page)
        if isinstance(result, Resumed) and result.page is not None:
            assert {"rax", "rbx", "rcx", "rdx"} <= result.page.valid_fields
        if isinstance(result, RunFailed):
            assert result.errno in (Errno.EINVAL, Errno.EIO, Errno.ETIMEDOUT)

    @invariant()
    def state_matches_outstanding_exit(self) -> None:
        if self.vcpu is not None:
            want = "await-certs" if self.exit is not None else "mapped" if self.mapped else "idle"
            assert self.vcpu.state.value == want


VcpuMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, derandomize=True, deadline=None
)
TestVcpuStateMachine = VcpuMachine.TestCase


def test_machine_reaches_every_outcome() -> None:
    """The state machine above is not vacuous: it produced every kind of result."""
    if not SEEN:
        TestVcpuStateMachine().runTest()
    assert {"Resumed", "CertsExit", "Interrupted", "RunFailed", "Unhandled"} <= SEEN
