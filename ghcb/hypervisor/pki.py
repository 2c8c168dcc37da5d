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

import datetime
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ghcb._bytes import byte_string
from ghcb.certs import CertEntry, CertGuid, build_cert_table
from ghcb.errors import FieldValueError, GhcbError, InputTypeError
from ghcb.hypervisor.errors import HostError, HypervisorUsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AMD_OIDS",
    "CERT_NAMES",
    "DEFAULT_CHIP_IDS",
    "DEFAULT_CSP_ID",
    "DEFAULT_TCB",
    "PRODUCTS",
    "PSS_SALT_LENGTH",
    "Chain",
    "ChainError",
    "Product",
    "Tcb",
    "chain",
    "verify_chain",
    "verify_signed_by",
    "write_chain",
]

Product = Literal["Milan", "Genoa", "Turin"]
#: The products with an AMD chain (facts §1.7, §2.1).
PRODUCTS: Final[tuple[Product, ...]] = get_args(Product)
#: The certificates of a chain, in the order files are written.
CERT_NAMES: Final = ("ark", "ask", "asvk", "vcek", "vlek")

SPEC_CERTS: Final = (
    "AMD SEV-SNP certificates as AMD issues them (snp-firmware-facts §2.1-2.4: real ARK/ASK/"
    "ASVK/VCEK; RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48)"
)
SPEC_TCB: Final = "SNP ABI TCB_VERSION (snp-firmware-facts §1.3: Milan/Genoa and Turin layouts)"
SPEC_CHIP_ID: Final = "ATTESTATION_REPORT CHIP_ID, 64 bytes at 0x1A0 (snp-firmware-facts §1.1)"

# ---------------------------------------------------------------------------------------------
# Algorithms and keys
# ---------------------------------------------------------------------------------------------
#: RSASSA-PSS saltLength [2] = 48 on every AMD signature (facts §2.2; salts 32/64 fail).
PSS_SALT_LENGTH: Final = 48
#: RSASSA-PSS with hashAlgorithm sha384 and maskGenAlgorithm mgf1(sha384) (facts §2.2).
_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT_LENGTH)
#: The signature's AlgorithmIdentifier in DER, in both real forms (facts §2.2): without
#: trailerField (what ``cryptography`` writes; newer KDS VCEKs) and with ``[3] INTEGER 1``
#: (AMD's ARK/ASK/ASVK, older VCEKs).
_PSS_ALGORITHM_IDS: Final = (
    bytes.fromhex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402020500a11c301a06092a8648"
        "86f70d010108300d06096086480165030402020500a203020130"
    ),
    bytes.fromhex(
        "304606092a864886f70d01010a3039a00f300d06096086480165030402020500a11c301a06092a8648"
        "86f70d010108300d06096086480165030402020500a203020130a303020101"
    ),
)
#: ARK/ASK/ASVK: RSA-4096, e = 65537 (facts §2.1).
_RSA_BITS: Final = 4096
_RSA_EXPONENT: Final = 65537
#: VCEK/VLEK: EC P-384 (facts §2.3). Its group order n (SEC 2 v2 §2.5.1, FIPS 186-4 D.1.2.4)
#: bounds a derived private scalar.
_LEAF_CURVE: Final = ec.SECP384R1()
_P384_ORDER: Final = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196a"
    "ccc52973",
    16,
)

# ---------------------------------------------------------------------------------------------
# Names (facts §2.2): one attribute per RDN, in this order, CN last. cryptography writes C as
# PrintableString and the others as UTF8String, as AMD's certificates have them.
# ---------------------------------------------------------------------------------------------
_DN_PREFIX: Final = (
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.LOCALITY_NAME, "Santa Clara"),
    (NameOID.STATE_OR_PROVINCE_NAME, "CA"),
    (NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
)
_VCEK_CN: Final = "SEV-VCEK"  # facts §2.3
_VLEK_CN: Final = "SEV-VLEK"  # facts §2.3
#: CRL distribution points (facts §2.1): ARK and ASK name the VCEK CRL, the ASVK the VLEK one.
_VCEK_CRL: Final = "https://kdsintf.amd.com/vcek/v1/{product}/crl"
_VLEK_CRL: Final = "https://kdsintf.amd.com/vlek/v1/{product}/crl"

