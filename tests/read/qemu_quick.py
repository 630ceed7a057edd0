"""Quick firmware-only QEMU dumps (no guest OS): a stopped q35 guest dumped as ELF and kdump-zlib.

Used until the guest fixtures (tests/oracle/fixtures.py) are available; qemu-dumps.md §1-§5.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class QuickDumps:
    elf: Path
    kdump_zlib: Path


class _Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self._recv()
        self.execute("qmp_capabilities")

    def _recv(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments: object) -> object:
        req: dict[str, object] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        reply = self._recv()
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error']}")
        return reply.get("return")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def make_quick_dumps(directory: Path, *, mem_mib: int = 16, smp: int = 1) -> QuickDumps:
    """Start a stopped firmware-only guest, dump it as ELF and kdump-zlib, quit."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "qmp.sock"
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "tcg", "-m", str(mem_mib), "-smp", str(smp), "-S", "-nodefaults",
         "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        qmp = _Qmp(sock)
        qmp.execute("stop")
        out = QuickDumps(directory / "guest.elf", directory / "guest.kdump-zlib")
        qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{out.elf}")
        qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{out.kdump_zlib}", format="kdump-zlib")
        qmp.execute("quit")
        qmp.close()
        proc.wait(timeout=20)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
