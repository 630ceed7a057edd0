"""Thin wrappers around the oracle tools (crash, makedumpfile, drgn); see tools-and-oracles.md §1, §2, §4.

Process wrappers return :class:`ToolResult` ``(returncode, output)`` with stdout and stderr merged, or a parsed value
(raising :class:`ToolError` on failure). Every call has a timeout; a timeout raises :class:`ToolTimeout`.

Architectures: the crash and makedumpfile wrappers take ``arch`` (None or "x86_64": the machine's own builds;
"aarch64"/"i386": Debian's arm64/i386 builds from an unpacked sysroot, run as tests/oracle/sysroot.py says). drgn
(the x86_64 wheel) reads all three; :func:`drgn_program` takes the platform by name.

Measured on Debian 12 (makedumpfile 1.7.2, ``makedumpfile -v``): zlib ``-c`` and lzo ``-l`` work; snappy ``-p`` and
zstd ``-z`` are compiled out and *silently ignored* — the output is uncompressed (status 0). So
:func:`makedumpfile_from_elf` refuses codecs missing from :func:`makedumpfile_codecs` instead of producing a file
whose codec differs from the one asked for.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

__all__ = [
    "MAKEDUMPFILE_CODEC_FLAGS",
    "ToolError",
    "ToolResult",
    "ToolTimeout",
    "crash_debug_dump",
    "crash_osrelease",
    "crash_with_vmlinux",
    "drgn_program",
    "drgn_read_phys",
    "elf_find",
    "elf_loads",
    "elf_phdrs_after_ehdr",
    "elf_read_phys",
    "elf_vmcore_vaddrs",
    "have_tool",
    "makedumpfile_codecs",
    "makedumpfile_dump_dmesg",
    "makedumpfile_from_elf",
    "makedumpfile_reassemble",
    "makedumpfile_reassemble_split",
    "makedumpfile_split",
    "oracle_argv",
    "parse_crash_fields",
]

DEFAULT_TIMEOUT = 300.0
Compress = Literal["zlib", "lzo", "snappy", "zstd"]
MAKEDUMPFILE_CODEC_FLAGS: dict[str, str] = {"zlib": "-c", "lzo": "-l", "snappy": "-p", "zstd": "-z"}


class ToolResult(NamedTuple):
    returncode: int
    output: str  # stdout + stderr


class ToolError(RuntimeError):
    """A tool failed (or cannot do what was asked); ``result`` holds its exit code and output when it ran."""

    def __init__(self, message: str, result: ToolResult | None = None) -> None:
        super().__init__(
            message
            if result is None
            else f"{message}\n--- output (rc={result.returncode}) ---\n{result.output[-4000:]}"
        )
        self.result = result


class ToolTimeout(ToolError):
    pass


def _native(arch: str | None) -> bool:
    return arch in (None, "x86_64")


def oracle_argv(program: str, arch: str | None = None) -> list[str]:
    """argv prefix running ``program`` ("crash"/"makedumpfile") built for ``arch`` (None/"x86_64": from PATH)."""
    if _native(arch):
        return [program]
    from tests.oracle.sysroot import runner

    assert arch is not None
    return runner(arch, program)


def have_tool(name: str, arch: str | None = None) -> bool:
    """True when ``name`` is usable: an executable on PATH, or for "drgn" an importable module with libkdumpfile.

    With a foreign ``arch``, crash/makedumpfile count as usable when their sysroot can be had (downloads it once).
    """
    if not _native(arch) and name in ("crash", "makedumpfile"):
        from tests.oracle.guest import GuestError
        from tests.oracle.sysroot import oracle_sysroot

        assert arch is not None
        try:
            oracle_sysroot(arch)
        except (GuestError, OSError, subprocess.SubprocessError):
            return False
        return True
    if name == "drgn":
        try:
            import drgn  # noqa: F401
        except ImportError:
            return False
        return True
    return shutil.which(name) is not None


def _run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: Any = None,
    input_text: str | None = None,
    stdout: Any = None,
    cwd: Path | None = None,
) -> ToolResult:
    """Run ``cmd``; merged output unless ``stdout`` is a file (then only stderr is returned)."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            argv,
            stdin=stdin if input_text is None else None,
            input=input_text,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if stdout is None else subprocess.PIPE,
            timeout=timeout,
            cwd=cwd,
            check=False,
            text=stdout is None or input_text is not None,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolTimeout(f"{' '.join(argv)} timed out after {timeout:.0f}s") from exc
    out = proc.stdout if stdout is None else proc.stderr
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    return ToolResult(proc.returncode, out or "")


