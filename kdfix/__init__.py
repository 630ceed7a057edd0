"""kdfix: read, write, generate, detect and fix Linux kernel crash dumps (KDUMP-compressed and ELF)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdfix.errors import KdfixError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kdfix.model import DumpModel
    from kdfix.read.probe import open_dump


def __getattr__(name: str) -> Any:
    """``open_dump`` and ``DumpModel`` are imported on first use: ``kdfix --version`` needs neither."""
    if name == "open_dump":
        from kdfix.read.probe import open_dump

        return open_dump
    if name == "DumpModel":
        from kdfix.model import DumpModel

        return DumpModel
    raise AttributeError(name)


__all__ = ["DumpModel", "KdfixError", "__version__", "open_dump"]
