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

:class:`SchemaRecord` is the base of every fixed-size record declared by one flat schema (the
report, the TCB layouts, the guest-message header and payloads in :mod:`ghcb.guest_msg`): the
fields, their checks and the ``struct`` codec all come from the schema.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from ghcb._bytes import byte_string, byte_view, view_bytes
from ghcb._fast import (
    Backend,
    BitField,
    FlatField,
    U64Record,
    backend_error,
    bit_fields,
    check_int,
    flat_fields,
    struct_format,
)
from ghcb.codes import _Code
from ghcb.errors import (
    FieldValueError,
    InputTypeError,
    LengthError,
    Severity,
    UnknownFieldError,
    Violation,
)
from ghcb.schemas import report as schema

if TYPE_CHECKING:
    import struct
    from collections.abc import Callable, Mapping

    import construct as cs

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

SPEC_REPORT: Final = "SNP firmware ABI ATTESTATION_REPORT (snp-firmware-facts §1.1)"
SPEC_SIGNATURE: Final = "SNP firmware ABI report signature (snp-firmware-facts §1.2)"
SPEC_TCB: Final = "SNP firmware ABI TCB_VERSION (snp-firmware-facts §1.3)"
SPEC_CPUID: Final = "report CPUID_FAM_ID/MOD_ID (snp-firmware-facts §1.7)"

#: 0x4A0 (SNP firmware ABI; MSG_REPORT_RSP.REPORT_SIZE).
ATTESTATION_REPORT_SIZE: Final = schema.ATTESTATION_REPORT_SIZE
#: The signature covers [0, 0x2A0) (snp-firmware-facts §1.2).
SIGNED_SIZE: Final = schema.SIGNED_SIZE
#: SIGNATURE_ALGO 1 = ECDSA P-384 with SHA-384, the only value defined (§1.1).
SIGNATURE_ALGO_ECDSA_P384_SHA384: Final = 1
#: Report versions with a known layout: 2 (AMD's 2023 firmware source), 3 (+ CPUID family,
#: model, stepping) and 5 (+ mitigation vectors) (snp-firmware-facts §1.1 notes). Version 4
#: exists but has no layout of its own (virtee/sev reads it as 3).
KNOWN_VERSIONS: Final = frozenset({2, 3, 5})
_VERSION_CPUID: Final = 3  # first version with CPUID_FAM_ID/MOD_ID/STEP
_VERSION_MIT: Final = 5  # first version with LAUNCH/CURRENT_MIT_VECTOR
_P384_SCALAR_BYTES: Final = 48  # a P-384 scalar; the top 24 bytes of each 72-byte slot are zero
_P384_LIMIT: Final = 1 << (8 * _P384_SCALAR_BYTES)


