"""Boot a tiny Debian Linux guest under QEMU (TCG) and dump it over QMP: the real-guest oracle.

Three architectures (:data:`GUEST_ARCHES`): x86_64 (q35, SeaBIOS or OVMF, cloud-amd64 kernel), aarch64 (virt,
cortex-a57, cloud-arm64 kernel, 384 MiB) and i386 (pc, 686-pae kernel, 256 MiB). Foreign kernels and busybox-static
come from the machine's apt sources with ``apt-get download PKG:ARCH`` (scripts/setup.sh adds the dpkg
architectures); nothing foreign is installed.

Reference: qemu-dumps.md §1 (formats, QMP), §5 (pages), §7 (vmcoreinfo device); tools-and-oracles.md §5
(guest recipe); phys-base-and-kaslr.md §1 (phys_base identity used for the ground truth);
arch-kernels-and-introspection.md §1 (aarch64 VMCOREINFO, VA→PA), §2 (i386 address space).

Everything downloaded or booted is cached under :func:`cache_dir` (outside the repo, so CI's fresh clones reuse it).
Cached dump files are QEMU's own output, mode 0400: tests must copy them before modifying anything.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import functools
import gzip
import hashlib
import json
import lzma
import os
import re
import secrets
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "GUEST_ARCHES",
    "I386_PAGE_OFFSET",
    "START_KERNEL_MAP",
    "FirmwareDumps",
    "GroundTruth",
    "GuestArch",
    "GuestConfig",
    "GuestDumps",
    "GuestError",
    "GuestRun",
    "KernelArtifacts",
    "boot_and_dump",
    "build_initramfs",
    "busybox_binary",
    "cache_dir",
    "cached_entry",
    "cached_firmware_only_dumps",
    "cached_guest_dumps",
    "cpio_archive",
    "debug_vmlinux",
    "firmware_only_dumps",
    "ground_truth_script",
    "kernel_artifacts",
    "qemu_version",
    "run_and_dump",
    "stamp",
]

START_KERNEL_MAP = 0xFFFFFFFF80000000
I386_PAGE_OFFSET = 0xC0000000  # VMSPLIT_3G: lowmem and the kernel image are VA = PA + this (arch-kernels...md §2.2)
U64 = (1 << 64) - 1
QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
META_PACKAGE = "linux-image-cloud-amd64"
BOOT_TIMEOUT_S = float(os.environ.get("KDFIX_BOOT_TIMEOUT", "90"))
TRUTH_BEGIN = "KDFIX-TRUTH-BEGIN"
TRUTH_END = "KDFIX-TRUTH-END"
READY = "KDFIX-READY"
_TRUTH_RE = re.compile(r"KDFIX:([a-z_]+)=(.*?)\s*$")


class GuestError(RuntimeError):
    """The guest could not be prepared, booted or dumped (message includes the serial log tail when useful)."""


ArchName = Literal["x86_64", "aarch64", "i386"]


@dataclass(frozen=True)
class GuestArch:
    """How one architecture's guest is obtained and booted (the recipe of tools-and-oracles.md §5, per arch)."""

    name: str  # the kernel's name for it (utsname machine family): x86_64, aarch64, i386
    debian: str  # dpkg architecture of the kernel and busybox-static packages
    meta_package: str  # Debian meta package whose Depends names the versioned kernel package
    flavour: str  # kernel flavour suffix of the versioned package, e.g. cloud-arm64
    qemu: str  # qemu-system-* binary
    machine: tuple[str, ...]  # -machine (and -cpu) arguments
    console: str  # kernel console= device for the first serial port
    memory_mib: int  # default guest RAM
    firmwares: tuple[str, ...]  # allowed GuestConfig.firmware values, default first
    boot_timeout_factor: float = 1.0  # TCG speed relative to x86_64
    boot_retry: str = ""  # a known transient panic: boot again when the serial log shows it

    @property
    def foreign(self) -> bool:
        """True when packages need an explicit ``:ARCH`` qualifier (not the machine's native amd64)."""
        return self.debian != "amd64"

    def spec(self, package: str) -> str:
        return f"{package}:{self.debian}" if self.foreign else package


GUEST_ARCHES: dict[str, GuestArch] = {
    "x86_64": GuestArch(
        "x86_64",
        "amd64",
        "linux-image-cloud-amd64",
        "cloud-amd64",
        QEMU,
        ("-machine", "q35"),
        "ttyS0",
        128,
        ("seabios", "ovmf"),
    ),
    "aarch64": GuestArch(
        "aarch64",
        "arm64",
        "linux-image-cloud-arm64",
        "cloud-arm64",
        "qemu-system-aarch64",
        ("-machine", "virt", "-cpu", "cortex-a57"),
        "ttyAMA0",
        384,
        ("none",),
        boot_timeout_factor=4.0,
    ),
    "i386": GuestArch(
        "i386",
        "i386",
        "linux-image-686-pae",
        "686-pae",
        "qemu-system-i386",
        ("-machine", "pc"),
        "ttyS0",
        256,
        ("seabios",),
        boot_timeout_factor=2.0,
        boot_retry="IO-APIC + timer doesn't work",
    ),
}


def guest_arch(name: str) -> GuestArch:
    try:
        return GUEST_ARCHES[name]
    except KeyError:
        raise ValueError(f"guest arch must be one of {sorted(GUEST_ARCHES)}, not {name!r}") from None


# --------------------------------------------------------------------------------------------------------------
# cache and locking


