#!/usr/bin/env python3
"""Write the seed inputs of every harness from ``spec/vectors/`` into ``fuzz/corpus/``.

Each harness's corpus starts from the vectors of its surface, in that harness's input layout
(see each ``fuzz_*.py`` docstring): every certificate-table vector up to 4 KiB, the golden
GHCB pages (and, for the handler, those pages behind its flags / msg_type / kvm_run prefix for
each ABI), the GHCB MSR and SW_EXITINFO vectors as little-endian words, the attestation
reports, one payload of each modelled guest-message type and that payload sealed as a message
page, and for the input reader the hex dumps of ``tests/test_cli_input.py`` (captured from
xxd, hexdump -C and od) and the certificate tables as binary files.
``tests/test_fuzz_replay.py`` checks that the committed corpora hold every seed.

Run from the repository root: ./fuzz/make_corpus.py (the files libFuzzer added stay).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ghcb.guest_msg import PAYLOADS, seal_message  # noqa: E402
from ghcb.hypervisor import KVM_RUN_SIZE  # noqa: E402
from ghcb.report import ATTESTATION_REPORT_SIZE  # noqa: E402
from tests.helpers import assemble, load_vectors, vector_bytes  # noqa: E402
from tests.test_cli_input import DUMPS  # noqa: E402

#: The largest certificate-table seed (the harness runs with -max_len=4096).
MAX_CERT_SEED = 4096
#: The handler's prefix: the ABI in flags bits 6-7, then MSG_REPORT_REQ (fuzz_handler.py).
HANDLER_ABIS = (0, 1, 2)
HANDLER_MSG_TYPE = 5
#: Must match fuzz_guest_msg.KEY (checked by the replay test).
GUEST_MSG_KEY = bytes(range(32))
GUEST_MSG_REPORT, GUEST_MSG_PAYLOAD, GUEST_MSG_PAGE = b"\x00", b"\x01", b"\x02"
#: The input reader's prefixes (fuzz_input.py): flags, limit / 16, offset / 16.
INPUT_WHOLE = bytes([0, 0x100 // 16 - 1, 0])  # auto form, 240-byte limit, no offset
INPUT_WINDOW = bytes([4, 2, 1])  # auto form, 32 bytes at offset 16
INPUT_PAGE = bytes([1, 0x1000 // 16 - 1, 0])  # binary, a 4080-byte limit


def _u64(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, "little") for v in values)


def _cert_seeds() -> dict[str, bytes]:
    out = {}
    for vec in load_vectors("certs")["vectors"]:
        data = assemble(vec["parts"])
        if len(data) <= MAX_CERT_SEED:
            out[vec["name"]] = data
    return out


def _pages() -> dict[str, bytes]:
    return {v["name"]: vector_bytes(v["file"]) for v in load_vectors("pages")["vectors"]}


def _handler_seeds() -> dict[str, bytes]:
    return {
        f"{name}-abi{abi}": bytes([abi << 6, HANDLER_MSG_TYPE]) + bytes(KVM_RUN_SIZE) + page
        for name, page in _pages().items()
        for abi in HANDLER_ABIS
    }


def _msr_seeds() -> dict[str, bytes]:
    exitinfo = load_vectors("exitinfo2")
    out = {
        f"msr-{v['code'] or 'unknown'}": _u64(int(v["value"], 16))
        for v in load_vectors("msr")["values"]
    }
    for v in exitinfo["guest_errors"]:
        out[f"guest_error-{v['name']}"] = _u64(0, int(v["exitinfo2"], 16))
    for v in exitinfo["ghcb_errors"]:
        out[f"ghcb_error-{v['name']}"] = _u64(int(v["exitinfo1"], 16), int(v["exitinfo2"], 16))
    for v in exitinfo["event_injections"]:
        out[f"event-{v['name']}"] = _u64(1, int(v["exitinfo2"], 16))
    out["out_of_range-high"] = _u64(0, 0) + b"\x00\x01"
    out["out_of_range-negative"] = _u64(0, 0) + b"\x01"
    return out


def _guest_msg_seeds() -> dict[str, bytes]:
    vectors = load_vectors("reports")
    out = {
        f"report-{r['name']}": GUEST_MSG_REPORT + bytes.fromhex(r["hex"])
        for r in vectors["reports"]
    }
    for r in vectors["synthetic"]:
        report = bytearray(ATTESTATION_REPORT_SIZE)
        for patch in r["bytes"]:
            raw = bytes.fromhex(patch["hex"])
            report[patch["offset"] : patch["offset"] + len(raw)] = raw
        out[f"report-{r['name']}"] = GUEST_MSG_REPORT + bytes(report)
    for msg_type, record in PAYLOADS.items():
        payload = record().to_bytes()
        out[f"payload-{msg_type.name}"] = GUEST_MSG_PAYLOAD + bytes([msg_type]) + payload
        page = seal_message(GUEST_MSG_KEY, msg_type=msg_type, seqno=1, vmpck=0, payload=payload)
        out[f"page-{msg_type.name}"] = GUEST_MSG_PAGE + page
    return out


def _input_seeds() -> dict[str, bytes]:
    out = {}
    for name, text in DUMPS.items():
        out[f"dump-{name}"] = INPUT_WHOLE + text.encode()
        out[f"window-{name}"] = INPUT_WINDOW + text.encode()
    for name, data in _cert_seeds().items():
        out[f"binary-{name}"] = INPUT_PAGE + data
    return out


def seeds() -> dict[str, dict[str, bytes]]:
    """Every harness's seeds: ``{harness: {file name: bytes}}`` (harness ``fuzz_<name>.py``)."""
    return {
        "certs": _cert_seeds(),
        "page": _pages(),
        "handler": _handler_seeds(),
        "msr": _msr_seeds(),
        "guest_msg": _guest_msg_seeds(),
        "input": _input_seeds(),
    }


def main() -> None:
    for harness, files in seeds().items():
        folder = CORPUS / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
