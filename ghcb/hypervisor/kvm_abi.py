"""The certificate-exit ABIs: one object per KVM tree, owning everything that differs.

Each ABI object owns its ``kvm_run`` codec (field names, struct derived from
:mod:`ghcb.schemas.kvm`), the guest-request handlers of its tree (what KVM does for an SNP
Guest Request and an Extended Guest Request), its completion callback (userspace's ``ret`` →
SW_EXITINFO2 / RBX), and the VMM side of the exit (which ``ret`` means "too few pages",
"busy", "generic", and how the VMM learns the request reached firmware). The vCPU
(:mod:`ghcb.hypervisor.vcpu`) and the VMM (:mod:`ghcb.hypervisor.vmm`) ask the object; no
other module branches on the ABI.

* :class:`DisabledAbi` — merged KVM with certificate fetching off (its default, and what
  ``Vm(cert_abi=None)`` means): an Extended Guest Request for ``MSG_REPORT_REQ`` gets the
  empty table (24 zero bytes at RAX when RBX != 0), then is a plain request.
* :class:`MergedAbi` — merged KVM with ``KVM_SEV_SNP_ENABLE_REQ_CERTS``: a
  ``KVM_EXIT_SNP_REQ_CERTS`` exit ``{gpa, npages, ret}``; ``ret`` is a positive errno.
* :class:`V15Abi` — the seed patch (v15, May 2024) and the v15-era tree it applied to:
  ``KVM_EXIT_VMGEXIT`` with ``struct kvm_user_vmgexit``; ``ret`` is the GHCB VMM error;
  ``NOTIFY_DONE`` asks for a second exit once the request reached firmware.

Sources, quoted beside each rule: Linux ``arch/x86/kvm/svm/sev.c`` (the merged tree, with
``snp_handle_guest_req``, ``snp_handle_ext_guest_req``, ``snp_complete_req_certs`` and
``snp_req_certs_err``), the v15 series (``snp_setup_guest_buf``, ``__snp_handle_guest_req``,
``snp_begin_ext_guest_req``, ``snp_complete_ext_guest_req``), ``arch/x86/kvm/x86.c``
``kvm_arch_vcpu_ioctl_run``; ghcb-facts.md §5.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Protocol

from ghcb._bytes import byte_string
from ghcb._fast import FlatField, flat_fields, struct_format
from ghcb.codes import Errno, GhcbErr, HvResp, KvmExit, MsgType, VmmError
from ghcb.errors import InputTypeError
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.firmware import FirmwareFailure, call_firmware
from ghcb.hypervisor.rules import Validator
from ghcb.schemas.certs import CERT_ENTRY_SIZE
from ghcb.schemas.guest_msg import snp_guest_msg_hdr
from ghcb.schemas.kvm import (
    KVM_RUN_EXIT_UNION_OFFSET,
    KVM_RUN_EXIT_UNION_SIZE,
    KVM_USER_VMGEXIT_REQ_CERTS,
    REQ_CERTS_FLAGS_NOTIFY_DONE,
    REQ_CERTS_STATUS_DONE,
    REQ_CERTS_STATUS_PENDING,
    kvm_exit_snp_req_certs,
    kvm_run_prefix,
    kvm_user_vmgexit,
)
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import threading

    import construct as cs

    from ghcb.hypervisor.firmware import Firmware

__all__ = [
    "IMMEDIATE_EXIT_OFFSET",
    "KVM_RUN_SIZE",
    "CertAbi",
    "DisabledAbi",
    "Exit",
    "Fail",
    "MergedAbi",
    "RequestContext",
    "V15Abi",
    "VmmAnswer",
    "decode_kvm_run",
    "encode_kvm_run",
    "kvm_run_bytes",
    "with_immediate_exit",
]

SPEC_KVM: Final = "Linux arch/x86/kvm/svm/sev.c"
SPEC_V15: Final = "v15 seed patch (KVM: SEV: SNP_EXTENDED_GUEST_REQUEST, May 2024)"
SPEC_KVM_H: Final = "Linux uapi/linux/kvm.h struct kvm_run"

#: The ``kvm_run`` bytes a certificate exit carries: the prefix and the 256-byte exit union.
KVM_RUN_SIZE: Final = KVM_RUN_EXIT_UNION_OFFSET + KVM_RUN_EXIT_UNION_SIZE
#: ``offsetof(struct kvm_run, immediate_exit)`` (a u8).
IMMEDIATE_EXIT_OFFSET: Final = next(
    f.offset for f in flat_fields(kvm_run_prefix) if f.name == "immediate_exit"
)
#: ``offsetof(struct snp_guest_msg_hdr, msg_type)``: the byte KVM reads from the request page.
MSG_TYPE_OFFSET: Final = next(
    f.offset for f in flat_fields(snp_guest_msg_hdr) if f.name == "msg_type"
)
_PAGE_MASK: Final = PAGE_SIZE - 1  # PAGE_ALIGNED() / IS_ALIGNED(x, PAGE_SIZE)
_U32: Final = 0xFFFFFFFF
#: The empty certificate table KVM writes when fetching is off: "the certificate table is
#: terminated by 24-bytes of zeroes" (snp_handle_ext_guest_req, kvm_clear_guest(..., 24)).
_EMPTY_TABLE: Final = bytes(CERT_ENTRY_SIZE)


def guest_error(vmm: int, fw: int) -> int:
    """``SNP_GUEST_ERR(vmm, fw)`` as the C macros compute it: ``((u64)vmm << 32) | (fw &
    GENMASK(31, 0))`` — a u32 ``ret`` widened through ``int`` loses its sign bits in the
    shift, so only the low 32 bits of each half count."""
    return (vmm & _U32) << 32 | (fw & _U32)


class VmmAnswer(enum.Enum):
    """What the VMM answers a certificate request; each ABI has its own ``ret`` for it."""

    OK = "ok"
    TOO_SMALL = "too-small"  # the buffer needs more pages (the count goes back too)
    BUSY = "busy"
    GENERIC = "generic"


# -- what a handler returns (the C functions' int: 1 resume, 0 exit, <0 fail) -------------------
class Exit(NamedTuple):
    """``return 0``: exit to userspace; ``kvm_run`` is the bytes KVM leaves there."""

    kvm_run: bytes
    gpa: int
    npages: int
    done: bool = False


class Fail(NamedTuple):
    """``return -errno``: KVM_RUN fails; the GHCB stays mapped."""

    errno: int
    reason: str


#: ``return 1``: resume the guest (what it reads was written to the GHCB already).
RESUME: Final = None
Outcome = Exit | Fail | None


class RequestContext(Protocol):
    """What a handler may use of the vCPU: KVM's state for one VMGEXIT."""

    regs: dict[str, int]  # vcpu->arch.regs after sev_es_sync_from_ghcb
    exit_info_1: int  # control->exit_info_1 (the request page GPA)
    exit_info_2: int  # control->exit_info_2 (the response page GPA)
    kvm_run: bytes  # the kvm_run bytes as they stand (userspace's last write)

    @property
    def firmware(self) -> Firmware:
        """The VM's firmware."""
        ...

    @property
    def guest_req_lock(self) -> threading.Lock:
        """``sev->guest_req_mutex``."""
        ...

    @property
    def guest_resp_buf(self) -> bytearray:
        """``sev->guest_resp_buf`` (per VM, persists across requests)."""
        ...

    def is_valid(self, name: str) -> bool:
        """The field's bit in KVM's snapshot of the guest's valid bitmap."""
        ...

    def read_guest(self, gpa: int, size: int) -> bytes | None:
        """``kvm_read_guest``: the bytes, or None when it fails (no memslot)."""
        ...

    def write_guest(self, gpa: int, data: bytes | bytearray) -> bool:
        """``kvm_write_guest``: whether it succeeded (no memslot → False)."""
        ...

    def is_mapped(self, gpa: int) -> bool:
        """``!is_error_noslot_pfn(gfn_to_pfn(kvm, gpa_to_gfn(gpa)))``."""
        ...

    def set_exit_info(self, info1: int, info2: int) -> None:
        """``ghcb_set_sw_exit_info_1`` and ``_2`` (values and valid bits, in the mapped GHCB)."""
        ...

    def set_exit_info_2(self, info2: int) -> None:
        """``ghcb_set_sw_exit_info_2`` alone."""
        ...

    def note_undefined(self, what: str) -> None:
        """Record that the C code's answer on this path is undefined (and which value the
        model chose instead)."""
        ...


