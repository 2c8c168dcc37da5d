"""The SEV-SNP ATTESTATION_REPORT (1184 bytes) and the bit fields and TCB layouts inside it.

Source: AMD SEV-SNP firmware ABI "ATTESTATION_REPORT structure", as transcribed in
snp-firmware-facts.md §1 from AMD's published firmware source (``snp_attestation_report_t``,
report version 2), go-sev-guest ``abi.go`` and virtee/sev ``AttestationReport`` (versions 3 and
5), and checked against three real reports (§5.1). Linux does not define the report (only its
size reaches userspace). Field names are the AMD names in lower case; reserved gaps are
``reserved_0x<offset>``. Offsets are cross-checked against ``spec/tables/report.toml``.

One schema covers every version: the bytes a newer version names (CPUID_FAM_ID/MOD_ID/STEP
from v3, the mitigation vectors from v5) are reserved, must-be-zero bytes in older ones.
"""

from __future__ import annotations

from construct import BitsInteger, BitStruct, Bytes, ByteSwapped, Int8ul, Int32ul, Int64ul, Struct

__all__ = [
    "ATTESTATION_REPORT_SIZE",
    "ECDSA_P384_SCALAR_SIZE",
    "SIGNATURE_SIZE",
    "SIGNED_SIZE",
    "attestation_report",
    "guest_policy",
    "platform_info",
    "signer_info",
    "tcb_version_genoa_milan",
    "tcb_version_turin",
]

#: ``ecc_scalar_t`` (AMD firmware source): a 72-byte little-endian scalar; P-384 uses the low 48.
ECDSA_P384_SCALAR_SIZE = 72

# TCB_VERSION, Milan and Genoa (snp-firmware-facts §1.3: AMD firmware ``snp_tcb_version_t``,
# Linux ``..._genoa_milan``): bytes 2..5 reserved.
tcb_version_genoa_milan = Struct(
    "boot_loader" / Int8ul,
    "tee" / Int8ul,
    "reserved_0x2" / Bytes(4),
    "snp" / Int8ul,
    "microcode" / Int8ul,
)

# TCB_VERSION, Turin (snp-firmware-facts §1.3: virtee/sev ``from_turin_bytes``, Linux
# ``..._turin``): FMC first, bytes 4..6 reserved.
tcb_version_turin = Struct(
    "fmc" / Int8ul,
    "boot_loader" / Int8ul,
    "tee" / Int8ul,
    "snp" / Int8ul,
    "reserved_0x4" / Bytes(3),
    "microcode" / Int8ul,
)

# Guest POLICY, a u64 at 0x008 (snp-firmware-facts §1.4: virtee/sev GuestPolicy, go-sev-guest
# ParseSnpPolicy, Linux SNP_POLICY_MASK_*), MSB first.
guest_policy = ByteSwapped(
    BitStruct(
        "reserved_63_26" / BitsInteger(38),
        "page_swap_disable" / BitsInteger(1),  # FW >= 1.58
        "ciphertext_hiding_dram" / BitsInteger(1),
        "rapl_dis" / BitsInteger(1),
        "mem_aes_256_xts" / BitsInteger(1),
        "cxl_allow" / BitsInteger(1),
        "single_socket" / BitsInteger(1),
        "debug" / BitsInteger(1),
        "migrate_ma" / BitsInteger(1),
        "reserved_17_17" / BitsInteger(1),  # "must be 1" (go-sev-guest rejects 0)
        "smt" / BitsInteger(1),
        "abi_major" / BitsInteger(8),
        "abi_minor" / BitsInteger(8),
    )
)