# ---------------------------------------------------------------------------------------------
# AMD extensions (facts §2.4), arc 1.3.6.1.4.1.3704.1; all non-critical.
# ---------------------------------------------------------------------------------------------
_AMD_ARC: Final = "1.3.6.1.4.1.3704.1"
#: name -> OID. SPLs are DER INTEGERs, productName and CSP_ID DER IA5Strings, hwID raw bytes.
AMD_OIDS: Final[Mapping[str, x509.ObjectIdentifier]] = MappingProxyType(
    {
        name: x509.ObjectIdentifier(f"{_AMD_ARC}.{suffix}")
        for name, suffix in (
            ("structVersion", "1"),
            ("productName", "2"),
            ("blSPL", "3.1"),
            ("teeSPL", "3.2"),
            ("snpSPL", "3.3"),
            ("spl_4", "3.4"),  # reserved: always 0 (Milan/Genoa only)
            ("spl_5", "3.5"),  # reserved
            ("spl_6", "3.6"),  # reserved
            ("spl_7", "3.7"),  # reserved
            ("ucodeSPL", "3.8"),
            ("fmcSPL", "3.9"),  # Turin only
            ("hwID", "4"),  # VCEK only
            ("CSP_ID", "5"),  # VLEK only
        )
    }
)
#: The TCB component each SPL extension carries (None: a reserved SPL, always 0).
_SPL_COMPONENT: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        "blSPL": "boot_loader",
        "teeSPL": "tee",
        "snpSPL": "snp",
        "spl_4": None,
        "spl_5": None,
        "spl_6": None,
        "spl_7": None,
        "ucodeSPL": "microcode",
        "fmcSPL": "fmc",
    }
)
#: VCEK extension order in real certificates (facts §2.4): Milan (and Genoa, assumed), Turin.
_MILAN_VCEK: Final = (
    "structVersion",
    "productName",
    "blSPL",
    "teeSPL",
    "spl_4",
    "spl_5",
    "spl_6",
    "spl_7",
    "snpSPL",
    "ucodeSPL",
    "hwID",
)
_TURIN_VCEK: Final = (
    "structVersion",
    "productName",
    "fmcSPL",
    "blSPL",
    "teeSPL",
    "snpSPL",
    "spl_5",
    "spl_6",
    "spl_7",
    "ucodeSPL",
    "hwID",
)


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class _ProductSpec:
    """One product's AMD chain parameters (facts §2.1, §2.4, §1.3)."""

    name: Product
    ark_serial: int
    ask_serial: int
    asvk_serial: int
    ark_validity: tuple[datetime.datetime, datetime.datetime]
    ask_validity: tuple[datetime.datetime, datetime.datetime]
    asvk_validity: tuple[datetime.datetime, datetime.datetime]
    struct_version: int
    vcek_product_name: str
    hwid_length: int
    vcek_extensions: tuple[str, ...]
    #: TCB_VERSION byte index of each component (facts §1.3).
    tcb_bytes: Mapping[str, int]

    @property
    def vlek_extensions(self) -> tuple[str, ...]:
        """The VCEK order with CSP_ID in hwID's place (no real VLEK DER: facts §6.5)."""
        return tuple("CSP_ID" if e == "hwID" else e for e in self.vcek_extensions)

    @property
    def vlek_product_name(self) -> str:
        """The bare product line (go-sev-guest; facts §2.4)."""
        return self.name