def cache_dir() -> Path:
    """Return the download/dump cache: env KDFIX_CACHE or ~/.cache/kdfix (created)."""
    root = Path(os.environ.get("KDFIX_CACHE") or Path.home() / ".cache" / "kdfix")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold an exclusive flock on cache_dir()/locks/<name>.lock (parallel pytest processes wait, not race)."""
    locks = cache_dir() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _rmtree(path: Path) -> None:
    """Remove a tree even when it holds QEMU's 0400 files (and read-only dirs)."""

    def onerror(func: Any, p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
        func(p)

    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def _run(cmd: list[str], *, timeout: float = 600, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise GuestError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


# --------------------------------------------------------------------------------------------------------------
# kernel artifacts


@dataclass(frozen=True)
class KernelArtifacts:
    """The Debian cloud kernel used by the guest: compressed image, uncompressed fw_cfg module, release string."""

    vmlinuz: Path
    fw_cfg_ko: Path
    release: str
    package: str = ""  # e.g. linux-image-6.1.0-56-cloud-amd64
    version: str = ""  # Debian version, e.g. 6.1.192-2
    config: Path | None = None  # boot/config-<release>
    arch: str = "x86_64"

    def config_value(self, name: str) -> str | None:
        """Value of CONFIG_<name> from the kernel's config file (None when absent or unset)."""
        if self.config is None:
            return None
        m = re.search(rf"^CONFIG_{re.escape(name)}=(.*)$", self.config.read_text(), re.M)
        return m.group(1) if m else None

    def link_stext(self) -> int | None:
        """Link-time VA of _stext (== _text on x86): image base + ALIGN(PHYSICAL_START, PHYSICAL_ALIGN).

        The image base is __START_KERNEL_map on x86_64 and PAGE_OFFSET on i386 (arch-kernels-and-introspection.md
        §2.2). Debian ships a placeholder System.map, so this is derived from the config (inference; the oracle
        test checks it against VMCOREINFO's KERNELOFFSET on x86_64, the nokaslr boot on i386). None on aarch64,
        whose VMCOREINFO states KERNELOFFSET itself.
        """
        base = {"x86_64": START_KERNEL_MAP, "i386": I386_PAGE_OFFSET}.get(self.arch)
        start, align = self.config_value("PHYSICAL_START"), self.config_value("PHYSICAL_ALIGN")
        if base is None or start is None or align is None:
            return None
        a = int(align, 0)
        return base + (int(start, 0) + a - 1) // a * a


def _resolve_kernel_package(arch: GuestArch = GUEST_ARCHES["x86_64"]) -> tuple[str, str]:
    """(package, version) of the linux-image-<ver>-<flavour> that the arch's meta package depends on."""
    meta = arch.spec(arch.meta_package)
    out = _run(["apt-cache", "depends", meta], timeout=60)
    m = re.search(rf"Depends:\s*(linux-image-\S+-{re.escape(arch.flavour)})(?::{arch.debian})?\b", out)
    if not m:
        raise GuestError(f"cannot resolve {meta} dependency from apt-cache: {out[:500]}")
    pkg = m.group(1)
    policy = _run(["apt-cache", "policy", arch.spec(pkg)], timeout=60)
    vm = re.search(r"Candidate:\s*(\S+)", policy)
    if not vm or vm.group(1) == "(none)":
        raise GuestError(f"no candidate version for {pkg}: {policy[:500]}")
    return pkg, vm.group(1)


def _kernel_root() -> Path:
    root = cache_dir() / "kernel"
    root.mkdir(exist_ok=True)
    return root


def _load_kernel_dir(d: Path, arch: str = "x86_64") -> KernelArtifacts | None:
    meta_path = d / "kernel.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    cfg = d / meta["config"] if meta.get("config") else None
    return KernelArtifacts(
        vmlinuz=d / meta["vmlinuz"],
        fw_cfg_ko=d / meta["fw_cfg_ko"],
        release=meta["release"],
        package=meta["package"],
        version=meta["version"],
        config=cfg,
        arch=arch,
    )


def _apt_download(spec: str, into: Path) -> Path:
    """`apt-get download spec` into ``into``; return the .deb path."""
    _run(["apt-get", "download", "-q", spec], cwd=into, timeout=1800)
    debs = sorted(into.glob("*.deb"))
    if len(debs) != 1:
        raise GuestError(f"apt-get download {spec}: expected one .deb, found {debs}")
    return debs[0]


@functools.cache
def kernel_artifacts(arch: str = "x86_64") -> KernelArtifacts:
    """Download (once, cached, locked) and unpack the arch's Debian guest kernel and its qemu_fw_cfg module.

    Resolution uses apt metadata; when apt cannot answer (offline, no lists) the newest cached kernel is used.
    """
    ga = guest_arch(arch)
    try:
        pkg, ver = _resolve_kernel_package(ga)
    except (GuestError, OSError, subprocess.SubprocessError) as exc:
        cached = sorted(
            p
            for p in _kernel_root().iterdir()
            if (p / "kernel.json").is_file() and p.name.split("_")[0].endswith(f"-{ga.flavour}")
        )
        if not cached:
            raise GuestError(f"no cached {arch} kernel and apt cannot resolve one: {exc}") from exc
        art = _load_kernel_dir(cached[-1], arch)
        assert art is not None
        return art
    final = _kernel_root() / f"{pkg}_{ver}"
    with _locked("kernel" if arch == "x86_64" else f"kernel-{arch}"):
        art = _load_kernel_dir(final, arch)
        if art is not None:
            return art
        work = Path(tempfile.mkdtemp(prefix=".tmp-kernel-", dir=_kernel_root()))
        try:
            deb = _apt_download(f"{ga.spec(pkg)}={ver}", work)
            tree = work / "tree"
            _run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=600)
            vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
            if not vmlinuz:
                raise GuestError(f"{deb.name}: no boot/vmlinuz-*")
            release = vmlinuz[0].name.removeprefix("vmlinuz-")
            kos = sorted((tree / "lib" / "modules" / release).rglob("qemu_fw_cfg.ko*"))
            if not kos:
                raise GuestError(f"{deb.name}: no qemu_fw_cfg.ko(.xz) (is CONFIG_FW_CFG_SYSFS built in?)")
            out = work / "out"
            out.mkdir()
            shutil.copy2(vmlinuz[0], out / vmlinuz[0].name)
            ko = kos[0]
            if ko.name.endswith(".xz"):  # busybox insmod cannot decompress: do it here
                (out / "qemu_fw_cfg.ko").write_bytes(lzma.decompress(ko.read_bytes()))
            elif ko.name.endswith(".zst"):
                _run(["zstd", "-q", "-d", str(ko), "-o", str(out / "qemu_fw_cfg.ko")])
            else:
                shutil.copy2(ko, out / "qemu_fw_cfg.ko")
            cfg = tree / "boot" / f"config-{release}"
            if cfg.is_file():
                shutil.copy2(cfg, out / cfg.name)
            meta = {
                "package": pkg,
                "version": ver,
                "release": release,
                "vmlinuz": vmlinuz[0].name,
                "fw_cfg_ko": "qemu_fw_cfg.ko",
                "fw_cfg_source": str(ko.relative_to(tree)),
                "config": cfg.name if cfg.is_file() else None,
            }
            (out / "kernel.json").write_text(json.dumps(meta, indent=2))
            os.rename(out, final)
        finally:
            _rmtree(work)
        art = _load_kernel_dir(final, arch)
        assert art is not None
        return art


@functools.cache
def debug_vmlinux(arch: str = "x86_64") -> Path:
    """The matching vmlinux with debug info from linux-image-<ver>-<flavour>-dbg (~283 MB download, cached)."""
    ga = guest_arch(arch)
    k = kernel_artifacts(arch)
    kdir = k.vmlinuz.parent
    final = kdir / f"vmlinux-{k.release}"
    with _locked("debug-vmlinux"):
        if final.is_file():
            return final
        work = Path(tempfile.mkdtemp(prefix=".tmp-dbg-", dir=_kernel_root()))
        try:
            name = f"{k.package}-dbg" if k.package else f"linux-image-{k.release}-dbg"
            spec = f"{ga.spec(name)}={k.version}" if k.package else ga.spec(name)
            deb = _apt_download(spec, work)
            tree = work / "tree"
            tree.mkdir()
            with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as dd:
                tar = subprocess.run(
                    ["tar", "-x", "-C", str(tree), "--wildcards", "*boot/vmlinux*"],
                    stdin=dd.stdout,
                    capture_output=True,
                    timeout=1200,
                    check=False,
                )
                assert dd.stdout is not None
                dd.stdout.close()
            if dd.returncode != 0 or tar.returncode != 0:
                raise GuestError(f"extracting vmlinux from {deb.name} failed: {tar.stderr[-1000:]!r}")
            found = [p for p in tree.rglob("vmlinux*") if p.is_file()]
            if not found:
                raise GuestError(f"{deb.name}: no boot/vmlinux*")
            tmp = kdir / f".{final.name}.tmp"
            shutil.move(str(found[0]), tmp)
            os.rename(tmp, final)
        finally:
            _rmtree(work)
        return final


@functools.cache
def busybox_binary(arch: str = "x86_64") -> Path:
    """busybox-static for the guest: the machine's own on x86_64, else busybox-static:<debian arch> downloaded with
    ``apt-get download`` and unpacked (not installed) under cache_dir()/busybox/<debian arch>_<version>/."""
    ga = guest_arch(arch)
    if not ga.foreign:
        return Path(shutil.which("busybox") or "/bin/busybox")
    root = cache_dir() / "busybox"
    root.mkdir(exist_ok=True)
    try:
        policy = _run(["apt-cache", "policy", ga.spec("busybox-static")], timeout=60)
        vm = re.search(r"Candidate:\s*(\S+)", policy)
        if not vm or vm.group(1) == "(none)":
            raise GuestError(f"no candidate version for {ga.spec('busybox-static')} (dpkg --add-architecture?)")
        ver = vm.group(1)
    except (GuestError, OSError, subprocess.SubprocessError) as exc:
        cached = sorted(p / "busybox" for p in root.glob(f"{ga.debian}_*") if (p / "busybox").is_file())
        if not cached:
            raise GuestError(f"no cached busybox-static:{ga.debian} and apt cannot provide it: {exc}") from exc
        return cached[-1]
    final = root / re.sub(r"[^A-Za-z0-9.+~-]", "_", f"{ga.debian}_{ver}")
    with _locked(f"busybox-{ga.debian}"):
        if (final / "busybox").is_file():
            return final / "busybox"
        work = Path(tempfile.mkdtemp(prefix=".tmp-busybox-", dir=root))
        try:
            deb = _apt_download(f"{ga.spec('busybox-static')}={ver}", work)
            _run(["dpkg-deb", "-x", str(deb), str(work / "tree")], timeout=600)
            (work / "out").mkdir()
            shutil.copy2(work / "tree" / "bin" / "busybox", work / "out" / "busybox")
            if final.exists():
                _rmtree(final)
            os.rename(work / "out", final)
        finally:
            _rmtree(work)
        return final / "busybox"


# --------------------------------------------------------------------------------------------------------------
# initramfs


def _cpio_entry(name: str, mode: int, data: bytes = b"", *, ino: int, rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One cpio 'newc' record (uid/gid 0, mtime 0, so the archive is reproducible)."""
    nameb = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0]
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = hdr + nameb
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


# The start of every guest's /init: busybox applets, /proc, /sys, /dev, visible kallsyms, qemu_fw_cfg when asked.
INIT_PRELUDE = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo 0 > /proc/sys/kernel/kptr_restrict
echo 1 > /proc/sys/kernel/printk 2>/dev/null
FW=absent
if [ "@VMCOREINFO@" = 1 ]; then
    insmod /qemu_fw_cfg.ko && FW=loaded || FW=failed
fi
"""

# The ground-truth block GroundTruth.parse reads; @MARKER@ may be a shell word such as $1.
TRUTH_SCRIPT = r"""echo @BEGIN@
echo "KDFIX:fw_cfg=$FW"
echo "KDFIX:iomem_code=$(grep -m1 'Kernel code' /proc/iomem)"
for s in _text _stext init_uts_ns linux_banner@SYMS@; do
    echo "KDFIX:kallsyms=$(grep -m1 " $s\$" /proc/kallsyms)"
done
echo "KDFIX:vmcoreinfo=$(cat /sys/kernel/vmcoreinfo)"
@EXTRA@echo "KDFIX:osrelease=$(cat /proc/sys/kernel/osrelease)"
echo "KDFIX:uname=$(uname -a)"
echo "KDFIX:cmdline=$(cat /proc/cmdline)"
echo "KDFIX:marker=@MARKER@"
echo @END@
"""

# @BUSY@: page cache (a tmpfs file) and anonymous memory (a shell holding a string)
INIT_SCRIPT = r"""@PRELUDE@if [ "@BUSY@" = 1 ]; then
    mount -t tmpfs tmpfs /tmp
    head -c 4194304 /dev/urandom > /tmp/cache-file
    sh -c 'x=$(head -c 4194304 /dev/zero | tr "\0" a); touch /tmp/anon-ready; while true; do sleep 3600; done' &
    while ! [ -e /tmp/anon-ready ]; do sleep 0.2; done
fi
@TRUTH@echo "@MARKER@" > /dev/kmsg
@FILL@sync
echo @READY@
if [ -n "@PANIC_CPU@" ]; then
    taskset -c @PANIC_CPU@ sh -c 'echo c > /proc/sysrq-trigger'
fi
while true; do sleep 3600; done
"""


# Extra truth on aarch64 and i386 (x86_64's script stays as it was): every /proc/iomem line and the notes of
# /proc/kcore (base64), whose VMCOREINFO note is the kernel's own text (fs/proc/kcore.c). The PT_NOTE is kcore's
# first program header; its p_offset/p_filesz are read from the ELF32 or ELF64 header with od.
EXTRA_TRUTH = r"""while read -r line; do echo "KDFIX:iomem=$line"; done < /proc/iomem
dd if=/proc/kcore of=/tmp/kh bs=4096 count=1 2>/dev/null
u32() { od -An -tu4 -j "$1" -N 4 /tmp/kh | tr -d ' '; }
if [ "$(od -An -tu1 -j 4 -N 1 /tmp/kh | tr -d ' ')" = 2 ]; then
    PH=$(u32 32); NO=$(u32 $((PH + 8))); NS=$(u32 $((PH + 32)))
else
    PH=$(u32 28); NO=$(u32 $((PH + 4))); NS=$(u32 $((PH + 16)))
fi
dd if=/proc/kcore of=/tmp/kn bs=4096 iflag=skip_bytes,count_bytes skip=$NO count=$NS 2>/dev/null
echo "KDFIX:kcore_notes=$(base64 -w 0 /tmp/kn)"
"""


def ground_truth_script(arch: str, marker: str, *, extra: str = "") -> str:
    """The /init lines that print the ground truth of the running kernel (GroundTruth.parse reads them).

    Non-x86_64 kernels also print EXTRA_TRUTH and kallsyms swapper_pg_dir; ``extra``: more shell lines of
    ``KDFIX:key=value`` output inside the block.
    """
    native = arch == "x86_64"
    return (
        TRUTH_SCRIPT.replace("@BEGIN@", TRUTH_BEGIN)
        .replace("@END@", TRUTH_END)
        .replace("@MARKER@", marker)
        .replace("@SYMS@", "" if native else " swapper_pg_dir")
        .replace("@EXTRA@", extra + ("" if native else EXTRA_TRUTH))
    )


def cpio_archive(files: Sequence[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A gzip'd newc archive of (name, mode, data, rdev), with "." and every missing parent directory first."""
    dmode = stat.S_IFDIR | 0o755
    names = {n for n, *_ in files}
    dirs: list[str] = []
    for name, *_ in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs and d not in names:
                dirs.append(d)
    entries = [(".", dmode, b"", (0, 0))] + [(d, dmode, b"", (0, 0)) for d in dirs] + list(files)
    blob = b"".join(_cpio_entry(n, m, data, ino=i + 1, rdev=r) for i, (n, m, data, r) in enumerate(entries))
    blob += _cpio_entry("TRAILER!!!", 0, ino=0)
    blob += b"\0" * (-len(blob) % 512)
    return gzip.compress(blob, mtime=0)


def _fill_lines(random_mib: int, text_mib: int) -> str:
    """/init lines that fill tmpfs with random bytes and decimal text (empty when both are 0)."""
    lines = ""
    if random_mib > 0:
        lines += f"dd if=/dev/urandom of=/tmp/random bs=1048576 count={random_mib} 2>/dev/null\n"
    if text_mib > 0:
        lines += f"seq 1 2000000000 | head -c {text_mib * 1048576} > /tmp/text\n"
    return lines


def build_initramfs(
    kernel: KernelArtifacts,
    out_path: Path,
    *,
    marker: str,
    load_fw_cfg: bool = True,
    busybox: Path | None = None,
    busy: bool = False,
    panic_cpu: int | None = None,
    random_mib: int = 0,
    text_mib: int = 0,
) -> Path:
    """Write a gzip'd newc cpio: busybox-static, qemu_fw_cfg.ko and an /init that prints the ground truth.

    The /init prints ``KDFIX:key=value`` lines between TRUTH_BEGIN/END markers, writes ``marker`` into the kernel
    log via /dev/kmsg, prints READY and sleeps. /dev/console is a device node in the archive, so the script has a
    console before devtmpfs is mounted. ``busybox``: default busybox_binary(kernel.arch). Non-x86_64 guests also
    print EXTRA_TRUTH and kallsyms swapper_pg_dir. ``busy``: before the truth, fill a tmpfs file and start a
    process holding anonymous memory; ``panic_cpu``: after READY, panic through sysrq ``c`` on that CPU.
    ``random_mib``/``text_mib`` (benchmarks): before READY, fill that much of the guest's page cache (tmpfs files)
    with /dev/urandom bytes and with compressible decimal text, so that a large guest (TCG allocates lazily) has
    realistic pages to dump.
    """
    busybox = busybox or busybox_binary(kernel.arch)
    if not busybox.is_file():
        raise GuestError("busybox not found (apt-get install busybox-static)")
    script = (
        INIT_SCRIPT.replace("@PRELUDE@", INIT_PRELUDE)
        .replace("@TRUTH@", ground_truth_script(kernel.arch, marker))
        .replace("@READY@", READY)
        .replace("@MARKER@", marker)
        .replace("@VMCOREINFO@", "1" if load_fw_cfg else "0")
        .replace("@BUSY@", "1" if busy else "0")
        .replace("@PANIC_CPU@", "" if panic_cpu is None else str(panic_cpu))
        .replace("@FILL@", _fill_lines(int(random_mib), int(text_mib)))
    )
    d, f, c = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFCHR | 0o600
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", d, b"", (0, 0)),
        ("dev", d, b"", (0, 0)),
        ("dev/console", c, b"", (5, 1)),
        ("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)),
        ("proc", d, b"", (0, 0)),
        ("sys", d, b"", (0, 0)),
        ("tmp", d, b"", (0, 0)),
        ("bin/busybox", f | 0o755, busybox.read_bytes(), (0, 0)),
        ("init", f | 0o755, script.encode(), (0, 0)),
        ("qemu_fw_cfg.ko", f | 0o644, kernel.fw_cfg_ko.read_bytes(), (0, 0)),
    ]
    out_path.write_bytes(cpio_archive(entries))
    return out_path


# --------------------------------------------------------------------------------------------------------------
# ground truth


def _kcore_vmcoreinfo(notes: bytes) -> str:
    """The desc text of the VMCOREINFO note among /proc/kcore's notes (4-byte aligned in ELF32 and ELF64 cores)."""
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, _type = struct.unpack_from("<III", notes, at)
        name_at = at + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(notes):
            break
        if notes[name_at : name_at + namesz].rstrip(b"\0") == b"VMCOREINFO":
            return notes[desc_at : desc_at + descsz].decode(errors="replace")
        at = end
    raise GuestError("no VMCOREINFO note among the notes of /proc/kcore")


def _vmcoreinfo_number(text: str, key: str) -> int | None:
    """Value of a VMCOREINFO line ``key=value``: base auto-detected, except KERNELOFFSET and SYMBOL(...), bare hex
    (arch-kernels-and-introspection.md §1.1); a negative decimal becomes u64."""
    m = re.search(rf"^{re.escape(key)}=(\S+)$", text, re.M)
    if not m:
        return None
    v = m.group(1)
    bare_hex = key == "KERNELOFFSET" or key.startswith("SYMBOL(")
    return (int(v, 16) if bare_hex else int(v, 0)) & U64


@dataclass(frozen=True)
class GroundTruth:
    """What the running guest said about itself (root in /init). All addresses are ints; phys_base is u64.

    ``phys_base`` is what a correct kdump header's phys_base holds for the arch: x86_64 phys_base
    (phys-base-and-kaslr.md §1), aarch64 ``PHYS_OFFSET`` (arch-kernels-and-introspection.md §1.6), i386 0 (§2.2).
    aarch64 and i386 guests also give every /proc/iomem line and their own VMCOREINFO text (from /proc/kcore).
    Their Debian kernels lack KALLSYMS_ALL, so kallsyms gives only ``_stext`` (and ``_text`` when it equals it);
    ``init_uts_ns`` comes from the kernel's VMCOREINFO, and aarch64 ``_text`` is ``NUMBER(MODULES_END)`` (=
    KIMAGE_VADDR, the link address of ``_text``) + ``KERNELOFFSET`` (arch-kernels-and-introspection.md §1.1, §1.4).
    """

    phys_base: int
    kernel_code_start: int
    text_va: int
    stext_va: int
    init_uts_ns_va: int
    linux_banner_va: int | None  # None where kallsyms lacks data symbols (no KALLSYMS_ALL: aarch64, i386 kernels)
    vmcoreinfo_paddr: int
    vmcoreinfo_size: int
    osrelease: str
    marker: str
    uname: str
    fw_cfg: str = ""  # "loaded" / "absent" / "failed"
    cmdline: str = ""
    kernel_offset: int | None = None  # runtime _stext - link-time _stext; u64 (aarch64: VMCOREINFO KERNELOFFSET)
    arch: str = "x86_64"
    phys_offset: int | None = None  # aarch64 NUMBER(PHYS_OFFSET), u64
    kimage_voffset: int | None = None  # aarch64 NUMBER(kimage_voffset), u64
    swapper_pg_dir_va: int | None = None  # kallsyms swapper_pg_dir (aarch64, i386)
    vmcoreinfo_text: str = ""  # the kernel's VMCOREINFO desc as /proc/kcore gave it (aarch64, i386)
    iomem: tuple[str, ...] = ()  # /proc/iomem lines (aarch64, i386)

    def __post_init__(self) -> None:
        object.__setattr__(self, "iomem", tuple(self.iomem))  # JSON gives a list

    @property
    def phys_base_signed(self) -> int:
        return self.phys_base - (1 << 64) if self.phys_base >> 63 else self.phys_base

    def pa_of_kernel_va(self, va: int) -> int:
        """Physical address of a kernel-image VA: x86_64 phys-base-and-kaslr.md §1; aarch64 VA - kimage_voffset
        (arch-kernels-and-introspection.md §1.3); i386 VA - PAGE_OFFSET (§2.2)."""
        if self.arch == "aarch64":
            assert self.kimage_voffset is not None
            return (va - self.kimage_voffset) & U64
        if self.arch == "i386":
            return va - I386_PAGE_OFFSET
        return (va - START_KERNEL_MAP + self.phys_base) & U64

    def system_ram(self) -> list[tuple[int, int]]:
        """Top-level ``System RAM`` ranges of /proc/iomem as [start, end) (aarch64, i386 guests)."""
        out = []
        for line in self.iomem:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
            if m:
                out.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
        return out

    def vmcoreinfo_value(self, key: str) -> int | None:
        """A number from the guest's own VMCOREINFO text (see _vmcoreinfo_number)."""
        return _vmcoreinfo_number(self.vmcoreinfo_text, key)

    @classmethod
    def parse(cls, serial_text: str, *, link_stext: int | None = None, arch: str = "x86_64") -> GroundTruth:
        """Parse the ``KDFIX:key=value`` block of a serial log."""
        start = serial_text.find(TRUTH_BEGIN)
        end = serial_text.find(TRUTH_END, start + 1)
        if start < 0 or end < 0:
            raise GuestError("serial log has no complete ground-truth block")
        values: dict[str, list[str]] = {}
        for line in serial_text[start:end].splitlines():
            m = _TRUTH_RE.search(line)
            if m:
                values.setdefault(m.group(1), []).append(m.group(2).strip())

        def one(key: str) -> str:
            if key not in values:
                raise GuestError(f"ground truth lacks {key!r}")
            return values[key][0]

        code = re.match(r"([0-9a-f]+)-([0-9a-f]+) : Kernel code", one("iomem_code"))
        if not code:
            raise GuestError(f"bad iomem line {one('iomem_code')!r}")
        syms: dict[str, int] = {}
        for line in values.get("kallsyms", []):
            parts = line.split()
            if len(parts) >= 3:
                syms[parts[2]] = int(parts[0], 16)
        needed = ("_text", "_stext", "init_uts_ns", "linux_banner") if arch == "x86_64" else ("_stext",)
        for need in needed:
            if not syms.get(need):
                raise GuestError(f"kallsyms lacks {need} (or shows 0: kptr_restrict?)")
        vmci = one("vmcoreinfo").split()
        code_start = int(code.group(1), 16)
        extra: dict[str, Any] = {}
        kernel_offset = (syms["_stext"] - link_stext) & U64 if link_stext is not None else None
        if arch == "x86_64":
            phys_base = (code_start - (syms["_text"] - START_KERNEL_MAP)) & U64
        else:
            text = _kcore_vmcoreinfo(base64.b64decode(one("kcore_notes")))

            def number(key: str) -> int:
                v = _vmcoreinfo_number(text, key)
                if v is None:
                    raise GuestError(f"{arch} VMCOREINFO (from /proc/kcore) lacks {key}")
                return v

            if number("SYMBOL(_stext)") != syms["_stext"]:
                raise GuestError("VMCOREINFO SYMBOL(_stext) differs from kallsyms _stext")
            syms.setdefault("init_uts_ns", number("SYMBOL(init_uts_ns)"))
            extra = {
                "arch": arch,
                "vmcoreinfo_text": text,
                "iomem": tuple(values.get("iomem", [])),
                "swapper_pg_dir_va": syms.get("swapper_pg_dir") or number("SYMBOL(swapper_pg_dir)"),
            }
            phys_base = 0
            if arch == "aarch64":
                phys_base, kernel_offset = number("NUMBER(PHYS_OFFSET)"), number("KERNELOFFSET")
                syms.setdefault("_text", (number("NUMBER(MODULES_END)") + kernel_offset) & U64)
                extra |= {"phys_offset": phys_base, "kimage_voffset": number("NUMBER(kimage_voffset)")}
            else:
                syms.setdefault("_text", syms["_stext"])
        return cls(
            phys_base=phys_base,
            kernel_code_start=code_start,
            text_va=syms["_text"],
            stext_va=syms["_stext"],
            init_uts_ns_va=syms["init_uts_ns"],
            linux_banner_va=syms.get("linux_banner"),
            vmcoreinfo_paddr=int(vmci[0], 16),
            vmcoreinfo_size=int(vmci[1], 16),
            osrelease=one("osrelease"),
            marker=one("marker"),
            uname=one("uname"),
            fw_cfg=values.get("fw_cfg", [""])[0],
            cmdline=values.get("cmdline", [""])[0],
            kernel_offset=kernel_offset,
            **extra,
        )


# --------------------------------------------------------------------------------------------------------------
# QEMU + QMP


@functools.cache
def qemu_version(qemu: str | None = None, arch: str = "x86_64") -> str:
    """e.g. '7.2.22' (from ``qemu-system-<arch> --version``); ``qemu``: "7.2"/"10.0" (qemu_versions.py), None = PATH."""
    if qemu is not None:
        return _qemu_install(qemu, arch).version
    out = _run([guest_arch(arch).qemu, "--version"], timeout=30)
    m = re.search(r"version (\d+\.\d+\.\d+)", out)
    if not m:
        raise GuestError(f"cannot parse QEMU version: {out!r}")
    return m.group(1)


def _qemu_install(qemu: str, arch: str = "x86_64") -> Any:
    from tests.oracle.qemu_versions import qemu_install  # imports this module

    return qemu_install(qemu) if arch == "x86_64" else qemu_install(qemu, arch)


def _qemu_prefix(qemu: str | None, arch: str = "x86_64") -> tuple[list[str], dict[str, str] | None]:
    """argv[0] (+ -L firmware dirs) and environment of the QEMU build ``qemu`` (None: qemu-system-<arch> on PATH)."""
    if qemu is None:
        return [guest_arch(arch).qemu], None
    inst = _qemu_install(qemu, arch)
    return inst.argv_prefix, inst.environ()


class Qmp:
    """Minimal QMP client over a unix socket (JSON lines; events are collected, not dropped)."""

    def __init__(self, path: Path, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"QMP socket {path} did not come up") from None
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.greeting = self._read()
        self.execute("qmp_capabilities")

    def _read(self, timeout: float = 600) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        line = self.file.readline()
        if not line:
            raise GuestError("QMP connection closed")
        return json.loads(line)

    def execute(self, cmd: str, timeout: float = 600, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            resp = self._read(timeout)
            if "event" in resp:
                self.events.append(resp)
                continue
            if "error" in resp:
                raise GuestError(f"QMP {cmd} failed: {resp['error']}")
            return resp.get("return")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


RAW_FORMAT = "kdump-raw-zlib"
RAW_NAME = f"vmcore.{RAW_FORMAT}"


def _dump_formats(qmp: Qmp) -> list[str]:
    return list(qmp.execute("query-dump-guest-memory-capability").get("formats", []))


def _dump(qmp: Qmp, path: Path, fmt: str) -> float:
    t0 = time.monotonic()
    args: dict[str, Any] = {"paging": False, "protocol": f"file:{path.resolve()}", "format": fmt}
    qmp.execute("dump-guest-memory", **args)
    status = qmp.execute("query-dump")
    if status.get("status") != "completed":
        raise GuestError(f"dump {fmt} -> {path}: status {status}")
    return time.monotonic() - t0


@contextlib.contextmanager
def _qemu(
    argv: list[str], workdir: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Qmp]]:
    # unix socket paths are limited to 107 bytes: keep the socket in a short private dir, not in workdir
    sockdir = Path(tempfile.mkdtemp(prefix="kdfix-qmp-"))
    sock = sockdir / "qmp.sock"
    full = [*argv, "-qmp", f"unix:{sock},server=on,wait=off"]
    (workdir / "qemu.cmd").write_text(" ".join(full) + "\n")
    stderr = open(workdir / "qemu.stderr", "wb")  # noqa: SIM115
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=workdir, env=env)
    qmp: Qmp | None = None
    try:
        qmp = Qmp(sock)
        yield proc, qmp
    finally:
        if qmp is not None:
            with contextlib.suppress(GuestError, OSError):
                qmp.execute("quit", timeout=10)
            qmp.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
        shutil.rmtree(sockdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Linux guest


Firmware = Literal["seabios", "ovmf", "none"]


@dataclass(frozen=True)
class GuestConfig:
    """One guest setup. OVMF guests get at least 256 MiB (tools-and-oracles.md §5); ``vga`` adds -device VGA,
    whose 16 MiB VRAM at 0xfd000000 appears in the dump as in the reference measurement (qemu-dumps.md §5).

    ``arch`` picks the recipe in GUEST_ARCHES; ``memory_mib`` 0 means the arch's default (x86_64 128, aarch64 384,
    i386 256). aarch64 boots its kernel directly (firmware "none") and has no VGA. Build non-x86_64 configs with
    :meth:`of`.
    """

    firmware: Firmware
    kaslr: bool
    vmcoreinfo: bool
    memory_mib: int = 0
    cpus: int = 2
    vga: bool = True
    qemu: str | None = None  # "7.2" / "10.0" (qemu_versions.py); None: qemu-system-<arch> on PATH (7.2)
    arch: str = "x86_64"
    busy: bool = False  # touch page cache (tmpfs file) and anonymous memory before READY
    panic: bool = False  # after READY, sysrq-c on the last vCPU; dumped while the kernel spins in panic()

    @classmethod
    def of(cls, arch: str, *, kaslr: bool, vmcoreinfo: bool, **kwargs: Any) -> GuestConfig:
        """A config for ``arch`` with its default firmware (and no VGA on aarch64)."""
        ga = guest_arch(arch)
        kwargs.setdefault("vga", arch != "aarch64")
        return cls(kwargs.pop("firmware", ga.firmwares[0]), kaslr, vmcoreinfo, arch=arch, **kwargs)

    def __post_init__(self) -> None:
        ga = guest_arch(self.arch)
        if self.firmware not in ga.firmwares:
            raise ValueError(f"firmware for {self.arch} must be one of {ga.firmwares}, not {self.firmware!r}")
        if self.qemu not in (None, "7.2", "10.0"):
            raise ValueError(f"qemu must be None, 7.2 or 10.0, not {self.qemu!r}")
        if self.arch == "aarch64" and self.vga:
            raise ValueError("aarch64 guests have no VGA (vga=False)")
        if self.memory_mib == 0:
            object.__setattr__(self, "memory_mib", ga.memory_mib)
        if self.firmware == "ovmf" and self.memory_mib < 256:
            object.__setattr__(self, "memory_mib", 256)

    @property
    def guest_arch(self) -> GuestArch:
        return guest_arch(self.arch)

    @property
    def name(self) -> str:
        if self.arch != "x86_64":  # x86_64 names (cache keys) predate arch
            parts = [self.arch, "kaslr" if self.kaslr else "nokaslr"]
            if self.vmcoreinfo:
                parts.append("vmcoreinfo")
            parts += [f"{self.memory_mib}m", f"{self.cpus}c"]
            if self.vga:
                parts.append("vga")
            parts += [flag for flag in ("busy", "panic") if getattr(self, flag)]
            return "-".join(parts)
        parts = [self.firmware, "kaslr" if self.kaslr else "nokaslr"]
        if self.vmcoreinfo:
            parts.append("vmcoreinfo")
        parts += [f"{self.memory_mib}m", f"{self.cpus}c"]
        if not self.vga:
            parts.append("novga")
        parts += [flag for flag in ("busy", "panic") if getattr(self, flag)]
        return "-".join(parts)


@dataclass(frozen=True)
class GuestDumps:
    """Dumps of one stopped guest: QEMU ELF (paging=false) and flattened kdump-zlib, plus what the guest said.

    ``kdump_raw_zlib``: QEMU's kdump-raw-zlib of the same stopped guest when the build offers it (>= 8.2), else None.
    """

    config: GuestConfig
    elf: Path
    kdump_zlib: Path
    truth: GroundTruth
    serial_log: Path
    qemu_version: str
    kernel_release: str = ""
    boot_seconds: float = 0.0
    dump_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    qemu_command: str = ""
    kdump_raw_zlib: Path | None = None


def _guest_argv(config: GuestConfig, kernel: KernelArtifacts, initrd: Path, serial: Path, work: Path) -> list[str]:
    ga = config.guest_arch
    append = f"console={ga.console} quiet panic={0 if config.panic else -1}" + ("" if config.kaslr else " nokaslr")
    argv = [
        *_qemu_prefix(config.qemu, config.arch)[0],
        *ga.machine,
        "-accel",
        "tcg",
        "-m",
        str(config.memory_mib),
        "-smp",
        str(config.cpus),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel.vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        append,
        "-serial",
        f"file:{serial}",
    ]
    if config.vga:
        argv += ["-device", "VGA"]
    if config.vmcoreinfo:
        argv += ["-device", "vmcoreinfo"]
    if config.firmware == "ovmf":
        vars_copy = work / "OVMF_VARS_4M.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        vars_copy.chmod(0o600)
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]
    return argv


PANIC_END = "---[ end Kernel panic"


def _wait_ready(
    proc: subprocess.Popen[bytes], serial: Path, timeout: float, needle: str = READY, fail_on: Sequence[str] = ()
) -> float:
    t0 = time.monotonic()
    while True:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        if needle in text:
            return time.monotonic() - t0
        failed = [f for f in fail_on if f in text]
        if failed:
            raise GuestError(f"the guest printed {failed[0]!r}; serial tail:\n{text[-3000:]}")
        if proc.poll() is not None:
            raise GuestError(f"QEMU exited ({proc.returncode}) before ready; serial tail:\n{text[-3000:]}")
        if time.monotonic() - t0 > timeout:
            raise GuestError(f"guest not ready after {timeout:.0f}s; serial tail:\n{text[-3000:]}")
        time.sleep(0.2)


BOOT_ATTEMPTS = 3  # for a GuestArch.boot_retry panic


@dataclass(frozen=True)
class GuestRun:
    """One boot of :func:`run_and_dump`: seconds until each awaited line, and the dumps taken then."""

    seconds: dict[str, float]  # awaited serial line -> seconds since boot; dump format -> seconds to dump
    dumps: dict[str, Path]  # format -> file


def run_and_dump(
    argv: list[str],
    out_dir: Path,
    serial: Path,
    *,
    wait_for: Sequence[str],
    timeout: float,
    env: dict[str, str] | None = None,
    fail_on: Sequence[str] = (),
    settle: float = 0.0,
    formats: Sequence[str] = ("elf", "kdump-zlib"),
    raw: bool = False,
) -> GuestRun:
    """The boot hook of every suite guest: start QEMU (``argv``, QMP added), wait for each ``wait_for`` line of the
    serial log in turn (a ``fail_on`` line, QEMU exiting or ``timeout`` raise GuestError), wait ``settle`` seconds,
    stop the vCPUs and dump ``formats`` (plus kdump-raw-zlib when ``raw`` and the build offers it) into
    ``out_dir``/vmcore.<format> from the same stopped guest, then quit."""
    seconds: dict[str, float] = {}
    dumps: dict[str, Path] = {}
    with _qemu(argv, out_dir, env) as (proc, qmp):
        for needle in wait_for:
            seconds[needle] = _wait_ready(proc, serial, timeout, needle, fail_on)
        time.sleep(settle)
        qmp.execute("stop")
        time.sleep(0.1)
        wanted = list(formats) + ([RAW_FORMAT] if raw and RAW_FORMAT in _dump_formats(qmp) else [])
        for fmt in wanted:
            dumps[fmt] = out_dir / f"vmcore.{fmt}"
            seconds[fmt] = _dump(qmp, dumps[fmt], fmt)
    return GuestRun(seconds, dumps)


def boot_and_dump(config: GuestConfig, out_dir: Path, *, timeout: float | None = None) -> GuestDumps:
    """Boot ``config``, wait for READY, stop the vCPUs, dump ELF then kdump-zlib from the same stopped guest, quit.

    Writes vmcore.elf, vmcore.kdump-zlib, serial.log, qemu.cmd, qemu.stderr and guest.json into ``out_dir``; also
    vmcore.kdump-raw-zlib when the QEMU build offers that format (>= 8.2; the file: protocol is seekable).
    ``timeout`` (seconds to READY) defaults to BOOT_TIMEOUT_S scaled by the arch's TCG speed. A boot that panics
    with the arch's known transient message (i386: "IO-APIC + timer doesn't work") is retried.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ga = config.guest_arch
    if timeout is None:
        timeout = BOOT_TIMEOUT_S * ga.boot_timeout_factor
    kernel = kernel_artifacts(config.arch)
    serial = out_dir / "serial.log"
    elf, kdump = out_dir / "vmcore.elf", out_dir / "vmcore.kdump-zlib"
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        marker = f"KDFIX-MARKER-{secrets.token_hex(8)}"
        panic_cpu = config.cpus - 1 if config.panic else None
        initrd = build_initramfs(kernel, out_dir / "initramfs.cpio.gz", marker=marker, load_fw_cfg=config.vmcoreinfo,
                                 busy=config.busy, panic_cpu=panic_cpu)  # fmt: skip
        serial.unlink(missing_ok=True)
        argv = _guest_argv(config, kernel, initrd, serial, out_dir)
        try:
            # panic=0: the kernel stays in panic()'s delay loop, the other CPUs stopped
            run = run_and_dump(argv, out_dir, serial, wait_for=[READY, PANIC_END] if config.panic else [READY],
                               timeout=timeout, env=_qemu_prefix(config.qemu, config.arch)[1],
                               settle=0.5 if config.panic else 0.0, raw=True)  # fmt: skip
            break
        except GuestError:
            log = serial.read_text(errors="replace") if serial.exists() else ""
            if not ga.boot_retry or ga.boot_retry not in log or attempt == BOOT_ATTEMPTS:
                raise
    truth = GroundTruth.parse(serial.read_text(errors="replace"), link_stext=kernel.link_stext(), arch=config.arch)
    if truth.marker != marker:
        raise GuestError(f"marker mismatch: guest printed {truth.marker!r}, expected {marker!r}")
    if config.vmcoreinfo and truth.fw_cfg != "loaded":
        raise GuestError(f"qemu_fw_cfg.ko did not load ({truth.fw_cfg}); see {serial}")
    version = qemu_version(config.qemu, config.arch)
    dumps = GuestDumps(
        config=config,
        elf=elf,
        kdump_zlib=kdump,
        truth=truth,
        serial_log=serial,
        qemu_version=version,
        kernel_release=kernel.release,
        boot_seconds=round(run.seconds[READY], 2),
        dump_seconds={k: round(run.seconds[k], 2) for k in run.dumps},
        qemu_command=" ".join(argv).replace(str(out_dir), "$OUT"),
        kdump_raw_zlib=run.dumps.get(RAW_FORMAT),
    )
    _write_meta(dumps, out_dir)
    return dumps


def stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _write_meta(d: GuestDumps, out_dir: Path) -> None:
    meta = {
        "config": dataclasses.asdict(d.config),
        "truth": dataclasses.asdict(d.truth),
        "qemu_version": d.qemu_version,
        "kernel_release": d.kernel_release,
        "boot_seconds": d.boot_seconds,
        "dump_seconds": d.dump_seconds,
        "qemu_command": d.qemu_command,
        "stamps": {p.name: stamp(p) for p in (d.elf, d.kdump_zlib, d.kdump_raw_zlib) if p is not None},
    }
    (out_dir / "guest.json").write_text(json.dumps(meta, indent=2) + "\n")


def _load_meta(dir_: Path) -> GuestDumps | None:
    """Load a cached guest dir; None if incomplete or a dump file changed since it was written."""
    try:
        meta = json.loads((dir_ / "guest.json").read_text())
    except (OSError, ValueError):
        return None
    elf, kdump = dir_ / "vmcore.elf", dir_ / "vmcore.kdump-zlib"
    try:
        if any(stamp(dir_ / n) != s for n, s in meta["stamps"].items()):
            return None
    except OSError:
        return None
    return GuestDumps(
        config=GuestConfig(**meta["config"]),
        elf=elf,
        kdump_zlib=kdump,
        truth=GroundTruth(**meta["truth"]),
        serial_log=dir_ / "serial.log",
        qemu_version=meta["qemu_version"],
        kernel_release=meta["kernel_release"],
        boot_seconds=meta["boot_seconds"],
        dump_seconds=meta["dump_seconds"],
        qemu_command=meta["qemu_command"],
        kdump_raw_zlib=dir_ / RAW_NAME if RAW_NAME in meta["stamps"] else None,
    )


def cached_entry(key: str, produce: Any, load: Any) -> Any:
    """Return load(cache_dir()/dumps/key), producing it first (into a temp dir, renamed atomically) if needed."""
    root = cache_dir() / "dumps"
    root.mkdir(exist_ok=True)
    final = root / key
    with _locked(f"dumps-{hashlib.sha1(key.encode()).hexdigest()[:16]}"):
        hit = load(final)
        if hit is not None:
            return hit
        if final.exists():  # stale or tampered: rebuild
            _rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        try:
            produce(work)
            os.rename(work, final)
        except BaseException:
            _rmtree(work)
            raise
        hit = load(final)
        if hit is None:
            raise GuestError(f"cache entry {final} unreadable right after creation")
        return hit


def cached_guest_dumps(config: GuestConfig) -> GuestDumps:
    """boot_and_dump(config) cached under cache_dir()/dumps/<qemu version>-<kernel release>-<config name>.

    The returned paths live in the cache: copy before modifying. A cache entry whose dump files changed
    (size or mtime) is discarded and rebuilt.
    """
    key = f"{qemu_version(config.qemu, config.arch)}-{kernel_artifacts(config.arch).release}-{config.name}"
    return cached_entry(key, lambda work: boot_and_dump(config, work), _load_meta)


# --------------------------------------------------------------------------------------------------------------
# firmware-only guest


@dataclass(frozen=True)
class FirmwareDumps:
    """Dumps of a guest stopped at reset (-S): no OS, real-mode vCPUs (qemu-dumps.md §3, tools-and-oracles.md §5)."""

    elf: Path
    kdump_zlib: Path
    qemu_version: str
    memory_mib: int
    vmcoreinfo_device: bool
    qemu_command: str
    qmp_commands: tuple[str, ...]
    kdump_raw_zlib: Path | None = None  # when the QEMU build offers kdump-raw-zlib (>= 8.2)


def _fw_qmp(path: Path, fmt: str) -> str:
    return json.dumps(
        {"execute": "dump-guest-memory", "arguments": {"paging": False, "protocol": f"file:{path}", "format": fmt}}
    )


def _migrate_to_file(qmp: Qmp, path: Path, timeout: float = 60) -> None:
    qmp.execute("migrate", uri=f"exec:cat > {path}")
    _wait_migration(qmp, timeout)


def _wait_migration(qmp: Qmp, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = qmp.execute("query-migrate").get("status")
        if status == "completed":
            return
        if status == "failed" or time.monotonic() > deadline:
            raise GuestError(f"migration did not complete: {status}")
        time.sleep(0.05)


def _patch_vmcoreinfo_state(stream: bytes, paddr: int, size: int) -> bytes:
    """Set the vmcoreinfo device state in a QEMU migration stream as the guest driver would (qemu-dumps.md §7).

    Section "vmcoreinfo" (version 1): has_vmcoreinfo (u8), host_format, guest_format (be16), size (be32),
    paddr (be64), then the section footer 0x7e. Checked byte for byte against the reset state before patching.
    """
    at = stream.find(b"\x0avmcoreinfo")
    if at < 0 or stream.find(b"\x0avmcoreinfo", at + 1) >= 0:
        raise GuestError("migration stream: no unique vmcoreinfo section")
    i = at + 11 + 8  # idstr, instance_id, version_id
    reset = b"\x00" + struct.pack(">HHIQ", 1, 0, 0, 0)
    if stream[i : i + 17] != reset or stream[i + 17] != 0x7E:
        raise GuestError(f"migration stream: unexpected vmcoreinfo state {stream[i : i + 18].hex()}")
    return stream[:i] + b"\x01" + struct.pack(">HHIQ", 1, 1, size, paddr) + stream[i + 17 :]


def firmware_only_dumps(
    out_dir: Path,
    memory_mib: int = 16,
    *,
    vmcoreinfo_device: bool = False,
    cpus: int = 2,
    guest_note: bytes | None = None,
    note_paddr: int = 0x100000,
    qemu: str | None = None,
) -> FirmwareDumps:
    """Start q35 with -S (vCPUs at reset, no kernel) and dump ELF + kdump-zlib into ``out_dir``.

    ``guest_note`` (implies the vmcoreinfo device): an ELF note buffer (e.g. a real kernel's VMCOREINFO note) is
    put at ``note_paddr`` with ``-device loader`` and registered as if the guest's qemu_fw_cfg driver had done it:
    the stopped VM is migrated to a file, the device state is patched there (_patch_vmcoreinfo_state), and a
    second QEMU started with ``-incoming`` writes the dumps. No guest code runs at any point, so the vCPUs stay in
    real mode: EM_386 notes, and QEMU does not parse NUMBER(phys_base) (header phys_base stays 0).
    ``qemu``: "7.2"/"10.0" (qemu_versions.py), None = qemu-system-x86_64 on PATH. A build that offers
    kdump-raw-zlib (>= 8.2) also writes vmcore.kdump-raw-zlib.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix, env = _qemu_prefix(qemu)
    argv = [*prefix, "-machine", "q35", "-accel", "tcg", "-m", str(memory_mib), "-smp", str(cpus)]
    argv += ["-S", "-nographic", "-nodefaults"]
    if vmcoreinfo_device or guest_note is not None:
        argv += ["-device", "vmcoreinfo"]
    elf, kdump = out_dir / "vmcore.elf", out_dir / "vmcore.kdump-zlib"
    qmp_cmds = ['{"execute": "qmp_capabilities"}']
    shown = ""
    if guest_note is not None:
        note_file, state, patched = out_dir / "guest-note.bin", out_dir / "state", out_dir / "state.patched"
        note_file.write_bytes(guest_note)
        first = [*argv, "-device", f"loader,file={note_file},addr={note_paddr:#x},force-raw=on"]
        with _qemu(first, out_dir, env) as (_proc, qmp):
            _migrate_to_file(qmp, state)
        patched.write_bytes(_patch_vmcoreinfo_state(state.read_bytes(), note_paddr, len(guest_note)))
        shown = " ".join(first).replace(str(out_dir), "$OUT") + " -qmp unix:SOCK,server=on,wait=off"
        shown += " ; QMP migrate exec:cat > $OUT/state ; patch the vmcoreinfo section ; "
        argv += ["-incoming", f"exec:cat {patched}"]
        qmp_cmds.append('{"execute": "migrate", "arguments": {"uri": "exec:cat > STATE"}}')
    raw: Path | None = None
    with _qemu(argv, out_dir, env) as (_proc, qmp):
        if guest_note is not None:
            _wait_migration(qmp, 60)
        _dump(qmp, elf, "elf")
        _dump(qmp, kdump, "kdump-zlib")
        if RAW_FORMAT in _dump_formats(qmp):
            raw = out_dir / RAW_NAME
            _dump(qmp, raw, RAW_FORMAT)
    shown += " ".join(argv).replace(str(out_dir), "$OUT") + " -qmp unix:SOCK,server=on,wait=off"
    qmp_cmds += [_fw_qmp(Path("ELF"), "elf"), _fw_qmp(Path("KDUMP"), "kdump-zlib")]
    if raw is not None:
        qmp_cmds.append(_fw_qmp(Path("RAW"), RAW_FORMAT))
    vmci = "-device vmcoreinfo" in argv
    return FirmwareDumps(elf, kdump, qemu_version(qemu), memory_mib, vmci, shown, tuple(qmp_cmds), raw)


def cached_firmware_only_dumps(
    memory_mib: int = 16, *, vmcoreinfo_device: bool = False, qemu: str | None = None
) -> FirmwareDumps:
    """firmware_only_dumps cached under cache_dir()/dumps/<qemu version>-firmware-<mem>m[-vmcoreinfo]."""
    key = f"{qemu_version(qemu)}-firmware-{memory_mib}m{'-vmcoreinfo' if vmcoreinfo_device else ''}"

    def produce(work: Path) -> None:
        d = firmware_only_dumps(work, memory_mib, vmcoreinfo_device=vmcoreinfo_device, qemu=qemu)
        files = [p for p in (d.elf, d.kdump_zlib, d.kdump_raw_zlib) if p is not None]
        meta = dataclasses.asdict(d) | {"elf": d.elf.name, "kdump_zlib": d.kdump_zlib.name}
        meta["kdump_raw_zlib"] = d.kdump_raw_zlib.name if d.kdump_raw_zlib is not None else None
        meta["stamps"] = {p.name: stamp(p) for p in files}
        (work / "firmware.json").write_text(json.dumps(meta, indent=2) + "\n")

    def load(dir_: Path) -> FirmwareDumps | None:
        try:
            meta = json.loads((dir_ / "firmware.json").read_text())
            if any(stamp(dir_ / n) != s for n, s in meta.pop("stamps").items()):
                return None
        except (OSError, ValueError, KeyError):
            return None
        meta["elf"], meta["kdump_zlib"] = dir_ / meta["elf"], dir_ / meta["kdump_zlib"]
        if meta.get("kdump_raw_zlib"):
            meta["kdump_raw_zlib"] = dir_ / meta["kdump_raw_zlib"]
        meta["qmp_commands"] = tuple(meta["qmp_commands"])
        return FirmwareDumps(**meta)

    return cached_entry(key, produce, load)
