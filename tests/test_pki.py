"""The synthetic AMD chain against ``spec/tables/pki.toml``: names, serials, validity, keys,
RSASSA-PSS parameters, extensions and their exact bytes, the package's own certificate-table
naming, caching, bad input, and an independent verifier (omne-attest).

Every OID, name and parameter below comes from the table, never from the module under test.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import struct
import types
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID, NameOID

from ghcb.certs import (
    CertEntry,
    CertGuid,
    build_cert_table,
    cert_names,
    check_cert_table,
    parse_cert_table,
)
from ghcb.errors import FieldValueError, GhcbError, InputTypeError
from ghcb.hypervisor import _pki_build
from ghcb.hypervisor import pki as _pki
from ghcb.hypervisor.errors import HostError, HypervisorUsageError
from ghcb.hypervisor.pki import (
    AMD_OIDS,
    DEFAULT_CHIP_IDS,
    DEFAULT_TCB,
    SPEC_CERTS,
    Chain,
    ChainError,
    Product,
    Tcb,
    chain,
    verify_chain,
    verify_signed_by,
    write_chain,
)
from ghcb.tcb import SPEC_TCB
from tests.helpers import load_table

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable


TABLE = load_table("pki")
SIG = TABLE["signature"]
PRODUCT_ROWS: dict[str, dict[str, Any]] = {row["name"]: row for row in TABLE["product"]}
PRODUCT_NAMES = list(PRODUCT_ROWS)
EXTENSIONS: dict[str, dict[str, Any]] = {row["name"]: row for row in TABLE["extension"]}
#: (certificate, issuer) per link of the chain.
LINKS = [("ark", "ark"), ("ask", "ark"), ("vcek", "ask"), ("asvk", "ark"), ("vlek", "asvk")]
ROOTS = ("ark", "ask", "asvk")
LEAVES = ("vcek", "vlek")

_DN_OIDS = {
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "CN": NameOID.COMMON_NAME,
}
#: X.690 / X.680 universal tags of the DN string types the table names.
_STRING_TAGS = {"PrintableString": 0x13, "UTF8String": 0x0C}
_STANDARD_EXTENSIONS = {
    "keyUsage": ExtensionOID.KEY_USAGE,
    "subjectKeyIdentifier": ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    "authorityKeyIdentifier": ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    "basicConstraints": ExtensionOID.BASIC_CONSTRAINTS,
    "cRLDistributionPoints": ExtensionOID.CRL_DISTRIBUTION_POINTS,
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha384": hashes.SHA384}


def _pss(salt: int) -> padding.PSS:
    """RSASSA-PSS with the table's MGF hash and ``salt``."""
    return padding.PSS(mgf=padding.MGF1(_HASHES[SIG["mgf_hash"]]()), salt_length=salt)


def _children(der: bytes) -> list[tuple[int, bytes, bytes]]:
    """``(tag, content, whole TLV)`` of each element inside the constructed DER value
    ``der`` (definite lengths only; test inputs are our own DER)."""
    out = []
    first = der[1]
    pos = 2 + (first & 0x7F if first & 0x80 else 0)
    while pos < len(der):
        tag, first = der[pos], der[pos + 1]
        head = 2
        length = first
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
            head += count
        out.append((tag, der[pos + head : pos + head + length], der[pos : pos + head + length]))
        pos += head + length
    return out


def _rdns(name: x509.Name) -> list[tuple[str, int, str]]:
    """``(OID, string tag, value)`` per RDN of ``name``, in DER order; one attribute each."""
    out = []
    for _, _, rdn in _children(name.public_bytes()):
        attrs = _children(rdn)
        assert len(attrs) == 1, "one attribute per RDN"
        (_, _, attr) = attrs[0]
        (oid_tlv, value_tlv) = _children(attr)
        oid = x509.ObjectIdentifier(_decode_oid(oid_tlv[1])).dotted_string
        out.append((oid, value_tlv[0], value_tlv[1].decode()))
    return out


