"""Attestation report: spec table == schema == struct codec, real and synthetic vectors on both
backends, the ECDSA P-384 signature helpers, checks, and hostile input.

Every offset, size, bit and product number is read from spec/tables/report.toml and every
vector from spec/vectors/reports.json, never from the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pickle
import struct
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from hypothesis import given
from hypothesis import strategies as st

from ghcb import FieldValueError, GhcbError, InputTypeError, LengthError, UnknownFieldError
from ghcb._fast import bit_fields, flat_fields
from ghcb.report import (
    KNOWN_VERSIONS,
    PRODUCT_CPUID,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    GuestPolicy,
    PlatformInfo,
    Product,
    SignerInfo,
    SigningKey,
    TcbGenoaMilan,
    TcbTurin,
    build_report,
    check_report,
    cpuid_fms,
    decode_signature,
    decode_tcb,
    encode_signature,
    parse_report,
    product_from_cpuid,
    sign_report,
    signature_from_der,
    signature_to_der,
    signed_bytes,
    verify_report,
)
from ghcb.schemas import report as schema
from tests.helpers import assert_roundtrip, load_table, load_vectors

if TYPE_CHECKING:
    from ghcb.page import Backend

TABLE = load_table("report")
META = TABLE["report"]
ROWS = TABLE["field"]
VECTORS = load_vectors("reports")
REAL = VECTORS["reports"]
SYNTHETIC = VECTORS["synthetic"]
INT_KINDS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
SIZE = META["size"]


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


def _row(name: str) -> dict[str, Any]:
    return next(r for r in ROWS if r["name"] == name)


def _real(vec: dict[str, Any]) -> bytes:
    return bytes.fromhex(vec["hex"])


def _pub(vec: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    point = bytes.fromhex(vec["vcek"]["public_key"])
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point)


def _synthetic(vec: dict[str, Any]) -> bytes:
    """The vector's bytes, written field by field at the table's offsets (not by the package)."""
    out = bytearray(SIZE)
    for name, value in vec["set"].items():
        row = _row(name)
        raw = (
            value.to_bytes(row["size"], "little")
            if row["kind"] in INT_KINDS
            else bytes.fromhex(value)
        )
        assert len(raw) == row["size"], name
        out[row["offset"] : row["offset"] + row["size"]] = raw
    return bytes(out)


_KEY = ec.derive_private_key(0x5EC2E7, ec.SECP384R1())  # a fixed test key, not a real VCEK


# -- spec table == construct schema == struct codec --------------------------------------------


class TestLayout:
    def test_constants(self) -> None:
        """Size, signed range, signature area and versions match the table."""
        assert META["size"] == schema.ATTESTATION_REPORT_SIZE == AttestationReport.SIZE
        assert META["signed_size"] == schema.SIGNED_SIZE
        assert META["signature_offset"] == _row("signature_r")["offset"]
        assert META["signature_size"] == schema.SIGNATURE_SIZE
        assert META["signature_scalar_size"] == schema.ECDSA_P384_SCALAR_SIZE
        assert META["signature_algo_ecdsa_p384_sha384"] == SIGNATURE_ALGO_ECDSA_P384_SHA384
        assert set(META["versions"]) == KNOWN_VERSIONS

    def test_same_fields_in_same_order(self) -> None:
        """The schema and the record have exactly the table's fields, tiling the report."""
        names = [r["name"] for r in ROWS]
        assert [f.name for f in flat_fields(schema.attestation_report)] == names
        assert [f.name for f in dataclasses.fields(AttestationReport)] == names
        pos = 0
        for row in ROWS:
            assert row["offset"] == pos, row["name"]
            pos += row["size"]
        assert pos == SIZE

    def test_reserved_names(self) -> None:
        """Every reserved gap, and nothing else, is named reserved_0x<its offset>."""
        for row in ROWS:
            assert (row["kind"] == "reserved") == row["name"].startswith("reserved_"), row
            if row["kind"] == "reserved":
                assert row["name"] == f"reserved_{row['offset']:#x}"

    @pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
    def test_schema_offset_and_size(self, row: dict[str, Any]) -> None:
        """The construct schema puts the field at the table's offset with its size and kind."""
        field = next(f for f in flat_fields(schema.attestation_report) if f.name == row["name"])
        assert (field.offset, field.size) == (row["offset"], row["size"])
        assert field.kind == ("int" if row["kind"] in INT_KINDS else "bytes")
        if row["kind"] in INT_KINDS:
            assert INT_KINDS[row["kind"]] == row["size"]

    @pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
    def test_fast_format_offset(self, row: dict[str, Any]) -> None:
        """The derived struct format places the field at the table's offset."""
        fields = AttestationReport.FIELDS
        i = [f.name for f in fields].index(row["name"])
        assert struct.calcsize("<" + "".join(f.fmt for f in fields[:i])) == row["offset"]
        assert struct.calcsize("<" + fields[i].fmt) == row["size"]

    @pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
    def test_built_bytes_land_at_table_offset(self, row: dict[str, Any], backend: Backend) -> None:
        """A marker value set in one field appears at exactly the table's bytes, and parses
        back into that field alone."""
        size, off = row["size"], row["offset"]
        marker: int | bytes
        if row["kind"] in INT_KINDS:
            marker = int.from_bytes(bytes(range(1, size + 1)), "little")
            expected = marker.to_bytes(size, "little")
        else:
            expected = marker = bytes((i % 251) + 1 for i in range(size))
        report = AttestationReport().replace(**{row["name"]: marker})
        data = build_report(report, backend=backend)
        assert data[off : off + size] == expected
        assert not any(data[:off])
        assert not any(data[off + size :])
        assert parse_report(data, backend=backend) == report

    @pytest.mark.parametrize(
        ("record", "field"),
        [(SignerInfo, "signer_info"), (GuestPolicy, "policy"), (PlatformInfo, "platform_info")],
    )
    def test_bitfields(self, record: Any, field: str) -> None:
        """Each bit field of policy / platform_info / signer_info sits at the table's bits, and
        the fields cover the whole integer."""
        rows = [r for r in TABLE["bitfield"] if r["field"] == field]
        table = {r["name"]: (r["lo"], r["hi"] - r["lo"] + 1) for r in rows}
        assert {f.name: (f.shift, f.width) for f in record.FIELDS} == table
        assert sum(width for _, width in table.values()) == 8 * _row(field)["size"]
        for r in rows:  # one field set: exactly its bits in the integer
            value = ((1 << (r["hi"] - r["lo"] + 1)) - 1) << r["lo"]
            assert record.decode(value).fields()[r["name"]] == value >> r["lo"]
            assert record.decode(value).encode() == value

    def test_signer_info_schema(self) -> None:
        """The signer-info bit schema derives the same bits as the record uses."""
        assert bit_fields(schema.signer_info) == SignerInfo.FIELDS

    def test_signing_keys(self) -> None:
        """SigningKey has exactly the table's values."""
        table = {r["name"]: r["value"] for r in TABLE["signing_key"]}
        assert {m.name: int(m) for m in SigningKey} == table

    @pytest.mark.parametrize("layout", TABLE["tcb_layout"], ids=_ids(TABLE["tcb_layout"]))
    def test_tcb_layouts(self, layout: dict[str, Any]) -> None:
        """Each TCB layout's components are at the table's bytes, for each of its products;
        the other bytes are reserved."""
        names = [k for k in ("fmc", "boot_loader", "tee", "snp", "microcode") if k in layout]
        for product in layout["products"]:
            value = int.from_bytes(bytes(i + 1 for i in range(8)), "little")
            tcb = decode_tcb(value, Product(product))
            for name in names:
                assert getattr(tcb, name) == layout[name] + 1, (product, name)
            reserved = next(v for k, v in tcb.fields().items() if k.startswith("reserved_"))
            assert reserved == bytes(i + 1 for i in layout["reserved"])
            assert tcb.to_int() == value
        fields = {f.name: f.offset for f in type(tcb).FIELDS}
        assert {n: fields[n] for n in names} == {n: layout[n] for n in names}

    @pytest.mark.parametrize("product", TABLE["product"], ids=_ids(TABLE["product"]))
    def test_products(self, product: dict[str, Any]) -> None:
        """Each product's CPUID family/model, its model ranges, and CPUID(1).EAX agree."""
        p = Product(product["name"])
        assert PRODUCT_CPUID[p] == (product["cpuid_fam_id"], product["cpuid_mod_id"])
        assert product_from_cpuid(product["cpuid_fam_id"], product["cpuid_mod_id"]) is p
        for lo, hi in product["model_ranges"]:
            for model in (lo, hi):
                assert product_from_cpuid(product["cpuid_fam_id"], model) is p
        assert cpuid_fms(product["cpuid_1_eax"]) == (
            product["cpuid_fam_id"],
            product["cpuid_mod_id"],
            0,
        )

    def test_unknown_cpuid(self) -> None:
        """Models outside every range, and other families, name no product."""
        models = {
            (r["cpuid_fam_id"], m)
            for r in TABLE["product"]
            for lo, hi in r["model_ranges"]
            for m in range(lo, hi + 1)
        }
        for fam in (0x17, 0x19, 0x1A):
            for model in range(256):
                expected = (fam, model) in models
                assert (product_from_cpuid(fam, model) is not None) == expected

    @pytest.mark.parametrize("cls", [AttestationReport, TcbGenoaMilan, TcbTurin])
    def test_record_fields_are_the_schema(self, cls: Any) -> None:
        """Each record declares exactly its schema's fields, in order, with slot setters."""
        assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in cls.FIELDS]
        assert len(cls._SETTERS) == len(cls.FIELDS)

    def test_schema_roundtrip_and_compiled_twin(self) -> None:
        """The construct schema (and its compiled twin) parse a real report to the struct
        codec's fields and build it back."""
        data = _real(REAL[0])
        report = parse_report(data)
        assert_roundtrip(schema.attestation_report, data, report.fields())
        for cls in (TcbGenoaMilan, TcbTurin):
            tcb = cls.from_int(report.current_tcb)
            assert_roundtrip(cls.SCHEMA, tcb.to_bytes(), tcb.fields())


