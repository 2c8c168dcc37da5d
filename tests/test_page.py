"""GhcbPage, parse_page and build_page: golden vectors, round trips, the valid bitmap, bad input."""

from __future__ import annotations

import contextlib
import enum
import pickle
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghcb import (
    ExitCode,
    FieldValueError,
    GhcbError,
    GhcbPage,
    InputTypeError,
    LengthError,
    NoValidBitError,
    UnknownFieldError,
    Violation,
    build_page,
    check_page,
    parse_page,
)
from ghcb._fast import flat_fields
from ghcb.hypervisor.rules import required_inputs
from ghcb.page import FIELD_NAMES, VALID_BIT, Backend
from ghcb.schemas import page as page_schema
from tests.helpers import assert_roundtrip, load_table, load_vectors, vector_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

PAGES = load_vectors("pages")["vectors"]
ROWS = {r["name"]: r for r in load_table("page")["field"]}


def _apply_patches(patches: list[dict[str, Any]]) -> bytes:
    page = bytearray(4096)
    for p in patches:
        raw = bytes.fromhex(p["hex"])
        page[p["offset"] : p["offset"] + len(raw)] = raw
    return bytes(page)


@pytest.mark.parametrize("vec", PAGES, ids=[v["name"] for v in PAGES])
class TestGoldenPages:
    def test_file_matches_patches(self, vec: dict[str, Any]) -> None:
        """The .bin vector is exactly the zero page with the JSON patches applied."""
        assert vector_bytes(vec["file"]) == _apply_patches(vec["patches"])

    def test_decodes_to_expected(self, vec: dict[str, Any], backend: Backend) -> None:
        """Fields, valid set, exit code and stray bits decode as the vector says."""
        page = parse_page(vector_bytes(vec["file"]), backend=backend)
        want = vec["expect"]
        for name, value in want["fields"].items():
            assert getattr(page, name) == value, name
        assert page.valid_fields == frozenset(want["valid"])
        assert isinstance(page.exit_code, ExitCode)
        assert page.exit_code.name == want["exit_code_name"]
        assert list(page.undefined_valid_bits) == want["undefined_valid_bits"]
        assert page.valid_bitmap.hex() == vec["valid_bitmap_hex"]

    def test_fields_match_raw_bytes_at_table_offsets(self, vec: dict[str, Any]) -> None:
        """Each decoded field equals the raw bytes at its spec-table offset."""
        data = vector_bytes(vec["file"])
        page = parse_page(data)
        for name, row in ROWS.items():
            raw = data[row["offset"] : row["offset"] + row["size"]]
            expected = (
                raw if row["kind"] in ("bytes", "reserved") else int.from_bytes(raw, "little")
            )
            assert getattr(page, name) == expected, name

    def test_roundtrip(self, vec: dict[str, Any], backend: Backend) -> None:
        """parse then build gives back the same 4096 bytes."""
        data = vector_bytes(vec["file"])
        page = parse_page(data, backend=backend)
        assert build_page(page, backend=backend) == data

    def test_schema_roundtrip_and_compiled_twin(self, vec: dict[str, Any]) -> None:
        """The construct schema and its compiled twin agree on the vector."""
        data = vector_bytes(vec["file"])
        page = parse_page(data)
        values = dict(page.items())
        save = {f.name: values[f.name] for f in flat_fields(page_schema.ghcb_save_area)}
        obj = {"save": save, **{k: v for k, v in values.items() if k not in save}}
        assert_roundtrip(page_schema.ghcb, data, obj)

    def test_guest_built_page_is_identical(self, vec: dict[str, Any], backend: Backend) -> None:
        """with_fields reproduces the vector's bytes (stray bits added with replace)."""
        values: dict[str, object] = {
            k: (bytes.fromhex(v) if isinstance(v, str) else v) for k, v in vec["set"].items()
        }
        page = GhcbPage.empty().with_fields(**values)
        stray = sum(1 << b for b in vec["expect"]["undefined_valid_bits"])
        page = page.replace(valid_bitmap=(page.valid_bits | stray).to_bytes(16, "little"))
        assert build_page(page, backend=backend) == vector_bytes(vec["file"])


