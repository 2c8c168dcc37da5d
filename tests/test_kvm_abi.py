"""KVM exit structures: spec/tables/kvm.toml == construct schemas == the struct codec."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb._fast import flat_fields
from ghcb.codes import Errno, KvmExit, VmmError
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    DisabledAbi,
    HypervisorUsageError,
    MergedAbi,
    V15Abi,
    VmmAnswer,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.kvm_abi import _Codec, guest_error, with_immediate_exit
from ghcb.hypervisor.results import system_event_run
from ghcb.schemas import kvm
from tests.helpers import SPEC, assert_roundtrip, load_table

TABLE = load_table("kvm")


@pytest.mark.parametrize(
    ("schema", "section"),
    [
        (kvm.kvm_run_prefix, "kvm_run"),
        (kvm.kvm_exit_snp_req_certs, "snp_req_certs"),
        (kvm.kvm_user_vmgexit, "user_vmgexit"),
    ],
    ids=["kvm_run", "snp_req_certs", "user_vmgexit"],
)
def test_layouts(schema: Any, section: str) -> None:
    """Every field at the table's offset and size, C padding included."""
    got = [(f.name, f.offset, f.size) for f in flat_fields(schema)]
    assert got == [(f["name"], f["offset"], f["size"]) for f in TABLE[section]["field"]]


def test_sizes_and_numbers() -> None:
    """Union offset/size, struct sizes, exit reasons, v15 constants, errno values."""
    assert TABLE["kvm_run"]["exit_union_offset"] == kvm.KVM_RUN_EXIT_UNION_OFFSET
    assert TABLE["kvm_run"]["exit_union_size"] == kvm.KVM_RUN_EXIT_UNION_SIZE
    assert KVM_RUN_SIZE == 32 + 256
    assert kvm.kvm_exit_snp_req_certs.sizeof() == TABLE["snp_req_certs"]["size"]
    assert kvm.kvm_user_vmgexit.sizeof() == TABLE["user_vmgexit"]["size"]
    assert MergedAbi().exit_reason == KvmExit.SNP_REQ_CERTS == TABLE["snp_req_certs"]["exit_reason"]
    assert V15Abi().exit_reason == KvmExit.VMGEXIT == TABLE["user_vmgexit"]["exit_reason"]
    v15 = TABLE["user_vmgexit"]
    assert (
        v15["type_req_certs"],
        v15["flags_notify_done"],
        v15["status_pending"],
        v15["status_done"],
    ) == (
        kvm.KVM_USER_VMGEXIT_REQ_CERTS,
        kvm.REQ_CERTS_FLAGS_NOTIFY_DONE,
        kvm.REQ_CERTS_STATUS_PENDING,
        kvm.REQ_CERTS_STATUS_DONE,
    )
    assert {name: int(e) for name, e in Errno.__members__.items()} == TABLE["errno"]
    merged_ret = TABLE["snp_req_certs"]["ret"]
    assert merged_ret == {"ok": 0, "ENOSPC": Errno.ENOSPC, "EAGAIN": Errno.EAGAIN, "EIO": Errno.EIO}
    assert v15["ret"] == {
        "ok": 0,
        "INVALID_LEN": VmmError.INVALID_LEN,
        "BUSY": VmmError.BUSY,
        "GENERIC": VmmError.GENERIC_V15,
    }


#: Per ABI: the exit fields to encode, the construct schema, and its reserved bytes.
CODEC_CASES: list[tuple[Any, dict[str, int], Any, dict[str, bytes]]] = [
    (MergedAbi(), {"gpa": 0x80000, "npages": 4, "ret": 28}, kvm.kvm_exit_snp_req_certs, {}),
    (
        V15Abi(),
        {"type": 1, "data_gpa": 0x80000, "data_npages": 4, "ret": 1, "flags": 1, "status": 0},
        kvm.kvm_user_vmgexit,
        {"reserved_0x4": bytes(4), "reserved_0x1e": bytes(2)},
    ),
]


