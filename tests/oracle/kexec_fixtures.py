"""Session fixtures for the two-kernel guests of tests/oracle/kexec_guest.py (loaded from tests/conftest.py).

Each variant boots at most once per cache (kexec_guest.cached_kexec_dumps); tests using ``kexec_guest`` are
oracle tests. Returned paths are in the shared cache: copy them before modifying anything.
"""

from __future__ import annotations

import pytest

from tests.oracle import guest as _guest
from tests.oracle.fixtures import require_tool
from tests.oracle.kexec_guest import KEXEC_BINARY, KexecConfig, KexecDumps, cached_kexec_dumps

__all__ = ["KEXEC_AARCH64", "KEXEC_CONFIGS"]

# no device: the panicking vCPU runs the capture kernel, the other stays parked in the first kernel's page tables;
# with -device vmcoreinfo QEMU's note holds the first kernel's VMCOREINFO (arch-kernels-and-introspection.md §3.7)
KEXEC_CONFIGS: dict[str, KexecConfig] = {
    "cpu0": KexecConfig(panic_cpu=0, vmcoreinfo=False),
    "cpu1": KexecConfig(panic_cpu=1, vmcoreinfo=False),
    "cpu0-vmcoreinfo": KexecConfig(panic_cpu=0, vmcoreinfo=True),
}

# aarch64 under TCG is slow: one variant (panic on vCPU 0, no device), booted once per cache. QEMU's arm64 dumps
# carry no TTBR, so the roles rest on the ELF core header and the reservation (kernels.py).
KEXEC_AARCH64 = KexecConfig(panic_cpu=0, vmcoreinfo=False, arch="aarch64")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"kexec_guest", "kexec_guest_aarch64"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.oracle)


@pytest.fixture(scope="session", params=list(KEXEC_CONFIGS), ids=list(KEXEC_CONFIGS))
def kexec_guest(request: pytest.FixtureRequest, kernel: _guest.KernelArtifacts) -> KexecDumps:
    """KexecDumps of each KEXEC_CONFIGS variant (panic on vCPU 0 / 1, with and without -device vmcoreinfo)."""
    require_tool(str(KEXEC_BINARY))
    return cached_kexec_dumps(KEXEC_CONFIGS[request.param])


@pytest.fixture(scope="session")
def kexec_guest_aarch64() -> KexecDumps:
    """KexecDumps of the aarch64 two-kernel guest (KEXEC_AARCH64; kexec-tools:arm64 from apt-get download)."""
    return cached_kexec_dumps(KEXEC_AARCH64)