# -- kvm_run codec ----------------------------------------------------------------------------
class _Codec:
    """The ``kvm_run`` prefix plus one exit struct, derived from the construct schemas."""

    def __init__(self, body: cs.Construct[Any, Any]) -> None:
        prefix = flat_fields(kvm_run_prefix)
        exit_ = flat_fields(body, KVM_RUN_EXIT_UNION_OFFSET)
        self.ints: tuple[FlatField, ...] = tuple(f for f in prefix + exit_ if f.kind == "int")
        self._packers = {
            f.name: (f.offset, struct.Struct("<" + f.fmt), f.max_value, f.size) for f in self.ints
        }
        # One unpack per part: (struct, names of its int fields in order, skip the bytes ones)
        self._parts = tuple(
            (
                struct_format(part, skip=frozenset(f.name for f in part if f.kind != "int")),
                tuple(f.name for f in part if f.kind == "int"),
                part[0].offset,
            )
            for part in (prefix, exit_)
        )

    def write_trusted(self, base: bytes | bytearray, values: Mapping[str, int]) -> bytes:
        """:meth:`write` for values KVM's model produced itself (field names of this codec,
        values the width of their fields): no checks."""
        out = bytearray(base)
        packers = self._packers
        for name, value in values.items():
            offset, packer, _, _ = packers[name]
            packer.pack_into(out, offset, value)
        return bytes(out)

    def write(self, base: bytes | bytearray, values: Mapping[str, int]) -> bytes:
        """``base`` with ``values`` written at their fields (others untouched).

        Raises:
            HypervisorUsageError: an unknown field, a value not an int or out of range.
        """
        out = bytearray(base)
        for name, value in values.items():
            entry = self._packers.get(name)
            if entry is None:
                raise HypervisorUsageError(
                    f"kvm_run has no field {name!r} in this ABI", rule="field-name", spec=SPEC_KVM_H
                )
            offset, packer, max_value, size = entry
            if not isinstance(value, int) or isinstance(value, bool):
                raise HypervisorUsageError(
                    f"kvm_run field {name} must be an int, not {type(value).__name__}",
                    rule="field-type",
                    spec=SPEC_KVM_H,
                    field=name,
                )
            if not 0 <= value <= max_value:
                raise HypervisorUsageError(
                    f"kvm_run field {name} = {value} does not fit {size} bytes",
                    rule="field-range",
                    spec=SPEC_KVM_H,
                    field=name,
                    offset=offset,
                )
            packer.pack_into(out, offset, value)
        return bytes(out)

    def read_exit(self, data: bytes | bytearray) -> dict[str, int]:
        """The exit struct's integer fields."""
        _, (fmt, names, offset) = self._parts
        return dict(zip(names, fmt.unpack_from(data, offset), strict=True))

    def read(self, data: bytes | bytearray) -> tuple[dict[str, int], dict[str, int]]:
        """``(prefix fields, exit fields)``: the integer fields of each part."""
        (pfmt, pnames, poff), (bfmt, bnames, boff) = self._parts
        prefix = dict(zip(pnames, pfmt.unpack_from(data, poff), strict=True))
        body = dict(zip(bnames, bfmt.unpack_from(data, boff), strict=True))
        return prefix, body


