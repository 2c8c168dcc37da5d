"""The golden vectors of ``spec/vectors/`` for suites in other languages: ``ghcb vectors export``.

Every vector becomes a binary file ``<kind>/<name>.bin`` plus one row of ``manifest.json``
with what a correct implementation must answer for it:

* ``certs`` — certificate tables (``certs.json`` and the synthetic Milan chain's table): the
  verdict of a strict parse, its first error's rule, every violation of
  :func:`ghcb.check_cert_table`, the entries, and the page count a VMM answers with INVALID_LEN;
* ``pages`` — GHCB pages (``pages_check.json``, a superset of ``pages.json``): KVM's answer per
  tree (SW_EXITINFO1/2 and the stage: accepted, answered, exits-to-userspace, validator, handler,
  run-fails), the violations per tree, the fields the guest wrote (exit code, EXITINFO1/2,
  RBX, valid set);
* ``kvm_run`` — the ``kvm_run`` bytes of both certificate exits, decoded;
* ``exitinfo2`` — SW_EXITINFO2 values (``exitinfo2.json``) as 8 little-endian bytes, with the
  SW_EXITINFO1 they follow and their decoding;
* ``msr`` — GHCB MSR values (``msr.json``) as 8 little-endian bytes;
* ``psc`` — Page State Change descriptors (``psc.json``) with KVM's exits and SW_EXITINFO2.

``--format c`` also writes ``ghcb_vectors.h`` (:mod:`ghcb._vectors_c`): each vector as a
``static const uint8_t`` array with its verdict, first error, EXITINFO1/EXITINFO2 and RBX, for
a guest-kernel selftest or a C/Rust test that cannot run Python.

Where a golden file states the answer (pages, PSC), the manifest copies it; certificate tables
carry ghcb's answers, which ``tests/`` checks against ``certs.json`` row by row;
``tests/test_vectors_export.py`` checks the export against the golden files again and compiles
the header.

The vectors are read from ``--spec DIR``, else from the installed package (a wheel carries
``spec/vectors`` and ``spec/tables`` as ``ghcb/_spec``), else from the checkout's ``spec/``
beside the package (an editable install). The command is in :mod:`ghcb.cli._kit`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ghcb import __version__
from ghcb._vectors_c import c_header_text
from ghcb.certs import cert_names, check_cert_table, located_entries, pages_needed
from ghcb.check import Stage
from ghcb.codes import ExitCode, HvResp
from ghcb.errors import CertTableError, GhcbError, Violation
from ghcb.exitinfo import decode_exit_info
from ghcb.hypervisor.kvm_abi import MergedAbi, V15Abi, decode_kvm_run
from ghcb.msr import decode_msr
from ghcb.page import parse_page

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ghcb.hypervisor.kvm_abi import CertAbi

__all__ = [
    "CertVector",
    "VectorsUnavailable",
    "assemble",
    "cert_entries_json",
    "cert_vectors",
    "export",
    "spec_dir",
]

#: Where a wheel carries ``spec/vectors`` and ``spec/tables``: the package data ``ghcb/_spec``
#: (pyproject.toml ``[tool.setuptools.package-dir]`` maps the repository's spec/ there).
SHIPPED_SPEC: Final = "_spec"
#: A checkout's spec/ folder, beside the package (an editable install reads it).
CHECKOUT_SPEC: Final = Path(__file__).resolve().parent.parent / "spec"
MANIFEST_FORMAT: Final = "ghcb-vectors"
MANIFEST_VERSION: Final = 1
HEADER_NAME: Final = "ghcb_vectors.h"
#: The synthetic Milan chain's table under ``spec/vectors`` (ARK, ASK, VCEK).
MILAN_TABLE: Final = "milan_cert_table.bin"


class VectorsUnavailable(OSError):
    """The golden vectors are not where they were looked for."""


def _has_vectors(folder: Path) -> bool:
    return (folder / "vectors" / "certs.json").is_file()


def spec_dir(path: str | Path | None = None) -> Path:
    """The ``spec/`` folder holding ``vectors/``: ``path``; else the installed package's copy
    (``importlib.resources``: ``ghcb/_spec`` in a wheel); else the checkout's.

    Raises:
        VectorsUnavailable: it has no ``vectors/certs.json``.
    """
    if path is not None:
        if not _has_vectors(Path(path)):
            raise VectorsUnavailable(
                f"no golden vectors in {path}: pass --spec DIR, the spec/ folder of a ghcb checkout"
            )
        return Path(path)
    shipped = importlib.resources.files("ghcb").joinpath(SHIPPED_SPEC)
    for folder in (shipped, CHECKOUT_SPEC):
        if isinstance(folder, Path) and _has_vectors(folder):
            return folder
    raise VectorsUnavailable(
        f"no golden vectors: the installed package has no {SHIPPED_SPEC}/ and there is no "
        f"checkout's {CHECKOUT_SPEC}: pass --spec DIR, the spec/ folder of a ghcb checkout"
    )


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
    """Every certificate-table vector of ``spec/vectors/certs.json``, in file order, then the
    synthetic Milan chain's table (``milan_cert_table.bin``, what ``ghcb certs build`` writes;
    its ``expect`` is empty: ghcb's answers are the expectation).

    Raises:
        VectorsUnavailable: see :func:`spec_dir`.
    """
    folder = spec_dir(spec)
    out = [
        CertVector(v["name"], assemble(v["parts"]), v.get("source", ""), v["expect"])
        for v in _load(folder, "certs")["vectors"]
    ]
    milan = folder / "vectors" / MILAN_TABLE
    if milan.is_file():
        out.append(CertVector(milan.stem, milan.read_bytes(), "ghcb certs build (Milan)", {}))
    return out


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
    """``pages_check.json`` (a superset of ``pages.json``): the golden answers of KVM per tree
    — ``merged`` (current KVM) and ``v15`` — copied, plus the page's own fields."""
    rows = []
    for vector in _load(spec, "pages_check")["vectors"]:
        data = (spec / "vectors" / vector["file"]).read_bytes()
        expect = vector["expect"]
        answers = expect["expected_response"]
        row = _file_row("pages", vector["name"], data) | {
            "verdict": _page_verdict(answers["merged"]),
            "v15_verdict": _page_verdict(answers["v15"]),
            "expected_response": answers,
            "violations": expect["violations"],
            "host": vector.get("host", {}),
            "page": _page_fields(data),
        }
        rows.append((row, data))
    return rows