def _decode_oid(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets as dotted text (X.690 §8.19)."""
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _expected_name(common_name: str) -> list[tuple[str, int, str]]:
    rows = [*TABLE["name"]["attributes"], ["CN", common_name]]
    name = TABLE["name"]
    return [
        (
            _DN_OIDS[key].dotted_string,
            _STRING_TAGS[name["country_string_type"] if key == "C" else name["other_string_type"]],
            value,
        )
        for key, value in rows
    ]


def _common_names(product: str) -> dict[str, str]:
    row = PRODUCT_ROWS[product]
    return {
        "ark": row["ark_cn"],
        "ask": row["ask_cn"],
        "asvk": row["asvk_cn"],
        "vcek": TABLE["name"]["vcek_cn"],
        "vlek": TABLE["name"]["vlek_cn"],
    }


def _ext_value(cert: x509.Certificate, name: str) -> bytes:
    """The extnValue content of the AMD extension ``name`` (OID from the table)."""
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(EXTENSIONS[name]["oid"]))
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    return ext.value.value


def _der_integer(value: int) -> bytes:
    """Independent DER INTEGER encoder for the expectations (X.690 §8.3)."""
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes((0x02, len(body))) + body


def _der_ia5(text: str) -> bytes:
    body = text.encode("ascii")
    assert len(body) < 0x80
    return bytes((0x16, len(body))) + body


@pytest.fixture(params=PRODUCT_NAMES)
def product(request: pytest.FixtureRequest) -> Product:
    """Each product of the table."""
    name: Product = request.param
    return name


def _built(product: Product) -> Chain:
    """The product's default chain built anew through the builders, past :func:`chain`'s
    per-process cache (so a test checks what the builders make now, not what the cache holds):
    the roots by ``make_roots`` with the cached chain's RSA keys in place of three new ones
    (an RSA-4096 key takes seconds; the generator is asked for e = 65537, 4096 bits, three
    times), the leaves as :func:`chain` issues them."""
    cached = chain(product)
    keys = iter((cached.ark_key, cached.ask_key, cached.asvk_key))
    keys_table = TABLE["keys"]

    def generate(public_exponent: int, key_size: int) -> rsa.RSAPrivateKey:
        assert (public_exponent, key_size) == (
            keys_table["root_public_exponent"],
            keys_table["root_bits"],
        )
        return next(keys)

    spec = _pki_build.product_spec(product)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pki_build, "rsa", types.SimpleNamespace(generate_private_key=generate))
        roots = _pki_build.make_roots(spec)
    assert next(keys, None) is None  # exactly three keys
    tcb = cached.tcb
    return _pki._make_chain(
        spec,
        roots,
        chip=cached.chip_id,
        tcb=tcb,
        tcb_bytes=tcb.to_bytes(product),
        csp_id=cached.csp_id,
    )


@pytest.fixture(params=["cached", "built"])
def made(product: Product, request: pytest.FixtureRequest) -> Chain:
    """The product's default chain: as :func:`chain` returns it (generated once per process)
    and as the builders make it anew (:func:`_built`), for each test (~70 ms): a chain built
    once and shared would run the builders inside the first test only, and mutmut, which runs
    per mutant only the tests that reached the mutated function, would check the builders
    against that one test."""
    if request.param == "cached":
        return chain(product)
    return _built(product)


def _certs(c: Chain) -> dict[str, x509.Certificate]:
    return {"ark": c.ark, "ask": c.ask, "asvk": c.asvk, "vcek": c.vcek, "vlek": c.vlek}


# ---------------------------------------------------------------------------------------------
# Names, serials, validity, keys
# ---------------------------------------------------------------------------------------------
class TestShape:
    def test_subjects_and_issuers(self, made: Chain, product: str) -> None:
        """Each DN is the table's attributes in order, one per RDN, CN last; C PrintableString,
        the rest UTF8String; every issuer is its issuer's subject."""
        assert made.product == product
        cns = _common_names(product)
        certs = _certs(made)
        for name, issuer in LINKS:
            assert _rdns(certs[name].subject) == _expected_name(cns[name]), name
            assert _rdns(certs[name].issuer) == _expected_name(cns[issuer]), name

    def test_serials_validity_version(self, made: Chain, product: str) -> None:
        row = PRODUCT_ROWS[product]
        leaf = TABLE["leaf"]
        certs = _certs(made)
        for name in ROOTS:
            cert = certs[name]
            assert cert.serial_number == row[f"{name}_serial"]
            assert cert.not_valid_before_utc == row[f"{name}_not_before"]
            assert cert.not_valid_after_utc == row[f"{name}_not_after"]
        for name in LEAVES:
            cert = certs[name]
            assert cert.serial_number == leaf["serial"] != leaf["real_serial"]
            assert cert.not_valid_before_utc == leaf["not_before"]
            assert cert.not_valid_after_utc == leaf["not_after"]
            span = cert.not_valid_after_utc - cert.not_valid_before_utc
            assert span.days == leaf["validity_days"]
        for cert in certs.values():
            assert cert.version.value + 1 == TABLE["name"]["x509_version"]

    def test_key_types(self, made: Chain) -> None:
        keys = TABLE["keys"]
        assert (keys["root_type"], keys["leaf_type"]) == ("rsa", "ec")
        certs = _certs(made)
        for name in ROOTS:
            public = certs[name].public_key()
            assert isinstance(public, rsa.RSAPublicKey)
            assert public.key_size == keys["root_bits"]
            assert public.public_numbers().e == keys["root_public_exponent"]
        for name in LEAVES:
            public = certs[name].public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            assert public.curve.name == keys["leaf_curve"]
        # The private keys the Chain carries are those of its certificates.
        pairs: list[tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, x509.Certificate]] = [
            (made.ark_key, made.ark),
            (made.ask_key, made.ask),
            (made.asvk_key, made.asvk),
            (made.vcek_key, made.vcek),
            (made.vlek_key, made.vlek),
        ]
        for key, cert in pairs:
            assert key.public_key() == cert.public_key()

    def test_der_and_pem(self, made: Chain) -> None:
        for name, cert in _certs(made).items():
            assert made.der[name] == cert.public_bytes(serialization.Encoding.DER)
            assert x509.load_pem_x509_certificate(made.pem[name]) == cert


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------
class TestSignatures:
    def test_algorithm_identifier(self, made: Chain) -> None:
        """The outer signatureAlgorithm and the tbsCertificate's copy (RFC 5280 §4.1.1.2) are
        the table's DER AlgorithmIdentifier: PSS, SHA-384, MGF1-SHA-384, salt 48."""
        expected = bytes.fromhex(SIG["algorithm_identifier"])
        for name, cert in _certs(made).items():
            tbs, algorithm, signature = _children(made.der[name])
            assert algorithm[2] == expected, name
            assert _children(tbs[2])[2][2] == expected, name  # after version, serial
            assert cert.signature_algorithm_oid.dotted_string == SIG["algorithm_oid"]
            hash_algorithm = cert.signature_hash_algorithm
            assert hash_algorithm is not None
            assert hash_algorithm.name == SIG["hash"]
            assert len(signature[1]) == 1 + SIG["signature_bytes"]  # unused-bits octet

    def test_algorithm_identifier_contents(self) -> None:
        """The table's two DER forms spell the table's OIDs and salt."""
        for key in ("algorithm_identifier", "algorithm_identifier_with_trailer"):
            der = bytes.fromhex(SIG[key])
            oid, params = _children(der)
            assert _decode_oid(oid[1]) == SIG["algorithm_oid"]
            fields = {tag: content for tag, content, _ in _children(params[2])}
            # [0] hashAlgorithm, [1] maskGenAlgorithm: each holds one AlgorithmIdentifier.
            hash_oid = _children(fields[0xA0])[0][1]
            assert _decode_oid(hash_oid) == SIG["hash_oid"]
            mgf_oid, mgf_hash = _children(fields[0xA1])
            assert _decode_oid(mgf_oid[1]) == SIG["mgf_oid"]
            assert _decode_oid(_children(mgf_hash[2])[0][1]) == SIG["hash_oid"]
            assert fields[0xA2] == _der_integer(SIG["salt_length"])
            assert (0xA3 in fields) == key.endswith("with_trailer")

    @pytest.mark.parametrize(("name", "issuer"), LINKS)
    def test_link_verifies_with_salt_48_only(self, made: Chain, name: str, issuer: str) -> None:
        certs = _certs(made)
        cert, public = certs[name], certs[issuer].public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        digest = _HASHES[SIG["hash"]]
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, _pss(SIG["salt_length"]), digest()
        )
        with pytest.raises(InvalidSignature):
            public.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                _pss(SIG["wrong_salt_length"]),
                digest(),
            )
        # And the certificate's own declared parameters verify too (OpenSSL's path).
        cert.verify_directly_issued_by(certs[issuer])