# -- golden vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("vec", REAL, ids=_ids(REAL))
class TestRealReports:
    def test_bytes_are_the_published_ones(self, vec: dict[str, Any]) -> None:
        """The vector is the report the facts name (SHA-256 of the 1184 bytes)."""
        data = _real(vec)
        assert len(data) == SIZE
        assert hashlib.sha256(data).hexdigest() == vec["sha256"]

    def test_decode(self, vec: dict[str, Any], backend: Backend) -> None:
        """Every transcribed field decodes to the facts' value, on both backends."""
        report = parse_report(_real(vec), backend=backend)
        for name, value in vec["fields"].items():
            assert getattr(report, name) == value, name
        for name, value in vec["hex_fields"].items():
            assert getattr(report, name).hex() == value, name
        for name, (prefix, suffix) in vec["hex_affixes"].items():
            text = getattr(report, name).hex()
            assert text.startswith(prefix), name
            assert text.endswith(suffix), name

    def test_roundtrip(self, vec: dict[str, Any], backend: Backend) -> None:
        """build(parse(report)) is the report, exactly."""
        data = _real(vec)
        assert build_report(parse_report(data, backend=backend), backend=backend) == data

    def test_clean(self, vec: dict[str, Any]) -> None:
        """A real report breaks no rule; strict parsing accepts it."""
        assert check_report(_real(vec)) == []
        parse_report(_real(vec), strict=True)

    def test_product_and_tcb(self, vec: dict[str, Any]) -> None:
        """v3+ reports name their product; every TCB field decodes to the facts' SPLs in it."""
        report = parse_report(_real(vec))
        named = vec["reported_product"]
        assert report.product == (Product(named) if named else None)
        product = Product(vec["product"])
        for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            tcb = report.tcb(name, product)
            assert {k: getattr(tcb, k) for k in vec["tcb"]} == vec["tcb"]
        assert report.signing_key is SigningKey.VCEK

    def test_signed_bytes(self, vec: dict[str, Any]) -> None:
        """signed_bytes is [0, 0x2A0): its SHA-384 is the facts' digest."""
        data = _real(vec)
        for source in (data, parse_report(data), bytearray(data), memoryview(data)):
            signed = signed_bytes(source)
            assert len(signed) == META["signed_size"]
            assert hashlib.sha384(signed).hexdigest() == vec["signed_sha384"]

    def test_verifies_with_its_vcek(self, vec: dict[str, Any]) -> None:
        """The report verifies with its own VCEK and with no other vector's."""
        data = _real(vec)
        assert verify_report(data, _pub(vec)) is True
        assert verify_report(parse_report(data), _pub(vec)) is True
        for other in REAL:
            if other is not vec:
                assert verify_report(data, _pub(other)) is False

    def test_signature_helpers_agree_with_cryptography(self, vec: dict[str, Any]) -> None:
        """Reversing each slot's 48 low bytes by hand gives the (r, s) decode_signature gives,
        and cryptography verifies the DER built from them."""
        data = _real(vec)
        off, slot = META["signature_offset"], META["signature_scalar_size"]
        sig_bytes = META["signature_scalar_significant"]
        r = int.from_bytes(data[off : off + sig_bytes][::-1], "big")
        s = int.from_bytes(data[off + slot : off + slot + sig_bytes][::-1], "big")
        area = data[off : off + META["signature_size"]]
        assert decode_signature(area) == (r, s)
        der = signature_to_der(area)
        assert der == utils.encode_dss_signature(r, s)
        _pub(vec).verify(der, data[: META["signed_size"]], ec.ECDSA(hashes.SHA384()))
        assert signature_from_der(der) == area
        assert encode_signature(r, s) == area