_BLANK_RUN: Final = bytes(KVM_RUN_SIZE)


def kvm_run_bytes(data: object) -> bytes:
    """``data`` as ``kvm_run`` bytes (a copy unless it is ``bytes``): bytes-like and exactly
    :data:`KVM_RUN_SIZE` long.

    Raises:
        HypervisorUsageError: not bytes-like, or another length.
    """
    try:  # the package's one bytes converter
        data = byte_string(data, what="kvm_run", spec=SPEC_KVM_H)
    except InputTypeError as e:
        raise HypervisorUsageError(e.message, rule=e.rule, spec=SPEC_KVM_H) from e
    if len(data) != KVM_RUN_SIZE:
        raise HypervisorUsageError(
            f"kvm_run must be {KVM_RUN_SIZE} bytes (prefix + exit union), not {len(data)}",
            rule="kvm-run-size",
            spec=SPEC_KVM_H,
        )
    return data


# -- the ABIs ---------------------------------------------------------------------------------
class _Abi:
    """Shared machinery; the concrete classes below are the public ABIs."""

    name: ClassVar[str]
    validator: ClassVar[Validator]
    _codec: ClassVar[_Codec | None] = None
    _ret: ClassVar[Mapping[VmmAnswer, int]] = {}
    npages_field: ClassVar[str] = "npages"  # the exit's field for the buffer's page count

    @property
    def exit_reason(self) -> int:  # overridden by the dataclass field where there is an exit
        return 0

    def __post_init__(self) -> None:
        reason = self.exit_reason
        if not isinstance(reason, int) or isinstance(reason, bool):
            raise HypervisorUsageError(
                f"exit_reason must be an int, not {type(reason).__name__}",
                rule="field-type",
                spec=SPEC_KVM_H,
                field="exit_reason",
            )
        if not 0 <= reason <= _U32:  # kvm_run.exit_reason is a __u32
            raise HypervisorUsageError(
                f"exit_reason {reason} does not fit kvm_run.exit_reason (u32)",
                rule="field-range",
                spec=SPEC_KVM_H,
                field="exit_reason",
            )

    # -- codec --------------------------------------------------------------------------------
    def _require_codec(self) -> _Codec:
        if self._codec is None:
            raise HypervisorUsageError(
                f"{self.name}: certificate fetching is off, there is no kvm_run exit",
                rule="abi",
                spec=SPEC_KVM,
            )
        return self._codec

    def encode(self, fields: Mapping[str, int], *, immediate_exit: int = 0) -> bytes:
        """The ``kvm_run`` bytes (prefix + exit union) with ``fields`` set, others zero."""
        codec = self._require_codec()
        if not isinstance(fields, Mapping):
            raise HypervisorUsageError(
                f"kvm_run fields must be a mapping, not {type(fields).__name__}",
                rule="input-type",
                spec=SPEC_KVM_H,
            )
        prefix = {"exit_reason": self.exit_reason, "immediate_exit": immediate_exit}
        return codec.write(_BLANK_RUN, {**prefix, **fields})

    def kvm_run_bytes(self, data: object) -> bytes:
        """``data`` as checked ``kvm_run`` bytes (prefix + exit union; every ABI,
        the disabled one too: ``immediate_exit`` is in the prefix)."""
        return kvm_run_bytes(data)

    def exit_fields(self, data: bytes | bytearray) -> dict[str, int]:
        """The exit struct's integer fields of checked ``kvm_run`` bytes."""
        return self._require_codec().read_exit(data)

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[dict[str, int], dict[str, int]]:
        """``(prefix fields, exit fields)`` of ``kvm_run`` bytes (integers only)."""
        codec = self._require_codec()
        return codec.read(kvm_run_bytes(data))

    def _exit(self, base: bytes, fields: Mapping[str, int], gpa: int, npages: int) -> Exit:
        """KVM's writes for an exit: ``exit_reason`` and ``fields``, over what ``kvm_run``
        held (a field KVM does not write keeps userspace's last value)."""
        codec = self._require_codec()
        values = {"exit_reason": self.exit_reason, **fields}  # registers: u64, as the fields
        return Exit(codec.write_trusted(base, values), gpa, npages)

    # -- VMM side -----------------------------------------------------------------------------
    def reply(
        self, exit_: Exit | bytes, answer: VmmAnswer, *, npages: int | None = None, hold: bool
    ) -> bytes:
        """The ``kvm_run`` bytes a VMM writes back for ``answer`` to a certificate exit.

        Args:
            exit_: the exit's ``kvm_run`` bytes (or the :class:`Exit`).
            answer: what the VMM answers.
            npages: with ``TOO_SMALL``, the number of pages the blob needs.
            hold: ask to learn when the request reached firmware (the VMM keeps the blob's
                lock until then): ``immediate_exit`` (merged) or ``NOTIFY_DONE`` (v15).

        Raises:
            HypervisorUsageError: no exit in this ABI, bad bytes, TOO_SMALL without npages.
        """
        codec = self._require_codec()
        base = exit_.kvm_run if isinstance(exit_, Exit) else kvm_run_bytes(exit_)
        if not isinstance(answer, VmmAnswer):
            raise HypervisorUsageError(
                f"answer must be a VmmAnswer, not {answer!r}", rule="input-type", spec=SPEC_KVM
            )
        fields = {"ret": self._ret[answer]}
        if answer is VmmAnswer.TOO_SMALL:
            fields[self.npages_field] = _required_npages(npages)
        self._hold(base, fields, hold)
        return codec.write(base, fields)

    def _hold(self, base: bytes | bytearray, fields: dict[str, int], hold: bool) -> None:
        """Ask (in ``fields``) to learn when the request reached firmware."""
        raise NotImplementedError  # pragma: no cover - every ABI with an exit overrides it

    # -- KVM side -----------------------------------------------------------------------------
    def guest_request(self, ctx: RequestContext) -> Outcome:
        """``SVM_VMGEXIT_GUEST_REQUEST`` in this ABI's tree."""
        raise NotImplementedError  # pragma: no cover

    def ext_guest_request(self, ctx: RequestContext) -> Outcome:
        """``SVM_VMGEXIT_EXT_GUEST_REQUEST`` in this ABI's tree."""
        raise NotImplementedError  # pragma: no cover

    def complete(self, ctx: RequestContext, body: Mapping[str, int]) -> Outcome:
        """The completion callback (``vcpu->arch.complete_userspace_io``) of the exit; ``body``
        is the exit struct as userspace left it in ``ctx.kvm_run``."""
        raise NotImplementedError  # pragma: no cover


