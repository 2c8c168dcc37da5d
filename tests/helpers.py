"""Shared test helpers: spec/ loaders and the one round-trip assertion every schema test uses."""

from __future__ import annotations

import json
import pathlib
import tomllib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import construct as cs

from ghcb import build_page
from ghcb.guest import DEFAULT_LAYOUT, Guest, GuestLayout
from ghcb.vectors import assemble as assemble  # the one reader of certs.json parts

if TYPE_CHECKING:
    from ghcb.hypervisor import GuestMemory

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec"


def load_table(name: str) -> dict[str, Any]:
    """A ``spec/tables/<name>.toml`` table."""
    with (SPEC / "tables" / f"{name}.toml").open("rb") as fh:
        return tomllib.load(fh)


def load_vectors(name: str) -> dict[str, Any]:
    """A ``spec/vectors/<name>.json`` vector file."""
    data: dict[str, Any] = json.loads((SPEC / "vectors" / f"{name}.json").read_text())
    return data


def vector_bytes(relpath: str) -> bytes:
    """A binary vector under ``spec/vectors``."""
    return (SPEC / "vectors" / relpath).read_bytes()


def assert_roundtrip(schema: cs.Construct[Any, Any], data: bytes, obj: dict[str, Any]) -> None:
    """``schema`` parses ``data`` to ``obj`` and builds ``obj`` back to ``data``; its compiled
    twin agrees (construct's own ``common()`` pattern)."""
    parsed = schema.parse(data)
    assert _plain(parsed) == obj
    assert schema.build(obj) == data
    assert schema.sizeof() == len(data)
    compiled = schema.compile()
    assert _plain(compiled.parse(data)) == obj
    assert compiled.build(obj) == data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    return value


# The public guest layout (ghcb.guest), shared by the hypervisor tests and benchmarks.
GHCB, REQ, RESP, CERTS = (
    DEFAULT_LAYOUT.ghcb,
    DEFAULT_LAYOUT.request,
    DEFAULT_LAYOUT.response,
    DEFAULT_LAYOUT.certs,
)


def report_request_guest(cert_pages: int = 4) -> tuple[GuestMemory, bytes]:
    """Guest memory with a GHCB, an MSG_REPORT_REQ request page, a response page and
    ``cert_pages`` certificate pages (all shared), and the GHCB bytes of the Extended Guest
    Request a Linux guest writes for it."""
    guest = Guest(GuestLayout(cert_pages=cert_pages))
    return guest.memory, build_page(guest.request_page())
