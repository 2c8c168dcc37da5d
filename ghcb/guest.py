"""The guest side: a guest's memory layout and the GHCB pages a Linux guest writes for its
guest requests.

Sources: Linux ``arch/x86/coco/sev/core.c`` (``snp_issue_guest_request``: EXITINFO1 = request
page GPA, EXITINFO2 = response page GPA, RAX = certificate buffer GPA, RBX = its page count for
an Extended Guest Request; the GHCB protocol version in ``protocol_version``), the message
header ``struct snp_guest_msg_hdr`` (ghcb-facts.md §8.1: ``msg_type`` at 0x34).

:class:`SnpGuestDriver` is Linux's ``sev-guest`` driver (drivers/virt/coco/sev-guest): the
ioctls (``get_report``, ``get_ext_report``, ``request``) and the configfs-tsm report
(``tsm_report``), with the sequence-number, retry and key-wiping rules of
snp-firmware-facts.md §4.1-4.2. The guest verifies what it gets with :mod:`ghcb.verify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ghcb._bytes import byte_string
from ghcb.certs import SEV_FW_BLOB_MAX_SIZE, cert_table_index
from ghcb.codes import Errno, ExitCode, FirmwareStatus, MsgType, VmmError
from ghcb.errors import FieldValueError, GhcbError
from ghcb.guest_msg import (
    HDR_SIZE,
    KeyReq,
    MsgHeader,
    ReportReq,
    ReportRsp,
    advance_counter,
    check_response_header,
    open_message,
    request_seqno,
    seal_message,
)
from ghcb.hypervisor.kvm_abi import MSG_TYPE_OFFSET, guest_error
from ghcb.hypervisor.memory import GuestMemory
from ghcb.page import GHCB_PROTOCOL_MAX, GhcbPage, build_page, parse_page
from ghcb.schemas.guest_msg import SNP_REPORT_USER_DATA_SIZE, snp_msg_report_resp_hdr
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_LAYOUT",
    "TSM_PRIVLEVEL_MAX",
    "Guest",
    "GuestAnswer",
    "GuestLayout",
    "GuestRequestError",
    "SnpGuestDriver",
    "TsmReport",
]


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
        request[MSG_TYPE_OFFSET] = msg_type
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


# -- the guest driver (Linux sev-guest) -----------------------------------------------------------
#: Linux sev-guest: "SNP_REQ_RETRY_DELAY (2*HZ)" and "SNP_REQ_MAX_RETRY_DURATION (60*HZ)".
RETRY_DELAY: Final = 2.0
MAX_RETRY_DURATION: Final = 60.0
_SPEC_DRIVER: Final = "Linux drivers/virt/coco/sev-guest + arch/x86/coco/sev/core.c"
_U32_MASK: Final = 0xFFFFFFFF
#: include/linux/tsm.h "TSM_PRIVLEVEL_MAX 3": the highest privlevel configfs-tsm accepts.
TSM_PRIVLEVEL_MAX: Final = 3
#: sev-guest ``sev_report_new``: "const u32 report_size = SZ_4K" (header + report must fit).
_TSM_REPORT_BUFFER: Final = PAGE_SIZE
#: ``sizeof(struct snp_msg_report_resp_hdr)``: the outblob starts after it.
REPORT_RSP_HEADER_SIZE: Final = snp_msg_report_resp_hdr.sizeof()


class GuestRequestError(GhcbError):
    """A guest request failed as the Linux driver reports it: ``errno`` (EIO, ETIMEDOUT,
    EINVAL, ENOTTY), the ``exit_info_2`` it saw and, after INVALID_LEN, the ``npages`` the
    host asked for."""

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        errno: int,
        exit_info_2: int = 0,
        npages: int | None = None,
    ) -> None:
        super().__init__(message, rule=rule, spec=_SPEC_DRIVER)
        self.errno = errno
        self.exit_info_2 = exit_info_2
        self.npages = npages


@dataclass(frozen=True, slots=True)
class TsmReport:
    """What configfs-tsm shows after a report (Documentation/ABI/testing/configfs-tsm-report):
    ``outblob`` (the report's REPORT_SIZE bytes), ``auxblob`` (the certificate table up to its
    largest offset + length, None when that is 0), the ``privlevel`` asked for, the
    ``provider`` (``sev_guest``) and the driver's rate-limited warnings, in order."""

    outblob: bytes
    auxblob: bytes | None
    privlevel: int
    provider: str = "sev_guest"
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GuestAnswer:
    """A guest request the firmware answered: the response header and decrypted payload, the
    certificate buffer's bytes (extended requests) and how many BUSY retries it took."""

    header: MsgHeader
    payload: bytes
    certs: bytes = b""
    busy_retries: int = 0


