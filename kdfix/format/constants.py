"""Format constants, each defined once: signatures, flags, dump levels, note names and types."""

from __future__ import annotations

from enum import IntEnum, IntFlag

# Signatures (kdump-format.md §2, §11).
KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
KDUMP_SIGNATURES = (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
FLAT_TYPE = 1
FLAT_VERSION = 1
FLAT_END_OFFSET = -1
FLAT_END_SIZE = -1

# Newest kdump header version (no v7 exists).
KDUMP_HEADER_VERSION = 6


class DumpFlag(IntFlag):
    """Header ``status`` and per-page ``flags`` bits (kdump-format.md §5)."""

    COMPRESSED_ZLIB = 0x01
    COMPRESSED_LZO = 0x02
    COMPRESSED_SNAPPY = 0x04
    COMPRESSED_INCOMPLETE = 0x08
    EXCLUDED_VMEMMAP = 0x10
    COMPRESSED_ZSTD = 0x20


COMPRESSION_FLAGS = (
    DumpFlag.COMPRESSED_ZLIB | DumpFlag.COMPRESSED_LZO | DumpFlag.COMPRESSED_SNAPPY | DumpFlag.COMPRESSED_ZSTD
)

# Names a user types for status flags (``kdfix fix --set-flag incomplete``).
STATUS_FLAG_NAMES = {
    "zlib": DumpFlag.COMPRESSED_ZLIB,
    "lzo": DumpFlag.COMPRESSED_LZO,
    "snappy": DumpFlag.COMPRESSED_SNAPPY,
    "incomplete": DumpFlag.COMPRESSED_INCOMPLETE,
    "excluded_vmemmap": DumpFlag.EXCLUDED_VMEMMAP,
    "zstd": DumpFlag.COMPRESSED_ZSTD,
}


class DumpLevel(IntFlag):
    """makedumpfile ``-d`` bits (kdump-format.md §7)."""

    EXCLUDE_ZERO = 0x01
    EXCLUDE_CACHE = 0x02
    EXCLUDE_CACHE_PRI = 0x04
    EXCLUDE_USER_DATA = 0x08
    EXCLUDE_FREE = 0x10


MAX_DUMP_LEVEL = 31

# ELF note names (with their NUL) and types (notes-and-vmcoreinfo.md §1).
NOTE_NAME_CORE = b"CORE"
NOTE_NAME_QEMU = b"QEMU"
NOTE_NAME_VMCOREINFO = b"VMCOREINFO"
NOTE_NAME_LINUX = b"LINUX"
NOTE_NAME_ERASEINFO = b"ERASEINFO"
NOTE_NAME_KDFIX = b"KDFIX"

# What ``kdfix generate --style linux`` writes into its synthetic guest (kdfix/generate/synthetic.py), so that
# ``info`` can tell a generated dump from a QEMU one without the KDFIX note: the utsname nodename of its kernel,
# and the ID string of its pseudo-BIOS at a fixed physical address (the middle of the 256 KiB ROM below 4 GiB).
SYNTHETIC_NODENAME = "kdfix-synthetic"
SYNTHETIC_BIOS_ID = b"kdfix synthetic BIOS"
SYNTHETIC_BIOS_ID_PADDR = 0xFFFE0000


class NoteType(IntEnum):
    """ELF note types seen in vmcores."""

    NT_PRSTATUS = 1
    NT_PRFPREG = 2
    NT_PRPSINFO = 3
    NT_TASKSTRUCT = 4
    NT_VMCOREDD = 0x700


NOTE_TYPE_QEMU = 0
NOTE_TYPE_VMCOREINFO = 0
NOTE_TYPE_KDFIX = 0

# QEMUCPUState sizes: 440 since QEMU 3.0 (kernel_gs_base), 432 before.
QEMU_CPU_STATE_VERSION = 1

# x86_64 kernel constants (phys-base-and-kaslr.md §1).
START_KERNEL_MAP = 0xFFFFFFFF80000000
DEFAULT_LINK_TEXT = 0xFFFFFFFF81000000

# ELF header bits used for vmcores.
ELF_INCOMPLETE_FLAG = 0x1  # DUMP_ELF_INCOMPLETE in e_flags
EM_NONE = 0  # no machine claimed
EM_386 = 3
EM_X86_64 = 62
EM_ARM = 40
EM_AARCH64 = 183
EM_PPC64 = 21
EM_S390 = 22

# Xen's xc_core domain dumps (xen docs/misc/dump-core-format.txt): the legacy header's first u32, and the
# sections of the ELF form. kdfix names and refuses them.
XC_CORE_MAGICS = (0xF00FEBED, 0xF00FEBEE)  # XC_CORE_MAGIC, XC_CORE_MAGIC_HVM
XC_CORE_SECTIONS = frozenset({".note.Xen", ".xen_pages", ".xen_p2m", ".xen_pfn", ".xen_prstatus"})
