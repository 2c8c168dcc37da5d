#!/usr/bin/env python3
"""Fuzz the GHCB page codec and checker.

Invariant: any input gives a page (exactly 4096 bytes) or ``ghcb.GhcbError``; a page's bytes
re-build exactly on both backends; ``check_page`` never raises for bytes.

Run: ./fuzz/fuzz_page.py fuzz/corpus/page -max_len=4200 -runs=50000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ghcb"]):
    from ghcb import GhcbError, build_page, check_page, parse_page


def TestOneInput(data: bytes) -> None:
    check_page(data)
    try:
        page = parse_page(data)
    except GhcbError:
        if len(data) == 4096:
            raise
        return
    if build_page(page) != data or build_page(page, backend="construct") != data:
        raise AssertionError("page does not round-trip")
    if parse_page(data, backend="construct") != page:
        raise AssertionError("backends disagree")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
