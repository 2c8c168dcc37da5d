"""The firmware interface's answer check (call_firmware) and the RecordingFirmware double, with
exact messages, rules and spec references.

KVM hands the PSP one request page and gets back one response page and a u32 ``sev_ret_code``
(include/uapi/linux/psp-sev.h ``struct sev_data_snp_guest_request``; ``fw_err`` is a u32 in
arch/x86/kvm/svm/sev.c ``snp_handle_guest_req``), so anything else a firmware double answers is
the host's fault: a HostError, never a guest-visible answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from ghcb.codes import Errno, FirmwareStatus
from ghcb.errors import InputTypeError
from ghcb.hypervisor.errors import HostError
from ghcb.hypervisor.firmware import FirmwareFailure, RecordingFirmware, call_firmware
from ghcb.schemas.page import PAGE_SIZE

SPEC = "ghcb.hypervisor.firmware Firmware.guest_request (one page, a u32 status)"
REQUEST = bytes(range(256)) * (PAGE_SIZE // 256)


def answering(answer: Any) -> RecordingFirmware:
    return RecordingFirmware(respond=lambda r: answer)


def refusal(firmware: Any) -> HostError:
    with pytest.raises(HostError) as e:
        call_firmware(firmware, REQUEST)
    assert type(e.value) is HostError
    return e.value


def test_echo_answer_is_returned() -> None:
    """The default double answers the request reversed with SUCCESS, and records it."""
    firmware = RecordingFirmware()
    assert call_firmware(firmware, REQUEST) == (REQUEST[::-1], FirmwareStatus.SUCCESS)
    assert firmware.requests == [REQUEST]


@pytest.mark.parametrize("status", [0, 1, 0x16, 0xFFFFFFFF])
def test_u32_statuses_pass(status: int) -> None:
    """Every u32 is a status (sev_ret_code is a u32), up to and including 0xFFFFFFFF."""
    page = b"\x5a" * PAGE_SIZE
    assert call_firmware(answering((page, status)), REQUEST) == (page, status)
    assert call_firmware(answering((None, status)), REQUEST) == (None, status)


def test_response_buffer_is_copied_to_bytes() -> None:
    """A bytearray response is read as bytes (a copy the firmware cannot change later)."""
    page = bytearray(b"\x01" * PAGE_SIZE)
    response, status = call_firmware(answering((page, 0)), REQUEST)
    assert type(response) is bytes
    assert response == bytes(page)
    assert status == 0


def test_intenum_status_passes() -> None:
    """A FirmwareStatus member is an int status."""
    assert call_firmware(answering((None, FirmwareStatus.INVALID_PARAM)), REQUEST) == (None, 0x16)


def test_raising_firmware_is_wrapped_exactly() -> None:
    """Any non-GhcbError exception: HostError "firmware-raised", from the original."""

    def boom(request: bytes) -> tuple[bytes, int]:
        raise OSError("PSP mailbox gone")

    e = refusal(RecordingFirmware(respond=boom))
    assert (e.message, e.rule, e.spec) == (
        "the firmware raised OSError: PSP mailbox gone",
        "firmware-raised",
        SPEC,
    )
    assert isinstance(e.__cause__, OSError)


def test_firmware_failure_passes_through() -> None:
    """A FirmwareFailure (a GhcbError) is raised as it is, errno and all."""
    failure = FirmwareFailure("no status", errno=Errno.EBUSY)

    def dead(request: bytes) -> tuple[bytes, int]:
        raise failure

    with pytest.raises(FirmwareFailure) as e:
        call_firmware(RecordingFirmware(respond=dead), REQUEST)
    assert e.value is failure
    assert e.value.errno == Errno.EBUSY


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "the firmware answered NoneType, not (response, status)"),
        ([REQUEST, 0], "the firmware answered list, not (response, status)"),
        ((REQUEST,), "the firmware answered tuple, not (response, status)"),
        ((REQUEST, 0, 0), "the firmware answered tuple, not (response, status)"),
        ((REQUEST, "0"), "firmware status must be an int, not str"),
        ((REQUEST, True), "firmware status must be an int, not bool"),
        ((REQUEST, 0.0), "firmware status must be an int, not float"),
        ((REQUEST, None), "firmware status must be an int, not NoneType"),
        ((REQUEST, -1), "firmware status -1 is not a u32"),
        ((REQUEST, 2**32), "firmware status 4294967296 is not a u32"),
        (
            (REQUEST + b"\x00", 0),
            f"the firmware answered {PAGE_SIZE + 1} bytes, not one 4096-byte page",
        ),
        ((REQUEST[:-1], 0), f"the firmware answered {PAGE_SIZE - 1} bytes, not one 4096-byte page"),
        ((b"", 0), "the firmware answered 0 bytes, not one 4096-byte page"),
        ((REQUEST.decode("latin-1"), 0), "the firmware response must be bytes-like, not str"),
    ],
    ids=[
        "none",
        "list",
        "one-tuple",
        "three-tuple",
        "str-status",
        "bool-status",
        "float-status",
        "none-status",
        "negative-status",
        "wide-status",
        "page-plus-one",
        "page-minus-one",
        "empty-page",
        "str-page",
    ],
)
def test_bad_answers_are_host_errors(answer: Any, message: str) -> None:
    """Each shape the handler may not rely on: HostError "firmware-answer" naming it."""
    e = refusal(answering(answer))
    assert (e.message, e.rule, e.spec, e.field, e.offset) == (
        message,
        "firmware-answer",
        SPEC,
        None,
        None,
    )
    assert str(e) == f"{message} [rule firmware-answer; {SPEC}]"
    if e.__cause__ is not None:  # the response's InputTypeError, under the same spec
        assert isinstance(e.__cause__, InputTypeError)
        assert (e.__cause__.message, e.__cause__.spec) == (message, SPEC)


@pytest.mark.parametrize("size", [0, PAGE_SIZE - 1, PAGE_SIZE + 1])
def test_recording_double_refuses_other_than_a_page(size: int) -> None:
    """The double takes exactly one request page (SNP ABI: the request is one 4 KiB page)."""
    firmware = RecordingFirmware()
    with pytest.raises(FirmwareFailure) as e:
        firmware.guest_request(bytes(size))
    assert (e.value.message, e.value.rule, e.value.spec, e.value.errno) == (
        f"guest request of {size} bytes",
        "firmware",
        "SNP ABI",
        Errno.ETIMEDOUT,
    )
    assert firmware.requests == []


def test_recording_double_fails_after_recording() -> None:
    """fail=True: the request is recorded, then a FirmwareFailure without a status (the
    defaults: -ETIMEDOUT from __sev_do_cmd_locked)."""
    firmware = RecordingFirmware(fail=True)
    with pytest.raises(FirmwareFailure) as e:
        firmware.guest_request(REQUEST)
    assert (e.value.message, e.value.rule, e.value.spec, e.value.errno) == (
        "firmware failed without a status (timed out)",
        "firmware",
        "drivers/crypto/ccp/sev-dev.c __sev_do_cmd_locked",
        Errno.ETIMEDOUT,
    )
    assert firmware.requests == [REQUEST]
