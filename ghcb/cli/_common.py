"""What every command family shares: the parser class, strict numbers, input and output."""

from __future__ import annotations

import argparse
import json
import pathlib
import re
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO

from ghcb._input import read_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeAlias

    from ghcb._input import Form

    Handler: TypeAlias = Callable[[argparse.Namespace, TextIO], int]
    Group: TypeAlias = argparse._SubParsersAction["Parser"]
    #: ``command(group, name, help, handler, examples)``: a subcommand with ``--json`` and an
    #: epilog of examples (:func:`ghcb.cli._command`).
    Command: TypeAlias = Callable[[Group, str, str, Handler, str], argparse.ArgumentParser]

EXIT_OK: Final = 0
EXIT_FINDINGS: Final = 1
EXIT_USAGE: Final = 2

#: List at most this many entries in a listing unless ``--all`` (the count is always given).
LIST_CAP: Final = 64

#: Decimal or ``0x`` hex, ASCII digits only: the only number forms the help promises.
_NUMBER: Final = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+", re.ASCII)
_U64_MAX: Final = (1 << 64) - 1


class Usage(Exception):
    """Unusable arguments: exit status 2, with the command's usage line (``parser``: the
    command whose arguments they are, when the command raises it: the one being run)."""

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None) -> None:
        super().__init__(message)
        self.parser = parser


class Unusable(Exception):
    """Exit status 2 without a usage line: an output that cannot be written, a blob the
    exchange cannot run with."""


class _Once(argparse.Action):
    """An option that may be given once: a repeat is a usage error, not "last one wins"."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.flag = kwargs.pop("flag", False)
        if self.flag:
            kwargs.update(nargs=0, default=kwargs.get("default", False))
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        seen: set[str] = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in seen:
            parser.error(f"{option_string} given more than once")
        seen.add(self.dest)
        setattr(namespace, self.dest, True if self.flag else values)


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`Usage` (one usage line, exit 2) instead of exiting, and
    whose plain and ``store_true`` options refuse repeats."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = kwargs.get("action")
        if args and args[0].startswith("-") and action in (None, "store", "store_true"):
            if action == "store_true":
                kwargs["flag"] = True
            kwargs["action"] = _Once
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise Usage(message, self)


def one_line_usage(parser: argparse.ArgumentParser) -> str:
    """The parser's usage, on one line."""
    return " ".join(parser.format_usage().split())


def parse_number(text: str, what: str, *, maximum: int = _U64_MAX, minimum: int = 0) -> int:
    """``text`` as decimal or ``0x`` hex, ASCII digits only (no ``0b``, ``_``, signs).

    Raises:
        Usage: not such a number, or outside ``minimum..maximum``.
    """
    if not _NUMBER.fullmatch(text):
        raise Usage(f"{what}: not a number: {text!r} (decimal or 0x-prefixed hex)")
    value = int(text, 0) if text[:2].lower() == "0x" else int(text, 10)
    if not minimum <= value <= maximum:
        raise Usage(f"{what}: {text} is outside {minimum}..{maximum:#x}")
    return value


def field_pairs(words: Sequence[str]) -> dict[str, str]:
    """``FIELD=VALUE`` words as a mapping (a field given twice is a usage error)."""
    pairs: dict[str, str] = {}
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name:
            raise Usage(f"expected FIELD=VALUE, got {word!r}")
        if name in pairs:
            raise Usage(f"field {name} given more than once")
        pairs[name] = text
    return pairs


def number_type(what: str, *, maximum: int = _U64_MAX, minimum: int = 0) -> Callable[[str], int]:
    """An argparse ``type=`` for :func:`parse_number`."""

    def convert(text: str) -> int:
        try:
            return parse_number(text, what, maximum=maximum, minimum=minimum)
        except Usage as e:  # argparse names the option itself
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{what}: ")) from None

    return convert


def add_input(p: argparse.ArgumentParser, what: str) -> None:
    """The input arguments: FILE (or -), ``--offset N``, ``--input-format``."""
    p.add_argument("file", metavar="FILE", help=f"{what}: binary or a hex dump; - for stdin")
    p.add_argument(
        "--offset",
        type=number_type("--offset"),
        metavar="N",
        help="take the structure N bytes into FILE (a larger dump); the rest is not read",
    )
    p.add_argument(
        "--input-format",
        choices=("auto", "binary", "hex"),
        default="auto",
        help="auto (default): printable text is a hex dump (plain, xxd, hexdump -C, "
        "od -A x -t x1), anything else binary",
    )


def read_structure(args: argparse.Namespace, limit: int) -> bytes:
    """The structure's bytes named by :func:`add_input`'s arguments (bounded read)."""
    form: Form = args.input_format
    return read_path(args.file, limit=limit, offset=args.offset, form=form)


def shown_name(args: argparse.Namespace) -> str:
    """The input as the readable output names it: the path, or ``stdin`` for ``-``."""
    name: str = args.file
    return "stdin" if name == "-" else name


def emit(doc: dict[str, object], out: TextIO) -> None:
    """One JSON object on one line (``dumps``: the C encoder, 5x ``dump``'s pure Python)."""
    out.write(json.dumps(doc) + "\n")


def named(value: int, name: str | None) -> dict[str, object]:
    """``{"value": int, "name": str | None}``."""
    return {"value": int(value), "name": name}


def enum_name(value: object) -> str | None:
    """The enum member's name, None for a plain int (an unknown code)."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def write_binary(path: str, data: bytes, out: TextIO) -> None:
    """``data`` to ``path``, or to standard output (``out``'s byte stream) for ``-``."""
    if path == "-":
        buffer = getattr(out, "buffer", None)
        if buffer is None:
            raise Unusable("-o -: this output stream takes no binary data")
        out.flush()
        buffer.write(data)
        buffer.flush()
        return
    try:
        pathlib.Path(path).write_bytes(data)
    except OSError as e:
        raise Unusable(f"cannot write {path}: {e.strerror or e}") from e


def existing_dir(text: str) -> str:
    """An argparse ``type=`` for a directory that must already exist."""
    if not pathlib.Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not an existing directory")
    return text


def hex_lines(data: bytes, width: int = 32) -> list[str]:
    """Plain hex, ``width`` bytes a line (what ``xxd -p -c 32`` writes; read back as is)."""
    return [data[i : i + width].hex() for i in range(0, len(data), width)]
