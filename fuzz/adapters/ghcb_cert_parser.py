#!/usr/bin/env python3
"""ghcb's own strict parser behind the ``ghcb difftest`` protocol: an example adapter that must
show zero disagreements (the tester's control).

Protocol (``ghcb difftest certs -- python3 fuzz/adapters/ghcb_cert_parser.py``): the table on
stdin; the entries of a strict :func:`ghcb.parse_cert_table` as JSON ``[{"guid", "offset",
"length"}]`` on stdout and exit 0, or the first error's rule on stderr and exit 1.
"""

from __future__ import annotations

import json
import sys

from ghcb import CertTableError
from ghcb.certs import located_entries


def parse(data: bytes) -> list[dict[str, object]]:
    """The entries of a strict parse (raises :class:`ghcb.CertTableError` to reject)."""
    return [
        {"guid": str(index.guid), "offset": index.offset, "length": index.length}
        for index, _ in located_entries(data)
    ]


def main() -> int:
    try:
        entries = parse(sys.stdin.buffer.read())
    except CertTableError as e:
        print(f"reject: {e.rule}: {e.message}", file=sys.stderr)
        return 1
    json.dump(entries, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
