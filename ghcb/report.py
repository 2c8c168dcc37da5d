"""The SEV-SNP attestation report: a typed record, parse/build, checks, and its ECDSA signature.

Layout: AMD SEV-SNP firmware ABI "ATTESTATION_REPORT" (0x4A0 bytes, versions 2, 3 and 5), as
transcribed in snp-firmware-facts.md §1; the schema is
:data:`ghcb.schemas.report.attestation_report` and the table ``spec/tables/report.toml``.

* :func:`parse_report` decodes any 1184 bytes and :func:`build_report` gives them back exactly
  (reserved gaps and signature padding included); ``strict=True`` also refuses what
  :func:`check_report` finds as an error (unknown version, non-zero reserved bytes, ...).
* The signature (snp-firmware-facts §1.2) is ECDSA P-384 with SHA-384 over bytes
  [0, 0x2A0) (:func:`signed_bytes`); R and S are little-endian scalars in 72-byte slots whose
  top 24 bytes are zero. :func:`encode_signature` / :func:`decode_signature` convert between
  ``(r, s)`` and the 0x200-byte SIGNATURE area, :func:`signature_to_der` /
  :func:`signature_from_der` between that area and the DER ``SEQUENCE {r, s}`` that
  ``cryptography`` signs and verifies, and :func:`sign_report` / :func:`verify_report` do the
  whole job with a VCEK/VLEK key.
* TCB_VERSION has two byte layouts (snp-firmware-facts §1.3): Milan/Genoa and Turin;
  :func:`decode_tcb` picks one by :class:`Product`, which a v3+ report names through its CPUID
  fields (:attr:`AttestationReport.product`, §1.7).

This module is the public face; the pieces live in private modules by family:
:mod:`ghcb._report_record` (the record and its bit fields), :mod:`ghcb._report_check` (the
checker), :mod:`ghcb._report_sig` (the signature), :mod:`ghcb.tcb` (products and TCB layouts)
and :mod:`ghcb._record` (:class:`SchemaRecord`, the base of every fixed-size record declared by
one flat schema: the report, the TCB layouts, the guest-message header and payloads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ghcb._record import SchemaRecord
from ghcb._report_check import check_report, report_violations
from ghcb._report_record import (
    ATTESTATION_REPORT_SIZE,
    KNOWN_VERSIONS,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_SIZE,
    AttestationReport,
    GuestPolicy,
    PlatformInfo,
    SignerInfo,
    SigningKey,
    report_bytes,
    require_report,
)
from ghcb._report_sig import (
    decode_signature,
    encode_signature,
    sign_report,
    signature_from_der,
    signature_to_der,
    signed_bytes,
    verify_report,
)
from ghcb.errors import FieldValueError, Severity
from ghcb.tcb import (
    PRODUCT_CPUID,
    Product,
    TcbGenoaMilan,
    TcbTurin,
    cpuid_fms,
    decode_tcb,
    product_from_cpuid,
)

if TYPE_CHECKING:
    from ghcb._fast import Backend

__all__ = [
    "ATTESTATION_REPORT_SIZE",
    "KNOWN_VERSIONS",
    "PRODUCT_CPUID",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "AttestationReport",
    "GuestPolicy",
    "PlatformInfo",
    "Product",
    "SchemaRecord",
    "SignerInfo",
    "SigningKey",
    "TcbGenoaMilan",
    "TcbTurin",
    "build_report",
    "check_report",
    "cpuid_fms",
    "decode_signature",
    "decode_tcb",
    "encode_signature",
    "parse_report",
    "product_from_cpuid",
    "sign_report",
    "signature_from_der",
    "signature_to_der",
    "signed_bytes",
    "verify_report",
]


def parse_report(
    data: bytes | bytearray | memoryview, *, strict: bool = False, backend: Backend = "struct"
) -> AttestationReport:
    """Decode exactly 1184 bytes into an :class:`AttestationReport`.

    Args:
        data: the report: any buffer of bytes.
        strict: also refuse a report :func:`check_report` finds an error in (the first one is
            raised), e.g. an unknown version or non-zero reserved bytes.
        backend: ``"struct"`` (fast, default) or ``"construct"`` (the reference schema).

    Raises:
        InputTypeError: ``data`` is not bytes-like.
        LengthError: ``len(data) != 1184``.
        FieldValueError: ``strict`` and the report breaks a rule (``rule`` is the check code).
    """
    raw = report_bytes(data)
    report = AttestationReport.from_bytes(raw, backend=backend)
    if strict:
        for v in report_violations(report):
            if v.severity is Severity.ERROR:
                raise FieldValueError(v.message, rule=v.code, spec=v.spec, offset=v.offset)
    return report


def build_report(report: AttestationReport, *, backend: Backend = "struct") -> bytes:
    """The exact 1184 bytes of ``report``.

    Raises:
        InputTypeError: ``report`` is not an :class:`AttestationReport`.
    """
    require_report(report, "build_report")
    return report.to_bytes(backend=backend)
