"""SNP guest messages: the header and payload records, AES-256-GCM seal/open, sequence rules.

Sources: Linux ``arch/x86/include/asm/sev.h`` and ``drivers/virt/coco/sev-guest/sev-guest.c``
(ghcb-facts.md §8), AMD's published SNP firmware source ``snp_mcmd_guest_request``
(snp-firmware-facts.md §3.1-§3.7, §4.1-§4.2). Schemas: :mod:`ghcb.schemas.guest_msg`; table:
``spec/tables/guest_msg.toml``.

A guest message is one 4 KiB page: the 96-byte :class:`MsgHeader`, then MSG_SIZE bytes of
AES-256-GCM ciphertext (snp-firmware-facts §3.2):

* key: the 32-byte VMPCK that ``msg_vmpck`` selects (the caller picks it: the guest from its
  secrets page, the firmware from its guest context);
* IV: ``msg_seqno`` as 8 little-endian bytes, then 4 zero bytes;
* AAD: header bytes 0x30..0x5F (from ``algo`` to the end of the header);
* tag: 16 bytes in ``authtag[0:16]``; ``authtag[16:32]`` is unused.

:func:`seal_message` writes such a page; :func:`open_message` checks the header as the
firmware does (in its order, snp-firmware-facts §3.4 steps 8-11) and authenticates and decrypts
the payload. Each refusal is a :class:`GuestMessageError` whose ``status`` is the firmware
status a PSP answers for it. The sequence rules (:func:`request_seqno`,
:func:`response_seqno`, :func:`response_type`, :func:`advance_counter`,
:func:`seqno_accepted`, :func:`check_response_header`) are pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghcb._bytes import byte_string, byte_view
from ghcb._fast import Backend, check_int
from ghcb._msg_payloads import (
    PAYLOADS,
    KeyReq,
    KeyRsp,
    KeySel,
    Payload,
    ReportReq,
    ReportRsp,
    TscInfoReq,
    TscInfoRsp,
)
from ghcb._record import SchemaRecord
from ghcb.codes import FirmwareStatus, MsgType
from ghcb.errors import GhcbError, InputTypeError, LengthError
from ghcb.schemas import guest_msg as schema
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import construct as cs

__all__ = [
    "AAD_OFFSET",
    "AUTHTAG_LEN",
    "HDR_SIZE",
    "IV_LEN",
    "MAX_PAYLOAD",
    "MSG_HDR_VER",
    "MSG_VERSION",
    "PAYLOADS",
    "SNP_AEAD_AES_256_GCM",
    "VMPCK_COUNT",
    "VMPCK_LEN",
    "GuestMessageError",
    "KeyReq",
    "KeyRsp",
    "KeySel",
    "MessageAuthError",
    "MessageHeaderError",
    "MessageSequenceError",
    "MsgHeader",
    "ReportReq",
    "ReportRsp",
    "TscInfoReq",
    "TscInfoRsp",
    "aad",
    "advance_counter",
    "check_header",
    "check_response_header",
    "iv",
    "open_message",
    "parse_payload",
    "request_seqno",
    "response_seqno",
    "response_type",
    "seal_message",
    "seqno_accepted",
]

SPEC_HDR: Final = "Linux asm/sev.h struct snp_guest_msg_hdr (ghcb-facts §8.1)"
SPEC_AEAD: Final = "SNP firmware guest message AEAD (snp-firmware-facts §3.2)"
SPEC_FW: Final = "SNP firmware snp_mcmd_guest_request (snp-firmware-facts §3.4)"
SPEC_LINUX: Final = "Linux sev-guest.c snp_get_msg_seqno / verify_and_dec_payload"

#: ``SNP_AEAD_AES_256_GCM`` (asm/sev.h): ALGO 1; 0 is invalid.
SNP_AEAD_AES_256_GCM: Final = 1
#: ``MSG_HDR_VER`` (asm/sev.h): HDR_VERSION 1.
MSG_HDR_VER: Final = 1
#: HDR_SIZE: ``sizeof(struct snp_guest_msg_hdr)`` = 0x60.
HDR_SIZE: Final = schema.snp_guest_msg_hdr.sizeof()
#: ``AUTHTAG_LEN`` (asm/sev.h): the AES-GCM tag; the header has room for 32 (MAX_AUTHTAG_LEN).
AUTHTAG_LEN: Final = 16
#: The AAD starts at ``algo`` (0x30) and runs to the end of the header (48 bytes).
AAD_OFFSET: Final = 0x30
#: AES-GCM IV length: 12 bytes, the u64 sequence number little-endian then zeros.
IV_LEN: Final = 12
#: Payload room in the page: 4096 - 96 = 4000 (``struct snp_guest_msg`` payload[4000]).
MAX_PAYLOAD: Final = PAGE_SIZE - HDR_SIZE
#: MSG_VERSION: 1 for every message type the firmware source handles (its max per type).
MSG_VERSION: Final = 1
#: VMPCK0..VMPCK3 (secrets page); MSG_VMPCK must be below this.
VMPCK_COUNT: Final = 4
#: A VMPCK is an AES-256 key (32 bytes, secrets page 0x20..0x9F).
VMPCK_LEN: Final = 32
#: Linux refuses a request whose seqno would be >= UINT_MAX (``snp_get_msg_seqno``).
GUEST_SEQNO_LIMIT: Final = 0xFFFFFFFF
#: The firmware refuses a request when its u64 counter is 2^64 - 2 (§3.4 step 12).
FIRMWARE_COUNTER_LIMIT: Final = (1 << 64) - 2
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_MSG_SZ_ALIGN: Final = 16  # firmware: MSG_SIZE non-zero and a multiple of 16 (§3.4 step 8)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class GuestMessageError(GhcbError):
    """A guest message refused by a message rule; ``status`` is the firmware's answer to it.

    Never raised directly: raise the subclass that names the cause.
    """

    status: ClassVar[FirmwareStatus]


class MessageHeaderError(GuestMessageError):
    """A header the firmware refuses before decrypting (ALGO, HDR_VERSION, HDR_SIZE,
    MSG_SIZE, MSG_VMPCK): INVALID_PARAM (snp-firmware-facts §3.4 steps 8-10)."""

    status: ClassVar[FirmwareStatus] = FirmwareStatus.INVALID_PARAM


class MessageAuthError(GuestMessageError):
    """The AES-GCM tag does not authenticate header and payload (a wrong key, a tampered
    byte): BAD_MEASUREMENT, the firmware source's status for a failed decrypt (§3.4 step 11)."""

    status: ClassVar[FirmwareStatus] = FirmwareStatus.BAD_MEASUREMENT


