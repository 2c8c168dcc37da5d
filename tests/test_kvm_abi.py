"""KVM exit structures: spec/tables/kvm.toml == construct schemas == the struct codec."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from ghcb._fast import flat_fields
from ghcb.codes import Errno, HvResp, KvmExit, MsgType, VmmError
from ghcb.errors import InputTypeError
from ghcb.hypervisor import (
    KVM_RUN_SIZE,
    DisabledAbi,
    HypervisorUsageError,
    MergedAbi,
    RecordingFirmware,
    V15Abi,
    VmmAnswer,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.kvm_abi import (
    IMMEDIATE_EXIT_OFFSET,
    MSG_TYPE_OFFSET,
    Exit,
    Fail,
    _Codec,
    guest_error,
    kvm_run_bytes,
    with_immediate_exit,
)
from ghcb.hypervisor.results import system_event_run
from ghcb.schemas import kvm
from ghcb.schemas.page import PAGE_SIZE
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


def test_reply_takes_the_exit_or_its_bytes() -> None:
    """reply(Exit) answers from the Exit's kvm_run, as reply(its bytes) does; encode's
    immediate_exit is 0 unless asked."""
    abi = MergedAbi()
    run = abi.encode({"gpa": 0x1000, "npages": 1})
    assert run[IMMEDIATE_EXIT_OFFSET] == 0
    exit_ = Exit(run, 0x1000, 1)
    answer = abi.reply(run, VmmAnswer.TOO_SMALL, npages=3, hold=True)
    assert abi.reply(exit_, VmmAnswer.TOO_SMALL, npages=3, hold=True) == answer
    assert abi.decode(answer) == (
        {**abi.decode(run)[0], "immediate_exit": 1},
        {"gpa": 0x1000, "npages": 3, "ret": Errno.ENOSPC},
    )


def test_kvm_run_bytes_refusal_is_exact() -> None:
    """Not bytes-like: the converter's message under kvm.h's spec (the cause too); a bytearray
    or memoryview comes back as bytes."""
    with pytest.raises(HypervisorUsageError) as info:
        kvm_run_bytes(5)
    e = info.value
    assert (e.message, e.rule, e.spec) == (
        "kvm_run must be bytes-like, not int",
        "input-type",
        KVM_H,
    )
    cause = e.__cause__
    assert isinstance(cause, InputTypeError)
    assert (cause.message, cause.spec) == (e.message, KVM_H)
    run = bytes(range(256)) + bytes(range(32))
    for data in (bytearray(run), memoryview(run)):
        got = MergedAbi().kvm_run_bytes(data)
        assert (type(got), got) == (bytes, run)


# -- the handlers, over a RequestContext of mapped pages -----------------------------------------
REQ, RESP, CERTS, HOLE = 0x10000, 0x11000, 0x12000, 0x20000


@dataclass
class Ctx:
    """KVM's state for one VMGEXIT over guest pages ``pages`` (GPA -> page); records every
    kvm_read_guest, the exit info written and the undefined-answer note."""

    pages: dict[int, bytearray]
    regs: dict[str, int] = field(default_factory=lambda: {"rax": CERTS, "rbx": 1})
    exit_info_1: int = REQ
    exit_info_2: int = RESP
    kvm_run: bytes = bytes(KVM_RUN_SIZE)
    firmware: Any = field(default_factory=RecordingFirmware)
    guest_req_lock: threading.Lock = field(default_factory=threading.Lock)
    guest_resp_buf: bytearray = field(default_factory=lambda: bytearray(PAGE_SIZE))
    reads: list[tuple[int, int]] = field(default_factory=list)
    info: list[tuple[int | None, int]] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)

    def is_valid(self, name: str) -> bool:
        return name in self.regs

    def is_mapped(self, gpa: int) -> bool:
        return gpa & ~0xFFF in self.pages

    def read_guest(self, gpa: int, size: int) -> bytes | None:
        self.reads.append((gpa, size))
        if not all(self.is_mapped(a) for a in range(gpa, gpa + size)):
            return None
        return bytes(self.pages[a & ~0xFFF][a & 0xFFF] for a in range(gpa, gpa + size))

    def write_guest(self, gpa: int, data: bytes | bytearray) -> bool:
        if not all(self.is_mapped(a) for a in range(gpa, gpa + len(data))):
            return False
        for i, b in enumerate(data):
            self.pages[(gpa + i) & ~0xFFF][(gpa + i) & 0xFFF] = b
        return True

    def set_exit_info(self, info1: int, info2: int) -> None:
        self.info.append((info1, info2))

    def set_exit_info_2(self, info2: int) -> None:
        self.info.append((None, info2))

    def note_undefined(self, what: str) -> None:
        self.undefined.append(what)


def mapped(*gpas: int, msg_type: int = MsgType.REPORT_REQ) -> dict[int, bytearray]:
    pages = {gpa: bytearray(b"\xee" * PAGE_SIZE) for gpa in gpas}
    if REQ in pages:
        pages[REQ][MSG_TYPE_OFFSET] = msg_type
    return pages


MERGED_TREES = pytest.mark.parametrize("abi", [DisabledAbi(), MergedAbi()], ids=["off", "on"])


@MERGED_TREES
def test_merged_guest_request_failures(abi: Any) -> None:
    """snp_handle_guest_req: "if (kvm_read_guest(kvm, req_gpa, …, PAGE_SIZE)) return -EIO;",
    "if (ret && !fw_err) return ret;", "if (kvm_write_guest(kvm, resp_gpa, …)) return -EIO;"
    — KVM_RUN fails, the GHCB's exit info is not written."""
    ctx = Ctx(mapped(RESP))
    assert abi.guest_request(ctx) == Fail(Errno.EIO, "kvm_read_guest of the request page failed")
    assert (ctx.reads, ctx.info) == ([(REQ, PAGE_SIZE)], [])
    ctx = Ctx(mapped(REQ, RESP), firmware=RecordingFirmware(fail=True))
    assert abi.guest_request(ctx) == Fail(
        Errno.ETIMEDOUT,
        "firmware command failed without a status: firmware failed without a status (timed out)",
    )
    assert ctx.info == []
    ctx = Ctx(mapped(REQ))
    assert abi.guest_request(ctx) == Fail(Errno.EIO, "kvm_write_guest of the response page failed")
    assert ctx.info == []


