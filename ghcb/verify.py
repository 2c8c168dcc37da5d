"""What a guest (or its relying party) checks with the certificate table it got: the report's
signature by the table's VCEK or VLEK, and the chain to the ARK.

Sources: GHCB spec §4.1.8.1 (the table's GUIDs: the ASVK travels under the ASK GUID),
snp-firmware-facts.md §1.2 (ECDSA P-384 / SHA-384 over report bytes [0, 0x2A0)), §1.6
(SIGNER_INFO.SIGNING_KEY: 0 VCEK, 1 VLEK), §2 (AMD's chain: ARK self-signed, ARK → ASK → VCEK
and ARK → ASVK → VLEK, RSASSA-PSS SHA-384 with salt 48). Real AMD certificates (which may carry
a serial number of 0) verify here as the synthetic ones do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ghcb._bytes import byte_string
from ghcb._x509 import _load_x509
from ghcb.certs import CertGuid, cert_table_index, parse_cert_table
from ghcb.errors import GhcbError
from ghcb.guest_msg import ReportRsp
from ghcb.hypervisor.pki import verify_signed_by
from ghcb.report import SigningKey, parse_report, verify_report

if TYPE_CHECKING:
    import uuid

    from cryptography import x509

__all__ = ["TableVerification", "verify_with_table"]

SPEC_VERIFY: Final = "snp-firmware-facts §1.2 (report signature), §2 (AMD chain)"


@dataclass(frozen=True, slots=True)
class TableVerification:
    """What checking a report against a certificate table found: the signer the report names
    (``"vcek"``/``"vlek"``), whether the table's certificate of that key verifies the
    signature, whether the chain leaf <- ASK/ASVK <- ARK verifies (and the ARK is the pinned
    one, when a pin was given), the GUIDs the table holds and, when the check could not run,
    why (``problem``)."""

    signer: str
    signature_ok: bool = False
    chain_ok: bool = False
    certificates: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.signature_ok and self.chain_ok


def verify_with_table(
    report: ReportRsp | bytes | bytearray | memoryview,
    certs: bytes | bytearray | memoryview,
    *,
    ark_sha256: bytes | None = None,
) -> TableVerification:
    """Verify a report as a guest does with the table it got.

    Args:
        report: the MSG_REPORT_RSP (its report is checked) or the 1184 report bytes (an
            ``outblob``).
        certs: the certificate table (the guest's certificate buffer or an ``auxblob``).
        ark_sha256: the SHA-256 of the ARK's DER the chain must end in (a pin); without it,
            any self-signed ARK in the table is taken.

    Returns:
        The signer, ``signature_ok``, ``chain_ok`` and the table's GUIDs; ``problem`` says why
        nothing could be checked (the table does not parse, lacks a certificate, or holds
        something that is not X.509).

    Raises:
        InputTypeError: ``report``, ``certs`` or the pin is not bytes-like.
        LengthError: the report is not 1184 bytes.
    """
    raw = (
        report.report
        if isinstance(report, ReportRsp)
        else byte_string(report, what="an attestation report", spec=SPEC_VERIFY)
    )
    pin = None if ark_sha256 is None else byte_string(ark_sha256, what="a pin", spec=SPEC_VERIFY)
    parsed = parse_report(raw)
    signer = "vlek" if parsed.signing_key == SigningKey.VLEK else "vcek"
    mid = "asvk" if signer == "vlek" else "ask"
    try:
        table = parse_cert_table(certs, strict=False)
    except GhcbError as e:
        return TableVerification(signer, problem=f"the table does not parse: {e.message}")
    by_guid: dict[uuid.UUID, list[bytes]] = {}
    for entry in table:
        by_guid.setdefault(entry.guid, []).append(entry.data)
    names = tuple(sorted(str(guid) for guid in by_guid))
    leaf_guid = CertGuid.VLEK if signer == "vlek" else CertGuid.VCEK
    wanted = {"ark": CertGuid.ARK, mid: CertGuid.ASK, signer: leaf_guid}
    missing = [name.upper() for name, guid in wanted.items() if guid.value not in by_guid]
    if missing:
        return TableVerification(
            signer, certificates=names, problem=f"the table lacks {', '.join(missing)}"
        )
    ark_der = by_guid[CertGuid.ARK.value][0]
    ark, leaf = _load_x509(ark_der), _load_x509(by_guid[leaf_guid.value][0])
    # The ASK GUID carries the ASK and, for a VLEK, the ASVK (GHCB spec §4.1.8.1): a table may
    # hold both, in any order; the chain holds if one of them links the leaf to the ARK.
    # The lenient parse keeps the first entry of a GUID; every in-bounds one counts here.
    view = byte_string(certs, what="a certificate table", spec=SPEC_VERIFY)
    candidates = [
        view[head.offset : head.offset + head.length]
        for head in cert_table_index(view)
        if head.guid == CertGuid.ASK.value and 0 < head.length <= len(view) - head.offset
    ]
    middles = [c for c in map(_load_x509, candidates) if c is not None]
    if ark is None or leaf is None or not middles:
        unreadable = [n.upper() for n, c in (("ark", ark), (signer, leaf)) if c is None]
        return TableVerification(
            signer,
            certificates=names,
            problem=f"not X.509: {', '.join(unreadable + ([] if middles else [mid.upper()]))}",
        )
    try:
        signature_ok = verify_report(raw, leaf)
    except GhcbError:
        signature_ok = False  # the leaf's key is not an EC key
    chain_ok = any(_links(ark, middle, leaf, mid, signer) for middle in middles)
    if pin is not None and hashlib.sha256(ark_der).digest() != pin:
        chain_ok = False
    return TableVerification(signer, signature_ok, chain_ok, names)


def _links(
    ark: x509.Certificate, middle: x509.Certificate, leaf: x509.Certificate, mid: str, signer: str
) -> bool:
    """Whether ARK (self-signed) -> ``middle`` -> ``leaf`` verifies as AMD signs."""
    try:
        verify_signed_by(ark, ark, name="ark")
        verify_signed_by(middle, ark, name=mid)
        verify_signed_by(leaf, middle, name=signer)
    except (GhcbError, ValueError):  # ValueError: a name or extension cryptography can't read
        return False
    return True
