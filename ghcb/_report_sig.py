"""The attestation report's ECDSA P-384 signature (private: import from :mod:`ghcb.report`).

snp-firmware-facts §1.2: ECDSA P-384 with SHA-384 over bytes [0, 0x2A0); R and S are
little-endian scalars in 72-byte slots whose top 24 bytes are zero.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from ghcb._bytes import byte_string
from ghcb._fast import check_int
from ghcb._report_record import (
    P384_LIMIT,
    P384_SCALAR_BYTES,
    REPORT_OFFSET,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_SIZE,
    SPEC_SIGNATURE,
    AttestationReport,
    report_bytes,
)
from ghcb.errors import FieldValueError, InputTypeError, LengthError
from ghcb.schemas import report as schema

__all__ = [
    "decode_signature",
    "encode_signature",
    "sign_report",
    "signature_from_der",
    "signature_to_der",
    "signed_bytes",
    "verify_report",
]


def signed_bytes(report: bytes | bytearray | memoryview | AttestationReport) -> bytes:
    """The bytes the signature covers: report[0x000 .. 0x29F] (672 bytes, §1.2).

    Raises:
        InputTypeError: ``report`` is neither a byte buffer nor a report.
        LengthError: ``report`` is not 1184 bytes.
    """
    return report_bytes(report)[:SIGNED_SIZE]


def encode_signature(r: int, s: int) -> bytes:
    """The 0x200-byte SIGNATURE area for ECDSA P-384 ``(r, s)``: each a 72-byte little-endian
    slot (48 significant bytes, 24 zero), then 368 zero bytes (§1.1, §1.2).

    Raises:
        InputTypeError: ``r`` or ``s`` is not an int.
        FieldValueError: ``r`` or ``s`` is negative or does not fit in 48 bytes.
    """
    r = check_int(r, P384_LIMIT - 1, "signature r", SPEC_SIGNATURE)
    s = check_int(s, P384_LIMIT - 1, "signature s", SPEC_SIGNATURE)
    slot = schema.ECDSA_P384_SCALAR_SIZE
    return (
        r.to_bytes(slot, "little")
        + s.to_bytes(slot, "little")
        + bytes(schema.SIGNATURE_SIZE - 2 * slot)
    )


def decode_signature(signature: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(r, s)`` from the 0x200-byte SIGNATURE area (the reserved bytes are not read).

    Raises:
        InputTypeError: ``signature`` is not bytes-like.
        LengthError: ``signature`` is not 0x200 bytes.
        FieldValueError: the top 24 bytes of the R or S slot are not zero (not a P-384
            scalar; ``rule="signature-padding"``).
    """
    raw = byte_string(signature, what="a report signature", spec=SPEC_SIGNATURE)
    if len(raw) != schema.SIGNATURE_SIZE:
        raise LengthError(
            f"a report SIGNATURE area is {schema.SIGNATURE_SIZE} bytes, got {len(raw)}",
            rule="signature-length",
            spec=SPEC_SIGNATURE,
        )
    slot = schema.ECDSA_P384_SCALAR_SIZE
    out = []
    for name, start in (("signature_r", 0), ("signature_s", slot)):
        if any(raw[start + P384_SCALAR_BYTES : start + slot]):
            raise FieldValueError(
                f"the top 24 bytes of {name} must be zero",
                rule="signature-padding",
                spec=SPEC_SIGNATURE,
                field=name,
                offset=start + P384_SCALAR_BYTES,
            )
        out.append(int.from_bytes(raw[start : start + P384_SCALAR_BYTES], "little"))
    return out[0], out[1]


def signature_to_der(signature: bytes | bytearray | memoryview) -> bytes:
    """The DER ``SEQUENCE {INTEGER r, INTEGER s}`` of a SIGNATURE area (what ``cryptography``
    verifies; go-sev-guest ``ReportToSignatureDER``).

    Raises:
        As :func:`decode_signature`.
    """
    r, s = decode_signature(signature)
    return utils.encode_dss_signature(r, s)


def signature_from_der(der: bytes | bytearray | memoryview) -> bytes:
    """The 0x200-byte SIGNATURE area of a DER ECDSA signature.

    Raises:
        InputTypeError: ``der`` is not bytes-like.
        FieldValueError: ``der`` is not a DER ECDSA signature (``rule="signature-der"``), or
            r/s do not fit in 48 bytes.
    """
    raw = byte_string(der, what="a DER signature", spec=SPEC_SIGNATURE)
    try:
        r, s = utils.decode_dss_signature(raw)
    except ValueError as e:
        raise FieldValueError(
            f"not a DER ECDSA signature: {e}", rule="signature-der", spec=SPEC_SIGNATURE
        ) from e
    return encode_signature(r, s)


