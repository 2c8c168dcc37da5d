"""The ``ghcb`` command (also ``python -m ghcb``).

Every command takes ``--json`` (after the command, or right after ``ghcb``) and then prints
exactly one JSON object, which always has ``"ok"`` (DESIGN.md §3; the keys are listed in the
README). Exit status, on every path:

* 0: done, no errors found;
* 1: the input breaks a rule (errors found, or the bytes are not the structure);
* 2: unusable arguments or input: a usage error (one usage line and the reason), a file that
  cannot be read, a hex dump that cannot be decoded, input longer than the structure's maximum,
  an output that cannot be written.

A closed output pipe (``ghcb ... | head``) ends quietly with status 141 (128 + SIGPIPE, what a
shell reports for a command killed by it); Ctrl-C with 130.

The families live in their own modules: ``_page`` (page), ``_values`` (exitinfo2, msr),
``_kvm`` (kvm), ``_psc`` (psc), ``_certs`` (certs), ``_run`` (demo, simulate, pki), ``_kit``
(difftest, vectors: their modules imported only when they run);
``_common`` has the parser, numbers, input and output they share.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Final, TextIO

from ghcb import __version__
from ghcb._input import InputError
from ghcb.cli import _certs, _kit, _kvm, _page, _psc, _run, _values
from ghcb.cli._common import (
    EXIT_FINDINGS,
    EXIT_USAGE,
    Parser,
    Unusable,
    Usage,
    emit,
    one_line_usage,
)
from ghcb.errors import GhcbError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from ghcb.cli._common import Group, Handler

__all__ = ["main"]

#: 128 + SIGPIPE: the status a shell reports for a command a closed pipe killed.
EXIT_PIPE: Final = 128 + signal.SIGPIPE
EXIT_INTERRUPT: Final = 128 + signal.SIGINT


def _command(
    group: Group,
    name: str,
    helptext: str,
    func: Handler,
    examples: str,
) -> argparse.ArgumentParser:
    """A subcommand: its help, ``--json``, and an epilog of examples."""
    epilog = "examples:\n" + "".join(f"  {line}\n" for line in examples.splitlines())
    p = group.add_parser(name, help=helptext, description=helptext, epilog=epilog)
    p.add_argument("--json", action="store_true", help="print one JSON object (always has 'ok')")
    p.set_defaults(func=func, parser=p)
    return p


def _family(groups: Group, name: str, helptext: str) -> Group:
    parser = groups.add_parser(name, help=helptext, description=helptext)
    parser.set_defaults(parser=parser)
    return parser.add_subparsers(dest="command", required=True, metavar="ACTION")


def parser() -> argparse.ArgumentParser:
    """The ``ghcb`` argument parser."""
    top = Parser(
        prog="ghcb",
        description="Decode, encode and check AMD SEV-ES/SEV-SNP GHCB wire formats.",
        epilog="examples:\n  ghcb page decode page.bin\n  ghcb certs check table.bin --json\n"
        "  ghcb COMMAND ACTION --help",
    )
    top.add_argument("--version", action="version", version=f"ghcb {__version__}")
    top.add_argument(
        "--json", dest="json_first", action="store_true", help="the same as the command's --json"
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _run.register_demo(groups, _command)
    _run.register_pki(_family(groups, "pki", "the synthetic AMD key chain"), _command)
    _page.register(_family(groups, "page", "GHCB pages (4096 bytes)"), _command)
    _values.register_exitinfo2(
        _family(groups, "exitinfo2", "SW_EXITINFO2 of guest requests"), _command
    )
    _values.register_msr(_family(groups, "msr", "GHCB MSR protocol values"), _command)
    _kvm.register(_family(groups, "kvm", "kvm_run bytes of the certificate exits"), _command)
    _psc.register(_family(groups, "psc", "Page State Change descriptors"), _command)
    _certs.register(_family(groups, "certs", "Extended Guest Request certificate tables"), _command)
    _kit.register_difftest(groups)  # imports ghcb.difftest only when it runs
    _kit.register_vectors(groups)  # imports ghcb.vectors only when it runs
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command; returns the exit status (``--help``/``--version`` exit 0 as argparse
    does, by ``SystemExit``)."""
    stdout = out is None
    out = sys.stdout if out is None else out
    words = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in words[: words.index("--")] if "--" in words else "--json" in words
    try:
        return _run_command(words, out, json_mode)
    except BrokenPipeError:
        if stdout:  # the reader went away: no traceback, no second error at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPT


def _run_command(words: list[str], out: TextIO, json_mode: bool) -> int:
    command: argparse.ArgumentParser | None = None
    try:
        args = parser().parse_args(words)
        command = args.parser
        json_mode = args.json = bool(getattr(args, "json", False) or args.json_first)
        status = int(args.func(args, out))
        out.flush()
        return status
    except Usage as e:
        used = e.parser or command
        message = f"{used.prog if used else 'ghcb'}: error: {e}"
        return _fail(out, json_mode, "usage", message, EXIT_USAGE, used)
    except Unusable as e:
        return _fail(out, json_mode, "usage", f"ghcb: {e}", EXIT_USAGE)
    except InputError as e:  # code "usage" as every status-2 failure; the rule says which
        return _fail(out, json_mode, "usage", f"ghcb: {e.message}", EXIT_USAGE, rule=e.rule)
    except GhcbError as e:
        return _fail(out, json_mode, e.rule, f"ghcb: {e}", EXIT_FINDINGS)


def _fail(
    out: TextIO,
    json_mode: bool,
    code: str,
    message: str,
    status: int,
    usage: argparse.ArgumentParser | None = None,
    *,
    rule: str | None = None,
) -> int:
    """Report a failure: one JSON object in JSON mode; on stderr the usage line (usage
    errors) and one line saying why."""
    if json_mode:
        error = {"code": code, "message": message} | ({"rule": rule} if rule else {})
        emit({"ok": False, "error": error}, out)
        out.flush()
    if usage is not None:
        print(one_line_usage(usage), file=sys.stderr)
    print(message, file=sys.stderr)
    return status
