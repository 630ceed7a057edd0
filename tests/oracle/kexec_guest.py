"""A guest dumped while its kdump capture kernel runs: two kernels in one dump (the real case of issue 13).

The first kernel boots with ``crashkernel=256M``, prints its ground truth, loads a capture kernel with kexec-tools
(``kexec -p``), then panics on a chosen vCPU (``taskset`` + sysrq ``c``). The capture kernel boots inside the
reservation on that vCPU (the others stay parked in the first kernel), prints its own ground truth, a second marker
and the head of its ``/proc/vmcore`` (ELF header, program headers and notes: the crashed kernel as Linux itself
presents it). The host then dumps ELF and kdump-zlib over QMP.

Reference: arch-kernels-and-introspection.md §3 (reservation, kexec -p, the ELF core header, /proc/vmcore);
phys-base-and-kaslr.md §3 H. Built on tests/oracle/guest.py (kernel, initramfs records, QEMU/QMP, cache).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import re
import secrets
import shutil
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.oracle import guest as _g
from tests.oracle.guest import GroundTruth, GuestError

__all__ = [
    "CAPTURE_APPEND",
    "KEXEC_BINARY",
    "KexecConfig",
    "KexecDumps",
    "VmcoreHead",
    "boot_kexec_and_dump",
    "cached_kexec_dumps",
    "kexec_files",
]

KEXEC_BINARY = Path("/usr/sbin/kexec")  # Debian's kexec-tools (scripts/setup.sh installs it)
CAPTURE_APPEND = "console=ttyS0 irqpoll nr_cpus=1 reset_devices"  # Debian kdump-tools' additions (§3.2)
CAPTURE_READY = "KDFIX-CAPTURE-READY"
VMCORE_BEGIN, VMCORE_END = "KDFIX-VMCORE-BEGIN", "KDFIX-VMCORE-END"
VMCORE_HEAD_BYTES = 16384  # ELF header + phdrs + merged notes of /proc/vmcore fit well inside (checked on parse)
TIMEOUT_S = max(_g.BOOT_TIMEOUT_S, 240.0)

INIT_SCRIPT = r"""#!/bin/busybox sh
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
truth() {
    echo @BEGIN@
    echo "KDFIX:fw_cfg=$FW"
    echo "KDFIX:iomem_code=$(grep -m1 'Kernel code' /proc/iomem)"
    echo "KDFIX:iomem_crash=$(grep -m1 'Crash kernel' /proc/iomem)"
    for s in _text _stext init_uts_ns linux_banner; do
        echo "KDFIX:kallsyms=$(grep -m1 " $s\$" /proc/kallsyms)"
    done
    echo "KDFIX:vmcoreinfo=$(cat /sys/kernel/vmcoreinfo)"
    echo "KDFIX:osrelease=$(cat /proc/sys/kernel/osrelease)"
    echo "KDFIX:uname=$(uname -a)"
    echo "KDFIX:cmdline=$(cat /proc/cmdline)"
    echo "KDFIX:marker=$1"
    echo @END@
    echo "$1" > /dev/kmsg
}
if [ -e /proc/vmcore ]; then
    truth @MARKER2@
    echo @VMBEGIN@
    head -c @HEADBYTES@ /proc/vmcore | base64
    echo @VMEND@
    sync
    echo @CREADY@
else
    truth @MARKER@
    if kexec -p /vmlinuz --initrd=/capture.cpio.gz --append="@APPEND@"; then
        echo "KDFIX:kexec=loaded $(cat /sys/kernel/kexec_crash_loaded)"
    else
        echo "KDFIX:kexec=failed"
    fi
    sync
    taskset -c @CPU@ sh -c 'echo c > /proc/sysrq-trigger'
    echo "KDFIX:panic=returned"
