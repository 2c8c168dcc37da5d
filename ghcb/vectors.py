"""The golden vectors of ``spec/vectors/`` for suites in other languages: ``ghcb vectors export``.

Every vector becomes a binary file plus one row of ``manifest.json`` with what a correct
implementation must answer for it: certificate tables (``spec/vectors/certs.json``: verdict of
a strict parse, the first error's rule, every violation of :func:`ghcb.check_cert_table`, the
entries), GHCB pages (``pages.json``: KVM's verdict and GHCB_ERR reason, the exit code,
SW_EXITINFO1/2, RBX, the valid fields), SW_EXITINFO2 values (``exitinfo2.json``: as 8
little-endian bytes, with the EXITINFO1 they follow) and GHCB MSR values (``msr.json``).
``--format c`` also writes ``ghcb_vectors.h``: each vector as a ``static const uint8_t``
array with its verdict, EXITINFO1/EXITINFO2 and RBX, for a guest-kernel selftest or a C/Rust
test that cannot run Python.

The expectations are ghcb's own answers, which ``tests/`` checks against the golden files
row by row; ``tests/test_vectors_export.py`` checks the export against them again and compiles
the header.

The vectors are read from the ``spec/`` folder of a ghcb checkout (the one beside this
package, or ``--spec DIR``); an installed wheel does not carry them.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from ghcb import __version__
from ghcb.certs import cert_names, check_cert_table, located_entries, pages_needed
from ghcb.check import check_page
from ghcb.codes import ExitCode, HvResp
from ghcb.errors import CertTableError, Severity, Violation
from ghcb.exitinfo import decode_exit_info
from ghcb.hypervisor.rules import first_error
from ghcb.msr import decode_msr
from ghcb.page import parse_page

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

__all__ = [
    "CertVector",
    "VectorsUnavailable",
    "add_parser",
    "assemble",
    "cert_entries_json",
    "cert_vectors",
    "export",
    "run",
    "spec_dir",
]

#: The checkout's spec/ folder, beside the package.
DEFAULT_SPEC: Final = Path(__file__).resolve().parent.parent / "spec"
MANIFEST_FORMAT: Final = "ghcb-vectors"
MANIFEST_VERSION: Final = 1
HEADER_NAME: Final = "ghcb_vectors.h"
_U64: Final = (1 << 64) - 1


class VectorsUnavailable(OSError):
    """The golden vectors are not where they were looked for (no ghcb checkout)."""


def spec_dir(path: str | Path | None = None) -> Path:
    """The ``spec/`` folder holding ``vectors/``: ``path``, else the checkout's.

    Raises:
        VectorsUnavailable: it has no ``vectors/certs.json``.
    """
    folder = DEFAULT_SPEC if path is None else Path(path)
    if not (folder / "vectors" / "certs.json").is_file():
        raise VectorsUnavailable(
            f"no golden vectors in {folder}: pass --spec DIR (the spec/ folder of a ghcb "
            "checkout; an installed wheel does not carry them)"
        )
    return folder


def _load(spec: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spec / "vectors" / f"{name}.json").read_text())
    return data


def assemble(parts: Iterable[dict[str, Any]]) -> bytes:
    """A certs.json vector's bytes: its parts ({hex}, {zeros}, {repeat, count}) joined."""
    out = bytearray()
    for part in parts:
        if "hex" in part:
            out += bytes.fromhex(part["hex"])
        elif "zeros" in part:
            out += bytes(part["zeros"])
        else:
            out += bytes.fromhex(part["repeat"]) * part["count"]
    return bytes(out)


@dataclass(frozen=True, slots=True)
class CertVector:
    """A golden certificate table: its name, bytes, source and the file's expectations."""

    name: str
    data: bytes
    source: str
    expect: dict[str, Any]


def cert_vectors(spec: str | Path | None = None) -> list[CertVector]:
    """Every certificate-table vector of ``spec/vectors/certs.json``, in file order.

    Raises:
        VectorsUnavailable: see :func:`spec_dir`.
    """
    folder = spec_dir(spec)
    return [
        CertVector(v["name"], assemble(v["parts"]), v.get("source", ""), v["expect"])
        for v in _load(folder, "certs")["vectors"]
    ]


def cert_entries_json(data: bytes) -> list[dict[str, object]]:
    """The entries of a strict parse as JSON rows ``{guid, name, offset, length}`` (empty
    when the strict parse fails)."""
    try:
        located = located_entries(data)
    except CertTableError:
        return []
    names = cert_names([entry for _, entry in located])
    return [
        {"guid": str(index.guid), "name": name, "offset": index.offset, "length": index.length}
        for (index, _), name in zip(located, names, strict=True)
    ]


def _violations(found: list[Violation]) -> list[dict[str, object]]:
    return [
        {"code": v.code, "severity": str(v.severity), "offset": v.offset, "spec": v.spec}
        for v in found
    ]


def _errors(found: list[Violation]) -> bool:
    return any(v.severity is Severity.ERROR for v in found)