_ECDSA: dict[bool, ec.ECDSA] = {}


def _ecdsa(deterministic: bool) -> ec.ECDSA:
    algo = _ECDSA.get(deterministic)
    if algo is None:
        if deterministic:
            # RFC 6979 nonces: cryptography >= 44 with OpenSSL >= 3.2.
            algo = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
        else:
            algo = ec.ECDSA(hashes.SHA384())
        _ECDSA[deterministic] = algo
    return algo


def _check_curve(curve: ec.EllipticCurve, caller: str) -> None:
    if not isinstance(curve, ec.SECP384R1):
        raise FieldValueError(
            f"{caller} needs a P-384 (secp384r1) key, not {curve.name}",
            rule="key-curve",
            spec=SPEC_SIGNATURE,
        )


def _not_ec_key(key: object, caller: str) -> InputTypeError:
    return InputTypeError(
        f"{caller} needs an EC P-384 key, not {type(key).__name__}",
        rule="input-type",
        spec=SPEC_SIGNATURE,
    )


def sign_report(
    report: bytes | bytearray | memoryview | AttestationReport,
    private_key: ec.EllipticCurvePrivateKey,
    *,
    deterministic: bool = False,
) -> bytes:
    """The report's 1184 bytes with its SIGNATURE area replaced by an ECDSA P-384 / SHA-384
    signature of bytes [0, 0x2A0) made with ``private_key`` (a VCEK or VLEK, §1.2).

    Nothing else changes (SIGNATURE_ALGO and SIGNING_KEY are the caller's to set); the
    signature's reserved bytes become zero.

    Args:
        report: the report, as bytes or a record.
        private_key: an EC private key on P-384.
        deterministic: RFC 6979 nonces (the same report and key give the same bytes); needs
            ``cryptography`` >= 44 built with OpenSSL >= 3.2.

    Raises:
        InputTypeError: ``report`` is not a report or bytes, or the key is not an EC key.
        LengthError: ``report`` is not 1184 bytes.
        FieldValueError: the key is not on P-384.
    """
    raw = report_bytes(report)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise _not_ec_key(private_key, "sign_report")
    _check_curve(private_key.curve, "sign_report")
    return sign_signed_bytes(raw[:SIGNED_SIZE], private_key, deterministic=deterministic)


def sign_signed_bytes(
    signed: bytes, private_key: ec.EllipticCurvePrivateKey, *, deterministic: bool
) -> bytes:
    """The 1184 report bytes of the 672 signed bytes ``signed`` and their signature by
    ``private_key`` (internal: the caller has checked both, as :func:`sign_report` does)."""
    der = private_key.sign(signed, _ecdsa(deterministic))
    return signed + signature_from_der(der)


def verify_report(
    report: bytes | bytearray | memoryview | AttestationReport,
    public_key: ec.EllipticCurvePublicKey | x509.Certificate,
) -> bool:
    """Whether the report's signature is a valid ECDSA P-384 / SHA-384 signature of bytes
    [0, 0x2A0) by ``public_key`` (a VCEK/VLEK key or certificate, §1.2).

    ``False`` also when SIGNATURE_ALGO is not 1 or an R/S slot's padding is not zero (not a
    P-384 scalar). The SIGNATURE area's reserved bytes are not signed and not looked at here
    (:func:`check_report` reports them).

    Raises:
        InputTypeError: ``report`` is not a report or bytes; the key is not an EC key.
        LengthError: ``report`` is not 1184 bytes.
        FieldValueError: the key is not on P-384.
    """
    raw = report_bytes(report)
    key = public_key.public_key() if isinstance(public_key, x509.Certificate) else public_key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _not_ec_key(key, "verify_report")
    _check_curve(key.curve, "verify_report")
    algo = int.from_bytes(raw[REPORT_OFFSET["signature_algo"] :][:4], "little")
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        return False
    try:
        der = signature_to_der(raw[SIGNED_SIZE:])
    except FieldValueError:
        return False
    try:
        key.verify(der, raw[:SIGNED_SIZE], _ecdsa(False))
    except InvalidSignature:
        return False
    return True