fi
while true; do sleep 3600; done
"""


@dataclass(frozen=True)
class KexecConfig:
    """One two-kernel guest: which vCPU panics, and whether QEMU has ``-device vmcoreinfo``.

    With the device, the capture kernel also loads qemu_fw_cfg (it must not re-point the device: §3.7).
    """

    panic_cpu: int
    vmcoreinfo: bool
    memory_mib: int = 1024
    cpus: int = 2
    crashkernel: str = "256M"

    def __post_init__(self) -> None:
        if not 0 <= self.panic_cpu < self.cpus:
            raise ValueError(f"panic_cpu {self.panic_cpu} is not one of the {self.cpus} vCPUs")

    @property
    def name(self) -> str:
        dev = "-vmcoreinfo" if self.vmcoreinfo else ""
        return f"kexec-cpu{self.panic_cpu}{dev}-{self.memory_mib}m-{self.cpus}c-ck{self.crashkernel}"


@dataclass(frozen=True)
class VmcoreHead:
    """The start of the capture kernel's /proc/vmcore: what Linux presents as the crashed kernel (§3.5)."""

    raw: bytes

    def _phdrs(self) -> list[tuple[int, int, int, int, int]]:
        """(p_type, p_offset, p_paddr, p_filesz, p_vaddr) of each program header (Elf64, little-endian)."""
        if self.raw[:4] != b"\x7fELF" or self.raw[4] != 2:
            raise GuestError("/proc/vmcore head is not an Elf64 header")
        (phoff,) = struct.unpack_from("<Q", self.raw, 32)
        phentsize, phnum = struct.unpack_from("<HH", self.raw, 54)
        out = []
        for i in range(phnum):
            p_type, _flags, off, vaddr, paddr, filesz = struct.unpack_from("<IIQQQQ", self.raw, phoff + i * phentsize)
            out.append((p_type, off, paddr, filesz, vaddr))
        return out

    def notes(self) -> list[tuple[str, int, bytes]]:
        """(name, type, desc) of every note in the merged PT_NOTE."""
        found = [(off, size) for t, off, _pa, size, _va in self._phdrs() if t == 4]
        if len(found) != 1:
            raise GuestError(f"/proc/vmcore has {len(found)} PT_NOTEs, expected one merged PT_NOTE")
        off, size = found[0]
        if off + size > len(self.raw):
            raise GuestError(f"/proc/vmcore notes end at {off + size:#x}, beyond the {len(self.raw)} bytes captured")
        out, pos, end = [], off, off + size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", self.raw, pos)
            name_at = pos + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            name = self.raw[name_at : name_at + namesz].rstrip(b"\0").decode("ascii", "replace")
            out.append((name, ntype, self.raw[desc_at : desc_at + descsz]))
            pos = desc_at + (descsz + 3) // 4 * 4
        return out

    def prstatus(self) -> list[bytes]:
        """NT_PRSTATUS descs in CPU order (the crashed kernel's registers at panic, §3.4)."""
        return [d for n, t, d in self.notes() if n == "CORE" and t == 1]

    def vmcoreinfo(self) -> str:
        texts = [d for n, _t, d in self.notes() if n == "VMCOREINFO"]
        if len(texts) != 1:
            raise GuestError(f"/proc/vmcore has {len(texts)} VMCOREINFO notes")
        return texts[0].rstrip(b"\0").decode("ascii", "replace")

    def loads(self) -> list[tuple[int, int, int]]:
        """(p_paddr, p_filesz, p_vaddr) of each PT_LOAD."""
        return [(pa, size, va) for t, _off, pa, size, va in self._phdrs() if t == 1]


@dataclass(frozen=True)
class KexecDumps:
    """QEMU's ELF and kdump-zlib dumps of a guest whose capture kernel runs, plus both kernels' ground truth."""

    config: KexecConfig
    elf: Path
    kdump_zlib: Path
    first: GroundTruth  # the crashed kernel, as it described itself before the panic
    capture: GroundTruth  # the running capture kernel
    crash_region: tuple[int, int]  # the first kernel's "Crash kernel" resource [start, end]
    vmcore_head: VmcoreHead
    serial_log: Path
    qemu_version: str
    kernel_release: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    qemu_command: str = ""


# --------------------------------------------------------------------------------------------------------------
# initramfs


def kexec_files(binary: Path = KEXEC_BINARY) -> list[tuple[str, bytes]]:
    """(path in the initramfs, content) of ``kexec`` and every library ``ldd`` lists (Xen libraries included).

    Symlinks are resolved: each library is stored under the path the loader looks up.
    """
    if not binary.is_file():
        raise GuestError(f"{binary} not found (apt-get install kexec-tools; scripts/setup.sh does)")
    out = _g._run(["ldd", str(binary)], timeout=60)
    files = [("usr/sbin/kexec", binary.read_bytes())]
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if not m:
            continue
        lib = Path(m.group(1))
        files.append((str(lib).lstrip("/"), lib.resolve().read_bytes()))
    if not any(p.startswith(("lib64/ld-linux", "lib/ld-linux")) or "ld-linux" in p for p, _ in files):
        raise GuestError(f"ldd {binary} names no dynamic loader: {out[:500]}")
    return files


