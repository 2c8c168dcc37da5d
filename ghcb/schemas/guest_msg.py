"""SNP guest messages: ``struct snp_guest_msg_hdr``, the header of a guest request page.

Source: Linux ``arch/x86/include/asm/sev.h`` (packed, 96-byte header; ghcb-facts.md §8.1);
SEV-SNP firmware ABI "guest messages". KVM reads only ``msg_type`` (at 0x34) of a request to
decide whether an Extended Guest Request wants certificates.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int64ul, Struct

__all__ = ["snp_guest_msg_hdr"]

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
