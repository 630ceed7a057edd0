"""Dump generators: synthetic Linux-like memory images (``synthetic``)."""

from __future__ import annotations

from kdfix.generate.synthetic import SparseMemory, SyntheticTruth, build_linux_image

__all__ = ["SparseMemory", "SyntheticTruth", "build_linux_image"]