class _MergedTree(_Abi):
    """The merged tree's guest-request handlers (fetching on or off)."""

    validator = Validator.CURRENT

    def guest_request(self, ctx: RequestContext) -> Outcome:
        # snp_handle_guest_req (merged sev.c)
        with ctx.guest_req_lock:  # "guard(mutex)(&sev->guest_req_mutex);"
            # "if (kvm_read_guest(kvm, req_gpa, sev->guest_req_buf, PAGE_SIZE)) return -EIO;"
            request = ctx.read_guest(ctx.exit_info_1, PAGE_SIZE)
            if request is None:
                return Fail(Errno.EIO, "kvm_read_guest of the request page failed")
            try:
                response, fw_err = call_firmware(ctx.firmware, request)
            except FirmwareFailure as e:
                # "if (ret && !fw_err) return ret;" — e.g. the PSP timed out or is dead
                return Fail(e.errno, f"firmware command failed without a status: {e.message}")
            if response is not None:  # the firmware wrote sev->guest_resp_buf
                ctx.guest_resp_buf[:] = response
            # A firmware error falls through: the response buffer — stale if the firmware did
            # not write it — is still copied to the guest.
            # "if (kvm_write_guest(kvm, resp_gpa, sev->guest_resp_buf, PAGE_SIZE)) return -EIO;"
            if not ctx.write_guest(ctx.exit_info_2, ctx.guest_resp_buf):
                return Fail(Errno.EIO, "kvm_write_guest of the response page failed")
            # "svm_vmgexit_no_action(svm, SNP_GUEST_ERR(0, fw_err));"
            ctx.set_exit_info(HvResp.NO_ACTION, guest_error(0, fw_err))
        return RESUME

    def ext_guest_request(self, ctx: RequestContext) -> Outcome:
        # snp_handle_ext_guest_req (merged sev.c)
        # "if (kvm_read_guest(kvm, req_gpa + offsetof(struct snp_guest_msg_hdr, msg_type),
        #                     &msg_type, 1)) return -EIO;"
        header = ctx.read_guest(ctx.exit_info_1 + MSG_TYPE_OFFSET, 1)
        if header is None:
            return Fail(Errno.EIO, "kvm_read_guest of msg_type failed")
        if header[0] == MsgType.REPORT_REQ:  # "if (msg_type == SNP_MSG_REPORT_REQ)"
            # "if (!kvm_ghcb_rax_is_valid(svm) || !kvm_ghcb_rbx_is_valid(svm))
            #      goto request_invalid;" … "if (!PAGE_ALIGNED(data_gpa)) goto request_invalid;"
            gpa, npages = ctx.regs["rax"], ctx.regs["rbx"]
            if not (ctx.is_valid("rax") and ctx.is_valid("rbx")) or gpa & _PAGE_MASK:
                # "request_invalid: svm_vmgexit_bad_input(svm, GHCB_ERR_INVALID_INPUT);"
                ctx.set_exit_info(HvResp.MALFORMED_INPUT, GhcbErr.INVALID_INPUT)
                return RESUME
            outcome = self._certificates(ctx, gpa, npages)
            if outcome is not None:
                return outcome
        return self.guest_request(ctx)

    def _certificates(self, ctx: RequestContext, gpa: int, npages: int) -> Outcome:
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True, slots=True)
class DisabledAbi(_MergedTree):
    """Merged KVM with certificate fetching off (the default): no userspace exit."""

    name: ClassVar[str] = "disabled"

    def _certificates(self, ctx: RequestContext, gpa: int, npages: int) -> Outcome:
        # "if (data_npages && kvm_clear_guest(kvm, data_gpa, 24)) return -EIO;"
        if npages and not ctx.write_guest(gpa, _EMPTY_TABLE):
            return Fail(Errno.EIO, "kvm_clear_guest of the certificate buffer failed")
        return None  # then "return snp_handle_guest_req(svm, req_gpa, resp_gpa);"