def test_flipped_policy_bit_does_not_verify() -> None:
    """virtee/sev's negative test: one flipped bit inside POLICY breaks the signature."""
    for neg in VECTORS["negative"]:
        base = next(v for v in REAL if v["name"] == neg["base"])
        data = bytearray(_real(base))
        data[neg["byte"]] ^= 1 << neg["bit"]
        assert verify_report(bytes(data), _pub(base)) is False


@pytest.mark.parametrize("vec", SYNTHETIC, ids=_ids(SYNTHETIC))
class TestSyntheticReports:
    def test_record_builds_the_bytes(self, vec: dict[str, Any], backend: Backend) -> None:
        """The record with the vector's fields builds the bytes the vector lists at their
        offsets and the table lays out, zero elsewhere; parsing gives the record back."""
        values: dict[str, Any] = {
            k: (v if isinstance(v, int) else bytes.fromhex(v)) for k, v in vec["set"].items()
        }
        report = AttestationReport(**values)
        data = build_report(report, backend=backend)
        for patch in vec["bytes"]:
            raw = bytes.fromhex(patch["hex"])
            assert data[patch["offset"] : patch["offset"] + len(raw)] == raw
        assert data == _synthetic(vec)  # every other byte zero
        assert parse_report(data, backend=backend) == report

    def test_violations(self, vec: dict[str, Any]) -> None:
        """check_report finds exactly the vector's violations, in offset order."""
        found = [
            {"code": v.code, "severity": v.severity.value, "offset": v.offset}
            for v in check_report(_synthetic(vec))
        ]
        assert found == vec["violations"]

    def test_strict_parse(self, vec: dict[str, Any]) -> None:
        """Strict parsing raises the first error-severity violation, else accepts."""
        errors = [v for v in vec["violations"] if v["severity"] == "error"]
        if not errors:
            parse_report(_synthetic(vec), strict=True)
            return
        with pytest.raises(FieldValueError) as info:
            parse_report(_synthetic(vec), strict=True)
        assert (info.value.rule, info.value.offset) == (errors[0]["code"], errors[0]["offset"])

    def test_product_and_tcb(self, vec: dict[str, Any]) -> None:
        """The product the CPUID fields name; TCB fields in that product's layout."""
        report = parse_report(_synthetic(vec))
        assert report.product == (Product(vec["product"]) if vec["product"] else None)
        for name, expected in vec.get("tcb", {}).items():
            tcb = report.tcb(name)
            assert {k: getattr(tcb, k) for k in expected} == expected
        if "signing_key" in vec:
            assert report.signing_key is SigningKey[vec["signing_key"]]