@settings(suppress_health_check=[HealthCheck.large_base_example])
@given(st.binary(min_size=4096, max_size=4096))
def test_any_page_roundtrips_on_both_backends(data: bytes) -> None:
    """Any 4096 bytes, reserved bytes included, round-trip exactly on both backends."""
    fast = parse_page(data)
    ref = parse_page(data, backend="construct")
    assert fast == ref
    assert build_page(fast) == data
    assert build_page(ref, backend="construct") == data


@given(
    st.dictionaries(
        st.sampled_from(sorted(VALID_BIT)), st.integers(min_value=0, max_value=2**8 - 1)
    )
)
def test_with_fields_marks_exactly_those_fields(values: dict[str, int]) -> None:
    """with_fields marks exactly the given fields valid, and get_if_valid reads them back."""
    page = GhcbPage.empty().with_fields(**values)
    assert page.valid_fields == frozenset(values)
    for name in VALID_BIT:
        assert page.get_if_valid(name) == values.get(name, 0)
    assert parse_page(build_page(page)) == page


class TestValidBitmap:
    def test_linux_accessor_semantics(self) -> None:
        """set → is_valid; cleared bitmap → get_if_valid returns 0, value kept."""
        page = GhcbPage.empty().with_fields(rax=0x1234, cpl=3)
        assert page.is_valid("rax")
        assert page.is_valid("cpl")
        assert not page.is_valid("rbx")
        cleared = page.cleared_bitmap()
        assert cleared.valid_fields == frozenset()
        assert cleared.rax == 0x1234
        assert cleared.get_if_valid("rax") == 0

    def test_replace_leaves_bitmap(self) -> None:
        """replace() sets a value without its valid bit."""
        page = GhcbPage.empty().replace(rbx=7)
        assert page.rbx == 7
        assert not page.is_valid("rbx")

    def test_explicit_bitmap_wins(self) -> None:
        """An explicit valid_bitmap in with_fields is kept as given."""
        page = GhcbPage.empty().with_fields(rax=1, valid_bitmap=bytes(16))
        assert page.rax == 1
        assert page.valid_fields == frozenset()

    @pytest.mark.parametrize(
        "name",
        [
            "x87_state_gpa",
            "shared_buffer",
            "protocol_version",
            "ghcb_usage",
            "valid_bitmap",
            "reserved_0x0",
        ],
    )
    def test_fields_without_bit(self, name: str) -> None:
        """Fields without a bit raise NoValidBitError instead of aliasing another bit."""
        page = GhcbPage.empty()
        with pytest.raises(NoValidBitError) as err:
            page.is_valid(name)
        assert err.value.field == name
        assert err.value.rule == "no-valid-bit"

    def test_x87_state_gpa_explains_bit_128(self) -> None:
        """The x87_state_gpa error says its index 128 is past the map."""
        with pytest.raises(NoValidBitError, match="128"):
            GhcbPage.empty().is_valid("x87_state_gpa")

    def test_with_fields_on_bitless_field_sets_value_only(self) -> None:
        """with_fields(x87_state_gpa=...) sets the value and no bit at all."""
        page = GhcbPage.empty().with_fields(x87_state_gpa=0x5000)
        assert page.x87_state_gpa == 0x5000
        assert page.valid_bits == 0

    def test_undefined_bits(self) -> None:
        """Bits of reserved gaps or of the bitmap itself are reported as undefined."""
        bits = (1 << 0) | (1 << 126) | (1 << 63)
        page = GhcbPage.empty().replace(valid_bitmap=bits.to_bytes(16, "little"))
        assert page.undefined_valid_bits == (0, 126)
        assert page.valid_fields == frozenset({"rax"})