#: Serials and validity are AMD's real ones (facts §2.1: 25 years, serial 0xP0000 ARK, 0xP0001/2
#: ASK, 0xP0101 ASVK).
_PRODUCTS: Final[Mapping[str, _ProductSpec]] = MappingProxyType(
    {
        "Milan": _ProductSpec(
            name="Milan",
            ark_serial=0x10000,
            ask_serial=0x10001,
            asvk_serial=0x10101,
            ark_validity=(_utc("2020-10-22T17:23:05"), _utc("2045-10-22T17:23:05")),
            ask_validity=(_utc("2020-10-22T18:24:20"), _utc("2045-10-22T18:24:20")),
            asvk_validity=(_utc("2022-11-16T22:45:24"), _utc("2047-11-16T22:45:24")),
            struct_version=0,  # real Milan VCEK: 020100
            vcek_product_name="Milan-B0",  # real Milan VCEKs
            hwid_length=64,  # the whole CHIP_ID
            vcek_extensions=_MILAN_VCEK,
            tcb_bytes=MappingProxyType({"boot_loader": 0, "tee": 1, "snp": 6, "microcode": 7}),
        ),
        "Genoa": _ProductSpec(
            name="Genoa",
            ark_serial=0x20000,
            ask_serial=0x20002,
            asvk_serial=0x20101,
            ark_validity=(_utc("2022-01-26T15:34:37"), _utc("2047-01-26T15:34:37")),
            ask_validity=(_utc("2022-10-31T13:33:48"), _utc("2047-10-31T13:33:48")),
            asvk_validity=(_utc("2022-11-18T20:48:34"), _utc("2047-11-18T20:48:34")),
            # No real Genoa VCEK (facts §6.6): Milan's shape; stepping 0 (facts §1.7).
            struct_version=0,
            vcek_product_name="Genoa-B0",
            hwid_length=64,
            vcek_extensions=_MILAN_VCEK,
            tcb_bytes=MappingProxyType({"boot_loader": 0, "tee": 1, "snp": 6, "microcode": 7}),
        ),
        "Turin": _ProductSpec(
            name="Turin",
            ark_serial=0x30000,
            ask_serial=0x30001,
            asvk_serial=0x30101,
            ark_validity=(_utc("2023-05-15T20:03:12"), _utc("2048-05-15T20:03:12")),
            ask_validity=(_utc("2023-05-15T20:25:21"), _utc("2048-05-15T20:25:21")),
            asvk_validity=(_utc("2023-05-15T21:09:41"), _utc("2048-05-15T21:09:41")),
            struct_version=1,  # real Turin VCEK: 020101
            vcek_product_name="Turin",  # no stepping
            hwid_length=8,  # real Turin VCEK: 8 raw bytes
            vcek_extensions=_TURIN_VCEK,
            tcb_bytes=MappingProxyType(
                {"fmc": 0, "boot_loader": 1, "tee": 2, "snp": 3, "microcode": 7}
            ),
        ),
    }
)

#: Our fixed leaf issue date; real VCEKs are valid 7 years from issue (2557 days here).
_LEAF_VALIDITY: Final = (_utc("2026-01-01T00:00:00"), _utc("2033-01-01T00:00:00"))
#: Leaf serial: AMD's is 0, which cryptography refuses (module docstring).
_LEAF_SERIAL: Final = 1
#: The VLEK's CSP_ID when none is given (AWS writes "CN=cc-us-east-2.amazonaws.com").
DEFAULT_CSP_ID: Final = "CN=cc-ghcb.example"
#: Label separating our derivations from any other use of the same inputs.
_DERIVATION_LABEL: Final = b"ghcb synthetic SEV-SNP key v1"


def _chip_id_for(product: str) -> bytes:
    """A fixed synthetic chip id (Turin: 8 bytes of hwID, 56 zero bytes)."""
    raw = hashlib.sha512(_DERIVATION_LABEL + b" chip id " + product.encode()).digest()
    spec = _PRODUCTS[product]
    return raw[: spec.hwid_length] + bytes(64 - spec.hwid_length)


#: The chip id :func:`chain` uses when none is given, per product.
DEFAULT_CHIP_IDS: Final[Mapping[str, bytes]] = MappingProxyType(
    {p: _chip_id_for(p) for p in PRODUCTS}
)