# ---------------------------------------------------------------------------------------------
# Records declared by one flat schema
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    """Base of an immutable record of one fixed-size, flat ``construct`` schema.

    A subclass is a frozen slotted dataclass whose fields are the schema's members, in order,
    and sets ``SCHEMA``, ``SPEC`` (the rule source named in errors) and ``WHAT`` (how errors
    name the structure); ``ENUMS`` maps a field to the tolerant ``from_int`` that decodes it.
    Construction checks every value (an int in its field's range, bytes of the exact length;
    any byte buffer is accepted and kept as ``bytes``), so a record always encodes.
    """

    SCHEMA: ClassVar[cs.Struct]
    SPEC: ClassVar[str]
    WHAT: ClassVar[str]
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {}
    FIELDS: ClassVar[tuple[FlatField, ...]]
    SIZE: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]
    # (name, is_int, max value or exact length, field) per field: the common case checked inline
    _PLAN: ClassVar[tuple[tuple[str, bool, int, FlatField], ...]]
    # the slot setters of the fields, in layout order (set once @dataclass made the slots)
    _SETTERS: ClassVar[tuple[Callable[[object, object], None], ...]] = ()
    _BY_NAME: ClassVar[dict[str, FlatField]]
    _DEFAULTS: ClassVar[dict[str, int | bytes]]

    def __init_subclass__(cls) -> None:
        # (no zero-argument super() here: @dataclass(slots=True) replaces the class)
        if "SCHEMA" in cls.__dict__:
            cls.FIELDS = flat_fields(cls.SCHEMA)
            cls._STRUCT = struct_format(cls.FIELDS)
            cls.SIZE = cls._STRUCT.size
            cls._BY_NAME = {f.name: f for f in cls.FIELDS}
            cls._PLAN = tuple(
                (f.name, f.kind == "int", f.max_value if f.kind == "int" else f.size, f)
                for f in cls.FIELDS
            )
        slots = [cls.__dict__.get(f.name) for f in getattr(cls, "FIELDS", ())]
        if slots and all(isinstance(d, types.MemberDescriptorType) for d in slots):
            cls._SETTERS = tuple(d.__set__ for d in slots)  # type: ignore[union-attr]

    def __post_init__(self) -> None:
        for name, is_int, limit, f in self._PLAN:
            value = getattr(self, name)
            if is_int:
                if type(value) is int and 0 <= value <= limit:
                    continue
            elif type(value) is bytes and len(value) == limit:
                continue
            object.__setattr__(self, name, _check_field(f, value, self.SPEC))
        for name, from_int in self.ENUMS.items():
            object.__setattr__(self, name, from_int(getattr(self, name)))

    @classmethod
    def _trusted(cls, values: tuple[Any, ...]) -> Self:
        """A record from values that the schema's own decoder produced (not re-checked)."""
        obj = object.__new__(cls)
        for set_slot, value in zip(cls._SETTERS, values, strict=True):
            set_slot(obj, value)
        for name, from_int in cls.ENUMS.items():
            object.__setattr__(obj, name, from_int(getattr(obj, name)))
        return obj

    @classmethod
    def pack(cls, **values: object) -> bytes:
        """The ``SIZE`` bytes of the record with ``values`` set and every other field at its
        default, without building the record (each value is checked as construction does).

        Raises:
            UnknownFieldError: a name that is not a field.
            FieldValueError / LengthError: as construction.
        """
        fields = dict(cls._defaults())
        for name, value in values.items():
            f = cls._BY_NAME.get(name)
            if f is None:
                raise UnknownFieldError(
                    f"{cls.WHAT} has no field {name!r}", rule="unknown-field", spec=cls.SPEC
                )
            fields[name] = _check_field(f, value, cls.SPEC)
        return cls._STRUCT.pack(*fields.values())

    @classmethod
    def _defaults(cls) -> dict[str, int | bytes]:
        defaults: dict[str, int | bytes] | None = cls.__dict__.get("_DEFAULTS")
        if defaults is None:
            defaults = {
                name: int(v) if isinstance(v, int) else v for name, v in cls().fields().items()
            }
            cls._DEFAULTS = defaults
        return defaults

    @classmethod
    def from_bytes(cls, data: object, *, backend: Backend = "struct") -> Self:
        """Decode exactly ``SIZE`` bytes.

        Raises:
            InputTypeError: ``data`` is not bytes-like.
            LengthError: ``len(data) != SIZE``.
        """
        view = byte_view(data, what=cls.WHAT, spec=cls.SPEC)
        if len(view) != cls.SIZE:
            raise LengthError(
                f"{cls.WHAT} is {cls.SIZE} bytes, got {len(view)}",
                rule="length",
                spec=cls.SPEC,
            )
        if backend == "struct":
            return cls._trusted(cls._STRUCT.unpack(view))
        if backend == "construct":
            parsed = cls.SCHEMA.parse(view_bytes(view))
            return cls(**{f.name: parsed[f.name] for f in cls.FIELDS})
        raise backend_error(backend)

    def to_bytes(self, *, backend: Backend = "struct") -> bytes:
        """The record's exact ``SIZE`` bytes."""
        if backend == "struct":
            return self._STRUCT.pack(*self.values())
        if backend == "construct":
            out: bytes = self.SCHEMA.build(self.fields())
            return out
        raise backend_error(backend)

    def values(self) -> tuple[int | bytes, ...]:
        """Every field's value, reserved ones included, in layout order."""
        return tuple(getattr(self, f.name) for f in self.FIELDS)

    def fields(self) -> dict[str, int | bytes]:
        """Every field's value by name, in layout order."""
        return {f.name: getattr(self, f.name) for f in self.FIELDS}