# -- signatures ---------------------------------------------------------------------------------


class TestSignature:
    def test_sign_then_verify(self) -> None:
        """sign_report writes an ECDSA P-384 signature over [0, 0x2A0) that verify_report and
        cryptography itself accept; nothing before 0x2A0 changes."""
        report = AttestationReport(
            version=5, signature_algo=1, policy=0x30000, cpuid_fam_id=0x19, cpuid_mod_id=0x01
        )
        signed = sign_report(report, _KEY)
        assert len(signed) == SIZE
        assert signed[: META["signed_size"]] == build_report(report)[: META["signed_size"]]
        assert verify_report(signed, _KEY.public_key()) is True
        der = signature_to_der(signed[META["signature_offset"] :])
        _KEY.public_key().verify(der, signed[: META["signed_size"]], ec.ECDSA(hashes.SHA384()))
        assert check_report(signed) == []

    def test_sign_replaces_any_old_signature(self) -> None:
        """The whole SIGNATURE area is rewritten: reserved bytes end up zero."""
        report = AttestationReport(signature_algo=1, reserved_0x330=b"\xff" * 368)
        signed = sign_report(build_report(report), _KEY)
        assert not any(signed[_row("reserved_0x330")["offset"] :])
        assert verify_report(signed, _KEY.public_key())

    def test_deterministic(self) -> None:
        """deterministic=True (RFC 6979) signs the same report to the same bytes."""
        report = AttestationReport(signature_algo=1, version=2, policy=0x30000)
        first = sign_report(report, _KEY, deterministic=True)
        assert sign_report(build_report(report), _KEY, deterministic=True) == first
        assert verify_report(first, _KEY.public_key())

    def test_other_key_or_other_bytes_do_not_verify(self) -> None:
        """A different key, a changed signed byte or a signature algorithm other than 1 fail."""
        signed = sign_report(AttestationReport(signature_algo=1), _KEY)
        other = ec.derive_private_key(7, ec.SECP384R1())
        assert verify_report(signed, other.public_key()) is False
        algo = _row("signature_algo")["offset"]
        for index in (0, META["signed_size"] - 1):
            tampered = bytearray(signed)
            tampered[index] ^= 1
            assert verify_report(bytes(tampered), _KEY.public_key()) is False
        resigned = sign_report(AttestationReport(signature_algo=2), _KEY)
        assert resigned[algo] == 2
        assert verify_report(resigned, _KEY.public_key()) is False

    def test_unsigned_report_does_not_verify(self) -> None:
        """An all-zero signature (SIGNING_KEY = NONE) is not a signature."""
        report = AttestationReport(signature_algo=1, signer_info=SigningKey.NONE << 2)
        assert verify_report(report, _KEY.public_key()) is False

    def test_padding_makes_verification_fail(self) -> None:
        """A signature with non-zero padding above the 48 significant bytes does not verify."""
        signed = bytearray(sign_report(AttestationReport(signature_algo=1), _KEY))
        signed[META["signature_offset"] + META["signature_scalar_significant"]] = 1
        assert verify_report(bytes(signed), _KEY.public_key()) is False

    def test_encode_decode(self) -> None:
        """(r, s) <-> the 0x200-byte area: 72-byte little-endian slots, zeros after."""
        r, s = (1 << 383) | 0x1234, 0xABCDEF
        area = encode_signature(r, s)
        slot = META["signature_scalar_size"]
        assert len(area) == META["signature_size"]
        assert area[:slot] == r.to_bytes(slot, "little")
        assert area[slot : 2 * slot] == s.to_bytes(slot, "little")
        assert not any(area[2 * slot :])
        assert decode_signature(area) == (r, s)

    @pytest.mark.parametrize(("r", "s"), [(-1, 1), (1, 1 << 384), (True, 1)])
    def test_encode_refuses_non_scalars(self, r: int, s: int) -> None:
        """Negative, too wide or non-int scalars are typed errors."""
        with pytest.raises((FieldValueError, InputTypeError)):
            encode_signature(r, s)

    def test_decode_errors(self) -> None:
        """A wrong-length area is a LengthError; non-zero padding a FieldValueError naming
        the slot and offset."""
        with pytest.raises(LengthError):
            decode_signature(bytes(144))
        area = bytearray(META["signature_size"])
        area[META["signature_scalar_size"] + META["signature_scalar_significant"]] = 1
        with pytest.raises(FieldValueError) as info:
            decode_signature(bytes(area))
        assert (info.value.rule, info.value.field) == ("signature-padding", "signature_s")
        with pytest.raises(FieldValueError):
            signature_from_der(b"\x30\x03garbage")

    def test_key_errors(self) -> None:
        """Keys that are not EC P-384 are typed errors, not cryptography's."""
        report = AttestationReport()
        p256 = ec.derive_private_key(5, ec.SECP256R1())
        with pytest.raises(FieldValueError):
            sign_report(report, p256)
        with pytest.raises(FieldValueError):
            verify_report(report, p256.public_key())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with pytest.raises(InputTypeError):
            sign_report(report, rsa_key)  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            verify_report(report, rsa_key.public_key())  # type: ignore[arg-type]


