"""``ghcb certs check|parse|build``: the Extended Guest Request certificate table.

Hostile tables have one entry per 24 bytes, and overlapping entries can each name most of the
input. So listings show at most :data:`~ghcb.cli._common.LIST_CAP` entries unless ``--all``
(with the total always given), and an entry is named from its span of the input: only the
listed ASK-GUID entries need their payload (ASK or ASVK, by subject), and a span is copied only
when it has the shape of one DER certificate, once per distinct span — so naming copies at
most about the input's size, not the sum of overlapping entries.
"""

from __future__ import annotations

import itertools
import pathlib
import re
import uuid
from typing import TYPE_CHECKING, Final, NamedTuple, TextIO

from ghcb._bytes import byte_view, view_bytes
from ghcb._certwalk import U32_MAX, Row, Rows, Walk
from ghcb._der import is_x509
from ghcb._input import read_path
from ghcb._x509 import ask_or_asvk
from ghcb.certs import (
    EXTRA_GUID_NAMES,
    SEV_FW_BLOB_MAX_SIZE,
    CertEntry,
    CertGuid,
    build_cert_table,
    check_cert_table,
    pages_needed,
    sha256_hex,
    subject_common_name,
    subject_text,
)
from ghcb.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    LIST_CAP,
    Unusable,
    Usage,
    add_input,
    emit,
    existing_dir,
    number_type,
    read_structure,
    shown_name,
    write_binary,
)
from ghcb.errors import Severity

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from ghcb.cli._common import Command, Group
    from ghcb.errors import Violation

#: The largest table (or certificate file) the command reads: a reader bound, not a rule —
#: 1024 times Linux's SEV_FW_BLOB_MAX_SIZE (``--max-size`` only sets ``too-large``).
CERTS_INPUT_MAX: Final = 1024 * SEV_FW_BLOB_MAX_SIZE
_KIND: Final = {g.value: g for g in CertGuid}
#: check_cert_table's summary finding of a capped group (ghcb._certwalk.Walk.findings).
_MORE: Final = re.compile(r"(\d+) more entries break this rule")
#: ``--abbreviate``: findings listed per code without ``--all``.
_PER_CODE: Final = 16


class _Row(NamedTuple):
    """An entry header as listed: where it is and its name."""

    guid: str
    name: str | None
    offset: int
    length: int


def _index(
    data: bytes, show_all: bool, readable: bytearray | None = None
) -> tuple[list[_Row], int]:
    """``(rows, total)``: the entry headers up to the terminator (with ``readable``, only
    those it flags), at most LIST_CAP rows unless ``show_all``, each named as
    :func:`ghcb.certs.cert_names` names it."""
    view = byte_view(data, what="a certificate table", spec="ghcb CLI")
    rows = Rows(view, view_bytes(view), "struct")

    def kept() -> Iterator[Row]:
        return (r for i, r in enumerate(rows) if readable is None or readable[i])

    vlek, vcek = CertGuid.VLEK.value.bytes, CertGuid.VCEK.value.bytes
    guids = {guid for guid, _, _ in kept() if guid in (vlek, vcek)}
    has_vlek, has_vcek = vlek in guids, vcek in guids
    total = len(rows) if readable is None else readable.count(1)
    asks: dict[tuple[int, int], str] = {}  # one name per distinct span
    out: list[_Row] = []
    for guid_bytes, offset, length in kept() if show_all else itertools.islice(kept(), LIST_CAP):
        guid = uuid.UUID(bytes=guid_bytes)
        kind = _KIND.get(guid)
        name: str | None
        if kind is CertGuid.ASK:
            if (offset, length) not in asks:
                span = view[offset : offset + length] if offset + length <= len(data) else view[:0]
                # copied only when it is shaped as one certificate (then it is its own bytes)
                payload = span.tobytes() if is_x509(span) else b""
                asks[offset, length] = ask_or_asvk(payload, has_vlek=has_vlek, has_vcek=has_vcek)
            name = asks[offset, length]
        else:
            name = kind.name if kind is not None else EXTRA_GUID_NAMES.get(guid)
        out.append(_Row(str(guid), name, offset, length))
    return out, total


