"""The Arch protocol every architecture module implements, and the values its methods exchange.

An architecture owns everything about a dump that depends on the CPU the guest ran: how to recognise it
(ELF e_machine, NT_PRSTATUS size, VMCOREINFO keys, utsname machine, QEMU's block size), what the KDUMP header
``phys_base`` means, how the kernel maps its image and its linear map, how its page tables are walked, and the
layout of its NT_PRSTATUS registers (arch-kernels-and-introspection.md §1-§2, phys-base-and-kaslr.md §1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from kdfix.errors import KdfixError

if TYPE_CHECKING:
    from kdfix.format.layout import Abi, BoundLayout, Layout
    from kdfix.notes.vmcoreinfo import VmcoreInfo

ReadFn = Callable[[int, int], bytes]  # read(paddr, size) -> bytes; raises KdfixError when absent
MIN_PAGE_SIZE = 4096  # the smallest kernel page on every supported architecture
NO_VADDR = -1  # kexec-tools' p_vaddr for RAM with no permanent kernel mapping (written as all ones)


class WalkBudgetExceeded(Exception):
    """A search read more page tables than allowed (foreign data)."""


@dataclass(frozen=True, slots=True)
class PageMapping:
    """One leaf mapping: page start ``vaddr`` → ``paddr``, ``size`` bytes, and the raw leaf entry."""

    vaddr: int
    paddr: int
    size: int
    entry: int


@dataclass(frozen=True, slots=True)
class Clues:
    """What a dump says about its architecture, gathered once from headers and notes (no memory reads)."""

    e_machine: int | None = None
    machine: str = ""  # utsname.machine ("" when empty)
    prstatus_sizes: tuple[int, ...] = ()
    qemu_cpu_notes: int = 0
    block_size: int | None = None  # KDUMP block_size (None for ELF)
    word_size: int | None = None
    byte_order: str = "<"
    vmcoreinfo: VmcoreInfo | None = None


QEMU_UNKNOWN_MACHINE = "Unknown"  # dump.c's fallback utsname machine (qemu-dumps.md §3, §6.2)
QEMU_TARGET_INDEPENDENT = (8, 0)  # from this release dump.c is target-independent: every target writes "Unknown"


@dataclass(frozen=True, slots=True)
class QemuTarget:
    """How QEMU's ``dump-guest-memory`` writes a kdump file for one target (qemu-dumps.md §3-§7,
    arch-kernels-and-introspection.md §1.6 for aarch64). Only what differs between targets is here."""

    block_size: int  # dump_info.page_size: the KDUMP block_size, whatever the guest's PAGESIZE
    # The build-time ELF_MACHINE_UNAME of qemu-system-<this arch>, written before 8.0. It belongs to the binary,
    # not to the dump: qemu-system-x86_64 writes "x86_64" into EM_386 dumps of guests not in long mode.
    machine_uname: str = QEMU_UNKNOWN_MACHINE
    also_dumps: tuple[str, ...] = ()  # other architectures (kdfix.arch names) this target's dumps can be
    phys_base_key: str | None = None  # the VMCOREINFO line QEMU parses (base 16) into the sub-header phys_base
    phys_base_is_ram_start: bool = False  # ARM targets guess phys_base as the lowest guest-physical block start
    cpu_state_notes: bool = False  # a "QEMU" CPU-state note per vCPU after the CORE notes (x86 targets)
    elf_class: int | None = 64  # ELF class of the dump; None: 64 only when some block ends above 4 GiB - 1

    def machine(self, version: tuple[int, int]) -> str:
        """utsname.machine written by QEMU ``version`` (major, minor)."""
        return self.machine_uname if version < QEMU_TARGET_INDEPENDENT else QEMU_UNKNOWN_MACHINE

    def class64(self, memory_end: int) -> bool:
        """Whether QEMU writes an ELFCLASS64 dump (and the 64-bit kdump headers) for memory ending at
        ``memory_end`` (qemu-dumps.md §3 "32-bit headers")."""
        if self.elf_class is None:
            return memory_end > 0xFFFFFFFF
        return self.elf_class == 64


class ArchBasics:
    """The Arch members every architecture derives the same way from its declarations: QEMU's block size from
    its QemuTarget, the header ABI by byte order, the NT_PRSTATUS layout bound to that ABI."""

    qemu: QemuTarget
    abis: ClassVar[tuple[Abi, Abi]]  # (little endian, big endian)
    prstatus_layout: ClassVar[Layout[Any]]

    @property
    def qemu_block_size(self) -> int:
        return self.qemu.block_size

    def kdump_abi(self, byte_order: str = "<") -> Abi:
        return self.abis[0] if byte_order == "<" else self.abis[1]

    def prstatus(self, byte_order: str = "<") -> BoundLayout:
        return self.prstatus_layout.bind(self.kdump_abi(byte_order))


@dataclass(frozen=True, slots=True)
class Translation:
    """A kernel VA's physical address and the rule or walk that produced it (for evidence lines)."""

    vaddr: int
    paddr: int
    how: str


