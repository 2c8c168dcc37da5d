"""A Linux SEV-SNP guest's life on the reference hypervisor, first MSR write to termination.

Sources (Linux, each step's C quoted beside it): ``arch/x86/boot/startup/sev-shared.c`` /
``arch/x86/coco/sev/*`` — ``sev_es_negotiate_protocol``, ``get_hv_features``,
``early_set_pages_state`` (MSR page-state change), ``snp_register_ghcb_early``,
``__sev_cpuid_hv_msr``, ``vmgexit_psc`` / ``__set_pages_state`` (GHCB page-state change),
``wakeup_cpu_via_vmgexit`` (AP creation), ``sev_es_terminate``; the sev-guest driver for the
Extended Guest Request (:class:`ghcb.guest.SnpGuestDriver`, which shares its request,
response and certificate pages with ``set_memory_decrypted`` first).

The guest's memory starts private (as an SNP guest's ``guest_memfd`` does); the guest makes its
GHCB shared with the MSR protocol, registers it, then uses it. Every VMGEXIT goes through
:meth:`GuestLife.kvm_run`, which plays the VMM: KVM_RUN, then userspace's answer to each exit
(certificates through :meth:`~ghcb.hypervisor.vmm.Vmm.service`, ``KVM_HC_MAP_GPA_RANGE``
through :func:`~ghcb.hypervisor.psc.vmm_map_gpa_range`, -EINTR by KVM_RUN again) until the
guest runs again, is terminated or blocks. Each exchange is kept in :attr:`GuestLife.trace`.

When the guest's checks fail it does what Linux does: ``sev_es_terminate(set, reason)`` (the
MSR termination request), and :class:`GuestTerminated` is raised with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ghcb.codes import (
    ApCreationOp,
    ExitCode,
    GenTermReason,
    HvFeature,
    LinuxTermReason,
    MsrCode,
    PscOp,
    TermReasonSet,
)
from ghcb.errors import GhcbError
from ghcb.guest import Guest, GuestRequestError, SnpGuestDriver
from ghcb.hypervisor.events import SVM_SEV_FEAT_SNP_ACTIVE
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.hypervisor.psc import vmm_map_gpa_range, with_hypercall_ret
from ghcb.hypervisor.results import (
    ApResetHold,
    CertsExit,
    Halted,
    Interrupted,
    MapGpaExit,
    Resumed,
    RunFailed,
    RunResult,
    Terminated,
    Unhandled,
)
from ghcb.hypervisor.scratch import SHARED_BUFFER_BEG
from ghcb.hypervisor.vcpu import Vcpu
from ghcb.msr import (
    GHCB_MSR_INFO_MASK,
    CpuidReq,
    PscReq,
    RegGpaReq,
    TermReq,
    decode_msr,
    encode_msr,
)
from ghcb.page import GHCB_PROTOCOL_MAX, GHCB_PROTOCOL_MIN, GhcbPage, build_page, parse_page
from ghcb.psc import PscEntry, build_psc
from ghcb.schemas.page import PAGE_SIZE
from ghcb.schemas.psc import PSC_HDR_SIZE, VMGEXIT_PSC_MAX_ENTRY

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ghcb.guest_msg import ReportRsp
    from ghcb.hypervisor.vm import Vm
    from ghcb.hypervisor.vmm import Vmm

__all__ = ["AP_GHCB", "VMSA", "Exchange", "GuestLife", "GuestTerminated", "LifeResult"]

_SPEC: Final = "Linux arch/x86/boot/startup/sev-shared.c, arch/x86/coco/sev"
#: Where the AP's GHCB and VMSA live (the VMSA page must not be 2 MiB aligned: Linux's
#: ``snp_alloc_vmsa_page`` allocates two pages and uses the second for that reason).
AP_GHCB: Final = 0x2000
VMSA: Final = 0x3000
_U32: Final = 0xFFFFFFFF
_PSC_HDR: Final = PSC_HDR_SIZE


@dataclass(frozen=True, slots=True)
class Exchange:
    """One VMGEXIT as the guest saw it.

    ``via``: the MSR protocol (``code`` = GHCBInfo of the request, ``request`` = the MSR value,
    ``response`` = the MSR value the guest read back) or a GHCB (``code`` = SW_EXITCODE,
    ``request`` = SW_EXITINFO1 sent, ``response`` = SW_EXITINFO2 read back, ``exit_info_1`` =
    SW_EXITINFO1 read back). ``exits``: the userspace exits on the way, in order
    (``hypercall``, ``certs``, ``eintr``, ``run_failed``, ``system_event``,
    ``ap_reset_hold``, ``halted``, ``unhandled``). After a termination the guest reads
    nothing: ``response`` is the MSR value (or EXITINFO2) as it stood.
    """

    via: Literal["msr", "ghcb"]
    code: int
    request: int
    response: int
    exit_info_1: int | None = None
    vcpu: int = 0
    exits: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` trace entry."""
        doc: dict[str, Any] = {
            "via": self.via,
            "code": self.code,
            "response": self.response,
            "request": self.request,
            "vcpu": self.vcpu,
            "exits": list(self.exits),
        }
        if self.exit_info_1 is not None:
            doc["exit_info_1"] = self.exit_info_1
        return doc