def _hidden(v: Violation) -> int:
    """How many findings a capped group's summary stands for (0 for a plain finding)."""
    m = _MORE.match(v.message) if v.offset is None else None
    return int(m.group(1)) if m else 0


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    data = read_structure(args, CERTS_INPUT_MAX)
    limit = None if args.all else _PER_CODE
    violations = check_cert_table(data, max_size=args.max_size, limit_per_code=limit)
    rows, total = _index(data, args.all)
    counts = {Severity.ERROR: 0, Severity.WARNING: 0}
    for v in violations:
        counts[v.severity] += _hidden(v) or 1
    errors, warnings = counts[Severity.ERROR], counts[Severity.WARNING]
    if args.json:
        emit(
            {
                "ok": not errors,
                "violations": [v.to_json() for v in violations],
                "errors": errors,
                "warnings": warnings,
                "entries": [r._asdict() for r in rows],
                "entries_total": total,
            },
            out,
        )
    else:
        for v in violations:
            where = "-" if v.offset is None else f"{v.offset:#x}"
            print(
                f"{v.severity.value:<7} {v.code:<20} {where:>8}  {v.message}  [{v.spec}]", file=out
            )
        print(f"{errors} error(s), {warnings} warning(s); {total} entries", file=out)
        if any(_hidden(v) for v in violations):
            print(
                f"(at most {_PER_CODE} findings listed per code: --all lists every one)", file=out
            )
    return EXIT_FINDINGS if errors else EXIT_OK


def _cmd_parse(args: argparse.Namespace, out: TextIO) -> int:
    data = read_structure(args, CERTS_INPUT_MAX)
    # The walk holds a few bytes per entry; entries are materialised only to be listed,
    # extracted or hashed (a hostile table has one per 24 bytes).
    view = byte_view(data, what="a certificate table", spec="ghcb CLI")
    readable = Walk(view, strict=not args.lenient).readable
    index, total = _index(data, args.all, readable)
    rows = []
    for row in index:
        payload = data[row.offset : row.offset + row.length]
        rows.append(
            {**row._asdict(), "sha256": sha256_hex(payload), "subject": subject_text(payload)}
        )
    if args.extract:
        _extract(data, _index(data, True, readable)[0], args.extract)
    if args.json:
        doc = {"ok": True, "entries": rows, "entries_total": total, "size": len(data)}
        emit({**doc, "pages": pages_needed(len(data))}, out)
        return EXIT_OK
    print(f"certificate table {shown_name(args)}: {total} entries, {len(data)} bytes", file=out)
    for row, listed in zip(index, rows, strict=True):
        print(
            f"  {row.name or '(unknown)':<8} {row.guid}  offset {row.offset:#06x}"
            f"  length {row.length:>5}  sha256 {listed['sha256']}",
            file=out,
        )
        print(f"           subject: {listed['subject'] or '(not X.509)'}", file=out)
    if len(rows) < total:
        print(f"  ... {total - len(rows)} more (--all lists every one)", file=out)
    return EXIT_OK


def _extract(data: bytes, rows: list[_Row], folder: str) -> None:
    target = pathlib.Path(folder)
    try:
        for i, row in enumerate(rows):
            payload = data[row.offset : row.offset + row.length]
            suffix = "der" if subject_common_name(payload) is not None else "bin"
            (target / f"{i}-{(row.name or row.guid).lower()}.{suffix}").write_bytes(payload)
    except OSError as e:
        raise Unusable(f"cannot write to {folder}: {e.strerror or e}") from e


_BUILD_ORDER: Final = (
    ("ark", CertGuid.ARK),
    ("ask", CertGuid.ASK),
    ("asvk", CertGuid.ASK),  # the ASVK is stored under the ASK GUID
    ("vcek", CertGuid.VCEK),
    ("vlek", CertGuid.VLEK),
    ("crl", CertGuid.CRL),
)


def _certificate(path: str) -> bytes:
    return read_path(path, limit=CERTS_INPUT_MAX, form="binary")


