"""The firmware interface the reference hypervisor calls, and a recording test double.

KVM issues ``SNP_GUEST_REQUEST`` to the PSP with the guest's request page and gets the
response page and a firmware status (``sev_ret_code``, ghcb.codes.FirmwareStatus). The
simulated firmware (AES-GCM, reports) implements the same protocol; tests that only care about
the GHCB side use :class:`RecordingFirmware`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ghcb._bytes import byte_string
from ghcb.codes import Errno, FirmwareStatus
from ghcb.errors import GhcbError, InputTypeError
from ghcb.hypervisor.errors import HostError
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Firmware", "FirmwareFailure", "RecordingFirmware", "call_firmware"]


class FirmwareFailure(HostError):
    """The firmware command failed without a firmware status: KVM makes KVM_RUN fail with
    ``-errno`` instead of answering the guest ("if (ret && !fw_err) return ret;").

    ``errno`` is what ``sev_issue_cmd`` returned (drivers/crypto/ccp/sev-dev.c
    ``__sev_do_cmd_locked``): ``ETIMEDOUT`` when the PSP did not answer (the default),
    ``EBUSY`` once the PSP is marked dead, ``ENODEV`` without a PSP. (``EIO`` comes only with
    a status, which is an answer, not a failure.)
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str = "firmware",
        spec: str = "drivers/crypto/ccp/sev-dev.c __sev_do_cmd_locked",
        errno: int = Errno.ETIMEDOUT,
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, rule=rule, spec=spec, field=field, offset=offset)
        self.errno = errno

    def __reduce__(self) -> tuple[object, ...]:
        args = (self.message, self.rule, self.spec, self.errno, self.field, self.offset)
        return (_rebuild_failure, args)


def _rebuild_failure(
    message: str, rule: str, spec: str, errno: int, field: str | None, offset: int | None
) -> FirmwareFailure:
    return FirmwareFailure(message, rule=rule, spec=spec, errno=errno, field=field, offset=offset)


class Firmware(Protocol):
    """What the handler needs from the SEV firmware."""

    def guest_request(self, request: bytes) -> tuple[bytes | None, int]:
        """Process one guest message page; return the response page (None when the firmware
        writes no response, e.g. on most errors) and the firmware status.

        Raises:
            FirmwareFailure: the command failed without a status.
        """
        ...


_SPEC_ANSWER = "ghcb.hypervisor.firmware Firmware.guest_request (one page, a u32 status)"
_U32_MAX = 0xFFFFFFFF


def call_firmware(firmware: Firmware, request: bytes) -> tuple[bytes | None, int]:
    """Ask ``firmware`` for ``request`` and check the answer's shape (what the handler may
    rely on: no response or exactly one page, and a u32 status).

    Raises:
        FirmwareFailure: the firmware failed without a status (as it raised it).
        HostError: the firmware answered something else, or raised anything but a
            :class:`~ghcb.errors.GhcbError` (wrapped, ``from`` the original).
    """
    try:
        answer = firmware.guest_request(request)
    except GhcbError:
        raise
    except Exception as e:
        raise HostError(
            f"the firmware raised {type(e).__name__}: {e}",
            rule="firmware-raised",
            spec=_SPEC_ANSWER,
        ) from e
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise HostError(
            f"the firmware answered {type(answer).__name__}, not (response, status)",
            rule="firmware-answer",
            spec=_SPEC_ANSWER,
        )
    response, status = answer
    if not isinstance(status, int) or isinstance(status, bool):
        raise HostError(
            f"firmware status must be an int, not {type(status).__name__}",
            rule="firmware-answer",
            spec=_SPEC_ANSWER,
        )
    if not 0 <= status <= _U32_MAX:
        raise HostError(
            f"firmware status {status} is not a u32", rule="firmware-answer", spec=_SPEC_ANSWER
        )
    if response is None:
        return None, status
    try:
        page = byte_string(response, what="the firmware response", spec=_SPEC_ANSWER)
    except InputTypeError as e:
        raise HostError(e.message, rule="firmware-answer", spec=_SPEC_ANSWER) from e
    if len(page) != PAGE_SIZE:
        raise HostError(
            f"the firmware answered {len(page)} bytes, not one {PAGE_SIZE}-byte page",
            rule="firmware-answer",
            spec=_SPEC_ANSWER,
        )
    return page, status


def _echo(request: bytes) -> tuple[bytes | None, int]:
    return bytes(reversed(request)), FirmwareStatus.SUCCESS


@dataclass
class RecordingFirmware:
    """A test double: records every request, answers with ``respond`` (default: the request
    reversed, status SUCCESS), or fails when ``fail`` is set."""

    respond: Callable[[bytes], tuple[bytes | None, int]] = _echo
    fail: bool = False
    requests: list[bytes] = field(default_factory=list)

    def guest_request(self, request: bytes) -> tuple[bytes | None, int]:
        """Record ``request`` and answer it."""
        if len(request) != PAGE_SIZE:
            raise FirmwareFailure(f"guest request of {len(request)} bytes", spec="SNP ABI")
        self.requests.append(request)
        if self.fail:
            raise FirmwareFailure("firmware failed without a status (timed out)")
        return self.respond(request)
