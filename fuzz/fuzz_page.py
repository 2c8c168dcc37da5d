#!/usr/bin/env python3
"""Fuzz the GHCB page codec and checker.

Invariant: any input gives a page (exactly 4096 bytes) or ``ghcb.GhcbError``, and every
4096-byte input gives a page; a page's bytes re-build exactly on both backends, which decode
it alike; ``check_page`` never raises for bytes.

Run: ./fuzz/fuzz_page.py NEW_DIR fuzz/corpus/page -max_len=4200
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb import GhcbError, build_page, check_page, parse_page
    from ghcb.schemas.page import PAGE_SIZE


def check_one(data: bytes) -> None:
    """One input through the checker and both backends of the codec."""
    check_page(data)
    try:
        page = parse_page(data)
    except GhcbError:
        if len(data) == PAGE_SIZE:
            raise
        return
    if build_page(page) != data or build_page(page, backend="construct") != data:
        raise AssertionError("page does not round-trip")
    if parse_page(data, backend="construct") != page:
        raise AssertionError("backends disagree")


if __name__ == "__main__":
    fuzz(check_one)