def _check_field(f: FlatField, value: object, spec: str) -> int | bytes:
    """``value`` checked for ``f`` (bytes-like values returned as ``bytes``)."""
    if f.kind == "int":
        if type(value) is int and 0 <= value <= f.max_value:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldValueError(
                f"{f.name} must be an int, not {type(value).__name__}",
                rule="field-type",
                spec=spec,
                field=f.name,
                offset=f.offset,
            )
        if not 0 <= value <= f.max_value:
            raise FieldValueError(
                f"{f.name} = {value} does not fit in {f.size} byte(s) (0..{f.max_value:#x})",
                rule="field-range",
                spec=spec,
                field=f.name,
                offset=f.offset,
            )
        return int(value)  # an IntEnum member is kept as its plain value
    try:
        data = byte_string(value, what=f.name, spec=spec)
    except InputTypeError as e:
        raise FieldValueError(
            e.message, rule="field-type", spec=spec, field=f.name, offset=f.offset
        ) from e
    if len(data) != f.size:
        raise LengthError(
            f"{f.name} must be exactly {f.size} bytes, got {len(data)}",
            rule="field-length",
            spec=spec,
            field=f.name,
            offset=f.offset,
        )
    return data


# ---------------------------------------------------------------------------------------------
# Products, TCB layouts and the report's bit fields
# ---------------------------------------------------------------------------------------------


