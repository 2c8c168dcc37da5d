"""``ghcb page decode|encode|check``: the 4096-byte GHCB page."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final, TextIO

from ghcb._input import InputError, read_path
from ghcb.check import ABI_VALIDATORS, DEFAULT_GHCB_VERSION, check_page_full
from ghcb.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    Usage,
    add_input,
    emit,
    enum_name,
    field_pairs,
    hex_lines,
    named,
    number_type,
    parse_number,
    read_structure,
    shown_name,
    write_binary,
)
from ghcb.codes import ExitCode, GhcbErr, HvResp
from ghcb.errors import FieldValueError, Severity
from ghcb.page import FIELDS, VALID_BIT, GhcbPage, build_page, parse_page
from ghcb.schemas.page import GHCB_SIZE

if TYPE_CHECKING:
    import argparse

    from ghcb._fast import FlatField
    from ghcb.check import KvmResponse
    from ghcb.cli._common import Command, Group
    from ghcb.errors import Violation

INT_FIELDS: Final = tuple(f for f in FIELDS if f.kind == "int")
_BY_NAME: Final = {f.name: f for f in FIELDS}
#: A JSON page description is at most this long (``page decode --json`` writes ~10 KB).
_JSON_MAX: Final = 1 << 20
#: Shown in the text header, not as rows.
_HEADER: Final = frozenset({"protocol_version", "ghcb_usage", "sw_exit_code"})


# -- decode -----------------------------------------------------------------------------------
def page_json(page: GhcbPage) -> dict[str, object]:
    """The ``page decode --json`` object (DESIGN.md §3)."""
    return {
        "ok": True,
        "fields": {f.name: getattr(page, f.name) for f in INT_FIELDS},
        "valid": sorted(page.valid_fields, key=VALID_BIT.__getitem__),
        "exit_code": named(page.sw_exit_code, enum_name(page.exit_code)),
        "shared_buffer": page.shared_buffer.hex(),
        "protocol_version": page.protocol_version,
        "ghcb_usage": page.ghcb_usage,
    }


def _page_text(page: GhcbPage, name: str, show_all: bool, out: TextIO) -> None:
    valid = page.valid_fields
    # Fields with a valid bit show when valid; those without one (x87_state_gpa) when set.
    rows = [
        f
        for f in INT_FIELDS
        if show_all
        or f.name in valid
        or (f.name not in VALID_BIT and f.name not in _HEADER and getattr(page, f.name))
    ]
    hidden = sum(
        1 for f in INT_FIELDS if f not in rows and f.name in VALID_BIT and getattr(page, f.name)
    )
    print(f"GHCB page {name} ({GHCB_SIZE} bytes)", file=out)
    print(
        f"  exit code         {page.sw_exit_code:#x} {enum_name(page.exit_code) or '?'}", file=out
    )
    print(f"  protocol_version  {page.protocol_version}", file=out)
    print(f"  ghcb_usage        {page.ghcb_usage}", file=out)
    print(f"  valid bitmap      {page.valid_bitmap.hex()}", file=out)
    print(f"  {'field':<16}  {'offset':>6}  {'bit':>3}  valid  value", file=out)
    for f in rows:
        bit = VALID_BIT.get(f.name)
        mark = "yes" if f.name in valid else ("-" if bit is None else "no")
        bit_text = "-" if bit is None else str(bit)
        value = getattr(page, f.name)
        print(f"  {f.name:<16}  {f.offset:#6x}  {bit_text:>3}  {mark:<5}  {value:#x}", file=out)
    if hidden:
        print(f"  ({hidden} non-zero field(s) not marked valid: --all lists them)", file=out)
    used = sum(1 for b in page.shared_buffer if b)
    print(f"  shared_buffer     {used} non-zero byte(s) of {len(page.shared_buffer)}", file=out)
    if page.undefined_valid_bits:
        bits = ", ".join(map(str, page.undefined_valid_bits))
        print(f"  undefined valid bits: {bits}", file=out)


def _cmd_decode(args: argparse.Namespace, out: TextIO) -> int:
    page = parse_page(read_structure(args, GHCB_SIZE))
    if args.json:
        emit(page_json(page), out)
    else:
        _page_text(page, shown_name(args), args.all, out)
    return EXIT_OK


# -- check ------------------------------------------------------------------------------------
def report(
    violations: list[Violation], extra: dict[str, object], args: argparse.Namespace, out: TextIO
) -> int:
    """Print violations (one JSON object, or one line each and a count); status 1 on errors."""
    errors = sum(1 for v in violations if v.severity is Severity.ERROR)
    if args.json:
        emit({"ok": not errors, "violations": [v.to_json() for v in violations], **extra}, out)
    else:
        for v in violations:
            where = "-" if v.offset is None else f"{v.offset:#x}"
            print(
                f"{v.severity.value:<7} {v.code:<24} {where:>6}  {v.message}  [{v.spec}]", file=out
            )
        print(f"{errors} error(s), {len(violations) - errors} warning(s)", file=out)
    return EXIT_FINDINGS if errors else EXIT_OK


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    data = read_structure(args, GHCB_SIZE)
    try:
        result = check_page_full(
            data,
            validator=ABI_VALIDATORS[args.abi],
            snp=not args.sev_es,
            ghcb_gpa=args.ghcb_gpa,
            ghcb_version=args.ghcb_version,
        )
    except FieldValueError as e:
        if e.field not in _HOST_OPTIONS:
            raise
        # A host KVM cannot have (no GHCB, a v1 SNP VM) is a bad argument, not a finding.
        raise Usage(f"{_HOST_OPTIONS[e.field]}: {e.message}") from None
    answer = result.expected_response
    extra: dict[str, object] = {
        "abi": args.abi,
        "expected_response": None if answer is None else answer.to_json(),
        "stage": None if answer is None else answer.stage.value,
        "responses": {name: r.to_json() for name, r in result.responses.items()},
    }
    status = report(list(result.violations), extra, args, out)
    if not args.json and answer is not None:
        print(f"KVM ({args.abi}) answers {_answer(answer)}", file=out)
        for name, other in result.responses.items():
            if other != answer:
                print(f"  ({name} answers {_answer(other)})", file=out)
    return status


#: check_page_full's host-view fields and the options that set them.
_HOST_OPTIONS: Final = {"ghcb_gpa": "--ghcb-gpa", "ghcb_version": "--ghcb-version"}


def _answer(r: KvmResponse) -> str:
    # EXITINFO1 = 2 (MALFORMED_INPUT) carries a GHCB_ERR_* reason in EXITINFO2
    reason = GhcbErr.from_int(r.exit_info_2) if r.exit_info_1 == HvResp.MALFORMED_INPUT else None
    why = f" {enum_name(reason)}" if enum_name(reason) else ""
    return f"SW_EXITINFO1={r.exit_info_1:#x} SW_EXITINFO2={r.exit_info_2:#x}{why} ({r.stage.value})"


# -- encode -----------------------------------------------------------------------------------
def _field(name: str) -> FlatField:
    field = _BY_NAME.get(name)
    if field is None:
        raise Usage(f"no GHCB field {name!r} (fields as Linux struct ghcb: rax, sw_exit_code, ...)")
    return field


def _value(field: FlatField, value: object) -> int | bytes:
    """A field's value from text or JSON: ints (decimal, 0x hex; ExitCode names for
    sw_exit_code), byte fields as hex zero-padded to the field's size."""
    where = f"field {field.name}"
    if field.kind == "bytes":
        if not isinstance(value, str):
            raise Usage(f"{where}: give hex bytes")
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise Usage(f"{where}: not hex: {value[:40]!r}") from None
        if len(data) > field.size:
            raise Usage(f"{where}: {len(data)} bytes, the field holds {field.size}")
        return data.ljust(field.size, b"\0")
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= field.max_value:
            raise Usage(f"{where}: {value} does not fit {field.size} bytes")
        return value
    if not isinstance(value, str):
        raise Usage(f"{where}: give an integer")
    if field.name == "sw_exit_code" and value in ExitCode.__members__:
        return int(ExitCode[value])
    return parse_number(value, where, maximum=field.max_value)