# -- the record ---------------------------------------------------------------------------------


class TestRecord:
    def test_defaults_are_zero(self) -> None:
        """The default record is 1184 zero bytes."""
        assert build_report(AttestationReport()) == bytes(SIZE)

    def test_immutable_hashable_picklable(self) -> None:
        """Records are frozen values: equal by fields, hashable, picklable."""
        report = parse_report(_real(REAL[0]))
        with pytest.raises(dataclasses.FrozenInstanceError):
            report.version = 3  # type: ignore[misc]
        assert report == parse_report(_real(REAL[0]), backend="construct")
        assert hash(report) == hash(parse_report(bytearray(_real(REAL[0]))))
        assert pickle.loads(pickle.dumps(report)) == report

    def test_bytes_like_fields_are_kept_as_bytes(self) -> None:
        """bytearray / memoryview values become bytes; IntEnum values plain ints."""
        report = AttestationReport(
            report_data=bytearray(64),  # type: ignore[arg-type]
            signer_info=SigningKey.VLEK << 2,
        )
        assert type(report.report_data) is bytes
        assert report.signing_key is SigningKey.VLEK
        assert type(AttestationReport(version=SigningKey.VLEK).version) is int

    @pytest.mark.parametrize(
        ("values", "error", "rule"),
        [
            ({"version": -1}, FieldValueError, "field-range"),
            ({"version": 1 << 32}, FieldValueError, "field-range"),
            ({"cpuid_step": 256}, FieldValueError, "field-range"),
            ({"policy": "1"}, FieldValueError, "field-type"),
            ({"policy": True}, FieldValueError, "field-type"),
            ({"report_data": bytes(63)}, LengthError, "field-length"),
            ({"report_data": 0}, FieldValueError, "field-type"),
        ],
    )
    def test_bad_values(self, values: dict[str, Any], error: type[GhcbError], rule: str) -> None:
        """Out-of-range, mistyped or wrong-length values are typed errors naming the field
        and its table offset."""
        with pytest.raises(error) as info:
            AttestationReport(**values)
        (name,) = values
        assert (info.value.rule, info.value.field, info.value.offset) == (
            rule,
            name,
            _row(name)["offset"],
        )

    def test_replace(self) -> None:
        """replace() checks values and refuses unknown names."""
        report = AttestationReport().replace(vmpl=2)
        assert report.vmpl == 2
        with pytest.raises(UnknownFieldError):
            report.replace(vmpk=1)
        with pytest.raises(FieldValueError):
            report.replace(vmpl=-1)

    def test_tcb_errors(self) -> None:
        """tcb() refuses non-TCB names and a v2 report without an explicit product."""
        report = AttestationReport(version=2)
        with pytest.raises(UnknownFieldError):
            report.tcb("policy")
        with pytest.raises(FieldValueError):
            report.tcb("current_tcb")
        with pytest.raises(InputTypeError):
            decode_tcb(0, "Milan")  # type: ignore[arg-type]
        with pytest.raises(FieldValueError):
            decode_tcb(1 << 64, Product.MILAN)

    def test_policy_default_has_bit17(self) -> None:
        """GuestPolicy() encodes the must-be-one bit 17."""
        assert GuestPolicy().encode() == 1 << 17