def _file_row(kind: str, name: str, data: bytes) -> dict[str, Any]:
    return {
        "name": f"{kind}/{name}",
        "kind": kind,
        "file": f"{kind}/{name}.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _cert_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    rows = []
    for vector in cert_vectors(spec):
        data = vector.data
        found = check_cert_table(data)
        try:
            located_entries(data)
            strict_error = None
        except CertTableError as e:
            strict_error = e.rule
        row = _file_row("certs", vector.name, data) | {
            "verdict": "reject" if strict_error else "accept",
            "strict_error": strict_error,
            "violations": _violations(found),
            "entries": cert_entries_json(data),
            # the page count a VMM answers with INVALID_LEN when it serves this (valid) table
            "rbx": None if strict_error else pages_needed(len(data)),
            "source": vector.source,
        }
        rows.append((row, data))
    return rows


def _page_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    rows = []
    for vector in _load(spec, "pages")["vectors"]:
        data = (spec / "vectors" / vector["file"]).read_bytes()
        page = parse_page(data)
        found = check_page(data)
        reason = first_error(page)
        code = page.exit_code
        row = _file_row("pages", vector["name"], data) | {
            "verdict": "reject" if reason is not None or _errors(found) else "accept",
            "ghcb_err": None if reason is None else {"value": int(reason), "name": reason.name},
            "exit_code": {
                "value": page.sw_exit_code,
                "name": code.name if isinstance(code, ExitCode) else None,
            },
            "exit_info_1": page.sw_exit_info_1,
            "exit_info_2": page.sw_exit_info_2,
            "rbx": page.rbx,
            "valid": sorted(page.valid_fields),
            "violations": _violations(found),
        }
        rows.append((row, data))
    return rows


def _exit_info_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    table = _load(spec, "exitinfo2")
    rows = []
    for group, response in (
        ("guest_errors", HvResp.NO_ACTION),
        ("ghcb_errors", HvResp.MALFORMED_INPUT),
        ("event_injections", HvResp.ISSUE_EXCEPTION),
    ):
        for vector in table[group]:
            info1 = int(vector.get("exitinfo1", str(int(response))), 0)
            info2 = int(vector["exitinfo2"], 0)
            decoded = decode_exit_info(info1, info2)
            data = info2.to_bytes(8, "little")
            row = _file_row("exitinfo2", vector["name"], data) | {
                "verdict": "accept",
                "group": group,
                "exit_info_1": info1,
                "exit_info_2": info2,
                "decoded": _decoded(decoded),
            }
            rows.append((row, data))
    return rows


def _name(value: object) -> str | None:
    return getattr(value, "name", None)


def _decoded(decoded: Any) -> dict[str, object]:
    out: dict[str, object] = {"response": _name(decoded.response)}
    if decoded.guest_error is not None:
        vmm, fw = decoded.guest_error
        out |= {"vmm_error": {"value": int(vmm), "name": _name(vmm)}}
        out |= {"fw_error": {"value": int(fw), "name": _name(fw)}}
    if decoded.error is not None:
        out["ghcb_err"] = {"value": int(decoded.error), "name": _name(decoded.error)}
    if decoded.event is not None:
        event = decoded.event
        out["event"] = {f.name: getattr(event, f.name) for f in event.FIELDS}
    return out


def _msr_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    rows = []
    for k, vector in enumerate(_load(spec, "msr")["values"]):
        value = int(vector["value"], 0)
        message = decode_msr(value)
        data = value.to_bytes(8, "little")
        name = f"{k:02d}_{(vector['code'] or 'unknown').lower()}"
        row = _file_row("msr", name, data) | {
            "verdict": "accept",
            "value": value,
            "code": vector["code"],
            "decoded": type(message).__name__,
        }
        rows.append((row, data))
    return rows


def export(
    directory: str | Path, *, spec: str | Path | None = None, c_header: bool = False
) -> dict[str, Any]:
    """Write every golden vector under ``directory`` (created if missing) as
    ``<kind>/<name>.bin`` plus ``manifest.json`` (returned), and with ``c_header`` also
    ``ghcb_vectors.h``.

    Raises:
        VectorsUnavailable: see :func:`spec_dir`.
        OSError: the directory cannot be written.
    """
    folder = spec_dir(spec)
    out = Path(directory)
    rows = [*_cert_rows(folder), *_page_rows(folder), *_exit_info_rows(folder), *_msr_rows(folder)]
    for row, data in rows:
        target = out / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "ghcb_version": __version__,
        "verdicts": {
            "accept": "a strict reader accepts it (a page: KVM's validator accepts it)",
            "reject": "a strict reader must reject it (strict_error / ghcb_err say why)",
        },
        "vectors": [row for row, _ in rows],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if c_header:
        (out / HEADER_NAME).write_text(c_header_text(rows))
    return manifest


# -- the C header ----------------------------------------------------------------------------
_KINDS: Final = {"certs": 1, "pages": 2, "exitinfo2": 3, "msr": 4}

_PROLOGUE: Final = """\
/* Golden vectors of ghcb {version} (generated by `ghcb vectors export --format c`; do not
 * edit). Each vector: its bytes, whether a strict reader accepts it, the first error's rule,
 * and where they apply SW_EXITINFO1 / SW_EXITINFO2 (GHCB pages and EXITINFO2 values) and RBX
 * (a page's RBX; for a certificate table, the page count a VMM answers with INVALID_LEN). */
#ifndef GHCB_VECTORS_H
#define GHCB_VECTORS_H

#include <stddef.h>
#include <stdint.h>

enum ghcb_vector_kind {{
{kinds}
}};

enum ghcb_verdict {{
	GHCB_VERDICT_ACCEPT = 0,
	GHCB_VERDICT_REJECT = 1,
}};

struct ghcb_vector {{
	const char *name;
	enum ghcb_vector_kind kind;
	const uint8_t *data;
	size_t size;
	enum ghcb_verdict verdict;
	const char *first_error; /* strict_error / GHCB_ERR name, or NULL */
	int has_exit_info;
	uint64_t exit_info_1;
	uint64_t exit_info_2;
	int has_rbx;
	uint64_t rbx;
	size_t n_entries; /* certificate tables: entries of a strict parse */
}};

"""


def _c_ident(name: str) -> str:
    return "ghcb_vector_" + re.sub(r"[^0-9A-Za-z]", "_", name)


def _c_bytes(data: bytes) -> str:
    if not data:
        return "\t0 /* empty */"
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        lines.append("\t" + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return "\n".join(lines)


def _c_string(value: object) -> str:
    return "NULL" if value is None else json.dumps(str(value))


def c_header_text(rows: list[tuple[dict[str, Any], bytes]]) -> str:
    """The self-contained header of :func:`export` for ``rows``."""
    kinds = "\n".join(f"\tGHCB_VECTOR_{kind.upper()} = {n}," for kind, n in _KINDS.items())
    parts = [_PROLOGUE.format(version=__version__, kinds=kinds)]
    for row, data in rows:
        parts.append(
            f"static const uint8_t {_c_ident(row['name'])}[] = {{\n{_c_bytes(data)}\n}};\n"
        )
    parts.append("static const struct ghcb_vector ghcb_vectors[] = {")
    for row, data in rows:
        kind = row["kind"]
        info = kind in ("pages", "exitinfo2")
        err = row.get("strict_error") or (row.get("ghcb_err") or {}).get("name")
        rbx = row.get("rbx")
        fields = [
            _c_string(row["name"]),
            f"GHCB_VECTOR_{kind.upper()}",
            _c_ident(row["name"]),
            f"{len(data)}u",
            "GHCB_VERDICT_REJECT" if row["verdict"] == "reject" else "GHCB_VERDICT_ACCEPT",
            _c_string(err),
            str(int(info)),
            f"0x{row.get('exit_info_1', 0) & _U64:016x}ull",
            f"0x{row.get('exit_info_2', 0) & _U64:016x}ull",
            str(int(rbx is not None)),
            f"0x{(rbx or 0) & _U64:x}ull",
            f"{len(row.get('entries', []))}u",
        ]
        parts.append("\t{ " + ", ".join(fields) + " },")
    parts.append("};\n")
    parts.append(f"#define GHCB_VECTOR_COUNT {len(rows)}u\n")
    parts.append("#endif /* GHCB_VECTORS_H */\n")
    return "\n".join(parts)


# -- CLI: ghcb vectors export DIR [--format json|c] [--spec DIR] [--json] ---------------------
def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``vectors export`` to the ``ghcb`` command's subparsers."""
    vectors = subparsers.add_parser("vectors", help="golden vectors for other languages")
    vectors.set_defaults(parser=vectors)
    actions = vectors.add_subparsers(dest="command", required=True, metavar="ACTION")
    helptext = "write every golden vector as a file plus manifest.json (and a C header)"
    p: argparse.ArgumentParser = actions.add_parser(
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
    p.set_defaults(func=run, parser=p)
    return p


def run(args: argparse.Namespace, out: TextIO) -> int:
    """``ghcb vectors export``: 0 written, 2 no vectors or an unwritable directory."""
    try:
        manifest = export(args.dir, spec=args.spec, c_header=args.format == "c")
    except OSError as e:
        message = str(e)
        if args.json:
            out.write(json.dumps({"ok": False, "error": {"code": "usage", "message": message}}))
            out.write("\n")
        print(f"ghcb: {message}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for row in manifest["vectors"]:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    files = ["manifest.json"] + ([HEADER_NAME] if args.format == "c" else [])
    if args.json:
        doc = {"ok": True, "dir": str(args.dir), "vectors": counts, "files": files}
        out.write(json.dumps(doc) + "\n")
    else:
        total = sum(counts.values())
        detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        out.write(f"wrote {total} vectors ({detail}) and {', '.join(files)} to {args.dir}\n")
    return 0
