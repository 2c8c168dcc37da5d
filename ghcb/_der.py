"""Minimal DER / PEM helpers for certificate-table data (no third-party parser needed).

``is_x509_der`` checks the outer shape of an X.509 certificate (RFC 5280 §4.1:
``Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE,
signatureValue BIT STRING }`` with definite lengths that exactly fill the data). It does not
verify anything: it tells certificate bytes from garbage without depending on a library that
may refuse real AMD VCEKs (their serial numbers are not positive). ``pem_block`` /
``der_fits_label`` do the same for the body of a PEM block: its DER must have the outer shape
its label names.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = [
    "PEM_LABELS",
    "der_fits_label",
    "is_pem",
    "is_x509",
    "is_x509_der",
    "pem_block",
    "pem_to_der",
]

_SEQUENCE: Final = 0x30
_BIT_STRING: Final = 0x03
_INTEGER: Final = 0x02
_EXPLICIT_0: Final = 0xA0
#: What a tbsCertificate starts with: ``[0] EXPLICIT Version`` or the serial ``INTEGER``.
_TBS_CERTIFICATE_FIRST: Final = (_EXPLICIT_0, _INTEGER)
#: What a tbsCertList starts with (RFC 5280 §5.1): ``Version OPTIONAL`` (an INTEGER) or the
#: signature ``AlgorithmIdentifier`` (a SEQUENCE).
_TBS_CERT_LIST_FIRST: Final = (_INTEGER, _SEQUENCE)
_PEM_BLOCK: Final = re.compile(
    rb"\A\s*-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>[A-Za-z0-9+/=\s]*?)"
    rb"-----END (?P=label)-----\s*\Z"
)
_CERTIFICATE: Final = b"CERTIFICATE"
_X509_CRL: Final = b"X509 CRL"
_TRUSTED_CERTIFICATE: Final = b"TRUSTED CERTIFICATE"  # OpenSSL: a certificate + X509_CERT_AUX
#: PEM labels whose DER body is a certificate-table payload (RFC 7468 §5, §6).
PEM_LABELS: Final = frozenset({_CERTIFICATE, _X509_CRL, _TRUSTED_CERTIFICATE})


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


def _signed_end(data: bytes | memoryview, tbs_first: tuple[int, ...]) -> int | None:
    """The end of the signed structure at the start of ``data`` (``SEQUENCE { tbs SEQUENCE,
    signatureAlgorithm SEQUENCE, signatureValue BIT STRING }``, the tbs starting with one of
    ``tbs_first``), or None if it is not one."""
    outer = _tlv(data, 0)
    if outer is None or outer[0] != _SEQUENCE:
        return None
    pos, end = outer[1], outer[2]
    tags = []
    while pos < end:
        item = _tlv(data, pos)
        if item is None or item[2] > end:
            return None
        tags.append(item[0])
        if len(tags) == 1:
            first = _tlv(data, item[1])
            if first is None or first[0] not in tbs_first:
                return None
        pos = item[2]
    return end if tags == [_SEQUENCE, _SEQUENCE, _BIT_STRING] else None


def is_x509_der(data: bytes | memoryview) -> bool:
    """Whether ``data`` is exactly one DER-encoded X.509 certificate (outer shape only)."""
    return _signed_end(data, _TBS_CERTIFICATE_FIRST) == len(data)


def is_pem(data: bytes | memoryview) -> bool:
    """Whether ``data`` looks like one PEM block (``-----BEGIN ...``)."""
    return bytes(data[:64]).lstrip().startswith(b"-----BEGIN ")


def pem_block(data: bytes) -> tuple[bytes, bytes] | None:
    """``(label, decoded body)`` of a single PEM block with a certificate or CRL label, else
    None. The body is not checked: see :func:`der_fits_label`."""
    match = _PEM_BLOCK.match(data)
    if match is None or match["label"] not in PEM_LABELS:
        return None
    try:
        return match["label"], base64.b64decode(b"".join(match["body"].split()), validate=True)
    except binascii.Error:
        return None


def pem_to_der(data: bytes) -> bytes | None:
    """The DER bytes of a single PEM block with a certificate or CRL label, else None."""
    block = pem_block(data)
    return None if block is None else block[1]


def der_fits_label(label: bytes, der: bytes) -> bool:
    """Whether ``der`` has the outer shape the PEM ``label`` names (one of :data:`PEM_LABELS`).

    ``CERTIFICATE``: one X.509 certificate (RFC 5280 §4.1). ``X509 CRL``: one CertificateList
    (RFC 5280 §5.1, the same signed shape). ``TRUSTED CERTIFICATE``: a certificate followed by
    at most one SEQUENCE (OpenSSL's ``X509_CERT_AUX``).
    """
    if label == _CERTIFICATE:
        return is_x509_der(der)
    if label == _X509_CRL:
        return _signed_end(der, _TBS_CERT_LIST_FIRST) == len(der)
    if label == _TRUSTED_CERTIFICATE:
        end = _signed_end(der, _TBS_CERTIFICATE_FIRST)
        if end is None or end == len(der):
            return end is not None
        aux = _tlv(der, end)
        return aux is not None and aux[0] == _SEQUENCE and aux[2] == len(der)
    return False


def is_x509(data: bytes | memoryview) -> bool:
    """Whether ``data`` is one X.509 certificate: DER, or one PEM block of DER (outer shape)."""
    if is_x509_der(data):
        return True
    if not is_pem(data):
        return False
    der = pem_to_der(bytes(data))
    return der is not None and is_x509_der(der)
