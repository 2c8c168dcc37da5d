"""A synthetic AMD SEV-SNP key chain: ARK → ASK → VCEK and ARK → ASVK → VLEK, per product.

Sources (``snp-firmware-facts.md``, transcribed with their sources in
``spec/tables/pki.toml``): §2.1 the real AMD ARK/ASK/ASVK certificates (names, serials,
validity, extensions), §2.2 the X.509 details common to all AMD certificates (DN order,
RSASSA-PSS parameters), §2.3/§2.4 the VCEK/VLEK and AMD's extensions under
1.3.6.1.4.1.3704.1, §1.3 the TCB_VERSION byte layout per product, §1.1/§3.7 the VCEK being
derived per TCB. peers.md §3: what independent verifiers (omne-attest and others) accept.

The certificates have AMD's shapes: the same subjects, issuers, serials and validity dates as
AMD's real roots (only the keys differ, so pin *our* ARK), RSA-4096 roots signing with
RSASSA-PSS / SHA-384 / MGF1-SHA-384 / salt 48, EC P-384 leaves, the AMD extensions in the
order real certificates carry them, DER INTEGER SPLs and the raw hwID. Departures, each forced
or unpinned:

* Leaf serial 1, not AMD's 0: ``cryptography`` refuses to build a non-positive serial and warns
  when it loads one (so would every verifier that loads certificates with it).
* The PSS parameters omit trailerField (DER: it is the default), as newer KDS VCEKs do; AMD's
  roots carry it explicitly. Both forms verify (facts §2.2).
* Not pinned by a real certificate (facts §6.5-6.6): the Genoa VCEK (assumed Milan's shape,
  productName ``Genoa-B0``), and every VLEK detail (extension order: the VCEK's with CSP_ID in
  hwID's place; structVersion: the product's; productName: the bare product line, as
  go-sev-guest has it).
* Turin's hwID is 8 bytes, as on the real Turin VCEK (facts §2.4): the chip id's first 8 bytes;
  its other 56 bytes must be zero (a Turin report's CHIP_ID, facts §1.1).

What is random and what is not: the RSA root keys are generated (``cryptography`` has no
seeded RSA generation) once per product per process, lazily; RSASSA-PSS signatures carry a
random salt, so certificate bytes differ between processes. Everything else is fixed: names,
serials, validity dates, extensions, and the **leaf keys**, which are derived from public
inputs — the VCEK from (product, chip id, TCB), the VLEK from (product, CSP id, TCB) — as
AMD derives a new VCEK for each TCB from the chip's secret (facts §1.1 "the VCEK is derived
for this TCB", §3.7). They are test keys: anyone can recompute them.

"Certificates for TCB n": :meth:`Chain.at_tcb` (or :func:`chain` with another ``tcb``) reuses
the cached roots and issues a new VCEK and VLEK with **new keys** derived for that TCB — what
the hardware does, so a report signed at TCB n+1 does not verify against a stale VCEK for TCB n
(the certificate-store race the demo shows). It costs two PSS signatures and two P-384 key
derivations (milliseconds); only the first chain of a product generates its three RSA-4096
keys. Measured (not asserted; a shared machine, one process, cold): 1-5 s per product,
nearly all of it RSA-4096 generation, whose time varies a lot from run to run (prime search);
a chain for a new TCB ≈ 12 ms.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ghcb.certs import CertEntry, CertGuid, build_cert_table
from ghcb.errors import GhcbError, InputTypeError
from ghcb.hypervisor._pki_build import (
    AMD_OIDS,
    DEFAULT_CHIP_IDS,
    DEFAULT_CSP_ID,
    PSS,
    PSS_ALGORITHM_IDS,
    PSS_SALT_LENGTH,
    SPEC_CERTS,
    VCEK_CN,
    VLEK_CN,
    ProductSpec,
    Roots,
    check_chip_id,
    check_csp_id,
    derive_leaf_key,
    extension_values,
    issue_leaf,
    make_roots,
    product_spec,
)
from ghcb.hypervisor.errors import HostError, HypervisorUsageError
from ghcb.tcb import PRODUCTS, SPEC_TCB, Product, Tcb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography import x509

__all__ = [
    "AMD_OIDS",
    "CERT_NAMES",
    "DEFAULT_CHIP_IDS",
    "DEFAULT_CSP_ID",
    "DEFAULT_TCB",
    "PRODUCTS",
    "PSS_SALT_LENGTH",
    "SPEC_CERTS",
    "Chain",
    "ChainError",
    "Product",
    "Tcb",
    "chain",
    "verify_chain",
    "verify_signed_by",
    "write_chain",
]

#: The certificates of a chain, in the order files are written.
CERT_NAMES: Final = ("ark", "ask", "asvk", "vcek", "vlek")

#: The TCB :func:`chain` uses when none is given: the real GCP Milan report's (boot loader 4,
#: tee 0, snp 0x1B, microcode 0xDE; facts §1.3), whose microcode SPL needs the DER INTEGER's
#: 0x00 pad.
DEFAULT_TCB: Final = Tcb(boot_loader=4, tee=0, snp=0x1B, microcode=0xDE)


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------
class ChainError(GhcbError):
    """A certificate chain does not verify; ``rule`` names the link or check that failed
    (``ark-signature``, ``ask-signature``, ``vcek-signature``, ``asvk-signature``,
    ``vlek-signature``, ``<cert>-issuer-name``, ``<cert>-signature-algorithm``,
    ``<cert>-key-type``)."""


@dataclass(frozen=True, eq=False, repr=False)
class Chain:
    """One product's chain: the certificates (``cryptography`` objects and their DER / PEM
    bytes under :data:`CERT_NAMES`) and every private key (synthetic: the firmware signs
    reports with ``vcek_key`` / ``vlek_key``; the root keys let tests issue variants).

    Build with :func:`chain`; equal arguments give the same object.
    """

    #: The product's name as a plain ``str`` (the :class:`~ghcb.tcb.Product` value).
    product: str
    chip_id: bytes
    tcb: Tcb
    csp_id: str
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    vcek: x509.Certificate
    vlek: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    vlek_key: ec.EllipticCurvePrivateKey
    der: Mapping[str, bytes]
    pem: Mapping[str, bytes]

    def __repr__(self) -> str:
        return (
            f"Chain(product={self.product!r}, tcb={self.tcb!r}, chip_id={self.chip_id[:8].hex()}"
            f"..., csp_id={self.csp_id!r})"
        )

    def at_tcb(self, tcb: Tcb) -> Chain:
        """The same chip's chain for another reported TCB: the same roots, a new VCEK and VLEK
        with keys derived for ``tcb`` (cheap; see the module docstring)."""
        return chain(self.product, chip_id=self.chip_id, tcb=tcb, csp_id=self.csp_id)

    def cert_entries(self, signer: Literal["vcek", "vlek"] = "vcek") -> list[CertEntry]:
        """The certificate-table entries a host serves (DER): ARK, ASK, VCEK for ``"vcek"``;
        ARK, ASVK (under the ASK GUID), VLEK for ``"vlek"``.

        Raises:
            HypervisorUsageError: ``signer`` is neither.
        """
        if signer == "vcek":
            mid, leaf, guid = self.der["ask"], self.der["vcek"], CertGuid.VCEK
        elif signer == "vlek":
            mid, leaf, guid = self.der["asvk"], self.der["vlek"], CertGuid.VLEK
        else:
            raise HypervisorUsageError(
                f"signer must be 'vcek' or 'vlek', not {signer!r}",
                rule="signer",
                spec=SPEC_CERTS,
            )
        return [
            CertEntry(CertGuid.ARK, self.der["ark"]),
            CertEntry(CertGuid.ASK, mid),
            CertEntry(guid, leaf),
        ]

    def cert_table(
        self, signer: Literal["vcek", "vlek"] = "vcek", *, pad_to_page: bool = False
    ) -> bytes:
        """:func:`ghcb.build_cert_table` of :meth:`cert_entries`."""
        return build_cert_table(self.cert_entries(signer), pad_to_page=pad_to_page)


_LOCK: Final = threading.Lock()
_ROOTS: Final[dict[Product, Roots]] = {}
_CHAINS: Final[OrderedDict[tuple[Product, bytes, Tcb, str], Chain]] = OrderedDict()
#: Chains kept per process (least recently used dropped first); roots are never dropped.
_MAX_CHAINS: Final = 256


def _roots(spec: ProductSpec) -> Roots:
    """The product's roots, generated on first use (call with :data:`_LOCK` held)."""
    roots = _ROOTS.get(spec.name)
    if roots is None:
        roots = _ROOTS[spec.name] = make_roots(spec)
    return roots


