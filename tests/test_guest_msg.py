"""Guest messages: spec table == schemas == struct codecs, AES-256-GCM known answers computed
here with cryptography's AESGCM directly, the firmware's header rules, the sequence rules, and
hostile input.

Offsets, sizes, constants and message types are read from spec/tables/guest_msg.toml and
spec/tables/messages.toml, never from the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from ghcb import FieldValueError, GhcbError, InputTypeError, LengthError, UnknownFieldError
from ghcb._fast import flat_fields
from ghcb.codes import FirmwareStatus, MsgType
from ghcb.guest_msg import (
    PAYLOADS,
    GuestMessageError,
    KeyReq,
    KeySel,
    MessageAuthError,
    MessageHeaderError,
    MessageSequenceError,
    MsgHeader,
    ReportReq,
    ReportRsp,
    aad,
    advance_counter,
    check_response_header,
    iv,
    open_message,
    parse_payload,
    request_seqno,
    response_seqno,
    response_type,
    seal_message,
    seqno_accepted,
)
from ghcb.report import AttestationReport, build_report
from ghcb.schemas import guest_msg as schema
from tests.helpers import assert_roundtrip, load_table

if TYPE_CHECKING:
    from ghcb.page import Backend

TABLE = load_table("guest_msg")
MSG = TABLE["message"]
SEQ = TABLE["sequence"]
HEADER = TABLE["header"]
PAYLOAD_ROWS = TABLE["payload"]
TYPES = {r["name"]: r["value"] for r in load_table("messages")["msg_type"]}
INT_FMT = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q"}
PAGE = MSG["page_size"]
KEY = bytes(range(32))  # a fixed VMPCK for the known-answer tests


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


def _hdr(name: str) -> dict[str, Any]:
    return next(r for r in HEADER if r["name"] == name)


def _header_by_table(**values: int) -> bytes:
    """A header written field by field at the table's offsets (the package is not used)."""
    out = bytearray(MSG["header_size"])
    for name, value in values.items():
        row = _hdr(name)
        struct.pack_into("<" + INT_FMT[row["kind"]], out, row["offset"], value)
    return bytes(out)


def _expected_page(
    key: bytes, *, msg_type: int, seqno: int, vmpck: int, payload: bytes, msg_version: int = 1
) -> bytes:
    """The sealed page computed here: the header by the table, AESGCM called directly."""
    header = bytearray(
        _header_by_table(
            msg_seqno=seqno,
            algo=MSG["algo_aes_256_gcm"],
            hdr_version=MSG["hdr_version"],
            hdr_sz=MSG["header_size"],
            msg_type=msg_type,
            msg_version=msg_version,
            msg_sz=len(payload),
            msg_vmpck=vmpck,
        )
    )
    nonce = seqno.to_bytes(8, "little") + bytes(MSG["iv_size"] - 8)
    associated = bytes(header[MSG["aad_offset"] : MSG["aad_offset"] + MSG["aad_size"]])
    sealed = AESGCM(key).encrypt(nonce, payload, associated)
    ciphertext, tag = sealed[: -MSG["authtag_len"]], sealed[-MSG["authtag_len"] :]
    header[_hdr("authtag")["offset"] : _hdr("authtag")["offset"] + MSG["authtag_len"]] = tag
    page = bytes(header) + ciphertext
    return page + bytes(PAGE - len(page))


# -- spec table == construct schema == struct codec ---------------------------------------------


