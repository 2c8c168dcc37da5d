#!/usr/bin/env python3
"""Regenerate the golden GHCB pages: spec/vectors/pages/*.bin with the "patches" of
spec/vectors/pages.json, and spec/vectors/pages/check/*.bin with those of
spec/vectors/pages_check.json.

Stdlib only, and independent of the ghcb package: field offsets, sizes and valid-bitmap bits
come from spec/tables/page.toml; each vector's "set" gives field values, written
little-endian (a hex string for byte fields, zero-padded to the field). The bitmap is
"valid_bitmap_hex" (pages.json, transcribed from peers.md §1.1), written verbatim at the
bitmap's offset, or "valid" (pages_check.json): the fields whose bit is set, an int being a
raw bit. "size" truncates the page (a capture of the wrong length). A pages_check.json vector
without "set" names a pages.json file. Run from the repository root:
python3 spec/tools/make_pages.py
"""

from __future__ import annotations

import json
import pathlib
import tomllib
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _build(vec: dict[str, Any], table: dict[str, Any]) -> bytearray:
    fields = {f["name"]: f for f in table["field"]}
    page = bytearray(table["page"]["size"])
    for name, value in vec["set"].items():
        f = fields[name]
        # a hex string shorter than its field is zero-padded (a descriptor in the shared buffer)
        raw = (
            bytes.fromhex(value).ljust(f["size"], b"\0")
            if isinstance(value, str)
            else value.to_bytes(f["size"], "little")
        )
        if len(raw) != f["size"]:
            raise SystemExit(f"{vec['name']}: {name} needs {f['size']} bytes")
        page[f["offset"] : f["offset"] + f["size"]] = raw
    bm = fields["valid_bitmap"]
    if "valid_bitmap_hex" in vec:
        bitmap = bytes.fromhex(vec["valid_bitmap_hex"])
    else:
        bits = sum(1 << (v if isinstance(v, int) else fields[v]["bit"]) for v in vec["valid"])
        bitmap = bits.to_bytes(bm["size"], "little")
    page[bm["offset"] : bm["offset"] + bm["size"]] = bitmap
    return page


def _patches(page: bytearray, table: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for f in table["field"]:
        chunk = page[f["offset"] : f["offset"] + f["size"]]
        if any(chunk):
            out.append({"offset": f["offset"], "hex": chunk.hex()})
    return out


def main() -> None:
    table = tomllib.loads((ROOT / "tables/page.toml").read_text())
    for name in ("pages.json", "pages_check.json"):
        path = ROOT / "vectors" / name
        doc = json.loads(path.read_text())
        for vec in doc["vectors"]:
            if "set" not in vec:
                continue
            page = _build(vec, table)
            vec["patches"] = _patches(page, table)
            out = ROOT / "vectors" / vec["file"]
            out.parent.mkdir(exist_ok=True)
            out.write_bytes(page[: vec.get("size", len(page))])
        path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
