"""ELF note structures: Nhdr, the elf_prstatus of each architecture and QEMUCPUState.

notes-and-vmcoreinfo.md §1-§3; aarch64, i386 and ARM prstatus: arch-kernels-and-introspection.md §1.8, §2.5.
"""

from __future__ import annotations

from typing import Any

from kdfix.format.layout import Field, Layout

NHDR: Layout[Any] = Layout("elf_nhdr", [Field("n_namesz", "u32"), Field("n_descsz", "u32"), Field("n_type", "u32")])
NHDR_SIZE = 12

X86_64_USER_REGS: Layout[Any] = Layout(
    "user_regs_struct",
    [
        Field(name, "ulong")
        for name in [
            "r15",
            "r14",
            "r13",
            "r12",
            "rbp",
            "rbx",
            "r11",
            "r10",
            "r9",
            "r8",
            "rax",
            "rcx",
            "rdx",
            "rsi",
            "rdi",
            "orig_rax",
            "rip",
            "cs",
            "eflags",
            "rsp",
            "ss",
            "fs_base",
            "gs_base",
            "ds",
            "es",
            "fs",
            "gs",
        ]
    ],
)
I386_USER_REGS: Layout[Any] = Layout(
    "user_regs_struct_i386",
    [
        Field(name, "ulong")
        for name in [
            "ebx",
            "ecx",
            "edx",
            "esi",
            "edi",
            "ebp",
            "eax",
            "ds",
            "es",
            "fs",
            "gs",
            "orig_eax",
            "eip",
            "cs",
            "eflags",
            "esp",
            "ss",
        ]
    ],
)

AARCH64_USER_REGS: Layout[Any] = Layout(
    "user_pt_regs", [*(Field(f"x{i}", "u64") for i in range(31)), Field("sp", "u64"), Field("pc", "u64"),
                     Field("pstate", "u64")]
)  # fmt: skip
ARM_USER_REGS: Layout[Any] = Layout(
    "user_regs_arm",
    [Field(name, "ulong") for name in (*(f"r{i}" for i in range(11)), "fp", "ip", "sp", "lr", "pc", "cpsr", "orig_r0")],
)

TIMEVAL_PR: Layout[Any] = Layout("pr_timeval", [Field("tv_sec", "long"), Field("tv_usec", "long")])


def _prstatus(name: str, regs: Layout[Any]) -> Layout[Any]:
    return Layout(
        name,
        [
            Field("si_signo", "int"),
            Field("si_code", "int"),
            Field("si_errno", "int"),
            Field("pr_cursig", "short"),
            Field("pr_sigpend", "ulong"),
            Field("pr_sighold", "ulong"),
            Field("pr_pid", "int"),
            Field("pr_ppid", "int"),
            Field("pr_pgrp", "int"),
            Field("pr_sid", "int"),
            Field("pr_utime", TIMEVAL_PR),
            Field("pr_stime", TIMEVAL_PR),
            Field("pr_cutime", TIMEVAL_PR),
            Field("pr_cstime", TIMEVAL_PR),
            Field("pr_reg", regs),
            Field("pr_fpvalid", "int"),
        ],
    )


# Bound sizes: x86_64 and aarch64 to LP64 (336, 392 bytes), i386 to i386 "pack" (144), ARM to ARM32 "pad" (148).
ELF_PRSTATUS_X86_64 = _prstatus("elf_prstatus", X86_64_USER_REGS)
ELF_PRSTATUS_I386 = _prstatus("elf_prstatus_i386", I386_USER_REGS)
ELF_PRSTATUS_AARCH64 = _prstatus("elf_prstatus_aarch64", AARCH64_USER_REGS)
ELF_PRSTATUS_ARM = _prstatus("elf_prstatus_arm", ARM_USER_REGS)

QEMU_CPU_SEGMENT: Layout[Any] = Layout(
    "QEMUCPUSegment",
    [
        Field("selector", "u32"),
        Field("limit", "u32"),
        Field("flags", "u32"),
        Field("pad", "u32"),
        Field("base", "u64"),
    ],
)
QEMU_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", *(f"r{i}" for i in range(8, 16)))

# Version 0 is the 432-byte QEMUCPUState (QEMU < 3.0), version 1 adds kernel_gs_base (440 bytes).
QEMU_CPU_STATE: Layout[Any] = Layout(
    "QEMUCPUState",
    [
        Field("version", "u32"),
        Field("size", "u32"),
        *(Field(r, "u64") for r in QEMU_GPRS),
        Field("rip", "u64"),
        Field("rflags", "u64"),
        *(Field(s, QEMU_CPU_SEGMENT) for s in QEMU_SEGMENTS),
        *(Field(f"cr{i}", "u64") for i in range(5)),
        Field("kernel_gs_base", "u64", since=1),
    ],
)
QEMU_CPU_STATE_SIZES = {1: 440, 0: 432}
