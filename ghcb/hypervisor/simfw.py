"""A simulated AMD SEV-SNP firmware (PSP) answering SNP_GUEST_REQUEST: the guest-message
service of snp-firmware-facts.md §3, signing real attestation reports (§1) with the synthetic
chain's VCEK or VLEK (:mod:`ghcb.hypervisor.pki`).

:class:`SimulatedFirmware` implements :class:`ghcb.hypervisor.firmware.Firmware`:
``guest_request(page) -> (response page | None, status)``. It follows AMD's published firmware
source (``snp_mcmd_guest_request``, facts §3.4) in its order:

* header rules (steps 8-10, INVALID_PARAM), AES-GCM tag (step 11, BAD_MEASUREMENT), sequence
  number == counter + 1 (step 12, AEAD_OFLOW), MSG_VERSION (step 13) and MSG_TYPE (step 14,
  INVALID_PARAM): a *command* failure — no response page, the counter does not move;
* otherwise a sealed response (type + 1, MSG_VERSION 1, seqno + 1, the same VMPCK), the counter
  advances by 2 and the command status is SUCCESS; failures of the payload's own rules
  (facts §3.5) travel inside the encrypted response's STATUS.

Modelled messages: REPORT_REQ, KEY_REQ, TSC_INFO_REQ. Everything else (CPUID, the migration
agent's EXPORT/IMPORT/ABSORB/VMRK) is the switch default: INVALID_PARAM.

Simulation, not hardware: the VMPCKs, REPORT_ID and every derived key come from
``FirmwareConfig.seed`` (test values anyone can recompute); the KEY_REQ derivation follows the
shape of the firmware's (NIST SP 800-108 counter-mode HMAC-SHA256, label ``gmsg-keyreq``, the
"mix data" context, facts §3.7) but its root secrets are HMAC-SHA-384 of the seed, so the keys
match no real chip. Not modelled: MASK_CHIP_ID / MASK_CHIP_KEY (SNP_CONFIG, §3.9), VcekDis,
KEY_REQ's LAUNCH_MIT_VECTOR (FW >= 1.58), the platform/guest-state checks (steps 1-7).

Thread safety: one lock serialises requests (the PSP runs one command at a time) and guards
the counters and the reported TCB; :meth:`SimulatedFirmware.set_tcb` swaps TCB and chain under
it, so a report is always signed by the key of the TCB it carries.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ghcb._bytes import byte_string
from ghcb._report_record import REPORT_OFFSET, SIGNED_SIZE
from ghcb._report_sig import sign_signed_bytes
from ghcb.codes import FirmwareStatus, MsgType
from ghcb.guest_msg import (
    MSG_VERSION,
    VMPCK_COUNT,
    VMPCK_LEN,
    GuestMessageError,
    KeyReq,
    KeyRsp,
    KeySel,
    MsgHeader,
    ReportReq,
    ReportRsp,
    TscInfoRsp,
    open_message,
    response_seqno,
    response_type,
    seal_message,
    seqno_accepted,
)
from ghcb.hypervisor.errors import HypervisorUsageError
from ghcb.hypervisor.firmware import FirmwareFailure
from ghcb.hypervisor.pki import DEFAULT_CSP_ID, DEFAULT_TCB, Chain, chain
from ghcb.report import (
    ATTESTATION_REPORT_SIZE,
    KNOWN_VERSIONS,
    PRODUCT_CPUID,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    SignerInfo,
    SigningKey,
)
from ghcb.schemas.page import PAGE_SIZE
from ghcb.tcb import TCB_COMPONENTS, Product, Tcb, require_product

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ghcb._record import SchemaRecord

__all__ = ["DEFAULT_SEED", "FirmwareConfig", "SimulatedFirmware", "default_vmpcks"]

SPEC_FW: Final = "SNP firmware snp_mcmd_guest_request (snp-firmware-facts §3.4)"
SPEC_CONFIG: Final = "ghcb.hypervisor.simfw FirmwareConfig"
#: The seed every default secret comes from (VMPCKs, REPORT_ID, derived-key roots).
DEFAULT_SEED: Final = b"ghcb simulated SNP firmware v1"
#: Guest POLICY of the real v2/v5 reports (SMT + the must-be-one bit 17; facts §1.4).
DEFAULT_POLICY: Final = 0x30000
_STATUS_OK: Final = FirmwareStatus.SUCCESS
_INVALID_PARAM: Final = FirmwareStatus.INVALID_PARAM
_INVALID_KEY: Final = FirmwareStatus.INVALID_KEY
# KEY_REQ GUEST_FIELD_SELECT bits 0..5 (facts §3.7).
_GFS_POLICY, _GFS_IMAGE_ID, _GFS_FAMILY_ID, _GFS_MEASUREMENT, _GFS_SVN, _GFS_TCB = (
    1 << i for i in range(6)
)
_GFS_MASK: Final = 0x3F
_KDF_LABEL: Final = b"gmsg-keyreq"
_VMPCK_OFFSET: Final = next(f.offset for f in MsgHeader.FIELDS if f.name == "msg_vmpck")


def _derive(seed: bytes, label: bytes, size: int) -> bytes:
    return hmac.new(seed, b"ghcb simfw " + label, hashlib.sha384).digest()[:size]


def default_vmpcks(seed: bytes = DEFAULT_SEED) -> tuple[bytes, bytes, bytes, bytes]:
    """VMPCK0..3 derived from ``seed`` (HMAC-SHA-384, first 32 bytes; a simulation)."""
    k0, k1, k2, k3 = (_derive(seed, b"VMPCK%d" % i, VMPCK_LEN) for i in range(VMPCK_COUNT))
    return k0, k1, k2, k3


def _usage(message: str, name: str) -> HypervisorUsageError:
    return HypervisorUsageError(message, rule="firmware-config", spec=SPEC_CONFIG, field=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareConfig:
    """What the simulated firmware knows about its one guest and its platform.

    ``tcb`` is the reported TCB at launch (also LAUNCH_TCB); :meth:`SimulatedFirmware.set_tcb`
    changes it later. ``vmpcks`` default to :func:`default_vmpcks` of ``seed``, ``report_id``
    to a value derived from it, ``chip_id`` to the chain's default for ``product``.
    ``signing_key="vlek"`` means a VLEK is loaded: KEY_SEL 0 then signs with it (§1.6).
    ``captured_report`` (1184 bytes, e.g. one captured on real hardware) is returned verbatim,
    not re-signed, to every REPORT_REQ the firmware accepts: its REPORT_DATA and VMPL are the
    captured ones, so a guest can replay a real chip's report through the whole exchange.

    Raises:
        HypervisorUsageError: a field of the wrong type, length or range.
    """

    product: Product = Product.MILAN
    seed: bytes = DEFAULT_SEED
    vmpcks: tuple[bytes, ...] = ()
    policy: int = DEFAULT_POLICY
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    guest_svn: int = 0
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = b""
    report_id_ma: bytes = b"\xff" * 32  # no migration agent (every real report, facts §1.1)
    chip_id: bytes | None = None
    tcb: Tcb = DEFAULT_TCB
    report_version: int = 5
    signing_key: Literal["vcek", "vlek"] = "vcek"
    csp_id: str = DEFAULT_CSP_ID
    platform_info: int = 0x1  # SMT_EN (facts §1.5)
    cpuid_step: int = 0
    firmware_version: tuple[int, int, int] = (1, 55, 35)  # major, minor, build (facts §5.1)
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    tsc_scale: int = 0
    tsc_offset: int = 0
    tsc_factor: int = 200  # what ASPFW writes to the secrets page (facts §3.8)
    captured_report: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "product", require_product(self.product, spec=SPEC_CONFIG))
        seed = self._bytes("seed", None)
        if not self.vmpcks:
            object.__setattr__(self, "vmpcks", default_vmpcks(seed))
        if len(self.vmpcks) != VMPCK_COUNT:
            raise _usage(f"vmpcks must be {VMPCK_COUNT} keys", "vmpcks")
        keys = tuple(byte_string(k, what="a VMPCK", spec=SPEC_CONFIG) for k in self.vmpcks)
        if any(len(k) != VMPCK_LEN for k in keys):
            raise _usage(f"each VMPCK is {VMPCK_LEN} bytes", "vmpcks")
        object.__setattr__(self, "vmpcks", keys)
        if not self.report_id:
            object.__setattr__(self, "report_id", _derive(seed, b"REPORT_ID", 32))
        for name, size in (
            ("measurement", 48),
            ("host_data", 32),
            ("family_id", 16),
            ("image_id", 16),
            ("id_key_digest", 48),
            ("author_key_digest", 48),
            ("report_id", 32),
            ("report_id_ma", 32),
        ):
            self._bytes(name, size)
        if self.report_version not in KNOWN_VERSIONS:
            raise _usage(
                f"report_version must be one of {sorted(KNOWN_VERSIONS)}", "report_version"
            )
        if self.signing_key not in ("vcek", "vlek"):
            raise _usage("signing_key must be 'vcek' or 'vlek'", "signing_key")
        if not isinstance(self.tcb, Tcb):
            raise _usage(f"tcb must be a Tcb, not {type(self.tcb).__name__}", "tcb")
        self.tcb.to_int(self.product)  # fmc on Milan/Genoa → HypervisorUsageError
        if self.captured_report is not None:
            self._bytes("captured_report", ATTESTATION_REPORT_SIZE)

    def _bytes(self, name: str, size: int | None) -> bytes:
        raw = byte_string(getattr(self, name), what=name, spec=SPEC_CONFIG)
        if size is not None and len(raw) != size:
            raise _usage(f"{name} is {size} bytes, got {len(raw)}", name)
        object.__setattr__(self, name, raw)
        return raw

    def chain(self) -> Chain:
        """The synthetic chain of this chip at the configured (launch) TCB."""
        return chain(self.product, chip_id=self.chip_id, tcb=self.tcb, csp_id=self.csp_id)


class SimulatedFirmware:
    """The SNP firmware's guest-message service for one guest (see the module docstring).

    Args:
        config: the guest's launch parameters and the platform (default
            :class:`FirmwareConfig()`: Milan, VCEK, report version 5).
    """

    def __init__(self, config: FirmwareConfig | None = None) -> None:
        self._config = FirmwareConfig() if config is None else config
        if not isinstance(self._config, FirmwareConfig):
            raise _usage("config must be a FirmwareConfig", "config")
        self._lock = threading.Lock()
        self._chain = self._config.chain()
        self._tcb = self._config.tcb
        # Firmware counters are u64 per VMPCK in the guest context, starting at 0 (§3.4, §3.8).
        self._counters = [0] * VMPCK_COUNT
        # The signed bytes of a report with VMPL 0 and zero REPORT_DATA, for the config, TCB,
        # chain and signing key it was built from (every other field depends on those only).
        self._template: tuple[object, object, object, object, bytes] | None = None

    @property
    def config(self) -> FirmwareConfig:
        """The configuration the firmware was built with."""
        return self._config

    @property
    def tcb(self) -> Tcb:
        """The reported TCB now."""
        with self._lock:
            return self._tcb

    @property
    def chain(self) -> Chain:
        """The chain whose VCEK/VLEK sign reports now (for :attr:`tcb`)."""
        with self._lock:
            return self._chain

    @property
    def chip_id(self) -> bytes:
        """The CHIP_ID reports carry (the chain's)."""
        return self._chain.chip_id

    def counter(self, vmpck: int) -> int:
        """The firmware's sequence counter for ``vmpck``: the next request must use + 1."""
        if type(vmpck) is not int or not 0 <= vmpck < VMPCK_COUNT:
            raise _usage(f"vmpck must be 0..{VMPCK_COUNT - 1}, not {vmpck!r}", "vmpck")
        with self._lock:
            return self._counters[vmpck]

    def set_tcb(self, tcb: Tcb) -> None:
        """Make ``tcb`` the reported TCB (SNP_CONFIG after a firmware/microcode update; also
        CURRENT_TCB and COMMITTED_TCB; LAUNCH_TCB stays). Later reports carry it and are signed
        by the VCEK/VLEK derived for it (:meth:`Chain.at_tcb`).

        Raises:
            InputTypeError / HypervisorUsageError: not a :class:`Tcb`, or not valid for the
                product (``fmc`` on Milan/Genoa).
        """
        new_chain = self._chain.at_tcb(tcb)  # outside the lock: may issue certificates
        with self._lock:
            self._tcb = tcb
            self._chain = new_chain

    # -----------------------------------------------------------------------------------------
    # SNP_GUEST_REQUEST
    # -----------------------------------------------------------------------------------------

    def guest_request(self, request: bytes) -> tuple[bytes | None, int]:
        """Process one guest message page (facts §3.4).

        Returns:
            ``(None, status)`` for a command failure (the counter does not move), else the
            sealed response page and SUCCESS.

        Raises:
            InputTypeError: ``request`` is not bytes-like.
            FirmwareFailure: ``request`` is not one 4096-byte page (KVM always passes one).
        """
        page = byte_string(request, what="a guest request page", spec=SPEC_FW)
        if len(page) != PAGE_SIZE:
            raise FirmwareFailure(
                f"guest request of {len(page)} bytes, not one {PAGE_SIZE}-byte page",
                rule="request-length",
                spec=SPEC_FW,
            )
        vmpck = page[_VMPCK_OFFSET]
        with self._lock:
            # Steps 8-10 need no key; a MSG_VMPCK > 3 must fail there, so pick key 0 for it.
            key = self._config.vmpcks[vmpck] if vmpck < VMPCK_COUNT else self._config.vmpcks[0]
            try:
                hdr, plain = open_message(key, page)  # steps 8-11
            except GuestMessageError as e:
                return None, int(e.status)
            counter = self._counters[hdr.msg_vmpck]
            if not seqno_accepted(counter, hdr.msg_seqno):  # step 12
                return None, int(FirmwareStatus.AEAD_OFLOW)
            if not 1 <= hdr.msg_version <= MSG_VERSION:  # step 13: max 1 for every type
                return None, int(_INVALID_PARAM)
            answer = self._answer(hdr, plain)
            if answer is None:  # step 14: the switch default
                return None, int(_INVALID_PARAM)
            response = seal_message(
                key,
                msg_type=response_type(hdr.msg_type),
                msg_version=MSG_VERSION,
                seqno=response_seqno(hdr.msg_seqno),
                vmpck=hdr.msg_vmpck,
                payload=answer,
            )
            self._counters[hdr.msg_vmpck] = counter + 2  # success row: counter += 2
            return response, int(_STATUS_OK)

    def _answer(self, hdr: MsgHeader, plain: bytes) -> SchemaRecord | None:
        if hdr.msg_type == MsgType.REPORT_REQ:
            req = ReportReq.from_bytes(_fit(plain, ReportReq.SIZE))
            return self._report(hdr, req)
        if hdr.msg_type == MsgType.KEY_REQ:
            return self._key(hdr, KeyReq.from_bytes(_fit(plain, KeyReq.SIZE)))
        if hdr.msg_type == MsgType.TSC_INFO_REQ:
            cfg = self._config
            return TscInfoRsp(
                tsc_scale=cfg.tsc_scale, tsc_offset=cfg.tsc_offset, tsc_factor=cfg.tsc_factor
            )
        return None

    def _signing(self, key_sel: int) -> tuple[SigningKey, ec.EllipticCurvePrivateKey] | None:
        """The key KEY_SEL picks (facts §1.6, §3.6), or None (INVALID_KEY)."""
        vlek_loaded = self._config.signing_key == "vlek"
        if key_sel == KeySel.VCEK or (key_sel == KeySel.DEFAULT and not vlek_loaded):
            return SigningKey.VCEK, self._chain.vcek_key
        if key_sel in (KeySel.DEFAULT, KeySel.VLEK) and vlek_loaded:
            return SigningKey.VLEK, self._chain.vlek_key
        return None  # KEY_SEL 3, or 2 without a VLEK

    def _report(self, hdr: MsgHeader, req: ReportReq) -> ReportRsp:
        # §3.5: reserved bits/bytes → INVALID_PARAM; KEY_SEL → INVALID_KEY; VMPL < MSG_VMPCK →
        # INVALID_PARAM; the report stays all zero for these.
        if req.key_sel >> 2 or any(req.reserved_0x48):
            return ReportRsp(status=_INVALID_PARAM)
        signer = self._signing(req.key_sel & 3)
        if signer is None:
            return ReportRsp(status=_INVALID_KEY)
        if req.vmpl < hdr.msg_vmpck:
            return ReportRsp(status=_INVALID_PARAM)
        if self._config.captured_report is not None:
            return ReportRsp._trusted(
                (int(_STATUS_OK), ATTESTATION_REPORT_SIZE, bytes(24), self._config.captured_report)
            )
        signing_key, private_key = signer
        cfg, tcb_state, chain_state = self._config, self._tcb, self._chain
        cached = self._template
        if (
            cached is not None
            and cached[0] is cfg
            and cached[1] is tcb_state
            and cached[2] is chain_state
            and cached[3] == signing_key
        ):
            template = cached[4]
        else:
            template = self._report_template(signing_key)
            self._template = (cfg, tcb_state, chain_state, signing_key, template)
        # The requested level (§1.1) and the guest's REPORT_DATA, into the template's bytes
        # (both checked by the ReportReq decoder: a u32 and 64 bytes).
        signed = (
            template[:_VMPL_AT]
            + req.vmpl.to_bytes(4, "little")
            + template[_VMPL_AT + 4 : _DATA_AT]
            + req.user_data
            + template[_DATA_AT + 64 :]
        )
        # §1.2: ECDSA P-384 / SHA-384 over [0, 0x2A0) by the selected key (RFC 6979 nonces).
        report = sign_signed_bytes(signed, private_key, deterministic=True)
        return ReportRsp._trusted((int(_STATUS_OK), ATTESTATION_REPORT_SIZE, bytes(24), report))

    def _report_template(self, signing_key: SigningKey) -> bytes:
        cfg = self._config
        product = cfg.product
        tcb = self._tcb.to_int(product)
        major, minor, build = cfg.firmware_version
        fam, mod = PRODUCT_CPUID[product] if cfg.report_version >= 3 else (0, 0)  # §1.1, §1.7
        v5 = cfg.report_version >= 5
        report = AttestationReport(
            version=cfg.report_version,
            guest_svn=cfg.guest_svn,
            policy=cfg.policy,
            family_id=cfg.family_id,
            image_id=cfg.image_id,
            vmpl=0,  # the requested level, set per request (§1.1)
            signature_algo=SIGNATURE_ALGO_ECDSA_P384_SHA384,
            current_tcb=tcb,
            platform_info=cfg.platform_info,
            signer_info=SignerInfo(
                signing_key=signing_key, author_key_en=int(any(cfg.author_key_digest))
            ).encode(),
            measurement=cfg.measurement,
            host_data=cfg.host_data,
            id_key_digest=cfg.id_key_digest,
            author_key_digest=cfg.author_key_digest,
            report_id=cfg.report_id,
            report_id_ma=cfg.report_id_ma,
            reported_tcb=tcb,
            cpuid_fam_id=fam,
            cpuid_mod_id=mod,
            cpuid_step=cfg.cpuid_step if cfg.report_version >= 3 else 0,
            chip_id=self._chain.chip_id,
            committed_tcb=tcb,
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb=cfg.tcb.to_int(product),
            launch_mit_vector=cfg.launch_mit_vector if v5 else 0,
            current_mit_vector=cfg.current_mit_vector if v5 else 0,
        )
        return report.to_bytes()[:SIGNED_SIZE]

    def _key(self, hdr: MsgHeader, req: KeyReq) -> KeyRsp:
        # §3.5 KEY_REQ rows, in order.
        cfg = self._config
        root = req.root_key_select & 1
        key_sel = req.root_key_select >> 1 & 3
        if req.root_key_select >> 3 or any(req.reserved_0x4):
            return KeyRsp(status=_INVALID_PARAM)
        if not root and self._signing(key_sel) is None:
            return KeyRsp(status=_INVALID_KEY)
        if req.vmpl < hdr.msg_vmpck or req.guest_field_select & ~_GFS_MASK:
            return KeyRsp(status=_INVALID_PARAM)
        gfs = req.guest_field_select
        tcb = self._tcb
        if gfs & _GFS_TCB:
            try:
                asked = Tcb.from_int(cfg.product, req.tcb_version)
            except HypervisorUsageError:  # reserved bytes set
                return KeyRsp(status=_INVALID_PARAM)
            if any(getattr(asked, c) > getattr(tcb, c) for c in TCB_COMPONENTS):
                return KeyRsp(status=_INVALID_PARAM)
            tcb = asked
        if gfs & _GFS_SVN and req.guest_svn > cfg.guest_svn:
            return KeyRsp(status=_INVALID_PARAM)
        if root:
            root_name = b"VMRK"
        else:
            signer = self._signing(key_sel)
            root_name = b"VLEK" if signer and signer[0] == SigningKey.VLEK else b"VCEK"
        # Simulated root secret (a real PSP uses the chip's fused secrets, §3.7).
        secret = _derive(cfg.seed, b"ROOT " + root_name + tcb.to_bytes(cfg.product), 48)
        context = struct.pack(
            "<IIQIIQQ",
            req.root_key_select & 7,
            0,
            gfs,
            req.vmpl,
            req.guest_svn if gfs & _GFS_SVN else 0,
            req.tcb_version if gfs & _GFS_TCB else 0,
            cfg.policy if gfs & _GFS_POLICY else 0,
        ) + b"".join(
            (
                cfg.image_id if gfs & _GFS_IMAGE_ID else bytes(16),
                cfg.family_id if gfs & _GFS_FAMILY_ID else bytes(16),
                cfg.measurement if gfs & _GFS_MEASUREMENT else bytes(48),
                cfg.host_data,
                cfg.author_key_digest if any(cfg.author_key_digest) else cfg.id_key_digest,
            )
        )
        # NIST SP 800-108 counter mode, HMAC-SHA256, one block of L = 256 bits (§3.7).
        block = struct.pack("<I", 1) + _KDF_LABEL + b"\0" + context + struct.pack("<I", 256)
        return KeyRsp(derived_key=hmac.new(secret, block, hashlib.sha256).digest())


_VMPL_AT: Final = REPORT_OFFSET["vmpl"]
_DATA_AT: Final = REPORT_OFFSET["report_data"]


def _fit(plain: bytes, size: int) -> bytes:
    """The payload struct the firmware reads: MSG_SIZE is not checked against it (§3.5 note),
    so a short message reads as zero-padded and a long one is cut."""
    return plain[:size].ljust(size, b"\0")