# ---------------------------------------------------------------------------------------------
# TCB
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION by component: the SPLs a VCEK/VLEK carries (facts §1.3, §2.4).

    Components are named as the report's TCB_VERSION fields; each is 8-bit.
    ``fmc`` exists on Turin only; on Milan and Genoa it must be 0. The reserved bytes are not
    represented: the firmware refuses them set, and the certificates' reserved SPLs are 0.
    """

    boot_loader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int = 0

    def __post_init__(self) -> None:
        for name in ("boot_loader", "tee", "snp", "microcode", "fmc"):
            value = getattr(self, name)
            if type(value) is not int:
                raise InputTypeError(
                    f"TCB component {name} must be an int, not {type(value).__name__}",
                    rule="tcb-type",
                    spec=SPEC_TCB,
                    field=f"tcb.{name}",
                )
            if not 0 <= value <= 0xFF:
                raise FieldValueError(
                    f"TCB component {name} = {value} is not a byte (0..255)",
                    rule="tcb-range",
                    spec=SPEC_TCB,
                    field=f"tcb.{name}",
                )

    def to_bytes(self, product: str) -> bytes:
        """The 8-byte TCB_VERSION in ``product``'s layout (reserved bytes zero).

        Raises:
            HypervisorUsageError: unknown product, or ``fmc`` set on a product without it.
        """
        layout = _product(product).tcb_bytes
        if self.fmc and "fmc" not in layout:
            raise HypervisorUsageError(
                f"{product} has no FMC component in its TCB: fmc must be 0, not {self.fmc}",
                rule="tcb-fmc",
                spec=SPEC_TCB,
                field="tcb.fmc",
            )
        out = bytearray(8)
        for name, index in layout.items():
            out[index] = getattr(self, name)
        return bytes(out)

    def to_int(self, product: str) -> int:
        """The TCB_VERSION as the report's little-endian u64 (see :meth:`to_bytes`)."""
        return int.from_bytes(self.to_bytes(product), "little")

    @classmethod
    def from_int(cls, product: str, value: int) -> Tcb:
        """The components of a report's TCB_VERSION u64 (see :meth:`from_bytes`).

        Raises:
            InputTypeError: ``value`` is not an int.
            FieldValueError: ``value`` is not a u64.
            HypervisorUsageError: as :meth:`from_bytes`.
        """
        if type(value) is not int:
            raise InputTypeError(
                f"a TCB_VERSION must be an int, not {type(value).__name__}",
                rule="tcb-type",
                spec=SPEC_TCB,
            )
        if not 0 <= value < 1 << 64:
            raise FieldValueError(
                f"a TCB_VERSION is a u64, not {value:#x}", rule="tcb-range", spec=SPEC_TCB
            )
        return cls.from_bytes(product, value.to_bytes(8, "little"))

    @classmethod
    def from_bytes(cls, product: str, raw: bytes | bytearray | memoryview) -> Tcb:
        """The components of an 8-byte TCB_VERSION in ``product``'s layout.

        Raises:
            HypervisorUsageError: unknown product, not 8 bytes, or a reserved byte set (the
                firmware rejects those; facts §1.3).
        """
        layout = _product(product).tcb_bytes
        data = byte_string(raw, what="a TCB_VERSION", spec=SPEC_TCB)
        if len(data) != 8:
            raise HypervisorUsageError(
                f"a TCB_VERSION is 8 bytes, not {len(data)}", rule="tcb-length", spec=SPEC_TCB
            )
        reserved = [i for i in range(8) if i not in layout.values() and data[i]]
        if reserved:
            raise HypervisorUsageError(
                f"TCB_VERSION byte {reserved[0]} is reserved in the {product} layout but set",
                rule="tcb-reserved",
                spec=SPEC_TCB,
                offset=reserved[0],
            )
        return cls(**{name: data[index] for name, index in layout.items()})


#: The TCB :func:`chain` uses when none is given: the real GCP Milan report's (boot loader 4,
#: tee 0, snp 0x1B, microcode 0xDE; facts §1.3), whose microcode SPL needs the DER INTEGER's
#: 0x00 pad.
DEFAULT_TCB: Final = Tcb(boot_loader=4, tee=0, snp=0x1B, microcode=0xDE)


# ---------------------------------------------------------------------------------------------
# DER for the AMD extension values
# ---------------------------------------------------------------------------------------------
def _der_tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _der_integer(value: int) -> bytes:
    """A non-negative DER INTEGER (X.690 §8.3: a 0x00 pad when the top bit is set)."""
    return _der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_ia5(text: str) -> bytes:
    """A DER IA5String (X.680 §41: 7-bit characters; tag 0x16)."""
    return _der_tlv(0x16, text.encode("ascii"))


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

    product: Product
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


@dataclass(frozen=True)
class _Roots:
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey


_LOCK: Final = threading.Lock()
_ROOTS: Final[dict[str, _Roots]] = {}
_CHAINS: Final[OrderedDict[tuple[str, bytes, Tcb, str], Chain]] = OrderedDict()
#: Chains kept per process (least recently used dropped first); roots are never dropped.
_MAX_CHAINS: Final = 256