class KernelSpace(Protocol):
    """One running kernel's address space, built from its VMCOREINFO by ``Arch.kernel_space``.

    ``phys_base`` is the value the KDUMP header's ``phys_base`` must hold for this kernel.
    """

    @property
    def arch(self) -> str: ...

    @property
    def phys_base(self) -> int: ...

    @property
    def kernel_offset(self) -> int | None: ...

    @property
    def root_paddr(self) -> int | None:
        """Top-level page table (swapper_pg_dir / init_top_pgt) or None when unknown."""
        ...

    @property
    def min_page_size(self) -> int: ...

    def image_paddr(self, vaddr: int) -> int:
        """Physical address of a kernel-image VA by the arch's image rule (no memory read)."""
        ...

    def rule_paddr(self, vaddr: int) -> int | None:
        """Physical address of ``vaddr`` when a fixed rule covers it exactly (image range, linear map), else None."""
        ...

    def walk(self, read: ReadFn, vaddr: int) -> int | None:
        """Physical address of ``vaddr`` by a page-table walk; None if unmapped; KdfixError if unreadable."""
        ...

    def linear_probe(self) -> int | None:
        """A VMCOREINFO VA that must lie in the linear map (validates the linear rule by a walk), or None."""
        ...

    def describe(self) -> list[str]:
        """Evidence lines: the values this space was built from."""
        ...


class Arch(Protocol):
    """One architecture. Modules in kdfix/arch define one instance each; the registry lists them."""

    @property
    def name(self) -> str:
        """Registry key (`kdfix.arch.get_arch`)."""
        ...

    @property
    def e_machines(self) -> frozenset[int]: ...

    @property
    def machines(self) -> tuple[str, ...]:
        """The utsname machine strings of its kernels, matched by prefix; the first is the one kdfix writes."""
        ...

    @property
    def prstatus_size(self) -> int:
        """NT_PRSTATUS desc bytes."""
        ...

    @property
    def word_size(self) -> int:
        """The size of a C long in its kernels."""
        ...

    @property
    def qemu(self) -> QemuTarget:
        """What QEMU's dump-guest-memory does for this target."""
        ...

    @property
    def qemu_block_size(self) -> int:
        """QEMU's dump block size for this target (qemu-dumps.md §3)."""
        ...

    @property
    def phys_base_meaning(self) -> str:
        """What the header phys_base holds, for messages."""
        ...

    @property
    def phys_base_key(self) -> str | None:
        """The VMCOREINFO key holding the header phys_base value, if any."""
        ...

    @property
    def vmcoreinfo_keys(self) -> tuple[str, ...]:
        """Keys only this arch's kernels print."""
        ...

    @property
    def detect_methods(self) -> tuple[str, ...]:
        """The kdfix.detect methods that apply to its dumps."""
        ...

    def kdump_abi(self, byte_order: str = "<") -> Abi:
        """The header ABI this architecture's makedumpfile and crash read (kdump-format.md §3-§4)."""
        ...

    def prstatus(self, byte_order: str = "<") -> BoundLayout:
        """The bound elf_prstatus declaration (format/notes.py)."""
        ...

    def user_mode(self, regs: dict[str, int]) -> bool | None:
        """Whether a CPU whose PRSTATUS registers are ``regs`` was running user code (its IP is then no kernel
        address to symbolize); None when the registers do not say."""
        ...

    def header_phys_base(self, info: VmcoreInfo) -> int | None:
        """The header phys_base this kernel needs, from its VMCOREINFO; None if it does not say."""
        ...

    def kernel_offset(self, info: VmcoreInfo) -> int | None:
        """The KASLR offset of the image (runtime - link-time), from VMCOREINFO."""
        ...

    def elf_load_vaddr(self, paddr: int, size: int) -> int | None:
        """The p_vaddr /proc/vmcore gives a PT_LOAD of RAM at ``paddr`` (``NO_VADDR``: none), or None to keep
        the dump's own (kexec-tools crashdump-elf.c; arch-kernels-and-introspection.md §2.4)."""
        ...

    def vmcoreinfo_evidence(self, info: VmcoreInfo) -> list[str]:
        """Short evidence lines: the keys of ``info`` this architecture's rules use, as the kernel printed them."""
        ...

    def kernel_space(self, info: VmcoreInfo, *, phys_base: int | None = None) -> KernelSpace:
        """The address space of the kernel ``info`` describes; ``phys_base`` overrides what it says.

        Raises UnsupportedError when ``info`` lacks a key the rules need.
        """
        ...


@dataclass(frozen=True, slots=True)
class Recognition:
    """The architecture chosen for a dump and the clues that chose it."""

    arch: Arch
    evidence: tuple[str, ...] = field(default=())


def walk_error(exc: KdfixError, table: int) -> str:
    """Evidence text for a page table that could not be read."""
    return f"table at {table:#x} unreadable: {exc.message}"
