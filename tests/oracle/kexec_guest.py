"""A guest dumped while its kdump capture kernel runs: two kernels in one dump (the real case of issue 13).

The first kernel boots with ``crashkernel=256M``, prints its ground truth, loads a capture kernel with kexec-tools
(``kexec -p``), then panics on a chosen vCPU (``taskset`` + sysrq ``c``). The capture kernel boots inside the
reservation on that vCPU (the others stay parked in the first kernel), prints its own ground truth, a second marker
and the head of its ``/proc/vmcore`` (ELF header, program headers and notes: the crashed kernel as Linux itself
presents it). The host then dumps ELF and kdump-zlib over QMP.

x86_64 (q35) and aarch64 (virt, cortex-a57: kexec-tools:arm64 and its libraries come from ``apt-get download``,
unpacked by tests/oracle/sysroot.py; arm64 passes elfcorehdr= in the device tree, not on the command line).

Reference: arch-kernels-and-introspection.md §3 (reservation, kexec -p, the ELF core header, /proc/vmcore);
phys-base-and-kaslr.md §3 H. Built on tests/oracle/guest.py (kernel, busybox, init prelude and ground truth,
initramfs archive, the run_and_dump boot hook, cache).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "capture_append",
    "kexec_files",
]

KEXEC_BINARY = Path("/usr/sbin/kexec")  # Debian's kexec-tools (scripts/setup.sh installs it)
CAPTURE_APPEND = "irqpoll nr_cpus=1 reset_devices"  # Debian kdump-tools' additions (§3.2), after console=
CAPTURE_READY = "KDFIX-CAPTURE-READY"
VMCORE_BEGIN, VMCORE_END = "KDFIX-VMCORE-BEGIN", "KDFIX-VMCORE-END"
VMCORE_HEAD_BYTES = 16384  # ELF header + phdrs + merged notes of /proc/vmcore fit well inside (checked on parse)
TIMEOUT_S = max(_g.BOOT_TIMEOUT_S, 240.0)  # x86_64; scaled by the arch's TCG speed (GuestArch.boot_timeout_factor)
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+=*")
FAILURES = ("KDFIX:kexec=failed", "KDFIX:panic=returned")

# after guest.INIT_PRELUDE; truth() is guest.ground_truth_script with the marker as $1
INIT_SCRIPT = r"""truth() {
@TRUTH@    echo "$1" > /dev/kmsg
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
    arch: str = "x86_64"

    def __post_init__(self) -> None:
        if not 0 <= self.panic_cpu < self.cpus:
            raise ValueError(f"panic_cpu {self.panic_cpu} is not one of the {self.cpus} vCPUs")
        _g.guest_arch(self.arch)

    @property
    def name(self) -> str:
        dev = "-vmcoreinfo" if self.vmcoreinfo else ""
        arch = "" if self.arch == "x86_64" else f"{self.arch}-"  # x86_64 names (cache keys) predate arch
        return f"{arch}kexec-cpu{self.panic_cpu}{dev}-{self.memory_mib}m-{self.cpus}c-ck{self.crashkernel}"


def capture_append(arch: str) -> str:
    """The capture kernel's command line additions (what ``kexec -p --append`` gets)."""
    return f"console={_g.guest_arch(arch).console} {CAPTURE_APPEND}"


@dataclass(frozen=True)
class VmcoreHead:
    """The start of the capture kernel's /proc/vmcore: what Linux presents as the crashed kernel (§3.5)."""

    raw: bytes

    @property
    def truncated(self) -> bool:
        """True when reading /proc/vmcore stopped short of VMCORE_HEAD_BYTES (measured on arm64 under TCG: the
        capture kernel oopses in copy_oldmem_page inside the VMCOREINFO note; the bytes before it are sound)."""
        return len(self.raw) < VMCORE_HEAD_BYTES

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
        if off + size > len(self.raw) and not self.truncated:
            raise GuestError(f"/proc/vmcore notes end at {off + size:#x}, beyond the {len(self.raw)} bytes captured")
        out, pos, end = [], off, min(off + size, len(self.raw))  # a truncated head ends inside the last note
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


def check_kernel_roles(result: Any, guest: KexecDumps, want: GroundTruth) -> dict[str, Any]:
    """What every architecture's two-kernel dump must detect (arch-kernels-and-introspection.md §3.3, §3.7): both
    roles with each kernel's own phys_base, PA(_text) and command line, the capture kernel inside the reservation
    the ELF core header's hole spans, the crashed kernel's crashkernel= of that size, and ``want``'s VMCOREINFO.
    Returns the kernels by role for the architecture's own checks."""
    assert result.kernels is not None
    roles = {k.role: k for k in result.kernels.kernels}
    assert sorted(roles) == ["crashed", "running"]
    assert roles["crashed"].phys_base == guest.first.phys_base
    assert roles["running"].phys_base == guest.capture.phys_base
    assert roles["crashed"].text_paddr == guest.first.kernel_code_start
    assert roles["running"].in_reservation is True and roles["crashed"].in_reservation is False
    lo, hi = guest.crash_region
    header = roles["crashed"].core_header
    assert header is not None and header.reservation() == (lo, hi + 1)
    # each kernel's command line from its own log, as /proc/cmdline showed it
    assert roles["crashed"].cmdline == guest.first.cmdline and roles["running"].cmdline == guest.capture.cmdline
    (ck,) = roles["crashed"].crashkernel
    assert ck.size == hi + 1 - lo
    assert result.vmcoreinfo is not None
    assert b"SYMBOL(_stext)=%x" % want.stext_va in result.vmcoreinfo
    return roles


def fix_for_role(guest: KexecDumps, out_dir: Path, role: str, want: GroundTruth) -> tuple[Any, Path, Path]:
    """``fix_dump --kernel role`` of the kdump-zlib dump into a flattened file, converted to a plain one; both
    checked to describe ``want`` (header phys_base, VMCOREINFO's _stext, one VMCOREINFO note). (result, flat,
    plain)."""
    import kdfix
    from kdfix.fix import fix_dump
    from kdfix.format.constants import NOTE_NAME_VMCOREINFO
    from kdfix.write.convert import convert

    flat = out_dir / "fixed.flat"
    result = fix_dump(guest.kdump_zlib, output=flat, kernel=role)
    assert result.status == "fixed", result.messages
    assert result.phys_base == f"{want.phys_base:#x}"
    assert result.detect["kernel"] == role
    plain = out_dir / "fixed.kdump"
    convert([flat], plain, flat=False)
    with kdfix.open_dump(plain) as fixed:
        assert fixed.sub_header.phys_base == want.phys_base
        assert fixed.vmcoreinfo is not None and fixed.vmcoreinfo.symbol("_stext") == want.stext_va
        assert [n.name for n in fixed.notes].count(NOTE_NAME_VMCOREINFO) == 1
    return result, flat, plain


def prstatus_notes(path: Path) -> list[bytes]:
    """The NT_PRSTATUS descriptors of a dump, in file order."""
    import kdfix
    from kdfix.format.constants import NOTE_NAME_CORE, NoteType

    with kdfix.open_dump(path) as dump:
        return [n.desc for n in dump.notes if n.name == NOTE_NAME_CORE and n.type == NoteType.NT_PRSTATUS]


# --------------------------------------------------------------------------------------------------------------
# initramfs


def kexec_files(arch: str = "x86_64", binary: Path = KEXEC_BINARY) -> list[tuple[str, bytes]]:
    """(path in the initramfs, content) of ``kexec`` and every library it loads (Xen libraries included).

    x86_64: the machine's kexec-tools and what ``ldd`` lists; other arches: kexec-tools:ARCH unpacked with its
    library closure (sysroot.package_tree), the libraries found by following DT_NEEDED with ``readelf``. Symlinks
    are resolved: each library is stored under the path the loader looks up.
    """
    if arch != "x86_64":
        return _foreign_kexec_files(arch)
    if not binary.is_file():
        raise GuestError(f"{binary} not found (apt-get install kexec-tools; scripts/setup.sh does)")
    out = _command(["ldd", str(binary)])
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


def _command(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise GuestError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1000:]}")
    return proc.stdout


