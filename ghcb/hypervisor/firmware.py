"""The firmware interface the reference hypervisor calls, and a recording test double.

KVM issues ``SNP_GUEST_REQUEST`` to the PSP with the guest's request page and gets the
response page and a firmware status (``sev_ret_code``, ghcb.codes.FirmwareStatus). The
simulated firmware (AES-GCM, reports) implements the same protocol; tests that only care about
the GHCB side use :class:`RecordingFirmware`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ghcb.codes import FirmwareStatus
from ghcb.hypervisor.errors import HostError
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Firmware", "FirmwareFailure", "RecordingFirmware"]


class FirmwareFailure(HostError):
    """The firmware command failed without a firmware status (e.g. the PSP is dead): KVM
    makes KVM_RUN fail instead of answering the guest."""


class Firmware(Protocol):
    """What the handler needs from the SEV firmware."""

    def guest_request(self, request: bytes) -> tuple[bytes | None, int]:
        """Process one guest message page; return the response page (None when the firmware
        writes no response, e.g. on most errors) and the firmware status.

        Raises:
            FirmwareFailure: the command failed without a status.
        """
        ...


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
            raise FirmwareFailure(
                f"guest request of {len(request)} bytes", rule="firmware", spec="SNP ABI"
            )
        self.requests.append(request)
        if self.fail:
            raise FirmwareFailure(
                "firmware failed without a status", rule="firmware", spec="SNP ABI"
            )
        return self.respond(request)
