"""``kdfix triage`` on a guest that panicked through sysrq ``c``, against crash with the -dbg vmlinux: every CPU's
IP is its NT_PRSTATUS RIP and symbolizes to the function crash's ``sym`` names; the stack scan holds crash's
``bt`` frames in order; the panic message, CPU and task match crash's."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from kdfix.fix import fix_dump
from kdfix.kernel.triage import triage
from kdfix.write.convert import convert
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import crash_with_vmlinux


def elf_prstatus_ip_sp(path: Path) -> list[tuple[int, int]]:
    """(rip, rsp) of each CORE/NT_PRSTATUS note of an ELF64 vmcore (offsets 240/264, notes-and-vmcoreinfo.md §2)."""
    with open(path, "rb") as fh:
        ehdr = fh.read(64)
        phoff, phentsize, phnum = struct.unpack_from("<Q", ehdr, 32)[0], *struct.unpack_from("<HH", ehdr, 54)
        fh.seek(phoff)
        phdrs = [struct.unpack("<IIQQQQQQ", fh.read(phentsize)[:56]) for _ in range(phnum)]
        out = []
        for p_type, _flags, offset, _va, _pa, filesz, _memsz, _align in phdrs:
            if p_type != 4:  # PT_NOTE
                continue
            fh.seek(offset)
            blob = fh.read(filesz)
            pos = 0
            while pos + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
                name = blob[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
                desc_at = pos + 12 + (namesz + 3) // 4 * 4
                if name == b"CORE" and ntype == 1:
                    desc = blob[desc_at : desc_at + descsz]
                    out.append((struct.unpack_from("<Q", desc, 240)[0], struct.unpack_from("<Q", desc, 264)[0]))
                pos = desc_at + (descsz + 3) // 4 * 4
        return out


def test_triage_matches_crash_on_a_sysrq_panic(tmp_path: Path, guest_panic, debug_vmlinux) -> None:  # type: ignore[no-untyped-def]
    require_tool("crash")
    report = triage(guest_panic.kdump_zlib)  # the unfixed QEMU dump: VMCOREINFO from memory
    elf_report = triage(guest_panic.elf)
    assert [(c.ip, c.sp, c.ip_symbol) for c in elf_report.cpus] == [(c.ip, c.sp, c.ip_symbol) for c in report.cpus]
    assert [(c.ip, c.sp) for c in report.cpus] == elf_prstatus_ip_sp(guest_panic.elf)
    assert report.release == guest_panic.truth.osrelease and report.machine == "x86_64"
    assert report.panic_message == "sysrq triggered crash"
    assert report.panic_cpu == guest_panic.config.cpus - 1  # the initramfs panics on the last vCPU
    assert any("Kernel panic - not syncing: sysrq triggered crash" in line for line in report.last_lines)

    plain = tmp_path / "fixed.kdump"
    convert([guest_panic.kdump_zlib], plain, flat=False)
    plain.chmod(0o600)
    assert fix_dump(plain, in_place=True).status == "fixed"
    commands = [f"sym {c.ip:x}" for c in report.cpus] + ["bt"]
    out = crash_with_vmlinux(debug_vmlinux, plain, commands).output
    assert "do not match" not in out
    crash_syms = re.findall(r"^([0-9a-f]{16}) \(\w\) ([A-Za-z0-9_.]+)\+?", out, re.M)
    assert [int(a, 16) for a, _ in crash_syms] == [c.ip for c in report.cpus]
    assert [name for _, name in crash_syms] == [c.ip_function for c in report.cpus]

    panic = re.search(r'PANIC: "Kernel panic - not syncing: (.*)"', out)
    assert panic and panic.group(1) == report.panic_message
    task = re.search(r'^PID: (\d+)\s+TASK: \w+\s+CPU: (\d+)\s+COMMAND: "(\S+)"', out, re.M)
    assert task and (int(task.group(1)), int(task.group(2)), task.group(3)) == (
        report.panic_pid, report.panic_cpu, report.panic_comm)  # fmt: skip
    frames = [
        (name, int(addr, 16)) for name, addr in re.findall(r"^\s*#\d+ \[[0-9a-f]+\] (\S+) at ([0-9a-f]+)", out, re.M)
    ]
    assert [f for f, _ in frames[:2]] == ["panic", "sysrq_handle_crash"], out
    scanned = iter((e.function, e.value) for e in report.stack)
    missing = [frame for frame in frames if frame not in scanned]  # an ordered subsequence: stale extras are fine
    assert not missing, (missing, report.stack)
