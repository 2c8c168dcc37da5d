"""``ghcb exitinfo2 decode|encode`` and ``ghcb msr decode|encode``: 64-bit values."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from ghcb.cli._common import (
    EXIT_OK,
    Usage,
    emit,
    enum_name,
    field_pairs,
    named,
    parse_number,
)
from ghcb.codes import FirmwareStatus, MsrCode, VmmError
from ghcb.exitinfo import pack_guest_error, unpack_guest_error
from ghcb.msr import UnknownMsr, decode_msr, encode_msr, msr_record

if TYPE_CHECKING:
    import argparse
    import enum

    from ghcb.cli._common import Command, Group
    from ghcb.msr import MsrMessage


def _code(text: str, enum_type: type[enum.IntEnum], what: str, maximum: int) -> int:
    """A code by its enum name (any case) or as a number."""
    member = enum_type.__members__.get(text.upper())
    return int(member) if member is not None else parse_number(text, what, maximum=maximum)


# -- exitinfo2 --------------------------------------------------------------------------------
def _exitinfo2_doc(value: int) -> dict[str, object]:
    vmm, fw = unpack_guest_error(value)
    return {
        "ok": True,
        "value": value,
        "vmm_error": named(vmm, enum_name(vmm)),
        "fw_error": named(fw, enum_name(fw)),
    }


def _exitinfo2_out(value: int, args: argparse.Namespace, out: TextIO) -> int:
    doc = _exitinfo2_doc(value)
    if args.json:
        emit(doc, out)
        return EXIT_OK
    vmm, fw = unpack_guest_error(value)
    print(f"exitinfo2 {value:#018x}", file=out)
    print(f"  vmm_error [63:32]  {int(vmm):#x} {enum_name(vmm) or '(unknown)'}", file=out)
    print(f"  fw_error  [31:0]   {int(fw):#x} {enum_name(fw) or '(unknown)'}", file=out)
    return EXIT_OK


def _cmd_exitinfo2_decode(args: argparse.Namespace, out: TextIO) -> int:
    return _exitinfo2_out(parse_number(args.value, "VALUE"), args, out)


def _cmd_exitinfo2_encode(args: argparse.Namespace, out: TextIO) -> int:
    u32 = (1 << 32) - 1
    vmm = _code(args.vmm, VmmError, "--vmm", u32)
    fw = _code(args.fw, FirmwareStatus, "--fw", u32)
    return _exitinfo2_out(pack_guest_error(vmm, fw), args, out)


# -- msr --------------------------------------------------------------------------------------
def _msr_out(value: int, args: argparse.Namespace, out: TextIO) -> int:
    msg = decode_msr(value)
    name = None if isinstance(msg, UnknownMsr) else msg.code.name
    fields = msg.fields()
    if args.json:
        # "msr": the whole value ("value" is a field of CPUID_RESP)
        emit({"ok": True, "msr": value, "code": named(int(msg.code), name), **fields}, out)
        return EXIT_OK
    print(f"GHCB MSR {value:#018x}: {name or 'unknown GHCBInfo'} ({int(msg.code):#05x})", file=out)
    for key, field_value in fields.items():
        print(f"  {key:<16} {field_value:#x}", file=out)
    return EXIT_OK


def _cmd_msr_decode(args: argparse.Namespace, out: TextIO) -> int:
    return _msr_out(parse_number(args.value, "VALUE"), args, out)


def _cmd_msr_encode(args: argparse.Namespace, out: TextIO) -> int:
    code = _code(args.code, MsrCode, "CODE", 0xFFF)  # GHCBInfo is bits [11:0]
    fields = {n: parse_number(v, f"field {n}") for n, v in field_pairs(args.pairs).items()}
    message: MsrMessage | UnknownMsr
    if code in MsrCode.__members__.values():
        message = msr_record(MsrCode(code), **fields)
    else:
        if set(fields) - {"data"}:
            raise Usage(f"GHCBInfo {code:#x} is no known code: its only field is data")
        message = UnknownMsr(info=code, data=fields.get("data", 0))
    return _msr_out(encode_msr(message), args, out)


# -- wiring -----------------------------------------------------------------------------------
def register_exitinfo2(group: Group, command: Command) -> None:
    """The ``exitinfo2`` commands."""
    command(
        group,
        "decode",
        "split a guest request's SW_EXITINFO2 into VMM error and firmware status",
        _cmd_exitinfo2_decode,
        "ghcb exitinfo2 decode 0x100000000\nghcb exitinfo2 decode 22 --json",
    ).add_argument("value", metavar="VALUE", help="u64, decimal or 0x hex")
    p = command(
        group,
        "encode",
        "SNP_GUEST_ERR(vmm, fw): VMM error in bits 63:32, firmware status in 31:0",
        _cmd_exitinfo2_encode,
        "ghcb exitinfo2 encode --vmm INVALID_LEN\nghcb exitinfo2 encode --fw 0x16 --json",
    )
    p.add_argument("--vmm", default="0", metavar="ERR", help="VmmError name or u32 (default 0)")
    p.add_argument(
        "--fw", default="0", metavar="STATUS", help="FirmwareStatus name or u32 (default 0)"
    )


def register_msr(group: Group, command: Command) -> None:
    """The ``msr`` commands."""
    command(
        group,
        "decode",
        "decode a GHCB MSR protocol value (MSR 0xC0010130)",
        _cmd_msr_decode,
        "ghcb msr decode 0x14\nghcb msr decode 0x7fffffffff001 --json",
    ).add_argument("value", metavar="VALUE", help="u64, decimal or 0x hex")
    p = command(
        group,
        "encode",
        "build a GHCB MSR protocol value from its code and fields",
        _cmd_msr_encode,
        "ghcb msr encode SEV_INFO_REQ\nghcb msr encode PSC_REQ gfn=0x1234 operation=1 --json",
    )
    p.add_argument("code", metavar="CODE", help="MsrCode name (e.g. CPUID_REQ) or GHCBInfo number")
    p.add_argument(
        "pairs",
        nargs="*",
        metavar="FIELD=VALUE",
        help="the code's fields (msr decode lists them), decimal or 0x hex; others are 0",
    )
