"""Hostile arguments to the public API end in a GhcbError subclass, never a bare exception.

``CASES`` is the one table of hostile calls: each row names the call, the error class it must
raise and that error's ``rule``. Append a row for every new public entry point. Every
function that takes bytes reads them through one converter (``ghcb._bytes``): ``READERS``
checks each of them on strided, multi-dimensional and other buffers of bytes.
"""

from __future__ import annotations

import array
import io
import json
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import (
    CertEntry,
    CertGuid,
    CertTableError,
    ExitCode,
    FieldValueError,
    GhcbError,
    GhcbPage,
    HvFeature,
    HvResponse,
    InputTypeError,
    MsrCode,
    UnknownFieldError,
    UnknownMsr,
    build_cert_table,
    build_page,
    cert_names,
    check_cert_table,
    check_page,
    decode_msr,
    encode_msr,
    parse_cert_table,
    parse_page,
    required_inputs,
)
from ghcb.certs import (
    cert_table_index,
    located_entries,
    sha256_hex,
    subject_common_name,
    subject_text,
)
from ghcb.check import check_page_full, check_page_record, expected_response
from ghcb.cli import main
from ghcb.hypervisor import (
    CertificateStore,
    DisabledAbi,
    GuestMemory,
    GuestMemoryError,
    HypervisorUsageError,
    MergedAbi,
    RecordingFirmware,
    StoreError,
    TokenBucket,
    V15Abi,
    Vcpu,
    Vm,
    Vmm,
    decode_kvm_run,
    encode_kvm_run,
)
from ghcb.hypervisor.psc import GhcbPsc
from ghcb.hypervisor.scratch import scratch_outcome, scratch_use, setup_scratch
from ghcb.msr import msr_layout, msr_record

if TYPE_CHECKING:
    from collections.abc import Callable

HUE = HypervisorUsageError


def new_store() -> CertificateStore:
    """An empty certificate store in a fresh temporary directory."""
    return CertificateStore(tempfile.mkdtemp() + "/certs.blob", create=True)


RAW_MSR = UnknownMsr(info=0xFFF, data=0)
PAGE = bytes(4096)
BAD_BACKEND: Any = "ctypes"
ARK = CertEntry(CertGuid.ARK, b"ark")


def bad(value: object) -> Any:
    """A hostile argument (typed Any, so the call type-checks)."""
    return value


def released(size: int = 4096) -> memoryview:
    """A memoryview of ``size`` bytes that has been released (every access raises)."""
    view = memoryview(b"x" * size)
    view.release()
    return view


def wide(size: int = 4096) -> memoryview:
    """``size`` bytes as a memoryview of 4-byte items (host byte order, not wire bytes)."""
    return memoryview(array.array("I", bytes(size)))


def strided(data: bytes) -> memoryview:
    """A non-contiguous view of ``data``: every other byte of a buffer twice its size."""
    buf = bytearray(b"\xff" * (2 * len(data)))
    buf[::2] = data
    return memoryview(bytes(buf))[::2]