def _cmd_build(args: argparse.Namespace, out: TextIO) -> int:
    if args.ask and args.asvk:
        raise Usage("--ask and --asvk share the ASK GUID: give one of them")
    if args.output == "-" and args.json:
        raise Usage("-o - writes the table to stdout: it cannot also carry --json")
    entries = [
        CertEntry(guid.value, _certificate(getattr(args, option)))
        for option, guid in _BUILD_ORDER
        if getattr(args, option)
    ]
    for spec in args.extra:
        guid_text, sep, path = spec.partition("=")
        try:
            guid = uuid.UUID(guid_text)
        except ValueError:
            raise Usage(f"--extra wants GUID=FILE, got {spec!r}") from None
        if not sep or not path:
            raise Usage(f"--extra wants GUID=FILE, got {spec!r}")
        entries.append(CertEntry(guid, _certificate(path)))
    if not entries:
        raise Usage("give at least one certificate (--ark, --ask, --vcek, ...)")
    blob = build_cert_table(entries, pad_to_page=args.pad)
    write_binary(args.output, blob, out)
    rows, _ = _index(blob, True)
    if args.json:
        doc = {
            "ok": True,
            "output": args.output,
            "size": len(blob),
            "pages": pages_needed(len(blob)),
            "entries": [r._asdict() for r in rows],
        }
        emit(doc, out)
    elif args.output != "-":
        print(
            f"wrote {args.output}: {len(blob)} bytes, {pages_needed(len(blob))} page(s)", file=out
        )
        for row in rows:
            print(
                f"  {row.name or row.guid:<8} offset {row.offset:#06x} length {row.length}",
                file=out,
            )
    return EXIT_OK


def register(group: Group, command: Command) -> None:
    """The ``certs`` commands."""
    table = "spec/vectors/milan_cert_table.bin"
    p = command(
        group,
        "check",
        "every rule a certificate table breaks; exit 1 on errors",
        _cmd_check,
        f"ghcb certs check {table}\nghcb certs check auxblob.bin --max-size 0x8000 --json",
    )
    add_input(p, "a table (an auxblob, the guest's certificate pages)")
    p.add_argument(
        "--max-size",
        type=number_type("--max-size", minimum=1, maximum=U32_MAX),
        default=SEV_FW_BLOB_MAX_SIZE,
        metavar="N",
        help="reader's buffer size for too-large (default: Linux's 16 KiB)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help=f"list every finding and entry (default: {_PER_CODE} findings per code, "
        f"{LIST_CAP} entries)",
    )
    p = command(
        group,
        "parse",
        "list a table's certificates: name, GUID, offset, length, SHA-256, subject",
        _cmd_parse,
        f"ghcb certs parse {table}\nghcb certs parse blob.bin --extract certs/ --json",
    )
    add_input(p, "a table")
    p.add_argument(
        "--extract", type=existing_dir, metavar="DIR", help="write each certificate into DIR"
    )
    p.add_argument("--lenient", action="store_true", help="drop broken entries, do not fail")
    p.add_argument("--all", action="store_true", help=f"list every entry (default: {LIST_CAP})")
    p = command(
        group,
        "build",
        "write a canonical table (the blob QEMU's certs-path and snphost take)",
        _cmd_build,
        "ghcb certs build --ark ark.pem --ask ask.pem --vcek vcek.der -o table.bin\n"
        "ghcb certs build --vcek vcek.der "
        "--extra ecae0c0f-9502-43b1-afa2-0ae2e0d565b6=info.bin --pad -o - | xxd",
    )
    for option, guid in _BUILD_ORDER:
        p.add_argument(
            f"--{option}",
            metavar="FILE",
            help=f"{option.upper()} certificate (DER or PEM; GUID {guid.value})",
        )
    p.add_argument(
        "--extra", metavar="GUID=FILE", action="append", default=[], help="another entry (repeat)"
    )
    p.add_argument("--pad", action="store_true", help="zero-pad to a multiple of 4096")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file, - = stdout")