@pytest.mark.parametrize(
    ("abi", "fields", "schema", "reserved"), CODEC_CASES, ids=["merged", "v15"]
)
def test_struct_codec_matches_schema(
    abi: Any, fields: dict[str, int], schema: Any, reserved: dict[str, bytes]
) -> None:
    """encode/decode_kvm_run (struct, derived) agree with the construct schemas."""
    obj: dict[str, int | bytes] = {**fields, **reserved}
    data = encode_kvm_run(abi, fields, immediate_exit=1)
    assert data[1] == 1
    assert int.from_bytes(data[8:12], "little") == abi.exit_reason
    body = data[32 : 32 + schema.sizeof()]
    assert_roundtrip(schema, body, obj)
    prefix, decoded = decode_kvm_run(abi, data)
    assert decoded == fields
    assert prefix["immediate_exit"] == 1
    assert not any(data[32 + schema.sizeof() :])


# -- the codec, built afresh (the module's own codecs are built at import) -----------------------
def int_fields(section: str | None) -> list[tuple[str, int, int]]:
    """``(name, kvm_run offset, size)`` of the table's integer fields: the prefix, then the exit
    struct of ``section`` at the union offset (reserved bytes are not fields of the codec)."""
    base = TABLE["kvm_run"]["exit_union_offset"]
    rows = [(f["name"], f["offset"], f["size"]) for f in TABLE["kvm_run"]["field"]]
    if section is not None:
        rows += [(f["name"], base + f["offset"], f["size"]) for f in TABLE[section]["field"]]
    return [row for row in rows if not row[0].startswith("reserved_")]


#: The spec vectors' exit fields (README: ``ghcb kvm decode spec/vectors/kvm_run_*.bin``).
VECTORS: dict[str, tuple[str, Any, dict[str, int]]] = {
    "merged": (
        "kvm_run_req_certs_merged.bin",
        kvm.kvm_exit_snp_req_certs,
        {"gpa": 0x80000, "npages": 1, "ret": 0},
    ),
    "v15": (
        "kvm_run_vmgexit_v15.bin",
        kvm.kvm_user_vmgexit,
        {"type": 1, "data_gpa": 0x80000, "data_npages": 1, "ret": 0, "flags": 0, "status": 0},
    ),
}
SECTIONS = {"merged": "snp_req_certs", "v15": "user_vmgexit"}
ABIS: dict[str, Any] = {"merged": MergedAbi(), "v15": V15Abi()}


@pytest.mark.parametrize("abi", VECTORS)
def test_fresh_codec_reads_and_writes_the_vectors(abi: str) -> None:
    """``_Codec(schema)``: the table's integer fields at their kvm_run offsets; the spec vector
    decodes to its fields and is rebuilt byte for byte from a blank kvm_run."""
    name, schema, fields = VECTORS[abi]
    vector = (SPEC / "vectors" / name).read_bytes()
    codec = _Codec(schema)
    assert [(f.name, f.offset, f.size) for f in codec.ints] == int_fields(SECTIONS[abi])
    exit_reason = TABLE[SECTIONS[abi]]["exit_reason"]
    prefix = {f: 0 for f, _, _ in int_fields(None)} | {"exit_reason": exit_reason}
    assert codec.read(vector) == (prefix, fields)
    assert codec.read_exit(vector) == fields
    assert codec.write(bytes(KVM_RUN_SIZE), {"exit_reason": exit_reason, **fields}) == vector
    assert codec.write_trusted(bytes(KVM_RUN_SIZE), prefix | fields) == vector
    # Every field of the exit struct at its own offset (a field named like a prefix field,
    # v15's ``flags``, is the exit's: the prefix's is never written): distinct values.
    exit_rows = int_fields(SECTIONS[abi])[len(int_fields(None)) :]
    marked = {f: 0x11 * (i + 1) for i, (f, _, _) in enumerate(exit_rows)}
    data = codec.write(bytes(KVM_RUN_SIZE), marked)
    expected = bytearray(KVM_RUN_SIZE)
    for f, offset, size in exit_rows:
        expected[offset : offset + size] = marked[f].to_bytes(size, "little")
    assert data == expected
    assert codec.read(data) == ({f: 0 for f in prefix}, marked)
    # The public codec agrees (ABI objects use the import-time twin).
    assert decode_kvm_run(ABIS[abi], vector) == (prefix, fields)
    assert encode_kvm_run(ABIS[abi], fields) == vector


