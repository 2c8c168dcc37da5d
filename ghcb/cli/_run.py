"""``ghcb demo``, ``ghcb simulate`` and ``ghcb pki generate``: the wiring of the end-to-end
commands (their work is in :mod:`ghcb.demo`, :mod:`ghcb.simulate` and
:mod:`ghcb.hypervisor.pki`, imported only when run: they build keys)."""

from __future__ import annotations

import argparse
import pathlib
from typing import TYPE_CHECKING, Final, TextIO

from ghcb._input import read_path
from ghcb.cli._certs import CERTS_INPUT_MAX
from ghcb.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    Unusable,
    Usage,
    emit,
    number_type,
    parse_number,
)

if TYPE_CHECKING:
    from ghcb.cli._common import Command, Group

_PRODUCTS: Final = {"milan": "Milan", "genoa": "Genoa", "turin": "Turin"}


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.demo import format_text, run_demo

    steps = run_demo()
    ok = all(step.ok for step in steps)
    if args.json:
        steps_json = [
            {"title": s.title, "ok": s.ok, "lines": s.lines, "facts": s.facts} for s in steps
        ]
        emit({"ok": ok, "steps": steps_json}, out)
    else:
        print(format_text(steps), file=out)
    return EXIT_OK if ok else EXIT_FINDINGS


def _cmd_pki_generate(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.hypervisor.pki import write_chain

    folder = pathlib.Path(args.dir)
    if not folder.is_dir():
        raise Usage(f"{args.dir}: not an existing directory")
    written = write_chain(folder, _PRODUCTS[args.product], form=args.form)
    files = {name: str(path) for name, path in written.items()}
    if args.json:
        product = _PRODUCTS[args.product]
        emit({"ok": True, "product": product, "form": args.form, "files": files}, out)
    else:
        for name, path in files.items():
            print(f"{name:<5} {path}", file=out)
    return EXIT_OK


def _user_data(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Usage(f"--user-data is not hex: {text[:80]!r}") from None


def _pages(text: str) -> int:
    from ghcb.simulate import MAX_PAGES

    try:
        return parse_number(text, "--pages", maximum=MAX_PAGES)
    except Usage as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from ghcb.simulate import SimulateOptions, SimulateUsageError, format_text, simulate

    certs = None if args.certs is None else read_path(args.certs, limit=CERTS_INPUT_MAX)
    opts = SimulateOptions(
        certs=certs,
        no_certs=args.no_certs,
        pages=args.pages,
        abi=args.abi,
        vmm_answer=args.vmm_answer,
        product=args.product,
        user_data=_user_data(args.user_data),
        report_version=args.report_version,
        signing_key=args.signing_key,
        trace=args.trace,
    )
    try:
        doc = simulate(opts)
    except SimulateUsageError as e:  # a blob or option set the exchange cannot run with
        raise Unusable(str(e)) from e
    if args.json:
        emit(doc, out)
    else:
        print(format_text(doc), file=out)
    return EXIT_OK if doc["ok"] else EXIT_FINDINGS


def register_demo(groups: Group, command: Command) -> None:
    """``demo`` and ``simulate`` (top-level commands)."""
    command(
        groups,
        "demo",
        "the whole exchange end to end: guest, reference KVM and VMM, simulated firmware",
        _cmd_demo,
        "ghcb demo\nghcb demo --json",
    )
    sim = command(
        groups,
        "simulate",
        "one Extended Guest Request end to end, with the VMM's answer and the firmware chosen",
        _cmd_simulate,
        "ghcb simulate --abi v15\nghcb simulate --vmm-answer invalid-len --json\n"
        "ghcb simulate --certs spec/vectors/milan_cert_table.bin --pages 1",
    )
    served = sim.add_mutually_exclusive_group()
    served.add_argument("--certs", metavar="FILE", help="certificate blob the host serves")
    served.add_argument(
        "--no-certs", action="store_true", help="serve an empty store (the empty table)"
    )
    sim.add_argument(
        "--pages",
        type=_pages,
        metavar="N",
        help="certificate pages the guest offers (default: as many as the table needs)",
    )
    sim.add_argument("--abi", choices=("v15", "merged"), default="merged")
    sim.add_argument("--vmm-answer", choices=("ok", "busy", "generic", "invalid-len"), default="ok")
    sim.add_argument("--product", choices=tuple(_PRODUCTS), default="milan")
    sim.add_argument(
        "--user-data", metavar="HEX", default="", help="REPORT_DATA (up to 64 bytes, zero-padded)"
    )
    sim.add_argument(
        "--report-version",
        type=number_type("--report-version"),
        choices=(2, 3, 5),
        default=5,
        metavar="{2,3,5}",
    )
    sim.add_argument("--signing-key", choices=("vcek", "vlek"), default="vcek")
    sim.add_argument("--trace", action="store_true", help="the guest's whole life, every exchange")


def register_pki(group: Group, command: Command) -> None:
    """The ``pki`` commands."""
    gen = command(
        group,
        "generate",
        "write the synthetic chain (ARK, ASK, ASVK, VCEK, VLEK)",
        _cmd_pki_generate,
        "ghcb pki generate /tmp/chain\nghcb pki generate out/ --product genoa --form der --json",
    )
    gen.add_argument("dir", metavar="DIR", help="an existing directory")
    gen.add_argument("--product", choices=tuple(_PRODUCTS), default="milan")
    gen.add_argument("--form", choices=("pem", "der"), default="pem")