class TestBadInput:
    @pytest.mark.parametrize("size", [0, 1, SIZE - 1, SIZE + 1, 4096])
    def test_length(self, size: int, backend: Backend) -> None:
        """Anything but 1184 bytes is a LengthError (and a report-length violation)."""
        with pytest.raises(LengthError):
            parse_report(bytes(size), backend=backend)
        with pytest.raises(LengthError):
            signed_bytes(bytes(size))
        with pytest.raises(LengthError):
            verify_report(bytes(size), _KEY.public_key())
        (violation,) = check_report(bytes(size))
        assert violation.code == "report-length"

    @pytest.mark.parametrize("data", [None, "text", 1184, [0] * 1184])
    def test_not_bytes(self, data: object) -> None:
        """Non-buffers are InputTypeErrors."""
        with pytest.raises(InputTypeError):
            parse_report(data)  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            check_report(data)  # type: ignore[arg-type]

    def test_build_and_backend(self) -> None:
        """build_report takes only a report; an unknown backend is an InputTypeError."""
        with pytest.raises(InputTypeError):
            build_report(bytes(SIZE))  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            parse_report(bytes(SIZE), backend="json")  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            build_report(AttestationReport(), backend="json")  # type: ignore[arg-type]

    @given(data=st.binary(min_size=SIZE, max_size=SIZE))
    def test_any_report_roundtrips(self, data: bytes) -> None:
        """Any 1184 bytes parse and build back exactly, on both backends, and agree."""
        fast = parse_report(data)
        assert build_report(fast) == data
        ref = parse_report(data, backend="construct")
        assert ref == fast
        assert build_report(ref, backend="construct") == data
        check_report(data)

    @given(data=st.one_of(st.binary(max_size=2 * SIZE), st.binary(min_size=SIZE, max_size=SIZE)))
    def test_hostile_bytes(self, data: bytes) -> None:
        """parse (strict), check, verify and the signature helpers on any bytes: a result or
        a GhcbError, nothing else."""
        for call in (
            lambda: parse_report(data, strict=True),
            lambda: check_report(data),
            lambda: verify_report(data, _KEY.public_key()),
            lambda: decode_signature(data[-META["signature_size"] :]),
            lambda: signature_from_der(data),
            lambda: parse_report(data).product,
        ):
            with contextlib.suppress(GhcbError):
                call()
