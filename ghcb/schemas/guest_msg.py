"""SNP guest messages: ``struct snp_guest_msg_hdr`` and the payloads it carries.

Sources: Linux ``arch/x86/include/asm/sev.h`` (packed 96-byte header, ``snp_report_req``,
``snp_msg_report_resp_hdr``, ``snp_derived_key_req``, ``snp_tsc_info_req``/``_resp``;
ghcb-facts.md §8.1, §8.3); AMD's published SNP firmware source ``sev_rmp.h``
(``snp_msg_report_req_t``, MSG_KEY_RSP; snp-firmware-facts.md §3.1, §3.6, §3.7). KVM reads only
``msg_type`` (at 0x34) of a request to decide whether an Extended Guest Request wants
certificates. Offsets are cross-checked against ``spec/tables/guest_msg.toml``.

Departures from the Linux member names: reserved members are ``reserved_0x<offset>``; bytes
0x44..0x47 of ``snp_report_req`` are ``key_sel`` (the firmware's name: bits 1:0 select the
signing key, 31:2 must be zero), which Linux still counts in ``rsvd[28]``. The payloads Linux
has no struct for are named after the firmware's messages: ``msg_report_rsp`` (the 32-byte
``snp_msg_report_resp_hdr`` followed by the report) and ``msg_key_rsp``.
"""

from __future__ import annotations

from typing import Final

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from ghcb.schemas.report import ATTESTATION_REPORT_SIZE

__all__ = [
    "msg_key_rsp",
    "msg_report_rsp",
    "snp_derived_key_req",
    "snp_guest_msg_hdr",
    "snp_msg_report_resp_hdr",
    "snp_report_req",
    "snp_tsc_info_req",
    "snp_tsc_info_resp",
]

snp_guest_msg_hdr = Struct(
    "authtag" / Bytes(32),  # MAX_AUTHTAG_LEN; AES-256-GCM uses the first 16
    "msg_seqno" / Int64ul,
    "reserved_0x28" / Bytes(8),  # rsvd1
    "algo" / Int8ul,  # SNP_AEAD_AES_256_GCM = 1
    "hdr_version" / Int8ul,  # MSG_HDR_VER = 1
    "hdr_sz" / Int16ul,
    "msg_type" / Int8ul,  # enum msg_type (ghcb.codes.MsgType)
    "msg_version" / Int8ul,
    "msg_sz" / Int16ul,
    "reserved_0x38" / Bytes(4),  # rsvd2
    "msg_vmpck" / Int8ul,
    "reserved_0x3d" / Bytes(35),  # rsvd3
)

#: uapi/linux/sev-guest.h SNP_REPORT_USER_DATA_SIZE: the guest's REPORT_DATA (and a
#: configfs-tsm inblob) is exactly 64 bytes.
SNP_REPORT_USER_DATA_SIZE: Final = 64

# MSG_REPORT_REQ (0x60 bytes): Linux struct snp_report_req; key_sel from the firmware's
# snp_msg_report_req_t (snp-firmware-facts §3.6).
snp_report_req = Struct(
    "user_data" / Bytes(SNP_REPORT_USER_DATA_SIZE),  # becomes REPORT_DATA
    "vmpl" / Int32ul,
    "key_sel" / Int32ul,  # bits 1:0 KEY_SEL (0 VLEK else VCEK, 1 VCEK, 2 VLEK), 31:2 MBZ
    "reserved_0x48" / Bytes(24),
)

# The first 32 bytes of MSG_REPORT_RSP: Linux struct snp_msg_report_resp_hdr.
snp_msg_report_resp_hdr = Struct(
    "status" / Int32ul,  # SEV_RET_* (0, 0x16 INVALID_PARAM, 0x27 INVALID_KEY)
    "report_size" / Int32ul,  # 0x4A0, set even when status != 0
    "reserved_0x8" / Bytes(24),
)

# MSG_REPORT_RSP (0x4C0 bytes): the header, then the ATTESTATION_REPORT (snp-firmware-facts §3.6).
msg_report_rsp = Struct(
    "status" / Int32ul,
    "report_size" / Int32ul,
    "reserved_0x8" / Bytes(24),
    "report" / Bytes(ATTESTATION_REPORT_SIZE),
)

# MSG_KEY_REQ (0x20 bytes): Linux struct snp_derived_key_req (snp-firmware-facts §3.7). The
# 0x28-byte FW >= 1.58 variant with LAUNCH_MIT_VECTOR (virtee/sev only) is not modelled.
snp_derived_key_req = Struct(
    "root_key_select" / Int32ul,  # bit 0 ROOT_KEY_SELECT, bits 2:1 KEY_SEL, 31:3 MBZ
    "reserved_0x4" / Bytes(4),
    "guest_field_select" / Int64ul,
    "vmpl" / Int32ul,
    "guest_svn" / Int32ul,
    "tcb_version" / Int64ul,
)

# MSG_KEY_RSP (0x40 bytes): the firmware's layout (snp-firmware-facts §3.7); Linux copies it
# to userspace as snp_derived_key_resp.data[64].
msg_key_rsp = Struct(
    "status" / Int32ul,
    "reserved_0x4" / Bytes(28),
    "derived_key" / Bytes(32),
)

# TSC_INFO_REQ (128 bytes): Linux struct snp_tsc_info_req.
snp_tsc_info_req = Struct(
    "reserved_0x0" / Bytes(128),
)

# TSC_INFO_RSP (128 bytes): Linux struct snp_tsc_info_resp.
snp_tsc_info_resp = Struct(
    "status" / Int32ul,
    "reserved_0x4" / Bytes(4),
    "tsc_scale" / Int64ul,
    "tsc_offset" / Int64ul,
    "tsc_factor" / Int32ul,
    "reserved_0x1c" / Bytes(100),
)
