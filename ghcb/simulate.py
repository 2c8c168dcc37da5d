"""``ghcb simulate``: one Extended Guest Request, end to end, with the knobs a test author needs.

The same host as ``ghcb demo`` (:class:`ghcb.demo.Host`: reference vCPU and VMM, simulated
firmware, certificate store, a guest running Linux's driver logic on an injected clock), set
up for one exchange:

* what the store serves: the generated chain's table (default; ARK, ASK, VCEK or, with
  ``signing_key="vlek"``, ARK, ASVK, VLEK), a blob of the caller's, or nothing (an empty
  store: the VMM writes the empty table, 24 zero bytes);
* how many certificate pages the guest offers (default: as many as the table needs);
* which ABI (merged exit 43 or the v15 seed's exit 40);
* what the VMM answers: ``ok``; ``busy`` (a token bucket with no tokens: the guest retries
  every 2 s until its 60 s timeout, -ETIMEDOUT); ``generic`` (the store holds a corrupt blob,
  so the VMM's read fails and it answers GENERIC); ``invalid-len`` (the guest offers fewer
  pages than the table needs);
* the firmware: product, report version, signing key;
* ``trace``: the guest's whole life instead of the one request (:mod:`ghcb.guest_life`:
  negotiation, HV features, GHCB shared and registered, the driver's pages shared, the
  request, AP creation, termination), with every VMGEXIT and MSR exchange in ``trace``.

:func:`simulate` returns one JSON-ready dict (see :func:`format_text` for the text form).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ghcb.certs import cert_names, cert_table_index, located_entries, pages_needed
from ghcb.codes import ExitCode, MsrCode
from ghcb.demo import Host
from ghcb.errors import GhcbError
from ghcb.exitinfo import unpack_guest_error
from ghcb.guest import DEFAULT_LAYOUT, Guest, GuestLayout, GuestRequestError
from ghcb.guest_life import GuestLife
from ghcb.hypervisor.devices import CpuidTable, Platform
from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi, decode_kvm_run
from ghcb.hypervisor.simfw import FirmwareConfig, SimulatedFirmware, default_vmpcks
from ghcb.hypervisor.store import StoreError
from ghcb.hypervisor.vcpu import CertsExit, Interrupted, Resumed
from ghcb.hypervisor.vm import Vm
from ghcb.hypervisor.vmm import TokenBucket
from ghcb.schemas.certs import CERT_ENTRY_SIZE
from ghcb.schemas.guest_msg import SNP_REPORT_USER_DATA_SIZE
from ghcb.tcb import Product
from ghcb.verify import verify_with_table

if TYPE_CHECKING:
    from ghcb.guest_msg import ReportRsp
    from ghcb.hypervisor.kvm_abi import CertAbi

__all__ = ["MAX_PAGES", "SimulateOptions", "SimulateUsageError", "format_text", "simulate"]

#: The most certificate pages the simulated guest offers.
MAX_PAGES: Final = 256
#: What the store holds for ``vmm_answer="generic"``: not a certificate table (no terminator),
#: so the VMM's read of the blob fails and it answers GENERIC.
CORRUPT_BLOB: Final = b"corrupt"
_EMPTY_TABLE: Final = bytes(CERT_ENTRY_SIZE)

VmmAnswerName = Literal["ok", "busy", "generic", "invalid-len"]


class SimulateUsageError(ValueError):
    """Options that cannot describe an exchange (the CLI's exit status 2)."""


@dataclass(frozen=True, kw_only=True)
class SimulateOptions:
    """One exchange's set-up (see the module docstring). ``certs`` is the blob to serve
    (``None``: the generated chain's table); ``no_certs`` serves an empty store."""

    certs: bytes | None = None
    no_certs: bool = False
    pages: int | None = None
    abi: Literal["merged", "v15"] = "merged"
    vmm_answer: VmmAnswerName = "ok"
    product: str = "milan"
    user_data: bytes = bytes(SNP_REPORT_USER_DATA_SIZE)
    report_version: int = 5
    signing_key: Literal["vcek", "vlek"] = "vcek"
    trace: bool = False


def _product(name: str) -> Product:
    for product in Product:
        if product.value.lower() == name.lower():
            return product
    raise SimulateUsageError(f"unknown product {name!r} (milan, genoa or turin)")


def _abi(name: str) -> CertAbi:
    if name == "merged":
        return MergedAbi()
    if name == "v15":
        return V15Abi()
    raise SimulateUsageError(f"unknown ABI {name!r} (v15 or merged)")


def _pages(opts: SimulateOptions, blob: bytes) -> int:
    need = pages_needed(len(blob or _EMPTY_TABLE))
    pages = opts.pages
    if pages is not None and not 0 <= pages <= MAX_PAGES:
        raise SimulateUsageError(f"--pages must be 0..{MAX_PAGES}, not {pages}")
    if opts.vmm_answer == "invalid-len":
        if not blob:
            raise SimulateUsageError("invalid-len needs certificates: an empty store fits")
        if pages is None:
            return need - 1
        if pages >= need:
            raise SimulateUsageError(
                f"invalid-len needs fewer pages than the table's {need}, not {pages}"
            )
    return need if pages is None else pages


def simulate(opts: SimulateOptions, directory: str | Path | None = None) -> dict[str, Any]:
    """Run one exchange (store in ``directory``, default a fresh temporary one) and return
    its facts as one JSON-ready dict.

    Raises:
        SimulateUsageError: options that cannot describe an exchange.
    """
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="ghcb-simulate-") as tmp:
            return simulate(opts, tmp)
    if opts.vmm_answer not in ("ok", "busy", "generic", "invalid-len"):
        raise SimulateUsageError(f"unknown VMM answer {opts.vmm_answer!r}")
    if len(opts.user_data) > SNP_REPORT_USER_DATA_SIZE:
        raise SimulateUsageError(
            f"user data is at most {SNP_REPORT_USER_DATA_SIZE} bytes, got {len(opts.user_data)}"
        )
    if opts.no_certs and opts.certs is not None:
        raise SimulateUsageError("give a blob or no certificates, not both")
    user_data = opts.user_data.ljust(SNP_REPORT_USER_DATA_SIZE, b"\0")
    abi = _abi(opts.abi)
    try:
        config = FirmwareConfig(
            product=_product(opts.product),
            report_version=opts.report_version,
            signing_key=opts.signing_key,
        )
    except GhcbError as e:
        raise SimulateUsageError(e.message) from e
    firmware = SimulatedFirmware(config)
    if opts.no_certs:
        blob = b""
    elif opts.certs is not None:
        blob = opts.certs
    else:
        blob = firmware.chain.cert_table(opts.signing_key)
    pages = _pages(opts, blob)
    guest = Guest(GuestLayout(cert_pages=max(DEFAULT_LAYOUT.cert_pages, pages)))
    limiter = None
    if opts.vmm_answer == "busy":
        # no tokens and no refill: every request is answered BUSY
        limiter = TokenBucket(rate=0.0, burst=1, clock=lambda: 0.0)
        limiter.take()
    host = Host(Path(directory), abi, firmware, limiter=limiter, guest=guest)
    try:
        host.store.update(blob)
    except StoreError as e:
        raise SimulateUsageError(f"the blob is not a certificate table: {e.message}") from e
    if opts.vmm_answer == "generic":
        Path(host.store.path).write_bytes(CORRUPT_BLOB)  # behind the store's back
    if opts.trace:
        return _life(host, opts, pages, blob, user_data)
    rsp: ReportRsp | None = None
    certs = b""
    error: dict[str, Any] | None = None
    try:
        rsp, certs = host.driver.get_ext_report(user_data, pages=pages)
    except GuestRequestError as e:
        error = _error(e)
    return _document(host, opts, pages, blob, rsp, certs, error, user_data)