def test_fresh_prefix_only_codec() -> None:
    """Without an exit struct (certificate fetching off): the prefix alone."""
    codec = _Codec(None)
    assert [(f.name, f.offset, f.size) for f in codec.ints] == int_fields(None)
    data = codec.write(bytes(KVM_RUN_SIZE), {"immediate_exit": 1, "exit_reason": 43, "cr8": 2})
    assert data[:16] == bytes([0, 1]) + bytes(6) + (43).to_bytes(4, "little") + bytes(4)
    assert data[16:24] == (2).to_bytes(8, "little")
    assert not any(data[24:])
    prefix, body = codec.read(data)
    assert (prefix["immediate_exit"], prefix["exit_reason"], prefix["cr8"], body) == (1, 43, 2, {})


def test_system_event_run_bytes() -> None:
    """A termination's kvm_run (sev.c: exit_reason = KVM_EXIT_SYSTEM_EVENT, system_event.type
    = KVM_SYSTEM_EVENT_SEV_TERM, ndata = 1, data[0]) byte for byte from kvm.toml; every other
    byte stays as userspace left it."""
    event = TABLE["system_event"]
    union = TABLE["kvm_run"]["exit_union_offset"]
    at = {f["name"]: union + f["offset"] for f in event["field"]}
    base = bytes(range(256)) + bytes(range(32))
    data0 = 0x0123_4567_89AB_CDEF
    expected = bytearray(base)
    expected[8:12] = event["exit_reason"].to_bytes(4, "little")
    expected[at["type"] : at["type"] + 4] = event["type_sev_term"].to_bytes(4, "little")
    expected[at["ndata"] : at["ndata"] + 4] = event["ndata"].to_bytes(4, "little")
    expected[at["data_0"] : at["data_0"] + 8] = data0.to_bytes(8, "little")
    assert system_event_run(base, data0) == expected
    assert (at, event["exit_reason"], event["type_sev_term"]) == (
        {"type": 32, "ndata": 36, "data_0": 40},
        24,
        6,
    )


KVM_H = "Linux uapi/linux/kvm.h struct kvm_run"
SEV_C = "Linux arch/x86/kvm/svm/sev.c"


def refusal(call: Any) -> tuple[str, str, str, str | None, int | None]:
    with pytest.raises(HypervisorUsageError) as info:
        call()
    e = info.value
    return (e.message, e.rule, e.spec, e.field, e.offset)


def test_codec_refusals_are_exact() -> None:
    """Unknown field, wrong type, out of range (with the field's kvm_run offset), no mapping,
    no exit in the ABI, not an ABI, wrong size: rule, spec, field and offset."""
    merged, v15 = MergedAbi(), V15Abi()
    assert refusal(lambda: encode_kvm_run(merged, {"nope": 1})) == (
        "kvm_run has no field 'nope' in this ABI",
        "field-name",
        KVM_H,
        None,
        None,
    )
    assert refusal(lambda: encode_kvm_run(merged, {"gpa": True})) == (
        "kvm_run field gpa must be an int, not bool",
        "field-type",
        KVM_H,
        "gpa",
        None,
    )
    assert refusal(lambda: encode_kvm_run(v15, {"ret": 2**32})) == (
        f"kvm_run field ret = {2**32} does not fit 4 bytes",
        "field-range",
        KVM_H,
        "ret",
        56,
    )
    assert refusal(lambda: encode_kvm_run(v15, {"flags": -1})) == (
        "kvm_run field flags = -1 does not fit 1 bytes",
        "field-range",
        KVM_H,
        "flags",
        60,
    )
    assert encode_kvm_run(v15, {"ret": 2**32 - 1, "flags": 255})[56:61] == b"\xff" * 5
    assert refusal(lambda: encode_kvm_run(merged, [("gpa", 1)])) == (  # type: ignore[arg-type]
        "kvm_run fields must be a mapping, not list",
        "input-type",
        KVM_H,
        None,
        None,
    )
    assert refusal(lambda: encode_kvm_run(merged, {}, immediate_exit=256)) == (
        "kvm_run field immediate_exit = 256 does not fit 1 bytes",
        "field-range",
        KVM_H,
        "immediate_exit",
        1,
    )
    assert refusal(lambda: encode_kvm_run(DisabledAbi(), {})) == (
        "disabled: certificate fetching is off, there is no kvm_run exit",
        "abi",
        SEV_C,
        None,
        None,
    )
    assert refusal(lambda: decode_kvm_run("merged", bytes(KVM_RUN_SIZE))) == (  # type: ignore[arg-type]
        "abi must be MergedAbi() or V15Abi(), not str",
        "abi",
        SEV_C,
        None,
        None,
    )
    assert refusal(lambda: decode_kvm_run(merged, bytes(KVM_RUN_SIZE + 1))) == (
        f"kvm_run must be {KVM_RUN_SIZE} bytes (prefix + exit union), not {KVM_RUN_SIZE + 1}",
        "kvm-run-size",
        KVM_H,
        None,
        None,
    )
    assert refusal(lambda: decode_kvm_run(merged, 5))[1:4] == ("input-type", KVM_H, None)  # type: ignore[arg-type]
    view = memoryview(bytearray(encode_kvm_run(merged, {"gpa": 0x1000})))
    assert decode_kvm_run(merged, view)[1]["gpa"] == 0x1000