# ---------------------------------------------------------------------------------------------
# Extensions
# ---------------------------------------------------------------------------------------------
class TestRootExtensions:
    @pytest.mark.parametrize("name", ROOTS)
    def test_extensions(self, made: Chain, product: str, name: str) -> None:
        row = TABLE[name]
        cert = _certs(made)[name]
        exts = list(cert.extensions)
        assert [e.oid for e in exts] == [_STANDARD_EXTENSIONS[n] for n in row["extensions"]]
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical is row["key_usage_critical"]
        flags = [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ]
        assert [f for f in flags if getattr(usage.value, f)] == row["key_usage"]
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical is row["basic_constraints_critical"]
        assert basic.value.ca is row["ca"]
        assert basic.value.path_length == (None if row["path_length"] < 0 else row["path_length"])
        crl = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        assert not crl.critical
        (point,) = crl.value
        assert point.full_name == [
            x509.UniformResourceIdentifier(row["crl"].replace("<Product>", product))
        ]
        # RFC 5280 4.2.1.1-4.2.1.2: both key identifiers MUST be non-critical.
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        assert not ski.critical
        assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        if "authorityKeyIdentifier" in row["extensions"]:
            aki_extension = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
            assert not aki_extension.critical
            aki = aki_extension.value
            ark_ski = made.ark.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            assert aki.key_identifier == ark_ski.value.digest
            assert aki.authority_cert_issuer is None
            assert aki.authority_cert_serial_number is None


class TestLeafExtensions:
    def test_amd_oids_match_the_table(self) -> None:
        assert {n: o.dotted_string for n, o in AMD_OIDS.items()} == {
            n: row["oid"] for n, row in EXTENSIONS.items()
        }

    @pytest.mark.parametrize("leaf", LEAVES)
    def test_order_and_nothing_else(self, made: Chain, product: str, leaf: str) -> None:
        """Exactly the table's AMD extensions, in its order, all non-critical; no standard
        extension."""
        cert = _certs(made)[leaf]
        order = PRODUCT_ROWS[product][f"{leaf}_extensions"]
        assert [e.oid.dotted_string for e in cert.extensions] == [
            EXTENSIONS[n]["oid"] for n in order
        ]
        assert not any(e.critical for e in cert.extensions)
        assert TABLE["leaf"]["standard_extensions"] == []

    @pytest.mark.parametrize("leaf", LEAVES)
    def test_values(self, made: Chain, product: str, leaf: str) -> None:
        """SPLs are DER INTEGERs of the TCB's components (reserved ones 0), structVersion a DER
        INTEGER, productName / CSP_ID DER IA5Strings, hwID the raw chip-id bytes."""
        row = PRODUCT_ROWS[product]
        cert = _certs(made)[leaf]
        for name in row[f"{leaf}_extensions"]:
            spec = EXTENSIONS[name]
            value = _ext_value(cert, name)
            if "component" in spec:
                component = spec["component"]
                expected = 0 if component == "reserved" else getattr(made.tcb, component)
                assert value == _der_integer(expected), name
            elif name == "structVersion":
                assert value == _der_integer(row["struct_version"])
            elif name == "productName":
                assert value == _der_ia5(row[f"{leaf}_product_name"])
            elif name == "hwID":
                assert spec["encoding"] == "raw"
                assert value == made.chip_id[: row["hwid_length"]]
                assert len(value) == row["hwid_length"]
            else:
                assert name == "CSP_ID"
                assert value == _der_ia5(made.csp_id)

    def test_hwid_is_the_whole_chip_id_on_milan(self) -> None:
        chip_id = bytes(range(0x40, 0x80))
        c = chain("Milan", chip_id=chip_id)
        assert _ext_value(c.vcek, "hwID") == chip_id  # 64 raw bytes, no 04 40 wrapper

    def test_turin_hwid_is_8_bytes(self) -> None:
        chip_id = bytes.fromhex("1e550a8ee5cf9f4d") + bytes(56)  # the real Turin VCEK's hwID
        c = chain("Turin", chip_id=chip_id)
        assert _ext_value(c.vcek, "hwID") == chip_id[:8]

    @pytest.mark.parametrize(
        "example",
        TABLE["example"],
        ids=[f"{e['extension']}-{e['product']}-{e['hex']}" for e in TABLE["example"]],
    )
    def test_real_encodings(self, example: dict[str, Any]) -> None:
        """The real extnValue bytes of facts §2.4, reproduced."""
        spec = EXTENSIONS[example["extension"]]
        tcb = Tcb()
        if "component" in spec:
            tcb = dataclasses.replace(tcb, **{spec["component"]: example["value"]})
        c = chain(example["product"], tcb=tcb)
        assert _ext_value(c.vcek, example["extension"]).hex() == example["hex"]

    def test_ucode_needs_the_pad(self) -> None:
        """The default TCB (the GCP report's) has ucode 0xDE: ``02 02 00 de``."""
        assert DEFAULT_TCB.microcode >= 0x80
        assert _ext_value(chain("Milan").vcek, "ucodeSPL") == bytes.fromhex("020200de")


#: P-384's group order n as the module has it (checked on the curve by :func:`_p384_order`).
_N: int = _pki_build._P384_ORDER


def _p384_order() -> int:
    """The module's P-384 group order n, checked on the curve: (n - 1)·G = -G."""
    n = _N
    g = ec.derive_private_key(1, ec.SECP384R1()).public_key().public_numbers()
    minus_g = ec.derive_private_key(n - 1, ec.SECP384R1()).public_key().public_numbers()
    assert (minus_g.x, minus_g.y + g.y) == (g.x, 2**384 - 2**128 - 2**96 + 2**32 - 1)  # p
    return n


