"""Real QEMU builds for the oracle tests: the system QEMU 7.2 and Debian bookworm-backports' QEMU 10.0.

QEMU 10.0 is never installed system-wide (everything else uses the system 7.2). :func:`qemu_install` downloads
``qemu-system-x86``, ``qemu-system-common``, ``qemu-system-data`` and ``seabios`` (10.0 needs SeaBIOS > 1.16.3,
bookworm has 1.16.2) from bookworm-backports with ``apt-get download`` (for aarch64 guests ``qemu-system-arm``,
common and data: virt boots the kernel directly), unpacks them with ``dpkg-deb -x`` into
``cache_dir()/qemu-10.0/<debian version>[-<arch>]/`` and runs the binary with ``-L`` on the unpacked firmware
directories (searched before the system ones) and QEMU_MODULE_DIR on the unpacked modules (so 7.2's modules are
never loaded). Libraries that the machine lacks are unpacked too and reach the binary through LD_LIBRARY_PATH;
``ldd`` must then find every library.

Nothing system-wide changes: bookworm-backports is known only to a private apt configuration under
``cache_dir()/apt/`` (its own sources.list, lists and package cache; the system's apt.conf, proxies included, still
applies). :func:`qemu_install` refreshes those lists under a file lock when they are missing or a day old, and once
more when a download fails on stale lists; offline, the newest cached build is used.

Measured with 10.0.2 (qemu-dumps.md §1): ``query-dump-guest-memory-capability`` lists elf, kdump-zlib,
kdump-raw-zlib and win-dmp.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.oracle.guest import GuestError, _locked, _rmtree, _run, cache_dir, guest_arch

__all__ = [
    "BACKPORTS_SUITE",
    "QEMU_VERSIONS",
    "QemuInstall",
    "QemuVersionName",
    "qemu_binary",
    "qemu_data_dirs",
    "qemu_install",
]

QemuVersionName = Literal["7.2", "10.0"]
QEMU_VERSIONS: tuple[str, ...] = ("7.2", "10.0")
BACKPORTS_SUITE = "bookworm-backports"
# guest arch -> {package -> Debian version prefix it must have (the epoch "1:" of Debian's qemu packages included)};
# the first package holds the qemu-system-* binary
_BACKPORTS_PACKAGES = {
    "x86_64": {
        "qemu-system-x86": "1:10.0.",
        "qemu-system-common": "1:10.0.",
        "qemu-system-data": "1:10.0.",
        "seabios": "",
    },
    "aarch64": {"qemu-system-arm": "1:10.0.", "qemu-system-common": "1:10.0.", "qemu-system-data": "1:10.0."},
}
# files each unpacked build must have, and its -L directories (x86: SeaBIOS first, 10.0 needs its own bios-256k.bin)
_REQUIRED_FILES = {
    "x86_64": ("tree/usr/share/seabios/bios-256k.bin", "tree/usr/share/qemu/kvmvapic.bin"),
    "aarch64": ("tree/usr/share/qemu/keymaps/en-us",),
}
_DATA_DIRS = {"x86_64": ["tree/usr/share/seabios", "tree/usr/share/qemu"], "aarch64": ["tree/usr/share/qemu"]}
_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
_META = "qemu.json"


@dataclass(frozen=True)
class QemuInstall:
    """How to run one QEMU build: ``argv_prefix`` replaces ``qemu-system-x86_64``; ``env`` adds to os.environ."""

    name: str  # "7.2" or "10.0"
    binary: Path  # qemu-system-<arch>
    version: str  # full version from --version, e.g. "10.0.2"
    data_dirs: tuple[Path, ...] = ()  # -L directories (firmware, option ROMs), searched before the system ones
    env: dict[str, str] = field(default_factory=dict)
    package_version: str = ""  # Debian version of the qemu-system-* package when unpacked from backports
    arch: str = "x86_64"  # the guest architecture it runs (tests/oracle/guest.py GUEST_ARCHES)

    @property
    def argv_prefix(self) -> list[str]:
        argv = [str(self.binary)]
        for d in self.data_dirs:
            argv += ["-L", str(d)]
        return argv

    def environ(self) -> dict[str, str] | None:
        """The environment for subprocess (None: inherit unchanged)."""
        return {**os.environ, **self.env} if self.env else None


def _full_version(binary: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False, env=env)
    m = re.search(r"version (\d+\.\d+\.\d+)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise GuestError(f"{binary} --version failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1000:]}")
    return m.group(1)


def _system_install(arch: str) -> QemuInstall:
    name = guest_arch(arch).qemu
    path = shutil.which(name)
    if path is None:
        raise GuestError(f"{name} is not installed (scripts/setup.sh)")
    version = _full_version(Path(path))
    if not version.startswith("7.2."):
        raise GuestError(f"the system QEMU is {version}, not 7.2")
    return QemuInstall("7.2", Path(path), version, arch=arch)


# --------------------------------------------------------------------------------------------------------------
# apt


_BACKPORTS_SOURCE = (
    "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    f"http://deb.debian.org/debian {BACKPORTS_SUITE} main\n"
)
_LISTS_MAX_AGE_S = 24 * 3600


def _apt_root() -> Path:
    return cache_dir() / "apt"


def _apt_argv(command: str, *args: str) -> list[str]:
    """``apt-get``/``apt-cache`` on the private configuration: only the backports source, lists and cache in the
    kdfix cache (SourceParts ``-`` names no directory, so /etc/apt/sources.list.d is not read)."""
    root = _apt_root()
    opts = {
        "Dir::Etc::SourceList": str(root / "sources.list"),
        "Dir::Etc::SourceParts": "-",
        "Dir::State::Lists": str(root / "lists"),
        "Dir::Cache": str(root / "cache"),
    }
    return [command, *(a for k, v in opts.items() for a in ("-o", f"{k}={v}")), *args]


def _lists_age() -> float | None:
    """Seconds since the private lists were last refreshed (None: never, or the source changed since)."""
    stamp = _apt_root() / "lists" / ".kdfix-updated"
    try:
        if stamp.read_text() != _BACKPORTS_SOURCE:
            return None
        return time.time() - stamp.stat().st_mtime
    except OSError:
        return None


def _apt_update() -> None:
    """Refresh the private backports lists (caller holds the qemu-10.0 lock)."""
    root = _apt_root()
    for d in (root / "lists" / "partial", root / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(_BACKPORTS_SOURCE)
    _run(_apt_argv("apt-get", "-q", "update"), timeout=600)
    (root / "lists" / ".kdfix-updated").write_text(_BACKPORTS_SOURCE)


def _backports_version(package: str, prefix: str) -> str:
    """The version of ``package`` that bookworm-backports offers (``apt-cache policy``), starting with ``prefix``."""
    out = _run(_apt_argv("apt-cache", "policy", package), timeout=60)
    table = out.split("Version table:", 1)[-1]
    found: list[str] = []
    version = None
    for line in table.splitlines():
        m = re.match(r"\s*(?:\*\*\*\s+)?(\S+)\s+-?\d+\s*$", line)
        if m:
            version = m.group(1)
        elif version and BACKPORTS_SUITE in line and version.startswith(prefix):
            found.append(version)
    if not found:
        raise GuestError(f"{BACKPORTS_SUITE} offers no version {prefix}* of {package} (private lists {_apt_root()})")
    return found[0]  # apt lists versions newest first


def _installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30, check=False
    )
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def _missing_dependencies(deb: Path) -> list[str]:
    """Package names in the .deb's Depends that are not installed here (alternatives: none of them installed)."""
    depends = _run(["dpkg-deb", "-f", str(deb), "Depends"], timeout=60)
    missing = []
    for clause in depends.split(","):
        names = [re.sub(r"\s*\(.*?\)|:any", "", alt).strip() for alt in clause.split("|")]
        names = [n for n in names if n]
        ours = any(n.startswith(("qemu-", "seabios", "ipxe")) for n in names)
        if names and not ours and not any(_installed(n) for n in names):
            missing.append(names[0])
    return missing