class TestHeaderLayout:
    def test_constants(self) -> None:
        """Header size, page, payload room and the AEAD constants match the table."""
        from ghcb import guest_msg as gm

        assert MSG["header_size"] == gm.HDR_SIZE == MsgHeader.SIZE
        assert MSG["header_size"] + MSG["max_payload"] == PAGE
        assert MSG["max_payload"] == gm.MAX_PAYLOAD
        assert MSG["algo_aes_256_gcm"] == gm.SNP_AEAD_AES_256_GCM
        assert MSG["hdr_version"] == gm.MSG_HDR_VER
        assert MSG["authtag_size"] == _hdr("authtag")["size"]
        assert MSG["authtag_len"] == gm.AUTHTAG_LEN
        assert MSG["aad_offset"] == gm.AAD_OFFSET == _hdr("algo")["offset"]
        assert MSG["aad_offset"] + MSG["aad_size"] == MSG["header_size"]
        assert MSG["iv_size"] == gm.IV_LEN
        assert MSG["key_size"] == gm.VMPCK_LEN
        assert MSG["vmpck_count"] == gm.VMPCK_COUNT

    def test_same_fields_in_same_order(self) -> None:
        """The header schema and record have the table's fields, tiling 0x60 bytes."""
        names = [r["name"] for r in HEADER]
        assert [f.name for f in flat_fields(schema.snp_guest_msg_hdr)] == names
        assert [f.name for f in dataclasses.fields(MsgHeader)] == names
        pos = 0
        for row in HEADER:
            assert row["offset"] == pos, row["name"]
            pos += row["size"]
        assert pos == MSG["header_size"]

    @pytest.mark.parametrize("row", HEADER, ids=_ids(HEADER))
    def test_field(self, row: dict[str, Any], backend: Backend) -> None:
        """Schema offset/size, struct offset, and a marker landing at the table's bytes."""
        fields = MsgHeader.FIELDS
        i = [f.name for f in fields].index(row["name"])
        assert (fields[i].offset, fields[i].size) == (row["offset"], row["size"])
        assert struct.calcsize("<" + "".join(f.fmt for f in fields[:i])) == row["offset"]
        size, off = row["size"], row["offset"]
        marker: int | bytes
        if row["kind"] in INT_FMT:
            marker = int.from_bytes(bytes(range(1, size + 1)), "little")
            expected = marker.to_bytes(size, "little")
        else:
            expected = marker = bytes((i % 251) + 1 for i in range(size))
        zero: dict[str, Any] = {f.name: (0 if f.kind == "int" else bytes(f.size)) for f in fields}
        header = MsgHeader(**{**zero, row["name"]: marker})
        data = header.to_bytes(backend=backend)
        assert data[off : off + size] == expected
        assert not any(data[:off])
        assert not any(data[off + size :])
        assert MsgHeader.from_bytes(data, backend=backend) == header

    def test_defaults(self) -> None:
        """A default header is ALGO 1, HDR_VERSION 1, HDR_SIZE 0x60, MSG_VERSION 1."""
        assert MsgHeader().to_bytes() == _header_by_table(
            algo=MSG["algo_aes_256_gcm"],
            hdr_version=MSG["hdr_version"],
            hdr_sz=MSG["header_size"],
            msg_version=1,
        )

    def test_pack(self) -> None:
        """MsgHeader.pack writes the record's bytes without building it, checking values."""
        values: dict[str, Any] = {"msg_seqno": 9, "msg_type": 5, "msg_sz": 96, "msg_vmpck": 3}
        assert MsgHeader.pack(**values) == MsgHeader(**values).to_bytes()
        with pytest.raises(UnknownFieldError):
            MsgHeader.pack(msg_seq=1)
        with pytest.raises(FieldValueError) as info:
            MsgHeader.pack(msg_vmpck=256)
        assert (info.value.field, info.value.offset) == ("msg_vmpck", _hdr("msg_vmpck")["offset"])

    def test_key_sel(self) -> None:
        """KeySel has exactly the table's values."""
        assert {m.name: int(m) for m in KeySel} == {r["name"]: r["value"] for r in TABLE["key_sel"]}

    def test_msg_type_decodes_to_enum(self) -> None:
        """msg_type is a MsgType when known, the plain int otherwise."""
        hdr = MsgHeader.from_bytes(_header_by_table(msg_type=TYPES["REPORT_REQ"]))
        assert hdr.msg_type is MsgType.REPORT_REQ
        assert MsgHeader.from_bytes(_header_by_table(msg_type=15)).msg_type == 15