class TestRecord:
    def test_field_names_follow_linux(self) -> None:
        """Attribute annotations, schema and FIELD_NAMES agree."""
        annotated = [n for n in GhcbPage.__annotations__ if not n.startswith("_")]
        assert tuple(annotated) == FIELD_NAMES

    def test_immutable(self) -> None:
        """Pages cannot be changed in place."""
        page = GhcbPage.empty()
        with pytest.raises(AttributeError):
            page.rax = 1

    def test_equality_is_typed(self) -> None:
        """A page equals another page with the same bytes, never a plain tuple."""
        a = GhcbPage(rax=1)
        assert a == GhcbPage(rax=1)
        assert a != GhcbPage(rax=2)
        assert a != a.values
        assert hash(a) == hash(GhcbPage(rax=1))

    def test_repr_shows_set_fields(self) -> None:
        """repr lists only non-zero fields."""
        assert repr(GhcbPage(rax=0x10, ghcb_usage=1)) == "GhcbPage(rax=0x10, ghcb_usage=0x1)"

    def test_pickle(self) -> None:
        """Pages survive pickling (multi-process tests)."""
        page = GhcbPage.empty().with_fields(rax=5)
        assert pickle.loads(pickle.dumps(page)) == page

    def test_exit_code_tolerant(self) -> None:
        """Unknown exit codes are kept as plain ints."""
        assert GhcbPage(sw_exit_code=0x8000_0099).exit_code == 0x8000_0099
        assert type(GhcbPage(sw_exit_code=0x8000_0099).exit_code) is int
        assert GhcbPage(sw_exit_code=0x72).exit_code is ExitCode.CPUID


class TestBadInput:
    @pytest.mark.parametrize("size", [0, 1, 4000, 4095, 4097, 8192])
    def test_wrong_length(self, size: int, backend: Backend) -> None:
        """Any length but 4096 is a LengthError naming the rule."""
        with pytest.raises(LengthError) as err:
            parse_page(bytes(size), backend=backend)
        assert err.value.rule == "page-length"
        assert str(size) in str(err.value)

    @pytest.mark.parametrize("data", ["x" * 4096, None, 4096, [0] * 4096])
    def test_not_bytes(self, data: object) -> None:
        """Non-bytes input is an InputTypeError (also a TypeError)."""
        with pytest.raises(InputTypeError):
            parse_page(data)  # type: ignore[arg-type]
        assert issubclass(InputTypeError, TypeError)

    def test_bytes_like_accepted(self) -> None:
        """bytearray and memoryview parse like bytes."""
        data = bytes(range(256)) * 16
        assert parse_page(bytearray(data)) == parse_page(memoryview(data)) == parse_page(data)

    @pytest.mark.parametrize(
        ("name", "value", "rule"),
        [
            ("rip", 2**64, "field-range"),
            ("rip", -1, "field-range"),
            ("cpl", 256, "field-range"),
            ("protocol_version", 0x10000, "field-range"),
            ("ghcb_usage", 2**32, "field-range"),
            ("rax", "1", "field-type"),
            ("rax", True, "field-type"),
            ("rax", 1.0, "field-type"),
            ("shared_buffer", "x" * 2032, "field-type"),
            ("valid_bitmap", memoryview(bytes(16)).cast("I"), "field-type"),  # 4-byte items
        ],
    )
    def test_out_of_range_fields(self, name: str, value: object, rule: str) -> None:
        """Out-of-range or mistyped values are FieldValueErrors naming the field."""
        makers: list[Callable[[], GhcbPage]] = [
            lambda: GhcbPage(**{name: value}),
            lambda: GhcbPage.empty().with_fields(**{name: value}),
            lambda: GhcbPage.empty().replace(**{name: value}),
        ]
        for make in makers:
            with pytest.raises(FieldValueError) as err:
                make()
            assert (err.value.field, err.value.rule) == (name, rule)

    @pytest.mark.parametrize("size", [0, 2031, 2033])
    def test_shared_buffer_length(self, size: int) -> None:
        """A shared_buffer of the wrong length is refused, not padded or truncated."""
        with pytest.raises(LengthError) as err:
            GhcbPage.empty().with_fields(shared_buffer=bytes(size))
        assert err.value.field == "shared_buffer"
        assert err.value.offset == 0x800

    def test_unknown_field(self) -> None:
        """Unknown names are UnknownFieldErrors, never KeyError."""
        for make in (
            lambda: GhcbPage(raxx=1),
            lambda: GhcbPage.empty().with_fields(raxx=1),
            lambda: GhcbPage.empty().replace(raxx=1),
            lambda: GhcbPage.empty().is_valid("raxx"),
        ):
            with pytest.raises(UnknownFieldError, match="raxx"):
                make()

    def test_build_needs_page(self) -> None:
        """build_page of something else is an InputTypeError."""
        with pytest.raises(InputTypeError):
            build_page({"rax": 1})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("name", "value", "error"),
        [("rip", 2**64, FieldValueError), ("shared_buffer", bytes(2031), LengthError)],
    )
    def test_unchecked_values_cannot_make_a_page(
        self, name: str, value: object, error: type[GhcbError]
    ) -> None:
        """Even the internal unchecked path refuses values struct would wrap, pad or cut."""
        values = list(GhcbPage.empty().values)
        values[FIELD_NAMES.index(name)] = value  # type: ignore[call-overload]
        with pytest.raises(error) as err:
            GhcbPage._from_values(tuple(values))
        assert err.value.field == name

    def test_bad_backend(self) -> None:
        """An unknown backend name is a typed error."""
        with pytest.raises(GhcbError):
            parse_page(bytes(4096), backend="ctypes")  # type: ignore[arg-type]

    def test_errors_are_value_errors(self) -> None:
        """GhcbError is a ValueError and cannot be raised bare."""
        assert issubclass(GhcbError, ValueError)
        with pytest.raises(TypeError):
            GhcbError("x", rule="r", spec="s")