class MessageSequenceError(GuestMessageError):
    """A sequence number, type or version out of sequence: the firmware answers AEAD_OFLOW
    for a request seqno other than counter + 1 (§3.4 step 12); Linux fails a response that
    is not the request's successor with -EBADMSG."""

    status: ClassVar[FirmwareStatus] = FirmwareStatus.AEAD_OFLOW


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MsgHeader(SchemaRecord):
    """``struct snp_guest_msg_hdr`` (96 bytes); ``msg_type`` decodes to :class:`MsgType`."""

    SCHEMA: ClassVar[cs.Struct] = schema.snp_guest_msg_hdr
    SPEC: ClassVar[str] = SPEC_HDR
    WHAT: ClassVar[str] = "a guest message header"
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {"msg_type": MsgType.from_int}

    authtag: bytes = bytes(32)
    msg_seqno: int = 0
    reserved_0x28: bytes = bytes(8)
    algo: int = SNP_AEAD_AES_256_GCM
    hdr_version: int = MSG_HDR_VER
    hdr_sz: int = HDR_SIZE
    msg_type: int = MsgType.INVALID
    msg_version: int = MSG_VERSION
    msg_sz: int = 0
    reserved_0x38: bytes = bytes(4)
    msg_vmpck: int = 0
    reserved_0x3d: bytes = bytes(35)


_HDR_PACK: Final = MsgHeader._STRUCT.pack
_HDR_ZERO_TAG: Final = bytes(32)
_HDR_ZERO_0x28: Final = bytes(8)
_HDR_ZERO_0x38: Final = bytes(4)
_HDR_ZERO_0x3D: Final = bytes(35)


