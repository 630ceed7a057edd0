"""Shared helpers for detection tests: layouts drawn so that the kernel image fits in memory."""

from __future__ import annotations

from hypothesis import strategies as st

from kdfix.generate.synthetic import IMAGE_SIZE

MiB = 1 << 20
SIZE_2M = 2 * MiB
MAX_KASLR_SLOTS = ((1 << 30) - 16 * MiB - IMAGE_SIZE) // SIZE_2M  # kaslr_offset < 1 GiB - 16 MiB - image


@st.composite
def layouts(draw, min_mib: int = 64, max_mib: int = 256) -> dict:
    """Keyword arguments of build_linux_image: memory, cpus, phys_base (often negative), kaslr_offset."""
    memory_size = draw(st.integers(min_mib // 2, max_mib // 2)) * SIZE_2M
    kaslr = draw(st.one_of(st.just(0), st.integers(0, MAX_KASLR_SLOTS - 1).map(lambda n: n * SIZE_2M)))
    text_paddr = draw(st.integers(0, (memory_size - IMAGE_SIZE) // SIZE_2M)) * SIZE_2M
    return {
        "memory_size": memory_size,
        "cpus": draw(st.integers(1, 4)),
        "phys_base": text_paddr - 16 * MiB - kaslr,
        "kaslr_offset": kaslr,
        "seed": draw(st.integers(0, 1000)),
        "filler_fraction": 0.03,
    }
