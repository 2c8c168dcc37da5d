"""Page State Change (PSC) descriptors: the header, the entry and the whole descriptor.

Sources: Linux ``arch/x86/include/asm/sev-common.h`` (``struct psc_hdr``, ``struct
psc_entry``, ``struct snp_psc_desc``, ``VMGEXIT_PSC_MAX_ENTRY`` / ``VMGEXIT_PSC_MAX_COUNT``),
KVM ``arch/x86/kvm/svm/sev.c`` (``struct psc_buffer``: the header and a flexible array of
entries, read from the GHCB shared buffer); GHCB spec (AMD pub. 56421) "Page State Change";
ghcb-facts.md §7; ``spec/tables/psc.toml``.

``psc_entry`` is one little-endian u64 described MSB first as ``ByteSwapped(BitStruct(...))``
(as the GHCB MSR values are); its reserved bits are ``reserved_63_57``. The header's reserved
u32 is ``reserved_0x4``.
"""

from __future__ import annotations

from construct import (
    Array,
    BitsInteger,
    BitStruct,
    ByteSwapped,
    GreedyRange,
    Int16ul,
    Int32ul,
    Struct,
)

from ghcb.schemas.page import GHCB_SHARED_BUF_SIZE

__all__ = [
    "PSC_ENTRY_SIZE",
    "PSC_HDR_SIZE",
    "PSC_PAGES_2M",
    "PSC_PAGES_4K",
    "VMGEXIT_PSC_MAX_COUNT",
    "VMGEXIT_PSC_MAX_ENTRY",
    "psc_buffer",
    "psc_entry",
    "psc_hdr",
    "snp_psc_desc",
]

#: ``VMGEXIT_PSC_MAX_ENTRY``: entries in the guest's own ``struct snp_psc_desc`` (Linux sizes
#: it for the stack of ``set_pages_state``).
VMGEXIT_PSC_MAX_ENTRY = 64
#: ``VMGEXIT_PSC_MAX_COUNT``: the GHCB-defined maximum, what fits the shared buffer.
VMGEXIT_PSC_MAX_COUNT = 253

# struct psc_hdr { u16 cur_entry; u16 end_entry; u32 reserved; } __packed
psc_hdr = Struct(
    "cur_entry" / Int16ul,
    "end_entry" / Int16ul,
    "reserved_0x4" / Int32ul,
)

# struct psc_entry { u64 cur_page : 12, gfn : 40, operation : 4, pagesize : 1, reserved : 7; }
psc_entry = ByteSwapped(
    BitStruct(
        "reserved_63_57" / BitsInteger(7),
        "pagesize" / BitsInteger(1),  # 0 = 4 KiB, 1 = 2 MiB
        "operation" / BitsInteger(4),  # ghcb.codes.PscOp
        "gfn" / BitsInteger(40),
        "cur_page" / BitsInteger(12),
    )
)

#: Bytes of ``struct psc_hdr`` and of one ``struct psc_entry``.
PSC_HDR_SIZE: int = psc_hdr.sizeof()
PSC_ENTRY_SIZE: int = psc_entry.sizeof()
#: Pages of one entry: ``npages = huge ? 512 : 1`` (sev.c ``snp_begin_psc``).
PSC_PAGES_4K = 1
PSC_PAGES_2M = 512
# The GHCB shared buffer holds exactly the header and VMGEXIT_PSC_MAX_COUNT entries.
assert PSC_HDR_SIZE + VMGEXIT_PSC_MAX_COUNT * PSC_ENTRY_SIZE == GHCB_SHARED_BUF_SIZE

# KVM's view (sev.c struct psc_buffer { struct psc_hdr hdr; struct psc_entry entries[]; }):
# as many entries as the bytes hold.
psc_buffer = Struct(
    "hdr" / psc_hdr,
    "entries" / GreedyRange(psc_entry),
)

# The guest's descriptor (sev-common.h struct snp_psc_desc): VMGEXIT_PSC_MAX_ENTRY entries.
snp_psc_desc = Struct(
    "hdr" / psc_hdr,
    "entries" / Array(VMGEXIT_PSC_MAX_ENTRY, psc_entry),
)
