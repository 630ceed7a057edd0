"""Detection values: Candidate (one strategy's answer), Check (one validation rule's verdict), DetectResult;
the Strategy signature and the ``@strategy`` decorator that gives a strategy body that signature."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from kdfix.arch import Recognition
    from kdfix.detect.kernels import Choice, Kernels
    from kdfix.model import DumpModel
    from kdfix.read.memory import PhysicalMemory

Confidence = Literal["high", "medium", "low", "none"]

logger = logging.getLogger("kdfix.detect")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (phys_base, KERNELOFFSET) pair proposed by one method; ``phys_base`` is u64 two's complement.

    ``phys_base`` is what the KDUMP header's phys_base must hold for ``arch`` (kdfix.arch: x86_64 phys_base,
    aarch64 PHYS_OFFSET, i386 0); ``arch`` is None when the method could not tell.
    """

    method: str
    phys_base: int
    kernel_offset: int | None = None
    vmcoreinfo: bytes | None = None  # the VMCOREINFO text the method found, if any
    evidence: tuple[str, ...] = ()
    arch: str | None = None


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
    arch: str | None = None  # the architecture the chosen value is for
    kernels: Kernels | None = None  # every kernel in memory, with roles (kernels.py)
    choice: Choice | None = None  # which of them the result describes, and why

    @property
    def found(self) -> bool:
        return self.phys_base is not None


def miss(log: list[str] | None, method: str, reason: str) -> None:
    """Record why a strategy produced no candidate, and return None (strategies never raise on foreign data)."""
    message = f"{method}: {reason}"
    logger.info(message)
    if log is not None:
        log.append(message)


class Strategy(Protocol):
    def __call__(
        self,
        model: DumpModel,
        memory: PhysicalMemory,
        *,
        vmlinux_symbols: Mapping[str, int] | None = None,
        log: list[str] | None = None,
        known: Sequence[Candidate] = (),
    ) -> Candidate | None: ...


@dataclass(slots=True)
class Attempt:
    """One strategy run: its inputs, the evidence gathered so far, and the two ways it ends (a miss or a Candidate)."""

    method: str
    model: DumpModel
    memory: PhysicalMemory
    vmlinux_symbols: Mapping[str, int] | None
    log: list[str] | None
    known: Sequence[Candidate]
    evidence: list[str] = field(default_factory=list)

    def miss(self, reason: str, *, details: Iterable[str] = ()) -> None:
        """Log each of ``details``, then ``reason``, as why this method found nothing; returns None."""
        for line in details:
            miss(self.log, self.method, line)
        return miss(self.log, self.method, reason)

    def candidate(
        self,
        phys_base: int,
        kernel_offset: int | None = None,
        vmcoreinfo: bytes | None = None,
        *,
        arch: str | None = None,
    ) -> Candidate:
        """This method's Candidate, with the evidence gathered so far (``arch`` defaults to the recognised one)."""
        if arch is None:
            found = self.recognised()
            arch = None if found is None else found.arch.name
        return Candidate(self.method, phys_base, kernel_offset, vmcoreinfo, tuple(self.evidence), arch)

    def recognised(self) -> Recognition | None:
        """The dump's architecture as its headers, notes and VMCOREINFO tell (kdfix.arch.recognise)."""
        from kdfix.arch import recognise

        return recognise(self.model)


def applicable(method: str, model: DumpModel) -> str | None:
    """Why ``method`` cannot apply to ``model``'s architecture (kdfix.arch ``detect_methods``), or None if it can."""
    from kdfix.arch import method_applies

    ok, arch = method_applies(model, method)
    if ok:
        return None
    if arch is None:
        return "the dump's architecture is unknown and this method is specific to one"
    return f"not a method for {arch} dumps"


def strategy(method: str) -> Callable[[Callable[[Attempt], Candidate | None]], Strategy]:
    """Turn ``body(attempt)`` into ``find_by_<method>(model, memory, *, vmlinux_symbols, log, known)``.

    The body runs only when the dump's architecture lists ``method`` (else a logged miss). The returned function
    keeps the body's name, docstring and module.
    """

    def wrap(body: Callable[[Attempt], Candidate | None]) -> Strategy:
        def find(
            model: DumpModel,
            memory: PhysicalMemory,
            *,
            vmlinux_symbols: Mapping[str, int] | None = None,
            log: list[str] | None = None,
            known: Sequence[Candidate] = (),
        ) -> Candidate | None:
            why_not = applicable(method, model)
            if why_not is not None:
                miss(log, method, why_not)
                return None
            return body(Attempt(method, model, memory, vmlinux_symbols, log, known))

        find.__name__, find.__qualname__ = body.__name__, body.__qualname__
        find.__doc__, find.__module__ = body.__doc__, body.__module__
        return find

    return wrap