def parse_payload(msg_type: int, data: object, *, backend: Backend = "struct") -> Payload:
    """The payload record of ``msg_type`` decoded from exactly its size of bytes.

    Raises:
        InputTypeError: ``data`` is not bytes-like, or ``msg_type`` not an int.
        FieldValueError: no payload record for ``msg_type`` (``rule="msg-type"``).
        LengthError: ``data`` is not the payload's size.
    """
    kind = MsgType.from_int(check_int(msg_type, 0xFF, "msg_type", SPEC_HDR))
    cls = PAYLOADS.get(kind) if isinstance(kind, MsgType) else None
    if cls is None:
        raise MessageHeaderError(
            f"no payload record for message type {msg_type}",
            rule="msg-type",
            spec=SPEC_HDR,
            field="msg_type",
        )
    return cls.from_bytes(data, backend=backend)


# ---------------------------------------------------------------------------------------------
# AES-256-GCM
# ---------------------------------------------------------------------------------------------


def iv(seqno: int) -> bytes:
    """The 12-byte AES-GCM IV of ``seqno``: 8 little-endian bytes, then 4 zero bytes (§3.2;
    Linux copies ``min(sizeof(iv), sizeof(msg_seqno))`` bytes into a zeroed IV).

    Raises:
        InputTypeError / FieldValueError: ``seqno`` is not a u64.
    """
    seqno = check_int(seqno, _U64, "msg_seqno", SPEC_AEAD)
    return seqno.to_bytes(IV_LEN, "little")


def aad(header: bytes | bytearray | memoryview | MsgHeader) -> bytes:
    """The 48 AAD bytes of a header: bytes 0x30..0x5F, from ``algo`` on (§3.2)."""
    raw = header.to_bytes() if isinstance(header, MsgHeader) else _header_bytes(header)
    return raw[AAD_OFFSET:HDR_SIZE]


def _header_bytes(data: object) -> bytes:
    raw = byte_string(data, what="a guest message header", spec=SPEC_HDR)
    if len(raw) < HDR_SIZE:
        raise LengthError(
            f"a guest message header is {HDR_SIZE} bytes, got {len(raw)}",
            rule="header-length",
            spec=SPEC_HDR,
        )
    return raw[:HDR_SIZE]


# One AESGCM per VMPCK (building one per message costs more than the cipher on a report).
_AEADS: dict[bytes, AESGCM] = {}
_AEADS_MAX: Final = 64


def _key(key: object) -> AESGCM:
    if type(key) is bytes:
        aead = _AEADS.get(key)
        if aead is not None:
            return aead
    raw = byte_string(key, what="a VMPCK", spec=SPEC_AEAD)
    if len(raw) != VMPCK_LEN:
        raise LengthError(
            f"a VMPCK is a {VMPCK_LEN}-byte AES-256 key, got {len(raw)} bytes",
            rule="key-length",
            spec=SPEC_AEAD,
        )
    aead = AESGCM(raw)
    if len(_AEADS) >= _AEADS_MAX:
        _AEADS.clear()
    _AEADS[raw] = aead
    return aead


def _u8(value: object) -> bool:
    """``value`` is a plain int (or a MsgType) in 0..255: packs as construction would."""
    return (type(value) is int or type(value) is MsgType) and 0 <= value <= 0xFF


def _header(
    seqno: object, msg_type: object, msg_version: object, msg_sz: int, vmpck: object
) -> bytes:
    """:meth:`MsgHeader.pack` of a message's header; the common case packed directly."""
    if (
        type(seqno) is int
        and 0 <= seqno <= _U64
        and _u8(msg_type)
        and _u8(msg_version)
        and _u8(vmpck)
    ):
        return _HDR_PACK(
            _HDR_ZERO_TAG,
            seqno,
            _HDR_ZERO_0x28,
            SNP_AEAD_AES_256_GCM,
            MSG_HDR_VER,
            HDR_SIZE,
            msg_type,
            msg_version,
            msg_sz,
            _HDR_ZERO_0x38,
            vmpck,
            _HDR_ZERO_0x3D,
        )
    return MsgHeader.pack(
        msg_seqno=seqno,
        msg_type=msg_type,
        msg_version=msg_version,
        msg_sz=msg_sz,
        msg_vmpck=vmpck,
    )


