"""``ghcb psc decode|check``: the Page State Change descriptor in the GHCB shared buffer."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from ghcb.cli._common import EXIT_OK, add_input, emit, number_type, read_structure, shown_name
from ghcb.cli._page import report
from ghcb.psc import PSC_MAX_BYTES, check_psc, parse_psc
from ghcb.schemas.psc import VMGEXIT_PSC_MAX_COUNT

if TYPE_CHECKING:
    import argparse

    from ghcb.cli._common import Command, Group


def _cmd_decode(args: argparse.Namespace, out: TextIO) -> int:
    desc = parse_psc(read_structure(args, PSC_MAX_BYTES))
    doc = desc.to_json()
    if args.json:
        emit({"ok": True, **doc}, out)
        return EXIT_OK
    entries = doc["entries"]
    assert isinstance(entries, list)
    print(
        f"PSC descriptor {shown_name(args)}: {len(entries)} entries, cur_entry {desc.cur_entry}, "
        f"end_entry {desc.end_entry}, reserved {desc.hdr.reserved_0x4:#x}",
        file=out,
    )
    print(
        f"  {'index':>5}  {'offset':>6}  live  {'operation':<10}  {'gpa':>14}  size  cur_page",
        file=out,
    )
    for e in entries:
        op = e["operation"]["name"] or f"{e['operation']['value']:#x}"
        size = "2M" if e["pagesize"] else "4K"
        live = "yes" if e["live"] else "-"
        print(
            f"  {e['index']:>5}  {e['offset']:#6x}  {live:<4}  {op:<10}  {e['gpa']:#14x}  "
            f"{size:<4}  {e['cur_page']}/{e['npages']}",
            file=out,
        )
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    data = read_structure(args, PSC_MAX_BYTES)
    return report(check_psc(data, max_entries=args.max_entries), {}, args, out)


def register(group: Group, command: Command) -> None:
    """The ``psc`` commands."""
    what = f"a PSC descriptor (8-byte header + 8-byte entries, at most {PSC_MAX_BYTES} bytes)"
    p = command(
        group,
        "decode",
        "decode a Page State Change descriptor: header and every entry",
        _cmd_decode,
        "ghcb psc decode psc.bin\nghcb psc decode page.bin --offset 0x800 --json",
    )
    add_input(p, what)
    p = command(
        group,
        "check",
        "every rule of KVM's snp_begin_psc a descriptor breaks; exit 1 on errors",
        _cmd_check,
        "ghcb psc check psc.bin\nghcb psc check page.bin --offset 0x800 --json\n"
        "ghcb psc check psc.bin --max-entries 2",
    )
    add_input(p, what)
    p.add_argument(
        "--max-entries",
        type=number_type("--max-entries", maximum=VMGEXIT_PSC_MAX_COUNT),
        metavar="N",
        help="the entries KVM can see (merged KVM: (2032 - 8 - the descriptor's offset in the "
        f"shared buffer) / 8; v15: {VMGEXIT_PSC_MAX_COUNT}); default: those FILE holds",
    )
