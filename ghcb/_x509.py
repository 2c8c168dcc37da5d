"""X.509 helpers for certificate-table payloads: subjects, ASK vs ASVK, PEM to DER.

Sources: RFC 5280 §4.1 (certificate), RFC 7468 (PEM); AMD's certificate naming (the ASK is
``SEV-<product>``, the ASVK ``SEV-VLEK-<product>``, both under the GHCB spec §4.1.8.1 ASK
GUID). Reading a subject uses ``cryptography``; telling certificate bytes from garbage uses
only the outer-shape checks of :mod:`ghcb._der`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Final

from ghcb._bytes import byte_string
from ghcb._der import der_fits_label, is_pem, is_x509_der, pem_block, pem_to_der
from ghcb.errors import CertTableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography import x509

__all__ = ["ask_or_asvk", "payload_der", "subject_common_name", "subject_text"]

#: AMD names the ASVK ``SEV-VLEK-<product>`` (and the ASK ``SEV-<product>``).
_ASVK_CN_PREFIX: Final = "SEV-VLEK-"
SPEC_X509: Final = "RFC 5280 §4.1 Certificate"
SPEC_PEM: Final = "RFC 7468 §5, §6 (PEM certificates and CRLs)"


def _load_x509(der_or_pem: object) -> x509.Certificate | None:
    """The certificate in ``der_or_pem`` (any buffer of bytes), or None if unreadable.

    Raises:
        InputTypeError: ``der_or_pem`` is not bytes-like.
    """
    raw = byte_string(der_or_pem, what="a certificate", spec=SPEC_X509)
    data = pem_to_der(raw) if is_pem(raw) else raw
    if data is None or not is_x509_der(data):
        return None
    from cryptography import x509  # on first use: ``import ghcb`` stays without it

    with warnings.catch_warnings():
        # Real AMD VCEKs have non-positive serial numbers, which cryptography warns about.
        warnings.simplefilter("ignore")
        try:
            return x509.load_der_x509_certificate(data)
        except Exception:  # hostile bytes: ValueError, InvalidVersion, ... mean "unreadable"
            return None


def _read_subject(
    der_or_pem: bytes | bytearray | memoryview, read: Callable[[x509.Name], object]
) -> object:
    """``read(subject)`` of the certificate, or None when it cannot be read."""
    cert = _load_x509(der_or_pem)
    if cert is None:
        return None
    try:
        return read(cert.subject)
    except ValueError:
        return None


def _common_name(subject: x509.Name) -> object:
    from cryptography.x509.oid import NameOID

    attrs = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def subject_common_name(der_or_pem: bytes | bytearray | memoryview) -> str | None:
    """The subject CN of an X.509 certificate (DER or PEM), or None if it cannot be read.

    Raises:
        InputTypeError: ``der_or_pem`` is not bytes-like.
    """
    value = _read_subject(der_or_pem, _common_name)
    return value if isinstance(value, str) else None


def _rfc4514(subject: x509.Name) -> object:
    return subject.rfc4514_string()


def subject_text(der_or_pem: bytes | bytearray | memoryview) -> str | None:
    """The subject of an X.509 certificate as an RFC 4514 string, or None.

    Raises:
        InputTypeError: ``der_or_pem`` is not bytes-like.
    """
    value = _read_subject(der_or_pem, _rfc4514)
    return value if isinstance(value, str) else None


def ask_or_asvk(data: bytes, *, has_vlek: bool, has_vcek: bool) -> str:
    """ASK or ASVK for a certificate under the ASK GUID.

    1. By subject: AMD names the ASVK ``SEV-VLEK-<product>`` and the ASK ``SEV-<product>``.
    2. Otherwise by the table: a VLEK and no VCEK means the ASK GUID holds the ASVK (which
       signs VLEKs), as snphost/snpguest assume.
    """
    cn = subject_common_name(data) if data else None
    if cn is not None:
        return "ASVK" if cn.startswith(_ASVK_CN_PREFIX) else "ASK"
    return "ASVK" if has_vlek and not has_vcek else "ASK"


def payload_der(data: bytes, *, certificate: bool, what: str) -> bytes:
    """The bytes to store for a payload: a PEM certificate/CRL becomes DER, anything else is
    kept as it is.

    Args:
        data: the payload.
        certificate: whether the payload sits under a certificate GUID (VCEK, VLEK, ASK, ARK,
            CRL). There, data that looks like PEM but is not one valid block whose body is
            what its label says is refused; under other GUIDs such bytes are opaque payload.
        what: how to name the payload in an error.

    Raises:
        CertTableError: (``certificate``) PEM that is not one certificate or CRL block
            (``bad-pem``), or a block whose decoded body does not have the DER outer shape
            of its label (``pem-not-der``: ``CERTIFICATE`` around three zero bytes).
    """
    if not is_pem(data):
        return data
    block = pem_block(data)
    if block is None:
        if not certificate:
            return data
        raise CertTableError(
            f"{what}: PEM data that is not a single certificate or CRL",
            rule="bad-pem",
            spec=SPEC_PEM,
        )
    label, der = block
    if der_fits_label(label, der):
        return der
    if not certificate:
        return data
    # RFC 7468 §5.1: "The encoded data MUST be a BER (DER strongly preferred; see Appendix B)
    # encoded ASN.1 Certificate structure as described in Section 4 of [RFC5280]."
    raise CertTableError(
        f"{what}: the PEM {label.decode()} block holds {len(der)} bytes that are not a DER "
        f"{label.decode()}",
        rule="pem-not-der",
        spec=SPEC_PEM,
    )