_MERGED_CODEC: Final = _Codec(kvm_exit_snp_req_certs)
#: ``ret`` → VMM error (snp_complete_req_certs: "case ENOSPC: … SNP_GUEST_VMM_ERR_INVALID_LEN",
#: "case EAGAIN: … BUSY", "case EIO: … GENERIC"; anything else "return -EINVAL").
_MERGED_ERRORS: Final = {
    Errno.ENOSPC: VmmError.INVALID_LEN,
    Errno.EAGAIN: VmmError.BUSY,
    Errno.EIO: VmmError.GENERIC,
}


@dataclass(frozen=True, slots=True)
class MergedAbi(_MergedTree):
    """``KVM_EXIT_SNP_REQ_CERTS``: mainline 43; the v7 patch proposed 42."""

    exit_reason: int = KvmExit.SNP_REQ_CERTS
    name: ClassVar[str] = "merged"
    _codec: ClassVar[_Codec | None] = _MERGED_CODEC
    _ret: ClassVar[Mapping[VmmAnswer, int]] = {
        VmmAnswer.OK: 0,
        VmmAnswer.TOO_SMALL: Errno.ENOSPC,
        VmmAnswer.BUSY: Errno.EAGAIN,
        VmmAnswer.GENERIC: Errno.EIO,
    }

    def _certificates(self, ctx: RequestContext, gpa: int, npages: int) -> Outcome:
        # "if (sev->snp_certs_enabled) { vcpu->run->exit_reason = KVM_EXIT_SNP_REQ_CERTS;
        #   vcpu->run->snp_req_certs.gpa = data_gpa; .npages = data_npages; .ret = 0;
        #   vcpu->arch.complete_userspace_io = snp_complete_req_certs; return 0; }"
        return self._exit(ctx.kvm_run, {"gpa": gpa, "npages": npages, "ret": 0}, gpa, npages)

    def complete(self, ctx: RequestContext, body: Mapping[str, int]) -> Outcome:
        # snp_complete_req_certs: "switch (READ_ONCE(vcpu->run->snp_req_certs.ret))"
        ret = body["ret"]
        if ret == 0:  # "case 0: return snp_handle_guest_req(svm, …exit_info_1, …exit_info_2);"
            return self.guest_request(ctx)
        vmm_error = _MERGED_ERRORS.get(ret)  # type: ignore[call-overload]
        if vmm_error is None:  # "default: break; } return -EINVAL;"
            return Fail(Errno.EINVAL, f"undefined kvm_exit_snp_req_certs.ret {ret}")
        if vmm_error == VmmError.INVALID_LEN:
            # "vcpu->arch.regs[VCPU_REGS_RBX] = vcpu->run->snp_req_certs.npages;"
            ctx.regs["rbx"] = body["npages"]
        # snp_req_certs_err: "ghcb_set_sw_exit_info_2(svm->sev_es.ghcb,
        #                     SNP_GUEST_ERR(vmm_error, 0)); return 1;"
        ctx.set_exit_info_2(guest_error(vmm_error, 0))
        return RESUME

    def _hold(self, base: bytes | bytearray, fields: dict[str, int], hold: bool) -> None:
        # "set kvm_run.immediate_exit right after supplying certs and before resuming": the
        # completion runs, then KVM_RUN returns -EINTR (x86.c checks wants_to_run after
        # complete_userspace_io).
        fields["immediate_exit"] = int(hold)


