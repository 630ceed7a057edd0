"""Detection values: Candidate (one strategy's answer), Check (one validation rule's verdict), DetectResult."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

Confidence = Literal["high", "medium", "low", "none"]

logger = logging.getLogger("kdfix.detect")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (phys_base, KERNELOFFSET) pair proposed by one method; ``phys_base`` is u64 two's complement."""

    method: str
    phys_base: int
    kernel_offset: int | None = None
    vmcoreinfo: bytes | None = None  # the VMCOREINFO text the method found, if any
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """One validation rule (phys-base-and-kaslr.md §4): ``passed`` None means not applicable.

    ``decisive`` rules (utsname, page-table translation, banner, KERNELOFFSET consistency) can confirm a value;
    the others (alignment, pages present) only make it plausible.
    """

    name: str
    passed: bool | None
    detail: str
    decisive: bool = False

    def __str__(self) -> str:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[self.passed]
        return f"check {self.name}: {verdict} ({self.detail})"


@dataclass(frozen=True)
class DetectResult:
    """The chosen phys_base/KERNELOFFSET with its confidence, the evidence, and every candidate seen."""

    phys_base: int | None
    kernel_offset: int | None
    method: str
    confidence: Confidence
    evidence: list[str] = field(default_factory=list)
    vmcoreinfo: bytes | None = None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.phys_base is not None


def miss(log: list[str] | None, method: str, reason: str) -> None:
    """Record why a strategy produced no candidate, and return None (strategies never raise on foreign data)."""
    message = f"{method}: {reason}"
    logger.info(message)
    if log is not None:
        log.append(message)
