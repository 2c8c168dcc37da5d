"""The attestation report checker: every rule a report breaks (private: import
:func:`check_report` from :mod:`ghcb.report`).

Rules: snp-firmware-facts §1.1-§1.7 (see the table in :func:`check_report`).
"""

from __future__ import annotations

from ghcb._report_record import (
    KNOWN_VERSIONS,
    P384_SCALAR_BYTES,
    REPORT_OFFSET,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SPEC_REPORT,
    SPEC_SIGNATURE,
    VERSION_CPUID,
    VERSION_MIT,
    AttestationReport,
    GuestPolicy,
    PlatformInfo,
    SignerInfo,
    SigningKey,
    report_bytes,
)
from ghcb.errors import LengthError, Severity, Violation
from ghcb.tcb import SPEC_CPUID

__all__ = ["check_report", "report_violations"]


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_report(data: bytes | bytearray | memoryview | AttestationReport) -> list[Violation]:
    """Every rule an attestation report breaks, in offset order.

    =========================  ========  ==========================================================
    code                       severity  meaning
    =========================  ========  ==========================================================
    ``report-length``          error     the input is not 1184 bytes (nothing else is checked)
    ``unknown-version``        error     VERSION is not 2, 3, 4 or 5
    ``version-4``              warning   VERSION 4: no layout of its own (read as version 3)
    ``policy-bit17``           error     POLICY bit 17 is 0 (it must be 1; go-sev-guest refuses)
    ``policy-reserved``        error     POLICY bits 63:26 set
    ``signature-algo``         error     SIGNATURE_ALGO is not 1 (ECDSA P-384 with SHA-384)
    ``platform-info-reserved`` warning   PLATFORM_INFO bit 6 or bits 63:8 set (meaning unknown)
    ``signer-info-reserved``   error     signer info bits 31:5 set
    ``signing-key-reserved``   error     SIGNING_KEY is 2..6
    ``reserved-nonzero``       error     a reserved gap (as the report's version lays it out) is
                                         not zero: CPUID bytes of a v2 report, mitigation
                                         vectors of a v2/v3 report included
    ``unknown-product``        error     a v3+ report whose CPUID fields name no product
    ``signature-padding``      error     the top 24 bytes of the R or S slot are not zero
    ``signature-reserved``     error     the reserved bytes of the SIGNATURE area are not zero
    ``unsigned-signature``     warning   SIGNING_KEY is NONE but the signature is not zero
    =========================  ========  ==========================================================

    A version without a layout is judged with the nearest one: 0 and 1 as 2, 4 as 3, and
    versions above 5 as 5.

    Raises:
        InputTypeError: ``data`` is not bytes-like or a report.
    """
    if isinstance(data, AttestationReport):
        return report_violations(data)
    try:
        raw = report_bytes(data)
    except LengthError as e:
        return [
            Violation(
                code=e.rule, severity=Severity.ERROR, offset=None, message=e.message, spec=e.spec
            )
        ]
    return report_violations(AttestationReport.from_bytes(raw))


def report_violations(r: AttestationReport) -> list[Violation]:
    err, warn = Severity.ERROR, Severity.WARNING
    out: list[Violation] = []

    def add(code: str, severity: Severity, field: str, message: str, spec: str) -> None:
        out.append(
            Violation(
                code=code,
                severity=severity,
                offset=REPORT_OFFSET[field],
                message=message,
                spec=spec,
            )
        )

    if r.version == 4:
        add(
            "version-4",
            warn,
            "version",
            "VERSION 4 has no layout of its own (read as 3)",
            SPEC_REPORT,
        )
    elif r.version not in KNOWN_VERSIONS:
        add("unknown-version", err, "version", f"unknown report VERSION {r.version}", SPEC_REPORT)
    policy = r.policy_bits
    if not policy.reserved_17_17:
        add("policy-bit17", err, "policy", "POLICY bit 17 must be 1", GuestPolicy.SPEC)
    if policy.reserved_63_26:
        add("policy-reserved", err, "policy", "POLICY bits 63:26 must be zero", GuestPolicy.SPEC)
    if r.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        add(
            "signature-algo",
            err,
            "signature_algo",
            f"SIGNATURE_ALGO {r.signature_algo} is not 1 (ECDSA P-384 SHA-384)",
            SPEC_REPORT,
        )
    platform = r.platform_info_bits
    if platform.reserved_6_6 or platform.reserved_63_8:
        add(
            "platform-info-reserved",
            warn,
            "platform_info",
            f"PLATFORM_INFO {r.platform_info:#x} sets bits of unknown meaning",
            PlatformInfo.SPEC,
        )
    signer = r.signer
    if signer.reserved_31_5:
        add(
            "signer-info-reserved",
            err,
            "signer_info",
            "signer info bits 31:5 must be zero",
            SignerInfo.SPEC,
        )
    if not isinstance(SigningKey.from_int(signer.signing_key), SigningKey):
        add(
            "signing-key-reserved",
            err,
            "signer_info",
            f"SIGNING_KEY {signer.signing_key} is reserved",
            SignerInfo.SPEC,
        )
    reserved = [f for f in AttestationReport.FIELDS if f.name.startswith("reserved_0x")]
    if r.version < VERSION_CPUID:
        reserved += [f for f in AttestationReport.FIELDS if f.name.startswith("cpuid_")]
    if r.version < VERSION_MIT:
        reserved += [f for f in AttestationReport.FIELDS if f.name.endswith("_mit_vector")]
    for f in sorted(reserved, key=lambda f: f.offset):
        if f.name == "reserved_0x330":
            continue  # the signature's own rule below
        value = getattr(r, f.name)
        if value if isinstance(value, int) else any(value):
            out.append(
                Violation(
                    code="reserved-nonzero",
                    severity=err,
                    offset=f.offset,
                    message=f"{f.name} must be zero in a version {r.version} report",
                    spec=SPEC_REPORT,
                )
            )
    if r.version >= VERSION_CPUID and r.product is None:
        add(
            "unknown-product",
            err,
            "cpuid_fam_id",
            f"CPUID family {r.cpuid_fam_id:#x} model {r.cpuid_mod_id:#x} names no product",
            SPEC_CPUID,
        )
    for name in ("signature_r", "signature_s"):
        if any(getattr(r, name)[P384_SCALAR_BYTES:]):
            out.append(
                Violation(
                    code="signature-padding",
                    severity=err,
                    offset=REPORT_OFFSET[name] + P384_SCALAR_BYTES,
                    message=f"the top 24 bytes of {name} must be zero",
                    spec=SPEC_SIGNATURE,
                )
            )
    if any(r.reserved_0x330):
        add(
            "signature-reserved",
            err,
            "reserved_0x330",
            "the SIGNATURE area's reserved bytes must be zero",
            SPEC_SIGNATURE,
        )
    if signer.signing_key == SigningKey.NONE and any(r.signature_r + r.signature_s):
        add(
            "unsigned-signature",
            warn,
            "signature_r",
            "SIGNING_KEY is NONE but the signature is not zero",
            SPEC_SIGNATURE,
        )
    out.sort(key=lambda v: -1 if v.offset is None else v.offset)
    return out
