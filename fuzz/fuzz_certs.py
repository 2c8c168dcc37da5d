#!/usr/bin/env python3
"""Fuzz the certificate-table parser and checker.

Invariant (h11's): whatever the bytes, ``parse_cert_table`` (strict and lenient) and
``check_cert_table`` either return or raise ``ghcb.GhcbError`` — nothing else, no hang — and a
lenient parse never holds more certificate bytes than the input. The strict parse fails
exactly when the checker reports an error, and with that error's rule and offset among the
checker's findings (it is the first finding of its code). Anything a strict parse accepts
re-builds to a table the checker finds no error in, holding the same entries.

The checker runs with ``limit_per_code=1``: the invariants need only the first finding of each
code, and the later findings of a code come from the same message rule (the cap itself is
covered by tests/test_certs.py). Listing all 16 would double the time per input.

Run: ./fuzz/fuzz_certs.py NEW_DIR fuzz/corpus/certs -max_len=4096
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb import (
        CertTableError,
        GhcbError,
        Severity,
        build_cert_table,
        check_cert_table,
        parse_cert_table,
    )


def check_one(data: bytes) -> None:
    """One input through the parser (strict and lenient), the checker and the builder."""
    try:
        entries = parse_cert_table(data)
        refused = None
    except CertTableError as e:
        entries, refused = None, e
    lenient = parse_cert_table(data, strict=False)
    if sum(len(e.data) for e in lenient) > len(data):
        raise AssertionError("lenient parse holds more bytes than the input")
    found = check_cert_table(data, limit_per_code=1)
    errors = {(v.code, v.offset) for v in found if v.severity is Severity.ERROR}
    if (refused is None) == bool(errors):
        raise AssertionError(f"strict parse ({refused}) and checker ({errors}) disagree")
    if refused is not None and (refused.rule, refused.offset) not in errors:
        raise AssertionError(f"strict parse raised {refused}, which the checker misses")
    if entries:
        try:
            rebuilt = build_cert_table(entries)
        except GhcbError:
            return  # e.g. zero-length entries: parseable, not buildable
        if any(v.severity is Severity.ERROR for v in check_cert_table(rebuilt, limit_per_code=1)):
            raise AssertionError("a rebuilt table has errors")
        if [e.guid_bytes for e in parse_cert_table(rebuilt)] != [e.guid_bytes for e in entries]:
            raise AssertionError("a rebuilt table holds other entries")


if __name__ == "__main__":
    fuzz(check_one)
