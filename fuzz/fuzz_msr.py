#!/usr/bin/env python3
"""Fuzz the 64-bit codecs: GHCB MSR protocol values and SW_EXITINFO1/SW_EXITINFO2.

Invariant: every u64 decodes — as a GHCB MSR message (``decode_msr``), an SNP_GUEST_ERR pair
(``unpack_guest_error``), an event injection, a TERM_REQUEST or IOIO EXITINFO1 — without any
error, on both backends alike, and encodes back to exactly itself; a SW_EXITINFO1/2 pair
decodes, and each of its readings (response, GHCB error, event, guest error) answers without
raising. An integer outside ``0..2**64-1`` raises ``ghcb.GhcbError`` (``FieldValueError``)
from every decoder, never anything else.

Input layout: the input's whole 8-byte words are the u64 values, little-endian (the first
two are also the EXITINFO1/EXITINFO2 pair); a shorter tail of ``k`` bytes makes one integer
out of range: ``2**64 + t`` when its first byte is even, ``-1 - t`` when odd (``t`` the tail
as a little-endian integer).

Run: ./fuzz/fuzz_msr.py NEW_DIR fuzz/corpus/msr -max_len=64
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from ghcb import (
        EventInjection,
        FieldValueError,
        IoioInfo,
        TermRequestInfo,
        decode_exit_info,
        decode_msr,
        encode_msr,
        pack_guest_error,
        unpack_guest_error,
    )
    from ghcb.msr import MsrMessage, msr_record

U64 = 8
_RECORDS = (EventInjection, TermRequestInfo, IoioInfo)


def _check_value(value: int) -> None:
    msg = decode_msr(value)
    if decode_msr(value, backend="construct") != msg:
        raise AssertionError(f"MSR backends disagree on {value:#x}")
    if encode_msr(msg) != value or encode_msr(msg, backend="construct") != value:
        raise AssertionError(f"MSR {value:#x} does not round-trip: {msg}")
    if isinstance(msg, MsrMessage) and msr_record(msg.code, **msg.fields()) != msg:
        raise AssertionError(f"msr_record does not rebuild {msg}")
    vmm, fw = unpack_guest_error(value)
    if pack_guest_error(vmm, fw) != value:
        raise AssertionError(f"SNP_GUEST_ERR {value:#x} does not round-trip")
    for record in _RECORDS:
        if record.decode(value).encode() != value:
            raise AssertionError(f"{record.__name__} {value:#x} does not round-trip")


def _check_pair(info1: int, info2: int) -> None:
    response = decode_exit_info(info1, info2)
    event = response.event
    if event is not None and event.encode() != info2:
        raise AssertionError("the injected event is not SW_EXITINFO2")
    error, guest_error = response.error, response.guest_error
    if error is not None and int(error) != info2:
        raise AssertionError("the GHCB error is not SW_EXITINFO2")
    if guest_error is not None and pack_guest_error(*guest_error) != info2:
        raise AssertionError("the guest error is not SW_EXITINFO2")
    if int(response.response) != info1 & 0xFFFFFFFF:  # SW_EXITINFO1[31:0] (GHCB spec §4.1)
        raise AssertionError("the response is not SW_EXITINFO1[31:0]")


def _out_of_range(value: int) -> None:
    decoders = (
        decode_msr,
        unpack_guest_error,
        *(r.decode for r in _RECORDS),
        lambda v: decode_exit_info(v, 0),
        lambda v: decode_exit_info(0, v),
    )
    for decode in decoders:
        try:
            decode(value)
        except FieldValueError:
            continue
        raise AssertionError(f"{decode} accepted {value:#x}")


def check_one(data: bytes) -> None:
    """Every whole word of ``data`` through every decoder, the tail out of range."""
    whole = len(data) - len(data) % U64
    values = [int.from_bytes(data[i : i + U64], "little") for i in range(0, whole, U64)]
    for value in values:
        _check_value(value)
    if len(values) >= 2:
        _check_pair(values[0], values[1])
    tail = data[whole:]
    if tail:
        t = int.from_bytes(tail, "little")
        _out_of_range((1 << 64) + t if tail[0] % 2 == 0 else -1 - t)


if __name__ == "__main__":
    fuzz(check_one)
