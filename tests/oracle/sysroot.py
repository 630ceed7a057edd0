"""Debian's own crash and makedumpfile for other architectures, unpacked into a sysroot in the cache (not installed).

The arm64 and i386 builds are the oracles for aarch64 and i386 dumps (tools-and-oracles.md §1, §2; the x86_64 builds
misread those dumps: arch-kernels-and-introspection.md §2.6). :func:`oracle_sysroot` downloads ``crash:ARCH``,
``makedumpfile:ARCH`` and the closure of their ``lib*`` dependencies with ``apt-get download`` (needs the dpkg
foreign architecture that scripts/setup.sh adds), unpacks them with ``dpkg-deb -x`` into
``cache_dir()/oracles/<arch>/<crash version>/`` and checks that every program starts. :func:`runner` gives the
argv prefix: arm64 programs run under ``qemu-aarch64-static -L SYSROOT``; i386 ones run natively through the
sysroot's own dynamic loader (``ld-linux.so.2 --library-path ...``), or under ``qemu-i386-static`` when this
machine cannot run 32-bit code.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.oracle.guest import GuestError, _locked, _rmtree, _run, cache_dir

__all__ = ["ORACLE_ARCHES", "OracleSysroot", "oracle_sysroot", "package_tree", "runner"]

# kdfix/kernel arch name -> dpkg architecture, multiarch triplet, qemu-user binary
ORACLE_ARCHES: dict[str, tuple[str, str, str]] = {
    "aarch64": ("arm64", "aarch64-linux-gnu", "qemu-aarch64-static"),
    "i386": ("i386", "i386-linux-gnu", "qemu-i386-static"),
}
PROGRAMS = ("crash", "makedumpfile")
_META = "sysroot.json"


@dataclass(frozen=True)
class OracleSysroot:
    arch: str  # aarch64 / i386
    root: Path
    versions: dict[str, str]  # package -> Debian version unpacked

    def binary(self, program: str) -> Path:
        return self.root / "usr" / "bin" / program

    @property
    def lib_dirs(self) -> tuple[Path, ...]:
        triplet = ORACLE_ARCHES[self.arch][1]
        return (self.root / "lib" / triplet, self.root / "usr" / "lib" / triplet)


def _depends(specs: Iterable[str]) -> dict[str, list[str]]:
    """``apt-cache depends`` of each spec: its Depends/PreDepends package names (first alternative)."""
    out = _run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances", *specs],
        timeout=120,
    )  # fmt: skip
    deps: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line and not line[0].isspace():
            current = line.strip()
            deps[current] = []
            continue
        m = re.match(r"\s+\|?(?:Pre)?Depends:\s+(\S+)", line)
        if m and current:
            deps[current].append(m.group(1))
    return deps


def _closure(debian_arch: str, packages: Iterable[str] = PROGRAMS) -> list[str]:
    """``packages`` (crash, makedumpfile) and every ``lib*``/``zlib*`` package they need (tools like binutils and
    perl are left out: the oracle calls use neither)."""
    want = {f"{p}:{debian_arch}" for p in packages}
    todo = set(want)
    while todo:
        found = _depends(sorted(todo))
        todo = set()
        for deps in found.values():
            for dep in deps:
                name = dep.split(":")[0]
                spec = f"{name}:{debian_arch}"
                if name.startswith(("lib", "zlib")) and not dep.startswith("<") and spec not in want:
                    want.add(spec)
                    todo.add(spec)
    return sorted(want)


def _candidates(specs: list[str]) -> dict[str, str]:
    out = _run(["apt-cache", "policy", *specs], timeout=120)
    versions: dict[str, str] = {}
    for block in re.split(r"^(?=\S)", out, flags=re.M):
        head = re.match(r"(\S+):\s*$", block.splitlines()[0]) if block.strip() else None
        vm = re.search(r"Candidate:\s*(\S+)", block)
        if head and vm and vm.group(1) != "(none)":
            versions[head.group(1)] = vm.group(1)
    missing = [s for s in specs if s not in versions]
    if missing:
        raise GuestError(f"apt has no candidate for {missing} (dpkg --add-architecture and apt-get update?)")
    return versions


def _argv(sysroot: OracleSysroot, program: str) -> list[str]:
    qemu_user = ORACLE_ARCHES[sysroot.arch][2]
    if sysroot.arch == "i386" and _runs_i386_natively(sysroot.root):
        ld = sysroot.root / "lib" / "ld-linux.so.2"
        libs = ":".join(str(d) for d in sysroot.lib_dirs)
        return [str(ld), "--library-path", libs, str(sysroot.binary(program))]
    qemu = shutil.which(qemu_user)
    if qemu is None:
        raise GuestError(f"{qemu_user} not found (apt-get install qemu-user-static)")
    return [qemu, "-L", str(sysroot.root), str(sysroot.binary(program))]


@functools.cache
def _runs_i386_natively(root: Path) -> bool:
    ld = root / "lib" / "ld-linux.so.2"
    try:
        proc = subprocess.run([str(ld), "--help"], capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return proc.returncode == 0


def _check_runs(sysroot: OracleSysroot) -> None:
    for program, args in (("crash", ["--version"]), ("makedumpfile", ["-v"])):
        argv = [*_argv(sysroot, program), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        text = proc.stdout + proc.stderr
        if program not in text.lower() or "error while loading shared libraries" in text:
            raise GuestError(f"{' '.join(argv)} does not run ({proc.returncode}): {text[-1500:]}")


def _load(d: Path, arch: str) -> OracleSysroot | None:
    try:
        meta = json.loads((d / _META).read_text())
    except (OSError, ValueError):
        return None
    s = OracleSysroot(arch, d / "root", meta["versions"])
    return s if all(os.access(s.binary(p), os.X_OK) for p in PROGRAMS) else None


@functools.cache
def oracle_sysroot(arch: str) -> OracleSysroot:
    """The unpacked crash + makedumpfile sysroot for ``arch`` ("aarch64"/"i386"), made once and cached.

    Offline (apt cannot answer): the newest cached sysroot. Raises GuestError when none can be had.
    """
    if arch not in ORACLE_ARCHES:
        raise ValueError(f"oracle arch must be one of {sorted(ORACLE_ARCHES)}, not {arch!r}")
    debian = ORACLE_ARCHES[arch][0]
    base = cache_dir() / "oracles" / debian
    base.mkdir(parents=True, exist_ok=True)
    try:
        specs = _closure(debian)
        versions = _candidates(specs)
    except (GuestError, OSError, subprocess.SubprocessError) as exc:
        cached = sorted(p for p in base.iterdir() if (p / _META).is_file())
        hit = _load(cached[-1], arch) if cached else None
        if hit is None:
            raise GuestError(f"no cached {debian} oracle sysroot and apt cannot provide one: {exc}") from exc
        return hit
    crash_version = versions[f"crash:{debian}"]
    final = base / re.sub(
        r"[^A-Za-z0-9.+~-]", "_", f"crash-{crash_version}_makedumpfile-{versions[f'makedumpfile:{debian}']}"
    )
    with _locked(f"oracles-{debian}"):
        hit = _load(final, arch)
        if hit is not None:
            return hit
        if final.exists():
            _rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=".tmp-sysroot-", dir=base))
        try:
            _download_unpack(versions, work / "root")
            _check_runs(OracleSysroot(arch, work / "root", versions))
            (work / _META).write_text(json.dumps({"arch": arch, "versions": versions}, indent=2) + "\n")
            os.rename(work, final)
        except BaseException:
            _rmtree(work)
            raise
        hit = _load(final, arch)
        if hit is None:
            raise GuestError(f"{final} unreadable right after unpacking")
        return hit


def _download_unpack(versions: dict[str, str], root: Path) -> None:
    """``apt-get download`` every spec=version and ``dpkg-deb -x`` it into ``root`` (docs, man pages dropped)."""
    debs = root.parent / "debs"
    debs.mkdir()
    _run(["apt-get", "download", "-q", *(f"{s}={v}" for s, v in versions.items())], cwd=debs, timeout=1800)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], timeout=600)
    shutil.rmtree(debs)
    for unused in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(root / unused, ignore_errors=True)


@functools.cache
def package_tree(arch: str, package: str) -> Path:
    """Debian's ``package`` for ``arch`` and the closure of its ``lib*`` dependencies, unpacked (not installed)
    under cache_dir()/packages/<debian arch>/<package>_<version>/root, made once; e.g. kexec-tools for a guest's
    initramfs. A cached tree is used as it is (resolving the closure keeps apt-cache busy for a minute); clear the
    cache to pick up a newer Debian version."""
    debian = ORACLE_ARCHES[arch][0]
    base = cache_dir() / "packages" / debian
    base.mkdir(parents=True, exist_ok=True)
    cached = sorted(p for p in base.glob(f"{package}_*") if (p / _META).is_file())
    if cached:
        return cached[-1] / "root"
    versions = _candidates(_closure(debian, (package,)))
    final = base / re.sub(r"[^A-Za-z0-9.+~-]", "_", f"{package}_{versions[f'{package}:{debian}']}")
    with _locked(f"packages-{debian}-{package}"):
        if (final / _META).is_file():
            return final / "root"
        if final.exists():
            _rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{package}-", dir=base))
        try:
            _download_unpack(versions, work / "root")
            (work / _META).write_text(json.dumps({"arch": arch, "versions": versions}, indent=2) + "\n")
            os.rename(work, final)
        except BaseException:
            _rmtree(work)
            raise
        return final / "root"


def runner(arch: str, program: str) -> list[str]:
    """The argv prefix that runs ``program`` ("crash"/"makedumpfile") built for ``arch`` from its sysroot."""
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {PROGRAMS}, not {program!r}")
    return _argv(oracle_sysroot(arch), program)