class TestRequiredInputs:
    @pytest.mark.parametrize(
        ("fields", "want"),
        [
            ({"sw_exit_code": ExitCode.CPUID, "rax": 1}, {"rax", "rcx"}),
            ({"sw_exit_code": ExitCode.CPUID, "rax": 0xD}, {"rax", "rcx", "xcr0"}),
            ({"sw_exit_code": ExitCode.IOIO, "sw_exit_info_1": 0x0}, {"rax"}),
            ({"sw_exit_code": ExitCode.IOIO, "sw_exit_info_1": 0x1}, set()),
            ({"sw_exit_code": ExitCode.IOIO, "sw_exit_info_1": 0x4}, {"sw_scratch"}),
            ({"sw_exit_code": ExitCode.IOIO, "sw_exit_info_1": 0x5}, {"sw_scratch"}),
            ({"sw_exit_code": ExitCode.MSR, "sw_exit_info_1": 0}, {"rcx"}),
            ({"sw_exit_code": ExitCode.MSR, "sw_exit_info_1": 1}, {"rcx", "rax", "rdx"}),
            ({"sw_exit_code": ExitCode.AP_CREATION, "sw_exit_info_1": 2}, set()),
            ({"sw_exit_code": ExitCode.AP_CREATION, "sw_exit_info_1": 1}, {"rax"}),
            ({"sw_exit_code": ExitCode.AP_CREATION, "sw_exit_info_1": (5 << 32) | 2}, set()),
            ({"sw_exit_code": ExitCode.SNP_EXT_GUEST_REQUEST}, set()),
            ({"sw_exit_code": ExitCode.VMMCALL}, {"rax", "cpl"}),
        ],
    )
    def test_kvm_rules(self, fields: dict[str, int], want: set[str]) -> None:
        """Required inputs follow KVM's validator, conditions included."""
        page = GhcbPage.empty().with_fields(**{"sw_exit_info_1": 0, "sw_exit_info_2": 0, **fields})
        assert required_inputs(page) == frozenset(want) | {
            "sw_exit_code",
            "sw_exit_info_1",
            "sw_exit_info_2",
        }

    def test_unaccepted_codes(self) -> None:
        """Codes KVM does not accept (incl. SNP_RUN_VMPL) have no rule."""
        for code in (ExitCode.SNP_RUN_VMPL, ExitCode.SAVIC, ExitCode.HLT, 0x1234):
            assert required_inputs(GhcbPage(sw_exit_code=code)) is None