#: (id, call, error class, rule)
CASES: list[tuple[str, Callable[[], object], type[GhcbError], str]] = [
    # -- pages, exit info, MSR, enums -----------------------------------------------------
    ("required_inputs(None)", lambda: required_inputs(bad(None)), InputTypeError, "input-type"),
    (
        "check_page_record(bytes)",
        lambda: check_page_record(bad(bytes(4096))),
        InputTypeError,
        "input-type",
    ),
    (
        "is_valid(list)",
        lambda: GhcbPage().is_valid(bad(["rax"])),
        UnknownFieldError,
        "unknown-field",
    ),
    (
        "with_fields(**{'': 1})",
        lambda: GhcbPage().replace(**{"": 1}),
        UnknownFieldError,
        "unknown-field",
    ),
    ("malformed('x')", lambda: HvResponse.malformed(bad("x")), InputTypeError, "input-type"),
    ("malformed(2.7)", lambda: HvResponse.malformed(bad(2.7)), InputTypeError, "input-type"),
    ("malformed(True)", lambda: HvResponse.malformed(True), InputTypeError, "input-type"),
    ("malformed(-1)", lambda: HvResponse.malformed(-1), FieldValueError, "field-range"),
    ("exception(None)", lambda: HvResponse.exception(bad(None)), InputTypeError, "input-type"),
    (
        "UnknownMsr(info='x')",
        lambda: UnknownMsr(info=bad("x"), data=1),
        InputTypeError,
        "input-type",
    ),
    ("UnknownMsr(info=True)", lambda: UnknownMsr(info=True, data=0), InputTypeError, "input-type"),
    ("UnknownMsr(known code)", lambda: UnknownMsr(info=4, data=1), FieldValueError, "known-code"),
    (
        "UnknownMsr(data=2**52)",
        lambda: UnknownMsr(info=0xFFF, data=2**52),
        FieldValueError,
        "field-range",
    ),
    ("msr_record(0x999)", lambda: msr_record(bad(0x999)), FieldValueError, "unknown-code"),
    ("msr_layout(None)", lambda: msr_layout(bad(None)), FieldValueError, "unknown-code"),
    (
        "decode_msr(backend='x')",
        lambda: decode_msr(0xFFF, backend=BAD_BACKEND),
        InputTypeError,
        "backend",
    ),
    (
        "encode_msr(backend='x')",
        lambda: encode_msr(RAW_MSR, backend=BAD_BACKEND),
        InputTypeError,
        "backend",
    ),
    ("HvFeature.from_int(-1)", lambda: HvFeature.from_int(-1), FieldValueError, "field-range"),
    ("HvFeature.from_int('x')", lambda: HvFeature.from_int(bad("x")), InputTypeError, "input-type"),
    ("ExitCode.from_int(None)", lambda: ExitCode.from_int(bad(None)), InputTypeError, "input-type"),
    ("MsrCode.from_int(True)", lambda: MsrCode.from_int(True), InputTypeError, "input-type"),
    # -- buffers: released, of wide items, not buffers ------------------------------------
    ("parse_page(released)", lambda: parse_page(released()), InputTypeError, "input-type"),
    (
        "parse_page(released, construct)",
        lambda: parse_page(released(), backend="construct"),
        InputTypeError,
        "input-type",
    ),
    ("parse_page(wide)", lambda: parse_page(wide()), InputTypeError, "input-type"),
    ("parse_page(wide strided)", lambda: parse_page(wide(8192)[::2]), InputTypeError, "input-type"),
    ("check_page(released)", lambda: check_page(released()), InputTypeError, "input-type"),
    (
        "with_fields(valid_bitmap=released)",
        lambda: GhcbPage.with_fields(valid_bitmap=released(16)),
        FieldValueError,
        "field-type",
    ),
    (
        "replace(shared_buffer=wide)",
        lambda: GhcbPage.replace(shared_buffer=wide(2032)),
        FieldValueError,
        "field-type",
    ),
    (
        "GhcbPage(valid_bitmap=None)",
        lambda: GhcbPage(valid_bitmap=None),
        FieldValueError,
        "field-type",
    ),
    (
        "CertEntry(guid, released)",
        lambda: CertEntry(CertGuid.ARK, released()),
        InputTypeError,
        "input-type",
    ),
    (
        "CertEntry(guid, wide)",
        lambda: CertEntry(CertGuid.ARK, wide(16)),
        InputTypeError,
        "input-type",
    ),
    (
        "CertEntry(guid, 'str')",
        lambda: CertEntry(CertGuid.ARK, bad("ark")),
        InputTypeError,
        "input-type",
    ),
    (
        "CertEntry(released guid)",
        lambda: CertEntry(bad(released(16)), b"x"),
        InputTypeError,
        "input-type",
    ),
    ("CertEntry(15-byte guid)", lambda: CertEntry(bytes(15), b"x"), InputTypeError, "input-type"),
    (
        "parse_cert_table(released)",
        lambda: parse_cert_table(released()),
        InputTypeError,
        "input-type",
    ),
    ("parse_cert_table(wide)", lambda: parse_cert_table(wide(48)), InputTypeError, "input-type"),
    (
        "check_cert_table(released)",
        lambda: check_cert_table(released()),
        InputTypeError,
        "input-type",
    ),
    (
        "located_entries(released)",
        lambda: located_entries(released()),
        InputTypeError,
        "input-type",
    ),
    ("cert_table_index(None)", lambda: cert_table_index(bad(None)), InputTypeError, "input-type"),
    ("sha256_hex(released)", lambda: sha256_hex(released()), InputTypeError, "input-type"),
    (
        "subject_common_name(released)",
        lambda: subject_common_name(bad(released())),
        InputTypeError,
        "input-type",
    ),
    ("subject_text(None)", lambda: subject_text(bad(None)), InputTypeError, "input-type"),
    # -- certificate-table arguments --------------------------------------------------------
    ("build_cert_table(None)", lambda: build_cert_table(bad(None)), InputTypeError, "input-type"),
    ("build_cert_table(5)", lambda: build_cert_table(bad(5)), InputTypeError, "input-type"),
    ("build_cert_table(entry)", lambda: build_cert_table(bad(ARK)), InputTypeError, "input-type"),
    (
        "build_cert_table([None])",
        lambda: build_cert_table(bad([None])),
        InputTypeError,
        "input-type",
    ),
    ("cert_names(None)", lambda: cert_names(bad(None)), InputTypeError, "input-type"),
    ("cert_names([None])", lambda: cert_names(bad([None])), InputTypeError, "input-type"),
    (
        "cert_names(extra_names=5)",
        lambda: cert_names([ARK], extra_names=bad(5)),
        InputTypeError,
        "input-type",
    ),
    (
        "cert_names(extra_names={'x': ...})",
        lambda: cert_names([ARK], extra_names=bad({"x": "X"})),
        InputTypeError,
        "input-type",
    ),
    (
        "cert_names(extra_names={guid: 5})",
        lambda: cert_names([ARK], extra_names=bad({uuid.UUID(int=1): 5})),
        InputTypeError,
        "input-type",
    ),
    (
        "check_cert_table(extra_names=5)",
        lambda: check_cert_table(bytes(24), extra_names=bad(5)),
        InputTypeError,
        "input-type",
    ),
    (
        "build_cert_table(PEM CERTIFICATE of 3 zero bytes)",
        lambda: build_cert_table(
            [
                CertEntry(
                    CertGuid.VCEK, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                )
            ]
        ),
        CertTableError,
        "pem-not-der",
    ),
    # -- the reference hypervisor (caller misuse: HypervisorUsageError) ---------------------
    ("decode_kvm_run(None, ...)", lambda: decode_kvm_run(bad(None), bytes(288)), HUE, "abi"),
    ("encode_kvm_run(None, {})", lambda: encode_kvm_run(bad(None), {}), HUE, "abi"),
    (
        "encode_kvm_run(DisabledAbi(), {})",
        lambda: encode_kvm_run(bad(DisabledAbi()), {}),
        HUE,
        "abi",
    ),
    (
        "encode_kvm_run(MergedAbi(), [('ret', 1)])",
        lambda: encode_kvm_run(MergedAbi(), bad([("ret", 1)])),
        HUE,
        "input-type",
    ),
    (
        "encode_kvm_run(MergedAbi(), {'gpa': 'x'})",
        lambda: encode_kvm_run(MergedAbi(), {"gpa": bad("x")}),
        HUE,
        "field-type",
    ),
    (
        "encode_kvm_run(MergedAbi(), {'nope': 1})",
        lambda: encode_kvm_run(MergedAbi(), {"nope": 1}),
        HUE,
        "field-name",
    ),
    (
        "encode_kvm_run(V15Abi(), {'ret': 2**32})",
        lambda: encode_kvm_run(V15Abi(), {"ret": 2**32}),
        HUE,
        "field-range",
    ),
    (
        "decode_kvm_run(released)",
        lambda: decode_kvm_run(MergedAbi(), released(288)),
        HUE,
        "input-type",
    ),
    ("decode_kvm_run(short)", lambda: decode_kvm_run(MergedAbi(), bytes(287)), HUE, "kvm-run-size"),
    ("MergedAbi(exit_reason=2**32)", lambda: MergedAbi(exit_reason=2**32), HUE, "field-range"),
    ("V15Abi(exit_reason='40')", lambda: V15Abi(exit_reason=bad("40")), HUE, "field-type"),
    ("TokenBucket(rate='x')", lambda: TokenBucket(rate=bad("x"), burst=1), HUE, "rate-limit"),
    ("TokenBucket(burst=0)", lambda: TokenBucket(rate=1, burst=0), HUE, "rate-limit"),
    (
        "GuestMemory().guest_write(gpa, 'abc')",
        lambda: GuestMemory().guest_write(0, bad("abc")),
        GuestMemoryError,
        "input-type",
    ),
    (
        "GuestMemory().host_write(gpa, released)",
        lambda: GuestMemory().host_write(0, released(16)),
        GuestMemoryError,
        "input-type",
    ),
    (
        "GuestMemory().map(0, 1 << 24)",
        lambda: GuestMemory().map(0, 1 << 24),
        GuestMemoryError,
        "too-large",
    ),
    ("GuestMemory().map(1)", lambda: GuestMemory().map(1), GuestMemoryError, "unaligned"),
    ("GuestMemory().map(0, 0)", lambda: GuestMemory().map(0, 0), GuestMemoryError, "bad-range"),
    ("GuestMemory().map(-4096)", lambda: GuestMemory().map(-4096), GuestMemoryError, "bad-range"),
    (
        "GuestMemory().host_read(0, 1)",
        lambda: GuestMemory().host_read(0, 1),
        GuestMemoryError,
        "unmapped",
    ),
    (
        "GuestMemory().guest_read('x', 1)",
        lambda: GuestMemory().guest_read(bad("x"), 1),
        GuestMemoryError,
        "bad-range",
    ),
    ("Vcpu(None, None, 0)", lambda: Vcpu(bad(None), bad(None), 0), HUE, "input-type"),
    (
        "Vcpu.run(gpa='x')",
        lambda: Vcpu(Vm(RecordingFirmware()), GuestMemory(), 0x1000).run(gpa=bad("x")),
        HUE,
        "input-type",
    ),
    (
        "Vcpu.complete() in IDLE",
        lambda: Vcpu(Vm(RecordingFirmware()), GuestMemory(), 0x1000).complete(bytes(288)),
        HUE,
        "vcpu-state",
    ),
    ("CertificateStore(None)", lambda: CertificateStore(bad(None)), HUE, "input-type"),
    ("CertificateStore(5)", lambda: CertificateStore(bad(5)), HUE, "input-type"),
    (
        "CertificateStore(lock=None)",
        lambda: CertificateStore("x", lock=bad(None)),
        HUE,
        "input-type",
    ),
    ("store.update(None)", lambda: new_store().update(bad(None)), HUE, "input-type"),
    ("store.update('abc')", lambda: new_store().update(bad("abc")), HUE, "input-type"),
    ("store.update(5)", lambda: new_store().update(bad(5)), HUE, "input-type"),
    (
        "store.update(with_firmware=5)",
        lambda: new_store().update(b"", with_firmware=bad(5)),
        HUE,
        "input-type",
    ),
    ("Vmm(None, store)", lambda: Vmm(bad(None), new_store()), HUE, "input-type"),
    ("Vmm(limiter=5)", lambda: Vmm(GuestMemory(), new_store(), limiter=bad(5)), HUE, "input-type"),
    ("Vmm.run('x')", lambda: Vmm(GuestMemory(), new_store()).run(bad("x")), HUE, "input-type"),
    (
        "TokenBucket(1e308, 2**2000)",
        lambda: TokenBucket(rate=1e308, burst=2**2000),
        HUE,
        "rate-limit",
    ),
    (
        "MergedAbi().reply(run, 'ok')",
        lambda: MergedAbi().reply(bytes(288), bad("ok"), hold=False),
        HUE,
        "input-type",
    ),
    ("Vm(firmware=None)", lambda: Vm(bad(None)), HUE, "input-type"),
    ("Vm(cert_abi='x')", lambda: Vm(RecordingFirmware(), cert_abi=bad("x")), HUE, "input-type"),
    ("Vm(lock=None)", lambda: Vm(RecordingFirmware(), lock=bad(None)), HUE, "input-type"),
    ("Vm(snp=1)", lambda: Vm(RecordingFirmware(), snp=bad(1)), HUE, "input-type"),
    (
        "Vcpu(ghcb_gpa=0x1008)",
        lambda: Vcpu(Vm(RecordingFirmware()), GuestMemory(), 0x1008),
        HUE,
        "input-type",
    ),
    (
        "Vcpu(ghcb_gpa=-1)",
        lambda: Vcpu(Vm(RecordingFirmware()), GuestMemory(), -1),
        HUE,
        "input-type",
    ),
    (
        "CertificateStore(missing)",
        lambda: CertificateStore("/nonexistent/ghcb/certs.blob"),
        StoreError,
        "store-missing",
    ),
    # -- check / scratch / PSC engine: the caller's arguments --------------------------------
    *[
        (f"{name}(validator={v!r})", call(v), InputTypeError, "input-type")
        for v in ("v15", None)
        for name, call in (
            ("check_page", lambda v: lambda: check_page(PAGE, validator=bad(v))),
            ("check_page_full", lambda v: lambda: check_page_full(PAGE, validator=bad(v))),
            (
                "expected_response",
                lambda v: lambda: expected_response(GhcbPage(), validator=bad(v)),
            ),
        )
    ],
    (
        "check_page(ghcb_gpa=0)",
        lambda: check_page(PAGE, ghcb_gpa=0),
        FieldValueError,
        "field-range",
    ),
    (
        "check_page(snp, ghcb_version=1)",
        lambda: check_page(PAGE, snp=True, ghcb_version=1),
        FieldValueError,
        "field-range",
    ),
    (
        "setup_scratch('1')",
        lambda: setup_scratch(bad("1"), 8, ghcb_gpa=0x1000, ghcb_version=2),
        InputTypeError,
        "input-type",
    ),
    (
        "setup_scratch(ghcb_gpa=None)",
        lambda: setup_scratch(0x1800, 8, ghcb_gpa=bad(None), ghcb_version=2),
        InputTypeError,
        "input-type",
    ),
    (
        "setup_scratch(-1)",
        lambda: setup_scratch(-1, 8, ghcb_gpa=0x1000, ghcb_version=2),
        FieldValueError,
        "field-range",
    ),
    (
        "scratch_use(IOIO, 0x14, '5')",
        lambda: scratch_use(ExitCode.IOIO, 0x14, bad("5"), ghcb_version=2),
        InputTypeError,
        "input-type",
    ),
    (
        "scratch_use('x')",
        lambda: scratch_use(bad("x"), 0, 0, ghcb_version=2),
        InputTypeError,
        "input-type",
    ),
    (
        "scratch_outcome(ghcb_gpa='x')",
        lambda: scratch_outcome(GhcbPage(), ghcb_gpa=bad("x"), ghcb_version=2),
        InputTypeError,
        "input-type",
    ),
    (
        "GhcbPsc.in_ghcb(ghcb_gpa='x')",
        lambda: GhcbPsc.in_ghcb(GuestMemory(), bad("x"), 0x1800),
        HUE,
        "input-type",
    ),
    (
        "GhcbPsc.in_ghcb(desc_gpa=None)",
        lambda: GhcbPsc.in_ghcb(GuestMemory(), 0x1000, bad(None)),
        HUE,
        "input-type",
    ),
    ("GhcbPsc(None)", lambda: GhcbPsc(bad(None), 0x1800, 8).begin(), HUE, "input-type"),
]