#: The life's CPUID table: leaf 0x8000001F (EAX: SME, SEV, SEV-ES, SNP; EBX[5:0]: C-bit 51).
_LIFE_CPUID: Final = CpuidTable({(0x8000_001F, 0): (0x1_001F, 0x173, 0x1FD, 0x1)})


def _life(
    host: Host, opts: SimulateOptions, pages: int, blob: bytes, user_data: bytes
) -> dict[str, Any]:
    """The guest's whole life on the same host (``--trace``)."""
    vm = Vm(host.firmware, cert_abi=host.abi, platform=Platform(cpuid=_LIFE_CPUID))
    clock = host.clock
    life = GuestLife(
        host.guest, vm, host.vmm, default_vmpcks()[0], clock=clock.clock, sleep=clock.sleep
    )
    outcome = life.live(user_data, pages)
    host.driver = life.driver
    error = None if outcome.error is None else _error(outcome.error)
    doc = _document(host, opts, pages, blob, outcome.report, outcome.certs, error, user_data)
    done = outcome.terminated
    doc["ap_started"] = outcome.ap_started
    doc["terminated"] = {"reason_set": done.reason_set, "reason_code": done.reason_code}
    doc["trace"] = [exchange.to_json() for exchange in life.trace]
    return doc


def _error(e: GuestRequestError) -> dict[str, Any]:
    return {
        "errno": int(e.errno),
        "errno_name": getattr(e.errno, "name", None),
        "exit_info_2": e.exit_info_2,
        "npages": e.npages,
        "message": e.message,
    }