# ------------------------------------------------------------------------------------------------ crash


def crash_osrelease(path: Path, *, timeout: float = 120, arch: str | None = None) -> ToolResult:
    """``crash --osrelease DUMP``: exit 0 and the release on success; ``unknown`` + exit 1 without VMCOREINFO."""
    return _run([*oracle_argv("crash", arch), "--osrelease", path], timeout=timeout)


def crash_debug_dump(path: Path, *, timeout: float = 120, arch: str | None = None) -> ToolResult:
    """``crash -d1 --osrelease DUMP``: field-by-field header/sub-header/notes decode (use parse_crash_fields)."""
    return _run([*oracle_argv("crash", arch), "-d1", "--osrelease", path], timeout=timeout)


_FIELD_RE = re.compile(r"^\s*([A-Za-z_][\w.\[\]]*):\s*(.*?)\s*$")


def parse_crash_fields(text: str) -> dict[str, str]:
    """``name: value`` lines of crash -d1 / makedumpfile -D output → dict (first occurrence of each name wins)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _FIELD_RE.match(line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2)
    return fields


def crash_with_vmlinux(
    vmlinux: Path,
    dump: Path,
    commands: list[str],
    *,
    timeout: float = 600,
    extra_args: Sequence[str] = (),
    arch: str | None = None,
) -> ToolResult:
    """Run crash in batch mode: ``crash [extra] VMLINUX DUMP`` with ``commands`` + ``quit`` on stdin.

    A wrong phys_base/KASLR shows as "vmlinux and DUMP do not match!" in the output (tools-and-oracles.md §1).
    """
    script = "\n".join([*commands, "quit"]) + "\n"
    argv: list[str | os.PathLike[str]] = [*oracle_argv("crash", arch), "--no_scroll", *extra_args, vmlinux, dump]
    return _run(argv, input_text=script, timeout=timeout)


# ------------------------------------------------------------------------------------------------ makedumpfile


@functools.cache
def makedumpfile_codecs(arch: str | None = None) -> frozenset[str]:
    """Codecs this makedumpfile build really implements (``makedumpfile -v``: "lzo enabled", ...); zlib always."""
    res = _run([*oracle_argv("makedumpfile", arch), "-v"], timeout=60)
    codecs = {"zlib"}
    for name in ("lzo", "snappy", "zstd"):
        if re.search(rf"^{name}\s+enabled", res.output, re.M):
            codecs.add(name)
    return frozenset(codecs)


def _compress_args(compress: Compress | None, arch: str | None = None) -> list[str]:
    if compress is None:
        return []
    if compress not in MAKEDUMPFILE_CODEC_FLAGS:
        raise ValueError(f"unknown codec {compress!r}")
    if compress not in makedumpfile_codecs(None if _native(arch) else arch):
        raise ToolError(f"this makedumpfile build lacks {compress} (it would silently write uncompressed pages)")
    return [MAKEDUMPFILE_CODEC_FLAGS[compress]]


def makedumpfile_reassemble(
    flat: Path, out: Path, *, timeout: float = DEFAULT_TIMEOUT, arch: str | None = None
) -> ToolResult:
    """``makedumpfile -R OUT < FLAT``: flattened stream → plain kdump file."""
    with open(flat, "rb") as fh:
        return _run([*oracle_argv("makedumpfile", arch), "-R", out], stdin=fh, timeout=timeout)


def makedumpfile_dump_dmesg(
    dump: Path, *, timeout: float = DEFAULT_TIMEOUT, extra_args: Sequence[str] = (), arch: str | None = None
) -> str:
    """``makedumpfile --dump-dmesg DUMP LOG`` → the log text; raises ToolError on failure.

    Uses the header phys_base and VMCOREINFO, so it is the oracle for a phys_base fix (tools-and-oracles.md §2).
    """
    with tempfile.TemporaryDirectory(prefix="kdfix-dmesg-") as tmp:
        log = Path(tmp) / "dmesg.txt"
        res = _run([*oracle_argv("makedumpfile", arch), *extra_args, "--dump-dmesg", dump, log], timeout=timeout)
        if res.returncode != 0 or not log.is_file():
            raise ToolError(f"makedumpfile --dump-dmesg {dump} failed", res)
        return log.read_text(errors="replace")


def makedumpfile_from_elf(
    elf_in: Path,
    out: Path,
    *,
    compress: Compress | None = None,
    dump_level: int = 0,
    flat: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    arch: str | None = None,
) -> ToolResult:
    """``makedumpfile [-c|-l|-p|-z] -d N [-F] ELF OUT`` (with -F the stream goes to OUT via stdout).

    makedumpfile 1.7.2 requires the program headers right after the ELF header; QEMU ≥ 7.2 ELF has them at 192 and
    is refused ("Can't get the number of PT_LOAD"): convert it first (kdfix.write.elf, or elf_phdrs_after_ehdr).
    Refuses (ToolError) a codec the installed build lacks.
    """
    args = [*oracle_argv("makedumpfile", arch), *_compress_args(compress, arch), "-d", str(dump_level), *extra_args]
    if flat:
        with open(out, "wb") as fh:
            return _run([*args, "-F", elf_in], stdout=fh, timeout=timeout)
    return _run([*args, elf_in, out], timeout=timeout)


def makedumpfile_split(
    elf_in: Path,
    outs: Sequence[Path],
    compress: Compress | None = None,
    *,
    dump_level: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
) -> ToolResult:
    """``makedumpfile --split [-c|-l] -d N ELF OUT1 OUT2 ...``."""
    if len(outs) < 2:
        raise ValueError("--split needs at least two output files")
    args: list[str | os.PathLike[str]] = ["makedumpfile", "--split", *_compress_args(compress), "-d", str(dump_level)]
    args += [elf_in, *outs]
    return _run(args, timeout=timeout)


def makedumpfile_reassemble_split(parts: Sequence[Path], out: Path, *, timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """``makedumpfile --reassemble PART1 PART2 ... OUT``."""
    return _run(["makedumpfile", "--reassemble", *parts, out], timeout=timeout)


def elf_phdrs_after_ehdr(src: Path, dst: Path) -> Path:
    """Copy a QEMU ≥ 7.2 ELF64 core so makedumpfile 1.7.2 accepts it: program headers moved to offset 64.

    Test helper, independent of kdfix: the headers are copied to offset 64 (over the section headers, which are
    dropped: e_shoff/e_shnum/e_shstrndx = 0, e_ehsize = 64). Data offsets do not move, so the phdr table must fit
    before the first segment's data.
    """
    with open(src, "rb") as fh:
        eh = bytearray(fh.read(64))
        if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
            raise ValueError(f"{src}: not a little-endian ELF64 file")
        phoff = struct.unpack_from("<Q", eh, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        fh.seek(phoff)
        ph = fh.read(phentsize * phnum)
    first_data = min(struct.unpack_from("<Q", ph, i * phentsize + 8)[0] for i in range(phnum))
    if 64 + len(ph) > first_data:
        raise ValueError(f"{src}: program headers do not fit before the first segment at {first_data}")
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
    struct.pack_into("<QQ", eh, 32, 64, 0)  # e_phoff, e_shoff
    struct.pack_into("<H", eh, 52, 64)  # e_ehsize
    struct.pack_into("<HHH", eh, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    with open(dst, "r+b") as fh:
        fh.write(eh)
        fh.write(ph)
    return dst


def elf_vmcore_vaddrs(src: Path, dst: Path, *, page_offset: int, lowmem_end: int) -> Path:
    """Copy an ELF64 core giving each PT_LOAD the p_vaddr /proc/vmcore gives it on i386 (arch-kernels-and-
    introspection.md §2.4): ``page_offset + p_paddr`` when the segment lies wholly below ``lowmem_end``, else -1.

    Test helper, independent of kdfix (QEMU writes p_vaddr = p_paddr with paging off; qemu-dumps.md §6).
    """
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
    with open(dst, "r+b") as fh:
        eh = fh.read(64)
        if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
            raise ValueError(f"{src}: not a little-endian ELF64 file")
        phoff = struct.unpack_from("<Q", eh, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            ph = fh.read(56)
            p_type, paddr, memsz = struct.unpack_from("<I", ph, 0)[0], *struct.unpack_from("<Q8xQ", ph, 24)
            if p_type != 1:
                continue
            vaddr = page_offset + paddr if paddr + memsz <= lowmem_end else (1 << 64) - 1
            fh.seek(phoff + i * phentsize + 16)
            fh.write(struct.pack("<Q", vaddr))
    return dst


# ------------------------------------------------------------------------------------------------ ELF (independent)


class ElfLoad(NamedTuple):
    paddr: int
    offset: int
    filesz: int
    memsz: int


def elf_loads(path: Path) -> list[ElfLoad]:
    """PT_LOAD segments of a little-endian ELF64 core (p_paddr, p_offset, p_filesz, p_memsz), in file order."""
    with open(path, "rb") as fh:
        eh = fh.read(64)
        if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
            raise ValueError(f"{path}: not a little-endian ELF64 file")
        phoff = struct.unpack_from("<Q", eh, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        fh.seek(phoff)
        ph = fh.read(phentsize * phnum)
    loads = []
    for i in range(phnum):
        p_type, _flags, off, _vaddr, paddr, filesz, memsz, _align = struct.unpack_from("<IIQQQQQQ", ph, i * phentsize)
        if p_type == 1:
            loads.append(ElfLoad(paddr, off, filesz, memsz))
    return loads


def elf_read_phys(path: Path, paddr: int, n: int) -> bytes:
    """Read guest-physical bytes from an ELF core's PT_LOADs; ValueError if any byte is not in the file."""
    out = bytearray()
    loads = elf_loads(path)
    with open(path, "rb") as fh:
        while len(out) < n:
            a = paddr + len(out)
            seg = next((s for s in loads if s.paddr <= a < s.paddr + s.filesz), None)
            if seg is None:
                raise ValueError(f"{path}: physical address {a:#x} is not in any PT_LOAD")
            take = min(n - len(out), seg.paddr + seg.filesz - a)
            fh.seek(seg.offset + a - seg.paddr)
            out += fh.read(take)
    return bytes(out)


