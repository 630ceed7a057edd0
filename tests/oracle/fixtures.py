"""Session-scoped pytest fixtures for real-guest dumps and oracle tools (loaded from tests/conftest.py).

Guests boot lazily: only when a test requests their fixture, and at most once per cache (see guest.cached_guest_dumps;
a second session reuses cache_dir()/dumps). Tests that use these fixtures are marked ``oracle`` automatically
(``debug_vmlinux`` also ``slow``). Returned dump paths are in the shared cache: copy them before modifying anything.

``require_tool(name)`` skips when a tool is missing, but fails when env CI=true (CONTRIBUTING.md, "Tests").
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from tests.oracle import guest as _guest
from tests.oracle.tools import have_tool

__all__ = [
    "ARCH_GUEST_CONFIGS",
    "FIXTURES_DIR",
    "GUEST_CONFIGS",
    "PANIC_GUEST",
    "QEMU10_AARCH64_GUEST",
    "QEMU10_GUEST",
    "in_ci",
    "repo_fixture",
    "require_tool",
]

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures"

GUEST_CONFIGS: dict[str, _guest.GuestConfig] = {
    "guest_seabios_kaslr": _guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=False),
    "guest_seabios_kaslr_vmcoreinfo": _guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=True),
    "guest_ovmf_nokaslr": _guest.GuestConfig("ovmf", kaslr=False, vmcoreinfo=False),
    "guest_ovmf_nokaslr_vmcoreinfo": _guest.GuestConfig("ovmf", kaslr=False, vmcoreinfo=True),
}
# aarch64 (virt, cortex-a57, 384 MiB) and i386 (pc, 686-pae, 256 MiB) guests: nokaslr, KASLR, KASLR + vmcoreinfo
ARCH_GUEST_CONFIGS: dict[str, _guest.GuestConfig] = {
    f"guest_{arch}_{name}": _guest.GuestConfig.of(arch, kaslr=kaslr, vmcoreinfo=vmci)
    for arch in ("aarch64", "i386")
    for name, kaslr, vmci in (("nokaslr", False, False), ("kaslr", True, False), ("kaslr_vmcoreinfo", True, True))
}
# a guest that touched page cache and anonymous memory, then panicked (sysrq c on its last vCPU) and was dumped
# while spinning in panic(): the kernel-reading commands' real case (kdfix/kernel)
PANIC_GUEST = _guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=False, memory_mib=256, busy=True, panic=True)
# the one guest booted under bookworm-backports' QEMU 10.0 (qemu_versions.py); dumps elf, kdump-zlib, kdump-raw-zlib
QEMU10_GUEST = _guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=True, qemu="10.0")
# the aarch64 guest under bookworm-backports' qemu-system-aarch64 10.0 (qemu-system-arm): elf, kdump-zlib, raw
QEMU10_AARCH64_GUEST = _guest.GuestConfig.of("aarch64", kaslr=True, vmcoreinfo=True, qemu="10.0")
_QEMU_FIXTURES = {
    *GUEST_CONFIGS,
    *ARCH_GUEST_CONFIGS,
    "kernel",
    "kernel_aarch64",
    "kernel_i386",
    "debug_vmlinux",
    "firmware_dumps",
    "firmware_dumps_vmcoreinfo",
    "qemu10",
    "guest_qemu10",
    "qemu10_aarch64",
    "guest_aarch64_qemu10",
    "firmware_dumps_qemu10",
    "guest_panic",
}
_SLOW_FIXTURES = {"debug_vmlinux"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: oracle prerequisites are mandatory)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, arch: str | None = None) -> None:
    """Skip the test when ``name`` (executable, or "drgn") is missing; fail instead when CI=true.

    ``arch`` ("aarch64"/"i386"): crash/makedumpfile built for it (tests/oracle/sysroot.py; downloaded once).
    """
    if not have_tool(name, arch):
        where = f" for {arch}" if arch else ""
        _unavailable(f"oracle tool {name!r}{where} is not available")


def repo_fixture(name: str) -> Path:
    """Path of a committed file under fixtures/ (skip/fail like require_tool when it is absent)."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        _unavailable(f"fixture {path} is missing (run scripts/make_fixtures.py)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _QEMU_FIXTURES:
            item.add_marker(pytest.mark.oracle)
        if names & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


