#!/usr/bin/env python3
"""Fuzz the certificate-table parser and checker.

Invariant (h11's): whatever the bytes, ``parse_cert_table`` (strict and lenient) and
``check_cert_table`` either return or raise ``ghcb.GhcbError`` — nothing else, no hang — and a
lenient parse never holds more certificate bytes than the input. Anything a strict parse
accepts re-builds to a table the checker finds no error in.

Run: ./fuzz/fuzz_certs.py fuzz/corpus/certs -max_len=4096 -runs=200000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ghcb"]):
    from ghcb import GhcbError, Severity, build_cert_table, check_cert_table, parse_cert_table


def TestOneInput(data: bytes) -> None:
    try:
        entries = parse_cert_table(data)
    except GhcbError:
        entries = None
    lenient = parse_cert_table(data, strict=False)
    if sum(len(e.data) for e in lenient) > len(data):
        raise AssertionError("lenient parse holds more bytes than the input")
    found = check_cert_table(data)
    errors = [v for v in found if v.severity is Severity.ERROR]
    if (entries is None) != bool(errors):
        raise AssertionError(f"strict parse and checker disagree: {errors}")
    if entries:
        try:
            rebuilt = build_cert_table(entries)
        except GhcbError:
            return  # e.g. zero-length entries: parseable, not buildable
        if any(v.severity is Severity.ERROR for v in check_cert_table(rebuilt)):
            raise AssertionError("a rebuilt table has errors")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