def elf_find(path: Path, needle: bytes, *, limit: int = 16, chunk: int = 8 << 20) -> list[int]:
    """Physical addresses where ``needle`` occurs in the ELF's PT_LOAD data (streaming, chunked with overlap)."""
    hits: list[int] = []
    with open(path, "rb") as fh:
        for seg in elf_loads(path):
            pos, tail = 0, b""
            fh.seek(seg.offset)
            while pos < seg.filesz and len(hits) < limit:
                data = tail + fh.read(min(chunk, seg.filesz - pos))
                base = seg.paddr + pos - len(tail)
                i = data.find(needle)
                while i >= 0 and len(hits) < limit:
                    hits.append(base + i)
                    i = data.find(needle, i + 1)
                pos += len(data) - len(tail)
                tail = data[-(len(needle) - 1) :] if len(needle) > 1 else b""
    return hits


# ------------------------------------------------------------------------------------------------ drgn


def _platform(platform: Any) -> Any:
    import drgn

    if platform is None or isinstance(platform, drgn.Platform):
        return platform
    le64 = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    named = {
        "x86_64": (drgn.Architecture.X86_64, le64),
        "aarch64": (drgn.Architecture.AARCH64, le64),
        "i386": (drgn.Architecture.I386, drgn.PlatformFlags.IS_LITTLE_ENDIAN),
    }
    if platform in named:
        return drgn.Platform(*named[platform])
    raise ValueError(f"unknown platform {platform!r}")


