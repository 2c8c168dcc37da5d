#!/usr/bin/env python3
"""A deliberately naive certificate-table parser: an example adapter for ``ghcb difftest``.

DO NOT USE IT. It is here so the differential tester has something to find; its bugs are the
ones peers shipped (peers.md §2, §4.4):

1. it trusts every offset and length: ``data[offset:offset + length]`` with no bound (Python
   slicing silently truncates), so tables with out-of-bounds, u32-wrapping or in-header ranges
   are accepted (go-sev-guest, virtee/sev);
2. it never checks for duplicate GUIDs or overlapping data (dstack before PR #1248);
3. it stops at the first null GUID, losing every later entry (virtee/sev);
4. without a terminator it reads entries until the data ends;
5. it skips entries with no data.

Protocol (``ghcb difftest certs -- python3 fuzz/adapters/naive_cert_parser.py``): the table on
stdin; the entries as JSON ``[{"guid", "offset", "length"}]`` on stdout and exit 0 to accept,
a non-zero exit to reject.
"""

from __future__ import annotations

import json
import struct
import sys
import uuid

ENTRY = struct.Struct("<16sII")  # GUID (RFC-4122 bytes), offset, length


def parse(data: bytes) -> list[dict[str, object]]:
    """The entries, the naive way (see the module docstring)."""
    entries: list[dict[str, object]] = []
    for pos in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        guid, offset, length = ENTRY.unpack_from(data, pos)
        if guid == bytes(16):  # bug 3: a null GUID ends the table, whatever follows
            break
        if not length:  # bug 5
            continue
        _certificate = data[offset : offset + length]  # bug 1: no bound checked
        entries.append({"guid": str(uuid.UUID(bytes=guid)), "offset": offset, "length": length})
    return entries


def main() -> int:
    json.dump(parse(sys.stdin.buffer.read()), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
