"""Guest message payload records (snp-firmware-facts §3.6-3.8, ghcb-facts §8.3): one frozen
record per payload schema of :mod:`ghcb.schemas.guest_msg`, re-exported by
:mod:`ghcb.guest_msg` (which holds the header, the AES-GCM sealing and the sequence rules)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from ghcb._record import SchemaRecord
from ghcb.codes import FirmwareStatus, MsgType
from ghcb.report import ATTESTATION_REPORT_SIZE, AttestationReport, parse_report
from ghcb.schemas import guest_msg as schema

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import construct as cs

__all__ = [
    "PAYLOADS",
    "KeyReq",
    "KeyRsp",
    "KeySel",
    "Payload",
    "ReportReq",
    "ReportRsp",
    "TscInfoReq",
    "TscInfoRsp",
]


class Payload(SchemaRecord):
    """A message payload; ``MSG_TYPE`` is the message type that carries it."""

    MSG_TYPE: ClassVar[MsgType]


class KeySel(enum.IntEnum):
    """MSG_REPORT_REQ / MSG_KEY_REQ KEY_SEL (snp-firmware-facts §3.6): 3 is reserved."""

    DEFAULT = 0  # the VLEK if one is loaded, else the VCEK
    VCEK = 1
    VLEK = 2


@dataclass(frozen=True, slots=True)
class ReportReq(Payload):
    """MSG_REPORT_REQ (0x60 bytes): Linux ``struct snp_report_req`` with the firmware's
    ``key_sel`` at 0x44 (Linux sends 0 there)."""

    SCHEMA: ClassVar[cs.Struct] = schema.snp_report_req
    SPEC: ClassVar[str] = "SNP firmware MSG_REPORT_REQ (snp-firmware-facts §3.6)"
    WHAT: ClassVar[str] = "a MSG_REPORT_REQ"
    MSG_TYPE: ClassVar[MsgType] = MsgType.REPORT_REQ

    user_data: bytes = bytes(schema.SNP_REPORT_USER_DATA_SIZE)
    vmpl: int = 0
    key_sel: int = KeySel.DEFAULT
    reserved_0x48: bytes = bytes(24)


@dataclass(frozen=True, slots=True)
class ReportRsp(Payload):
    """MSG_REPORT_RSP (0x4C0 bytes): STATUS, REPORT_SIZE (0x4A0 even on error), reserved,
    then the 1184-byte report (all zero on the early failures)."""

    SCHEMA: ClassVar[cs.Struct] = schema.msg_report_rsp
    SPEC: ClassVar[str] = "SNP firmware MSG_REPORT_RSP (snp-firmware-facts §3.6)"
    WHAT: ClassVar[str] = "a MSG_REPORT_RSP"
    MSG_TYPE: ClassVar[MsgType] = MsgType.REPORT_RSP
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {"status": FirmwareStatus.from_int}

    status: int = FirmwareStatus.SUCCESS
    report_size: int = ATTESTATION_REPORT_SIZE
    reserved_0x8: bytes = bytes(24)
    report: bytes = bytes(ATTESTATION_REPORT_SIZE)

    @property
    def attestation_report(self) -> AttestationReport:
        """``report`` decoded (:func:`ghcb.report.parse_report`)."""
        return parse_report(self.report)


@dataclass(frozen=True, slots=True)
class KeyReq(Payload):
    """MSG_KEY_REQ (0x20 bytes): Linux ``struct snp_derived_key_req``."""

    SCHEMA: ClassVar[cs.Struct] = schema.snp_derived_key_req
    SPEC: ClassVar[str] = "SNP firmware MSG_KEY_REQ (snp-firmware-facts §3.7)"
    WHAT: ClassVar[str] = "a MSG_KEY_REQ"
    MSG_TYPE: ClassVar[MsgType] = MsgType.KEY_REQ

    root_key_select: int = 0
    reserved_0x4: bytes = bytes(4)
    guest_field_select: int = 0
    vmpl: int = 0
    guest_svn: int = 0
    tcb_version: int = 0


@dataclass(frozen=True, slots=True)
class KeyRsp(Payload):
    """MSG_KEY_RSP (0x40 bytes): STATUS, reserved, the 32-byte derived key."""

    SCHEMA: ClassVar[cs.Struct] = schema.msg_key_rsp
    SPEC: ClassVar[str] = "SNP firmware MSG_KEY_RSP (snp-firmware-facts §3.7)"
    WHAT: ClassVar[str] = "a MSG_KEY_RSP"
    MSG_TYPE: ClassVar[MsgType] = MsgType.KEY_RSP
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {"status": FirmwareStatus.from_int}

    status: int = FirmwareStatus.SUCCESS
    reserved_0x4: bytes = bytes(28)
    derived_key: bytes = bytes(32)


@dataclass(frozen=True, slots=True)
class TscInfoReq(Payload):
    """TSC_INFO_REQ (128 reserved bytes): Linux ``struct snp_tsc_info_req``."""

    SCHEMA: ClassVar[cs.Struct] = schema.snp_tsc_info_req
    SPEC: ClassVar[str] = "Linux asm/sev.h struct snp_tsc_info_req (ghcb-facts §8.3)"
    WHAT: ClassVar[str] = "a TSC_INFO_REQ"
    MSG_TYPE: ClassVar[MsgType] = MsgType.TSC_INFO_REQ

    reserved_0x0: bytes = bytes(128)


@dataclass(frozen=True, slots=True)
class TscInfoRsp(Payload):
    """TSC_INFO_RSP (128 bytes): Linux ``struct snp_tsc_info_resp``."""

    SCHEMA: ClassVar[cs.Struct] = schema.snp_tsc_info_resp
    SPEC: ClassVar[str] = "Linux asm/sev.h struct snp_tsc_info_resp (ghcb-facts §8.3)"
    WHAT: ClassVar[str] = "a TSC_INFO_RSP"
    MSG_TYPE: ClassVar[MsgType] = MsgType.TSC_INFO_RSP
    ENUMS: ClassVar[Mapping[str, Callable[[int], int]]] = {"status": FirmwareStatus.from_int}

    status: int = FirmwareStatus.SUCCESS
    reserved_0x4: bytes = bytes(4)
    tsc_scale: int = 0
    tsc_offset: int = 0
    tsc_factor: int = 0
    reserved_0x1c: bytes = bytes(100)


#: The payload record of each message type modelled here.
PAYLOADS: Final[dict[MsgType, type[Payload]]] = {
    cls.MSG_TYPE: cls for cls in (ReportReq, ReportRsp, KeyReq, KeyRsp, TscInfoReq, TscInfoRsp)
}