def _document(
    host: Host,
    opts: SimulateOptions,
    pages: int,
    blob: bytes,
    rsp: ReportRsp | None,
    certs: bytes,
    error: dict[str, Any] | None,
    user_data: bytes,
) -> dict[str, Any]:
    exits, resumed = _events(host)
    extended = [r for r in resumed if r["exit_code"] == ExitCode.SNP_EXT_GUEST_REQUEST]
    last = extended[-1] if extended else (resumed[-1] if resumed else None)
    table = _extent(certs)
    report = None if rsp is None else _report(rsp, host.firmware.config.product)
    verification = None if rsp is None else verify_with_table(rsp, table)
    verified = verification is not None and verification.ok
    doc: dict[str, Any] = {
        "ok": verified and error is None,
        "abi": opts.abi,
        "vmm_answer": opts.vmm_answer,
        "product": host.firmware.config.product.value,
        "pages": pages,
        "pages_needed": pages_needed(len(blob or _EMPTY_TABLE)),
        "exit_info_1": None if last is None else last["exit_info_1"],
        "exit_info_2": None if last is None else last["exit_info_2"],
        "rbx": None if last is None else last["rbx"],
        "exit_info_2_decoded": None if last is None else _decode_info2(last["exit_info_2"]),
        "certs_hex": table.hex(),
        "certs": _table_rows(table),
        "report": report,
        "report_hex": None if rsp is None else rsp.report.hex(),
        "report_status": None if rsp is None else rsp.status,
        "report_data_matches": report is not None
        and rsp is not None
        and rsp.attestation_report.report_data == user_data,
        "verified": verified,
        "verification": None
        if verification is None
        else {
            "signer": verification.signer,
            "signature_ok": verification.signature_ok,
            "chain_ok": verification.chain_ok,
            "problem": verification.problem,
        },
        "exits": exits,
        "resumed": resumed,
        "busy_answers": sum(1 for r in resumed if _is_busy(r["exit_info_2"])),
        "seconds": host.clock.now,
        "guest_counter": host.driver.counter,
        "vmpck_disabled": host.driver.vmpck_disabled,
    }
    if error is not None:
        doc["error"] = error
    return doc


def _is_busy(info2: int) -> bool:
    return info2 == 2 << 32


