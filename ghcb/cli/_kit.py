"""The testing kit's commands: ``ghcb difftest certs`` and ``ghcb vectors export``.

Registering them imports neither :mod:`ghcb.difftest` nor :mod:`ghcb.vectors` (nor what they
pull in: subprocess, the golden-vector readers, hypothesis on a run): each handler imports its
module when the command runs, so every other ``ghcb`` command starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ghcb._extras import MissingExtraError
from ghcb.cli._common import Unusable, emit, number_type

if TYPE_CHECKING:
    import argparse
    from typing import TextIO

    from ghcb.cli._common import Group
    from ghcb.difftest import DiffReport

__all__ = ["register_difftest", "register_vectors"]

#: The longest ``--timeout`` (a day): a parser slower than that per table is hung.
MAX_TIMEOUT: Final = 24 * 60 * 60


def _family(groups: Group, name: str, helptext: str) -> Group:
    family = groups.add_parser(name, help=helptext)
    family.set_defaults(parser=family)
    return family.add_subparsers(dest="command", required=True, metavar="ACTION")


# -- ghcb difftest certs [options] -- CMD ARGS... ---------------------------------------------
def register_difftest(groups: Group) -> None:
    """Add ``difftest certs`` (:mod:`ghcb.difftest`) to the ``ghcb`` command."""
    actions = _family(groups, "difftest", "compare another parser with ghcb")
    helptext = (
        "run a certificate-table parser (table on stdin; JSON entries on stdout and exit 0 to "
        "accept, non-zero to reject) on golden, hostile and generated tables; exit 1 on any "
        "disagreement with ghcb"
    )
    p = actions.add_parser(
        "certs",
        help=helptext,
        description=helptext,
        epilog="examples:\n  ghcb difftest certs -- python3 fuzz/adapters/naive_cert_parser.py\n"
        "  ghcb difftest certs --max-examples 200 --seed 1 --json -- ./my_parser\n",
    )
    p.add_argument("cmd", nargs="+", metavar="CMD", help="the parser's command line (after --)")
    # None: the library's defaults (ghcb.difftest.DEFAULT_MAX_EXAMPLES, DEFAULT_TIMEOUT)
    p.add_argument("--max-examples", type=number_type("--max-examples"), metavar="N")
    p.add_argument("--seed", type=number_type("--seed"), default=0, metavar="S")
    p.add_argument(
        "--timeout",
        type=number_type("--timeout", minimum=1, maximum=MAX_TIMEOUT),
        metavar="SECONDS",
    )
    p.add_argument("--spec", metavar="DIR", help="the spec/ folder of a ghcb checkout")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_difftest_certs, parser=p)


def _difftest_certs(args: argparse.Namespace, out: TextIO) -> int:
    """0 no disagreement, 1 disagreements, 2 unusable (no such command, no golden vectors,
    no hypothesis)."""
    from ghcb import difftest

    limits = {} if args.timeout is None else {"timeout": args.timeout}
    examples = difftest.DEFAULT_MAX_EXAMPLES if args.max_examples is None else args.max_examples
    try:
        parser = difftest.command_parser(args.cmd, **limits)
        report = difftest.difftest(parser, max_examples=examples, seed=args.seed, spec=args.spec)
    except (MissingExtraError, OSError) as e:  # OSError: VectorsUnavailable, no such command
        raise Unusable(str(e)) from e
    if args.json:
        emit(report.to_json(), out)
    else:
        _report_text(report, out)
    return 0 if report.ok else 1


def _report_text(report: DiffReport, out: TextIO) -> None:
    inputs = ", ".join(f"{n} {phase}" for phase, n in report.inputs.items())
    out.write(f"difftest: {inputs}; {len(report.disagreements)} disagreement(s)\n")
    for d in report.disagreements:
        ghcb = "accepts" if d.expected.accepted else f"rejects ({d.expected.detail})"
        if d.got.fault is not None:
            theirs = f"fault: {d.got.fault}"
        elif d.got.accepted:
            theirs = f"accepts {len(d.got.entries)} entries"
        else:
            theirs = f"rejects ({d.got.detail})" if d.got.detail else "rejects"
        out.write(
            f"{d.kind:<18} {d.source}: {len(d.data)} bytes; violations: "
            f"{', '.join(d.violations) or 'none'}\n"
            f"    ghcb {ghcb}; the parser {theirs}\n"
            f"    hex: {d.data[:64].hex()}{'...' if len(d.data) > 64 else ''}\n"
        )


# -- ghcb vectors export DIR [--format json|c] [--spec DIR] [--json] --------------------------
def register_vectors(groups: Group) -> None:
    """Add ``vectors export`` (:mod:`ghcb.vectors`) to the ``ghcb`` command."""
    actions = _family(groups, "vectors", "golden vectors for other languages")
    helptext = "write every golden vector as a file plus manifest.json (and a C header)"
    p = actions.add_parser(
        "export",
        help=helptext,
        description=helptext,
        epilog="examples:\n  ghcb vectors export vectors\n"
        "  ghcb vectors export vectors --format c\n",
    )
    p.add_argument("dir", metavar="DIR", help="output directory (created if missing)")
    p.add_argument(
        "--format", choices=("json", "c"), default="json", help="c: also write ghcb_vectors.h"
    )
    p.add_argument("--spec", metavar="DIR", help="the spec/ folder of a ghcb checkout")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_vectors_export, parser=p)


def _vectors_export(args: argparse.Namespace, out: TextIO) -> int:
    """0 written, 2 no vectors or an unwritable directory."""
    from ghcb import vectors

    try:
        manifest = vectors.export(args.dir, spec=args.spec, c_header=args.format == "c")
    except OSError as e:
        raise Unusable(str(e)) from e
    counts: dict[str, int] = {}
    for row in manifest["vectors"]:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    files = ["manifest.json"] + ([vectors.HEADER_NAME] if args.format == "c" else [])
    if args.json:
        emit({"ok": True, "dir": str(args.dir), "vectors": counts, "files": files}, out)
    else:
        total = sum(counts.values())
        detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        out.write(f"wrote {total} vectors ({detail}) and {', '.join(files)} to {args.dir}\n")
    return 0
