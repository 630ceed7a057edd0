"""Batch fixing of dump archives: walk (content probes, split sets), run (process pool, resume), report (JSON Lines)."""

from __future__ import annotations

from kdfix.batch.report import Outcome, ReportWriter, Summary, read_report
from kdfix.batch.runner import BatchProgress, BatchResult, run_batch
from kdfix.batch.shard import Shard, parse_shard, shard_of
from kdfix.batch.walk import FoundDump, SkippedFile, WalkResult, walk

__all__ = [
    "BatchProgress",
    "BatchResult",
    "FoundDump",
    "Outcome",
    "ReportWriter",
    "Shard",
    "SkippedFile",
    "Summary",
    "WalkResult",
    "parse_shard",
    "read_report",
    "run_batch",
    "shard_of",
    "walk",
]
