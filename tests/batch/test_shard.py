"""kdfix.batch.shard: K/N parsing and a stable, complete, disjoint partition of relative paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.batch.shard import Shard, parse_shard, shard_of
from kdfix.errors import KdfixError


def test_known_assignment_is_stable() -> None:
    """The shard of a path depends only on the path (SHA-256), not on the process: pinned values."""
    import hashlib

    for path in ("case-001/vmcore", "a b/ü/dump"):
        expect = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % 7 + 1
        assert shard_of(path, 7) == expect


@pytest.mark.parametrize("text", ["0/4", "5/4", "4", "a/b", "1/0", "-1/3"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(KdfixError):
        parse_shard(text)


def test_parse() -> None:
    assert parse_shard("3/16") == Shard(3, 16)


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=50, unique=True), st.integers(1, 9))
def test_shards_partition_paths(paths: list[str], n: int) -> None:
    """Every path is in exactly one of the N shards."""
    for p in paths:
        assert sum(Shard(k, n).holds(p) for k in range(1, n + 1)) == 1