@given(
    st.one_of(
        st.binary(max_size=5000),
        st.binary(min_size=4096, max_size=4096).map(bytearray),
        st.text(max_size=10),
        st.integers(),
        st.none(),
    )
)
def test_parse_and_check_raise_only_ghcb_errors(data: object) -> None:
    """Whatever the input: a page (or findings), or a GhcbError, never another exception;
    a page is exactly the input's bytes, and findings are Violations."""
    try:
        page = parse_page(data)  # type: ignore[arg-type]
    except GhcbError:
        page = None
    if page is not None:
        assert isinstance(data, bytes | bytearray)
        assert build_page(page) == bytes(data)
    with contextlib.suppress(GhcbError):
        found = check_page(data)  # type: ignore[arg-type]
        assert all(isinstance(v, Violation) for v in found)
        assert (page is None) == any(v.code == "page-length" for v in found)


def test_with_fields_on_the_class() -> None:
    """GhcbPage.with_fields(...) (the issue's spelling) starts from the all-zero page."""
    page = GhcbPage.with_fields(sw_exit_code=ExitCode.SNP_EXT_GUEST_REQUEST, rax=0x80000, rbx=2)
    assert page == GhcbPage.empty().with_fields(
        sw_exit_code=ExitCode.SNP_EXT_GUEST_REQUEST, rax=0x80000, rbx=2
    )
    assert page.valid_fields == {"sw_exit_code", "rax", "rbx"}
    assert GhcbPage.replace(rax=5) == GhcbPage(rax=5)
    assert "ghcb_set_" in (GhcbPage.with_fields.__doc__ or "")


# ---------------------------------------------------------------------------------------------
# Mutation-testing kills (`make mutation`): every refusal exact, the record's dunders.
# ---------------------------------------------------------------------------------------------
_LAYOUT = "GHCB spec 'GHCB layout' / Linux svm.h struct ghcb"
_BITS = "GHCB spec 'GHCB layout' / Linux svm.h GHCB_BITMAP_IDX"
_E = GhcbPage.empty()


def _values_with(name: str, value: object) -> tuple[Any, ...]:
    values: list[object] = list(_E.values)
    values[FIELD_NAMES.index(name)] = value
    return tuple(values)