@pytest.mark.parametrize("row", PAYLOAD_ROWS, ids=_ids(PAYLOAD_ROWS))
class TestPayloadLayout:
    def test_schema_and_record(self, row: dict[str, Any]) -> None:
        """Each payload's schema, record, size and fields are the table's; the record is the
        one registered for its message type."""
        construct_schema = getattr(schema, row["name"])
        fields = flat_fields(construct_schema)
        table = [(f["name"], f["offset"], f["size"]) for f in row["fields"]]
        assert [(f.name, f.offset, f.size) for f in fields] == table
        assert construct_schema.sizeof() == row["size"]
        cls = PAYLOADS[MsgType(TYPES[row["msg_type"]])]
        assert cls.SCHEMA is construct_schema
        assert row["size"] == cls.SIZE
        assert int(cls.MSG_TYPE) == TYPES[row["msg_type"]]
        assert [f.name for f in dataclasses.fields(cls)] == [f["name"] for f in row["fields"]]
        pos = 0
        for f in row["fields"]:
            assert f["offset"] == pos
            pos += f["size"]
            if f["kind"] == "reserved":
                assert f["name"] == f"reserved_{f['offset']:#x}"
        assert pos == row["size"]

    def test_marker_roundtrip(self, row: dict[str, Any], backend: Backend) -> None:
        """Bytes with a distinct marker in every field parse and build back exactly; every
        integer field decodes to the value at the table's offset."""
        data = bytes((i * 7 + 1) % 256 for i in range(row["size"]))
        record = parse_payload(TYPES[row["msg_type"]], data, backend=backend)
        assert record.to_bytes(backend=backend) == data
        for f in row["fields"]:
            raw = data[f["offset"] : f["offset"] + f["size"]]
            value = getattr(record, f["name"])
            if f["kind"] in INT_FMT:
                assert value == int.from_bytes(raw, "little"), f["name"]
            else:
                assert value == raw, f["name"]
        assert_roundtrip(record.SCHEMA, data, record.fields())

    def test_message_version(self, row: dict[str, Any]) -> None:
        """Every type's MSG_VERSION is 1 (the firmware source's max for each type)."""
        from ghcb.guest_msg import MSG_VERSION

        assert row["msg_version"] == MSG_VERSION

    def test_request_response_pairs(self, row: dict[str, Any]) -> None:
        """Each request's response type is request + 1 and has a payload record too."""
        kind = TYPES[row["msg_type"]]
        if row["msg_type"].endswith("_REQ"):
            rsp = response_type(kind)
            assert rsp == kind + SEQ["response_type_delta"]
            assert rsp in PAYLOADS


def test_report_rsp_carries_a_report() -> None:
    """MSG_REPORT_RSP's report decodes as an attestation report; the defaults are the
    firmware's success answer (STATUS 0, REPORT_SIZE 0x4A0)."""
    report = AttestationReport(version=5, vmpl=1)
    rsp = ReportRsp(report=build_report(report))
    assert rsp.attestation_report == report
    data = rsp.to_bytes()
    row = next(r for r in PAYLOAD_ROWS if r["msg_type"] == "REPORT_RSP")
    size_at = next(f["offset"] for f in row["fields"] if f["name"] == "report_size")
    assert int.from_bytes(data[size_at : size_at + 4], "little") == 0x4A0
    assert ReportRsp.from_bytes(data).status is FirmwareStatus.SUCCESS


# -- AES-256-GCM ----------------------------------------------------------------------------------