def seal_message(
    key: bytes | bytearray | memoryview,
    *,
    msg_type: int,
    msg_version: int = MSG_VERSION,
    seqno: int,
    vmpck: int,
    payload: bytes | bytearray | memoryview | SchemaRecord,
) -> bytes:
    """The 4096-byte page a guest (or the firmware) writes for one message.

    The header is ALGO 1, HDR_VERSION 1, HDR_SIZE 0x60, the given type, version, seqno and
    VMPCK index, MSG_SIZE = ``len(payload)``, every reserved byte zero; the payload is
    encrypted with ``key`` (IV from ``seqno``, AAD = header bytes 0x30..0x5F) and the tag
    written to ``authtag[0:16]``; the rest of the page is zero (Linux zeroes the whole message
    first). Only what the page cannot hold is refused: a message the firmware will refuse
    (MSG_SIZE 0 or not a multiple of 16, MSG_VMPCK > 3, an unknown type) can be sealed, so a
    test can send one; :func:`open_message` refuses it.

    Args:
        key: the 32-byte VMPCK ``vmpck`` selects.
        msg_type: MSG_TYPE (a :class:`MsgType` or any u8).
        msg_version: MSG_VERSION (u8); 1 for every type.
        seqno: MSG_SEQNO (u64): the guest's counter + 1 (:func:`request_seqno`), or the
            request's + 1 for a response (:func:`response_seqno`).
        vmpck: MSG_VMPCK (u8).
        payload: the plaintext, as bytes or a payload record.

    Raises:
        InputTypeError: ``key``, ``payload`` or a number of the wrong type.
        LengthError: ``key`` is not 32 bytes; ``payload`` is longer than 4000 bytes.
        FieldValueError: a number out of its field's range.
    """
    aead = _key(key)
    plain = (
        payload.to_bytes()
        if isinstance(payload, SchemaRecord)
        else byte_string(payload, what="a message payload", spec=SPEC_HDR)
    )
    if len(plain) > MAX_PAYLOAD:
        raise LengthError(
            f"a payload of {len(plain)} bytes does not fit the page ({MAX_PAYLOAD} max)",
            rule="payload-length",
            spec=SPEC_HDR,
            field="msg_sz",
        )
    header = _header(seqno, msg_type, msg_version, len(plain), vmpck)
    sealed = aead.encrypt(iv(seqno), plain, header[AAD_OFFSET:])
    ciphertext, tag = sealed[:-AUTHTAG_LEN], sealed[-AUTHTAG_LEN:]
    page = bytearray(PAGE_SIZE)
    page[:HDR_SIZE] = header
    page[:AUTHTAG_LEN] = tag
    page[HDR_SIZE : HDR_SIZE + len(ciphertext)] = ciphertext
    return bytes(page)


def _header_error(name: str, message: str, rule: str) -> MessageHeaderError:
    offset = next(f.offset for f in MsgHeader.FIELDS if f.name == name)
    return MessageHeaderError(message, rule=rule, spec=SPEC_FW, field=name, offset=offset)


