"""The 4 KiB GHCB page: Linux ``struct ghcb_save_area`` + ``struct ghcb``.

Source: Linux ``arch/x86/include/asm/svm.h`` (both structs are packed; the kernel's build
assertions pin every ``reserved_0x<offset>`` member), AMD GHCB spec (AMD pub. 56421) "GHCB layout"
"GHCB layout". Offsets are cross-checked against ``spec/tables/page.toml`` by the tests.

The one departure from Linux member names: Linux calls the 1016-byte gap after the save area
``reserved_save``; it is ``reserved_0x408`` here, like every other reserved gap.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

__all__ = [
    "GHCB_SAVE_AREA_SIZE",
    "GHCB_SHARED_BUF_SIZE",
    "GHCB_SIZE",
    "PAGE_SIZE",
    "VALID_BITMAP_SIZE",
    "ghcb",
    "ghcb_save_area",
]

#: x86 4 KiB page (Linux ``PAGE_SIZE``): the GHCB is one page; guest request and certificate
#: buffers are whole pages.
PAGE_SIZE = 4096
#: ``GHCB_SHARED_BUF_SIZE`` in svm.h: the shared buffer spans [0x800, 0xFF0).
GHCB_SHARED_BUF_SIZE = 2032
#: Size of ``valid_bitmap`` (svm.h ``u8 valid_bitmap[16]``: 128 bits).
VALID_BITMAP_SIZE = 16

# struct ghcb_save_area (svm.h): EXPECTED_GHCB_SAVE_AREA_SIZE = 1032.
ghcb_save_area = Struct(
    "reserved_0x0" / Bytes(203),
    "cpl" / Int8ul,
    "reserved_0xcc" / Bytes(116),
    "xss" / Int64ul,
    "reserved_0x148" / Bytes(24),
    "dr7" / Int64ul,
    "reserved_0x168" / Bytes(16),
    "rip" / Int64ul,
    "reserved_0x180" / Bytes(88),
    "rsp" / Int64ul,
    "reserved_0x1e0" / Bytes(24),
    "rax" / Int64ul,
    "reserved_0x200" / Bytes(264),
    "rcx" / Int64ul,
    "rdx" / Int64ul,
    "rbx" / Int64ul,
    "reserved_0x320" / Bytes(8),
    "rbp" / Int64ul,
    "rsi" / Int64ul,
    "rdi" / Int64ul,
    "r8" / Int64ul,
    "r9" / Int64ul,
    "r10" / Int64ul,
    "r11" / Int64ul,
    "r12" / Int64ul,
    "r13" / Int64ul,
    "r14" / Int64ul,
    "r15" / Int64ul,
    "reserved_0x380" / Bytes(16),
    "sw_exit_code" / Int64ul,
    "sw_exit_info_1" / Int64ul,
    "sw_exit_info_2" / Int64ul,
    "sw_scratch" / Int64ul,
    "reserved_0x3b0" / Bytes(56),
    "xcr0" / Int64ul,
    "valid_bitmap" / Bytes(VALID_BITMAP_SIZE),
    "x87_state_gpa" / Int64ul,
)

#: ``EXPECTED_GHCB_SAVE_AREA_SIZE`` in svm.h.
GHCB_SAVE_AREA_SIZE: int = ghcb_save_area.sizeof()

# struct ghcb (svm.h): EXPECTED_GHCB_SIZE = PAGE_SIZE.
ghcb = Struct(
    "save" / ghcb_save_area,
    "reserved_0x408" / Bytes(2048 - GHCB_SAVE_AREA_SIZE),  # svm.h: reserved_save
    "shared_buffer" / Bytes(GHCB_SHARED_BUF_SIZE),
    "reserved_0xff0" / Bytes(10),
    "protocol_version" / Int16ul,
    "ghcb_usage" / Int32ul,
)

#: ``EXPECTED_GHCB_SIZE`` in svm.h: one 4 KiB page.
GHCB_SIZE: int = ghcb.sizeof()
if GHCB_SIZE != PAGE_SIZE:  # pragma: no cover - the svm.h build assertion
    raise AssertionError("struct ghcb must be exactly one page")