_V15_CODEC: Final = _Codec(kvm_user_vmgexit)


@dataclass(frozen=True, slots=True)
class V15Abi(_Abi):
    """The seed patch's ``KVM_EXIT_VMGEXIT`` = 40 with ``struct kvm_user_vmgexit``, and the
    v15-era tree's guest-request handling."""

    exit_reason: int = KvmExit.VMGEXIT
    name: ClassVar[str] = "v15"
    validator: ClassVar[Validator] = Validator.V15
    _codec: ClassVar[_Codec | None] = _V15_CODEC
    npages_field: ClassVar[str] = "data_npages"
    # KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN 1, _BUSY 2, _GENERIC (1 << 31)
    _ret: ClassVar[Mapping[VmmAnswer, int]] = {
        VmmAnswer.OK: 0,
        VmmAnswer.TOO_SMALL: VmmError.INVALID_LEN,
        VmmAnswer.BUSY: VmmError.BUSY,
        VmmAnswer.GENERIC: VmmError.GENERIC_V15,
    }

    def _handle(self, ctx: RequestContext) -> tuple[int, bool]:
        """``__snp_handle_guest_req``: ``(fw_err, failed)``."""
        req_gpa, resp_gpa = ctx.exit_info_1, ctx.exit_info_2
        # snp_setup_guest_buf: "if (!PAGE_ALIGNED(req_gpa) || !PAGE_ALIGNED(resp_gpa))
        #                        return -EINVAL;"
        if req_gpa & _PAGE_MASK or resp_gpa & _PAGE_MASK:
            return 0, True
        # "req_pfn = gfn_to_pfn(kvm, gpa_to_gfn(req_gpa)); if (is_error_noslot_pfn(req_pfn))
        #  return -EINVAL;" (and the same for resp_pfn)
        if not (ctx.is_mapped(req_gpa) and ctx.is_mapped(resp_gpa)):
            return 0, True
        # The firmware reads the request page and writes the response page itself
        # (data->req_paddr / res_paddr are the guest's pfns); no bounce buffer in this tree.
        request = ctx.read_guest(req_gpa, PAGE_SIZE)
        if request is None:  # pragma: no cover - mapped pages are always readable
            return 0, True  # pragma: no mutate
        try:
            response, fw_err = call_firmware(ctx.firmware, request)
        except FirmwareFailure:
            return 0, True  # "ret = sev_issue_cmd(...); if (ret) return ret;" fw_err stays 0
        if response is not None:
            ctx.write_guest(resp_gpa, response)
        # sev_issue_cmd fails (-EIO) whenever the firmware returns a non-zero status.
        return fw_err, fw_err != 0

    def guest_request(self, ctx: RequestContext) -> Outcome:
        # v15-era snp_handle_guest_req: "if (__snp_handle_guest_req(kvm, req_gpa, resp_gpa,
        # &fw_err)) vmm_ret = SNP_GUEST_VMM_ERR_GENERIC; ghcb_set_sw_exit_info_2(svm->sev_es
        # .ghcb, SNP_GUEST_ERR(vmm_ret, fw_err));" — the guest is always resumed.
        with ctx.guest_req_lock:
            fw_err, failed = self._handle(ctx)
        ctx.set_exit_info_2(guest_error(VmmError.GENERIC_V15 if failed else 0, fw_err))
        return RESUME

    def ext_guest_request(self, ctx: RequestContext) -> Outcome:
        # snp_begin_ext_guest_req (no msg_type check: every Extended Guest Request exits)
        gpa, npages = ctx.regs["rax"], ctx.regs["rbx"]
        if gpa & _PAGE_MASK:  # "if (!IS_ALIGNED(data_gpa, PAGE_SIZE)) goto abort_request;"
            # "abort_request: ghcb_set_sw_exit_info_2(svm->sev_es.ghcb, SNP_GUEST_ERR(vmm_ret,
            # fw_err));" with vmm_ret = GENERIC and fw_err never initialised.
            ctx.note_undefined(
                "v15 snp_begin_ext_guest_req abort path: fw_err is uninitialised in the seed "
                "patch; the model answers fw_err = 0"
            )
            ctx.set_exit_info_2(guest_error(VmmError.GENERIC_V15, 0))
            return RESUME
        # "vcpu->run->exit_reason = KVM_EXIT_VMGEXIT; …type = KVM_USER_VMGEXIT_REQ_CERTS;
        #  …data_gpa; …data_npages; …flags = 0; …status = STATUS_PENDING;" — ret is not set:
        # it keeps whatever kvm_run held.
        fields = {
            "type": KVM_USER_VMGEXIT_REQ_CERTS,
            "data_gpa": gpa,
            "data_npages": npages,
            "flags": 0,
            "status": REQ_CERTS_STATUS_PENDING,
        }
        return self._exit(ctx.kvm_run, fields, gpa, npages)

    def complete(self, ctx: RequestContext, body: Mapping[str, int]) -> Outcome:
        # snp_complete_ext_guest_req
        vmm_ret, fw_err = body["ret"], 0  # "vmm_ret = vcpu->run->vmgexit.req_certs.ret;"
        if vmm_ret:
            if vmm_ret == VmmError.INVALID_LEN:
                # "vcpu->arch.regs[VCPU_REGS_RBX] = vcpu->run->vmgexit.req_certs.data_npages;"
                ctx.regs["rbx"] = body["data_npages"]
        elif body["status"] == REQ_CERTS_STATUS_DONE:
            return RESUME  # "goto out_resume;" — EXITINFO2 keeps the 0 preset
        else:
            # "if (__snp_handle_guest_req(kvm, control->exit_info_1, control->exit_info_2,
            # &fw_err)) vmm_ret = SNP_GUEST_VMM_ERR_GENERIC;" (without guest_req_mutex in the
            # seed; the model still serialises its firmware calls)
            with ctx.guest_req_lock:
                fw_err, failed = self._handle(ctx)
            vmm_ret = VmmError.GENERIC_V15 if failed else 0
        ctx.set_exit_info_2(guest_error(vmm_ret, fw_err))
        if body["flags"] & REQ_CERTS_FLAGS_NOTIFY_DONE:
            # "req_certs.status = STATUS_DONE; req_certs.flags = 0; return 0;" — the rest of
            # kvm_run is as userspace left it (exit_reason included).
            out = _V15_CODEC.write_trusted(
                ctx.kvm_run, {"status": REQ_CERTS_STATUS_DONE, "flags": 0}
            )
            return Exit(out, body["data_gpa"], body["data_npages"], done=True)
        return RESUME

    def _hold(self, base: bytes | bytearray, fields: dict[str, int], hold: bool) -> None:
        if hold:  # "the VMM can set …_FLAGS_NOTIFY_DONE before returning the certificate blob"
            _, body = _V15_CODEC.read(base)
            fields["flags"] = body["flags"] | REQ_CERTS_FLAGS_NOTIFY_DONE


