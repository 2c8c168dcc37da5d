"""KVM exit structures: spec/tables/kvm.toml == construct schemas == the struct codec."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb._fast import flat_fields
from ghcb.codes import Errno, KvmExit, VmmError
from ghcb.hypervisor import KVM_RUN_SIZE, MergedAbi, V15Abi, decode_kvm_run, encode_kvm_run
from ghcb.hypervisor.kvm_abi import _Codec
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