@MERGED_TREES
def test_merged_guest_request_answers(abi: Any) -> None:
    """The firmware's response reaches the response page; "svm_vmgexit_no_action(svm,
    SNP_GUEST_ERR(0, fw_err))"."""
    page = bytes(range(256)) * 16
    ctx = Ctx(mapped(REQ, RESP), firmware=RecordingFirmware(respond=lambda r: (page, 0x16)))
    assert abi.guest_request(ctx) is None
    assert (bytes(ctx.pages[RESP]), ctx.info) == (page, [(HvResp.NO_ACTION, 0x16)])


@MERGED_TREES
def test_merged_ext_request_reads_one_msg_type_byte(abi: Any) -> None:
    """snp_handle_ext_guest_req: "if (kvm_read_guest(kvm, req_gpa + offsetof(struct
    snp_guest_msg_hdr, msg_type), &msg_type, 1)) return -EIO;" — one byte, then the plain
    request (not a report request) reads the page."""
    ctx = Ctx(mapped(RESP))
    assert abi.ext_guest_request(ctx) == Fail(Errno.EIO, "kvm_read_guest of msg_type failed")
    assert (ctx.reads, ctx.info) == ([(REQ + MSG_TYPE_OFFSET, 1)], [])
    ctx = Ctx(mapped(REQ, RESP, msg_type=MsgType.KEY_REQ))
    assert abi.ext_guest_request(ctx) is None
    assert ctx.reads == [(REQ + MSG_TYPE_OFFSET, 1), (REQ, PAGE_SIZE)]


def test_disabled_clear_of_the_buffer_fails() -> None:
    """Fetching off: "if (data_npages && kvm_clear_guest(kvm, data_gpa, 24)) return -EIO;";
    with RBX = 0 nothing is cleared and the request goes on."""
    ctx = Ctx(mapped(REQ, RESP), regs={"rax": HOLE, "rbx": 1})
    assert DisabledAbi().ext_guest_request(ctx) == Fail(
        Errno.EIO, "kvm_clear_guest of the certificate buffer failed"
    )
    assert ctx.firmware.requests == []
    ctx = Ctx(mapped(REQ, RESP), regs={"rax": HOLE, "rbx": 0})
    assert DisabledAbi().ext_guest_request(ctx) is None
    assert len(ctx.firmware.requests) == 1


def test_v15_unaligned_buffer_notes_the_uninitialised_fw_err() -> None:
    """snp_begin_ext_guest_req: "if (!IS_ALIGNED(data_gpa, PAGE_SIZE)) goto abort_request;"
    — SNP_GUEST_ERR(GENERIC, fw_err) with fw_err uninitialised: the model answers 0 and
    says so."""
    ctx = Ctx(mapped(REQ, RESP), regs={"rax": CERTS + 8, "rbx": 1})
    assert V15Abi().ext_guest_request(ctx) is None
    assert ctx.info == [(None, guest_error(VmmError.GENERIC_V15, 0))]
    assert ctx.undefined == [
        "v15 snp_begin_ext_guest_req abort path: fw_err is uninitialised in the seed patch; "
        "the model answers fw_err = 0"
    ]


def test_v15_notify_done_exits_with_the_buffer() -> None:
    """snp_complete_ext_guest_req with NOTIFY_DONE: "req_certs.status = STATUS_DONE;
    req_certs.flags = 0; return 0;" — the second exit names the same buffer."""
    abi = V15Abi()
    fields = {"type": 1, "data_gpa": CERTS, "data_npages": 2, "ret": 0, "flags": 1, "status": 0}
    ctx = Ctx(mapped(REQ, RESP), kvm_run=abi.encode(fields))
    outcome = abi.complete(ctx, abi.exit_fields(ctx.kvm_run))
    assert outcome == Exit(
        abi.encode({**fields, "flags": 0, "status": kvm.REQ_CERTS_STATUS_DONE}), CERTS, 2, True
    )
    assert ctx.info == [(None, 0)]
    assert len(ctx.firmware.requests) == 1