class GuestTerminated(GhcbError):
    """The guest asked to be terminated (``sev_es_terminate``); ``result`` is KVM's exit."""

    def __init__(
        self, message: str, *, reason_set: int, reason_code: int, result: RunResult
    ) -> None:
        super().__init__(message, rule="guest-terminated", spec=_SPEC)
        self.reason_set = reason_set
        self.reason_code = reason_code
        self.result = result


def _check_terminated(result: RunResult, what: str) -> None:
    if isinstance(result, Terminated):
        raise GuestTerminated(
            f"terminated by {what}",
            reason_set=-1 if result.reason_set is None else result.reason_set,
            reason_code=-1 if result.reason_code is None else result.reason_code,
            result=result,
        )


_EXIT_NAMES: Final[dict[type, str]] = {
    CertsExit: "certs",
    MapGpaExit: "hypercall",
    Interrupted: "eintr",
    RunFailed: "run_failed",
    Terminated: "system_event",
    ApResetHold: "ap_reset_hold",
    Halted: "halted",
    Unhandled: "unhandled",
}


class GuestLife:
    """A Linux SNP guest with a BSP (vCPU 0, GHCB at the guest's layout) and one AP (vCPU 1,
    GHCB at :data:`AP_GHCB`, VMSA at :data:`VMSA`), on ``vm`` with ``vmm`` answering exits.

    Args:
        guest: the guest's memory and layout; its GHCB, request, response and certificate
            pages are made private first (the guest shares them as Linux does).
        vm: the VM (no vCPU yet).
        vmm: the VMM of ``guest.memory`` (certificates).
        vmpck: the VMPCK the sev-guest driver uses; ``clock``/``sleep`` its retry time.
    """

    def __init__(
        self,
        guest: Guest,
        vm: Vm,
        vmm: Vmm,
        vmpck: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.guest = guest
        self.memory = memory = guest.memory
        self.vmm = vmm
        layout = guest.layout
        for gpa in (AP_GHCB, VMSA):
            if not memory.is_mapped(gpa):
                memory.map(gpa, shared=False)
        self.private_pages = [layout.ghcb, layout.request, layout.response, AP_GHCB] + [
            layout.certs + i * PAGE_SIZE for i in range(layout.cert_pages)
        ]
        for gpa in self.private_pages:
            memory.set_shared(gpa, shared=False)
        self.bsp = Vcpu(vm, memory, 0, vcpu_id=0)
        self.ap = Vcpu(vm, memory, 0, vcpu_id=1, runnable=False)
        self.trace: list[Exchange] = []
        self.ghcb_version = 0
        self.hv_features = 0
        self.driver = SnpGuestDriver(guest, self._driver_vmgexit, vmpck, clock=clock, sleep=sleep)

    # -- the VMM's KVM_RUN loop -------------------------------------------------------------------
    def kvm_run(self, vcpu: Vcpu, gpa: int | None) -> tuple[RunResult, tuple[str, ...]]:
        """KVM_RUN for the guest's VMGEXIT with GHCB MSR value ``gpa`` (None: the vCPU is
        between exits), answering every userspace exit, until the guest runs again, is
        terminated, blocks or KVM has no handler; the final result and the exits seen."""
        exits: list[str] = []
        trace = self.vmm.trace
        result = vcpu.run(gpa=gpa)
        try:
            while True:
                answer: bytes | None = None
                if isinstance(result, CertsExit):
                    answer = self.vmm.service(vcpu.vm.abi, result)
                elif isinstance(result, MapGpaExit):
                    answer = with_hypercall_ret(
                        result.kvm_run, vmm_map_gpa_range(self.memory, result.kvm_run)
                    )
                if trace is not None:
                    trace(result, answer)
                name = _EXIT_NAMES.get(type(result))
                if name is not None:
                    exits.append(name)
                if answer is not None:
                    result = vcpu.complete(answer)
                elif isinstance(result, Interrupted):
                    self.vmm.release()  # the request reached firmware: drop the blob's lock
                    result = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0))
                elif isinstance(result, RunFailed):
                    result = vcpu.run()  # the next KVM_RUN enters the guest
                else:
                    return result, tuple(exits)
        finally:
            self.vmm.release()

    # -- the MSR protocol --------------------------------------------------------------------------
    def msr(self, value: int, vcpu: Vcpu | None = None) -> int:
        """``sev_es_wr_ghcb_msr(value); VMGEXIT(); sev_es_rd_ghcb_msr()``: the value read
        back (terminates the guest's life on a termination exit)."""
        vcpu = self.bsp if vcpu is None else vcpu
        value = int(value)
        result, exits = self.kvm_run(vcpu, value)
        response = result.msr if isinstance(result, Resumed) and result.msr is not None else value
        self.trace.append(
            Exchange("msr", value & GHCB_MSR_INFO_MASK, value, response, None, vcpu.vcpu_id, exits)
        )
        if isinstance(result, Terminated):
            raise GuestTerminated(
                f"terminated by {value:#x}",
                reason_set=-1 if result.reason_set is None else result.reason_set,
                reason_code=-1 if result.reason_code is None else result.reason_code,
                result=result,
            )
        return response

    def terminate(self, reason_set: int, reason_code: int) -> GuestTerminated:
        """``sev_es_terminate``: "val |= GHCB_SEV_TERM_REASON(set, reason);
        sev_es_wr_ghcb_msr(val); VMGEXIT();" — returns the termination (never resumes)."""
        value = encode_msr(TermReq(reason_set=reason_set, reason_code=reason_code))
        try:
            self.msr(value)
        except GuestTerminated as e:
            return e
        raise GuestTerminated(  # the host resumed the guest: Linux halts forever ("hlt")
            "the host resumed a guest that asked to be terminated",
            reason_set=reason_set,
            reason_code=reason_code,
            result=Resumed(None, msr=value),
        )

    def _fail(self, reason_set: int, reason_code: int, why: str) -> GuestTerminated:
        done = self.terminate(reason_set, reason_code)
        done.message = f"{why}; {done.message}"
        return done

    def negotiate(self) -> int:
        """``sev_es_negotiate_protocol``: "if (GHCB_MSR_INFO(val) != GHCB_MSR_SEV_INFO_RESP)
        return false; if (GHCB_MSR_PROTO_MAX(val) < GHCB_PROTOCOL_MIN || GHCB_MSR_PROTO_MIN(val)
        > GHCB_PROTOCOL_MAX) return false;" (→ terminate GEN/PROT_UNSUPPORTED), then
        "ghcb_version = min_t(size_t, GHCB_MSR_PROTO_MAX(val), GHCB_PROTOCOL_MAX);"."""
        answer = decode_msr(self.msr(MsrCode.SEV_INFO_REQ))
        fields = answer.fields()
        if (
            answer.code != MsrCode.SEV_INFO_RESP
            or fields["max_version"] < GHCB_PROTOCOL_MIN
            or fields["min_version"] > GHCB_PROTOCOL_MAX
        ):
            raise self._fail(TermReasonSet.GEN, GenTermReason.PROT_UNSUPPORTED, "SEV_INFO")
        self.ghcb_version = min(fields["max_version"], GHCB_PROTOCOL_MAX)
        return self.ghcb_version

    def get_hv_features(self) -> int:
        """``get_hv_features`` ("if (ghcb_version < 2) return 0; ... if (GHCB_RESP_CODE(val)
        != GHCB_MSR_HV_FT_RESP) return 0;"), then "if (!(sev_hv_features & GHCB_HV_FT_SNP))
        sev_es_terminate(SEV_TERM_SET_GEN, GHCB_SNP_UNSUPPORTED);"."""
        features = 0
        if self.ghcb_version >= 2:
            answer = decode_msr(self.msr(MsrCode.HV_FT_REQ))
            if answer.code == MsrCode.HV_FT_RESP:
                features = answer.fields()["features"]
        self.hv_features = features
        if not features & HvFeature.SNP:
            raise self._fail(TermReasonSet.GEN, GenTermReason.SNP_UNSUPPORTED, "HV features")
        return features

    def cpuid(self, function: int, register: int) -> int:
        """``__sev_cpuid_hv_msr`` for one register: "if (GHCB_RESP_CODE(val) !=
        GHCB_MSR_CPUID_RESP) return -EIO;" (→ terminate LINUX/CPUID_HV)."""
        answer = self.msr(encode_msr(CpuidReq(function=function, register=register)))
        if answer & GHCB_MSR_INFO_MASK != MsrCode.CPUID_RESP:
            raise self._fail(TermReasonSet.LINUX, LinuxTermReason.CPUID_HV, "CPUID")
        return answer >> 32

    def set_page_state_msr(self, gpa: int, *, shared: bool) -> None:
        """``early_set_pages_state`` for one page: "if (GHCB_RESP_CODE(val) !=
        GHCB_MSR_PSC_RESP) goto e_term; if (GHCB_MSR_PSC_RESP_VAL(val)) goto e_term;"
        (→ terminate LINUX/PSC)."""
        op = PscOp.SHARED if shared else PscOp.PRIVATE
        answer = decode_msr(self.msr(encode_msr(PscReq(operation=op, gfn=gpa // PAGE_SIZE))))
        if answer.code != MsrCode.PSC_RESP or answer.fields()["error"]:
            raise self._fail(TermReasonSet.LINUX, LinuxTermReason.PSC, "MSR page state change")

    def register_ghcb(self, gpa: int | None = None, vcpu: Vcpu | None = None) -> None:
        """``snp_register_ghcb_early``: "if ((GHCB_RESP_CODE(val) != GHCB_MSR_REG_GPA_RESP) ||
        (GHCB_MSR_REG_GPA_RESP_VAL(val) != pfn)) sev_es_terminate(SEV_TERM_SET_LINUX,
        GHCB_TERM_REGISTER);"."""
        gpa = self.guest.layout.ghcb if gpa is None else gpa
        answer = decode_msr(self.msr(encode_msr(RegGpaReq(gfn=gpa // PAGE_SIZE)), vcpu))
        if answer.code != MsrCode.REG_GPA_RESP or answer.fields()["gfn"] != gpa // PAGE_SIZE:
            raise self._fail(TermReasonSet.LINUX, LinuxTermReason.REGISTER, "GHCB registration")

    # -- the GHCB ----------------------------------------------------------------------------------
    def ghcb_call(
        self, code: int, info1: int = 0, info2: int = 0, *, vcpu: Vcpu | None = None, **fields: Any
    ) -> GhcbPage:
        """``sev_es_ghcb_hv_call``: the GHCB written (``fields`` marked valid), the GHCB GPA in
        the MSR, VMGEXIT; the GHCB as the guest reads it afterwards."""
        vcpu = self.bsp if vcpu is None else vcpu
        gpa = self.guest.layout.ghcb if vcpu is self.bsp else AP_GHCB
        buffer: bytes = fields.pop("shared_buffer", b"")
        values = {"sw_exit_code": code, "sw_exit_info_1": info1, "sw_exit_info_2": info2} | fields
        page = GhcbPage.empty().with_fields(**values).replace(protocol_version=self.ghcb_version)
        if buffer:
            page = page.replace(shared_buffer=buffer.ljust(len(page.shared_buffer), b"\0"))
        self.memory.guest_write(gpa, build_page(page))
        return self._ghcb_exchange(vcpu, gpa, code, info1)

    def _ghcb_exchange(self, vcpu: Vcpu, gpa: int, code: int, info1: int) -> GhcbPage:
        result, exits = self.kvm_run(vcpu, gpa)
        page = parse_page(self.memory.guest_read(gpa, PAGE_SIZE))
        self.trace.append(
            Exchange(
                "ghcb", code, info1, page.sw_exit_info_2, page.sw_exit_info_1, vcpu.vcpu_id, exits
            )
        )
        _check_terminated(result, f"the GHCB event {code:#x}")
        return page

    def _driver_vmgexit(self) -> None:
        """The sev-guest driver's VMGEXIT (it has written the GHCB itself)."""
        gpa = self.guest.layout.ghcb
        sent = parse_page(self.memory.guest_read(gpa, PAGE_SIZE))
        self._ghcb_exchange(self.bsp, gpa, sent.sw_exit_code, sent.sw_exit_info_1)

    def set_pages_state(self, gpas: Sequence[int], *, shared: bool) -> None:
        """``__set_pages_state`` / ``vmgexit_psc``: descriptors of at most
        ``VMGEXIT_PSC_MAX_ENTRY`` 4 KiB entries in the GHCB's shared buffer, re-issued "while
        (data->hdr.cur_entry <= data->hdr.end_entry)"; any of "ret || ghcb->save.sw_exit_info_2",
        "data->hdr.reserved", "data->hdr.end_entry > end_entry || cur_entry >
        data->hdr.cur_entry" fails (→ terminate LINUX/PSC)."""
        op = PscOp.SHARED if shared else PscOp.PRIVATE
        for start in range(0, len(gpas), VMGEXIT_PSC_MAX_ENTRY):
            chunk = gpas[start : start + VMGEXIT_PSC_MAX_ENTRY]
            desc = build_psc([PscEntry(gfn=gpa // PAGE_SIZE, operation=op) for gpa in chunk])
            cur, end = 0, len(chunk) - 1
            scratch = self.guest.layout.ghcb + SHARED_BUFFER_BEG
            while True:
                page = self.ghcb_call(ExitCode.PSC, shared_buffer=desc, sw_scratch=scratch)
                desc = page.shared_buffer[: len(desc)]
                hdr_cur = int.from_bytes(desc[0:2], "little")
                hdr_end = int.from_bytes(desc[2:4], "little")
                reserved = int.from_bytes(desc[4:_PSC_HDR], "little")
                if page.sw_exit_info_1 & _U32 or page.sw_exit_info_2 or reserved:
                    raise self._fail(TermReasonSet.LINUX, LinuxTermReason.PSC, "PSC failed")
                if hdr_end > end or cur > hdr_cur:
                    raise self._fail(TermReasonSet.LINUX, LinuxTermReason.PSC, "PSC backwards")
                if hdr_cur > hdr_end:
                    break

    def start_ap(self, apic_id: int = 1, vmsa: int = VMSA) -> bool:
        """``wakeup_cpu_via_vmgexit``: RAX = the VMSA's SEV features, EXITINFO1 = "((u64)apic_id
        << 32) | ((u64)snp_vmpl << 16) | event", EXITINFO2 = the VMSA; "if
        (!ghcb_sw_exit_info_1_is_valid(ghcb) || lower_32_bits(ghcb->save.sw_exit_info_1))"
        the AP does not start. Needs GHCB_HV_FT_SNP_AP_CREATION."""
        if not self.hv_features & HvFeature.SNP_AP_CREATION:
            return False
        page = self.ghcb_call(
            ExitCode.AP_CREATION,
            apic_id << 32 | ApCreationOp.CREATE,
            vmsa,
            rax=SVM_SEV_FEAT_SNP_ACTIVE,
        )
        return page.is_valid("sw_exit_info_1") and not page.sw_exit_info_1 & _U32

    def ap_boot(self) -> int:
        """The AP's first code: register its own GHCB (``snp_register_per_cpu_ghcb``) and ask
        the hypervisor features through it; the features it read."""
        self.memory.set_shared(AP_GHCB, shared=True)
        self.register_ghcb(AP_GHCB, self.ap)
        return self.ghcb_call(ExitCode.HV_FEATURES, vcpu=self.ap).sw_exit_info_2

    def ext_report(self, user_data: bytes, pages: int) -> tuple[ReportRsp, bytes]:
        """SNP_GET_EXT_REPORT through the sev-guest driver, on pages it has shared."""
        return self.driver.get_ext_report(user_data, pages=pages)

    # -- a whole life ------------------------------------------------------------------------------
    def boot(self) -> None:
        """Negotiation, HV features, the GHCB shared (MSR PSC) and registered, the C-bit read
        with an MSR CPUID request (leaf 0x8000001F EBX)."""
        self.negotiate()
        self.get_hv_features()
        self.set_page_state_msr(self.guest.layout.ghcb, shared=True)
        self.register_ghcb()
        self.cpuid(0x8000_001F, 1)

    def share_driver_pages(self) -> None:
        """The sev-guest driver's ``set_memory_decrypted`` of its request, response and
        certificate pages (one GHCB page-state change)."""
        layout = self.guest.layout
        certs = [layout.certs + i * PAGE_SIZE for i in range(layout.cert_pages)]
        self.set_pages_state([layout.response, layout.request, *certs], shared=True)

    def live(self, user_data: bytes, pages: int) -> LifeResult:
        """Boot, share the driver's pages, ask an extended report (a failed request is the
        driver's error, not the guest's end), start the AP (which boots), terminate (set 0,
        reason 0)."""
        self.boot()
        self.share_driver_pages()
        report: ReportRsp | None = None
        certs = b""
        error: GuestRequestError | None = None
        try:
            report, certs = self.ext_report(user_data, pages)
        except GuestRequestError as e:
            error = e
        ap_started = self.start_ap()
        if ap_started:
            self.ap_boot()
        done = self.terminate(TermReasonSet.GEN, GenTermReason.GEN_REQ)
        return LifeResult(report, certs, error, ap_started, done)


@dataclass(frozen=True, slots=True)
class LifeResult:
    """What :meth:`GuestLife.live` saw: the report and certificates (or the driver's error),
    whether the AP started, and the termination."""

    report: ReportRsp | None
    certs: bytes
    error: GuestRequestError | None
    ap_started: bool
    terminated: GuestTerminated