# PLATFORM_INFO, a u64 at 0x040 (snp-firmware-facts §1.5), MSB first.
platform_info = ByteSwapped(
    BitStruct(
        "reserved_63_8" / BitsInteger(56),
        "tio_en" / BitsInteger(1),  # v5
        "reserved_6_6" / BitsInteger(1),  # meaning unknown (go-sev-guest rejects it)
        "alias_check_complete" / BitsInteger(1),  # v3+
        "ciphertext_hiding_dram_en" / BitsInteger(1),
        "rapl_dis" / BitsInteger(1),
        "ecc_en" / BitsInteger(1),
        "tsme_en" / BitsInteger(1),
        "smt_en" / BitsInteger(1),
    )
)

# The signer-info u32 at 0x048 (snp-firmware-facts §1.6), MSB first.
signer_info = ByteSwapped(
    BitStruct(
        "reserved_31_5" / BitsInteger(27),
        "signing_key" / BitsInteger(3),  # 0 VCEK, 1 VLEK, 7 none
        "mask_chip_key" / BitsInteger(1),
        "author_key_en" / BitsInteger(1),
    )
)

# ATTESTATION_REPORT (snp-firmware-facts §1.1), little-endian, 0x4A0 bytes.
attestation_report = Struct(
    "version" / Int32ul,
    "guest_svn" / Int32ul,
    "policy" / Int64ul,  # guest_policy
    "family_id" / Bytes(16),
    "image_id" / Bytes(16),
    "vmpl" / Int32ul,
    "signature_algo" / Int32ul,  # 1 = ECDSA P-384 with SHA-384
    "current_tcb" / Int64ul,
    "platform_info" / Int64ul,  # platform_info
    "signer_info" / Int32ul,  # signer_info: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY
    "reserved_0x4c" / Bytes(4),
    "report_data" / Bytes(64),
    "measurement" / Bytes(48),
    "host_data" / Bytes(32),
    "id_key_digest" / Bytes(48),
    "author_key_digest" / Bytes(48),
    "report_id" / Bytes(32),
    "report_id_ma" / Bytes(32),
    "reported_tcb" / Int64ul,
    "cpuid_fam_id" / Int8ul,  # v3+ (reserved, zero, in v2)
    "cpuid_mod_id" / Int8ul,  # v3+
    "cpuid_step" / Int8ul,  # v3+
    "reserved_0x18b" / Bytes(21),
    "chip_id" / Bytes(64),
    "committed_tcb" / Int64ul,
    "current_build" / Int8ul,
    "current_minor" / Int8ul,
    "current_major" / Int8ul,
    "reserved_0x1eb" / Bytes(1),
    "committed_build" / Int8ul,
    "committed_minor" / Int8ul,
    "committed_major" / Int8ul,
    "reserved_0x1ef" / Bytes(1),
    "launch_tcb" / Int64ul,
    "launch_mit_vector" / Int64ul,  # v5 (reserved, zero, in v2/v3)
    "current_mit_vector" / Int64ul,  # v5
    "reserved_0x208" / Bytes(152),
    # SIGNATURE (0x200 bytes): R and S as 72-byte little-endian scalars, then reserved.
    "signature_r" / Bytes(ECDSA_P384_SCALAR_SIZE),
    "signature_s" / Bytes(ECDSA_P384_SCALAR_SIZE),
    "reserved_0x330" / Bytes(368),
)

#: The report's size: 0x4A0 (SNP firmware ABI; MSG_REPORT_RSP.REPORT_SIZE).
ATTESTATION_REPORT_SIZE: int = attestation_report.sizeof()
#: Bytes covered by the signature: [0, 0x2A0), i.e. ``offsetof(report, signature)``
#: (snp-firmware-facts §1.2).
SIGNED_SIZE = 0x2A0
#: The SIGNATURE area at 0x2A0: R, S and reserved bytes.
SIGNATURE_SIZE = ATTESTATION_REPORT_SIZE - SIGNED_SIZE
if (ATTESTATION_REPORT_SIZE, SIGNATURE_SIZE) != (0x4A0, 0x200):  # pragma: no cover
    raise AssertionError("ATTESTATION_REPORT must be 0x4A0 bytes with a 0x200-byte signature")