class TestBuilders:
    """The builders called directly, past :func:`chain`'s cache: every SPL value's DER
    INTEGER, IA5Strings long enough for DER's long length form, the derived chip ids and leaf
    keys."""

    @pytest.mark.parametrize("product", PRODUCT_NAMES)
    def test_every_spl_value(self, product: Product) -> None:
        """An SPL is a u8 (facts §1.3): each of 0..255 is its DER INTEGER in every SPL
        extension of the product; reserved SPLs stay 0."""
        spec = _pki_build.product_spec(product)
        row = PRODUCT_ROWS[product]
        components = {
            n: EXTENSIONS[n]["component"]
            for n in row["vcek_extensions"]
            if "component" in EXTENSIONS[n]
        }
        for value in range(256):
            tcb = Tcb(**{c: value for c in components.values() if c != "reserved"})
            values = _pki_build.extension_values(
                spec, tcb, product_name="P", chip_id=bytes(64), csp_id="C"
            )
            for name, component in components.items():
                expected = _der_integer(0 if component == "reserved" else value)
                assert values[name] == expected, (name, value)

    @pytest.mark.parametrize(
        ("length", "header"),
        [(1, "1601"), (0x7F, "167f"), (0x80, "168180"), (0xFF, "1681ff"), (0x100, "16820100")],
    )
    def test_ia5_lengths(self, length: int, header: str) -> None:
        """X.690 §8.1.3: short length form below 128 bytes, else 0x80 | the count of length
        octets, then the length big-endian in the fewest octets."""
        text = "".join(chr(0x41 + i % 26) for i in range(length))
        spec = _pki_build.product_spec("Milan")
        values = _pki_build.extension_values(
            spec, DEFAULT_TCB, product_name=text, chip_id=bytes(64), csp_id=text
        )
        assert values["productName"] == values["CSP_ID"] == bytes.fromhex(header) + text.encode()

    def test_long_csp_id_in_a_vlek(self) -> None:
        """A CSP_ID of 200 characters (DER long form) reaches the VLEK verbatim."""
        csp = "CN=" + "x" * 197
        c = chain("Milan", csp_id=csp)
        assert _ext_value(c.vlek, "CSP_ID") == bytes.fromhex("1681c8") + csp.encode()
        verify_chain(c)

    def test_default_chip_ids(self) -> None:
        """The default CHIP_ID: SHA-512 of the derivation label, " chip id " and the product
        line; on Turin its 8-byte hwID and 56 zero bytes (facts §1.1)."""
        for product in PRODUCT_NAMES:
            raw = hashlib.sha512(
                _pki_build._DERIVATION_LABEL + b" chip id " + product.encode()
            ).digest()
            hwid = PRODUCT_ROWS[product]["hwid_length"]
            expected = raw[:hwid] + bytes(64 - hwid)
            assert _pki_build._chip_id_for(Product(product)) == expected
            assert DEFAULT_CHIP_IDS[Product(product)] == expected
            assert chain(product).chip_id == expected

    def test_leaf_key_derivation(self, made: Chain, product: str) -> None:
        """Each leaf's private scalar is SHA-512 over label, kind, product, TCB bytes and
        chip id (VCEK) or CSP_ID (VLEK), NUL-separated, reduced into [1, n-1] (P-384's n)."""
        n = _p384_order()
        tcb_bytes = made.tcb.to_bytes(product)
        for kind, who, key in (
            (b"VCEK", made.chip_id, made.vcek_key),
            (b"VLEK", made.csp_id.encode(), made.vlek_key),
        ):
            digest = hashlib.sha512(
                b"\0".join((_pki_build._DERIVATION_LABEL, kind, product.encode(), tcb_bytes, who))
            ).digest()
            expected = int.from_bytes(digest, "big") % (n - 1) + 1
            assert key.private_numbers().private_value == expected, kind
            assert isinstance(key.curve, ec.SECP384R1)

    @pytest.mark.parametrize(
        ("digest_value", "scalar"),
        [(_N - 1, 1), (_N - 2, _N - 1), (_N, 2), (0, 1)],
        ids=["n-1", "n-2", "n", "0"],
    )
    def test_scalar_reduction_bounds(
        self, monkeypatch: pytest.MonkeyPatch, digest_value: int, scalar: int
    ) -> None:
        """The digest reduced mod n - 1, plus 1: a scalar in [1, n - 1], never 0 nor n."""
        assert _p384_order() == _N

        class Fixed:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def digest(self) -> bytes:
                return digest_value.to_bytes(64, "big")

        monkeypatch.setattr(_pki_build, "hashlib", types.SimpleNamespace(sha512=Fixed))
        spec = _pki_build.product_spec("Milan")
        key = _pki_build.derive_leaf_key(b"VCEK", spec, bytes(8), bytes(64))
        assert key.private_numbers().private_value == scalar


class TestRealMilanShape:
    """Our Milan ARK/ASK/VCEK against AMD's real ones (shipped by omne-attest): the same name
    bytes, serials and validity (roots), extension OIDs, order and criticality."""

    def test_same_shape(self, omne: Any) -> None:
        vectors = omne.vectors
        ours = chain("Milan")
        # The real VCEK's serial is 0: cryptography warns (and will refuse it one day).
        with pytest.warns(CryptographyDeprecationWarning, match="serial number"):
            real_vcek = x509.load_der_x509_certificate(vectors.vcek())
        real = {
            "ark": x509.load_der_x509_certificate(vectors.ark()),
            "ask": x509.load_der_x509_certificate(vectors.ask()),
            "vcek": real_vcek,
        }
        for name, theirs in real.items():
            mine = _certs(ours)[name]
            assert mine.subject.public_bytes() == theirs.subject.public_bytes()
            assert mine.issuer.public_bytes() == theirs.issuer.public_bytes()
            assert [(e.oid, e.critical) for e in mine.extensions] == [
                (e.oid, e.critical) for e in theirs.extensions
            ]
        for name in ("ark", "ask"):
            mine, theirs = _certs(ours)[name], real[name]
            assert mine.serial_number == theirs.serial_number
            assert mine.not_valid_before_utc == theirs.not_valid_before_utc
            assert mine.not_valid_after_utc == theirs.not_valid_after_utc
            for kind in (x509.KeyUsage, x509.BasicConstraints, x509.CRLDistributionPoints):
                assert (
                    mine.extensions.get_extension_for_class(kind).value
                    == theirs.extensions.get_extension_for_class(kind).value
                )