class TestAead:
    @pytest.mark.parametrize("example", TABLE["aad_example"], ids=lambda e: e["msg_type"])
    def test_aad_and_iv_examples(self, example: dict[str, Any]) -> None:
        """The facts' IV and AAD bytes for a REPORT_REQ and its response."""
        assert iv(example["seqno"]).hex() == example["iv"]
        page = seal_message(
            KEY,
            msg_type=TYPES[example["msg_type"]],
            seqno=example["seqno"],
            vmpck=example["vmpck"],
            payload=bytes(example["msg_sz"]),
        )
        prefix = bytes.fromhex(example["aad_prefix"])
        expected = prefix + bytes(MSG["aad_size"] - len(prefix))
        assert page[MSG["aad_offset"] : MSG["header_size"]] == expected
        assert aad(page) == expected
        assert aad(MsgHeader.from_bytes(page[: MSG["header_size"]])) == expected

    @pytest.mark.parametrize(
        ("msg_type", "seqno", "vmpck", "payload"),
        [
            ("REPORT_REQ", 1, 0, ReportReq(user_data=bytes(range(64)), vmpl=1).to_bytes()),
            ("KEY_REQ", 3, 1, KeyReq(guest_field_select=0x3F, vmpl=2).to_bytes()),
            ("TSC_INFO_REQ", 0x1_0000_0001, 3, bytes(128)),
            ("REPORT_RSP", 2, 0, ReportRsp(report=bytes(range(256)) * 4 + bytes(160)).to_bytes()),
            ("REPORT_REQ", (1 << 64) - 1, 2, bytes(16)),
        ],
        ids=["report-req", "key-req", "tsc-info-req", "report-rsp", "max-seqno"],
    )
    def test_known_answer(self, msg_type: str, seqno: int, vmpck: int, payload: bytes) -> None:
        """seal_message writes exactly the page computed here with AESGCM directly: header
        fields at the table's offsets, tag in authtag[0:16], ciphertext at 0x60, zeros after;
        open_message gives the header and plaintext back."""
        kind = TYPES[msg_type]
        page = seal_message(KEY, msg_type=kind, seqno=seqno, vmpck=vmpck, payload=payload)
        assert len(page) == PAGE
        expected = _expected_page(KEY, msg_type=kind, seqno=seqno, vmpck=vmpck, payload=payload)
        assert page == expected
        tag_end = _hdr("authtag")["offset"] + _hdr("authtag")["size"]
        assert not any(page[MSG["authtag_len"] : tag_end])
        hdr, plain = open_message(KEY, page)
        assert plain == payload
        assert (hdr.msg_type, hdr.msg_seqno, hdr.msg_vmpck, hdr.msg_sz) == (
            kind,
            seqno,
            vmpck,
            len(payload),
        )

    def test_pinned_tag(self) -> None:
        """One fully pinned vector (key 00..1f, seqno 1, VMPCK 0, a zero REPORT_REQ): the tag
        and the first ciphertext bytes, as AESGCM computed them when this test was written."""
        page = seal_message(
            KEY, msg_type=TYPES["REPORT_REQ"], seqno=1, vmpck=0, payload=ReportReq()
        )
        assert page == _expected_page(
            KEY, msg_type=TYPES["REPORT_REQ"], seqno=1, vmpck=0, payload=bytes(96)
        )
        assert page[: MSG["authtag_len"]].hex() == PINNED_TAG
        assert page[MSG["header_size"] : MSG["header_size"] + 16].hex() == PINNED_CT16

    @pytest.mark.parametrize("payload_type", sorted(PAYLOADS), ids=lambda t: t.name)
    def test_roundtrip_every_payload(self, payload_type: MsgType, backend: Backend) -> None:
        """Seal a default payload record of each type, open it, parse the payload back."""
        record = PAYLOADS[payload_type]()
        page = seal_message(KEY, msg_type=payload_type, seqno=5, vmpck=2, payload=record)
        hdr, plain = open_message(KEY, bytearray(page))
        assert hdr.msg_type is payload_type
        assert parse_payload(hdr.msg_type, plain, backend=backend) == record

    def test_wrong_key(self) -> None:
        """Another VMPCK fails authentication: BAD_MEASUREMENT."""
        page = seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=bytes(96))
        with pytest.raises(MessageAuthError) as info:
            open_message(bytes(32), page)
        assert info.value.status is FirmwareStatus.BAD_MEASUREMENT
        assert (info.value.rule, info.value.field) == ("bad-tag", "authtag")

    @pytest.mark.parametrize(
        "offset",
        [0x00, 0x0F, 0x20, 0x27, 0x34, 0x35, 0x38, 0x3C, 0x3D, 0x5F, 0x60, 0x60 + 95],
        ids=lambda o: f"{o:#x}",
    )
    def test_tampered_bytes_fail(self, offset: int) -> None:
        """A flipped bit in the tag, the seqno (the IV), the AAD or the ciphertext fails
        authentication (header bytes that keep the header rules)."""
        page = bytearray(seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=bytes(96)))
        page[offset] ^= 0x01 if offset != _hdr("msg_vmpck")["offset"] else 0x02
        with pytest.raises(MessageAuthError):
            open_message(KEY, page)

    @pytest.mark.parametrize(
        "offset", [0x10, 0x1F, 0x28, 0x2F, 0x60 + 96, PAGE - 1], ids=lambda o: f"{o:#x}"
    )
    def test_unauthenticated_bytes(self, offset: int) -> None:
        """authtag[16:32], reserved_0x28 and bytes after the payload are neither AAD nor IV
        nor ciphertext: changing them does not fail authentication (the spec's AAD starts at
        0x30)."""
        payload = bytes(96)
        page = bytearray(seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=payload))
        page[offset] ^= 0xFF
        assert open_message(KEY, page)[1] == payload