def _from_json(path: str) -> GhcbPage:
    """A page from a JSON object: ``page decode --json`` output, or ``{field: value}``."""
    try:
        doc = json.loads(read_path(path, limit=_JSON_MAX, form="binary"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, too deep, huge numbers
        raise InputError(f"{path}: not JSON: {e}", rule="input-json", spec="ghcb CLI") from None
    if not isinstance(doc, dict):
        raise Usage(f"{path}: a JSON object is needed")
    if "fields" in doc:  # a page decode document: values as they were, the valid set as listed
        fields, valid = doc.get("fields"), doc.get("valid", [])
        if not isinstance(fields, dict) or not isinstance(valid, list):
            raise Usage(f"{path}: 'fields' must be an object and 'valid' a list")
        values = {n: _value(_field(n), v) for n, v in fields.items()}
        if "shared_buffer" in doc:
            values["shared_buffer"] = _value(_field("shared_buffer"), doc["shared_buffer"])
        bits = 0
        for name in valid:
            if not isinstance(name, str) or name not in VALID_BIT:
                raise Usage(f"{path}: {name!r} in 'valid' is no field with a valid bit")
            bits |= 1 << VALID_BIT[name]
        values["valid_bitmap"] = bits.to_bytes(_BY_NAME["valid_bitmap"].size, "little")
        return GhcbPage.empty().replace(**values)
    return GhcbPage.with_fields(**{n: _value(_field(n), v) for n, v in doc.items()})


def _cmd_encode(args: argparse.Namespace, out: TextIO) -> int:
    page = GhcbPage.empty() if args.source is None else _from_json(args.source)
    values = {name: _value(_field(name), text) for name, text in field_pairs(args.pairs).items()}
    page = page.with_fields(**values)
    data = build_page(page)
    as_hex = args.hex or args.output is None
    if args.output == "-" and args.json:
        raise Usage("-o - writes the page to stdout: it cannot also carry --json")
    if args.output is not None:
        text = "".join(line + "\n" for line in hex_lines(data))
        write_binary(args.output, text.encode() if as_hex else data, out)
    if args.json:
        doc = page_json(page)
        doc["output"] = args.output
        emit(doc, out)
    elif args.output is None:
        out.write("".join(line + "\n" for line in hex_lines(data)))
    elif args.output != "-":
        valid = ", ".join(sorted(page.valid_fields, key=VALID_BIT.__getitem__)) or "none"
        print(f"wrote {args.output}: {len(data)} bytes, valid: {valid}", file=out)
    return EXIT_OK


# -- wiring -----------------------------------------------------------------------------------
def register(group: Group, command: Command) -> None:
    """The ``page`` commands."""
    p = command(
        group,
        "decode",
        "decode a GHCB page",
        _cmd_decode,
        "ghcb page decode spec/vectors/pages/snp_ext_guest_request.bin\n"
        "xxd page.bin | ghcb page decode - --json\n"
        "ghcb page decode guest-memory.bin --offset 0x1000 --all",
    )
    add_input(p, "a GHCB page (4096 bytes)")
    p.add_argument("--all", action="store_true", help="list every field, not only valid ones")
    p = command(
        group,
        "check",
        "every rule of the GHCB spec and KVM a page breaks, and what KVM answers "
        "(SW_EXITINFO1/2); exit 1 on errors",
        _cmd_check,
        "ghcb page check spec/vectors/pages/check/missing_input.bin\n"
        "ghcb page check page.bin --abi v15 --json\n"
        "ghcb page check page.bin --sev-es --ghcb-gpa 0x7f000 --ghcb-version 1",
    )
    add_input(p, "a GHCB page (4096 bytes)")
    p.add_argument(
        "--abi",
        choices=tuple(ABI_VALIDATORS),
        default="merged",
        help="which KVM tree judges: merged (mainline, default) or v15 (the seed patch's)",
    )
    p.add_argument("--sev-es", action="store_true", help="judge for an SEV-ES (not SNP) guest")
    p.add_argument(
        "--ghcb-gpa",
        type=number_type("--ghcb-gpa"),
        metavar="GPA",
        help="the GHCB's guest-physical address (default: the page sw_scratch is in)",
    )
    p.add_argument(
        "--ghcb-version",
        type=number_type("--ghcb-version"),
        default=DEFAULT_GHCB_VERSION,
        metavar="N",
        help=f"the VM's GHCB protocol version (default {DEFAULT_GHCB_VERSION})",
    )
    p = command(
        group,
        "encode",
        "build a page from FIELD=VALUE pairs (their valid bits set) or a JSON object",
        _cmd_encode,
        "ghcb page encode sw_exit_code=SNP_EXT_GUEST_REQUEST sw_exit_info_1=0x7f000 "
        "sw_exit_info_2=0x7e000 rax=0x80000 rbx=4 protocol_version=2 -o page.bin\n"
        "ghcb page decode page.bin --json | ghcb page encode --from - --hex",
    )
    p.add_argument(
        "pairs",
        nargs="*",
        metavar="FIELD=VALUE",
        help="a field of Linux struct ghcb: integers decimal or 0x hex (sw_exit_code also "
        "by ExitCode name), byte fields as hex zero-padded to their size",
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="start from a JSON object: page decode --json output (values and valid set as "
        "they are) or {field: value} (valid bits set); - for stdin",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="write the page to OUT (- for stdout)")
    p.add_argument("--hex", action="store_true", help="write plain hex (the default without -o)")