def check_header(hdr: MsgHeader) -> None:
    """The firmware's header rules, in its order (snp-firmware-facts §3.4 steps 8-10).

    Raises:
        InputTypeError: ``hdr`` is not a :class:`MsgHeader`.
        MessageHeaderError: the first rule broken (status INVALID_PARAM).
    """
    if not isinstance(hdr, MsgHeader):
        raise InputTypeError(
            f"check_header needs a MsgHeader, not {type(hdr).__name__}",
            rule="input-type",
            spec=SPEC_FW,
        )
    # Step 8: "HDR_VERSION = 1, HDR_SIZE = 0x60, ALGO = 1, MSG_SIZE != 0 and 16-aligned".
    if hdr.hdr_version != MSG_HDR_VER:
        raise _header_error("hdr_version", f"HDR_VERSION {hdr.hdr_version} is not 1", "hdr-version")
    if hdr.hdr_sz != HDR_SIZE:
        raise _header_error("hdr_sz", f"HDR_SIZE {hdr.hdr_sz} is not {HDR_SIZE}", "hdr-size")
    if hdr.algo != SNP_AEAD_AES_256_GCM:
        raise _header_error("algo", f"ALGO {hdr.algo} is not 1 (AES-256-GCM)", "algo")
    if hdr.msg_sz == 0 or hdr.msg_sz % _MSG_SZ_ALIGN:
        raise _header_error(
            "msg_sz", f"MSG_SIZE {hdr.msg_sz} is not a non-zero multiple of 16", "msg-size"
        )
    # Step 9: "header + MSG_SIZE within the 4 KiB page".
    if hdr.msg_sz > MAX_PAYLOAD:
        raise _header_error(
            "msg_sz", f"header + MSG_SIZE {hdr.msg_sz} crosses the page", "msg-size"
        )
    # Step 10: "MSG_VMPCK in {0,1,2,3}".
    if hdr.msg_vmpck >= VMPCK_COUNT:
        raise _header_error("msg_vmpck", f"MSG_VMPCK {hdr.msg_vmpck} is not 0..3", "vmpck")


def open_message(
    key: bytes | bytearray | memoryview, page: bytes | bytearray | memoryview
) -> tuple[MsgHeader, bytes]:
    """Check, authenticate and decrypt one message page.

    The header rules are the firmware's, in its order (snp-firmware-facts §3.4 steps 8-11):
    HDR_VERSION 1, HDR_SIZE 0x60, ALGO 1, MSG_SIZE a non-zero multiple of 16 that fits the
    page, MSG_VMPCK 0..3, then the AES-GCM tag. The sequence number is not judged here
    (:func:`seqno_accepted`, :func:`check_response_header`).

    Args:
        key: the 32-byte VMPCK the header's ``msg_vmpck`` selects.
        page: the 4096-byte message page.

    Returns:
        The header record and the MSG_SIZE bytes of plaintext.

    Raises:
        InputTypeError: ``key`` or ``page`` is not bytes-like.
        LengthError: ``key`` is not 32 bytes; ``page`` is not 4096 bytes.
        MessageHeaderError: a header rule is broken (status INVALID_PARAM).
        MessageAuthError: the tag does not authenticate (status BAD_MEASUREMENT).
    """
    aead = _key(key)
    view = byte_view(page, what="a guest message page", spec=SPEC_HDR)
    if len(view) != PAGE_SIZE:
        raise LengthError(
            f"a guest message page is {PAGE_SIZE} bytes, got {len(view)}",
            rule="page-length",
            spec=SPEC_HDR,
        )
    hdr = MsgHeader.from_bytes(view[:HDR_SIZE])
    check_header(hdr)
    # Step 11: AES-GCM decrypt and tag compare, IV from MSG_SEQNO, AAD from ALGO on.
    body = bytes(view[HDR_SIZE : HDR_SIZE + hdr.msg_sz]) + hdr.authtag[:AUTHTAG_LEN]
    try:
        plain = aead.decrypt(iv(hdr.msg_seqno), body, bytes(view[AAD_OFFSET:HDR_SIZE]))
    except InvalidTag:
        raise MessageAuthError(
            "the AES-GCM tag does not authenticate the message (wrong key or tampered bytes)",
            rule="bad-tag",
            spec=SPEC_AEAD,
            field="authtag",
            offset=0,
        ) from None
    return hdr, plain


# ---------------------------------------------------------------------------------------------
# Sequence rules
# ---------------------------------------------------------------------------------------------


