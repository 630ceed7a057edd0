"""Dump generators: synthetic Linux-like memory images (``synthetic``, ``synthetic_arch``) and QEMU's own output
(``qemu``).

Nothing is imported eagerly: ``kdfix generate --style qemu`` must not pay for the synthetic image builder (and
the writers it pulls in) at start-up. The names below resolve on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SparseMemory", "SyntheticTruth", "build_linux_image"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("kdfix.generate.synthetic"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
