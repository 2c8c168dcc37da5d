"""Any sequence of guest requests and userspace answers leaves the vCPU in a defined state,
and nothing but GhcbError escapes (h2's state x input exhaustiveness, as a Hypothesis
state machine)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ghcb import ExitCode, GhcbError, GhcbPage, build_page
from ghcb.codes import Errno, GhcbErr, HvResp, MsrCode, PscErr, PscOp
from ghcb.exitinfo import EventInjection
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    ApResetHold,
    CertsExit,
    CpuidTable,
    GuestMemory,
    Halted,
    Interrupted,
    MapGpaExit,
    MergedAbi,
    MsrTable,
    Platform,
    RecordingDevices,
    RecordingFirmware,
    Released,
    Resumed,
    RunFailed,
    Terminated,
    Unhandled,
    V15Abi,
    Vcpu,
    Vm,
    VmmAnswer,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.kvm_abi import MSG_TYPE_OFFSET, with_immediate_exit
from ghcb.hypervisor.psc import vmm_map_gpa_range, with_hypercall_ret
from ghcb.hypervisor.vcpu import _SPEC_MODEL
from ghcb.page import FIELDS
from ghcb.psc import PscEntry, build_psc, parse_psc
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


# -- a guest's whole protocol, at random (issue 11 item 5) ----------------------------------------
LIFE_GHCB, AP_GHCB, VMSA_GPA = 0x1000, 0x2000, 0x3000
DATA = [0x10000 + i * PAGE_SIZE for i in range(6)]
LIFE_PAGES = [LIFE_GHCB, AP_GHCB, VMSA_GPA, REQ, RESP, CERTS, CERTS + PAGE_SIZE, *DATA]
MSR_CODES = st.sampled_from([*map(int, MsrCode), 0x003, 0x0FF, 0xFFF])
EVENT_CODES = st.sampled_from(
    [
        ExitCode.MMIO_READ,
        ExitCode.MMIO_WRITE,
        ExitCode.NMI_COMPLETE,
        ExitCode.AP_HLT_LOOP,
        ExitCode.AP_JUMP_TABLE,
        ExitCode.PSC,
        ExitCode.AP_CREATION,
        ExitCode.HV_FEATURES,
        ExitCode.TERM_REQUEST,
        ExitCode.UNSUPPORTED_EVENT,
        ExitCode.IOIO,
        ExitCode.CPUID,
        ExitCode.MSR,
        ExitCode.VMMCALL,
        ExitCode.WRITE_DR7,
        ExitCode.RDTSC,
        ExitCode.SNP_GUEST_REQUEST,
        ExitCode.SNP_EXT_GUEST_REQUEST,
        ExitCode.SAVIC,
    ]
)
SMALL = st.sampled_from([0, 1, 2, 3, 8, 9, 1 << 32 | 1, 1 << 32 | 2, 2**64 - 1])
SCRATCHES = st.sampled_from([0, LIFE_GHCB + 0x800, LIFE_GHCB + 0xFE8, LIFE_GHCB + 0x7F8, DATA[0]])
PSC_GFNS = st.sampled_from([p >> 12 for p in DATA] + [LIFE_GHCB >> 12, 0x200, 0x9999])
FEATURES = frozenset({0, 1})  # SVM_SEV_FEAT_SNP_ACTIVE or none
INFO_AT = next(f.offset for f in FIELDS if f.name == "sw_exit_info_1")  # then sw_exit_info_2
SHARED_BUFFER_AT = next(f.offset for f in FIELDS if f.name == "shared_buffer")
PROTOCOL_SEEN: set[str] = set()  # result kinds and "kept" (a page state checked)


def _psc_pages(entry: PscEntry) -> list[int]:
    return [entry.gfn * PAGE_SIZE + i * PAGE_SIZE for i in range(entry.npages)]


class GuestProtocolMachine(RuleBasedStateMachine):
    """A guest issuing random MSR requests, GHCB events (including page-state changes, AP
    creation, guest requests) and SIPIs, and a VMM answering every exit at random.

    Invariants: the host never changes what the guest reads from a private page (KVM writes
    only through the shared mapping); every EXITINFO pair the guest reads is one KVM can write
    for that exit code; every MSR answer is the request's response code or the request itself;
    the private/shared state of every page a page-state change reported done is what the guest
    asked for, in both views. Nothing but the results escapes run()/complete()/sipi().
    """

    def __init__(self) -> None:
        super().__init__()
        self.memory = GuestMemory()
        for gpa in LIFE_PAGES:
            self.memory.map(gpa, shared=gpa != VMSA_GPA)
        devices = RecordingDevices(mmio={0: b"\x01"}, ports={0x71: b"\x5a"})
        self.vm = Vm(
            RecordingFirmware(),
            cert_abi=MergedAbi(),
            platform=Platform(
                cpuid=CpuidTable({(1, 0): (1, 2, 3, 4)}),
                msrs=MsrTable({0x10: 5}),
                devices=devices,
            ),
        )
        self.bsp = Vcpu(self.vm, self.memory, 0)
        self.ap = Vcpu(self.vm, self.memory, AP_GHCB, vcpu_id=1, runnable=False)
        self.expected: dict[int, bool] = {}  # page -> shared, as the guest was told
        self.steps = 0

    # -- the VMM -----------------------------------------------------------------------------
    def host(self, vcpu: Vcpu, data: Any, gpa: int | None) -> Any:
        """KVM_RUN until the guest runs again (or blocks / is terminated / unhandled), the
        VMM answering at random; private bytes are checked across the whole host step."""
        before = self.private_view()
        result = vcpu.run(gpa=gpa)
        for _ in range(64):
            PROTOCOL_SEEN.add(type(result).__name__)
            if isinstance(result, MapGpaExit):
                if data.draw(st.booleans(), label="vmm converts"):
                    ret = vmm_map_gpa_range(self.memory, result.kvm_run)
                else:
                    ret = data.draw(st.integers(1, 2**64 - 1), label="vmm ret")
                run = with_hypercall_ret(result.kvm_run, ret)
                run = with_immediate_exit(run, data.draw(st.sampled_from([0, 0, 1])))
                result = vcpu.complete(run)
            elif isinstance(result, CertsExit):
                answer = data.draw(st.sampled_from(list(VmmAnswer)), label="certs answer")
                result = vcpu.complete(
                    self.vm.abi.reply(result.kvm_run, answer, npages=9, hold=False)
                )
            elif isinstance(result, Interrupted | RunFailed | Terminated | Released):
                result = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0))
            else:
                break
        after = self.private_view()
        for gpa, content in before.items():
            if gpa in after:  # still private: the host cannot have changed it
                assert after[gpa] == content, hex(gpa)
        return result

    def private_view(self) -> dict[int, bytes]:
        return {
            gpa: self.memory.guest_read(gpa, PAGE_SIZE)
            for gpa in LIFE_PAGES
            if not self.memory.is_shared(gpa)
        }

    # -- the guest ---------------------------------------------------------------------------
    @rule(code=MSR_CODES, high=st.integers(0, 2**52 - 1), data=st.data())
    @precondition(lambda self: self.bsp.state.value == "idle")
    def msr_request(self, code: int, high: int, data: Any) -> None:
        value = high << 12 | code
        if code == MsrCode.REG_GPA_REQ and high & 1:
            value = LIFE_GHCB | code  # mostly register the real GHCB
        if code == MsrCode.PSC_REQ:  # mostly private/shared of a page the guest has
            gfn = data.draw(PSC_GFNS, label="gfn")
            value = (high >> 40 & 0xFFF) % 4 << 52 | gfn << 12 | code
            self.expected.pop(gfn << 12, None)  # known again only from a PSC_RESP 0
        result = self.host(self.bsp, data, value)
        if isinstance(result, Resumed) and result.msr is not None:
            answer = result.msr & 0xFFF
            assert answer in (code, _MSR_RESPONSE.get(code, code)), (hex(value), hex(result.msr))
            if code == MsrCode.PSC_REQ:
                op = value >> 52 & 0xF
                gpa = (value >> 12 & (1 << 40) - 1) << 12
                if result.msr == MsrCode.PSC_RESP and self.memory.is_mapped(gpa):
                    self.expected[gpa] = op == PscOp.SHARED

    @rule(
        code=EVENT_CODES,
        info1=SMALL,
        info2=SMALL,
        rax=SMALL,
        scratch=SCRATCHES,
        fill=st.binary(max_size=16),
        data=st.data(),
    )
    @precondition(lambda self: self.bsp.state.value == "idle")
    def ghcb_event(
        self, code: int, info1: int, info2: int, rax: int, scratch: int, fill: bytes, data: Any
    ) -> None:
        if code in (ExitCode.SNP_GUEST_REQUEST, ExitCode.SNP_EXT_GUEST_REQUEST):
            info1, info2, rax = REQ, RESP, CERTS
            self.memory.guest_write(
                REQ + MSG_TYPE_OFFSET, bytes([data.draw(st.sampled_from([5, 3]))])
            )
        if code == ExitCode.AP_CREATION:
            info2 = data.draw(st.sampled_from([VMSA_GPA, 0x20_0000, VMSA_GPA + 8]))
            rax = data.draw(st.sampled_from(sorted(FEATURES)))
        if code == ExitCode.PSC:  # a descriptor of random bytes: the guest learns nothing
            self.expected.clear()
        fields = {"rax": rax, "rbx": 1, "rcx": 0x10, "rdx": 0, "cpl": 0, "sw_scratch": scratch}
        self.issue(code, info1, info2, fill, fields, data)

    @rule(
        entries=st.lists(
            st.builds(
                PscEntry,
                gfn=PSC_GFNS,
                operation=st.sampled_from([PscOp.PRIVATE, PscOp.SHARED]),
                pagesize=st.sampled_from([0, 0, 0, 1]),
                cur_page=st.sampled_from([0, 0, 0, 1]),
            ),
            min_size=1,
            max_size=5,
        ),
        data=st.data(),
    )
    @precondition(lambda self: self.bsp.state.value == "idle")
    def page_state_change(self, entries: list[PscEntry], data: Any) -> None:
        desc = build_psc(entries)
        for sent in entries:  # what the guest knows of these pages is what it reads back now
            for gpa in _psc_pages(sent):
                self.expected.pop(gpa, None)
        page = self.issue(ExitCode.PSC, 0, 0, desc, {"sw_scratch": LIFE_GHCB + 0x800}, data)
        if page is None:
            return
        # what the guest reads back (Linux reads data->hdr from its own GHCB): KVM's answer
        # when the GHCB is shared, its own bytes when it made the GHCB private
        done = parse_psc(self.memory.guest_read(LIFE_GHCB + SHARED_BUFFER_AT, len(desc)))
        for entry, sent in zip(done.entries, entries, strict=True):
            # an entry KVM marked done now (cur_page == npages, not before) after a
            # successful range, in KVM's order: its mapped pages are as the guest asked
            if entry.cur_page == entry.npages and sent.cur_page != sent.npages:
                for gpa in _psc_pages(entry):
                    if self.memory.is_mapped(gpa):
                        self.expected[gpa] = entry.operation == PscOp.SHARED

    def issue(
        self, code: int, info1: int, info2: int, fill: bytes, fields: dict[str, int], data: Any
    ) -> GhcbPage | None:
        """Write the GHCB as the guest sees it, VMGEXIT, check what the guest reads."""
        page = GhcbPage.empty().with_fields(
            sw_exit_code=code, sw_exit_info_1=info1, sw_exit_info_2=info2, **fields
        )
        page = page.replace(
            protocol_version=2, shared_buffer=fill.ljust(len(page.shared_buffer), b"\0")
        )
        self.memory.guest_write(LIFE_GHCB, build_page(page))
        registered = self.bsp.ghcb_gpa == LIFE_GHCB
        host_before = self.memory.host_read(LIFE_GHCB + INFO_AT, 16)
        result = self.host(self.bsp, data, LIFE_GHCB)
        if isinstance(result, ApResetHold):
            released = self.bsp.sipi()
            PROTOCOL_SEEN.add(type(released).__name__)
            assert released in (Released(first=True), Released(first=False))
            result = self.host(self.bsp, data, None)
        if not isinstance(result, Resumed) or result.page is None:
            return None
        got = result.page  # KVM's view: the GHCB's shared backing
        if not registered:  # KVM_RUN failed -EINVAL before any preset: nothing written there
            assert self.memory.host_read(LIFE_GHCB + INFO_AT, 16) == host_before
            return None
        well_formed(code, got.sw_exit_info_1, got.sw_exit_info_2, self.vm.hv_features)
        return got

    @rule(data=st.data())
    @precondition(lambda self: self.bsp.state.value == "idle" and self.bsp.ghcb_gpa != LIFE_GHCB)
    def register(self, data: Any) -> None:
        """``snp_register_ghcb_early``: what a guest does first."""
        assert self.host(self.bsp, data, LIFE_GHCB | MsrCode.REG_GPA_REQ) == Resumed(
            None, msr=LIFE_GHCB | MsrCode.REG_GPA_RESP
        )

    @rule(data=st.data())
    @precondition(lambda self: self.ap.state.value == "idle")
    def ap_runs(self, data: Any) -> None:
        result = self.host(self.ap, data, AP_GHCB | MsrCode.HV_FT_REQ)
        assert isinstance(result, Halted | Resumed), result

    @rule(data=st.data())
    @precondition(lambda self: self.bsp.state.value == "held")
    def sipi(self, data: Any) -> None:
        PROTOCOL_SEEN.add(type(self.bsp.sipi()).__name__)
        self.host(self.bsp, data, None)

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def page_states_agree(self) -> None:
        if self.expected:
            PROTOCOL_SEEN.add("kept")
        for gpa, shared in self.expected.items():
            assert self.memory.is_shared(gpa) == shared, hex(gpa)
            # the guest reads what the host reads exactly when the page is shared
            if shared:
                assert self.memory.guest_read(gpa, 64) == self.memory.host_read(gpa, 64)

    @invariant()
    def vcpus_settled(self) -> None:
        assert self.bsp.state.value in ("idle", "held")
        assert self.ap.state.value in ("idle", "held")


_MSR_RESPONSE: dict[int, int] = {
    MsrCode.SEV_INFO_REQ: MsrCode.SEV_INFO_RESP,
    MsrCode.CPUID_REQ: MsrCode.CPUID_RESP,
    MsrCode.AP_RESET_HOLD_REQ: MsrCode.AP_RESET_HOLD_RESP,
    MsrCode.PREF_GPA_REQ: MsrCode.PREF_GPA_RESP,
    MsrCode.REG_GPA_REQ: MsrCode.REG_GPA_RESP,
    MsrCode.PSC_REQ: MsrCode.PSC_RESP,
    MsrCode.HV_FT_REQ: MsrCode.HV_FT_RESP,
}
_GUEST_VMM_ERRORS = frozenset({0, 1, 2, 0xFFFFFFFF})


def well_formed(code: int, info1: int, info2: int, features: int) -> None:
    """EXITINFO1/2 as KVM can write them for ``code``."""
    assert info1 >> 32 == 0
    if info1 == HvResp.MALFORMED_INPUT:
        assert info2 in {int(e) for e in GhcbErr} - {GhcbErr.NOT_REGISTERED}
        return
    if info1 == HvResp.ISSUE_EXCEPTION:
        assert code == ExitCode.MSR
        assert EventInjection.decode(info2) == EventInjection(vector=13)
        return
    assert info1 == HvResp.NO_ACTION
    if code == ExitCode.HV_FEATURES:
        assert info2 == features
    elif code == ExitCode.PSC:
        assert info2 in {int(e) for e in PscErr}
    elif code in (ExitCode.SNP_GUEST_REQUEST, ExitCode.SNP_EXT_GUEST_REQUEST):
        assert info2 >> 32 in _GUEST_VMM_ERRORS
    elif code == ExitCode.AP_HLT_LOOP:
        assert info2 in (0, 1)
    elif code != ExitCode.AP_JUMP_TABLE:
        assert info2 == 0


GuestProtocolMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, derandomize=True, deadline=None
)
TestGuestProtocol = GuestProtocolMachine.TestCase


def test_protocol_machine_reaches_every_outcome() -> None:
    """The machine is not vacuous: it drew every kind of KVM_RUN result and checked the page
    states some page-state changes reported done ("kept")."""
    want = {
        "kept",
        "MapGpaExit",
        "CertsExit",
        "Terminated",
        "ApResetHold",
        "Released",
        "Halted",
        "RunFailed",
        "Unhandled",
        "Interrupted",
    }
    if not want <= PROTOCOL_SEEN:
        TestGuestProtocol().runTest()
    assert want <= PROTOCOL_SEEN


# -- the HELD state, directly ----------------------------------------------------------------------
def _held() -> tuple[Vcpu, GhcbPage]:
    """A vCPU in AP reset hold after an AP_HLT_LOOP (GHCB form); the GHCB as KVM left it
    mapped: the bitmap cleared, EXITINFO1/2 = 0 preset (valid)."""
    memory = GuestMemory()
    memory.map(GHCB)
    page = GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.AP_HLT_LOOP, sw_exit_info_1=0, sw_exit_info_2=0, rax=7
    )
    memory.guest_write(GHCB, build_page(page))
    vcpu = Vcpu(Vm(RecordingFirmware()), memory, GHCB)
    assert vcpu.run() == ApResetHold("ghcb")
    return vcpu, page.cleared_bitmap().with_fields(sw_exit_info_1=0, sw_exit_info_2=0)


def test_held_run_with_a_gpa_is_misuse() -> None:
    """A vCPU blocked in AP reset hold has no VMGEXIT to read a GHCB MSR value from: a run
    with ``gpa`` is caller misuse, raised before anything changes (still held)."""
    vcpu, _ = _held()
    with pytest.raises(HypervisorUsageError) as info:
        vcpu.run(gpa=GHCB)
    err = info.value
    assert (err.message, err.rule, err.spec) == (
        "the vCPU is in AP reset hold: this KVM_RUN takes no gpa",
        "vcpu-state",
        _SPEC_MODEL,
    )
    assert vcpu.run() == ApResetHold("ghcb")


def test_held_run_with_immediate_exit_is_interrupted() -> None:
    """KVM_RUN with immediate_exit while held: -EINTR with the GHCB as KVM left it mapped
    (no register written back: the guest is not entered); without it, still blocked."""
    vcpu, mapped = _held()
    interrupted = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 1))
    assert interrupted == Interrupted(mapped)
    assert vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0)) == ApResetHold("ghcb")