def _foreign_kexec_files(arch: str) -> list[tuple[str, bytes]]:
    from tests.oracle.sysroot import ORACLE_ARCHES, package_tree

    root = package_tree(arch, "kexec-tools")
    triplet = ORACLE_ARCHES[arch][1]
    dirs = [Path("lib") / triplet, Path("usr/lib") / triplet, Path("lib")]
    binary = root / "sbin" / "kexec"
    interp = re.search(r"program interpreter: /(\S+)\]", _command(["readelf", "-l", str(binary)]))
    if interp is None:
        raise GuestError(f"{binary} names no program interpreter")
    files = {"usr/sbin/kexec": binary.read_bytes(), interp.group(1): (root / interp.group(1)).resolve().read_bytes()}
    todo = [binary]
    while todo:
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", _command(["readelf", "-d", str(todo.pop())])):
            found = next((d / lib for d in dirs if (root / d / lib).exists()), None)
            if found is None:
                raise GuestError(f"{lib} (needed by kexec) is not in {root}")
            if str(found) not in files and not any(k.endswith(f"/{lib}") for k in files):
                files[str(found)] = (root / found).resolve().read_bytes()
                todo.append((root / found).resolve())
    return list(files.items())


def _init_script(config: KexecConfig, marker: str, marker2: str) -> bytes:
    crash = """echo "KDFIX:iomem_crash=$(grep -m1 'Crash kernel' /proc/iomem)"\n"""
    truth = _g.ground_truth_script(config.arch, "$1", extra=crash)
    subst = {
        "@TRUTH@": "".join(f"    {line}\n" for line in truth.splitlines()),
        "@VMBEGIN@": VMCORE_BEGIN,
        "@VMEND@": VMCORE_END,
        "@CREADY@": CAPTURE_READY,
        "@HEADBYTES@": str(VMCORE_HEAD_BYTES),
        "@MARKER2@": marker2,
        "@MARKER@": marker,
        "@APPEND@": capture_append(config.arch),
        "@CPU@": str(config.panic_cpu),
    }
    script = _g.INIT_PRELUDE.replace("@VMCOREINFO@", "1" if config.vmcoreinfo else "0") + INIT_SCRIPT
    for k, v in subst.items():
        script = script.replace(k, v)
    return script.encode()