def request_seqno(counter: int) -> int:
    """The seqno of the guest's next request: its secrets-page counter + 1.

    Linux ``snp_get_msg_seqno``: the counter is a u32 in the secrets page's OS area
    (``msg_seqno_0..3``); a seqno >= UINT_MAX is refused and the request never sent.

    Raises:
        InputTypeError / FieldValueError: ``counter`` is not a u32.
        MessageSequenceError: ``counter + 1 >= 0xFFFFFFFF`` (``rule="seqno-overflow"``).
    """
    counter = check_int(counter, _U32, "msg_seqno counter", SPEC_LINUX)
    if counter + 1 >= GUEST_SEQNO_LIMIT:
        raise MessageSequenceError(
            f"request sequence counter overflow (counter {counter:#x})",
            rule="seqno-overflow",
            spec=SPEC_LINUX,
            field="msg_seqno",
        )
    return counter + 1


def response_seqno(request_seqno: int) -> int:
    """The response's MSG_SEQNO: the request's + 1 (firmware §3.4 success row; Linux checks
    it). The firmware counter is a u64, so it never wraps below 2^64 - 1.

    Raises:
        InputTypeError / FieldValueError: ``request_seqno`` is not a u64 below 2^64 - 1.
    """
    return check_int(request_seqno, _U64 - 1, "msg_seqno", SPEC_FW) + 1


def response_type(request_type: int) -> MsgType | int:
    """The response's MSG_TYPE: the request's + 1 (snp-firmware-facts §3.3; Linux checks it).

    Raises:
        InputTypeError / FieldValueError: ``request_type`` is not a u8 below 0xFF.
    """
    return MsgType.from_int(check_int(request_type, 0xFE, "msg_type", SPEC_FW) + 1)


def advance_counter(counter: int) -> int:
    """The guest's counter after an exchange: + 2, the request's seqno and the response's
    (Linux ``snp_inc_msg_seqno``: "the counter is also incremented by the PSP, so increment it
    by 2"); done after any answer from the firmware, even an error. A u32, as stored.

    Raises:
        InputTypeError / FieldValueError: ``counter`` is not a u32.
    """
    return (check_int(counter, _U32, "msg_seqno counter", SPEC_LINUX) + 2) & _U32


def seqno_accepted(counter: int, seqno: int) -> bool:
    """Whether the firmware accepts a request's ``seqno`` against its u64 ``counter`` for
    that VMPCK: ``seqno == counter + 1`` and ``counter != 2^64 - 2`` (§3.4 step 12, checked
    after the tag; a refusal is AEAD_OFLOW and leaves the counter as it is).

    Raises:
        InputTypeError / FieldValueError: ``counter`` or ``seqno`` is not a u64.
    """
    counter = check_int(counter, _U64, "firmware counter", SPEC_FW)
    seqno = check_int(seqno, _U64, "msg_seqno", SPEC_FW)
    return counter != FIRMWARE_COUNTER_LIMIT and seqno == counter + 1


def check_response_header(
    request: MsgHeader, response: MsgHeader, *, buffer_size: int = MAX_PAYLOAD
) -> None:
    """The guest's checks of a response header against its request (Linux
    ``verify_and_dec_payload``, before decrypting): seqno = request's + 1, type = request's
    + 1, the same MSG_VERSION, and MSG_SIZE + 16 within the caller's ``buffer_size``.

    Raises:
        InputTypeError: either header is not a :class:`MsgHeader`.
        MessageSequenceError: the first check that fails (Linux: -EBADMSG).
    """
    for hdr in (request, response):
        if not isinstance(hdr, MsgHeader):
            raise InputTypeError(
                f"check_response_header needs MsgHeader records, not {type(hdr).__name__}",
                rule="input-type",
                spec=SPEC_LINUX,
            )
    checks = (
        ("msg_seqno", response.msg_seqno == request.msg_seqno + 1, "seqno", "the request's + 1"),
        ("msg_type", response.msg_type == request.msg_type + 1, "type", "the request's + 1"),
        ("msg_version", response.msg_version == request.msg_version, "version", "the request's"),
        ("msg_sz", response.msg_sz + AUTHTAG_LEN <= buffer_size, "size", "within the buffer"),
    )
    for name, ok, what, rule in checks:
        if not ok:
            raise MessageSequenceError(
                f"response {name} = {getattr(response, name)} is not {rule}",
                rule=f"response-{what}",
                spec=SPEC_LINUX,
                field=name,
            )