# ---------------------------------------------------------------------------------------------
# TCB layout
# ---------------------------------------------------------------------------------------------
class TestTcb:
    def test_layout(self, product: Product) -> None:
        layout = PRODUCT_ROWS[product]["tcb_bytes"]
        tcb = Tcb(
            boot_loader=0x11, tee=0x22, snp=0x33, microcode=0x44, fmc=0x55 if "fmc" in layout else 0
        )
        raw = tcb.to_bytes(product)
        expected = bytearray(8)
        for component, index in layout.items():
            expected[index] = getattr(tcb, component)
        assert raw == bytes(expected)
        assert Tcb.from_bytes(product, raw) == tcb

    def test_real_milan_values(self) -> None:
        """facts §1.3: ``0400000000001bde`` = bl 4, snp 0x1B, ucode 0xDE."""
        assert DEFAULT_TCB.to_bytes("Milan") == bytes.fromhex("0400000000001bde")

    def test_report_u64(self) -> None:
        """The report carries TCB_VERSION as a little-endian u64."""
        assert DEFAULT_TCB.to_int("Milan") == 0xDE1B000000000004
        assert Tcb.from_int("Milan", 0xDE1B000000000004) == DEFAULT_TCB

    def test_reserved_byte_refused(self) -> None:
        with pytest.raises(HypervisorUsageError) as err:
            Tcb.from_bytes("Milan", bytes.fromhex("0000010000000000"))
        assert (err.value.rule, err.value.offset) == ("tcb-reserved", 2)

    def test_fmc_only_on_turin(self) -> None:
        with pytest.raises(HypervisorUsageError) as err:
            chain("Milan", tcb=Tcb(fmc=1))
        assert err.value.rule == "tcb-fmc"
        assert _ext_value(chain("Turin", tcb=Tcb(fmc=1)).vcek, "fmcSPL") == _der_integer(1)


# ---------------------------------------------------------------------------------------------
# The package's own certificate table names each certificate
# ---------------------------------------------------------------------------------------------
class TestCertTableNames:
    def test_every_certificate_named(self, made: Chain) -> None:
        """ASVK vs ASK by subject: the table's VLEK/VCEK entries would say otherwise."""
        der = made.der
        # An ASVK beside a VCEK: the table heuristic would call it ASK.
        first = build_cert_table(
            [
                CertEntry(CertGuid.ARK, der["ark"]),
                CertEntry(CertGuid.ASK, der["asvk"]),
                CertEntry(CertGuid.VCEK, der["vcek"]),
                CertEntry(CertGuid.VLEK, der["vlek"]),
            ]
        )
        # An ASK beside a VLEK and no VCEK: the table heuristic would call it ASVK.
        second = build_cert_table(
            [
                CertEntry(CertGuid.ARK, der["ark"]),
                CertEntry(CertGuid.ASK, der["ask"]),
                CertEntry(CertGuid.VLEK, der["vlek"]),
            ]
        )
        assert check_cert_table(first) == check_cert_table(second) == []
        assert cert_names(parse_cert_table(first)) == ["ARK", "ASVK", "VCEK", "VLEK"]
        assert cert_names(parse_cert_table(second)) == ["ARK", "ASK", "VLEK"]

    @pytest.mark.parametrize(
        ("signer", "names"), [("vcek", ["ARK", "ASK", "VCEK"]), ("vlek", ["ARK", "ASVK", "VLEK"])]
    )
    def test_chain_table(self, made: Chain, signer: Any, names: list[str]) -> None:
        table = made.cert_table(signer)
        assert check_cert_table(table) == []
        assert cert_names(parse_cert_table(table)) == names
        assert len(made.cert_table(signer, pad_to_page=True)) % 4096 == 0