def _require_qemu(arch: str = "x86_64") -> None:
    require_tool(_guest.GUEST_ARCHES[arch].qemu)


def _kernel_or_skip(arch: str = "x86_64") -> _guest.KernelArtifacts:
    _require_qemu(arch)
    if arch == "x86_64":
        require_tool("busybox")
    try:
        if arch != "x86_64":
            _guest.busybox_binary(arch)
        return _guest.kernel_artifacts(arch)
    except _guest.GuestError as exc:  # typically: no network / no apt metadata / no dpkg foreign architecture
        _unavailable(f"{arch} guest kernel or busybox unavailable: {exc}")
        raise  # unreachable


@pytest.fixture(scope="session")
def kernel() -> _guest.KernelArtifacts:
    """The Debian cloud kernel (vmlinuz, uncompressed qemu_fw_cfg.ko, release)."""
    return _kernel_or_skip()


@pytest.fixture(scope="session")
def kernel_aarch64() -> _guest.KernelArtifacts:
    """Debian's arm64 cloud kernel (Image, qemu_fw_cfg.ko, release), downloaded with apt-get download, cached."""
    return _kernel_or_skip("aarch64")


@pytest.fixture(scope="session")
def kernel_i386() -> _guest.KernelArtifacts:
    """Debian's i386 686-pae kernel (bzImage, qemu_fw_cfg.ko, release), downloaded with apt-get download, cached."""
    return _kernel_or_skip("i386")


@pytest.fixture(scope="session")
def debug_vmlinux(kernel: _guest.KernelArtifacts) -> Path:
    """vmlinux with debug info matching ``kernel`` (first use downloads ~283 MB into the cache)."""
    try:
        return _guest.debug_vmlinux()
    except _guest.GuestError as exc:
        _unavailable(f"debug vmlinux unavailable: {exc}")
        raise


def _guest_fixture(name: str, config: _guest.GuestConfig) -> object:
    if config.arch != "x86_64":

        def fixture(request: pytest.FixtureRequest) -> _guest.GuestDumps:
            request.getfixturevalue(f"kernel_{config.arch}")
            return _guest.cached_guest_dumps(config)

        fixture.__name__ = name
        fixture.__doc__ = f"GuestDumps of {config.name} (ELF + kdump-zlib + ground truth), booted once and cached."
        return pytest.fixture(scope="session", name=name)(fixture)

    def fixture(kernel: _guest.KernelArtifacts) -> _guest.GuestDumps:  # type: ignore[misc,no-redef]
        return _guest.cached_guest_dumps(config)

    fixture.__name__ = name
    fixture.__doc__ = f"GuestDumps of {config.name} (ELF + kdump-zlib + ground truth), booted once and cached."
    return pytest.fixture(scope="session", name=name)(fixture)


guest_seabios_kaslr = _guest_fixture("guest_seabios_kaslr", GUEST_CONFIGS["guest_seabios_kaslr"])
guest_seabios_kaslr_vmcoreinfo = _guest_fixture(
    "guest_seabios_kaslr_vmcoreinfo", GUEST_CONFIGS["guest_seabios_kaslr_vmcoreinfo"]
)
guest_ovmf_nokaslr = _guest_fixture("guest_ovmf_nokaslr", GUEST_CONFIGS["guest_ovmf_nokaslr"])
guest_ovmf_nokaslr_vmcoreinfo = _guest_fixture(
    "guest_ovmf_nokaslr_vmcoreinfo", GUEST_CONFIGS["guest_ovmf_nokaslr_vmcoreinfo"]
)
guest_aarch64_nokaslr = _guest_fixture("guest_aarch64_nokaslr", ARCH_GUEST_CONFIGS["guest_aarch64_nokaslr"])
guest_aarch64_kaslr = _guest_fixture("guest_aarch64_kaslr", ARCH_GUEST_CONFIGS["guest_aarch64_kaslr"])
guest_aarch64_kaslr_vmcoreinfo = _guest_fixture(
    "guest_aarch64_kaslr_vmcoreinfo", ARCH_GUEST_CONFIGS["guest_aarch64_kaslr_vmcoreinfo"]
)
guest_i386_nokaslr = _guest_fixture("guest_i386_nokaslr", ARCH_GUEST_CONFIGS["guest_i386_nokaslr"])
guest_i386_kaslr = _guest_fixture("guest_i386_kaslr", ARCH_GUEST_CONFIGS["guest_i386_kaslr"])
guest_i386_kaslr_vmcoreinfo = _guest_fixture(
    "guest_i386_kaslr_vmcoreinfo", ARCH_GUEST_CONFIGS["guest_i386_kaslr_vmcoreinfo"]
)

