"""Methods D (IDT gate), E (linux_banner probe) and F (ELF kernel-text PT_LOAD), phys-base-and-kaslr.md §3D-F."""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.detect.banner import find_by_banner
from kdfix.detect.candidate import Candidate
from kdfix.detect.elf_text_load import find_by_elf_text_load
from kdfix.detect.idt_gate import find_by_idt_gate
from kdfix.format.constants import EM_AARCH64, EM_X86_64
from kdfix.format.x86 import gate_handler
from kdfix.generate.synthetic import build_linux_image
from kdfix.model import DumpModel
from kdfix.read.memory import DictMemory
from kdfix.units import to_u64

MiB = 1 << 20


def test_gate_handler_decoding():
    gate = bytes.fromhex("9009 1000 00 8e 00b7 ffffffff 00000000".replace(" ", ""))
    assert gate_handler(gate) == 0xFFFFFFFFB7000990


def test_idt_gate_with_and_without_symbols():
    model, memory, truth = build_linux_image(
        memory_size=128 * MiB, cpus=2, phys_base=-0x32200000, kaslr_offset=0x35600000, vmcoreinfo_in_notes=False
    )
    log: list[str] = []
    assert find_by_idt_gate(model, memory, log=log) is None
    assert f"PA {truth.idt_paddr:#x}" in log[0] and "gate 0 handler 0xffffffffb6700990" in log[0]
    cand = find_by_idt_gate(model, memory, vmlinux_symbols=truth.vmlinux_symbols)
    assert cand is not None and (cand.phys_base, cand.kernel_offset) == (truth.phys_base, truth.kaslr_offset)


def test_banner_probe_with_known_offset_and_crash_range():
    """Within crash's -32 MiB.. range the probe finds phys_base; far-negative phys_base is out of its range."""
    model, memory, truth = build_linux_image(
        memory_size=96 * MiB, phys_base=-20 * MiB, kaslr_offset=40 * MiB, vmcoreinfo_in_notes=False
    )
    known = (Candidate("cr3_walk", truth.phys_base, truth.kaslr_offset),)
    cand = find_by_banner(model, memory, vmlinux_symbols=truth.vmlinux_symbols, known=known)
    assert cand is not None and cand.phys_base == truth.phys_base
    # Without KERNELOFFSET the probe finds phys_base + KERNELOFFSET (§3E pitfall), flagged in the evidence.
    cand = find_by_banner(model, memory, vmlinux_symbols=truth.vmlinux_symbols)
    assert cand is not None and cand.phys_base == to_u64(-20 * MiB + 40 * MiB) and "assumed 0" in cand.evidence[0]
    log: list[str] = []
    assert find_by_banner(model, memory, log=log) is None and "linux_banner" in log[0]
    model2, memory2, truth2 = build_linux_image(
        memory_size=96 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000, vmcoreinfo_in_notes=False
    )
    known2 = (Candidate("cr3_walk", truth2.phys_base, truth2.kaslr_offset),)
    assert find_by_banner(model2, memory2, vmlinux_symbols=truth2.vmlinux_symbols, known=known2) is None


@dataclass
class Seg:
    vaddr: int
    paddr: int


class ElfLikeMemory(DictMemory):
    def __init__(self, segments):
        super().__init__({0: b"\1" * 4096})
        self.segments = segments


X86_ELF = DumpModel(e_machine=EM_X86_64)


def test_elf_text_load():
    cand = find_by_elf_text_load(X86_ELF, ElfLikeMemory([Seg(0x1000, 0x1000), Seg(0xFFFFFFFFB6600000, 0x4400000)]))
    assert cand is not None and cand.phys_base == 0xFFFFFFFFCDE00000
    cand = find_by_elf_text_load(X86_ELF, ElfLikeMemory([{"p_vaddr": 0xFFFFFFFF81000000, "p_paddr": 0x1600000}]))
    assert cand is not None and cand.phys_base == 0x600000
    log: list[str] = []
    assert find_by_elf_text_load(X86_ELF, ElfLikeMemory([Seg(0x100000, 0x100000)]), log=log) is None
    assert "QEMU ELF without paging" in log[0]
    assert find_by_elf_text_load(X86_ELF, DictMemory({}), log=log) is None and "not an ELF" in log[1]


def test_elf_text_load_is_x86_64_only():
    """The kernel-text PT_LOAD rule is x86_64's (__START_KERNEL_map): an aarch64 ELF or an unknown one is refused."""
    segments = ElfLikeMemory([Seg(0xFFFFFFFFB6600000, 0x4400000)])
    log: list[str] = []
    assert find_by_elf_text_load(DumpModel(e_machine=EM_AARCH64), segments, log=log) is None
    assert "not a method for aarch64" in log[-1]
    assert find_by_elf_text_load(DumpModel(), segments, log=log) is None
    assert "architecture is unknown" in log[-1]
