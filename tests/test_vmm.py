"""The reference VMM: certificates written exactly, the answers of each ABI, the blob's lock held
from supplying the certificates until the request reached firmware, rate limiting with an
injected clock, and GENERIC for every failure of the host's environment."""

from __future__ import annotations

import fcntl
import os
import struct
from typing import TYPE_CHECKING, Any

import pytest

from ghcb import CertEntry, CertGuid, build_cert_table
from ghcb.codes import Errno
from ghcb.guest import Guest, GuestLayout
from ghcb.hypervisor import (
    CertificateStore,
    CertsExit,
    DoneExit,
    GuestMemory,
    HypervisorUsageError,
    Interrupted,
    MergedAbi,
    RecordingFirmware,
    Resumed,
    RunFailed,
    TokenBucket,
    V15Abi,
    Vcpu,
    Vm,
    Vmm,
    VmmAnswer,
)
from ghcb.hypervisor.kvm_abi import with_immediate_exit
from ghcb.schemas.page import PAGE_SIZE

if TYPE_CHECKING:
    import pathlib

LAYOUT = GuestLayout()
CERTS, CERT_PAGES = LAYOUT.certs, LAYOUT.cert_pages
FILL = 0xAA
ABIS = [MergedAbi(), V15Abi()]
IDS = ["merged", "v15"]
GENERIC = {"merged": 0xFFFFFFFF00000000, "v15": 0x8000000000000000}


def blob_of(sizes: tuple[int, ...] = (1639, 1677, 1350)) -> bytes:
    kinds = (CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK)
    return build_cert_table(
        [
            CertEntry(k, bytes([i + 1]) * n)
            for i, (k, n) in enumerate(zip(kinds, sizes, strict=True))
        ]
    )


BLOB = blob_of()  # 4,762 bytes: 2 pages


def guest() -> Guest:
    return Guest(fill=FILL, guard_page=True)


def vcpu_for(g: Guest, abi: Any, firmware: RecordingFirmware | None = None) -> Vcpu:
    return Vcpu(Vm(firmware or RecordingFirmware(), cert_abi=abi), g.memory, LAYOUT.ghcb)


def untouched(size: int) -> bytes:
    return bytes([FILL]) * size


@pytest.fixture
def store(tmp_path: pathlib.Path) -> CertificateStore:
    s = CertificateStore(tmp_path / "certs.blob", create=True)
    s.update(BLOB)
    return s