def _cpio(files: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """gzip'd newc archive of (name, mode, data, rdev), parent directories first."""
    dirs: list[str] = []
    for name, _m, _d, _r in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    dmode = stat.S_IFDIR | 0o755
    entries = [(".", dmode, b"", (0, 0))] + [(d, dmode, b"", (0, 0)) for d in dirs if d] + files
    blob = b"".join(_g._cpio_entry(n, m, data, ino=i + 1, rdev=r) for i, (n, m, data, r) in enumerate(entries))
    blob += _g._cpio_entry("TRAILER!!!", 0, ino=0)
    blob += b"\0" * (-len(blob) % 512)
    return gzip.compress(blob, mtime=0)


def _init_script(config: KexecConfig, marker: str, marker2: str) -> bytes:
    subst = {
        "@BEGIN@": _g.TRUTH_BEGIN,
        "@END@": _g.TRUTH_END,
        "@VMBEGIN@": VMCORE_BEGIN,
        "@VMEND@": VMCORE_END,
        "@CREADY@": CAPTURE_READY,
        "@HEADBYTES@": str(VMCORE_HEAD_BYTES),
        "@MARKER2@": marker2,
        "@MARKER@": marker,
        "@APPEND@": CAPTURE_APPEND,
        "@CPU@": str(config.panic_cpu),
        "@VMCOREINFO@": "1" if config.vmcoreinfo else "0",
    }
    script = INIT_SCRIPT
    for k, v in subst.items():
        script = script.replace(k, v)
    return script.encode()


def build_initramfs(config: KexecConfig, kernel: _g.KernelArtifacts, out_dir: Path, marker: str, marker2: str) -> Path:
    """The first kernel's initramfs: busybox, /init, qemu_fw_cfg.ko, kexec + libraries, /vmlinuz and the capture
    kernel's own small initramfs (busybox, the same /init, qemu_fw_cfg.ko) as /capture.cpio.gz."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.is_file():
        raise GuestError("busybox not found (apt-get install busybox-static)")
    f, c = stat.S_IFREG, stat.S_IFCHR | 0o600
    init = _init_script(config, marker, marker2)
    common: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("dev/console", c, b"", (5, 1)),
        ("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)),
        ("bin/busybox", f | 0o755, busybox.read_bytes(), (0, 0)),
        ("init", f | 0o755, init, (0, 0)),
        ("qemu_fw_cfg.ko", f | 0o644, kernel.fw_cfg_ko.read_bytes(), (0, 0)),
    ]
    for d in ("proc", "sys", "tmp"):
        common.append((f"{d}/.keep", f | 0o644, b"", (0, 0)))
    capture = _cpio(common)
    first = common + [(p, f | 0o755, data, (0, 0)) for p, data in kexec_files()]
    first += [("vmlinuz", f | 0o644, kernel.vmlinuz.read_bytes(), (0, 0))]
    first += [("capture.cpio.gz", f | 0o644, capture, (0, 0))]
    path = out_dir / "initramfs.cpio.gz"
    path.write_bytes(_cpio(first))
    return path


# --------------------------------------------------------------------------------------------------------------
# boot, panic, dump


def _argv(config: KexecConfig, kernel: _g.KernelArtifacts, initrd: Path, serial: Path) -> list[str]:
    append = f"console=ttyS0 quiet panic=-1 crashkernel={config.crashkernel}"
    argv = [_g.QEMU, "-machine", "q35", "-accel", "tcg", "-m", str(config.memory_mib), "-smp", str(config.cpus)]
    argv += ["-nodefaults", "-display", "none", "-no-reboot", "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd)]
    argv += ["-append", append, "-serial", f"file:{serial}"]
    if config.vmcoreinfo:
        argv += ["-device", "vmcoreinfo"]
    return argv


def _wait_for(proc: subprocess.Popen[bytes], serial: Path, needle: str, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        if needle in text:
            return time.monotonic() - t0
        if "KDFIX:kexec=failed" in text or "KDFIX:panic=returned" in text:
            raise GuestError(f"kexec -p or the panic did not work; serial tail:\n{text[-3000:]}")
        if proc.poll() is not None:
            raise GuestError(f"QEMU exited ({proc.returncode}) before {needle}; serial tail:\n{text[-3000:]}")
        if time.monotonic() - t0 > timeout:
            raise GuestError(f"no {needle} after {timeout:.0f}s; serial tail:\n{text[-3000:]}")
        time.sleep(0.25)


def _parse_serial(text: str, link_stext: int | None) -> tuple[GroundTruth, GroundTruth, tuple[int, int], bytes]:
    first_end = text.find(_g.TRUTH_END)
    if first_end < 0:
        raise GuestError("serial log has no first-kernel ground truth")
    first = GroundTruth.parse(text, link_stext=link_stext)
    capture = GroundTruth.parse(text[first_end + len(_g.TRUTH_END) :], link_stext=link_stext)
    m = re.search(r"KDFIX:iomem_crash=\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel", text[:first_end])
    if not m:
        raise GuestError("the first kernel shows no 'Crash kernel' resource in /proc/iomem")
    region = (int(m.group(1), 16), int(m.group(2), 16))
    b, e = text.find(VMCORE_BEGIN), text.find(VMCORE_END)
    if b < 0 or e < b:
        raise GuestError("serial log has no /proc/vmcore head")
    head = base64.b64decode("".join(text[b + len(VMCORE_BEGIN) : e].split()))
    return first, capture, region, head


def boot_kexec_and_dump(config: KexecConfig, out_dir: Path, *, timeout: float = TIMEOUT_S) -> KexecDumps:
    """Boot, load the capture kernel, panic on ``config.panic_cpu``, wait for the capture kernel, dump, quit.

    Writes vmcore.elf, vmcore.kdump-zlib, serial.log, qemu.cmd, qemu.stderr and kexec.json into ``out_dir``.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = _g.kernel_artifacts()
    marker = f"KDFIX-MARKER-{secrets.token_hex(8)}"
    marker2 = f"KDFIX-CAPTURE-MARKER-{secrets.token_hex(8)}"
    initrd = build_initramfs(config, kernel, out_dir, marker, marker2)
    serial = out_dir / "serial.log"
    argv = _argv(config, kernel, initrd, serial)
    elf, kdump = out_dir / "vmcore.elf", out_dir / "vmcore.kdump-zlib"
    with _g._qemu(argv, out_dir) as (proc, qmp):
        boot_s = _wait_for(proc, serial, CAPTURE_READY, timeout)
        qmp.execute("stop")
        time.sleep(0.1)
        secs = {"boot_to_capture": boot_s, "elf": _g._dump(qmp, elf, "elf")}
        secs["kdump-zlib"] = _g._dump(qmp, kdump, "kdump-zlib")
    first, capture, region, head = _parse_serial(serial.read_text(errors="replace"), kernel.link_stext())
    if (first.marker, capture.marker) != (marker, marker2):
        raise GuestError(f"markers {first.marker!r}/{capture.marker!r} differ from {marker!r}/{marker2!r}")
    if "elfcorehdr=" not in capture.cmdline:
        raise GuestError(f"the second kernel is no capture kernel: {capture.cmdline!r}")
    if config.vmcoreinfo and first.fw_cfg != "loaded":
        raise GuestError(f"qemu_fw_cfg.ko did not load in the first kernel ({first.fw_cfg}); see {serial}")
    (out_dir / "vmcore-head.bin").write_bytes(head)
    dumps = KexecDumps(
        config=config,
        elf=elf,
        kdump_zlib=kdump,
        first=first,
        capture=capture,
        crash_region=region,
        vmcore_head=VmcoreHead(head),
        serial_log=serial,
        qemu_version=_g.qemu_version(),
        kernel_release=kernel.release,
        seconds={k: round(v, 2) for k, v in secs.items()},
        qemu_command=" ".join(argv).replace(str(out_dir), "$OUT"),
    )
    _write_meta(dumps, out_dir)
    return dumps


def _write_meta(d: KexecDumps, out_dir: Path) -> None:
    meta = {
        "config": dataclasses.asdict(d.config),
        "first": dataclasses.asdict(d.first),
        "capture": dataclasses.asdict(d.capture),
        "crash_region": list(d.crash_region),
        "qemu_version": d.qemu_version,
        "kernel_release": d.kernel_release,
        "seconds": d.seconds,
        "qemu_command": d.qemu_command,
        "stamps": {p.name: _g._stamp(p) for p in (d.elf, d.kdump_zlib, out_dir / "vmcore-head.bin")},
    }
    (out_dir / "kexec.json").write_text(json.dumps(meta, indent=2) + "\n")


def _load_meta(dir_: Path) -> KexecDumps | None:
    try:
        meta = json.loads((dir_ / "kexec.json").read_text())
        if any(_g._stamp(dir_ / n) != s for n, s in meta["stamps"].items()):
            return None
        head = (dir_ / "vmcore-head.bin").read_bytes()
    except (OSError, ValueError, KeyError):
        return None
    start, end = meta["crash_region"]
    return KexecDumps(
        config=KexecConfig(**meta["config"]),
        elf=dir_ / "vmcore.elf",
        kdump_zlib=dir_ / "vmcore.kdump-zlib",
        first=GroundTruth(**meta["first"]),
        capture=GroundTruth(**meta["capture"]),
        crash_region=(start, end),
        vmcore_head=VmcoreHead(head),
        serial_log=dir_ / "serial.log",
        qemu_version=meta["qemu_version"],
        kernel_release=meta["kernel_release"],
        seconds=meta["seconds"],
        qemu_command=meta["qemu_command"],
    )


def cached_kexec_dumps(config: KexecConfig) -> KexecDumps:
    """boot_kexec_and_dump(config), cached under cache_dir()/dumps/<qemu>-<kernel release>-<config name>.

    Paths live in the cache (QEMU's files, mode 0400): copy before modifying.
    """
    key = f"{_g.qemu_version()}-{_g.kernel_artifacts().release}-{config.name}"
    return _g._cached(key, lambda work: boot_kexec_and_dump(config, work), _load_meta)  # type: ignore[no-any-return]
