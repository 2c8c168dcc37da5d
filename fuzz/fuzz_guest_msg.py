#!/usr/bin/env python3
"""Fuzz the guest-message page, the message payloads and the attestation report parsers.

Invariant: whatever the bytes, ``open_message``, ``parse_payload``, ``parse_report`` (lenient
and strict) and ``check_report`` either return or raise ``ghcb.GhcbError`` — nothing else, no
hang. What parses re-builds to exactly the input on both backends; a strict report parse fails
exactly when ``check_report`` reports an error. A page's payload re-sealed under its own header
values opens to exactly that payload, or is refused with the header rule ``check_header``
names for the sealed header: seal and open agree on every header.

Input layout: byte 0 picks the surface (mod 3): 0 an attestation report (the rest of the
input), 1 a payload (byte 1 the message type, then the payload bytes), 2 a guest message page
(the rest of the input), opened with :data:`KEY` (the seeds are sealed with it).

Run: ./fuzz/fuzz_guest_msg.py NEW_DIR fuzz/corpus/guest_msg -max_len=4200
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb import GhcbError, Severity
    from ghcb.guest_msg import (
        HDR_SIZE,
        MAX_PAYLOAD,
        MessageHeaderError,
        MsgHeader,
        check_header,
        open_message,
        parse_payload,
        seal_message,
    )
    from ghcb.report import build_report, check_report, parse_report
    from ghcb.schemas.page import PAGE_SIZE

#: The VMPCK every message page is opened with (and the seeds sealed with).
KEY = bytes(range(32))
REPORT, PAYLOAD, MESSAGE = range(3)


def _report(data: bytes) -> None:
    found = check_report(data)
    errors = [v for v in found if v.severity is Severity.ERROR]
    try:
        report = parse_report(data)
    except GhcbError:
        if not errors:
            raise AssertionError("a report check_report accepts does not parse") from None
        return
    if build_report(report) != data or build_report(report, backend="construct") != data:
        raise AssertionError("the report does not round-trip")
    if parse_report(data, backend="construct") != report:
        raise AssertionError("report backends disagree")
    try:
        parse_report(data, strict=True)
    except GhcbError:
        if not errors:
            raise
        return
    if errors:
        raise AssertionError(f"strict parse accepts a report with errors: {errors}")


def _payload(data: bytes) -> None:
    if not data:
        return
    try:
        record = parse_payload(data[0], data[1:])
    except GhcbError:
        return
    if record.to_bytes() != data[1:] or record.to_bytes(backend="construct") != data[1:]:
        raise AssertionError("the payload does not round-trip")
    if parse_payload(data[0], data[1:], backend="construct") != record:
        raise AssertionError("payload backends disagree")


def _message(page: bytes) -> None:
    try:
        hdr, plain = open_message(KEY, page)
    except GhcbError:
        pass
    else:
        if len(plain) != hdr.msg_sz:
            raise AssertionError("the plaintext is not MSG_SIZE bytes")
    if len(page) != PAGE_SIZE:
        return
    hdr = MsgHeader.from_bytes(page[:HDR_SIZE])
    payload = page[HDR_SIZE : HDR_SIZE + min(hdr.msg_sz, MAX_PAYLOAD)]
    sealed = seal_message(
        KEY,
        msg_type=hdr.msg_type,
        msg_version=hdr.msg_version,
        seqno=hdr.msg_seqno,
        vmpck=hdr.msg_vmpck,
        payload=payload,
    )
    try:
        check_header(MsgHeader.from_bytes(sealed[:HDR_SIZE]))
        expected = None
    except MessageHeaderError as e:
        expected = e.rule
    try:
        _, opened = open_message(KEY, sealed)
    except MessageHeaderError as e:
        if e.rule != expected:
            raise AssertionError(f"open refused {e.rule}, check_header {expected}") from e
        return
    if expected is not None or opened != payload:
        raise AssertionError("a sealed message does not open to its payload")


def check_one(data: bytes) -> None:
    """One input through the surface its first byte picks."""
    if not data:
        return
    surface, rest = data[0] % 3, data[1:]
    if surface == REPORT:
        _report(rest)
    elif surface == PAYLOAD:
        _payload(rest)
    else:
        _message(rest)


if __name__ == "__main__":
    fuzz(check_one)