@pytest.mark.parametrize(
    ("call", "error", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_typed_errors(call: Callable[[], object], error: type[GhcbError], rule: str) -> None:
    """Each hostile call raises the package's own error, with its rule and a spec reference."""
    with pytest.raises(error) as err:
        call()
    assert type(err.value) is error
    assert err.value.rule == rule
    assert err.value.spec


PAGE = bytes(range(256)) * 16
TABLE = build_cert_table([ARK, CertEntry(CertGuid.VCEK, b"vcek")])
SHARED = bytes(range(254)) * 8
#: A CPUID exit without its leaf (RAX): KVM's validator refuses it.
CPUID = build_page(
    GhcbPage.with_fields(
        sw_exit_code=ExitCode.CPUID, sw_exit_info_1=0, sw_exit_info_2=0, rcx=1, protocol_version=2
    )
)
GUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

#: (id, function of the bytes, the bytes, the exact result on any buffer of those bytes)
READERS: list[tuple[str, Callable[[Any], object], bytes, object]] = [
    ("parse_page", lambda d: build_page(parse_page(d)), PAGE, PAGE),
    ("parse_page construct", lambda d: build_page(parse_page(d, backend="construct")), PAGE, PAGE),
    ("parse_page zeros", parse_page, bytes(4096), GhcbPage.empty()),
    (
        "check_page",
        lambda d: [(v.code, v.offset) for v in check_page(d)],
        CPUID,
        [
            ("missing-input", 0x1F8),  # rax, which CPUID needs
        ],
    ),
    ("with_fields", lambda d: GhcbPage.with_fields(shared_buffer=d).shared_buffer, SHARED, SHARED),
    ("replace", lambda d: GhcbPage.replace(valid_bitmap=d).valid_bits, b"\x01" + bytes(15), 1),
    ("parse_cert_table", parse_cert_table, TABLE, [ARK, CertEntry(CertGuid.VCEK, b"vcek")]),
    (
        "parse_cert_table construct",
        lambda d: parse_cert_table(d, backend="construct"),
        TABLE,
        [ARK, CertEntry(CertGuid.VCEK, b"vcek")],
    ),
    (
        "located_entries",
        lambda d: [(w.index, w.offset, w.length, e.data) for w, e in located_entries(d)],
        TABLE,
        [(0, 72, 3, b"ark"), (1, 75, 4, b"vcek")],
    ),
    (
        "cert_table_index",
        lambda d: [(w.guid, w.offset, w.length) for w in cert_table_index(d)],
        TABLE,
        [(CertGuid.ARK.value, 72, 3), (CertGuid.VCEK.value, 75, 4)],
    ),
    (
        "check_cert_table",
        lambda d: [(v.code, v.offset) for v in check_cert_table(d)],
        TABLE,
        [("not-x509", 72), ("not-x509", 75)],
    ),
    ("CertEntry data", lambda d: CertEntry(CertGuid.CRL, d).data, b"crl", b"crl"),
    ("CertEntry guid", lambda d: CertEntry(d, b"x").guid, GUID.bytes, GUID),
    (
        "build_cert_table",
        lambda d: build_cert_table([CertEntry(CertGuid.ARK, d)]),
        b"ark",
        CertGuid.ARK.value.bytes + bytes.fromhex("30000000 03000000") + bytes(24) + b"ark",
    ),
    (
        "sha256_hex",
        sha256_hex,
        b"abc",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
    ("subject_common_name", subject_common_name, b"not a certificate", None),
]

#: The buffers of the same bytes every reader must accept.
VIEWS: dict[str, Callable[[bytes], object]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "contiguous slice": lambda d: memoryview(d)[::1],
    "strided": strided,
    "2-d": lambda d: memoryview(d).cast("B", (1, len(d))),
    "signed items": lambda d: memoryview(d).cast("b"),
    "array('B')": lambda d: array.array("B", d),
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
@pytest.mark.parametrize(
    ("read", "data", "expected"), [r[1:] for r in READERS], ids=[r[0] for r in READERS]
)
def test_any_buffer_of_bytes(
    read: Callable[[Any], object], data: bytes, expected: object, view: Callable[[bytes], object]
) -> None:
    """Every function that takes bytes reads any buffer of those bytes, strided ones
    included, to exactly the same result."""
    assert read(view(data)) == expected


def test_strided_is_not_contiguous() -> None:
    """The strided views above really are non-contiguous (so they exercise the copy)."""
    assert not strided(PAGE).c_contiguous
    view = memoryview(bytes(8192))[::2]
    assert (len(view), view.c_contiguous) == (4096, False)
    assert parse_page(view) == GhcbPage.empty()


@pytest.mark.parametrize(
    "argv",
    [
        ["msr", "decode", "--json"],
        ["page", "nope", "--json"],
        ["certs", "check", "x", "--max-size", "-5", "--json"],
        ["--json"],
    ],
)
def test_cli_usage_errors_are_json(argv: list[str]) -> None:
    """Unusable arguments: one JSON object and exit status 2, even from argparse."""
    out = io.StringIO()
    assert main(argv, out) == 2
    doc: Any = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert doc["error"]["code"] == "usage"
