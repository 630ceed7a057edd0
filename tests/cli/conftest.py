"""Fixtures shared with tests/fix: synthetic QEMU-like dumps that ``kdfix fix`` changes (tests copy them first)."""

from tests.fix.conftest import synthetic_flat, synthetic_plain

__all__ = ["synthetic_flat", "synthetic_plain"]
