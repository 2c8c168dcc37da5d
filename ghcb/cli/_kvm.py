"""``ghcb kvm decode``: the ``kvm_run`` bytes of a certificate exit, in either ABI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TextIO

from ghcb.cli._common import EXIT_FINDINGS, EXIT_OK, add_input, emit, enum_name, named, shown_name
from ghcb.cli._common import read_structure as read
from ghcb.codes import Errno, KvmExit, VmmError
from ghcb.hypervisor.kvm_abi import KVM_RUN_SIZE, MergedAbi, V15Abi, decode_kvm_run

if TYPE_CHECKING:
    import argparse

    from ghcb.cli._common import Command, Group

#: ``--abi`` → the ABI object, and how its ``ret`` reads: a positive errno (merged
#: ``kvm_exit_snp_req_certs.ret``) or the GHCB VMM error (v15 ``kvm_user_vmgexit.ret``).
_ABIS: Final[dict[str, tuple[MergedAbi | V15Abi, type[Errno] | type[VmmError]]]] = {
    "merged": (MergedAbi(), Errno),
    "v15": (V15Abi(), VmmError),
}

#: The exit union's struct in each ABI (uapi/linux/kvm.h).
_STRUCT: Final = {
    "merged": "snp_req_certs (struct kvm_exit_snp_req_certs)",
    "v15": "vmgexit (struct kvm_user_vmgexit)",
}


def _cmd_decode(args: argparse.Namespace, out: TextIO) -> int:
    abi, ret_codes = _ABIS[args.abi]
    prefix, body = decode_kvm_run(abi, read(args, KVM_RUN_SIZE))
    reason = prefix["exit_reason"]
    ok = reason == abi.exit_reason
    ret = ret_codes.from_int(body["ret"])
    doc: dict[str, object] = {
        "ok": ok,
        "abi": args.abi,
        "exit_reason": named(reason, enum_name(KvmExit.from_int(reason))),
        "prefix": prefix,
        "exit": body,
        "ret": named(body["ret"], enum_name(ret)),
    }
    if args.json:
        emit(doc, out)
    else:
        name = enum_name(KvmExit.from_int(reason)) or "?"
        print(f"kvm_run {shown_name(args)} ({args.abi} ABI, {KVM_RUN_SIZE} bytes)", file=out)
        print(f"  exit_reason   {reason} {name}", file=out)
        for key, value in prefix.items():
            if key != "exit_reason" and (value or args.all):
                print(f"  {key:<29} {value:#x}", file=out)
        print(f"  {_STRUCT[args.abi]}:", file=out)
        for key, value in body.items():
            meaning = f" {enum_name(ret) or '(unknown)'}" if key == "ret" and value else ""
            print(f"    {key:<12} {value:#x}{meaning}", file=out)
        if not ok:
            print(f"  not this ABI's exit ({abi.exit_reason}): try the other --abi", file=out)
    return EXIT_OK if ok else EXIT_FINDINGS


def register(group: Group, command: Command) -> None:
    """The ``kvm`` commands."""
    p = command(
        group,
        "decode",
        f"decode the kvm_run prefix and exit union ({KVM_RUN_SIZE} bytes) of a certificate "
        "exit; exit 1 when exit_reason is not the ABI's",
        _cmd_decode,
        "ghcb kvm decode run.bin\nghcb kvm decode run.hex --abi v15 --json",
    )
    add_input(p, f"kvm_run bytes ({KVM_RUN_SIZE}: prefix + exit union)")
    p.add_argument(
        "--abi",
        choices=tuple(_ABIS),
        default="merged",
        help="merged: KVM_EXIT_SNP_REQ_CERTS {gpa, npages, ret} (default); v15: "
        "KVM_EXIT_VMGEXIT struct kvm_user_vmgexit",
    )
    p.add_argument("--all", action="store_true", help="list zero prefix fields too")
