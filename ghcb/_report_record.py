"""The attestation report record and the bit fields inside it (private: import from
:mod:`ghcb.report`).

Layout: AMD SEV-SNP firmware ABI "ATTESTATION_REPORT" (snp-firmware-facts §1.1), the schema
:data:`ghcb.schemas.report.attestation_report`; the bit fields §1.4-§1.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from ghcb._bytes import byte_string
from ghcb._fast import BitField, U64Record, bit_fields
from ghcb._record import SchemaRecord
from ghcb.codes import _Code
from ghcb.errors import FieldValueError, InputTypeError, LengthError, UnknownFieldError
from ghcb.schemas import report as schema
from ghcb.tcb import SPEC_TCB, Product, TcbGenoaMilan, TcbTurin, decode_tcb, product_from_cpuid

if TYPE_CHECKING:
    import construct as cs

__all__ = [
    "ATTESTATION_REPORT_SIZE",
    "KNOWN_VERSIONS",
    "P384_LIMIT",
    "P384_SCALAR_BYTES",
    "REPORT_OFFSET",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "SPEC_REPORT",
    "SPEC_SIGNATURE",
    "VERSION_CPUID",
    "VERSION_MIT",
    "AttestationReport",
    "GuestPolicy",
    "PlatformInfo",
    "SignerInfo",
    "SigningKey",
    "report_bytes",
    "require_report",
]

SPEC_REPORT: Final = "SNP firmware ABI ATTESTATION_REPORT (snp-firmware-facts §1.1)"
SPEC_SIGNATURE: Final = "SNP firmware ABI report signature (snp-firmware-facts §1.2)"

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
VERSION_CPUID: Final = 3  # first version with CPUID_FAM_ID/MOD_ID/STEP
VERSION_MIT: Final = 5  # first version with LAUNCH/CURRENT_MIT_VECTOR
P384_SCALAR_BYTES: Final = 48  # a P-384 scalar; the top 24 bytes of each 72-byte slot are zero
P384_LIMIT: Final = 1 << (8 * P384_SCALAR_BYTES)


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
        if self.version < VERSION_CPUID:
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
REPORT_OFFSET: Final = {f.name: f.offset for f in AttestationReport.FIELDS}


def require_report(report: object, caller: str) -> None:
    if not isinstance(report, AttestationReport):
        raise InputTypeError(
            f"{caller} needs an AttestationReport, not {type(report).__name__}",
            rule="input-type",
            spec=SPEC_REPORT,
        )


def report_bytes(data: object) -> bytes:
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
