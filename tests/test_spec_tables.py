"""spec/ tables == construct schemas == fast codecs == enums, row by row.

The tables in spec/tables/ are transcribed independently from the GHCB spec and the Linux
headers; these tests read every offset, bit and code from them (never from the package) and
check the package against them.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import codes
from ghcb._fast import bit_fields, flat_fields
from ghcb.exitinfo import (
    VMM_ERR_SHIFT,
    EventInjection,
    IoioInfo,
    TermRequestInfo,
    pack_guest_error,
)
from ghcb.hypervisor import scratch
from ghcb.hypervisor.rules import ALWAYS_REQUIRED, KVM_EXIT_RULES, V15_EXIT_RULES
from ghcb.msr import GHCB_MSR, GHCB_MSR_PREF_GPA_NONE
from ghcb.page import (
    FIELDS,
    GHCB_DEFAULT_USAGE,
    GHCB_PROTOCOL_MAX,
    GHCB_PROTOCOL_MIN,
    VALID_BIT,
    Backend,
    GhcbPage,
    build_page,
)
from ghcb.schemas import page as page_schema
from ghcb.schemas.msr import MSR_SCHEMAS
from tests.helpers import load_table

if TYPE_CHECKING:
    import enum

PAGE = load_table("page")
PAGE_ROWS = PAGE["field"]
EXITS = load_table("exit_codes")["exit"]
MSR = load_table("msr")
ERRORS = load_table("errors")
FIRMWARE = load_table("firmware_status")["status"]
MESSAGES = load_table("messages")


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


class TestPageLayout:
    def test_protocol_constants(self) -> None:
        """Protocol version range and default usage match the table."""
        meta = PAGE["page"]
        assert (
            meta["protocol_min"],
            meta["protocol_max"],
        ) == (GHCB_PROTOCOL_MIN, GHCB_PROTOCOL_MAX)
        assert meta["default_usage"] == GHCB_DEFAULT_USAGE
        assert meta["valid_bitmap_offset"] == next(
            f.offset for f in FIELDS if f.name == "valid_bitmap"
        )

    def test_sizes(self) -> None:
        """Page, save area, shared buffer and bitmap sizes match the table."""
        meta = PAGE["page"]
        assert meta["size"] == page_schema.GHCB_SIZE
        assert meta["save_area_size"] == page_schema.GHCB_SAVE_AREA_SIZE
        assert meta["shared_buffer_size"] == page_schema.GHCB_SHARED_BUF_SIZE
        assert meta["valid_bitmap_bits"] == 8 * page_schema.VALID_BITMAP_SIZE

    def test_kvm_scratch_limits(self) -> None:
        """KVM's scratch-area limits in ghcb.hypervisor.scratch match the table."""
        assert PAGE["kvm_scratch"] == {
            "area_limit": scratch.GHCB_SCRATCH_AREA_LIMIT,
            "shared_buffer_beg": scratch.SHARED_BUFFER_BEG,
            "shared_buffer_end": scratch.SHARED_BUFFER_END,
            "in_ghcb_version": scratch.SCRATCH_IN_GHCB_VERSION,
            "mmio_max_len_v2": scratch.MMIO_MAX_LEN_V2,
            "int_max": scratch.INT_MAX,
        }
        assert load_table("psc")["psc_hdr"]["size"] == scratch.PSC_SCRATCH_MIN_LEN

    def test_same_fields_in_same_order(self) -> None:
        """The schema has exactly the table's fields, in layout order, tiling the page."""
        assert [f.name for f in FIELDS] == [r["name"] for r in PAGE_ROWS]
        pos = 0
        for row in PAGE_ROWS:
            assert row["offset"] == pos, row["name"]
            pos += row["size"]
        assert pos == PAGE["page"]["size"]

    @pytest.mark.parametrize("row", PAGE_ROWS, ids=_ids(PAGE_ROWS))
    def test_schema_offset_and_size(self, row: dict[str, Any]) -> None:
        """The construct schema puts the field at the table's offset with its size."""
        field = next(f for f in flat_fields(page_schema.ghcb) if f.name == row["name"])
        assert (field.offset, field.size) == (row["offset"], row["size"])
        kind = {"u8": "int", "u16": "int", "u32": "int", "u64": "int"}.get(row["kind"], "bytes")
        assert field.kind == kind

    @pytest.mark.parametrize("row", PAGE_ROWS, ids=_ids(PAGE_ROWS))
    def test_fast_format_offset(self, row: dict[str, Any]) -> None:
        """The derived struct format places the field at the table's offset."""
        codes_ = [f.fmt for f in FIELDS]
        i = [f.name for f in FIELDS].index(row["name"])
        assert struct.calcsize("<" + "".join(codes_[:i])) == row["offset"]
        assert struct.calcsize("<" + codes_[i]) == row["size"]

    @pytest.mark.parametrize("row", PAGE_ROWS, ids=_ids(PAGE_ROWS))
    def test_built_bytes_land_at_table_offset(self, row: dict[str, Any], backend: Backend) -> None:
        """A marker value set in one field appears at exactly the table's bytes."""
        size, off = row["size"], row["offset"]
        marker: int | bytes
        if row["kind"] in ("u8", "u16", "u32", "u64"):
            marker = int.from_bytes(bytes(range(1, size + 1)), "little")
            expected = marker.to_bytes(size, "little")
        else:
            expected = marker = bytes((i % 251) + 1 for i in range(size))
        data = build_page(GhcbPage.empty().replace(**{row["name"]: marker}), backend=backend)
        assert data[off : off + size] == expected
        assert not any(data[:off])
        assert not any(data[off + size :])

    def test_valid_bits_match_table(self) -> None:
        """Every bitmap bit in the table, and no other, is a field's valid bit."""
        assert {r["name"]: r["bit"] for r in PAGE_ROWS if "bit" in r} == VALID_BIT

    @pytest.mark.parametrize(
        "row", [r for r in PAGE_ROWS if "bit" in r], ids=_ids([r for r in PAGE_ROWS if "bit" in r])
    )
    def test_with_fields_sets_table_bit(self, row: dict[str, Any], backend: Backend) -> None:
        """with_fields sets the table's bit at byte bit//8, bit bit%8 of the bitmap."""
        data = build_page(GhcbPage.empty().with_fields(**{row["name"]: 1}), backend=backend)
        off = PAGE["page"]["valid_bitmap_offset"]
        expected = bytearray(16)
        expected[row["bit"] // 8] = 1 << (row["bit"] % 8)
        assert data[off : off + 16] == expected


def _enum_rows(
    enum_cls: type[enum.IntEnum] | type[enum.IntFlag], rows: list[dict[str, Any]]
) -> None:
    table = {r["name"]: r["value"] for r in rows}
    for row in rows:
        for alias in row.get("aliases", []):
            table[alias] = row["value"]
    members = {name: int(m) for name, m in enum_cls.__members__.items()}
    assert members == table


class TestCodes:
    def test_exit_codes(self) -> None:
        """ExitCode has exactly the table's names and values."""
        _enum_rows(codes.ExitCode, EXITS)

    def test_proposed_exit_codes(self) -> None:
        """Codes from unmerged series are flagged as such."""
        proposed = {codes.ExitCode[r["name"]] for r in EXITS if r["status"] == "proposed"}
        assert proposed == codes.PROPOSED_EXIT_CODES

    def test_msr_codes(self) -> None:
        """MsrCode has exactly the table's GHCBInfo codes."""
        _enum_rows(codes.MsrCode, MSR["code"])

    def test_hv_features(self) -> None:
        """HvFeature bits match the table."""
        rows = [{"name": r["name"], "value": 1 << r["bit"]} for r in MSR["hv_feature"]]
        _enum_rows(codes.HvFeature, rows)

    def test_termination_reasons(self) -> None:
        """Reason sets and each set's codes match the table."""
        _enum_rows(codes.TermReasonSet, MSR["term_set"])
        by_set = {"GEN": codes.GenTermReason, "LINUX": codes.LinuxTermReason}
        for term_set in MSR["term_set"]:
            _enum_rows(by_set[term_set["name"]], term_set["codes"])

    def test_hv_resp_and_ghcb_err(self) -> None:
        """HvResp 0..2 and GHCB_ERR 1..6 match the table."""
        _enum_rows(codes.HvResp, ERRORS["hv_resp"])
        _enum_rows(codes.GhcbErr, ERRORS["ghcb_err"])

    @pytest.mark.parametrize("row", ERRORS["vmm_error"], ids=_ids(ERRORS["vmm_error"]))
    def test_vmm_errors(self, row: dict[str, Any]) -> None:
        """Each VMM error packs to the table's EXITINFO2 value."""
        assert int(codes.VmmError[row["name"]]) == row["value"]
        assert pack_guest_error(row["value"], 0) == row["exitinfo2"]
        assert row["exitinfo2"] == row["value"] << ERRORS["snp_guest_err"]["vmm_shift"]
        assert ERRORS["snp_guest_err"]["vmm_shift"] == VMM_ERR_SHIFT

    def test_vmm_error_members(self) -> None:
        """VmmError has exactly the table's members."""
        _enum_rows(codes.VmmError, ERRORS["vmm_error"])

    def test_firmware_status(self) -> None:
        """FirmwareStatus matches psp-sev.h as transcribed, aliases included."""
        _enum_rows(codes.FirmwareStatus, FIRMWARE)

    def test_messages_and_psc(self) -> None:
        """Guest message types and PSC operations match the table."""
        _enum_rows(codes.MsgType, MESSAGES["msg_type"])
        _enum_rows(codes.PscOp, MESSAGES["psc_op"])

    def test_msr_constants(self) -> None:
        """The GHCB MSR number, PREF_GPA_NONE and KVM's feature set match the table."""
        assert MSR["msr"]["number"] == GHCB_MSR
        assert MSR["msr"]["pref_gpa_none"] == GHCB_MSR_PREF_GPA_NONE
        assert MSR["msr"]["kvm_hv_features"] == codes.KVM_HV_FEATURES

    def test_sub_operations(self) -> None:
        """AP creation, AP jump table and Secure AVIC operations match the table."""
        table = load_table("exit_codes")
        _enum_rows(codes.ApCreationOp, table["ap_creation_op"])
        _enum_rows(codes.ApJumpTableOp, table["ap_jump_table_op"])
        _enum_rows(codes.SavicOp, table["savic_op"])
        assert table["savic"]["self_gpa"] == codes.SAVIC_SELF_GPA

    def test_event_types(self) -> None:
        """Event-injection types match the table."""
        _enum_rows(codes.EventType, ERRORS["event_type"])


class TestExitRules:
    def test_accepted_codes(self) -> None:
        """KVM accepts exactly the codes the table marks kvm_accepts."""
        accepted = {codes.ExitCode[r["name"]] for r in EXITS if r.get("kvm_accepts")}
        assert set(KVM_EXIT_RULES) == accepted

    @pytest.mark.parametrize(
        "row",
        [r for r in EXITS if r.get("kvm_accepts")],
        ids=_ids([r for r in EXITS if r.get("kvm_accepts")]),
    )
    def test_rule(self, row: dict[str, Any]) -> None:
        """Required fields, SNP-only flag, page checks and conditional rules match."""
        rule = KVM_EXIT_RULES[codes.ExitCode[row["name"]]]
        assert rule.required == frozenset(row["required"])
        assert rule.snp_only == row.get("snp_only", False)
        assert rule.request_pages == ("request-pages" in row.get("checks", []))
        got = [(w.field, w.mask, w.equals, w.negate, w.require) for w in rule.when]
        want = [
            (w["field"], w["mask"], w["equals"], w.get("negate", False), frozenset(w["require"]))
            for w in row.get("when", [])
        ]
        assert got == want
        assert {"sw_exit_code", "sw_exit_info_1", "sw_exit_info_2"} == ALWAYS_REQUIRED

    @pytest.mark.parametrize(
        "row",
        [r for r in EXITS if r.get("kvm_accepts")],
        ids=_ids([r for r in EXITS if r.get("kvm_accepts")]),
    )
    def test_v15_rule(self, row: dict[str, Any]) -> None:
        """The v15-era validator: the table's v15_* columns where present, else the same."""
        rule = V15_EXIT_RULES[codes.ExitCode[row["name"]]]
        assert rule.required == frozenset(row.get("v15_required", row["required"]))
        checks = row.get("v15_checks", row.get("checks", []))
        assert rule.request_pages == ("request-pages" in checks)
        assert rule.snp_only == row.get("snp_only", False)
        assert set(V15_EXIT_RULES) == set(KVM_EXIT_RULES)


class TestMsrLayouts:
    @pytest.mark.parametrize("row", MSR["code"], ids=_ids(MSR["code"]))
    def test_fields(self, row: dict[str, Any]) -> None:
        """Each named field sits at the table's [hi:lo]; the rest of [63:12] is reserved."""
        fields = bit_fields(MSR_SCHEMAS[codes.MsrCode[row["name"]]])
        info = fields[-1]
        assert (info.shift, info.width, info.const) == (0, MSR["msr"]["info_bits"], row["value"])
        named = {
            f.name: (f.shift + f.width - 1, f.shift)
            for f in fields
            if f.const is None and not f.name.startswith("reserved_")
        }
        assert named == {f["name"]: (f["hi"], f["lo"]) for f in row["field"]}
        for f in fields:
            if f.name.startswith("reserved_"):
                assert f.name == f"reserved_{f.shift + f.width - 1}_{f.shift}"

    @pytest.mark.parametrize(
        ("record", "rows", "defaults"),
        [
            (EventInjection, ERRORS["event_injection"]["field"], {"valid": 0, "type": 0}),
            (TermRequestInfo, MSR["term_request_info1"]["field"], {}),
            (IoioInfo, load_table("exit_codes")["ioio_info1"]["field"], {}),
        ],
        ids=["event_injection", "term_request_info1", "ioio_info1"],
    )
    def test_bit_record_layout(
        self, record: Any, rows: list[dict[str, Any]], defaults: dict[str, int]
    ) -> None:
        """Each field of the u64 records sits at the table's bit range, and nowhere else."""
        for row in rows:
            hi, lo = row["hi"], row["lo"]
            value = record(**{**defaults, row["name"]: (1 << (hi - lo + 1)) - 1})
            assert value.encode() == ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1), row["name"]