# -- the firmware's header rules ------------------------------------------------------------------


def _patched(page: bytes, name: str, value: int) -> bytes:
    row = _hdr(name)
    out = bytearray(page)
    struct.pack_into("<" + INT_FMT[row["kind"]], out, row["offset"], value)
    return bytes(out)


_GOOD = seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=bytes(96))


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("hdr_version", 0, "hdr-version"),
        ("hdr_version", 2, "hdr-version"),
        ("hdr_sz", 0x5F, "hdr-size"),
        ("hdr_sz", 0x70, "hdr-size"),
        ("algo", 0, "algo"),
        ("algo", 2, "algo"),
        ("msg_sz", 0, "msg-size"),
        ("msg_sz", 95, "msg-size"),
        ("msg_sz", 4016, "msg-size"),
        ("msg_sz", 0xFFF0, "msg-size"),
        ("msg_vmpck", 4, "vmpck"),
        ("msg_vmpck", 0xFF, "vmpck"),
    ],
)
def test_header_rules(name: str, value: int, rule: str) -> None:
    """Each header rule is refused before the tag is checked (INVALID_PARAM), naming the
    field and its table offset."""
    with pytest.raises(MessageHeaderError) as info:
        open_message(KEY, _patched(_GOOD, name, value))
    err = info.value
    assert (err.rule, err.field, err.offset) == (rule, name, _hdr(name)["offset"])
    assert err.status is FirmwareStatus.INVALID_PARAM
    assert isinstance(err, GuestMessageError)


def test_sealable_but_refused() -> None:
    """seal_message writes what the page can hold, with a valid tag; open_message refuses
    what the firmware refuses (here MSG_SIZE 17 and MSG_VMPCK 4)."""
    with pytest.raises(MessageHeaderError):
        open_message(KEY, seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=bytes(17)))
    with pytest.raises(MessageHeaderError):
        open_message(KEY, seal_message(KEY, msg_type=5, seqno=1, vmpck=4, payload=bytes(96)))
    page = seal_message(KEY, msg_type=0xFF, seqno=1, vmpck=3, payload=bytes(MSG["max_payload"]))
    assert open_message(KEY, page)[0].msg_type == 0xFF


class TestBadArguments:
    def test_lengths(self) -> None:
        """Keys other than 32 bytes, pages other than 4096, payloads over 4000: LengthError."""
        with pytest.raises(LengthError):
            seal_message(bytes(16), msg_type=5, seqno=1, vmpck=0, payload=bytes(96))
        with pytest.raises(LengthError):
            open_message(bytes(31), _GOOD)
        for size in (0, 95, PAGE - 1, PAGE + 1):
            with pytest.raises(LengthError):
                open_message(KEY, _GOOD[:size] if size < PAGE else _GOOD + b"\0")
        with pytest.raises(LengthError):
            seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload=bytes(MSG["max_payload"] + 1))
        with pytest.raises(LengthError):
            parse_payload(5, bytes(95))
        with pytest.raises(LengthError):
            aad(bytes(95))

    @pytest.mark.parametrize(
        "field", [{"msg_type": 256}, {"seqno": 1 << 64}, {"seqno": -1}, {"vmpck": 256}]
    )
    def test_ranges(self, field: dict[str, int]) -> None:
        """Numbers that do not fit their header field: FieldValueError."""
        args: dict[str, Any] = {"msg_type": 5, "seqno": 1, "vmpck": 0, **field}
        with pytest.raises(FieldValueError):
            seal_message(KEY, payload=bytes(96), **args)

    def test_types(self) -> None:
        """Non-bytes keys, pages, payloads: InputTypeError; unknown payload types refused."""
        with pytest.raises(InputTypeError):
            seal_message("key", msg_type=5, seqno=1, vmpck=0, payload=bytes(96))  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            seal_message(KEY, msg_type=5, seqno=1, vmpck=0, payload="text")  # type: ignore[arg-type]
        with pytest.raises(InputTypeError):
            open_message(KEY, None)  # type: ignore[arg-type]
        with pytest.raises(MessageHeaderError):
            parse_payload(1, bytes(16))  # CPUID_REQ: no payload record
        with pytest.raises(FieldValueError):
            parse_payload(256, bytes(16))