def _page_verdict(answer: dict[str, Any] | None) -> str:
    """KVM accepts the page (the handler runs) or answers an error / fails KVM_RUN."""
    return "accept" if answer is not None and Stage(answer["stage"]).accepts else "reject"


def _page_fields(data: bytes) -> dict[str, Any] | None:
    """The fields a guest wrote, or None when the bytes are not a page."""
    try:
        page = parse_page(data)
    except GhcbError:
        return None
    code = page.exit_code
    return {
        "exit_code": {
            "value": page.sw_exit_code,
            "name": code.name if isinstance(code, ExitCode) else None,
        },
        "exit_info_1": page.sw_exit_info_1,
        "exit_info_2": page.sw_exit_info_2,
        "rbx": page.rbx,
        "valid": sorted(page.valid_fields),
    }


def _kvm_run_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    """The ``kvm_run`` bytes of both certificate exits (``kvm_run_*.bin``), decoded."""
    abis: dict[str, CertAbi] = {"merged": MergedAbi(), "v15": V15Abi()}
    rows = []
    for path in sorted((spec / "vectors").glob("kvm_run_*.bin")):
        data = path.read_bytes()
        abi = next(abi for name, abi in abis.items() if path.stem.endswith(name))
        prefix, fields = decode_kvm_run(abi, data)
        row = _file_row("kvm_run", path.stem, data) | {
            "verdict": "accept",
            "abi": abi.name,
            "prefix": prefix,
            "exit": fields,
        }
        rows.append((row, data))
    return rows


def _psc_rows(spec: Path) -> list[tuple[dict[str, Any], bytes]]:
    """Page State Change descriptors with KVM's answer (``psc.json``, copied)."""
    rows = []
    for vector in _load(spec, "psc")["vectors"]:
        data = bytes.fromhex(vector["descriptor"])
        row = _file_row("psc", vector["name"], data) | {
            "verdict": "accept" if vector["exit_info_2"] == 0 else "reject",
            "tree": vector["tree"],
            "offset": vector["offset"],
            "exit_info_1": 0,  # "SW_EXITINFO1 is 0"
            "exit_info_2": vector["exit_info_2"],
            "hypercall_ret": vector["ret"],
            "exits": vector["exits"],
            "descriptor_after": vector["descriptor_after"],
            "violations": vector["violations"],
            "rule": vector["rule"],
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
    rows = [
        *_cert_rows(folder),
        *_page_rows(folder),
        *_kvm_run_rows(folder),
        *_exit_info_rows(folder),
        *_msr_rows(folder),
        *_psc_rows(folder),
    ]
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
        (out / HEADER_NAME).write_text(c_header_text(rows, version=__version__))
    return manifest
