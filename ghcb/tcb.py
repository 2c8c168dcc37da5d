"""EPYC products and the TCB_VERSION: one product type, one TCB model with a layout per product.

Sources: snp-firmware-facts.md §1.3 (TCB_VERSION: the Milan/Genoa and the Turin byte layouts),
§1.7 (the product a report's CPUID fields name), §2.4 (the SPLs a VCEK/VLEK carries). The byte
layouts are the schemas :data:`ghcb.schemas.report.tcb_version_genoa_milan` and
:data:`~ghcb.schemas.report.tcb_version_turin`, and nothing else here knows an offset.

* :class:`Product` names a product line as the AMD KDS does; :data:`PRODUCT_CPUID` and
  :func:`product_from_cpuid` tie it to a report's CPUID fields.
* :class:`TcbGenoaMilan` / :class:`TcbTurin` are the u64 as it lies in a report, in one layout,
  reserved bytes kept (:func:`decode_tcb`, :data:`TCB_LAYOUTS`).
* :class:`Tcb` is the TCB by component, independent of the layout (what a certificate's SPLs
  carry); :meth:`Tcb.to_bytes` / :meth:`Tcb.from_bytes` go through the product's layout record,
  refusing what a layout cannot hold (FMC on Milan/Genoa, a reserved byte set).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final, Self

from ghcb._bytes import byte_string
from ghcb._fast import check_int
from ghcb._record import SchemaRecord
from ghcb.errors import FieldValueError, InputTypeError
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.schemas import report as schema

if TYPE_CHECKING:
    from collections.abc import Mapping

    import construct as cs

__all__ = [
    "PRODUCTS",
    "PRODUCT_CPUID",
    "TCB_COMPONENTS",
    "TCB_LAYOUTS",
    "Product",
    "Tcb",
    "TcbGenoaMilan",
    "TcbTurin",
    "cpuid_fms",
    "decode_tcb",
    "product_from_cpuid",
    "require_product",
]

SPEC_TCB: Final = "SNP firmware ABI TCB_VERSION (snp-firmware-facts §1.3)"
SPEC_CPUID: Final = "report CPUID_FAM_ID/MOD_ID (snp-firmware-facts §1.7)"
SPEC_PRODUCT: Final = "EPYC product lines (snp-firmware-facts §1.7, §2.1)"


# ---------------------------------------------------------------------------------------------
# Products
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


#: Every product, in KDS order (facts §1.7, §2.1).
PRODUCTS: Final[tuple[Product, ...]] = tuple(Product)


def require_product(product: object, *, spec: str = SPEC_PRODUCT) -> Product:
    """``product`` as a :class:`Product` (a member, or a str equal to a member's value).

    Raises:
        HypervisorUsageError: anything else (``rule="product"``).
    """
    if isinstance(product, str):
        try:
            return Product(product)
        except ValueError:
            pass
    raise HypervisorUsageError(
        f"product must be one of {', '.join(PRODUCTS)}, not {product!r}",
        rule="product",
        spec=spec,
    )


# ---------------------------------------------------------------------------------------------
# TCB_VERSION layouts (one record per schema)
# ---------------------------------------------------------------------------------------------


class _TcbRecord(SchemaRecord):
    """A TCB_VERSION in one product's byte layout (a u64 in the report)."""

    SPEC: ClassVar[str] = SPEC_TCB
    WHAT: ClassVar[str] = "a TCB_VERSION"

    @classmethod
    def components(cls) -> tuple[str, ...]:
        """The TCB components this layout has (its non-reserved fields), in layout order."""
        return tuple(f.name for f in cls.FIELDS if f.kind == "int")

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


#: The TCB_VERSION layout of each product (facts §1.3).
TCB_LAYOUTS: Final[Mapping[Product, type[TcbGenoaMilan | TcbTurin]]] = MappingProxyType(
    {Product.MILAN: TcbGenoaMilan, Product.GENOA: TcbGenoaMilan, Product.TURIN: TcbTurin}
)


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
    return TCB_LAYOUTS[product].from_int(value)


# ---------------------------------------------------------------------------------------------
# The TCB by component
# ---------------------------------------------------------------------------------------------

#: The TCB components, named as the layouts' fields (each one byte).
TCB_COMPONENTS: Final = ("boot_loader", "tee", "snp", "microcode", "fmc")


@dataclass(frozen=True, slots=True)
class Tcb:
    """A TCB_VERSION by component: the SPLs a VCEK/VLEK carries (facts §1.3, §2.4).

    Components are named as the TCB_VERSION layouts' fields; each is 8-bit. ``fmc`` exists on
    Turin only; on Milan and Genoa it must be 0. The reserved bytes are not represented: the
    firmware refuses them set, and the certificates' reserved SPLs are 0. The bytes of a
    product come from its layout record (:data:`TCB_LAYOUTS`).
    """

    boot_loader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int = 0

    def __post_init__(self) -> None:
        for name in TCB_COMPONENTS:
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

    def layout(self, product: Product | str) -> TcbGenoaMilan | TcbTurin:
        """The TCB_VERSION record in ``product``'s layout (reserved bytes zero).

        Raises:
            HypervisorUsageError: unknown product, or ``fmc`` set on a product without it.
        """
        record = TCB_LAYOUTS[require_product(product, spec=SPEC_TCB)]
        names = record.components()
        if self.fmc and "fmc" not in names:
            raise HypervisorUsageError(
                f"{product} has no FMC component in its TCB: fmc must be 0, not {self.fmc}",
                rule="tcb-fmc",
                spec=SPEC_TCB,
                field="tcb.fmc",
            )
        return record(**{name: getattr(self, name) for name in names})

    def to_bytes(self, product: Product | str) -> bytes:
        """The 8-byte TCB_VERSION in ``product``'s layout (see :meth:`layout`)."""
        return self.layout(product).to_bytes()

    def to_int(self, product: Product | str) -> int:
        """The TCB_VERSION as the report's little-endian u64 (see :meth:`layout`)."""
        return self.layout(product).to_int()

    @classmethod
    def from_int(cls, product: Product | str, value: int) -> Self:
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
    def from_bytes(cls, product: Product | str, raw: bytes | bytearray | memoryview) -> Self:
        """The components of an 8-byte TCB_VERSION in ``product``'s layout.

        Raises:
            HypervisorUsageError: unknown product, not 8 bytes, or a reserved byte set (the
                firmware rejects those; facts §1.3).
        """
        record = TCB_LAYOUTS[require_product(product, spec=SPEC_TCB)]
        data = byte_string(raw, what="a TCB_VERSION", spec=SPEC_TCB)
        if len(data) != record.SIZE:
            raise HypervisorUsageError(
                f"a TCB_VERSION is {record.SIZE} bytes, not {len(data)}",
                rule="tcb-length",
                spec=SPEC_TCB,
            )
        return cls.from_layout(record.from_bytes(data), product=product)

    @classmethod
    def from_layout(
        cls, record: TcbGenoaMilan | TcbTurin, *, product: Product | str | None = None
    ) -> Self:
        """The components of a TCB_VERSION record (``product`` only names it in errors).

        Raises:
            HypervisorUsageError: a reserved byte is set (``rule="tcb-reserved"``).
        """
        for f in record.FIELDS:
            if f.kind == "bytes":
                value: bytes = getattr(record, f.name)
                set_at = next((i for i, b in enumerate(value) if b), None)
                if set_at is not None:
                    where = product if product is not None else type(record).__name__
                    raise HypervisorUsageError(
                        f"TCB_VERSION byte {f.offset + set_at} is reserved in the {where} "
                        "layout but set",
                        rule="tcb-reserved",
                        spec=SPEC_TCB,
                        offset=f.offset + set_at,
                    )
        return cls(**{name: getattr(record, name) for name in record.components()})
