"""The whole exchange, end to end, on any machine: ``ghcb demo`` (and ``make demo``).

A host with a synthetic AMD chain (:mod:`ghcb.hypervisor.pki`) and its certificate blob in a
:class:`~ghcb.hypervisor.store.CertificateStore`; the reference vCPU and VMM; the simulated
SNP firmware (:mod:`ghcb.hypervisor.simfw`); a guest running Linux's driver logic
(:class:`~ghcb.guest.SnpGuestDriver`). The story:

1. the guest asks for a report with certificates in one page: the host needs more, the guest
   learns how many (INVALID_LEN, RBX) and asks again; it verifies the report against the
   certificates it got (VCEK → ASK → ARK);
2. the same through the v15 seed ABI (exit 40, NOTIFY_DONE);
3. a rate-limited host answers BUSY; the guest retries every 2 s (injected clock);
4. the host updates its TCB and blob together under the exclusive lock; the next report
   carries the new TCB and verifies only with the new VCEK.

Every step records the bytes that matter (exits, EXITINFO2, RBX, report fields), printed as
text or as one JSON object.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghcb.certs import pages_needed
from ghcb.exitinfo import unpack_guest_error
from ghcb.guest import Guest, GuestRequestError, SnpGuestDriver
from ghcb.guest_msg import ReportReq
from ghcb.hypervisor.kvm_abi import CertAbi, MergedAbi, V15Abi, decode_kvm_run
from ghcb.hypervisor.simfw import SimulatedFirmware, default_vmpcks
from ghcb.hypervisor.store import CertificateStore
from ghcb.hypervisor.vcpu import CertsExit, Interrupted, Resumed, RunResult, Vcpu, Vm
from ghcb.hypervisor.vmm import TokenBucket, Vmm
from ghcb.report import verify_report
from ghcb.tcb import Tcb
from ghcb.verify import verify_with_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from ghcb.guest_msg import ReportRsp

__all__ = ["Host", "Step", "format_text", "run_demo"]

USER_DATA = b"ghcb demo nonce " + bytes(range(48))  # the guest's 64 bytes of REPORT_DATA


@dataclass
class Step:
    """One part of the story: a title, what happened (lines), and the facts as values."""

    title: str
    lines: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    ok: bool = True

    def say(self, line: str) -> None:
        self.lines.append(line)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _exit_line(abi: CertAbi, result: RunResult, answer: bytes | None) -> str | None:
    if isinstance(result, CertsExit) and answer is not None:
        prefix, asked = decode_kvm_run(abi, result.kvm_run)
        _, answered = decode_kvm_run(abi, answer)
        kind = "DONE notification" if result.done else "certificate request"
        return (
            f"  KVM exit {prefix['exit_reason']} ({kind}): {_fields(asked)} "
            f"-> VMM answers {_fields(answered)}"
        )
    if isinstance(result, Interrupted):
        return "  KVM_RUN -EINTR (immediate_exit): the request reached firmware, lock dropped"
    return None


def _fields(values: dict[str, int]) -> str:
    keep = ("gpa", "npages", "data_gpa", "data_npages", "ret", "flags", "status")
    return "{" + ", ".join(f"{k}={v:#x}" for k, v in values.items() if k in keep) + "}"


class Host:
    """One guest, its vCPU and VMM, the firmware and the store (shared with ``ghcb simulate``).

    ``rate`` builds a token bucket on the host's injected clock (``limiter`` gives one
    directly); ``guest`` defaults to a fresh :class:`~ghcb.guest.Guest`. Every KVM_RUN result
    the VMM sees and its answer are kept in ``events``; ``trace`` holds them as text.
    """

    def __init__(
        self,
        directory: Path,
        abi: CertAbi,
        firmware: SimulatedFirmware,
        *,
        rate: float | None = None,
        limiter: TokenBucket | None = None,
        guest: Guest | None = None,
    ) -> None:
        self.abi = abi
        self.clock = _Clock()
        self.store = CertificateStore(directory / "certs.blob", create=True)
        self.firmware = firmware
        self.guest = Guest() if guest is None else guest
        self.trace: list[str] = []
        self.events: list[tuple[RunResult, bytes | None]] = []
        if limiter is None and rate is not None:
            limiter = TokenBucket(rate=rate, burst=1, clock=self.clock.clock)
        self.vcpu = Vcpu(Vm(firmware, cert_abi=abi), self.guest.memory, self.guest.layout.ghcb)
        self.vmm = Vmm(self.guest.memory, self.store, limiter=limiter, trace=self._record)
        self.driver = SnpGuestDriver(
            self.guest,
            lambda: self.vmm.run(self.vcpu),
            default_vmpcks()[0],
            clock=self.clock.clock,
            sleep=self.clock.sleep,
        )

    def _record(self, result: RunResult, answer: bytes | None) -> None:
        self.events.append((result, answer))
        line = _exit_line(self.abi, result, answer)
        if line is not None:
            self.trace.append(line)
        if isinstance(result, Resumed) and result.page is not None:
            page = result.page
            error = unpack_guest_error(page.sw_exit_info_2)
            self.trace.append(
                f"  guest resumed: EXITINFO1={page.sw_exit_info_1:#x} "
                f"EXITINFO2={page.sw_exit_info_2:#018x} (VMM {_name(error.vmm)}, "
                f"firmware {_name(error.fw)}) RBX={page.rbx:#x}"
            )

    def take_trace(self, step: Step) -> None:
        step.lines.extend(self.trace)
        self.trace.clear()


def _valid(ok: bool) -> str:
    return "valid" if ok else "INVALID"


def _name(code: int) -> str:
    return getattr(code, "name", None) or f"{int(code):#x}"


def _verify(step: Step, rsp: ReportRsp, certs: bytes) -> bool:
    """Verify the report against the table the guest got; record what was checked."""
    check = verify_with_table(rsp, certs)
    if check.problem is not None:
        step.say("  the table lacks ARK, ASK or VCEK: cannot verify")
        return False
    report = rsp.attestation_report
    signature_ok, chain_ok = check.signature_ok, check.chain_ok
    tcb = report.tcb("reported_tcb")
    spl = ", ".join(f"{name} {getattr(tcb, name):#x}" for name in tcb.components())
    step.say(
        f"  report v{report.version}: REPORT_DATA starts {report.report_data[:16]!r}, "
        f"VMPL {report.vmpl}, reported TCB ({spl})"
    )
    step.say(f"  signature by the table's VCEK: {_valid(signature_ok)}")
    step.say(f"  chain VCEK <- ASK <- ARK (RSASSA-PSS SHA-384): {_valid(chain_ok)}")
    step.facts |= {
        "report_version": report.version,
        "report_data_ok": report.report_data == USER_DATA,
        "signature_valid": signature_ok,
        "chain_valid": chain_ok,
        "certificates": list(check.certificates),
    }
    return signature_ok and chain_ok and report.report_data == USER_DATA


def _certificates_step(directory: Path, abi: CertAbi, title: str) -> Step:
    step = Step(title)
    firmware = SimulatedFirmware()
    host = Host(directory, abi, firmware, rate=None)
    blob = firmware.chain.cert_table()
    host.store.update(blob)
    need = pages_needed(len(blob))
    step.say(f"host certificate blob: ARK, ASK, VCEK = {len(blob)} bytes, {need} pages")
    step.say("guest: SNP_GET_EXT_REPORT with a 1-page certificate buffer")
    try:
        host.driver.get_ext_report(USER_DATA, pages=1)
        step.ok = False
    except GuestRequestError as e:
        host.take_trace(step)
        step.say(
            f"  driver: -EIO, exitinfo2 {e.exit_info_2:#x} (INVALID_LEN), the host wants "
            f"{e.npages} pages; the message was re-issued as a plain request (seqno used up)"
        )
        step.facts["first_try"] = {"exit_info_2": e.exit_info_2, "npages": e.npages}
        step.ok = e.npages == need
    step.say(f"guest: again with {need} pages")
    rsp, certs = host.driver.get_ext_report(USER_DATA, pages=need)
    host.take_trace(step)
    step.ok = _verify(step, rsp, certs) and step.ok
    step.facts["guest_counter"] = host.driver.counter
    return step


def _busy_step(directory: Path) -> Step:
    step = Step("BUSY: a rate-limited host (one request per 4 s)")
    firmware = SimulatedFirmware()
    host = Host(directory, MergedAbi(), firmware, rate=0.25)
    host.store.update(firmware.chain.cert_table())
    host.driver.get_ext_report(USER_DATA, pages=2)
    host.trace.clear()
    step.say("guest: a second request right away")
    answer = host.driver.request(
        ReportReq(user_data=USER_DATA),
        extended=True,
        pages=pages_needed(len(firmware.chain.cert_table())),
    )
    host.take_trace(step)
    step.say(
        f"  driver: BUSY -> retried {answer.busy_retries} times, 2 s apart "
        f"(injected clock at {host.clock.now:.0f} s), then answered"
    )
    step.facts |= {"busy_retries": answer.busy_retries, "seconds": host.clock.now}
    step.ok = answer.busy_retries == 2
    return step


def _tcb_step(directory: Path) -> Step:
    step = Step("TCB update: firmware and certificates change together under the lock")
    firmware = SimulatedFirmware()
    host = Host(directory, MergedAbi(), firmware, rate=None)
    host.store.update(firmware.chain.cert_table())
    pages = pages_needed(len(firmware.chain.cert_table()))
    old_vcek = firmware.chain.vcek
    old = firmware.tcb
    new = Tcb(boot_loader=old.boot_loader, tee=old.tee, snp=old.snp + 1, microcode=old.microcode)
    new_chain = firmware.chain.at_tcb(new)
    host.store.update(new_chain.cert_table(), with_firmware=lambda: firmware.set_tcb(new))
    step.say(f"host: SNP TCB {old.snp:#x} -> {new.snp:#x}; blob rewritten with the new VCEK")
    rsp, certs = host.driver.get_ext_report(USER_DATA, pages=pages)
    host.take_trace(step)
    ok = _verify(step, rsp, certs)
    stale = verify_report(rsp.report, old_vcek)
    step.say(f"  the old VCEK verifies the new report: {stale} (as it must not)")
    step.facts["old_vcek_verifies"] = stale
    step.ok = ok and not stale
    return step


def run_demo(directory: str | Path | None = None) -> list[Step]:
    """Run the story (in ``directory``, default a fresh temporary one) and return its steps."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="ghcb-demo-") as tmp:
            return run_demo(tmp)
    base = Path(directory)
    parts: list[tuple[str, Callable[[Path], Step]]] = [
        ("merged", lambda d: _certificates_step(d, MergedAbi(), _TITLES["merged"])),
        ("v15", lambda d: _certificates_step(d, V15Abi(), _TITLES["v15"])),
        ("busy", _busy_step),
        ("tcb", _tcb_step),
    ]
    steps = []
    for name, part in parts:
        sub = base / name
        sub.mkdir()
        steps.append(part(sub))
    return steps


_TITLES = {
    "merged": "Extended Guest Request, merged KVM_EXIT_SNP_REQ_CERTS (exit 43)",
    "v15": "The same through the v15 seed ABI (KVM_EXIT_VMGEXIT 40, NOTIFY_DONE)",
}


def format_text(steps: list[Step]) -> str:
    """The story as text."""
    out = []
    for i, step in enumerate(steps, 1):
        out.append(f"{i}. {step.title}")
        out.extend(f"   {line}" for line in step.lines)
        out.append(f"   => {'ok' if step.ok else 'FAILED'}")
        out.append("")
    verdict = all(step.ok for step in steps)
    out.append("every step ok" if verdict else "some step FAILED")
    return "\n".join(out)