def chain(
    product: Product | str = Product.MILAN,
    *,
    chip_id: bytes | bytearray | memoryview | None = None,
    tcb: Tcb | None = None,
    csp_id: str = DEFAULT_CSP_ID,
) -> Chain:
    """The synthetic chain of ``product`` for one chip at one reported TCB.

    Cached per process: the roots once per product (three RSA-4096 keys, generated on first
    use), the chain per (product, chip_id, tcb, csp_id) — the same object for the same
    arguments.

    Args:
        product: a :class:`~ghcb.tcb.Product` (or its value: ``"Milan"``, ``"Genoa"`` or
            ``"Turin"``).
        chip_id: the report's 64-byte CHIP_ID (default :data:`DEFAULT_CHIP_IDS`); the VCEK's
            hwID is all of it (Turin: its first 8 bytes; the rest must be zero).
        tcb: the reported TCB the VCEK/VLEK are issued for (default :data:`DEFAULT_TCB`).
        csp_id: the VLEK's CSP_ID.

    Raises:
        HypervisorUsageError: unknown product, a chip id that is not 64 bytes (or, on Turin,
            not zero after the hwID), ``tcb.fmc`` set on Milan/Genoa, a non-ASCII csp_id.
        InputTypeError: ``chip_id`` not bytes-like, ``tcb`` not a :class:`Tcb`, ``csp_id``
            not a str.
    """
    spec = product_spec(product)
    chip = DEFAULT_CHIP_IDS[spec.name] if chip_id is None else check_chip_id(spec, chip_id)
    tcb = DEFAULT_TCB if tcb is None else tcb
    if not isinstance(tcb, Tcb):
        raise InputTypeError(
            f"tcb must be a Tcb, not {type(tcb).__name__}", rule="tcb-type", spec=SPEC_TCB
        )
    tcb_bytes = tcb.to_bytes(spec.name)
    csp = check_csp_id(csp_id)
    key = (spec.name, chip, tcb, csp)
    with _LOCK:
        cached = _CHAINS.get(key)
        if cached is not None:
            _CHAINS.move_to_end(key)
            return cached
        roots = _roots(spec)
        made = _make_chain(spec, roots, chip=chip, tcb=tcb, tcb_bytes=tcb_bytes, csp_id=csp)
        _CHAINS[key] = made
        if len(_CHAINS) > _MAX_CHAINS:
            _CHAINS.popitem(last=False)
        return made


