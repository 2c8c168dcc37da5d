"""The ``ghcb`` command (also ``python -m ghcb``).

Every command takes ``--json`` and then prints exactly one JSON object (DESIGN.md §3).
Exit status: 0 success / no errors, 1 the input breaks a rule (errors found, or it cannot be
decoded), 2 unusable arguments or an unreadable file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import uuid
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

from ghcb import __version__
from ghcb.certs import (
    SEV_FW_BLOB_MAX_SIZE,
    CertEntry,
    CertGuid,
    build_cert_table,
    cert_names,
    cert_table_index,
    check_cert_table,
    located_entries,
    pages_needed,
    sha256_hex,
    subject_common_name,
    subject_text,
)
from ghcb.check import check_page
from ghcb.errors import GhcbError, Severity, Violation
from ghcb.exitinfo import unpack_guest_error
from ghcb.msr import UnknownMsr, decode_msr
from ghcb.page import FIELDS, VALID_BIT, GhcbPage, parse_page
from ghcb.schemas.page import GHCB_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FINDINGS: Final = 1
EXIT_USAGE: Final = 2

_INT_FIELDS: Final = tuple(f for f in FIELDS if f.kind == "int")


class _Usage(Exception):
    """Unusable arguments or unreadable file: exit status 2."""


def _named(value: int, name: str | None) -> dict[str, object]:
    return {"value": int(value), "name": name}


def _enum_name(value: object) -> str | None:
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise _Usage(f"cannot read {path}: {e.strerror}") from e


def _parse_u64(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as e:
        raise _Usage(f"not an integer: {text!r} (use decimal or 0x-prefixed hex)") from e
    if not 0 <= value < 1 << 64:
        raise _Usage(f"{text} is not a 64-bit unsigned value")
    return value


# -- page ---------------------------------------------------------------------------------
def _page_json(page: GhcbPage) -> dict[str, object]:
    code = page.exit_code
    return {
        "fields": {f.name: getattr(page, f.name) for f in _INT_FIELDS},
        "valid": sorted(page.valid_fields, key=VALID_BIT.__getitem__),
        "exit_code": _named(page.sw_exit_code, _enum_name(code)),
        "shared_buffer": page.shared_buffer.hex(),
        "protocol_version": page.protocol_version,
        "ghcb_usage": page.ghcb_usage,
    }


def _page_text(page: GhcbPage, path: str, out: TextIO) -> None:
    code = page.exit_code
    valid = page.valid_fields
    print(f"GHCB page {path} ({GHCB_SIZE} bytes)", file=out)
    print(f"  exit code         {page.sw_exit_code:#x} {_enum_name(code) or '(unknown)'}", file=out)
    print(f"  protocol_version  {page.protocol_version}", file=out)
    print(f"  ghcb_usage        {page.ghcb_usage}", file=out)
    print(f"  valid bitmap      {page.valid_bitmap.hex()}", file=out)
    print(f"  {'field':<16}  {'offset':>6}  {'bit':>3}  valid  value", file=out)
    for f in _INT_FIELDS:
        value = getattr(page, f.name)
        bit = VALID_BIT.get(f.name)
        is_valid = f.name in valid
        if value == 0 and not is_valid:
            continue
        mark = "yes" if is_valid else ("-" if bit is None else "no")
        bit_text = "-" if bit is None else str(bit)
        print(f"  {f.name:<16}  {f.offset:#6x}  {bit_text:>3}  {mark:<5}  {value:#x}", file=out)
    used = sum(1 for b in page.shared_buffer if b)
    print(f"  shared_buffer     {used} non-zero byte(s) of {len(page.shared_buffer)}", file=out)
    extra = page.undefined_valid_bits
    if extra:
        print(f"  undefined valid bits: {', '.join(map(str, extra))}", file=out)


def _cmd_page_decode(args: argparse.Namespace, out: TextIO) -> int:
    page = parse_page(_read(args.file))
    if args.json:
        _emit(_page_json(page), out)
    else:
        _page_text(page, args.file, out)
    return EXIT_OK


def _report(
    violations: list[Violation], extra: dict[str, object], args: argparse.Namespace, out: TextIO
) -> int:
    errors = [v for v in violations if v.severity is Severity.ERROR]
    if args.json:
        _emit({"ok": not errors, "violations": [v.to_json() for v in violations], **extra}, out)
    else:
        for v in violations:
            where = "-" if v.offset is None else f"{v.offset:#x}"
            print(
                f"{v.severity.value:<7} {v.code:<24} {where:>6}  {v.message}  [{v.spec}]", file=out
            )
        print(f"{len(errors)} error(s), {len(violations) - len(errors)} warning(s)", file=out)
    return EXIT_FINDINGS if errors else EXIT_OK


def _cmd_page_check(args: argparse.Namespace, out: TextIO) -> int:
    return _report(check_page(_read(args.file)), {}, args, out)


# -- exitinfo2 / msr ------------------------------------------------------------------------
def _cmd_exitinfo2_decode(args: argparse.Namespace, out: TextIO) -> int:
    value = _parse_u64(args.value)
    vmm, fw = unpack_guest_error(value)
    doc = {
        "value": value,
        "vmm_error": _named(vmm, _enum_name(vmm)),
        "fw_error": _named(fw, _enum_name(fw)),
    }
    if args.json:
        _emit(doc, out)
    else:
        print(f"exitinfo2 {value:#018x}", file=out)
        print(f"  vmm_error [63:32]  {int(vmm):#x} {_enum_name(vmm) or '(unknown)'}", file=out)
        print(f"  fw_error  [31:0]   {int(fw):#x} {_enum_name(fw) or '(unknown)'}", file=out)
    return EXIT_OK


def _cmd_msr_decode(args: argparse.Namespace, out: TextIO) -> int:
    value = _parse_u64(args.value)
    msg = decode_msr(value)
    name = None if isinstance(msg, UnknownMsr) else msg.code.name
    doc: dict[str, object] = {"code": _named(int(msg.code), name), **msg.fields()}
    if args.json:
        _emit(doc, out)
    else:
        print(
            f"GHCB MSR {value:#018x}: {name or 'unknown GHCBInfo'} ({int(msg.code):#05x})", file=out
        )
        for key, field_value in msg.fields().items():
            print(f"  {key:<16} {field_value:#x}", file=out)
    return EXIT_OK


# -- certs ---------------------------------------------------------------------------------
def _index_json(data: bytes) -> list[dict[str, object]]:
    index = cert_table_index(data)
    names = _index_names(data)
    return [
        {"guid": str(e.guid), "name": name, "offset": e.offset, "length": e.length}
        for e, name in zip(index, names, strict=True)
    ]


def _index_names(data: bytes) -> list[str | None]:
    """Names for the index rows (ASK/ASVK told apart where the data is in bounds)."""
    entries = []
    for e in cert_table_index(data):
        payload = data[e.offset : e.offset + e.length] if e.offset + e.length <= len(data) else b""
        entries.append(CertEntry(e.guid, payload))
    return cert_names(entries)


def _cmd_certs_check(args: argparse.Namespace, out: TextIO) -> int:
    data = _read(args.file)
    violations = check_cert_table(data, max_size=args.max_size)
    return _report(violations, {"entries": _index_json(data)}, args, out)


def _cmd_certs_parse(args: argparse.Namespace, out: TextIO) -> int:
    data = _read(args.file)
    located = located_entries(data, strict=not args.lenient)
    entries = [entry for _, entry in located]
    names = cert_names(entries)
    rows = []
    for (where, entry), name in zip(located, names, strict=True):
        rows.append(
            {
                "guid": str(entry.guid),
                "name": name,
                "offset": where.offset,
                "length": where.length,
                "sha256": sha256_hex(entry.data),
                "subject": subject_text(entry.data),
            }
        )
    if args.extract:
        _extract(entries, names, args.extract)
    if args.json:
        _emit({"entries": rows, "size": len(data), "pages": pages_needed(len(data))}, out)
    else:
        print(f"certificate table {args.file}: {len(rows)} entries, {len(data)} bytes", file=out)
        for row in rows:
            print(
                f"  {row['name'] or '(unknown)':<8} {row['guid']}  offset {row['offset']:#06x}"
                f"  length {row['length']:>5}  sha256 {row['sha256']}",
                file=out,
            )
            print(f"           subject: {row['subject'] or '(not X.509)'}", file=out)
    return EXIT_OK


def _extract(entries: list[CertEntry], names: list[str | None], folder: str) -> None:
    target = pathlib.Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for i, (entry, name) in enumerate(zip(entries, names, strict=True)):
            suffix = "der" if subject_common_name(entry.data) is not None else "bin"
            (target / f"{i}-{(name or str(entry.guid)).lower()}.{suffix}").write_bytes(entry.data)
    except OSError as e:
        raise _Usage(f"cannot write to {folder}: {e.strerror}") from e


_BUILD_ORDER: Final = (
    ("ark", CertGuid.ARK),
    ("ask", CertGuid.ASK),
    ("asvk", CertGuid.ASK),  # the ASVK is stored under the ASK GUID
    ("vcek", CertGuid.VCEK),
    ("vlek", CertGuid.VLEK),
    ("crl", CertGuid.CRL),
)


def _cmd_certs_build(args: argparse.Namespace, out: TextIO) -> int:
    if args.ask and args.asvk:
        raise _Usage("--ask and --asvk share the ASK GUID: give one of them")
    entries = [
        CertEntry(guid.value, _read(getattr(args, option)))
        for option, guid in _BUILD_ORDER
        if getattr(args, option)
    ]
    for spec in args.extra:
        guid_text, sep, path = spec.partition("=")
        try:
            guid = uuid.UUID(guid_text)
        except ValueError:
            raise _Usage(f"--extra wants GUID=FILE, got {spec!r}") from None
        if not sep or not path:
            raise _Usage(f"--extra wants GUID=FILE, got {spec!r}")
        entries.append(CertEntry(guid, _read(path)))
    if not entries:
        raise _Usage("give at least one certificate (--ark, --ask, --vcek, ...)")
    blob = build_cert_table(entries, pad_to_page=args.pad)
    try:
        pathlib.Path(args.output).write_bytes(blob)
    except OSError as e:
        raise _Usage(f"cannot write {args.output}: {e.strerror}") from e
    doc = {
        "output": args.output,
        "size": len(blob),
        "pages": pages_needed(len(blob)),
        "entries": _index_json(blob),
    }
    if args.json:
        _emit(doc, out)
    else:
        print(f"wrote {args.output}: {len(blob)} bytes, {doc['pages']} page(s)", file=out)
        for row in _index_json(blob):
            print(
                f"  {row['name']:<8} offset {row['offset']:#06x} length {row['length']}", file=out
            )
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.demo import format_text, run_demo  # builds keys: only when asked

    steps = run_demo()
    ok = all(step.ok for step in steps)
    if args.json:
        _emit(
            {
                "ok": ok,
                "steps": [
                    {"title": s.title, "ok": s.ok, "lines": s.lines, "facts": s.facts}
                    for s in steps
                ],
            },
            out,
        )
    else:
        print(format_text(steps), file=out)
    return EXIT_OK if ok else EXIT_FINDINGS


def _cmd_pki_generate(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.hypervisor.pki import write_chain  # builds keys: only when asked

    folder = pathlib.Path(args.dir)
    if not folder.is_dir():
        raise _Usage(f"{args.dir}: not an existing directory")
    written = write_chain(folder, _PRODUCTS[args.product], form=args.form)
    files = {name: str(path) for name, path in written.items()}
    if args.json:
        _emit(
            {"ok": True, "product": _PRODUCTS[args.product], "form": args.form, "files": files}, out
        )
    else:
        for name, path in files.items():
            print(f"{name:<5} {path}", file=out)
    return EXIT_OK


_PRODUCTS: Final = {"milan": "Milan", "genoa": "Genoa", "turin": "Turin"}


def _user_data(text: str) -> bytes:
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise _Usage(f"--user-data is not hex: {text!r}") from None
    if len(data) > 64:
        raise _Usage(f"--user-data is at most 64 bytes, got {len(data)}")
    return data


def _cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.simulate import SimulateOptions, SimulateUsageError, format_text, simulate

    opts = SimulateOptions(
        certs=None if args.certs is None else _read(args.certs),
        no_certs=args.no_certs,
        pages=args.pages,
        abi=args.abi,
        vmm_answer=args.vmm_answer,
        product=args.product,
        user_data=_user_data(args.user_data),
        report_version=args.report_version,
        signing_key=args.signing_key,
    )
    try:
        doc = simulate(opts)
    except SimulateUsageError as e:
        raise _Usage(str(e)) from e
    if args.json:
        _emit(doc, out)
    else:
        print(format_text(doc), file=out)
    return EXIT_OK if doc["ok"] else EXIT_FINDINGS


def _emit(doc: dict[str, object], out: TextIO) -> None:
    json.dump(doc, out, sort_keys=False)
    out.write("\n")


class _Parser(argparse.ArgumentParser):
    """argparse that reports unusable arguments as :class:`_Usage` (exit 2, JSON with --json)
    instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _pages_arg(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 256:
        raise argparse.ArgumentTypeError(f"must be 0..256: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ghcb", description="Decode and check AMD SEV-ES/SEV-SNP GHCB wire formats."
    )
    parser.add_argument("--version", action="version", version=f"ghcb {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction[_Parser],
        name: str,
        helptext: str,
        func: Callable[[argparse.Namespace, TextIO], int],
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=func)
        return p

    command(
        groups,
        "demo",
        "the whole exchange end to end: guest, reference KVM and VMM, simulated firmware",
        _cmd_demo,
    )
    sim = command(
        groups,
        "simulate",
        "one Extended Guest Request end to end, with the VMM's answer and the firmware chosen",
        _cmd_simulate,
    )
    served = sim.add_mutually_exclusive_group()
    served.add_argument("--certs", metavar="FILE", help="certificate blob the host serves")
    served.add_argument(
        "--no-certs", action="store_true", help="serve an empty store (the empty table)"
    )
    sim.add_argument(
        "--pages",
        type=_pages_arg,
        metavar="N",
        help="certificate pages the guest offers (default: as many as the table needs)",
    )
    sim.add_argument("--abi", choices=("v15", "merged"), default="merged")
    sim.add_argument("--vmm-answer", choices=("ok", "busy", "generic", "invalid-len"), default="ok")
    sim.add_argument("--product", choices=tuple(_PRODUCTS), default="milan")
    sim.add_argument(
        "--user-data", metavar="HEX", default="", help="REPORT_DATA (up to 64 bytes, zero-padded)"
    )
    sim.add_argument("--report-version", type=int, choices=(2, 3, 5), default=5)
    sim.add_argument("--signing-key", choices=("vcek", "vlek"), default="vcek")
    pki = groups.add_parser("pki", help="the synthetic AMD key chain").add_subparsers(
        dest="command", required=True, metavar="ACTION"
    )
    gen = command(
        pki, "generate", "write the synthetic chain (ARK, ASK, ASVK, VCEK, VLEK)", _cmd_pki_generate
    )
    gen.add_argument("dir", metavar="DIR", help="an existing directory")
    gen.add_argument("--product", choices=tuple(_PRODUCTS), default="milan")
    gen.add_argument("--form", choices=("pem", "der"), default="pem")
    page = groups.add_parser("page", help="GHCB pages (4096 bytes)").add_subparsers(
        dest="command", required=True, metavar="ACTION"
    )
    command(page, "decode", "decode a GHCB page file", _cmd_page_decode).add_argument(
        "file", help="page file (4096 bytes), or - for stdin"
    )
    command(page, "check", "check a GHCB page against KVM's rules", _cmd_page_check).add_argument(
        "file", help="page file, or - for stdin"
    )
    ei2 = groups.add_parser("exitinfo2", help="SW_EXITINFO2 values").add_subparsers(
        dest="command", required=True, metavar="ACTION"
    )
    command(
        ei2,
        "decode",
        "split SW_EXITINFO2 into VMM error and firmware status",
        _cmd_exitinfo2_decode,
    ).add_argument("value", help="u64, decimal or 0x hex")
    msr = groups.add_parser("msr", help="GHCB MSR protocol values").add_subparsers(
        dest="command", required=True, metavar="ACTION"
    )
    command(msr, "decode", "decode a GHCB MSR value", _cmd_msr_decode).add_argument(
        "value", help="u64, decimal or 0x hex"
    )
    certs = groups.add_parser("certs", help="extended guest request certificate tables")
    certs_cmds = certs.add_subparsers(dest="command", required=True, metavar="ACTION")
    check = command(certs_cmds, "check", "report every rule a table breaks", _cmd_certs_check)
    check.add_argument("file", help="table file (e.g. an auxblob or a guest's pages), or -")
    check.add_argument(
        "--max-size",
        type=_positive_int,
        default=SEV_FW_BLOB_MAX_SIZE,
        help="reader's buffer size (default: Linux's 16 KiB)",
    )
    parse = command(certs_cmds, "parse", "list a table's certificates", _cmd_certs_parse)
    parse.add_argument("file", help="table file, or -")
    parse.add_argument("--extract", metavar="DIR", help="write each certificate to DIR")
    parse.add_argument(
        "--lenient", action="store_true", help="drop broken entries instead of failing"
    )
    build = command(
        certs_cmds, "build", "write a canonical table (QEMU certs-path, snphost)", _cmd_certs_build
    )
    for option, guid in _BUILD_ORDER:
        build.add_argument(
            f"--{option}",
            metavar="FILE",
            help=f"{option.upper()} certificate (DER or PEM; GUID {guid.value})",
        )
    build.add_argument(
        "--extra",
        metavar="GUID=FILE",
        action="append",
        default=[],
        help="another entry (repeatable)",
    )
    build.add_argument("--pad", action="store_true", help="zero-pad to a multiple of 4096")
    build.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (``--help``/``--version`` exit 0 as argparse does)."""
    out = sys.stdout if out is None else out
    words = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(words)
    except _Usage as e:
        return _fail("--json" in words, out, "usage", str(e), EXIT_USAGE)
    json_mode = bool(getattr(args, "json", False))
    try:
        return int(args.func(args, out))
    except _Usage as e:
        return _fail(json_mode, out, "usage", str(e), EXIT_USAGE)
    except GhcbError as e:
        return _fail(json_mode, out, e.rule, str(e), EXIT_FINDINGS)


def _fail(json_mode: bool, out: TextIO, code: str, message: str, status: int) -> int:
    if json_mode:
        _emit({"ok": False, "error": {"code": code, "message": message}}, out)
    print(f"ghcb: {message}", file=sys.stderr)
    return status