# ---------------------------------------------------------------------------------------------
# Caching and TCB re-issue
# ---------------------------------------------------------------------------------------------
class TestCache:
    def test_repr(self) -> None:
        c = chain("Turin", chip_id=bytes(range(1, 9)) + bytes(56), csp_id="CN=r")
        assert repr(c) == (
            f"Chain(product='Turin', tcb={c.tcb!r}, chip_id=0102030405060708..., csp_id='CN=r')"
        )

    def test_roots_made_once_per_product(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The roots are looked up per product and made (by ``make_roots`` for that product's
        spec) only when missing, then kept."""
        ark = chain("Genoa").ark
        genoa = _pki_build.product_spec("Genoa")
        with _pki._LOCK:
            assert _pki._roots(genoa).ark is ark
        roots = _pki._ROOTS[Product.GENOA]
        asked: list[object] = []

        def make_roots(spec: object) -> _pki_build.Roots:
            asked.append(spec)
            return roots

        monkeypatch.setattr(_pki, "_ROOTS", {})
        monkeypatch.setattr(_pki, "make_roots", make_roots)
        with _pki._LOCK:
            assert _pki._roots(genoa) is roots
            assert _pki._roots(genoa) is roots
        assert asked == [genoa]
        assert {Product.GENOA: roots} == _pki._ROOTS

    def test_cache_miss_builds_and_keeps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past an emptied chain cache, :func:`chain` issues the chain anew from the kept roots
        (the same leaf keys and extensions), keeps it, and drops the least recently used
        chain beyond the limit."""
        old = chain("Milan")
        monkeypatch.setattr(_pki, "_CHAINS", collections.OrderedDict())
        monkeypatch.setattr(_pki, "_MAX_CHAINS", 2)
        new = chain("Milan")
        assert new is not old
        assert (new.ark, new.ask, new.asvk) == (old.ark, old.ask, old.asvk)
        assert (new.chip_id, new.tcb, new.csp_id) == (old.chip_id, old.tcb, old.csp_id)
        for leaf in LEAVES:
            mine, theirs = _certs(new)[leaf], _certs(old)[leaf]
            assert mine.public_key() == theirs.public_key()
            assert list(mine.extensions) == list(theirs.extensions)
            assert mine.issuer == theirs.issuer
        verify_chain(new)
        assert chain("Milan") is new
        other = chain("Milan", tcb=Tcb(snp=1))
        assert chain("Milan") is new  # a hit makes it the most recent
        chain("Milan", tcb=Tcb(snp=2))  # drops Tcb(snp=1), the least recently used
        assert next(iter(_pki._CHAINS.values())) is new
        assert other not in _pki._CHAINS.values()
        assert len(_pki._CHAINS) == 2

    def test_at_tcb_keeps_product_chip_and_csp(self) -> None:
        base = chain("Turin", chip_id=bytes(range(1, 9)) + bytes(56), csp_id="CN=at.example")
        tcb = Tcb(fmc=1, boot_loader=2, tee=3, snp=4, microcode=5)
        other = base.at_tcb(tcb)
        assert (other.product, other.chip_id, other.csp_id, other.tcb) == (
            "Turin",
            base.chip_id,
            "CN=at.example",
            tcb,
        )
        assert other is chain("Turin", chip_id=base.chip_id, tcb=tcb, csp_id="CN=at.example")

    def test_same_object(self) -> None:
        class Line(enum.StrEnum):
            MILAN = "Milan"

        assert chain() is chain("Milan") is chain("Milan", tcb=DEFAULT_TCB) is chain(Line.MILAN)
        assert type(chain(Line.MILAN).product) is str
        c = chain("Milan")
        assert chain("Milan", chip_id=bytearray(c.chip_id)) is c

    def test_other_tcb_new_leaf_keys_same_roots(self) -> None:
        base = chain("Milan")
        other = base.at_tcb(Tcb(boot_loader=5, snp=0x1C, microcode=0xDF))
        assert other is base.at_tcb(Tcb(boot_loader=5, snp=0x1C, microcode=0xDF))
        assert base.at_tcb(base.tcb) is base
        assert (other.ark, other.ask, other.asvk) == (base.ark, base.ask, base.asvk)
        assert other.ark is base.ark
        assert other.vcek.public_key() != base.vcek.public_key()
        assert other.vlek.public_key() != base.vlek.public_key()
        assert _ext_value(other.vcek, "ucodeSPL") == _der_integer(0xDF)
        verify_chain(other)

    def test_leaf_keys_derived_from_inputs(self) -> None:
        """The same inputs give the same leaf key (even for a chain built anew); the VCEK key
        depends on the chip, the VLEK key on the CSP, both on the TCB."""
        base = chain("Milan")
        other_chip = chain("Milan", chip_id=bytes(64))
        assert other_chip.vcek.public_key() != base.vcek.public_key()
        assert other_chip.vlek.public_key() == base.vlek.public_key()
        other_csp = chain("Milan", csp_id="CN=other.example")
        assert other_csp.vcek.public_key() == base.vcek.public_key()
        assert other_csp.vlek.public_key() != base.vlek.public_key()
        assert other_csp.ark is base.ark


# ---------------------------------------------------------------------------------------------
# verify_chain
# ---------------------------------------------------------------------------------------------
def _resign(
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey,
    *,
    salt: int = 48,
    issuer: x509.Name | None = None,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None,
) -> x509.Certificate:
    """``cert`` issued again by ``key`` (optionally with another salt, issuer or key)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer if issuer is None else issuer)
        .public_key(cert.public_key() if public_key is None else public_key)
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(key, hashes.SHA384(), rsa_padding=_pss(salt))


class TestVerifyChain:
    def test_every_product_verifies(self, made: Chain) -> None:
        verify_chain(made)

    def test_salt_32_refused(self) -> None:
        c = chain("Milan")
        bad = dataclasses.replace(c, ask=_resign(c.ask, c.ark_key, salt=SIG["wrong_salt_length"]))
        with pytest.raises(ChainError) as err:
            verify_chain(bad)
        assert err.value.rule == "ask-signature-algorithm"
        # The message names the outer signatureAlgorithm's DER (RFC 5280 §4.1.1.2).
        algorithm = _children(bad.ask.public_bytes(serialization.Encoding.DER))[1][2]
        assert err.value.message == (
            f"ask: signature algorithm {algorithm.hex()} is not "
            "RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48"
        )
        assert err.value.spec == SPEC_CERTS

    def test_wrong_signer_refused(self) -> None:
        c = chain("Milan")
        bad = dataclasses.replace(c, vcek=_resign(c.vcek, c.asvk_key))  # names say the ASK
        with pytest.raises(ChainError) as err:
            verify_chain(bad)
        assert err.value.rule == "vcek-signature"
        assert (err.value.message, err.value.spec) == (
            "vcek: the RSASSA-PSS signature (SHA-384, salt 48) does not verify under its "
            "issuer's key",
            SPEC_CERTS,
        )

    @pytest.mark.parametrize(
        ("field", "rule"),
        [("ask", "ask-issuer-name"), ("asvk", "asvk-issuer-name"), ("ark", "ask-issuer-name")],
    )
    def test_other_products_root_refused(self, field: str, rule: str) -> None:
        milan, genoa = chain("Milan"), chain("Genoa")
        bad = dataclasses.replace(milan, **{field: getattr(genoa, field)})
        with pytest.raises(ChainError) as err:
            verify_chain(bad)
        assert err.value.rule == rule  # Genoa's ARK is validly self-signed: the ASK link breaks

    def test_leaf_key_type(self) -> None:
        c = chain("Milan")
        p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
        bad = dataclasses.replace(c, vlek=_resign(c.vlek, c.asvk_key, public_key=p256))
        with pytest.raises(ChainError) as err:
            verify_chain(bad)
        assert err.value.rule == "vlek-key-type"
        assert (err.value.message, err.value.spec) == (
            "vlek: the public key is not EC P-384",
            SPEC_CERTS,
        )

    def test_verify_signed_by_names_the_leg(self) -> None:
        c = chain("Milan")
        verify_signed_by(c.vcek, c.ask, name="vcek")
        with pytest.raises(ChainError) as err:
            verify_signed_by(c.vcek, c.vcek, name="leaf")
        assert err.value.rule == "leaf-issuer-name"
        assert isinstance(err.value, GhcbError)
        assert (err.value.message, err.value.spec) == (
            f"leaf: issuer {c.vcek.issuer.rfc4514_string()!r} is not the subject of its issuer "
            f"certificate {c.vcek.subject.rfc4514_string()!r}",
            SPEC_CERTS,
        )

    def test_issuer_key_not_rsa(self) -> None:
        """An issuer certificate of the right name with an EC key: the leg's key type fails."""
        c = chain("Milan")
        key = ec.derive_private_key(7, ec.SECP384R1())
        ec_ask = (
            x509.CertificateBuilder()
            .subject_name(c.ask.subject)
            .issuer_name(c.ask.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(c.ask.not_valid_before_utc)
            .not_valid_after(c.ask.not_valid_after_utc)
            .sign(key, hashes.SHA384())
        )
        with pytest.raises(ChainError) as err:
            verify_signed_by(c.vcek, ec_ask, name="vcek")
        kind = type(ec_ask.public_key()).__name__
        assert (err.value.rule, err.value.message, err.value.spec) == (
            "vcek-key-type",
            f"vcek: the issuer key is {kind}, not RSA",
            SPEC_CERTS,
        )


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
class TestWriteChain:
    @pytest.mark.parametrize("form", ["pem", "der"])
    def test_files(self, tmp_path: pathlib.Path, form: Any) -> None:
        paths = write_chain(tmp_path / "out", "Milan", form=form)
        c = chain("Milan")
        assert list(paths) == ["ark", "ask", "asvk", "vcek", "vlek"]
        for name, path in paths.items():
            assert path == tmp_path / "out" / f"{name}.{form}"
            assert path.read_bytes() == (c.pem if form == "pem" else c.der)[name]
        # The files are what `ghcb certs build` takes: PEM becomes DER in the table.
        entries = [
            CertEntry(CertGuid.ARK, paths["ark"].read_bytes()),
            CertEntry(CertGuid.ASK, paths["ask"].read_bytes()),
            CertEntry(CertGuid.VCEK, paths["vcek"].read_bytes()),
        ]
        assert build_cert_table(entries) == c.cert_table()

    def test_nested_directory_other_chip_and_tcb(self, tmp_path: pathlib.Path) -> None:
        """Missing parents are created; chip_id and tcb reach the chain written."""
        chip_id = bytes(range(64))
        tcb = Tcb(boot_loader=7, snp=0x1C, microcode=0x80)
        folder = tmp_path / "a" / "b"
        paths = write_chain(folder, "Genoa", form="der", chip_id=chip_id, tcb=tcb)
        c = chain("Genoa", chip_id=chip_id, tcb=tcb)
        assert {n: p.read_bytes() for n, p in paths.items()} == dict(c.der)
        assert _ext_value(c.vcek, "hwID") == chip_id

    def test_unwritable(self, tmp_path: pathlib.Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_bytes(b"")
        with pytest.raises(HostError) as err:
            write_chain(blocker, "Milan")
        assert err.value.rule == "write"
        assert err.value.spec == SPEC_CERTS
        assert err.value.message.startswith(f"cannot write the Milan chain to {blocker}: ")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
BAD_CALLS: list[tuple[str, Callable[[], object], type[GhcbError], str]] = [
    ("product", lambda: chain("Bergamo"), HypervisorUsageError, "product"),
    ("product-type", lambda: chain(3), HypervisorUsageError, "product"),  # type: ignore[arg-type]
    ("chip-short", lambda: chain(chip_id=bytes(63)), HypervisorUsageError, "chip-id-length"),
    ("chip-type", lambda: chain(chip_id="x" * 64), InputTypeError, "input-type"),  # type: ignore[arg-type]
    (
        "turin-tail",
        lambda: chain("Turin", chip_id=bytes(63) + b"\1"),
        HypervisorUsageError,
        "chip-id-padding",
    ),
    ("tcb-type", lambda: chain(tcb=0x73), InputTypeError, "tcb-type"),  # type: ignore[arg-type]
    ("tcb-range", lambda: Tcb(microcode=256), FieldValueError, "tcb-range"),
    ("tcb-bool", lambda: Tcb(boot_loader=True), InputTypeError, "tcb-type"),
    ("tcb-length", lambda: Tcb.from_bytes("Milan", bytes(7)), HypervisorUsageError, "tcb-length"),
    ("tcb-u64", lambda: Tcb.from_int("Milan", 1 << 64), FieldValueError, "tcb-range"),
    ("tcb-int", lambda: Tcb.from_int("Milan", b"\0" * 8), InputTypeError, "tcb-type"),  # type: ignore[arg-type]
    ("tcb-product", lambda: DEFAULT_TCB.to_bytes("milan"), HypervisorUsageError, "product"),
    ("csp-ascii", lambda: chain(csp_id="CN=é"), HypervisorUsageError, "csp-id"),
    ("csp-type", lambda: chain(csp_id=b"CN=x"), InputTypeError, "csp-id-type"),  # type: ignore[arg-type]
    ("signer", lambda: chain().cert_entries("ask"), HypervisorUsageError, "signer"),  # type: ignore[arg-type]
    ("form", lambda: write_chain("/nonexistent", form="txt"), HypervisorUsageError, "form"),  # type: ignore[arg-type]
    ("directory", lambda: write_chain(3), InputTypeError, "directory-type"),  # type: ignore[arg-type]
    ("verify-type", lambda: verify_chain(object()), InputTypeError, "chain-type"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "error", "rule"), [row[1:] for row in BAD_CALLS], ids=[row[0] for row in BAD_CALLS]
)
def test_bad_input(call: Callable[[], object], error: type[GhcbError], rule: str) -> None:
    with pytest.raises(error) as err:
        call()
    assert err.value.rule == rule
    assert isinstance(err.value.message, str)
    assert isinstance(err.value.spec, str)


@pytest.mark.parametrize(
    ("chip_id", "error", "message", "field", "offset"),
    [
        (bytes(63), HypervisorUsageError, "chip_id is 63 bytes; a CHIP_ID is 64", "chip_id", None),
        (
            bytes(63) + b"\1",
            HypervisorUsageError,
            "a Turin CHIP_ID is its 8-byte hwID followed by zeros",
            "chip_id",
            8,
        ),
        ("x" * 64, InputTypeError, "chip_id must be bytes-like, not str", None, None),
    ],
)
def test_bad_input_chip_id(
    chip_id: object, error: type[GhcbError], message: str, field: str | None, offset: int | None
) -> None:
    """A bad CHIP_ID names itself, the 64-byte rule and, on Turin, where the zeros start."""
    with pytest.raises(error) as err:
        chain("Turin", chip_id=chip_id)  # type: ignore[arg-type]
    value = err.value
    assert (value.message, value.field, value.offset) == (message, field, offset)
    assert value.spec == _pki_build.SPEC_CHIP_ID


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: write_chain(3), "directory must be a path, not int"),  # type: ignore[arg-type]
        (lambda: write_chain(".", form="txt"), "form must be 'pem' or 'der', not 'txt'"),  # type: ignore[arg-type]
        (lambda: verify_chain(object()), "verify_chain takes a Chain, not object"),  # type: ignore[arg-type]
        (lambda: chain().cert_entries("ask"), "signer must be 'vcek' or 'vlek', not 'ask'"),  # type: ignore[arg-type]
        (lambda: chain(tcb=0x73), "tcb must be a Tcb, not int"),  # type: ignore[arg-type]
        (lambda: chain(csp_id=b"CN=x"), "csp_id must be a str, not bytes"),  # type: ignore[arg-type]
        (lambda: chain(csp_id=""), "csp_id must be non-empty ASCII (an IA5String), not ''"),
        (lambda: chain("Bergamo"), None),
    ],
)
def test_bad_input_message(call: Callable[[], object], message: str | None) -> None:
    """The message names the value or type refused; the spec is the certificates' (the TCB's
    for a TCB); a bad CSP_ID names its field."""
    with pytest.raises(GhcbError) as err:
        call()
    if message is not None:
        assert err.value.message == message
    assert err.value.spec == (SPEC_TCB if message and message.startswith("tcb") else SPEC_CERTS)
    assert err.value.field == ("csp_id" if message and message.startswith("csp_id") else None)