class Product(enum.StrEnum):
    """An EPYC product line, as the AMD KDS names it (snp-firmware-facts §1.7, §2.5)."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


#: The CPUID_FAM_ID / CPUID_MOD_ID a report names each product with (go-sev-guest constants,
#: snp-firmware-facts §1.7).
PRODUCT_CPUID: Final[Mapping[Product, tuple[int, int]]] = {
    Product.MILAN: (0x19, 0x01),
    Product.GENOA: (0x19, 0x11),
    Product.TURIN: (0x1A, 0x02),
}

# The model ranges virtee/sev's Generation::identify_cpu accepts (snp-firmware-facts §1.7).
_MODEL_RANGES: Final[tuple[tuple[int, range, Product], ...]] = (
    (0x19, range(0x00, 0x10), Product.MILAN),
    (0x19, range(0x10, 0x20), Product.GENOA),
    (0x19, range(0xA0, 0xB0), Product.GENOA),
    (0x1A, range(0x00, 0x12), Product.TURIN),
)


def product_from_cpuid(fam_id: int, mod_id: int) -> Product | None:
    """The product a report's CPUID_FAM_ID / CPUID_MOD_ID name, or ``None``.

    Model ranges as virtee/sev ``Generation::identify_cpu`` (snp-firmware-facts §1.7): family
    0x19 models 0x00-0x0F Milan, 0x10-0x1F and 0xA0-0xAF Genoa; family 0x1A models 0x00-0x11
    Turin.
    """
    for fam, models, product in _MODEL_RANGES:
        if fam_id == fam and mod_id in models:
            return product
    return None


def cpuid_fms(eax: int) -> tuple[int, int, int]:
    """``(CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP)`` of a CPUID Fn0000_0001 EAX value, combined
    as the report stores them (snp-firmware-facts §1.7, go-sev-guest's rule): family = base
    family, plus the extended family when the base is 0xF; model = extended model << 4 | base
    model; stepping = bits 3:0.

    Raises:
        InputTypeError / FieldValueError: ``eax`` is not a u32.
    """
    eax = check_int(eax, 0xFFFFFFFF, "CPUID(1).EAX", SPEC_CPUID)
    base_family = eax >> 8 & 0xF
    family = base_family + (eax >> 20 & 0xFF if base_family == 0xF else 0)
    model = (eax >> 16 & 0xF) << 4 | (eax >> 4 & 0xF)
    return family, model, eax & 0xF


class _TcbRecord(SchemaRecord):
    """A TCB_VERSION in one product's byte layout (a u64 in the report)."""

    SPEC: ClassVar[str] = SPEC_TCB
    WHAT: ClassVar[str] = "a TCB_VERSION"

    @classmethod
    def from_int(cls, value: int) -> Self:
        """Split a TCB_VERSION u64 into this layout's fields (reserved bytes kept).

        Raises:
            InputTypeError: ``value`` is not an int.
            FieldValueError: ``value`` is not a u64.
        """
        value = check_int(value, (1 << 64) - 1, cls.__name__, cls.SPEC)
        return cls.from_bytes(value.to_bytes(8, "little"))

    def to_int(self) -> int:
        """The TCB_VERSION as the report's u64."""
        return int.from_bytes(self.to_bytes(), "little")


@dataclass(frozen=True, slots=True)
class TcbGenoaMilan(_TcbRecord):
    """TCB_VERSION on Milan and Genoa: BOOT_LOADER, TEE, 4 reserved bytes, SNP, MICROCODE."""

    SCHEMA: ClassVar[cs.Struct] = schema.tcb_version_genoa_milan

    boot_loader: int = 0
    tee: int = 0
    reserved_0x2: bytes = bytes(4)
    snp: int = 0
    microcode: int = 0


@dataclass(frozen=True, slots=True)
class TcbTurin(_TcbRecord):
    """TCB_VERSION on Turin: FMC, BOOT_LOADER, TEE, SNP, 3 reserved bytes, MICROCODE."""

    SCHEMA: ClassVar[cs.Struct] = schema.tcb_version_turin

    fmc: int = 0
    boot_loader: int = 0
    tee: int = 0
    snp: int = 0
    reserved_0x4: bytes = bytes(3)
    microcode: int = 0


def decode_tcb(value: int, product: Product) -> TcbGenoaMilan | TcbTurin:
    """A TCB_VERSION u64 in ``product``'s layout (snp-firmware-facts §1.3).

    Raises:
        InputTypeError: ``value`` is not an int, or ``product`` is not a :class:`Product`.
        FieldValueError: ``value`` is not a u64.
    """
    if not isinstance(product, Product):
        raise InputTypeError(
            f"decode_tcb needs a Product, not {type(product).__name__}",
            rule="input-type",
            spec=SPEC_TCB,
        )
    if product is Product.TURIN:
        return TcbTurin.from_int(value)
    return TcbGenoaMilan.from_int(value)


class SigningKey(_Code):
    """SIGNING_KEY, bits 4:2 of the signer info (snp-firmware-facts §1.6); 2-6 are reserved."""

    VCEK = 0
    VLEK = 1
    NONE = 7  # no key: the report is unsigned, its signature all zero


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerInfo(U64Record):
    """The signer-info u32 at 0x048 (snp-firmware-facts §1.6)."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.signer_info)
    SPEC: ClassVar[str] = "SNP firmware ABI report signer info (snp-firmware-facts §1.6)"

    reserved_31_5: int = 0
    signing_key: int = SigningKey.VCEK
    mask_chip_key: int = 0
    author_key_en: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestPolicy(U64Record):
    """The guest POLICY u64 at 0x008 (snp-firmware-facts §1.4). Bit 17 must be 1."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.guest_policy)
    SPEC: ClassVar[str] = "SNP firmware ABI guest policy (snp-firmware-facts §1.4)"

    reserved_63_26: int = 0
    page_swap_disable: int = 0
    ciphertext_hiding_dram: int = 0
    rapl_dis: int = 0
    mem_aes_256_xts: int = 0
    cxl_allow: int = 0
    single_socket: int = 0
    debug: int = 0
    migrate_ma: int = 0
    reserved_17_17: int = 1
    smt: int = 0
    abi_major: int = 0
    abi_minor: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformInfo(U64Record):
    """The PLATFORM_INFO u64 at 0x040 (snp-firmware-facts §1.5)."""

    FIELDS: ClassVar[tuple[BitField, ...]] = bit_fields(schema.platform_info)
    SPEC: ClassVar[str] = "SNP firmware ABI PLATFORM_INFO (snp-firmware-facts §1.5)"

    reserved_63_8: int = 0
    tio_en: int = 0
    reserved_6_6: int = 0
    alias_check_complete: int = 0
    ciphertext_hiding_dram_en: int = 0
    rapl_dis: int = 0
    ecc_en: int = 0
    tsme_en: int = 0
    smt_en: int = 0


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttestationReport(SchemaRecord):
    """An ATTESTATION_REPORT: every field, reserved gaps and signature padding included.

    Fields are the AMD names in lower case; ``signer_info`` is the u32 at 0x048 that holds
    AUTHOR_KEY_EN, MASK_CHIP_KEY and SIGNING_KEY (see :attr:`signer`). Integer fields are
    ``int``, byte fields ``bytes`` of their exact length; every field defaults to zero. The
    record does not judge versions or reserved bytes (so any 1184 bytes round-trip):
    :func:`check_report` does.

    Raises:
        FieldValueError: an integer out of its field's range, or a value of the wrong type.
        LengthError: a byte field of the wrong length.
    """

    SCHEMA: ClassVar[cs.Struct] = schema.attestation_report
    SPEC: ClassVar[str] = SPEC_REPORT
    WHAT: ClassVar[str] = "an attestation report"

    version: int = 0
    guest_svn: int = 0
    policy: int = 0
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = 0
    current_tcb: int = 0
    platform_info: int = 0
    signer_info: int = 0
    reserved_0x4c: bytes = bytes(4)
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = bytes(32)
    reported_tcb: int = 0
    cpuid_fam_id: int = 0
    cpuid_mod_id: int = 0
    cpuid_step: int = 0
    reserved_0x18b: bytes = bytes(21)
    chip_id: bytes = bytes(64)
    committed_tcb: int = 0
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    reserved_0x1eb: bytes = bytes(1)
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    reserved_0x1ef: bytes = bytes(1)
    launch_tcb: int = 0
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    reserved_0x208: bytes = bytes(152)
    signature_r: bytes = bytes(72)
    signature_s: bytes = bytes(72)
    reserved_0x330: bytes = bytes(368)

    def replace(self, **values: object) -> Self:
        """A copy with ``values`` set (each one checked).

        Raises:
            UnknownFieldError: not a field of the report (a ``TypeError`` from dataclasses is
                turned into this).
        """
        unknown = set(values) - _REPORT_NAMES
        if unknown:
            raise UnknownFieldError(
                f"the attestation report has no field {sorted(unknown)[0]!r}",
                rule="unknown-field",
                spec=SPEC_REPORT,
            )
        merged: dict[str, Any] = {**self.fields(), **values}
        return type(self)(**merged)

    @property
    def signer(self) -> SignerInfo:
        """``signer_info`` split into AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY (§1.6)."""
        return SignerInfo.decode(self.signer_info)

    @property
    def signing_key(self) -> SigningKey | int:
        """SIGNING_KEY: :class:`SigningKey`, or the raw value when reserved (2-6)."""
        return SigningKey.from_int(self.signer.signing_key)

    @property
    def policy_bits(self) -> GuestPolicy:
        """``policy`` split into its bits (§1.4)."""
        return GuestPolicy.decode(self.policy)

    @property
    def platform_info_bits(self) -> PlatformInfo:
        """``platform_info`` split into its bits (§1.5)."""
        return PlatformInfo.decode(self.platform_info)

    @property
    def product(self) -> Product | None:
        """The product the CPUID fields name (v3+ reports), else ``None`` (§1.7)."""
        if self.version < _VERSION_CPUID:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def signature(self) -> bytes:
        """The 0x200-byte SIGNATURE area: R, S and the reserved bytes."""
        return self.signature_r + self.signature_s + self.reserved_0x330

    def tcb(self, name: str, product: Product | None = None) -> TcbGenoaMilan | TcbTurin:
        """The TCB field ``name`` (``current_tcb``, ``reported_tcb``, ``committed_tcb``,
        ``launch_tcb``) in the layout of ``product``, by default the one the report names.

        Raises:
            UnknownFieldError: ``name`` is not one of the four TCB fields.
            FieldValueError: no ``product`` given and the report names none (a v2 report, or
                CPUID fields that name no product): the layout is unknown.
        """
        if name not in _TCB_FIELDS:
            raise UnknownFieldError(
                f"{name!r} is not a TCB field ({', '.join(sorted(_TCB_FIELDS))})",
                rule="unknown-field",
                spec=SPEC_TCB,
            )
        product = product if product is not None else self.product
        if product is None:
            raise FieldValueError(
                "the report names no product (v2, or unknown CPUID): pass product= to pick "
                "the TCB layout",
                rule="tcb-layout",
                spec=SPEC_TCB,
                field=name,
            )
        value: int = getattr(self, name)
        return decode_tcb(value, product)


_REPORT_NAMES: Final = frozenset(f.name for f in AttestationReport.FIELDS)
_TCB_FIELDS: Final = frozenset({"current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"})
_REPORT_OFFSET: Final = {f.name: f.offset for f in AttestationReport.FIELDS}


def _require_report(report: object, caller: str) -> None:
    if not isinstance(report, AttestationReport):
        raise InputTypeError(
            f"{caller} needs an AttestationReport, not {type(report).__name__}",
            rule="input-type",
            spec=SPEC_REPORT,
        )


def _report_bytes(data: object) -> bytes:
    """The 1184 bytes of ``data`` (an :class:`AttestationReport` or a byte buffer)."""
    if isinstance(data, AttestationReport):
        return data.to_bytes()
    raw = byte_string(data, what="an attestation report", spec=SPEC_REPORT)
    if len(raw) != ATTESTATION_REPORT_SIZE:
        raise LengthError(
            f"an attestation report is {ATTESTATION_REPORT_SIZE} bytes, got {len(raw)}",
            rule="report-length",
            spec=SPEC_REPORT,
        )
    return raw


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
    raw = _report_bytes(data)
    report = AttestationReport.from_bytes(raw, backend=backend)
    if strict:
        for v in _violations(report):
            if v.severity is Severity.ERROR:
                raise FieldValueError(v.message, rule=v.code, spec=v.spec, offset=v.offset)
    return report


def build_report(report: AttestationReport, *, backend: Backend = "struct") -> bytes:
    """The exact 1184 bytes of ``report``.

    Raises:
        InputTypeError: ``report`` is not an :class:`AttestationReport`.
    """
    _require_report(report, "build_report")
    return report.to_bytes(backend=backend)


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
        return _violations(data)
    try:
        raw = _report_bytes(data)
    except LengthError as e:
        return [
            Violation(
                code=e.rule, severity=Severity.ERROR, offset=None, message=e.message, spec=e.spec
            )
        ]
    return _violations(AttestationReport.from_bytes(raw))


def _violations(r: AttestationReport) -> list[Violation]:
    err, warn = Severity.ERROR, Severity.WARNING
    out: list[Violation] = []

    def add(code: str, severity: Severity, field: str, message: str, spec: str) -> None:
        out.append(
            Violation(
                code=code,
                severity=severity,
                offset=_REPORT_OFFSET[field],
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
    if r.version < _VERSION_CPUID:
        reserved += [f for f in AttestationReport.FIELDS if f.name.startswith("cpuid_")]
    if r.version < _VERSION_MIT:
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
    if r.version >= _VERSION_CPUID and r.product is None:
        add(
            "unknown-product",
            err,
            "cpuid_fam_id",
            f"CPUID family {r.cpuid_fam_id:#x} model {r.cpuid_mod_id:#x} names no product",
            SPEC_CPUID,
        )
    for name in ("signature_r", "signature_s"):
        if any(getattr(r, name)[_P384_SCALAR_BYTES:]):
            out.append(
                Violation(
                    code="signature-padding",
                    severity=err,
                    offset=_REPORT_OFFSET[name] + _P384_SCALAR_BYTES,
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


# ---------------------------------------------------------------------------------------------
# Signature
# ---------------------------------------------------------------------------------------------


def signed_bytes(report: bytes | bytearray | memoryview | AttestationReport) -> bytes:
    """The bytes the signature covers: report[0x000 .. 0x29F] (672 bytes, §1.2).

    Raises:
        InputTypeError: ``report`` is neither a byte buffer nor a report.
        LengthError: ``report`` is not 1184 bytes.
    """
    return _report_bytes(report)[:SIGNED_SIZE]


def encode_signature(r: int, s: int) -> bytes:
    """The 0x200-byte SIGNATURE area for ECDSA P-384 ``(r, s)``: each a 72-byte little-endian
    slot (48 significant bytes, 24 zero), then 368 zero bytes (§1.1, §1.2).

    Raises:
        InputTypeError: ``r`` or ``s`` is not an int.
        FieldValueError: ``r`` or ``s`` is negative or does not fit in 48 bytes.
    """
    r = check_int(r, _P384_LIMIT - 1, "signature r", SPEC_SIGNATURE)
    s = check_int(s, _P384_LIMIT - 1, "signature s", SPEC_SIGNATURE)
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
        if any(raw[start + _P384_SCALAR_BYTES : start + slot]):
            raise FieldValueError(
                f"the top 24 bytes of {name} must be zero",
                rule="signature-padding",
                spec=SPEC_SIGNATURE,
                field=name,
                offset=start + _P384_SCALAR_BYTES,
            )
        out.append(int.from_bytes(raw[start : start + _P384_SCALAR_BYTES], "little"))
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


def _ecdsa(deterministic: bool) -> ec.ECDSA:
    if deterministic:
        # RFC 6979 nonces: cryptography >= 44 with OpenSSL >= 3.2.
        return ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    return ec.ECDSA(hashes.SHA384())


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
    raw = _report_bytes(report)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise _not_ec_key(private_key, "sign_report")
    _check_curve(private_key.curve, "sign_report")
    der = private_key.sign(raw[:SIGNED_SIZE], _ecdsa(deterministic))
    return raw[:SIGNED_SIZE] + signature_from_der(der)


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
    raw = _report_bytes(report)
    key = public_key.public_key() if isinstance(public_key, x509.Certificate) else public_key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _not_ec_key(key, "verify_report")
    _check_curve(key.curve, "verify_report")
    algo = int.from_bytes(raw[_REPORT_OFFSET["signature_algo"] :][:4], "little")
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        return False
    try:
        der = signature_to_der(raw[SIGNED_SIZE:])
    except FieldValueError:
        return False
    try:
        key.verify(der, raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True
