"""ghcb: encode, decode, check and serve the AMD SEV-ES / SEV-SNP GHCB wire formats.

The bytes that cross the guest/hypervisor boundary, exactly: the 4 KiB GHCB page and its valid
bitmap, SW_EXITCODE values, SW_EXITINFO1/2 encodings (GHCB_ERR_*, SNP_GUEST_ERR packing), the
GHCB MSR protocol and the SEV firmware status codes. Every decoder either returns typed values
or raises a :class:`GhcbError` subclass naming the field, offset and rule.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ghcb._extras import MissingExtraError
from ghcb.certs import (
    CertEntry,
    CertGuid,
    build_cert_table,
    cert_names,
    check_cert_table,
    pages_needed,
    parse_cert_table,
)
from ghcb.check import KvmResponse, PageCheck, check_page, check_page_full, expected_response
from ghcb.codes import (
    ApCreationOp,
    ApJumpTableOp,
    EventType,
    ExitCode,
    FirmwareStatus,
    GenTermReason,
    GhcbErr,
    HvFeature,
    HvResp,
    LinuxTermReason,
    MsgType,
    MsrCode,
    PscErr,
    PscOp,
    TermReasonSet,
    VmmError,
)
from ghcb.errors import (
    CertTableError,
    FieldValueError,
    GhcbError,
    InputTypeError,
    LengthError,
    NoValidBitError,
    Severity,
    UnknownFieldError,
    Violation,
)
from ghcb.exitinfo import (
    EventInjection,
    GuestError,
    HvResponse,
    IoioInfo,
    TermRequestInfo,
    decode_exit_info,
    pack_guest_error,
    unpack_guest_error,
)
from ghcb.hypervisor.rules import required_inputs
from ghcb.msr import MsrMessage, UnknownMsr, decode_msr, encode_msr
from ghcb.page import GhcbPage, build_page, parse_page
from ghcb.psc import PscDesc, PscEntry, PscHdr, build_psc, check_psc, parse_psc

__all__ = [
    "ApCreationOp",
    "ApJumpTableOp",
    "CertEntry",
    "CertGuid",
    "CertTableError",
    "EventInjection",
    "EventType",
    "ExitCode",
    "FieldValueError",
    "FirmwareStatus",
    "GenTermReason",
    "GhcbErr",
    "GhcbError",
    "GhcbPage",
    "GuestError",
    "HvFeature",
    "HvResp",
    "HvResponse",
    "InputTypeError",
    "IoioInfo",
    "KvmResponse",
    "LengthError",
    "LinuxTermReason",
    "MissingExtraError",
    "MsgType",
    "MsrCode",
    "MsrMessage",
    "NoValidBitError",
    "PageCheck",
    "PscDesc",
    "PscEntry",
    "PscErr",
    "PscHdr",
    "PscOp",
    "Severity",
    "TermReasonSet",
    "TermRequestInfo",
    "UnknownFieldError",
    "UnknownMsr",
    "Violation",
    "VmmError",
    "__version__",
    "build_cert_table",
    "build_page",
    "build_psc",
    "cert_names",
    "check_cert_table",
    "check_page",
    "check_page_full",
    "check_psc",
    "decode_exit_info",
    "decode_msr",
    "encode_msr",
    "expected_response",
    "pack_guest_error",
    "pages_needed",
    "parse_cert_table",
    "parse_page",
    "parse_psc",
    "required_inputs",
    "unpack_guest_error",
]