def drgn_release_by_vaddr(path: Path) -> str:
    """drgn with no platform and no vmcoreinfo hint: init_uts_ns.name.release read by kernel virtual address,
    i.e. through the kernel's page tables (the VMCOREINFO symbols come from kdfix's reader)."""
    import kdfix

    prog = drgn_program(path)
    with kdfix.open_dump(path) as dump:
        info = dump.vmcoreinfo
        assert info is not None
        sym = info.symbol("init_uts_ns")
        assert sym is not None
        va = sym + (info.offset("uts_namespace.name") or 0)
    return prog.read(va + 130, 65).split(b"\0", 1)[0].decode()


def drgn_program(path: Path, *, platform: Any = None, vmcoreinfo: bytes | str | None = None) -> Any:
    """drgn.Program(platform, vmcoreinfo=...) with ``set_core_dump(path)``.

    ``platform``: None, "x86_64", "aarch64", "i386" or a drgn.Platform. QEMU kdump files have an empty utsname, so
    drgn needs the platform for them (tools-and-oracles.md §4).
    """
    import drgn

    kwargs: dict[str, Any] = {}
    if vmcoreinfo is not None:
        kwargs["vmcoreinfo"] = vmcoreinfo.encode() if isinstance(vmcoreinfo, str) else vmcoreinfo
    prog = drgn.Program(_platform(platform), **kwargs)
    prog.set_core_dump(str(path))
    return prog


def drgn_read_phys(
    path: Path, paddr: int, n: int, *, platform: Any = "x86_64", vmcoreinfo: bytes | str | None = None
) -> bytes:
    """Read ``n`` bytes of guest-physical memory at ``paddr`` through drgn/libkdumpfile."""
    prog = drgn_program(path, platform=platform, vmcoreinfo=vmcoreinfo)
    return prog.read(paddr, n, True)