class SnpGuestDriver:
    """The guest side of SNP guest requests, as Linux's ``sev-guest`` driver does them.

    Args:
        guest: the guest's memory and layout (:class:`Guest`).
        vmgexit: performs one VMGEXIT and returns once the guest runs again (e.g.
            ``lambda: vmm.run(vcpu)``).
        vmpck: the 32-byte VMPCK (secrets page) the driver uses.
        vmpck_id: its index, 0-3 (``msg_vmpck``).
        counter: the secrets page's ``msg_seqno`` counter for this VMPCK.
        clock, sleep: injected time for the BUSY retry loop.

    Rules (``__handle_guest_request`` / ``snp_issue_guest_request``):

    * EXITINFO1 != 0 → the VMGEXIT itself failed: -EIO.
    * EXITINFO2 0 → the firmware answered; BUSY → the same message again every 2 s up to
      60 s, then -ETIMEDOUT; INVALID_LEN on an extended request → RBX holds the pages the
      host wants: the *same* message is re-issued as a plain request (its sequence number is
      used up, no IV is reused), then the request fails with -EIO, ``exit_info_2`` =
      INVALID_LEN and ``npages``; anything else → -EIO.
    * The counter advances by 2 after every request that reached the host (the firmware
      advanced its own). Any failure but INVALID_LEN disables the VMPCK ("snp_disable_vmpck":
      the key is wiped); so does a response that does not verify. Later requests fail
      -ENOTTY.
    """

    def __init__(
        self,
        guest: Guest,
        vmgexit: Callable[[], object],
        vmpck: bytes,
        *,
        vmpck_id: int = 0,
        counter: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(guest, Guest) or not callable(vmgexit):
            raise FieldValueError(
                "SnpGuestDriver(guest, vmgexit, vmpck) needs a Guest and a callable",
                rule="input-type",
                spec=_SPEC_DRIVER,
            )
        self.guest = guest
        self.vmgexit = vmgexit
        self.vmpck: bytes | None = byte_string(vmpck, what="a VMPCK", spec=_SPEC_DRIVER)
        self.vmpck_id = vmpck_id
        self.counter = counter
        self.clock = clock
        self.sleep = sleep

    @property
    def vmpck_disabled(self) -> bool:
        """Whether a failure wiped the key (every later request fails -ENOTTY)."""
        return self.vmpck is None

    def get_report(self, user_data: bytes = bytes(64), *, vmpl: int = 0) -> ReportRsp:
        """SNP_GET_REPORT: a plain guest request for MSG_REPORT_REQ."""
        answer = self.request(ReportReq(user_data=_user_data(user_data), vmpl=vmpl))
        return _report_rsp(answer.payload)

    def get_ext_report(
        self, user_data: bytes = bytes(64), *, pages: int, vmpl: int = 0
    ) -> tuple[ReportRsp, bytes]:
        """SNP_GET_EXT_REPORT with a certificate buffer of ``pages`` pages: the response and
        the buffer's bytes (the certificate table the host wrote)."""
        answer = self.request(
            ReportReq(user_data=_user_data(user_data), vmpl=vmpl), extended=True, pages=pages
        )
        return _report_rsp(answer.payload), answer.certs

    def tsm_report(self, inblob: bytes, *, privlevel: int | None = None) -> TsmReport:
        """A configfs-tsm report (sev-guest ``sev_report_new``): an extended request with
        REPORT_DATA = ``inblob`` at VMPL ``privlevel`` and a 16 KiB certificate buffer, no
        resize retry.

        Rules: ``inblob`` must be exactly 64 bytes, else -EINVAL; a ``privlevel`` written
        must lie in [privlevel_floor = ``vmpck_id``, TSM_PRIVLEVEL_MAX], else -EINVAL (tsm.c
        ``tsm_report_privlevel_store`` checks on the write); ``None`` is a report whose
        privlevel was never written: the kzalloc'd 0 is sent, unchecked. A failed request
        fails as the ioctl does; report STATUS INVALID_PARAM or INVALID_KEY → -EINVAL, any
        other non-zero → -ENXIO; REPORT_SIZE + 32 > 4096 → -ENOMEM. The outblob is REPORT_SIZE
        bytes after the 32-byte header of the zeroed 4 KiB buffer the response was copied to.
        The auxblob's size is the largest ``offset + length`` (u32 arithmetic, as the C code)
        over the entries before the first all-zero one (at most 16384 / 24 entries), truncated
        to 16 KiB with a warning.

        Raises:
            GuestRequestError: the rules above (``errno`` as Linux returns it).
        """
        blob = _user_data(inblob) if isinstance(inblob, bytes | bytearray | memoryview) else None
        if blob is None or len(blob) != SNP_REPORT_USER_DATA_SIZE:
            raise GuestRequestError(
                f"inblob must be {SNP_REPORT_USER_DATA_SIZE} bytes",
                rule="tsm-inblob",
                errno=Errno.EINVAL,
            )
        if privlevel is None:
            privlevel = 0  # never written: "struct tsm_report" is kzalloc'd
        elif type(privlevel) is not int or not self.vmpck_id <= privlevel <= TSM_PRIVLEVEL_MAX:
            raise GuestRequestError(
                f"privlevel must be {self.vmpck_id}..{TSM_PRIVLEVEL_MAX}",
                rule="tsm-privlevel",
                errno=Errno.EINVAL,
            )
        pages = SEV_FW_BLOB_MAX_SIZE // PAGE_SIZE
        answer = self.request(ReportReq(user_data=blob, vmpl=privlevel), extended=True, pages=pages)
        # "buf = kvzalloc(report_size + ext_size)": the payload lands in a zeroed 4 KiB buffer.
        buf = answer.payload[:_TSM_REPORT_BUFFER].ljust(_TSM_REPORT_BUFFER, b"\0")
        rsp, table = _report_rsp(buf), answer.certs
        if rsp.status in (FirmwareStatus.INVALID_PARAM, FirmwareStatus.INVALID_KEY):
            raise GuestRequestError(
                f"report status {rsp.status:#x}", rule="tsm-status", errno=Errno.EINVAL
            )
        if rsp.status:
            raise GuestRequestError(
                f"report status {rsp.status:#x}", rule="tsm-status", errno=Errno.ENXIO
            )
        if rsp.report_size + REPORT_RSP_HEADER_SIZE > _TSM_REPORT_BUFFER:
            raise GuestRequestError(
                f"REPORT_SIZE {rsp.report_size:#x} does not fit",
                rule="tsm-report-size",
                errno=Errno.ENOMEM,
            )
        outblob = buf[REPORT_RSP_HEADER_SIZE : REPORT_RSP_HEADER_SIZE + rsp.report_size]
        size, slots = _tsm_extent(table)
        warnings: list[str] = []
        if not size and slots:
            warnings.append("certificate slots conveyed without size")
        if size > len(table):
            warnings.append("certificate data truncated")
            size = len(table)
        return TsmReport(
            outblob, table[:size] if size else None, privlevel, warnings=tuple(warnings)
        )

    def request(
        self, payload: ReportReq | KeyReq, *, extended: bool = False, pages: int = 0
    ) -> GuestAnswer:
        """Send one message and return the firmware's answer.

        Raises:
            GuestRequestError: the request failed (see the class rules).
        """
        key = self.vmpck
        if key is None:
            raise GuestRequestError(
                "the VMPCK is disabled", rule="vmpck-disabled", errno=Errno.ENOTTY
            )
        layout = self.guest.layout
        if extended and not 0 <= pages <= layout.cert_pages:
            raise FieldValueError(
                f"the guest has {layout.cert_pages} certificate pages, not {pages}",
                rule="cert-pages",
                spec=_SPEC_DRIVER,
            )
        seqno = request_seqno(self.counter)
        msg_type = payload.MSG_TYPE
        page = seal_message(
            key, msg_type=msg_type, seqno=seqno, vmpck=self.vmpck_id, payload=payload
        )
        memory = self.guest.memory
        memory.guest_write(layout.request, page)
        if extended and pages:
            memory.guest_write(layout.certs, bytes(pages * PAGE_SIZE))  # zero-filled buffer
        errno, info2, busy = self._issue(extended, pages)
        self.counter = advance_counter(self.counter)  # "snp_inc_msg_seqno", whatever happened
        if errno:
            raise self._failed(errno, info2)
        response = memory.guest_read(layout.response, PAGE_SIZE)
        try:
            header, plain = open_message(key, response)
            check_response_header(MsgHeader.from_bytes(page[:HDR_SIZE]), header)
        except GhcbError as e:
            self.vmpck = None
            raise GuestRequestError(
                f"the response does not verify: {e.message}",
                rule="bad-response",
                errno=Errno.EBADMSG,
            ) from e
        certs = memory.guest_read(layout.certs, pages * PAGE_SIZE) if extended and pages else b""
        return GuestAnswer(header, plain, certs, busy)

    def _issue(self, extended: bool, pages: int) -> tuple[int, int, int]:
        """The VMGEXIT loop: ``(errno, exit_info_2, busy retries)``."""
        layout = self.guest.layout
        start = self.clock()
        busy = 0
        override: int | None = None  # the INVALID_LEN page count, once re-issued as plain
        while True:
            code = ExitCode.SNP_EXT_GUEST_REQUEST if extended else ExitCode.SNP_GUEST_REQUEST
            fields = {"rax": layout.certs if pages else 0, "rbx": pages} if extended else {}
            self.guest.request(code, **fields)
            self.vmgexit()
            ghcb = self.guest.ghcb()
            info1, info2 = ghcb.sw_exit_info_1, ghcb.sw_exit_info_2
            if info1 & _U32_MASK:  # sev_es_ghcb_hv_call: not "no action" → VMM error
                return Errno.EIO, info2, busy
            if info2 == guest_error(VmmError.INVALID_LEN, 0) and extended:
                # "Number of expected pages are returned in RBX"; re-issue as a plain request
                override, extended = ghcb.rbx, False
                continue
            if info2 == guest_error(VmmError.BUSY, 0):
                if self.clock() - start >= MAX_RETRY_DURATION:
                    return Errno.ETIMEDOUT, info2, busy
                busy += 1
                self.sleep(RETRY_DELAY)
                continue
            if override is not None:
                self._npages = override
                return Errno.EIO, guest_error(VmmError.INVALID_LEN, 0), busy
            return (Errno.EIO if info2 else 0), info2, busy

    def _failed(self, errno: int, info2: int) -> GuestRequestError:
        if errno == Errno.EIO and info2 == guest_error(VmmError.INVALID_LEN, 0):
            npages = self._npages
            return GuestRequestError(
                f"the certificate buffer is too small: the host wants {npages} pages",
                rule="invalid-len",
                errno=errno,
                exit_info_2=info2,
                npages=npages,
            )
        self.vmpck = None  # "snp_disable_vmpck": any other failure wipes the key
        return GuestRequestError(
            f"guest request failed: errno {errno}, exit_info_2 {info2:#x}",
            rule="request-failed",
            errno=errno,
            exit_info_2=info2,
        )

    _npages: int = 0


def _user_data(user_data: object) -> bytes:
    return byte_string(user_data, what="REPORT_DATA", spec=_SPEC_DRIVER)


def _report_rsp(payload: bytes) -> ReportRsp:
    """MSG_REPORT_RSP from the decrypted payload as the driver hands it on: the payload in a
    zeroed buffer ("kzalloc(resp_len)"), so a short MSG_SIZE reads as zeros, not an error."""
    return ReportRsp.from_bytes(payload[: ReportRsp.SIZE].ljust(ReportRsp.SIZE, b"\0"))


def _tsm_extent(table: bytes) -> tuple[int, int]:
    """``sev_report_new``'s walk: the largest ``offset + length`` (u32, as the C sum wraps)
    over the entries before the first all-zero one, and how many entries it saw."""
    heads = cert_table_index(table)
    size = 0
    for head in heads:
        size = max(size, (head.offset + head.length) & _U32_MASK)
    return size, len(heads)
