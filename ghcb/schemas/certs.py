"""The extended guest request's certificate table (GHCB spec §4.1.8.1 "cert_table").

Source: AMD GHCB spec (AMD pub. 56421) §4.1.8.1; Linux ``struct snp_msg_cert_entry``
(``guid_t guid; u32 offset; u32 length;``) in ``drivers/virt/coco/sev-guest``; the same bytes
are configfs-tsm's ``auxblob``. The table is an array of entries ended by an all-zero entry;
offsets count from the start of the table. GUIDs are in RFC-4122 byte order
(``uuid.UUID(bytes=...)``, never ``bytes_le``): see ``spec/tables/certs.toml``.
"""

from __future__ import annotations

from construct import Bytes, Int32ul, RepeatUntil, Struct, obj_

__all__ = ["CERT_ENTRY_SIZE", "cert_table", "snp_msg_cert_entry"]

snp_msg_cert_entry = Struct(
    "guid" / Bytes(16),
    "offset" / Int32ul,
    "length" / Int32ul,
)

#: Size of one entry (and of the terminator): 24 bytes.
CERT_ENTRY_SIZE: int = snp_msg_cert_entry.sizeof()

# Entries up to and including the terminator: Linux stops at an entry whose GUID is null and
# whose offset and length are 0 (an expression, not a lambda, so the schema compiles).
cert_table = RepeatUntil(
    (obj_.guid == bytes(16)) & (obj_.offset == 0) & (obj_.length == 0),  # type: ignore[arg-type]
    snp_msg_cert_entry,
)