def exclusive_lock_free(store: CertificateStore) -> bool:
    """Whether an exclusive OFD lock on the blob can be taken right now (non-blocking)."""
    fd = os.open(store.path, os.O_RDWR)
    try:
        flock = struct.pack("@hhxxxxqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def lock_probe(store: CertificateStore) -> tuple[list[bool], RecordingFirmware]:
    """A firmware that records, at each call, whether the blob's exclusive lock was free."""
    seen: list[bool] = []

    def firmware_call(request: bytes) -> tuple[bytes, int]:
        seen.append(exclusive_lock_free(store))
        return request, 0

    return seen, RecordingFirmware(respond=firmware_call)


@pytest.mark.parametrize("abi", ABIS, ids=IDS)
class TestVmm:
    def test_too_few_pages(self, abi: Any, store: CertificateStore) -> None:
        """4,762 bytes need 2 pages: with RBX = 1 the guest gets INVALID_LEN and RBX = 2; its
        memory is untouched and the firmware is not called."""
        g = guest()
        g.request(rbx=1)
        vcpu = vcpu_for(g, abi)
        result = Vmm(g.memory, store).run(vcpu)
        assert isinstance(result, Resumed)
        out = g.ghcb()
        assert (out.sw_exit_info_1, out.sw_exit_info_2, out.rbx) == (0, 0x0000000100000000, 2)
        assert g.certs((CERT_PAGES + 1) * PAGE_SIZE) == untouched((CERT_PAGES + 1) * PAGE_SIZE)
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]

    def test_certificates_written_exactly(self, abi: Any, store: CertificateStore) -> None:
        """Enough pages: the blob lands at RAX, nothing past it is touched, the firmware is
        called once, the lock is gone when run returns, the guest is answered 0."""
        g = guest()
        g.request(rbx=2)
        vmm = Vmm(g.memory, store)
        vcpu = vcpu_for(g, abi)
        result = vmm.run(vcpu)
        assert isinstance(result, Resumed)
        assert result.page == g.ghcb()
        size = (CERT_PAGES + 1) * PAGE_SIZE
        assert g.certs(size) == BLOB + untouched(size - len(BLOB))
        assert (g.ghcb().sw_exit_info_2, g.ghcb().rbx) == (0, 2)
        assert len(vcpu.vm.firmware.requests) == 1  # type: ignore[attr-defined]
        assert not vmm.holding_lock

    def test_huge_rbx_writes_only_the_blob(self, abi: Any, store: CertificateStore) -> None:
        """RBX = 2**64 - 1 passes the size check; still only len(blob) bytes are written."""
        g = guest()
        g.request(rbx=2**64 - 1)
        vcpu = vcpu_for(g, abi)
        assert isinstance(Vmm(g.memory, store).run(vcpu), Resumed)
        size = (CERT_PAGES + 1) * PAGE_SIZE
        assert g.certs(size) == BLOB + untouched(size - len(BLOB))
        assert (g.ghcb().sw_exit_info_2, g.ghcb().rbx) == (0, 2**64 - 1)
        assert len(vcpu.vm.firmware.requests) == 1  # type: ignore[attr-defined]

    def test_private_buffer_is_written_through_the_host_mapping(
        self, abi: Any, store: CertificateStore
    ) -> None:
        """A certificate page the guest holds private: the VMM's write lands in the shared
        backing (success, EXITINFO2 = 0); the guest sees its own private bytes there."""
        g = guest()
        g.request(rbx=2)
        g.memory.set_shared(CERTS + PAGE_SIZE, shared=False)
        Vmm(g.memory, store).run(vcpu_for(g, abi))
        assert g.ghcb().sw_exit_info_2 == 0
        assert g.certs(PAGE_SIZE) == BLOB[:PAGE_SIZE]
        assert g.memory.guest_read(CERTS + PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
        assert g.memory.host_read(CERTS + PAGE_SIZE, len(BLOB) - PAGE_SIZE) == BLOB[PAGE_SIZE:]

    def test_unmapped_buffer_is_generic(
        self, abi: Any, store: CertificateStore, request: pytest.FixtureRequest
    ) -> None:
        """A buffer that runs into unmapped memory: GENERIC, nothing half-written."""
        g = Guest(GuestLayout(cert_pages=1), fill=FILL)
        g.request(rbx=2)
        Vmm(g.memory, store).run(vcpu_for(g, abi))
        assert g.ghcb().sw_exit_info_2 == GENERIC[abi.name]
        assert g.certs(PAGE_SIZE) == untouched(PAGE_SIZE)

    def test_rate_limited_busy(
        self, abi: Any, store: CertificateStore, request: pytest.FixtureRequest
    ) -> None:
        """An empty token bucket answers BUSY; tokens come back with (injected) time."""
        now = [0.0]
        bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
        g = guest()
        vmm = Vmm(g.memory, store, limiter=bucket)
        seen = []
        for _ in range(3):
            g.request(rbx=2)
            vmm.run(vcpu_for(g, abi))
            seen.append(g.ghcb().sw_exit_info_2)
        now[0] = 1.0
        g.request(rbx=2)
        vmm.run(vcpu_for(g, abi))
        assert [*seen, g.ghcb().sw_exit_info_2] == [0, 0, 0x0000000200000000, 0]

    def test_lock_held_until_firmware(self, abi: Any, store: CertificateStore) -> None:
        """The shared lock is held from supplying the blob until the request reached firmware
        (merged: the -EINTR of immediate_exit; v15: the DONE exit), and only then released."""
        g = guest()
        g.request(rbx=2)
        seen, firmware = lock_probe(store)
        vcpu = vcpu_for(g, abi, firmware)
        vmm = Vmm(g.memory, store)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        answer = vmm.service(abi, exit_)
        assert vmm.holding_lock
        assert not exclusive_lock_free(store)
        result = vcpu.complete(answer)
        assert seen == [False]  # the firmware ran under the lock
        assert type(result) is HOLD_ENDS_WITH[abi.name]
        assert vmm.holding_lock  # until the VMM sees that result
        if isinstance(result, CertsExit):  # the v15 DONE exit: the VMM answers it
            final = vcpu.complete(vmm.service(abi, result))
        else:  # -EINTR: drop the lock, KVM_RUN again with immediate_exit cleared
            vmm.release()
            final = vcpu.run(kvm_run=with_immediate_exit(vcpu.kvm_run, 0))
        assert isinstance(final, Resumed)
        assert not vmm.holding_lock
        assert exclusive_lock_free(store)

    def test_lock_dropped_early_without_notify(self, abi: Any, store: CertificateStore) -> None:
        """notify=False: the lock is dropped right after the certificates are written (before
        firmware): the window the documented scheme closes."""
        g = guest()
        g.request(rbx=2)
        seen, firmware = lock_probe(store)
        vmm = Vmm(g.memory, store, notify=False)
        assert isinstance(vmm.run(vcpu_for(g, abi, firmware)), Resumed)
        assert seen == [True]

    def test_reply_needs_the_page_count(self, abi: Any) -> None:
        """TOO_SMALL without the page count is the caller's mistake."""
        g = guest()
        g.request(rbx=1)
        exit_ = vcpu_for(g, abi).run()
        assert isinstance(exit_, CertsExit)
        with pytest.raises(HypervisorUsageError):
            abi.reply(exit_.kvm_run, VmmAnswer.TOO_SMALL, hold=False)


def first_exit(abi: Any) -> CertsExit:
    g = guest()
    g.request(rbx=1)
    exit_ = vcpu_for(g, abi).run()
    assert isinstance(exit_, CertsExit)
    return exit_


def test_reply_bytes_merged() -> None:
    """Merged: immediate_exit @1; gpa @32, npages @40, ret @48 (ENOSPC/EAGAIN/EIO)."""
    abi, run = MergedAbi(), first_exit(MergedAbi()).kvm_run
    too_small = abi.reply(run, VmmAnswer.TOO_SMALL, npages=2, hold=False)
    assert (too_small[1], *struct.unpack_from("<QQQ", too_small, 32)) == (0, CERTS, 2, 28)
    ok = abi.reply(run, VmmAnswer.OK, hold=True)
    assert (ok[1], *struct.unpack_from("<QQQ", ok, 32)) == (1, CERTS, 1, 0)
    assert struct.unpack_from("<Q", abi.reply(run, VmmAnswer.BUSY, hold=False), 48) == (11,)
    assert struct.unpack_from("<Q", abi.reply(run, VmmAnswer.GENERIC, hold=False), 48) == (5,)


def test_reply_bytes_v15() -> None:
    """v15: data_gpa @40, data_npages @48, ret @56 (1/2/1<<31), flags @60 (NOTIFY_DONE)."""
    abi, run = V15Abi(), first_exit(V15Abi()).kvm_run
    too_small = abi.reply(run, VmmAnswer.TOO_SMALL, npages=2, hold=False)
    assert struct.unpack_from("<QQIBB", too_small, 40) == (CERTS, 2, 1, 0, 0)
    ok = abi.reply(run, VmmAnswer.OK, hold=True)
    assert struct.unpack_from("<QQIBB", ok, 40) == (CERTS, 1, 0, 1, 0)
    assert struct.unpack_from("<I", abi.reply(run, VmmAnswer.BUSY, hold=False), 56) == (2,)
    generic = abi.reply(run, VmmAnswer.GENERIC, hold=False)
    assert struct.unpack_from("<I", generic, 56) == (1 << 31,)


@pytest.mark.parametrize("abi", ABIS, ids=IDS)
class TestVmmFailures:
    def test_missing_blob_is_generic(
        self, abi: Any, tmp_path: pathlib.Path, request: pytest.FixtureRequest
    ) -> None:
        """The blob file vanished: the guest gets GENERIC, nothing is written, and the vCPU
        keeps working once the blob is back."""
        store = CertificateStore(tmp_path / "certs.blob", create=True)
        os.remove(store.path)
        g = guest()
        g.request(rbx=2)
        vcpu = vcpu_for(g, abi)
        vmm = Vmm(g.memory, store)
        assert isinstance(vmm.run(vcpu), Resumed)
        assert g.ghcb().sw_exit_info_2 == GENERIC[abi.name]
        assert g.certs(PAGE_SIZE) == untouched(PAGE_SIZE)
        assert vcpu.vm.firmware.requests == []  # type: ignore[attr-defined]
        store = CertificateStore(tmp_path / "certs.blob", create=True)
        store.update(BLOB)
        g.request(rbx=2)
        Vmm(g.memory, store).run(vcpu)
        assert g.ghcb().sw_exit_info_2 == 0

    def test_corrupt_blob_is_generic(
        self, abi: Any, store: CertificateStore, request: pytest.FixtureRequest
    ) -> None:
        """The blob file was corrupted behind the store's back (a u32 offset past its end):
        GENERIC, nothing written into the guest, no lock left behind."""
        with open(store.path, "r+b") as fh:
            fh.seek(16)
            fh.write(b"\xff\xff\xff\x7f")
        g = guest()
        g.request(rbx=2)
        vmm = Vmm(g.memory, store)
        assert isinstance(vmm.run(vcpu_for(g, abi)), Resumed)
        assert g.ghcb().sw_exit_info_2 == GENERIC[abi.name]
        assert g.certs(2 * PAGE_SIZE) == untouched(2 * PAGE_SIZE)
        assert not vmm.holding_lock
        assert exclusive_lock_free(store)

    @pytest.mark.parametrize(("rbx", "written"), [(0, False), (1, True)])
    def test_empty_store(self, abi: Any, tmp_path: pathlib.Path, rbx: int, written: bool) -> None:
        """No certificates: with no buffer nothing is written and the request proceeds; with a
        buffer the empty table (24 zero bytes) is written."""
        store = CertificateStore(tmp_path / "empty.blob", create=True)
        g = guest()
        g.request(rbx=rbx)
        Vmm(g.memory, store).run(vcpu_for(g, abi))
        assert g.ghcb().sw_exit_info_2 == 0
        head = bytes(24) if written else untouched(24)
        assert g.certs(PAGE_SIZE) == head + untouched(PAGE_SIZE - 24)

    def test_lock_released_when_writing_fails_unexpectedly(
        self, abi: Any, store: CertificateStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unexpected exception while supplying certificates still drops the lock."""
        g = guest()
        g.request(rbx=2)
        vcpu = vcpu_for(g, abi)
        exit_ = vcpu.run()
        assert isinstance(exit_, CertsExit)
        vmm = Vmm(g.memory, store)

        def boom(self: GuestMemory, gpa: int, data: bytes) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(GuestMemory, "host_write", boom)
        with pytest.raises(KeyboardInterrupt):
            vmm.service(abi, exit_)
        assert not vmm.holding_lock
        assert exclusive_lock_free(store)

    def test_firmware_failure(self, abi: Any, store: CertificateStore) -> None:
        """The firmware times out: merged KVM_RUN fails (-ETIMEDOUT) and the VMM returns that,
        the guest's GHCB holding KVM's presets (0/0); the v15 tree answers GENERIC. Either way
        the lock is released."""
        g = guest()
        g.request(rbx=2)
        result = Vmm(g.memory, store).run(vcpu_for(g, abi, RecordingFirmware(fail=True)))
        kind, errno, info2 = FIRMWARE_FAILURE[abi.name]
        assert type(result) is kind
        assert getattr(result, "errno", None) == errno
        assert (g.ghcb().sw_exit_info_1, g.ghcb().sw_exit_info_2) == (0, info2)
        assert exclusive_lock_free(store)


#: What each ABI's VMM run ends with when it supplied certificates and held the lock.
HOLD_ENDS_WITH: dict[str, type] = {"merged": Interrupted, "v15": DoneExit}
#: (result type, errno, guest's EXITINFO2) when the firmware fails without a status.
FIRMWARE_FAILURE: dict[str, tuple[type, int | None, int]] = {
    "merged": (RunFailed, Errno.ETIMEDOUT, 0),
    "v15": (Resumed, None, GENERIC["v15"]),
}


class TestTokenBucket:
    def test_refuses_bad_settings(self) -> None:
        """Negative rate, zero burst, wrong types: usage errors."""
        for kwargs in (
            {"rate": -1, "burst": 1},
            {"rate": 1, "burst": 0},
            {"rate": "x", "burst": 1},
            {"rate": 1, "burst": 1.5},
            {"rate": float("nan"), "burst": 1},
            {"rate": 1, "burst": True},
        ):
            with pytest.raises(HypervisorUsageError):
                TokenBucket(**kwargs)

    def test_backwards_clock_never_goes_negative_or_overcredits(self) -> None:
        """A clock that jumps back credits nothing until it passes its highest reading; the
        count never goes below zero."""
        now = [100.0]
        bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
        assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]
        now[0] = 10.0  # backwards
        assert bucket.take() is False
        assert bucket.tokens == 0.0
        now[0] = 50.0  # still behind 100
        assert bucket.take() is False
        now[0] = 101.0
        assert bucket.take() is True
        assert bucket.tokens == 0.0

    def test_bad_clock_value(self) -> None:
        """A clock returning a non-number is the caller's mistake."""
        with pytest.raises(HypervisorUsageError):
            TokenBucket(rate=1, burst=1, clock=lambda: "now")  # type: ignore[arg-type,return-value]


class TestUsageErrors:
    """Every refusal is a HypervisorUsageError with its rule, spec and message."""

    def test_bucket_settings(self) -> None:
        rate_spec = "GHCB spec §4.1.7 (BUSY)"
        for kwargs, message in (
            ({"rate": 2**2000, "burst": 1}, "rate must be a finite number and burst an int"),
            ({"rate": 1, "burst": 2**2000}, "rate must be a finite number and burst an int"),
            ({"rate": -1, "burst": 1}, "rate must be >= 0 and burst >= 1"),
            ({"rate": 1, "burst": 0}, "rate must be >= 0 and burst >= 1"),
            ({"rate": 1, "burst": 1, "clock": 5}, "clock must be callable"),
            ({"rate": 1, "burst": 1, "clock": lambda: "now"}, "clock returned 'now', not a"),
        ):
            with pytest.raises(HypervisorUsageError) as info:
                TokenBucket(**kwargs)
            err = info.value
            assert (err.message[: len(message)], err.rule, err.spec) == (
                message,
                "rate-limit",
                rate_spec,
            )
        with pytest.raises(HypervisorUsageError) as info:
            TokenBucket(rate=1.5, burst=2**2000)
        assert info.value.message == "rate must be a finite number and burst an int, not 1.5 / " + (
            repr(2**2000)
        )

    def test_vcpu_of_other_memory(self, store: CertificateStore) -> None:
        """Vmm.run serves only vCPUs of its own guest memory."""
        vmm = Vmm(guest().memory, store)
        for vcpu in (vcpu_for(guest(), MergedAbi()), "vcpu"):
            with pytest.raises(HypervisorUsageError) as info:
                vmm.run(vcpu)  # type: ignore[arg-type]
            err = info.value
            assert (err.message, err.rule, err.spec) == (
                "Vmm.run needs a Vcpu of this VMM's guest memory",
                "input-type",
                "ghcb.hypervisor.vmm",
            )

    def test_vmm_arguments(self, store: CertificateStore) -> None:
        """Vmm(memory, store, limiter=, trace=): each wrong argument refused on its own."""
        memory = guest().memory
        cases: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
            ((memory, "certs.blob"), {}, "Vmm(memory, store) needs a GuestMemory and a "),
            (("memory", store), {}, "Vmm(memory, store) needs a GuestMemory and a "),
            ((memory, store), {"limiter": 5}, "limiter must be a TokenBucket or None"),
            ((memory, store), {"trace": 5}, "trace must be callable"),
        ]
        for args, kwargs, message in cases:
            with pytest.raises(HypervisorUsageError) as info:
                Vmm(*args, **kwargs)
            err = info.value
            assert (err.message, err.rule, err.spec) == (
                message + ("CertificateStore" if message.endswith("a ") else ""),
                "input-type",
                "ghcb.hypervisor.vmm",
            )