def build_initramfs(config: KexecConfig, kernel: _g.KernelArtifacts, out_dir: Path, marker: str, marker2: str) -> Path:
    """The first kernel's initramfs: busybox, /init, qemu_fw_cfg.ko, kexec + libraries, /vmlinuz and the capture
    kernel's own small initramfs (busybox, the same /init, qemu_fw_cfg.ko) as /capture.cpio.gz."""
    busybox = _g.busybox_binary(config.arch)
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
    capture = _g.cpio_archive(common)
    first = common + [(p, f | 0o755, data, (0, 0)) for p, data in kexec_files(config.arch)]
    first += [("vmlinuz", f | 0o644, kernel.vmlinuz.read_bytes(), (0, 0))]
    first += [("capture.cpio.gz", f | 0o644, capture, (0, 0))]
    path = out_dir / "initramfs.cpio.gz"
    path.write_bytes(_g.cpio_archive(first))
    return path


# --------------------------------------------------------------------------------------------------------------
# boot, panic, dump


def _argv(config: KexecConfig, kernel: _g.KernelArtifacts, initrd: Path, serial: Path) -> list[str]:
    ga = _g.guest_arch(config.arch)
    append = f"console={ga.console} quiet panic=-1 crashkernel={config.crashkernel}"
    argv = [ga.qemu, *ga.machine, "-accel", "tcg", "-m", str(config.memory_mib), "-smp", str(config.cpus)]
    argv += ["-nodefaults", "-display", "none", "-no-reboot", "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd)]
    argv += ["-append", append, "-serial", f"file:{serial}"]
    if config.vmcoreinfo:
        argv += ["-device", "vmcoreinfo"]
    return argv


def _parse_serial(
    text: str, link_stext: int | None, arch: str
) -> tuple[GroundTruth, GroundTruth, tuple[int, int], bytes]:
    first_end = text.find(_g.TRUTH_END)
    if first_end < 0:
        raise GuestError("serial log has no first-kernel ground truth")
    first = GroundTruth.parse(text, link_stext=link_stext, arch=arch)
    capture = GroundTruth.parse(text[first_end + len(_g.TRUTH_END) :], link_stext=link_stext, arch=arch)
    m = re.search(r"KDFIX:iomem_crash=\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel", text[:first_end])
    if not m:
        raise GuestError("the first kernel shows no 'Crash kernel' resource in /proc/iomem")
    region = (int(m.group(1), 16), int(m.group(2), 16))
    b, e = text.find(VMCORE_BEGIN), text.find(VMCORE_END)
    if b < 0 or e < b:
        raise GuestError("serial log has no /proc/vmcore head")
    # only base64 lines: kernel messages (an oops of the reading process) may interleave on the console
    lines = text[b + len(VMCORE_BEGIN) : e].splitlines()
    head = base64.b64decode("".join(x.strip() for x in lines if _BASE64_LINE.fullmatch(x.strip())))
    return first, capture, region, head


def boot_kexec_and_dump(config: KexecConfig, out_dir: Path, *, timeout: float | None = None) -> KexecDumps:
    """Boot, load the capture kernel, panic on ``config.panic_cpu``, wait for the capture kernel, dump, quit.

    Writes vmcore.elf, vmcore.kdump-zlib, serial.log, qemu.cmd, qemu.stderr and kexec.json into ``out_dir``.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if timeout is None:
        timeout = TIMEOUT_S * _g.guest_arch(config.arch).boot_timeout_factor
    kernel = _g.kernel_artifacts(config.arch)
    marker = f"KDFIX-MARKER-{secrets.token_hex(8)}"
    marker2 = f"KDFIX-CAPTURE-MARKER-{secrets.token_hex(8)}"
    initrd = build_initramfs(config, kernel, out_dir, marker, marker2)
    serial = out_dir / "serial.log"
    argv = _argv(config, kernel, initrd, serial)
    run = _g.run_and_dump(argv, out_dir, serial, wait_for=[CAPTURE_READY], timeout=timeout, fail_on=FAILURES)
    secs = {"boot_to_capture": run.seconds[CAPTURE_READY], "elf": run.seconds["elf"]}
    secs["kdump-zlib"] = run.seconds["kdump-zlib"]
    text = serial.read_text(errors="replace")
    first, capture, region, head = _parse_serial(text, kernel.link_stext(), config.arch)
    if (first.marker, capture.marker) != (marker, marker2):
        raise GuestError(f"markers {first.marker!r}/{capture.marker!r} differ from {marker!r}/{marker2!r}")
    if capture_append(config.arch) not in capture.cmdline or VMCORE_BEGIN not in text:
        raise GuestError(f"the second kernel is no capture kernel: {capture.cmdline!r}")
    if config.vmcoreinfo and first.fw_cfg != "loaded":
        raise GuestError(f"qemu_fw_cfg.ko did not load in the first kernel ({first.fw_cfg}); see {serial}")
    (out_dir / "vmcore-head.bin").write_bytes(head)
    dumps = KexecDumps(
        config=config,
        elf=run.dumps["elf"],
        kdump_zlib=run.dumps["kdump-zlib"],
        first=first,
        capture=capture,
        crash_region=region,
        vmcore_head=VmcoreHead(head),
        serial_log=serial,
        qemu_version=_g.qemu_version(arch=config.arch),
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
        "stamps": {p.name: _g.stamp(p) for p in (d.elf, d.kdump_zlib, out_dir / "vmcore-head.bin")},
    }
    (out_dir / "kexec.json").write_text(json.dumps(meta, indent=2) + "\n")


def _load_meta(dir_: Path) -> KexecDumps | None:
    try:
        meta = json.loads((dir_ / "kexec.json").read_text())
        if any(_g.stamp(dir_ / n) != s for n, s in meta["stamps"].items()):
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
    key = f"{_g.qemu_version(arch=config.arch)}-{_g.kernel_artifacts(config.arch).release}-{config.name}"
    return _g.cached_entry(key, lambda work: boot_kexec_and_dump(config, work), _load_meta)  # type: ignore[no-any-return]
