"""KVM userspace-exit structures: the ``struct kvm_run`` prefix and both certificate exits.

Sources: Linux ``include/uapi/linux/kvm.h`` (``struct kvm_run``: the exit union starts at
offset 32 and is 256 bytes); the v15 seed patch "KVM: SEV: Provide support for
SNP_EXTENDED_GUEST_REQUEST NAE event" (May 2024: ``KVM_EXIT_VMGEXIT`` 40,
``struct kvm_user_vmgexit``); the merged series (kvm-x86 ``fa9893fadbc2``, 2026:
``KVM_EXIT_SNP_REQ_CERTS``, ``struct kvm_exit_snp_req_certs``); ghcb-facts.md §5.6.
C alignment padding is explicit (``reserved_0x<offset>``).
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

__all__ = [
    "KVM_EXIT_HYPERCALL_LONG_MODE",
    "KVM_HC_MAP_GPA_RANGE",
    "KVM_MAP_GPA_RANGE_DECRYPTED",
    "KVM_MAP_GPA_RANGE_ENCRYPTED",
    "KVM_MAP_GPA_RANGE_PAGE_SZ_1G",
    "KVM_MAP_GPA_RANGE_PAGE_SZ_2M",
    "KVM_MAP_GPA_RANGE_PAGE_SZ_4K",
    "KVM_RUN_EXIT_UNION_OFFSET",
    "KVM_RUN_EXIT_UNION_SIZE",
    "KVM_SYSTEM_EVENT_SEV_TERM",
    "KVM_USER_VMGEXIT_REQ_CERTS",
    "REQ_CERTS_FLAGS_NOTIFY_DONE",
    "REQ_CERTS_STATUS_DONE",
    "REQ_CERTS_STATUS_PENDING",
    "kvm_exit_snp_req_certs",
    "kvm_hypercall_exit",
    "kvm_run_prefix",
    "kvm_system_event",
    "kvm_user_vmgexit",
]

#: Size of the exit union in ``struct kvm_run`` (``char padding[256]``).
KVM_RUN_EXIT_UNION_SIZE = 256

# struct kvm_run, up to the exit union (uapi/linux/kvm.h).
kvm_run_prefix = Struct(
    "request_interrupt_window" / Int8ul,
    "immediate_exit" / Int8ul,  # immediate_exit__unsafe in recent headers
    "reserved_0x2" / Bytes(6),  # padding1[6]
    "exit_reason" / Int32ul,
    "ready_for_interrupt_injection" / Int8ul,
    "if_flag" / Int8ul,
    "flags" / Int16ul,
    "cr8" / Int64ul,
    "apic_base" / Int64ul,
)

#: Offset of the exit union in ``struct kvm_run``.
KVM_RUN_EXIT_UNION_OFFSET: int = kvm_run_prefix.sizeof()

# Merged ABI: struct kvm_exit_snp_req_certs { __u64 gpa; __u64 npages; __u64 ret; }.
kvm_exit_snp_req_certs = Struct(
    "gpa" / Int64ul,
    "npages" / Int64ul,
    "ret" / Int64ul,
)

# v15 seed patch constants (its include/uapi/linux/kvm.h). The v15 ``ret`` values 1, 2 and
# 1 << 31 are the VMM errors INVALID_LEN, BUSY and GENERIC_V15 (ghcb.codes.VmmError).
KVM_USER_VMGEXIT_REQ_CERTS = 1  # kvm_user_vmgexit.type
REQ_CERTS_FLAGS_NOTIFY_DONE = 1 << 0  # KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE
REQ_CERTS_STATUS_PENDING = 0  # KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING
REQ_CERTS_STATUS_DONE = 1  # KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE

# v15 ABI: struct kvm_user_vmgexit { __u32 type; union { struct { __u64 data_gpa;
# __u64 data_npages; __u32 ret; __u8 flags; __u8 status; } req_certs; }; } — the union is
# 8-byte aligned, so 4 bytes of padding follow type, and 2 end the struct.
kvm_user_vmgexit = Struct(
    "type" / Int32ul,
    "reserved_0x4" / Bytes(4),
    "data_gpa" / Int64ul,
    "data_npages" / Int64ul,
    "ret" / Int32ul,
    "flags" / Int8ul,
    "status" / Int8ul,
    "reserved_0x1e" / Bytes(2),
)

# KVM_EXIT_SYSTEM_EVENT: struct { __u32 type; __u32 ndata; union { __u64 flags;
# __u64 data[16]; }; } system_event (uapi/linux/kvm.h); the exit a guest's termination
# request produces (sev.c: "vcpu->run->system_event.type = KVM_SYSTEM_EVENT_SEV_TERM;").
kvm_system_event = Struct(
    "type" / Int32ul,
    "ndata" / Int32ul,
    *(f"data_{i}" / Int64ul for i in range(16)),
)
KVM_SYSTEM_EVENT_SEV_TERM = 6  # uapi/linux/kvm.h


# -- KVM_EXIT_HYPERCALL (page state changes; ghcb.hypervisor.psc) ------------------------------
# struct kvm_run's hypercall exit (uapi/linux/kvm.h): { __u64 nr; __u64 args[6]; __u64 ret;
# union { __u32 longmode; __u64 flags; }; }. KVM makes it for each PSC range it hands to
# userspace (arch/x86/kvm/svm/sev.c snp_begin_psc / snp_begin_psc_msr).
kvm_hypercall_exit = Struct(
    "nr" / Int64ul,
    "args_0" / Int64ul,  # KVM_HC_MAP_GPA_RANGE: the GPA
    "args_1" / Int64ul,  # ... the number of 4 KiB pages
    "args_2" / Int64ul,  # ... the attributes (KVM_MAP_GPA_RANGE_*)
    "args_3" / Int64ul,
    "args_4" / Int64ul,
    "args_5" / Int64ul,
    "ret" / Int64ul,
    "flags" / Int64ul,  # bit 0 KVM_EXIT_HYPERCALL_LONG_MODE; bits 31:1 must be zero
)

KVM_HC_MAP_GPA_RANGE = 12  # uapi/linux/kvm_para.h
KVM_EXIT_HYPERCALL_LONG_MODE = 1 << 0  # arch/x86/include/uapi/asm/kvm.h _BITULL(0)
# arch/x86/include/uapi/asm/kvm_para.h: page size in bits 3:0, encryption status at bit 4
KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0
KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1 << 0
KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 1 << 1
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4  # KVM_MAP_GPA_RANGE_ENC_STAT(1)
KVM_MAP_GPA_RANGE_DECRYPTED = 0  # KVM_MAP_GPA_RANGE_ENC_STAT(0)
