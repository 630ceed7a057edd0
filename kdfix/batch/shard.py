"""Stable sharding of a batch: ``--shard K/N`` keeps the files whose relative-path hash is K-1 modulo N.

The hash is SHA-256 of the '/'-separated relative path (UTF-8, undecodable bytes kept), so every host that
walks the same tree computes the same split, whatever its Python, locale or file-system order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kdfix.errors import KdfixError


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, rel_path: str) -> bool:
        """True if ``rel_path`` belongs to this shard."""
        return shard_of(rel_path, self.count) == self.index


def shard_of(rel_path: str, count: int) -> int:
    """The 1-based shard of ``rel_path`` among ``count`` shards."""
    digest = hashlib.sha256(rel_path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_shard(text: str) -> Shard:
    """Parse ``K/N`` (1 <= K <= N)."""
    k, sep, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not sep or count < 1 or not 1 <= index <= count:
        raise KdfixError(f"--shard {text!r}: expected K/N with 1 <= K <= N (e.g. 3/16)", field="shard")
    return Shard(index, count)
