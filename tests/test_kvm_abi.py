"""KVM exit structures: spec/tables/kvm.toml == construct schemas == the struct codec."""

from __future__ import annotations

from typing import Any

import pytest

from ghcb._fast import flat_fields
from ghcb.codes import Errno, KvmExit, VmmError
from ghcb.hypervisor import KVM_RUN_SIZE, MergedAbi, V15Abi, decode_kvm_run, encode_kvm_run
from ghcb.schemas import kvm
from tests.helpers import assert_roundtrip, load_table

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
