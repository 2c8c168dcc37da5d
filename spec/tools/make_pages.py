#!/usr/bin/env python3
"""Regenerate spec/vectors/pages/*.bin and the "patches" of spec/vectors/pages.json.

Stdlib only, and independent of the ghcb package: field offsets and sizes come from
spec/tables/page.toml; each vector's "set" gives field values, written little-endian, and
"valid_bitmap_hex" (transcribed from peers.md §1.1) is written verbatim at the bitmap's
offset. Run from the repository root: python3 spec/tools/make_pages.py
"""

from __future__ import annotations

import json
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    table = tomllib.loads((ROOT / "tables/page.toml").read_text())
    fields = {f["name"]: f for f in table["field"]}
    doc = json.loads((ROOT / "vectors/pages.json").read_text())
    for vec in doc["vectors"]:
        page = bytearray(table["page"]["size"])
        patches = []
        for name, value in vec["set"].items():
            f = fields[name]
            raw = bytes.fromhex(value) if isinstance(value, str) else value.to_bytes(f["size"], "little")
            if len(raw) != f["size"]:
                raise SystemExit(f"{vec['name']}: {name} needs {f['size']} bytes")
            page[f["offset"] : f["offset"] + f["size"]] = raw
        bm = fields["valid_bitmap"]
        page[bm["offset"] : bm["offset"] + bm["size"]] = bytes.fromhex(vec["valid_bitmap_hex"])
        for f in table["field"]:
            chunk = page[f["offset"] : f["offset"] + f["size"]]
            if any(chunk):
                patches.append({"offset": f["offset"], "hex": chunk.hex()})
        vec["patches"] = patches
        (ROOT / "vectors" / vec["file"]).write_bytes(page)
    (ROOT / "vectors/pages.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
