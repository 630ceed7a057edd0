"""x86_64 kernel structures read from guest memory: the IDT gate (arch/x86/include/asm/desc_defs.h); zone starts."""

from __future__ import annotations

from typing import Any

from kdfix.format.layout import LP64_LE, Field, Layout

# struct gate_struct: 16 bytes; handler = offset_high << 32 | offset_middle << 16 | offset_low.
GATE_STRUCT: Layout[Any] = Layout(
    "gate_struct",
    [
        Field("offset_low", "u16"),
        Field("segment", "u16"),
        Field("ist", "u8"),
        Field("type_attr", "u8"),
        Field("offset_middle", "u16"),
        Field("offset_high", "u32"),
        Field("reserved", "u32"),
    ],
)
GATE = GATE_STRUCT.bind(LP64_LE)
GATE_SIZE = GATE.size
GATE_INTERRUPT_PRESENT = 0x8E  # present, DPL 0, 64-bit interrupt gate
KERNEL_CS = 0x10

# Physical starts of ZONE_DMA32 (MAX_DMA_PFN, 16 MiB) and ZONE_NORMAL (MAX_DMA32_PFN, 4 GiB):
# arch/x86/include/asm/dma.h.
# Early GFP_KERNEL pages, such as the kernel's VMCOREINFO buffers (phys-base-and-kaslr.md §3B), come from the low
# end of the highest zone: measured on Debian 6.1 guests at +2.7 MiB (128 MiB SeaBIOS, KASLR), +58 MiB (256 MiB
# OVMF, above the kernel image) and +8 MiB (8 GiB SeaBIOS) from the zone start.
ZONE_STARTS = (16 << 20, 4 << 30)


def gate_handler(gate: bytes) -> int:
    """Handler address of a 16-byte x86_64 interrupt gate."""
    g = GATE.unpack(gate)
    return g.offset_high << 32 | g.offset_middle << 16 | g.offset_low


def pack_gate(handler: int, *, segment: int = KERNEL_CS, type_attr: int = GATE_INTERRUPT_PRESENT) -> bytes:
    """A 16-byte interrupt gate pointing at ``handler``."""
    return GATE.pack(
        GATE_STRUCT.make(
            offset_low=handler & 0xFFFF,
            segment=segment,
            type_attr=type_attr,
            offset_middle=(handler >> 16) & 0xFFFF,
            offset_high=handler >> 32,
        )
    )