# -- sequence rules -------------------------------------------------------------------------------


class TestSequence:
    def test_guest_counter(self) -> None:
        """Linux: seqno = counter + 1, refused at UINT_MAX; the counter advances by 2."""
        assert request_seqno(0) == SEQ["first_request_seqno"]
        limit = SEQ["guest_seqno_limit"]
        assert request_seqno(limit - 2) == limit - 1
        with pytest.raises(MessageSequenceError) as info:
            request_seqno(limit - 1)
        assert info.value.rule == "seqno-overflow"
        assert advance_counter(0) == SEQ["counter_step"]
        assert advance_counter(limit) == SEQ["counter_step"] - 1  # a u32, as stored
        with pytest.raises(FieldValueError):
            request_seqno(1 << 32)

    def test_firmware_counter(self) -> None:
        """The firmware accepts only counter + 1, and nothing at counter 2^64 - 2."""
        assert seqno_accepted(0, 1)
        assert not seqno_accepted(0, 0)
        assert not seqno_accepted(0, 2)
        assert not seqno_accepted(2, 1)
        limit = SEQ["firmware_counter_limit"]
        assert not seqno_accepted(limit, limit + 1)
        assert seqno_accepted(limit - 2, limit - 1)

    def test_response_numbers(self) -> None:
        """Response seqno and type are the request's + 1."""
        assert response_seqno(1) == 1 + SEQ["response_seqno_delta"]
        assert response_type(MsgType.REPORT_REQ) is MsgType.REPORT_RSP
        assert response_type(MsgType.TSC_INFO_REQ) is MsgType.TSC_INFO_RSP
        assert response_type(14) == 15  # not a Linux type: the plain int
        with pytest.raises(FieldValueError):
            response_seqno((1 << 64) - 1)

    def test_statuses(self) -> None:
        """Each refusal's status is the table's firmware status."""
        status = TABLE["status"]
        assert MessageHeaderError.status is FirmwareStatus[status["header"]]
        assert MessageAuthError.status is FirmwareStatus[status["bad_tag"]]
        assert MessageSequenceError.status is FirmwareStatus[status["bad_seqno"]]

    def test_exchanges(self) -> None:
        """Three exchanges as guest and firmware make them: each side's counter advances by 2,
        every message (request and response) uses a fresh seqno, so no IV repeats."""
        guest_counter, fw_counter, seen = 0, 0, set()
        for _ in range(3):
            seqno = request_seqno(guest_counter)
            request = seal_message(
                KEY, msg_type=MsgType.REPORT_REQ, seqno=seqno, vmpck=0, payload=ReportReq()
            )
            req_hdr, _ = open_message(KEY, request)
            assert seqno_accepted(fw_counter, req_hdr.msg_seqno)
            response = seal_message(
                KEY,
                msg_type=response_type(req_hdr.msg_type),
                seqno=response_seqno(req_hdr.msg_seqno),
                vmpck=req_hdr.msg_vmpck,
                payload=ReportRsp(),
            )
            fw_counter += SEQ["counter_step"]
            rsp_hdr, _ = open_message(KEY, response)
            check_response_header(req_hdr, rsp_hdr)
            guest_counter = advance_counter(guest_counter)
            assert guest_counter == fw_counter == rsp_hdr.msg_seqno
            seen |= {req_hdr.msg_seqno, rsp_hdr.msg_seqno}
        assert seen == {1, 2, 3, 4, 5, 6}

    @pytest.mark.parametrize(
        ("change", "rule"),
        [
            ({"msg_seqno": 3}, "response-seqno"),
            ({"msg_seqno": 1}, "response-seqno"),
            ({"msg_type": MsgType.REPORT_REQ}, "response-type"),
            ({"msg_type": MsgType.KEY_RSP}, "response-type"),
            ({"msg_version": 2}, "response-version"),
            ({"msg_sz": 3985}, "response-size"),
        ],
    )
    def test_response_checks(self, change: dict[str, Any], rule: str) -> None:
        """Linux's response checks: seqno + 1, type + 1, same version, size within the
        buffer (MSG_SIZE + 16 <= 4000)."""
        request = MsgHeader(msg_seqno=1, msg_type=MsgType.REPORT_REQ, msg_sz=96)
        good = MsgHeader(msg_seqno=2, msg_type=MsgType.REPORT_RSP, msg_sz=3984)
        check_response_header(request, good)
        with pytest.raises(MessageSequenceError) as info:
            check_response_header(request, dataclasses.replace(good, **change))
        assert info.value.rule == rule
        with pytest.raises(InputTypeError):
            check_response_header(request, good.to_bytes())  # type: ignore[arg-type]