guest_panic = _guest_fixture("guest_panic", PANIC_GUEST)


@pytest.fixture(scope="session")
def firmware_dumps() -> _guest.FirmwareDumps:
    """Live QEMU dumps (cached) of a 16 MiB guest stopped at reset, no vmcoreinfo device."""
    _require_qemu()
    return _guest.cached_firmware_only_dumps(16, vmcoreinfo_device=False)


@pytest.fixture(scope="session")
def firmware_dumps_vmcoreinfo() -> _guest.FirmwareDumps:
    """As firmware_dumps, with -device vmcoreinfo (no guest driver ran, so no VMCOREINFO note)."""
    _require_qemu()
    return _guest.cached_firmware_only_dumps(16, vmcoreinfo_device=True)


@pytest.fixture(scope="session")
def qemu10() -> object:
    """The QemuInstall of QEMU 10.0 from bookworm-backports (downloaded and unpacked once into cache_dir()).

    Skips when it cannot be obtained (offline and not cached); fails instead when CI=true.
    """
    from tests.oracle.qemu_versions import qemu_install

    _require_qemu()
    try:
        return qemu_install("10.0")
    except _guest.GuestError as exc:
        _unavailable(f"QEMU 10.0 from bookworm-backports unavailable: {exc}")
        raise  # unreachable


@pytest.fixture(scope="session")
def guest_qemu10(qemu10: object, kernel: _guest.KernelArtifacts) -> _guest.GuestDumps:
    """GuestDumps of QEMU10_GUEST (SeaBIOS, KASLR, -device vmcoreinfo; .kdump_raw_zlib set), booted once, cached."""
    return _guest.cached_guest_dumps(QEMU10_GUEST)


@pytest.fixture(scope="session")
def qemu10_aarch64(kernel_aarch64: _guest.KernelArtifacts) -> object:
    """The QemuInstall of qemu-system-aarch64 10.0 (bookworm-backports qemu-system-arm, unpacked once, cached)."""
    from tests.oracle.qemu_versions import qemu_install

    try:
        return qemu_install("10.0", "aarch64")
    except _guest.GuestError as exc:
        _unavailable(f"qemu-system-aarch64 10.0 from bookworm-backports unavailable: {exc}")
        raise  # unreachable


@pytest.fixture(scope="session")
def guest_aarch64_qemu10(qemu10_aarch64: object) -> _guest.GuestDumps:
    """GuestDumps of QEMU10_AARCH64_GUEST (KASLR, -device vmcoreinfo; .kdump_raw_zlib set), booted once, cached."""
    return _guest.cached_guest_dumps(QEMU10_AARCH64_GUEST)


@pytest.fixture(scope="session")
def firmware_dumps_qemu10(qemu10: object) -> _guest.FirmwareDumps:
    """QEMU 10.0 dumps (elf, kdump-zlib, kdump-raw-zlib; cached) of a 16 MiB guest stopped at reset."""
    return _guest.cached_firmware_only_dumps(16, vmcoreinfo_device=False, qemu="10.0")


@pytest.fixture(scope="session")
def firmware_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed fixtures/firmware-16m.elf.gz, gunzipped once per session (QEMU 7.2 ELF, mode 0400)."""
    src = repo_fixture("firmware-16m.elf.gz")
    dst = tmp_path_factory.mktemp("firmware-elf") / "firmware-16m.elf"
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    dst.chmod(0o400)
    return dst
