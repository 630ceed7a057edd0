"""A dump seen as the kernel saw itself: its VMCOREINFO (from the file or recovered from memory) and its memory."""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.arch import Arch, KernelMemory, identify, kernel_reader
from kdfix.errors import UnsupportedError
from kdfix.kernel.vmem import Endian
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.dump import Dump


@dataclass(frozen=True)
class KernelView:
    """VMCOREINFO, where it came from ("file" or "memory (<method>)"), the architecture and kernel memory."""

    vmcoreinfo: VmcoreInfo
    vmcoreinfo_source: str
    arch: Arch
    memory: KernelMemory
    endian: Endian

    @property
    def word_size(self) -> int:
        return self.arch.word_size


def find_vmcoreinfo(dump: Dump) -> tuple[VmcoreInfo, str]:
    """The dump's VMCOREINFO, else the kernel's own note found in memory by kdfix.detect."""
    if dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease is not None:
        return dump.vmcoreinfo, "file"
    from kdfix.detect.combine import detect

    result = detect(dump.model, dump.memory)
    if result.vmcoreinfo is None:
        raise UnsupportedError("the dump carries no VMCOREINFO and none was found in its memory", path=dump.path)
    return VmcoreInfo.parse(result.vmcoreinfo), f"memory ({result.method})"


def kernel_view(dump: Dump) -> KernelView:
    """The kernel view of an opened dump (UnsupportedError when its kernel cannot be read)."""
    info, source = find_vmcoreinfo(dump)
    arch = identify(dump.model, info)
    memory = kernel_reader(dump.model, dump.memory, info, arch=arch)
    return KernelView(info, source, arch, memory, "little" if dump.model.abi.byte_order == "<" else "big")