CertAbi = DisabledAbi | MergedAbi | V15Abi


def _required_npages(npages: int | None) -> int:
    if npages is None:
        raise HypervisorUsageError(
            "a TOO_SMALL answer needs the page count", rule="vmm-answer", spec=SPEC_KVM
        )
    return npages


def with_immediate_exit(kvm_run: bytes | bytearray, value: int) -> bytes:
    """``kvm_run`` with ``immediate_exit`` set to ``value`` (0 or 1) — what a VMM writes before
    KVM_RUN; the field is in the prefix every ABI shares."""
    out = bytearray(kvm_run_bytes(kvm_run))
    out[IMMEDIATE_EXIT_OFFSET] = 1 if value else 0
    return bytes(out)


def _require_abi(abi: object) -> _Abi:
    if not isinstance(abi, _Abi):
        raise HypervisorUsageError(
            f"abi must be MergedAbi() or V15Abi(), not {type(abi).__name__}",
            rule="abi",
            spec=SPEC_KVM,
        )
    return abi


def encode_kvm_run(abi: CertAbi, fields: Mapping[str, int], *, immediate_exit: int = 0) -> bytes:
    """The ``kvm_run`` bytes (prefix + exit union) of a certificate exit of ``abi``, with
    ``fields`` set and every other byte zero.

    Raises:
        HypervisorUsageError: not an ABI with an exit, unknown field, value out of range.
    """
    return _require_abi(abi).encode(fields, immediate_exit=immediate_exit)


def decode_kvm_run(
    abi: CertAbi, data: bytes | bytearray | memoryview
) -> tuple[dict[str, int], dict[str, int]]:
    """``(prefix fields, exit fields)`` of ``kvm_run`` bytes for ``abi`` (integers only).

    Raises:
        HypervisorUsageError: not an ABI with an exit, or not ``KVM_RUN_SIZE`` bytes.
    """
    return _require_abi(abi).decode(data)
