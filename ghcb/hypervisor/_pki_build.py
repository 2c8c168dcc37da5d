"""Building the synthetic AMD chain: AMD's parameters per product and the certificate
builders (private: the API is :mod:`ghcb.hypervisor.pki`, whose docstring gives the sources).

Facts §2.1 (real ARK/ASK/ASVK names, serials, validity, extensions), §2.2 (DN order,
RSASSA-PSS parameters), §2.3/§2.4 (VCEK/VLEK and AMD's extensions under 1.3.6.1.4.1.3704.1).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ghcb._bytes import byte_string
from ghcb.errors import InputTypeError
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.tcb import PRODUCTS, Product, Tcb, require_product

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AMD_OIDS",
    "DEFAULT_CHIP_IDS",
    "DEFAULT_CSP_ID",
    "PRODUCT_SPECS",
    "PSS",
    "PSS_ALGORITHM_IDS",
    "PSS_SALT_LENGTH",
    "SPEC_CERTS",
    "SPEC_CHIP_ID",
    "VCEK_CN",
    "VLEK_CN",
    "ProductSpec",
    "Roots",
    "check_chip_id",
    "check_csp_id",
    "derive_leaf_key",
    "extension_values",
    "issue_leaf",
    "make_roots",
    "product_spec",
]

SPEC_CERTS: Final = (
    "AMD SEV-SNP certificates as AMD issues them (snp-firmware-facts §2.1-2.4: real ARK/ASK/"
    "ASVK/VCEK; RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48)"
)
SPEC_CHIP_ID: Final = "ATTESTATION_REPORT CHIP_ID, 64 bytes at 0x1A0 (snp-firmware-facts §1.1)"

# ---------------------------------------------------------------------------------------------
# Algorithms and keys
# ---------------------------------------------------------------------------------------------
#: RSASSA-PSS saltLength [2] = 48 on every AMD signature (facts §2.2; salts 32/64 fail).
PSS_SALT_LENGTH: Final = 48
#: RSASSA-PSS with hashAlgorithm sha384 and maskGenAlgorithm mgf1(sha384) (facts §2.2).
PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT_LENGTH)
#: The signature's AlgorithmIdentifier in DER, in both real forms (facts §2.2): without
#: trailerField (what ``cryptography`` writes; newer KDS VCEKs) and with ``[3] INTEGER 1``
#: (AMD's ARK/ASK/ASVK, older VCEKs).
PSS_ALGORITHM_IDS: Final = (
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
VCEK_CN: Final = "SEV-VCEK"  # facts §2.3
VLEK_CN: Final = "SEV-VLEK"  # facts §2.3
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
class ProductSpec:
    """One product's AMD chain parameters (facts §2.1, §2.4); its TCB layout is
    :data:`ghcb.tcb.TCB_LAYOUTS`."""

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
PRODUCT_SPECS: Final[Mapping[Product, ProductSpec]] = MappingProxyType(
    {
        Product.MILAN: ProductSpec(
            name=Product.MILAN,
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
        ),
        Product.GENOA: ProductSpec(
            name=Product.GENOA,
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
        ),
        Product.TURIN: ProductSpec(
            name=Product.TURIN,
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


def _chip_id_for(product: Product) -> bytes:
    """A fixed synthetic chip id (Turin: 8 bytes of hwID, 56 zero bytes)."""
    raw = hashlib.sha512(_DERIVATION_LABEL + b" chip id " + product.encode()).digest()
    spec = PRODUCT_SPECS[product]
    return raw[: spec.hwid_length] + bytes(64 - spec.hwid_length)


#: The chip id :func:`chain` uses when none is given, per product.
DEFAULT_CHIP_IDS: Final[Mapping[Product, bytes]] = MappingProxyType(
    {p: _chip_id_for(p) for p in PRODUCTS}
)


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


@dataclass(frozen=True)
class Roots:
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey


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


def make_roots(spec: ProductSpec) -> Roots:
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
        .sign(ark_key, hashes.SHA384(), rsa_padding=PSS)
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
            .sign(ark_key, hashes.SHA384(), rsa_padding=PSS)
        )

    ask = intermediate(ask_key, f"SEV-{spec.name}", spec.ask_serial, spec.ask_validity, _VCEK_CRL)
    asvk = intermediate(
        asvk_key, f"SEV-VLEK-{spec.name}", spec.asvk_serial, spec.asvk_validity, _VLEK_CRL
    )
    return Roots(ark, ask, asvk, ark_key, ask_key, asvk_key)


def derive_leaf_key(
    kind: bytes, spec: ProductSpec, tcb: bytes, who: bytes
) -> ec.EllipticCurvePrivateKey:
    """A P-384 key from public inputs: SHA-512 of the inputs reduced into [1, n-1]."""
    digest = hashlib.sha512(
        b"\0".join((_DERIVATION_LABEL, kind, spec.name.encode(), tcb, who))
    ).digest()
    scalar = int.from_bytes(digest, "big") % (_P384_ORDER - 1) + 1
    return ec.derive_private_key(scalar, _LEAF_CURVE)


def issue_leaf(
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
    return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)


def extension_values(
    spec: ProductSpec, tcb: Tcb, *, product_name: str, chip_id: bytes, csp_id: str
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


def check_chip_id(spec: ProductSpec, chip_id: object) -> bytes:
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


def check_csp_id(csp_id: object) -> str:
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


def product_spec(product: object) -> ProductSpec:
    """The chain parameters of ``product`` (a :class:`~ghcb.tcb.Product` or its value).

    Raises:
        HypervisorUsageError: not a product (``rule="product"``).
    """
    return PRODUCT_SPECS[require_product(product, spec=SPEC_CERTS)]