def _events(host: Host) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The userspace exits (decoded before and after the VMM's answer) and every GHCB the
    guest read on resuming."""
    exits: list[dict[str, Any]] = []
    resumed: list[dict[str, Any]] = []
    for result, answer in host.events:
        if isinstance(result, CertsExit):
            prefix, before = decode_kvm_run(host.abi, result.kvm_run)
            row: dict[str, Any] = {
                "exit_reason": prefix["exit_reason"],
                "kind": "done" if result.done else "request",
                "before": before,
            }
            if answer is not None:
                answer_prefix, after = decode_kvm_run(host.abi, answer)
                row["after"] = after
                row["immediate_exit"] = answer_prefix.get("immediate_exit", 0)
            exits.append(row)
        elif isinstance(result, Interrupted):
            exits.append({"exit_reason": None, "kind": "eintr"})
        elif isinstance(result, Resumed) and result.page is not None:
            page = result.page
            resumed.append(
                {
                    "exit_code": page.sw_exit_code,
                    "exit_info_1": page.sw_exit_info_1,
                    "exit_info_2": page.sw_exit_info_2,
                    "rbx": page.rbx,
                }
            )
    return exits, resumed


def _decode_info2(value: int) -> dict[str, Any]:
    error = unpack_guest_error(value)
    return {
        "vmm_error": {"value": int(error.vmm), "name": getattr(error.vmm, "name", None)},
        "fw_error": {"value": int(error.fw), "name": getattr(error.fw, "name", None)},
    }


def _extent(buffer: bytes) -> bytes:
    """The certificate table at the start of ``buffer``: its index with the terminator and
    every entry's data (at most the buffer)."""
    if not buffer:
        return b""
    try:
        heads = cert_table_index(buffer)
    except GhcbError:
        return buffer
    end = (len(heads) + 1) * CERT_ENTRY_SIZE
    for head in heads:
        end = max(end, head.offset + head.length)
    return buffer[: min(end, len(buffer))]


def _table_rows(table: bytes) -> list[dict[str, Any]]:
    if not table:
        return []
    try:
        located = located_entries(table, strict=False)
    except GhcbError:
        return []
    names = cert_names([entry for _, entry in located])
    return [
        {"guid": str(entry.guid), "name": name, "offset": where.offset, "length": where.length}
        for (where, entry), name in zip(located, names, strict=True)
    ]


def _report(rsp: ReportRsp, product: Product) -> dict[str, Any]:
    report = rsp.attestation_report
    tcb = report.tcb("reported_tcb", product)
    signing_key = report.signing_key
    return {
        "status": rsp.status,
        "version": report.version,
        "vmpl": report.vmpl,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "report_data": report.report_data.hex(),
        "measurement": report.measurement.hex(),
        "chip_id": report.chip_id.hex(),
        "signing_key": getattr(signing_key, "name", str(signing_key)).lower(),
        "signature_algo": report.signature_algo,
        "cpuid_fam_id": report.cpuid_fam_id,
        "cpuid_mod_id": report.cpuid_mod_id,
        "cpuid_step": report.cpuid_step,
        "reported_tcb": {name: getattr(tcb, name) for name in tcb.components()},
        "reported_tcb_raw": report.reported_tcb,
    }


def format_text(doc: dict[str, Any]) -> str:
    """The exchange as text."""
    out = [
        f"ghcb simulate: {doc['abi']} ABI, VMM answers {doc['vmm_answer']}, {doc['product']}, "
        f"{doc['pages']} certificate page(s) offered ({doc['pages_needed']} needed)"
    ]
    for row in doc["exits"]:
        if row["kind"] == "eintr":
            out.append("  KVM_RUN -EINTR (immediate_exit): the request reached firmware")
            continue
        after = row.get("after", {})
        out.append(
            f"  KVM exit {row['exit_reason']} ({row['kind']}): {_fields(row['before'])} "
            f"-> VMM answers {_fields(after)}"
        )
    if doc["exit_info_2"] is not None:
        decoded = doc["exit_info_2_decoded"]
        vmm, fw = decoded["vmm_error"], decoded["fw_error"]
        out.append(f"EXITINFO1 {doc['exit_info_1']:#x}")
        out.append(
            f"EXITINFO2 {doc['exit_info_2']:#018x} (VMM error {vmm['name'] or hex(vmm['value'])}"
            f", firmware status {fw['name'] or hex(fw['value'])})"
        )
        out.append(f"RBX       {doc['rbx']:#x}")
    if "error" in doc:
        err = doc["error"]
        npages = "" if err["npages"] is None else f", the host wants {err['npages']} pages"
        out.append(
            f"guest request failed: {err['errno_name'] or err['errno']}, exit_info_2 "
            f"{err['exit_info_2']:#x}{npages}"
        )
    table = bytes.fromhex(doc["certs_hex"])
    out.append(f"certificate table returned: {len(table)} bytes, {len(doc['certs'])} entries")
    for row in doc["certs"]:
        out.append(
            f"  {row['name'] or '(unknown)':<8} {row['guid']}  offset {row['offset']:#06x}  "
            f"length {row['length']}"
        )
    report = doc["report"]
    if report is None:
        out.append("report: none")
    else:
        tcb = ", ".join(f"{k} {v:#x}" for k, v in report["reported_tcb"].items())
        out.append(
            f"report v{report['version']}: VMPL {report['vmpl']}, policy {report['policy']:#x}, "
            f"signing key {report['signing_key'].upper()}, reported TCB ({tcb})"
        )
        out.append(f"  REPORT_DATA {report['report_data']}")
        out.append(f"  CHIP_ID     {report['chip_id']}")
        check = doc["verification"]
        if check["problem"] is not None:
            out.append(f"  cannot verify: {check['problem']}")
        else:
            signer = check["signer"].upper()
            mid = "ASVK" if signer == "VLEK" else "ASK"
            out.append(f"  signature by the table's {signer}: {_valid(check['signature_ok'])}")
            out.append(f"  chain {signer} <- {mid} <- ARK: {_valid(check['chain_ok'])}")
    out.append("verified" if doc["verified"] else "NOT verified")
    if "trace" in doc:
        out.append(f"the guest's life: {len(doc['trace'])} exchanges")
        out.extend(_trace_line(row) for row in doc["trace"])
        done = doc["terminated"]
        out.append(f"terminated: reason set {done['reason_set']}, code {done['reason_code']}")
    return "\n".join(out)


def _trace_line(row: dict[str, Any]) -> str:
    exits = f"  [{', '.join(row['exits'])}]" if row["exits"] else ""
    if row["via"] == "msr":
        name = getattr(MsrCode.from_int(row["code"]), "name", "unknown")
        return (
            f"  vCPU{row['vcpu']} MSR  {row['code']:#05x} {name:<16} {row['request']:#018x} -> "
            f"{row['response']:#018x}{exits}"
        )
    name = getattr(ExitCode.from_int(row["code"]), "name", "unknown")
    return (
        f"  vCPU{row['vcpu']} GHCB {row['code']:#010x} {name:<16} EXITINFO1 {row['request']:#x} "
        f"-> EXITINFO1 {row['exit_info_1']:#x} EXITINFO2 {row['response']:#x}{exits}"
    )


def _valid(ok: bool) -> str:
    return "valid" if ok else "INVALID"


def _fields(values: dict[str, int]) -> str:
    keep = ("gpa", "npages", "data_gpa", "data_npages", "ret", "flags", "status")
    return "{" + ", ".join(f"{k}={v:#x}" for k, v in values.items() if k in keep) + "}"