def test_exit_reason_checks() -> None:
    """``kvm_run.exit_reason`` is a __u32: the v7 patch's 42 and the u32 maximum are fine."""
    assert MergedAbi(exit_reason=42).exit_reason == 42
    assert encode_kvm_run(V15Abi(exit_reason=2**32 - 1), {})[8:12] == b"\xff" * 4
    assert refusal(lambda: MergedAbi(exit_reason=2**32)) == (
        f"exit_reason {2**32} does not fit kvm_run.exit_reason (u32)",
        "field-range",
        KVM_H,
        "exit_reason",
        None,
    )
    assert refusal(lambda: V15Abi(exit_reason=-1))[1] == "field-range"
    assert refusal(lambda: V15Abi(exit_reason=True)) == (
        "exit_reason must be an int, not bool",
        "field-type",
        KVM_H,
        "exit_reason",
        None,
    )


def test_guest_error_and_immediate_exit() -> None:
    """SNP_GUEST_ERR(vmm, fw) keeps the low 32 bits of each half (kvm.toml exitinfo2);
    with_immediate_exit writes byte 1 only, as 0 or 1."""
    exitinfo2 = TABLE["snp_req_certs"]["exitinfo2"]
    assert guest_error(VmmError.INVALID_LEN, 0) == exitinfo2["ENOSPC"]
    assert guest_error(VmmError.BUSY, 0) == exitinfo2["EAGAIN"]
    assert guest_error(VmmError.GENERIC, 0) == exitinfo2["EIO"]
    assert guest_error(-1, -1) == 0xFFFF_FFFF_FFFF_FFFF
    assert guest_error(1 << 32 | 2, 1 << 32 | 0x16) == 0x2_0000_0016
    base = bytes(range(256)) + bytes(range(32))
    assert with_immediate_exit(base, 7) == base[:1] + b"\x01" + base[2:]
    assert with_immediate_exit(base, 0) == base[:1] + b"\x00" + base[2:]
    assert refusal(lambda: with_immediate_exit(base[:-1], 1))[1] == "kvm-run-size"


def test_reply_refusals() -> None:
    """reply: an answer that is not a VmmAnswer, TOO_SMALL without the page count."""
    run = encode_kvm_run(MergedAbi(), {"gpa": 0x1000, "npages": 1})
    assert refusal(lambda: MergedAbi().reply(run, "ok", hold=False)) == (  # type: ignore[arg-type]
        "answer must be a VmmAnswer, not 'ok'",
        "input-type",
        SEV_C,
        None,
        None,
    )
    assert refusal(lambda: MergedAbi().reply(run, VmmAnswer.TOO_SMALL, hold=False)) == (
        "a TOO_SMALL answer needs the page count",
        "vmm-answer",
        SEV_C,
        None,
        None,
    )
