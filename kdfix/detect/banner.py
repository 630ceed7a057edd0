"""Method E: probe for ``Linux version`` at linux_banner in 1 MiB steps (crash x86_64_virt_phys_base, §3E)."""

from __future__ import annotations

from collections.abc import Iterator

from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.errors import KdfixError
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.units import U64_MASK

METHOD = "banner"
BANNER_PREFIX = b"Linux version"
MiB = 1 << 20
FIRST = -32 * MiB
STOP = 0xFFFFF00000  # crash stops before this candidate


def _probe_values(header_phys_base: int) -> Iterator[int]:
    yield header_phys_base
    cand = FIRST
    while cand & U64_MASK != STOP:
        yield cand & U64_MASK
        cand += MiB


@strategy(METHOD)
def find_by_banner(run: Attempt) -> Candidate | None:
    """First phys_base for which kphys(linux_banner + KERNELOFFSET) reads ``Linux version`` (needs the symbol)."""
    symbols, memory = run.vmlinux_symbols, run.memory
    if not symbols or "linux_banner" not in symbols:
        run.miss("needs the vmlinux symbol linux_banner")
        return None
    kernel_offset = next((c.kernel_offset for c in run.known if c.kernel_offset is not None), None)
    assumed = "" if kernel_offset is not None else " (KERNELOFFSET unknown, assumed 0)"
    lb = symbols["linux_banner"] + (kernel_offset or 0) - START_KERNEL_MAP
    limit = memory.max_pfn * memory.page_size
    for index, cand in enumerate(_probe_values(run.model.phys_base)):
        paddr = (lb + cand) & U64_MASK
        if paddr >= limit:
            if index > 0 and cand < (1 << 63):
                break  # ascending non-negative candidates only get larger
            continue
        if not memory.present(paddr // memory.page_size):
            continue
        try:
            raw = memory.read(paddr, len(BANNER_PREFIX))
        except KdfixError:
            continue
        if raw == BANNER_PREFIX:
            run.evidence.append(f"'Linux version' at PA {paddr:#x} with phys_base {cand:#x}{assumed}")
            return run.candidate(cand, kernel_offset)
    run.miss(f"no 'Linux version' at linux_banner for any phys_base probed{assumed}")
    return None