def _ldd_missing(binary: Path, env: dict[str, str] | None) -> list[str]:
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60, check=False, env=env)
    return [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "not found" in line]


# --------------------------------------------------------------------------------------------------------------
# backports QEMU 10.0


def _qemu10_root() -> Path:
    root = cache_dir() / "qemu-10.0"
    root.mkdir(exist_ok=True)
    return root


def _abs_env(base: Path, env_rel: dict[str, str]) -> dict[str, str]:
    """Environment values stored relative to the install dir (':'-separated lists) made absolute."""
    return {k: ":".join(str(base / p) for p in v.split(":")) for k, v in env_rel.items()}


def _load_install(d: Path, arch: str) -> QemuInstall | None:
    try:
        meta = json.loads((d / _META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("arch", "x86_64") != arch:
        return None
    binary = d / meta["binary"]
    if not os.access(binary, os.X_OK):
        return None
    return QemuInstall(
        name="10.0",
        binary=binary,
        version=meta["version"],
        data_dirs=tuple(d / p for p in meta["data_dirs"]),
        env=_abs_env(d, meta["env"]),
        package_version=meta["package_version"],
        arch=arch,
    )


def _unpack_qemu10(final: Path, versions: dict[str, str], arch: str) -> None:
    """Download and unpack into a temp dir next to ``final``, check it runs, then rename it to ``final``."""
    work = Path(tempfile.mkdtemp(prefix=".tmp-qemu10-", dir=_qemu10_root()))
    try:
        debs_dir = work / "debs"
        debs_dir.mkdir()
        specs = [f"{p}={v}" for p, v in versions.items()]
        _run(_apt_argv("apt-get", "download", "-q", *specs), cwd=debs_dir, timeout=1800)
        debs = sorted(debs_dir.glob("*.deb"))
        if len(debs) != len(versions):
            raise GuestError(f"apt-get download: expected {len(versions)} .debs, found {[d.name for d in debs]}")
        extra = sorted({m for deb in debs for m in _missing_dependencies(deb)})
        if extra:  # libraries this machine lacks: whatever version the system's own sources offer (read-only use)
            _run(["apt-get", "download", "-q", *extra], cwd=debs_dir, timeout=1800)
        tree = work / "tree"
        for deb in sorted(debs_dir.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=600)
        binary = Path("tree/usr/bin") / guest_arch(arch).qemu
        env_rel = {"QEMU_MODULE_DIR": "tree/usr/lib/x86_64-linux-gnu/qemu"}
        if extra:
            env_rel["LD_LIBRARY_PATH"] = ":".join(f"tree/{p}" for p in _LIB_DIRS)
        full_env = {**os.environ, **_abs_env(work, env_rel)}
        missing = _ldd_missing(work / binary, full_env)
        if missing:
            raise GuestError(f"{binary.name} 10.0 lacks libraries (extra packages {extra}): {missing}")
        version = _full_version(work / binary, full_env)
        if not version.startswith("10.0."):
            raise GuestError(f"unpacked {binary} reports version {version}, not 10.0.x")
        for d in _REQUIRED_FILES[arch]:
            if not (work / d).is_file():
                raise GuestError(f"unpacked QEMU 10.0 lacks {d}")
        shutil.rmtree(debs_dir)
        for unused in ("usr/share/doc", "usr/share/man", "usr/share/icons", "usr/share/applications"):
            shutil.rmtree(tree / unused, ignore_errors=True)
        meta = {
            "binary": str(binary),
            "version": version,
            "package_version": next(iter(versions.values())),
            "packages": versions,
            "extra_packages": extra,
            "data_dirs": _DATA_DIRS[arch],
            "env": env_rel,
            "arch": arch,
        }
        (work / _META).write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(work, final)
    except BaseException:
        _rmtree(work)
        raise


def _newest_cached(arch: str) -> QemuInstall | None:
    cached = [hit for p in sorted(_qemu10_root().iterdir()) if (hit := _load_install(p, arch)) is not None]
    return cached[-1] if cached else None


def _resolve_versions(refresh: bool, arch: str) -> dict[str, str]:
    """Backports versions of the packages, from the private lists (refreshed when asked, missing or a day old)."""
    age = _lists_age()
    if refresh or age is None or age > _LISTS_MAX_AGE_S:
        try:
            _apt_update()
        except GuestError:
            if _lists_age() is None:
                raise
            # offline with lists from an earlier refresh: they still name a version, maybe cached
    return {p: _backports_version(p, prefix) for p, prefix in _BACKPORTS_PACKAGES[arch].items()}


def _install_dir(versions: dict[str, str], arch: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9.+~-]", "_", next(iter(versions.values())))
    return _qemu10_root() / (name if arch == "x86_64" else f"{name}-{arch}")  # x86_64 keeps its older cache key


def _qemu10_install(arch: str) -> QemuInstall:
    with _locked("qemu-10.0"):
        for attempt in range(2):  # the second pass refreshes lists that named a .deb the mirror no longer has
            try:
                versions = _resolve_versions(attempt > 0, arch)
            except (GuestError, OSError, subprocess.SubprocessError) as exc:  # offline / no lists: newest cached
                hit = _newest_cached(arch)
                if hit is None:
                    raise GuestError(f"QEMU 10.0 is not cached and apt cannot provide it: {exc}") from exc
                return hit
            final = _install_dir(versions, arch)
            hit = _load_install(final, arch)
            if hit is not None:
                return hit
            if final.exists():  # incomplete or damaged: rebuild
                _rmtree(final)
            try:
                _unpack_qemu10(final, versions, arch)
            except GuestError:
                if attempt == 0:
                    continue
                hit = _newest_cached(arch)  # an older 10.0.x build still serves
                if hit is None:
                    raise
                return hit
            hit = _load_install(final, arch)
            if hit is None:
                raise GuestError(f"{final} unreadable right after unpacking")
            return hit
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------------------
# public


@functools.cache
def qemu_install(version: str, arch: str = "x86_64") -> QemuInstall:
    """The qemu-system-<arch> build for ``version`` ("7.2": the system one; "10.0": bookworm-backports, unpacked
    once, cached; x86_64 and aarch64 guests).

    Cached per process; the unpacked tree is shared across processes through cache_dir() under a file lock.
    Raises GuestError when the build cannot be obtained (message says why).
    """
    if version == "7.2":
        return _system_install(arch)
    if version == "10.0":
        if arch not in _BACKPORTS_PACKAGES:
            raise GuestError(f"no QEMU 10.0 recipe for {arch} guests (known: {', '.join(_BACKPORTS_PACKAGES)})")
        return _qemu10_install(arch)
    raise ValueError(f"QEMU version must be one of {QEMU_VERSIONS}, not {version!r}")


def qemu_binary(version: QemuVersionName) -> Path:
    """Path of qemu-system-x86_64 for ``version`` (run it with :func:`qemu_data_dirs` as -L and QemuInstall.env)."""
    return qemu_install(version).binary


def qemu_data_dirs(version: QemuVersionName) -> tuple[Path, ...]:
    """The -L directories (firmware/BIOS) that go with :func:`qemu_binary`; empty for the system QEMU."""
    return qemu_install(version).data_dirs