def _make_chain(
    spec: ProductSpec, roots: Roots, *, chip: bytes, tcb: Tcb, tcb_bytes: bytes, csp_id: str
) -> Chain:
    vcek_key = derive_leaf_key(b"VCEK", spec, tcb_bytes, chip)
    vlek_key = derive_leaf_key(b"VLEK", spec, tcb_bytes, csp_id.encode())
    vcek = issue_leaf(
        common_name=VCEK_CN,
        issuer=roots.ask,
        issuer_key=roots.ask_key,
        key=vcek_key,
        order=spec.vcek_extensions,
        values=extension_values(
            spec, tcb, product_name=spec.vcek_product_name, chip_id=chip, csp_id=csp_id
        ),
    )
    vlek = issue_leaf(
        common_name=VLEK_CN,
        issuer=roots.asvk,
        issuer_key=roots.asvk_key,
        key=vlek_key,
        order=spec.vlek_extensions,
        values=extension_values(
            spec, tcb, product_name=spec.vlek_product_name, chip_id=chip, csp_id=csp_id
        ),
    )
    certs = {"ark": roots.ark, "ask": roots.ask, "asvk": roots.asvk, "vcek": vcek, "vlek": vlek}
    return Chain(
        product=spec.name.value,
        chip_id=chip,
        tcb=tcb,
        csp_id=csp_id,
        ark=roots.ark,
        ask=roots.ask,
        asvk=roots.asvk,
        vcek=vcek,
        vlek=vlek,
        ark_key=roots.ark_key,
        ask_key=roots.ask_key,
        asvk_key=roots.asvk_key,
        vcek_key=vcek_key,
        vlek_key=vlek_key,
        der=MappingProxyType(
            {n: c.public_bytes(serialization.Encoding.DER) for n, c in certs.items()}
        ),
        pem=MappingProxyType(
            {n: c.public_bytes(serialization.Encoding.PEM) for n, c in certs.items()}
        ),
    )


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------
def _signature_algorithm(cert: x509.Certificate) -> bytes:
    """The outer signatureAlgorithm's DER bytes (RFC 5280 §4.1.1.2)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    first = der[1]
    header = 2 + (first & 0x7F if first & 0x80 else 0)
    start = header + len(cert.tbs_certificate_bytes)
    end = start + 2 + der[start + 1]  # an AlgorithmIdentifier is < 128 bytes
    return der[start:end]


def _public_key(cert: x509.Certificate) -> object:
    """The certificate's public key, or None when ``cryptography`` cannot load it."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate, *, name: str) -> None:
    """Check that ``issuer`` signed ``cert`` as AMD signs: issuer name = issuer's subject,
    RSASSA-PSS with SHA-384, MGF1-SHA-384 and salt length exactly 48, by an RSA key.

    Args:
        cert: the certificate checked.
        issuer: the certificate whose key must have signed it (itself for the ARK).
        name: the certificate's name in errors (``ark``, ``ask``, ``vcek``, ...).

    Raises:
        ChainError: ``<name>-issuer-name``, ``<name>-signature-algorithm``,
            ``<name>-key-type`` (the issuer key is not RSA) or ``<name>-signature``.
    """
    if cert.issuer != issuer.subject:
        raise ChainError(
            f"{name}: issuer {cert.issuer.rfc4514_string()!r} is not the subject of its "
            f"issuer certificate {issuer.subject.rfc4514_string()!r}",
            rule=f"{name}-issuer-name",
            spec=SPEC_CERTS,
        )
    algorithm = _signature_algorithm(cert)
    if algorithm not in PSS_ALGORITHM_IDS:
        raise ChainError(
            f"{name}: signature algorithm {algorithm.hex()} is not RSASSA-PSS with SHA-384, "
            f"MGF1-SHA-384, salt {PSS_SALT_LENGTH}",
            rule=f"{name}-signature-algorithm",
            spec=SPEC_CERTS,
        )
    public = _public_key(issuer)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ChainError(
            f"{name}: the issuer key is {type(public).__name__}, not RSA",
            rule=f"{name}-key-type",
            spec=SPEC_CERTS,
        )
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes, PSS, hashes.SHA384())
    except InvalidSignature:
        raise ChainError(
            f"{name}: the RSASSA-PSS signature (SHA-384, salt {PSS_SALT_LENGTH}) does not "
            "verify under its issuer's key",
            rule=f"{name}-signature",
            spec=SPEC_CERTS,
        ) from None


