"""Minimal DER / PEM helpers for certificate-table data (no third-party parser needed).

``is_x509_der`` checks the outer shape of an X.509 certificate (RFC 5280 §4.1:
``Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE,
signatureValue BIT STRING }`` with definite lengths that exactly fill the data). It does not
verify anything: it tells certificate bytes from garbage without depending on a library that
may refuse real AMD VCEKs (their serial numbers are not positive).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = ["is_pem", "is_x509", "is_x509_der", "pem_to_der"]

_SEQUENCE: Final = 0x30
_BIT_STRING: Final = 0x03
_INTEGER: Final = 0x02
_EXPLICIT_0: Final = 0xA0
_PEM_BLOCK: Final = re.compile(
    rb"\A\s*-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>[A-Za-z0-9+/=\s]*?)"
    rb"-----END (?P=label)-----\s*\Z"
)
#: PEM labels whose DER body is a certificate-table payload (RFC 7468 §5, §6).
PEM_LABELS: Final = frozenset({b"CERTIFICATE", b"X509 CRL", b"TRUSTED CERTIFICATE"})


def _tlv(data: bytes | memoryview, pos: int) -> tuple[int, int, int] | None:
    """``(tag, content_start, content_end)`` of the TLV at ``pos``, or None if malformed."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            return None  # indefinite or absurd lengths are not DER
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        return None
    return tag, pos, pos + length


def is_x509_der(data: bytes | memoryview) -> bool:
    """Whether ``data`` is exactly one DER-encoded X.509 certificate (outer shape only)."""
    outer = _tlv(data, 0)
    if outer is None or outer[0] != _SEQUENCE or outer[2] != len(data):
        return False
    pos, end = outer[1], outer[2]
    tags = []
    while pos < end:
        item = _tlv(data, pos)
        if item is None or item[2] > end:
            return False
        tags.append(item[0])
        if len(tags) == 1:
            first = _tlv(data, item[1])  # tbsCertificate starts with [0] version or serial
            if first is None or first[0] not in (_EXPLICIT_0, _INTEGER):
                return False
        pos = item[2]
    return tags == [_SEQUENCE, _SEQUENCE, _BIT_STRING]


def is_pem(data: bytes | memoryview) -> bool:
    """Whether ``data`` looks like one PEM block (``-----BEGIN ...``)."""
    return bytes(data[:64]).lstrip().startswith(b"-----BEGIN ")


def pem_to_der(data: bytes) -> bytes | None:
    """The DER bytes of a single PEM block with a certificate or CRL label, else None."""
    match = _PEM_BLOCK.match(data)
    if match is None or match["label"] not in PEM_LABELS:
        return None
    try:
        return base64.b64decode(b"".join(match["body"].split()), validate=True)
    except binascii.Error:
        return None


def is_x509(data: bytes | memoryview) -> bool:
    """Whether ``data`` is one X.509 certificate: DER, or one PEM block of DER (outer shape)."""
    if is_x509_der(data):
        return True
    if not is_pem(data):
        return False
    der = pem_to_der(bytes(data))
    return der is not None and is_x509_der(der)
