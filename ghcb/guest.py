"""The guest side: a guest's memory layout and the GHCB pages a Linux guest writes for its
guest requests.

Sources: Linux ``arch/x86/coco/sev/core.c`` (``snp_issue_guest_request``: EXITINFO1 = request
page GPA, EXITINFO2 = response page GPA, RAX = certificate buffer GPA, RBX = its page count for
an Extended Guest Request; the GHCB protocol version in ``protocol_version``), the message
header ``struct snp_guest_msg_hdr`` (ghcb-facts.md §8.1: ``msg_type`` at 0x34).

This is the model's guest, used by the tests, the benchmarks, the fuzz harness and the README;
it grows into the guest driver model (sequence numbers, retries, verification) next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ghcb._fast import flat_fields
from ghcb.codes import ExitCode, MsgType
from ghcb.hypervisor.memory import GuestMemory
from ghcb.page import GHCB_PROTOCOL_MAX, GhcbPage, build_page, parse_page
from ghcb.schemas.guest_msg import snp_guest_msg_hdr
from ghcb.schemas.page import PAGE_SIZE

__all__ = ["DEFAULT_LAYOUT", "Guest", "GuestLayout"]

#: ``offsetof(struct snp_guest_msg_hdr, msg_type)``.
_MSG_TYPE_OFFSET: Final = next(
    f.offset for f in flat_fields(snp_guest_msg_hdr) if f.name == "msg_type"
)


@dataclass(frozen=True, slots=True)
class GuestLayout:
    """Where a guest keeps its GHCB, its request and response pages and its certificate
    buffer (all page-aligned GPAs; ``cert_pages`` pages of certificate buffer)."""

    ghcb: int = 0x1000
    request: int = 0x7F000
    response: int = 0x7E000
    certs: int = 0x80000
    cert_pages: int = 4


DEFAULT_LAYOUT: Final = GuestLayout()


class Guest:
    """A guest's memory with its pages mapped shared, and the requests it writes.

    Args:
        layout: the GPAs.
        msg_type: ``snp_guest_msg_hdr.msg_type`` of the message in the request page.
        fill: byte the certificate buffer (and the guard page) starts filled with, so a test
            can see what the host wrote.
        guard_page: also map the page after the certificate buffer (a write past the buffer
            shows there).
        request_fill: byte the rest of the request page is filled with.
    """

    def __init__(
        self,
        layout: GuestLayout = DEFAULT_LAYOUT,
        *,
        msg_type: int = MsgType.REPORT_REQ,
        fill: int = 0,
        guard_page: bool = False,
        request_fill: int = 0,
    ) -> None:
        self.layout = layout
        self.memory = GuestMemory()
        for gpa in (layout.ghcb, layout.request, layout.response):
            self.memory.map(gpa)
        buffer_pages = layout.cert_pages + int(guard_page)
        if buffer_pages:
            self.memory.map(layout.certs, buffer_pages)
            if fill:
                self.memory.guest_write(layout.certs, bytes([fill]) * buffer_pages * PAGE_SIZE)
        self.write_message(msg_type, fill=request_fill)

    def write_message(self, msg_type: int, *, fill: int = 0) -> None:
        """Put a message of ``msg_type`` in the request page (header byte 0x34)."""
        request = bytearray([fill]) * PAGE_SIZE
        request[_MSG_TYPE_OFFSET] = msg_type
        self.memory.guest_write(self.layout.request, bytes(request))

    def request_page(
        self, code: ExitCode | int = ExitCode.SNP_EXT_GUEST_REQUEST, **fields: int
    ) -> GhcbPage:
        """The GHCB a Linux guest writes for ``code``: SW_EXITINFO1/2 = request/response GPAs,
        and for an Extended Guest Request RAX/RBX = certificate buffer GPA/pages; ``fields``
        override or add values (each marked valid)."""
        values: dict[str, int] = {
            "sw_exit_code": code,
            "sw_exit_info_1": self.layout.request,
            "sw_exit_info_2": self.layout.response,
        }
        if code == ExitCode.SNP_EXT_GUEST_REQUEST:
            values |= {"rax": self.layout.certs, "rbx": self.layout.cert_pages}
        values |= fields
        return GhcbPage.empty().with_fields(**values).replace(protocol_version=GHCB_PROTOCOL_MAX)

    def write_ghcb(self, page: GhcbPage) -> GhcbPage:
        """Write ``page`` into the guest's GHCB; returns it."""
        self.memory.guest_write(self.layout.ghcb, build_page(page))
        return page

    def request(
        self, code: ExitCode | int = ExitCode.SNP_EXT_GUEST_REQUEST, **fields: int
    ) -> GhcbPage:
        """:meth:`request_page` written into the GHCB."""
        return self.write_ghcb(self.request_page(code, **fields))

    def ghcb(self) -> GhcbPage:
        """The GHCB as the guest reads it now."""
        return parse_page(self.memory.guest_read(self.layout.ghcb, PAGE_SIZE))

    def ghcb_bytes(self) -> bytes:
        """The GHCB's bytes as the guest reads them now."""
        return self.memory.guest_read(self.layout.ghcb, PAGE_SIZE)

    def response(self) -> bytes:
        """The response page as the guest reads it."""
        return self.memory.guest_read(self.layout.response, PAGE_SIZE)

    def certs(self, size: int | None = None) -> bytes:
        """The first ``size`` bytes of the certificate buffer (default: all of it)."""
        if size is None:
            size = self.layout.cert_pages * PAGE_SIZE
        return self.memory.guest_read(self.layout.certs, size)