# -- hostile input --------------------------------------------------------------------------------


class TestHostile:
    @given(
        head=st.binary(min_size=MSG["header_size"], max_size=MSG["header_size"]),
        body=st.binary(max_size=512),
        key=st.binary(min_size=32, max_size=32),
    )
    def test_any_page(self, head: bytes, body: bytes, key: bytes) -> None:
        """open_message on any header bytes (and a page of any body) and any key: a result
        or a GhcbError, nothing else."""
        with contextlib.suppress(GhcbError):
            open_message(key, (head + body).ljust(PAGE, b"\0"))

    @given(
        header=st.builds(
            MsgHeader,
            msg_seqno=st.integers(0, (1 << 64) - 1),
            msg_type=st.integers(0, 255),
            msg_sz=st.sampled_from([0, 16, 96, 0x4C0, 4000, 4016, 0xFFFF]),
            msg_vmpck=st.integers(0, 5),
            algo=st.integers(0, 2),
        ),
        body=st.binary(max_size=64),
    )
    def test_any_header(self, header: MsgHeader, body: bytes) -> None:
        """Structured hostile headers (the shapes random bytes rarely hit): same property."""
        page = (header.to_bytes() + body).ljust(PAGE, b"\0")
        with contextlib.suppress(GhcbError):
            open_message(KEY, page)

    @given(data=st.binary(max_size=PAGE + 1), key=st.binary(max_size=40))
    def test_any_lengths(self, data: bytes, key: bytes) -> None:
        """Any lengths of key and page: a result or a GhcbError."""
        with contextlib.suppress(GhcbError):
            open_message(key, data)

    @given(msg_type=st.integers(-1, 300), data=st.binary(max_size=0x500))
    def test_any_payload(self, msg_type: int, data: bytes) -> None:
        """parse_payload on any type and bytes: a record or a GhcbError."""
        with contextlib.suppress(GhcbError):
            parse_payload(msg_type, data)

    @given(
        payload=st.binary(min_size=1, max_size=250).map(lambda b: b.ljust(-(-len(b) // 16) * 16)),
        seqno=st.integers(0, (1 << 64) - 1),
        vmpck=st.integers(0, 3),
        msg_type=st.integers(0, 255),
        key=st.binary(min_size=32, max_size=32),
    )
    def test_seal_open_roundtrip(
        self, payload: bytes, seqno: int, vmpck: int, msg_type: int, key: bytes
    ) -> None:
        """Whatever the firmware accepts seals and opens back to itself."""
        page = seal_message(key, msg_type=msg_type, seqno=seqno, vmpck=vmpck, payload=payload)
        hdr, plain = open_message(key, page)
        assert plain == payload
        assert (hdr.msg_seqno, hdr.msg_vmpck, hdr.msg_type) == (seqno, vmpck, msg_type)


PINNED_TAG = "f82ad6a7637d3333e57fd9adeb832a0f"
PINNED_CT16 = "e22c823fa4afec074a0405c33cc188cb"