#: (call, (class, rule, field, offset, spec, message)), exact.
PAGE_REFUSALS: dict[str, tuple[Any, tuple[object, ...]]] = {
    "int-type": (
        lambda: _E.with_fields(rax="1"),
        ("FieldValueError", "field-type", "rax", 504, _LAYOUT, "rax must be an int, not str"),
    ),
    "int-bool": (
        lambda: _E.with_fields(rax=True),
        ("FieldValueError", "field-type", "rax", 504, _LAYOUT, "rax must be an int, not bool"),
    ),
    "int-range": (
        lambda: _E.with_fields(rax=-1),
        (
            "FieldValueError",
            "field-range",
            "rax",
            504,
            _LAYOUT,
            "rax = -1 does not fit in 8 byte(s) (0..0xffffffffffffffff)",
        ),
    ),
    "bytes-type": (
        lambda: _E.with_fields(shared_buffer=5),
        (
            "FieldValueError",
            "field-type",
            "shared_buffer",
            2048,
            _LAYOUT,
            "shared_buffer must be bytes-like, not int",
        ),
    ),
    "bytes-length": (
        lambda: _E.with_fields(shared_buffer=b"x"),
        (
            "LengthError",
            "field-length",
            "shared_buffer",
            2048,
            _LAYOUT,
            "shared_buffer must be exactly 2032 bytes, got 1",
        ),
    ),
    "unknown": (
        lambda: _E.with_fields(nope=1),
        (
            "UnknownFieldError",
            "unknown-field",
            None,
            None,
            _LAYOUT,
            "the GHCB page has no field 'nope'",
        ),
    ),
    "unknown-not-str": (
        lambda: _E.is_valid(5),  # type: ignore[arg-type]
        ("UnknownFieldError", "unknown-field", None, None, _LAYOUT, "the GHCB page has no field 5"),
    ),
    "bit-past-map": (
        lambda: _E.is_valid("shared_buffer"),
        (
            "NoValidBitError",
            "no-valid-bit",
            "shared_buffer",
            2048,
            _BITS,
            "shared_buffer has no valid-bitmap bit: its bit index 256 is past the 128-bit map",
        ),
    ),
    "bit-not-register": (
        lambda: _E.is_valid("reserved_0x0"),
        (
            "NoValidBitError",
            "no-valid-bit",
            "reserved_0x0",
            0,
            _BITS,
            "reserved_0x0 has no valid-bitmap bit: it is not a save-area register field",
        ),
    ),
    "parse-type": (
        lambda: parse_page(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            None,
            _LAYOUT,
            "a GHCB page must be bytes-like, not int",
        ),
    ),
    "parse-length": (
        lambda: parse_page(b"x"),
        ("LengthError", "page-length", None, None, _LAYOUT, "a GHCB page is 4096 bytes, got 1"),
    ),
    "parse-backend": (
        lambda: parse_page(bytes(4096), backend="x"),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "backend",
            None,
            None,
            "ghcb API",
            "unknown backend 'x' (expected 'struct' or 'construct')",
        ),
    ),
    "build-type": (
        lambda: build_page(5),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "input-type",
            None,
            None,
            _LAYOUT,
            "build_page needs a GhcbPage, not int",
        ),
    ),
    "build-backend": (
        lambda: build_page(_E, backend="x"),  # type: ignore[arg-type]
        (
            "InputTypeError",
            "backend",
            None,
            None,
            "ghcb API",
            "unknown backend 'x' (expected 'struct' or 'construct')",
        ),
    ),
    "values-range": (
        lambda: GhcbPage._from_values(_values_with("rax", 1 << 64)),
        (
            "FieldValueError",
            "field-range",
            "rax",
            504,
            _LAYOUT,
            "rax = 18446744073709551616 does not fit in 8 byte(s) (0..0xffffffffffffffff)",
        ),
    ),
    "values-length": (
        lambda: GhcbPage._from_values(_values_with("shared_buffer", b"x")),
        (
            "LengthError",
            "field-length",
            "shared_buffer",
            2048,
            _LAYOUT,
            "shared_buffer must be exactly 2032 bytes, got 1",
        ),
    ),
    "values-type": (
        lambda: GhcbPage._from_values(_values_with("rax", "x")),
        ("FieldValueError", "field-type", "rax", 504, _LAYOUT, "rax must be an int, not str"),
    ),
}


@pytest.mark.parametrize("name", sorted(PAGE_REFUSALS))
def test_page_refusals_are_exact(name: str) -> None:
    call, expected = PAGE_REFUSALS[name]
    with pytest.raises(GhcbError) as err:
        call()
    e = err.value
    assert (type(e).__name__, e.rule, e.field, e.offset, e.spec, e.message) == expected


@pytest.mark.parametrize("value", [0, 1, (1 << 64) - 2, (1 << 64) - 1])
def test_int_fields_accept_their_whole_range(value: int) -> None:
    assert _E.with_fields(rax=value).rax == value


def test_page_dunders() -> None:
    page = _E.with_fields(rax=0x10)
    assert repr(page) == "GhcbPage(rax=0x10, valid_bitmap=<16 bytes>)"
    items = dict(page.items())
    assert list(items) == list(FIELD_NAMES)
    assert items["rax"] == 0x10
    assert items["shared_buffer"] == bytes(2032)
    cleared = page.cleared_bitmap()
    assert (cleared.valid_fields, cleared.rax) == (frozenset(), 0x10)
    distinct = {_E.with_fields(rbx=i) for i in range(8)}
    assert len({hash(p) for p in distinct}) == len(distinct)
    with pytest.raises(AttributeError, match=r"^GhcbPage is immutable \(rax\)$"):
        del page.rax


class _Wide(enum.IntEnum):
    """Integers that are not exactly ``int``: the checker's general path."""

    ZERO = 0
    TOP = (1 << 64) - 1


@pytest.mark.parametrize("value", list(_Wide))
def test_int_subclasses_take_the_whole_range(value: _Wide) -> None:
    page = _E.with_fields(rax=value)
    assert page.rax == int(value)
    assert type(page.rax) is int