def _product(product: object) -> _ProductSpec:
    spec = _PRODUCTS.get(product) if isinstance(product, str) else None
    if spec is None:
        raise HypervisorUsageError(
            f"product must be one of {', '.join(PRODUCTS)}, not {product!r}",
            rule="product",
            spec=SPEC_CERTS,
        )
    return spec


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(oid, value) for oid, value in _DN_PREFIX]
        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _crl(url: str) -> x509.CRLDistributionPoints:
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point])


def _key_usage(*, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _make_roots(spec: _ProductSpec) -> _Roots:
    """ARK (self-signed), ASK and ASVK (by the ARK) with AMD's extensions (facts §2.1)."""
    keys = [rsa.generate_private_key(_RSA_EXPONENT, _RSA_BITS) for _ in range(3)]
    ark_key, ask_key, asvk_key = keys
    ark_name = _name(f"ARK-{spec.name}")
    ark_ski = x509.SubjectKeyIdentifier.from_public_key(ark_key.public_key())
    vcek_crl = _crl(_VCEK_CRL.format(product=spec.name))
    # ARK: keyUsage critical {keyCertSign, cRLSign}; SKI; basicConstraints critical CA:TRUE
    # without pathLen; CRL DP — in this order.
    ark = (
        x509.CertificateBuilder()
        .subject_name(ark_name)
        .issuer_name(ark_name)
        .public_key(ark_key.public_key())
        .serial_number(spec.ark_serial)
        .not_valid_before(spec.ark_validity[0])
        .not_valid_after(spec.ark_validity[1])
        .add_extension(_key_usage(crl_sign=True), critical=True)
        .add_extension(ark_ski, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(vcek_crl, critical=False)
        .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
    )
    # ASK / ASVK: SKI; AKI (keyid only); basicConstraints critical CA:TRUE pathLen 0;
    # keyUsage critical {keyCertSign}; CRL DP (the VLEK CRL for the ASVK).
    aki = x509.AuthorityKeyIdentifier(
        key_identifier=ark_ski.digest,
        authority_cert_issuer=None,
        authority_cert_serial_number=None,
    )

    def intermediate(
        key: rsa.RSAPrivateKey,
        cn: str,
        serial: int,
        validity: tuple[datetime.datetime, datetime.datetime],
        crl: str,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ark_name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(aki, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(crl_sign=False), critical=True)
            .add_extension(_crl(crl.format(product=spec.name)), critical=False)
            .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
        )

    ask = intermediate(ask_key, f"SEV-{spec.name}", spec.ask_serial, spec.ask_validity, _VCEK_CRL)
    asvk = intermediate(
        asvk_key, f"SEV-VLEK-{spec.name}", spec.asvk_serial, spec.asvk_validity, _VLEK_CRL
    )
    return _Roots(ark, ask, asvk, ark_key, ask_key, asvk_key)


def _roots(spec: _ProductSpec) -> _Roots:
    """The product's roots, generated on first use (call with :data:`_LOCK` held)."""
    roots = _ROOTS.get(spec.name)
    if roots is None:
        roots = _ROOTS[spec.name] = _make_roots(spec)
    return roots


def _derive_leaf_key(
    kind: bytes, spec: _ProductSpec, tcb: bytes, who: bytes
) -> ec.EllipticCurvePrivateKey:
    """A P-384 key from public inputs: SHA-512 of the inputs reduced into [1, n-1]."""
    digest = hashlib.sha512(
        b"\0".join((_DERIVATION_LABEL, kind, spec.name.encode(), tcb, who))
    ).digest()
    scalar = int.from_bytes(digest, "big") % (_P384_ORDER - 1) + 1
    return ec.derive_private_key(scalar, _LEAF_CURVE)


def _leaf(
    spec: _ProductSpec,
    *,
    common_name: str,
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    key: ec.EllipticCurvePrivateKey,
    order: tuple[str, ...],
    values: Mapping[str, bytes],
) -> x509.Certificate:
    """A VCEK/VLEK: no standard extensions, the AMD ones in ``order`` (facts §2.3, §2.4)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(_LEAF_SERIAL)
        .not_valid_before(_LEAF_VALIDITY[0])
        .not_valid_after(_LEAF_VALIDITY[1])
    )
    for name in order:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(AMD_OIDS[name], values[name]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=_PSS)


def _extension_values(
    spec: _ProductSpec, tcb: Tcb, *, product_name: str, chip_id: bytes, csp_id: str
) -> dict[str, bytes]:
    """Each AMD extension's extnValue content (facts §2.4)."""
    values = {
        "structVersion": _der_integer(spec.struct_version),
        "productName": _der_ia5(product_name),
        "hwID": chip_id[: spec.hwid_length],  # raw, no DER tag
        "CSP_ID": _der_ia5(csp_id),
    }
    for name, component in _SPL_COMPONENT.items():
        values[name] = _der_integer(0 if component is None else getattr(tcb, component))
    return values


def _check_chip_id(spec: _ProductSpec, chip_id: object) -> bytes:
    data = byte_string(chip_id, what="chip_id", spec=SPEC_CHIP_ID)
    if len(data) != 64:
        raise HypervisorUsageError(
            f"chip_id is {len(data)} bytes; a CHIP_ID is 64",
            rule="chip-id-length",
            spec=SPEC_CHIP_ID,
            field="chip_id",
        )
    if any(data[spec.hwid_length :]):
        raise HypervisorUsageError(
            f"a {spec.name} CHIP_ID is its {spec.hwid_length}-byte hwID followed by zeros",
            rule="chip-id-padding",
            spec=SPEC_CHIP_ID,
            field="chip_id",
            offset=spec.hwid_length,
        )
    return data


def _check_csp_id(csp_id: object) -> str:
    if not isinstance(csp_id, str):
        raise InputTypeError(
            f"csp_id must be a str, not {type(csp_id).__name__}",
            rule="csp-id-type",
            spec=SPEC_CERTS,
            field="csp_id",
        )
    if not csp_id or not csp_id.isascii():
        raise HypervisorUsageError(
            f"csp_id must be non-empty ASCII (an IA5String), not {csp_id!r}",
            rule="csp-id",
            spec=SPEC_CERTS,
            field="csp_id",
        )
    return csp_id


def chain(
    product: str = "Milan",
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
        product: ``"Milan"``, ``"Genoa"`` or ``"Turin"`` (a str; a ``StrEnum`` of these
            values works too).
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
    spec = _product(product)
    chip = DEFAULT_CHIP_IDS[spec.name] if chip_id is None else _check_chip_id(spec, chip_id)
    tcb = DEFAULT_TCB if tcb is None else tcb
    if not isinstance(tcb, Tcb):
        raise InputTypeError(
            f"tcb must be a Tcb, not {type(tcb).__name__}", rule="tcb-type", spec=SPEC_TCB
        )
    tcb_bytes = tcb.to_bytes(spec.name)
    csp = _check_csp_id(csp_id)
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
    spec: _ProductSpec, roots: _Roots, *, chip: bytes, tcb: Tcb, tcb_bytes: bytes, csp_id: str
) -> Chain:
    vcek_key = _derive_leaf_key(b"VCEK", spec, tcb_bytes, chip)
    vlek_key = _derive_leaf_key(b"VLEK", spec, tcb_bytes, csp_id.encode())
    vcek = _leaf(
        spec,
        common_name=_VCEK_CN,
        issuer=roots.ask,
        issuer_key=roots.ask_key,
        key=vcek_key,
        order=spec.vcek_extensions,
        values=_extension_values(
            spec, tcb, product_name=spec.vcek_product_name, chip_id=chip, csp_id=csp_id
        ),
    )
    vlek = _leaf(
        spec,
        common_name=_VLEK_CN,
        issuer=roots.asvk,
        issuer_key=roots.asvk_key,
        key=vlek_key,
        order=spec.vlek_extensions,
        values=_extension_values(
            spec, tcb, product_name=spec.vlek_product_name, chip_id=chip, csp_id=csp_id
        ),
    )
    certs = {"ark": roots.ark, "ask": roots.ask, "asvk": roots.asvk, "vcek": vcek, "vlek": vlek}
    return Chain(
        product=spec.name,
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
    if algorithm not in _PSS_ALGORITHM_IDS:
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
        public.verify(cert.signature, cert.tbs_certificate_bytes, _PSS, hashes.SHA384())
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
    certs: dict[str, x509.Certificate] = {
        "ark": chain.ark,
        "ask": chain.ask,
        "asvk": chain.asvk,
        "vcek": chain.vcek,
        "vlek": chain.vlek,
    }
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
    product: str = "Milan",
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