#: (certificate, its issuer) for each link: ARK self-signed, ASK and ASVK by the ARK, VCEK by
#: the ASK, VLEK by the ASVK.
_LINKS: Final = (("ark", "ark"), ("ask", "ark"), ("vcek", "ask"), ("asvk", "ark"), ("vlek", "asvk"))


def verify_chain(chain: Chain) -> None:
    """Verify every link of ``chain`` (see :func:`verify_signed_by`) and the leaf key types
    (EC P-384).

    Raises:
        ChainError: the first link or key that fails, named by ``rule``.
        InputTypeError: ``chain`` is not a :class:`Chain`.
    """
    if not isinstance(chain, Chain):
        raise InputTypeError(
            f"verify_chain takes a Chain, not {type(chain).__name__}",
            rule="chain-type",
            spec=SPEC_CERTS,
        )
    certs: dict[str, x509.Certificate] = {name: getattr(chain, name) for name in CERT_NAMES}
    for name, issuer in _LINKS:
        verify_signed_by(certs[name], certs[issuer], name=name)
    for name in ("vcek", "vlek"):
        public = _public_key(certs[name])
        if not (
            isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP384R1)
        ):
            raise ChainError(
                f"{name}: the public key is not EC P-384",
                rule=f"{name}-key-type",
                spec=SPEC_CERTS,
            )


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def write_chain(
    directory: str | os.PathLike[str],
    product: Product | str = Product.MILAN,
    *,
    form: Literal["pem", "der"] = "pem",
    chip_id: bytes | bytearray | memoryview | None = None,
    tcb: Tcb | None = None,
) -> dict[str, Path]:
    """Write ``ark``, ``ask``, ``asvk``, ``vcek`` and ``vlek`` (``.pem`` or ``.der``) of
    :func:`chain` into ``directory`` (created if missing); existing files are replaced.

    Returns:
        The path of each file, keyed and ordered as :data:`CERT_NAMES`.

    Raises:
        HypervisorUsageError: ``form`` is neither ``"pem"`` nor ``"der"``, or as
            :func:`chain`.
        InputTypeError: ``directory`` is not a str or path-like.
        HostError: a file could not be written (``rule`` ``write``).
    """
    if form not in ("pem", "der"):
        raise HypervisorUsageError(
            f"form must be 'pem' or 'der', not {form!r}", rule="form", spec=SPEC_CERTS
        )
    if not isinstance(directory, (str, os.PathLike)):
        raise InputTypeError(
            f"directory must be a path, not {type(directory).__name__}",
            rule="directory-type",
            spec=SPEC_CERTS,
        )
    made = chain(product, chip_id=chip_id, tcb=tcb)
    data = made.pem if form == "pem" else made.der
    out: dict[str, Path] = {}
    try:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name in CERT_NAMES:
            path = folder / f"{name}.{form}"
            path.write_bytes(data[name])
            out[name] = path
    except OSError as e:
        raise HostError(
            f"cannot write the {made.product} chain to {directory!s}: {e}",
            rule="write",
            spec=SPEC_CERTS,
        ) from e
    return out