# ---------------------------------------------------------------------------------------------
# An independent verifier: omne-attest, with our ARK pinned
# ---------------------------------------------------------------------------------------------
def _report(c: Chain, *, report_data: bytes, tcb: Tcb | None = None) -> bytes:
    """A version-2 report signed by the chain's VCEK (facts §1.1 offsets, §1.2 signature:
    ECDSA P-384 / SHA-384 over [0, 0x2A0), r and s little-endian in 72-byte slots)."""
    report = bytearray(0x4A0)
    struct.pack_into("<IIQ", report, 0x00, 2, 0, 0x30000)  # VERSION, GUEST_SVN, POLICY
    struct.pack_into("<I", report, 0x34, 1)  # SIGNATURE_ALGO: ECDSA P-384 with SHA-384
    raw_tcb = (c.tcb if tcb is None else tcb).to_bytes(c.product)
    for offset in (0x038, 0x180, 0x1E0, 0x1F0):  # CURRENT, REPORTED, COMMITTED, LAUNCH TCB
        report[offset : offset + 8] = raw_tcb
    report[0x50:0x90] = report_data
    report[0x1A0:0x1E0] = c.chip_id
    r, s = decode_dss_signature(c.vcek_key.sign(bytes(report[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    report[0x2A0 : 0x2A0 + 48] = r.to_bytes(48, "little")
    report[0x2E8 : 0x2E8 + 48] = s.to_bytes(48, "little")
    return bytes(report)


class TestOmneAttest:
    def test_chain_accepted_with_our_ark_pinned(self, omne: Any, made: Chain) -> None:
        pin = hashlib.sha256(made.der["ark"]).digest()
        omne.verify_chain(made.der["vcek"], made.der["ask"], made.der["ark"], pin)
        omne.verify_chain(made.der["vlek"], made.der["asvk"], made.der["ark"], pin)

    def test_real_ark_pin_refuses_ours(self, omne: Any) -> None:
        c = chain("Milan")
        with pytest.raises(omne.Fail) as err:
            omne.verify_chain(c.der["vcek"], c.der["ask"], c.der["ark"], omne.vectors.ARK_SHA256)
        assert err.value.kind is omne.FailKind.ARK_NOT_PINNED

    @pytest.mark.parametrize("product", ["Milan", "Genoa"])  # omne reads the Milan TCB layout
    def test_report_accepted(self, omne: Any, product: Product) -> None:
        """End to end: signature, chain, hwID = CHIP_ID, SPLs = REPORTED_TCB."""
        c = chain(product)
        data = bytes(range(64))
        report = _report(c, report_data=data)
        pin = hashlib.sha256(c.der["ark"]).digest()
        policy = omne.Policy(report_data=data)
        parsed = omne.verify(report, c.der["vcek"], c.der["ask"], c.der["ark"], pin, policy)
        assert parsed.chip_id == c.chip_id

    def test_stale_vcek_refused(self, omne: Any) -> None:
        """A report at TCB n+1 with the VCEK for TCB n: the signature fails (new key per TCB)."""
        old = chain("Milan")
        new = old.at_tcb(dataclasses.replace(old.tcb, snp=old.tcb.snp + 1))
        report = _report(new, report_data=bytes(64))
        pin = hashlib.sha256(old.der["ark"]).digest()
        with pytest.raises(omne.Fail) as err:
            omne.verify(report, old.der["vcek"], old.der["ask"], old.der["ark"], pin, omne.Policy())
        assert err.value.kind is omne.FailKind.REPORT_SIGNATURE
