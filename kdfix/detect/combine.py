"""detect(): run every strategy that applies, validate each candidate and cross-check them (package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kdfix.arch import recognise
from kdfix.detect.banner import find_by_banner
from kdfix.detect.candidate import Candidate, Check, Confidence, DetectResult, Strategy, miss
from kdfix.detect.cr3_walk import find_by_cr3_walk
from kdfix.detect.elf_text_load import find_by_elf_text_load
from kdfix.detect.idt_gate import find_by_idt_gate
from kdfix.detect.kernels import Choice, Kernel, Kernels, Wanted, find_kernels
from kdfix.detect.validate import accepted, confirmed, validate_candidate
from kdfix.detect.vmcoreinfo_note import find_by_vmcoreinfo_note
from kdfix.detect.vmcoreinfo_scan import find_by_vmcoreinfo_scan
from kdfix.errors import KdfixError
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory

# In order of preference when validated candidates disagree (the running kernel's CR3 before a memory scan).
STRATEGIES: tuple[tuple[str, Strategy], ...] = (
    ("vmcoreinfo_note", find_by_vmcoreinfo_note),
    ("cr3_walk", find_by_cr3_walk),
    ("vmcoreinfo_scan", find_by_vmcoreinfo_scan),
    ("idt_gate", find_by_idt_gate),
    ("elf_text_load", find_by_elf_text_load),
    ("banner", find_by_banner),
)


def _reference_vmcoreinfo(candidate: Candidate, found: Sequence[Candidate]) -> VmcoreInfo | None:
    """The VMCOREINFO to check a candidate against: its own, else the first one another method found."""
    for source in (candidate, *found):
        if source.vmcoreinfo is not None:
            return VmcoreInfo.parse(source.vmcoreinfo)
    return None


def _agrees(a: Candidate, b: Candidate) -> bool:
    if a.phys_base != b.phys_base:
        return False
    return a.kernel_offset is None or b.kernel_offset is None or a.kernel_offset == b.kernel_offset


def detect(
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    vmlinux_symbols: Mapping[str, int] | None = None,
    strategies: Sequence[tuple[str, Strategy]] = STRATEGIES,
    progress: Callable[[int, int], None] | None = None,
    kernel: Wanted = "crashed",
) -> DetectResult:
    """Run every strategy, validate each candidate (§4), and pick the best-supported value.

    Confidence: high = two or more methods agree and a decisive check (utsname, page-table translation,
    banner, KERNELOFFSET) passed; medium = only one of those; low = one unconfirmed method; none = nothing.

    When memory holds several kernels (a dump of a running kdump capture kernel), the result describes the
    one ``kernel`` names ("crashed", the default, or "running"; kernels.py), and it is "high" only when the
    roles are unambiguous. ``kdfix fix`` takes the same choice from here.
    """
    log: list[str] = []
    found = _run_strategies(model, memory, strategies, vmlinux_symbols, log, progress)
    kernels = find_kernels(model, memory, vmlinux_symbols=vmlinux_symbols, file_vmcoreinfo=model.vmcoreinfo)
    choice = kernels.choose(kernel, file_vmcoreinfo=model.vmcoreinfo)
    if kernels.several and choice.kernel is not None:
        return _several_kernels(model, memory, log, found, kernels, choice, vmlinux_symbols)

    evidence = list(log)
    good = _validated(found, memory, vmlinux_symbols, evidence)
    if not good:
        return DetectResult(None, None, "none", "none", evidence, None, found, kernels=kernels, choice=choice)
    order = {name: i for i, (name, _) in enumerate(strategies)}
    groups = _agreeing_groups(good, order)
    best = groups[0]
    lead = best[0][0]
    methods = [c.method for c, _ in best]
    kernel_offset = next((c.kernel_offset for c, _ in best if c.kernel_offset is not None), None)
    vmcoreinfo = next((c.vmcoreinfo for c, _ in best if c.vmcoreinfo is not None), None)
    confidence = _confidence(best, groups, evidence)
    evidence.append(f"agreeing methods: {', '.join(methods)}")
    return DetectResult(
        lead.phys_base,
        kernel_offset,
        lead.method,
        confidence,
        evidence,
        vmcoreinfo,
        found,
        lead.arch,
        kernels,
        choice,
    )


Verdict = tuple[Candidate, tuple[Check, ...]]


def _run_strategies(
    model: DumpModel,
    memory: PhysicalMemory,
    strategies: Sequence[tuple[str, Strategy]],
    vmlinux_symbols: Mapping[str, int] | None,
    log: list[str],
    progress: Callable[[int, int], None] | None,
) -> list[Candidate]:
    """Every strategy's candidate, in order; each sees those found before it (``known``)."""
    found: list[Candidate] = []
    for index, (name, strategy) in enumerate(strategies):
        if progress is not None:
            progress(index, len(strategies))
        try:
            candidate = strategy(model, memory, vmlinux_symbols=vmlinux_symbols, log=log, known=tuple(found))
        except KdfixError as exc:  # a strategy should not raise on foreign data; keep going if one does
            miss(log, name, f"failed: {exc}")
            continue
        if candidate is not None:
            found.append(candidate)
    if progress is not None:
        progress(len(strategies), len(strategies))
    return found


def _validated(
    found: Sequence[Candidate],
    memory: PhysicalMemory,
    vmlinux_symbols: Mapping[str, int] | None,
    evidence: list[str],
) -> list[Verdict]:
    """The candidates whose checks (§4) accept them, with those checks; the evidence says why of every one."""
    verdicts: list[Verdict] = []
    for candidate in found:
        checks = validate_candidate(
            candidate, memory, vmcoreinfo=_reference_vmcoreinfo(candidate, found), vmlinux_symbols=vmlinux_symbols
        )
        verdicts.append((candidate, checks))
        evidence.extend(f"{candidate.method}: {line}" for line in candidate.evidence)
        evidence.extend(f"{candidate.method}: {check}" for check in checks if check.passed is not None)
    good = [(c, checks) for c, checks in verdicts if accepted(checks)]
    for candidate, _ in verdicts:
        if all(candidate is not c for c, _ in good):
            evidence.append(f"{candidate.method}: rejected phys_base {candidate.phys_base:#x}")
    return good


def _agreeing_groups(good: Sequence[Verdict], order: Mapping[str, int]) -> list[list[Verdict]]:
    """Validated candidates grouped by agreement, the best supported group first (most methods, then the
    preferred method), each group in preference order."""
    groups: list[list[Verdict]] = []
    for item in good:
        for group in groups:
            if all(_agrees(item[0], other) for other, _ in group):
                group.append(item)
                break
        else:
            groups.append([item])
    groups.sort(key=lambda g: (-len({c.method for c, _ in g}), min(order.get(c.method, 99) for c, _ in g)))
    groups[0].sort(key=lambda item: order.get(item[0].method, 99))
    return groups


def _confidence(best: Sequence[Verdict], groups: Sequence[Sequence[Verdict]], evidence: list[str]) -> Confidence:
    """high: two methods and a decisive check; medium: one of those; low: neither; a disagreeing group lowers
    high to medium (and is named in the evidence)."""
    methods = {c.method for c, _ in best}
    is_confirmed = any(confirmed(checks) for _, checks in best)
    confidence: Confidence
    if len(methods) >= 2 and is_confirmed:
        confidence = "high"
    elif len(methods) >= 2 or is_confirmed:
        confidence = "medium"
    else:
        confidence = "low"
    if len(groups) > 1:
        evidence.append(
            "validated candidates disagree: "
            + "; ".join(f"{g[0][0].method} {g[0][0].phys_base:#x}" for g in groups[1:])
        )
        if confidence == "high":
            confidence = "medium"
    return confidence


def _several_kernels(
    model: DumpModel,
    memory: PhysicalMemory,
    log: list[str],
    found: list[Candidate],
    kernels: Kernels,
    choice: Choice,
    vmlinux_symbols: Mapping[str, int] | None,
) -> DetectResult:
    """The result for a dump with several kernels: the chosen kernel's values, and every kernel as evidence.

    Candidates are checked against the VMCOREINFO of the kernel they agree with, not one picked by order.
    """
    chosen = choice.kernel
    assert chosen is not None
    evidence = list(log) + [f"kernels: {line}" for line in kernels.evidence]
    for k in kernels.kernels:
        evidence.append(f"kernels: {k.summary()}: " + "; ".join(k.evidence))
    agreeing: list[str] = []
    arch: str | None = None
    for candidate in found:
        own = next((k for k in kernels.kernels if _agrees(candidate, _as_candidate(k))), None)
        info = VmcoreInfo.parse(own.vmcoreinfo) if own is not None else _reference_vmcoreinfo(candidate, found)
        checks = validate_candidate(candidate, memory, vmcoreinfo=info, vmlinux_symbols=vmlinux_symbols)
        evidence.extend(f"{candidate.method}: {line}" for line in candidate.evidence)
        evidence.extend(f"{candidate.method}: {check}" for check in checks if check.passed is not None)
        belongs = own.summary() if own is not None else "no kernel found in memory"
        evidence.append(f"{candidate.method}: phys_base {candidate.phys_base:#x} belongs to: {belongs}")
        if own is chosen and accepted(checks):
            agreeing.append(candidate.method)
            arch = arch or candidate.arch
    methods = list(dict.fromkeys(agreeing)) or ["vmcoreinfo_scan"]
    if arch is None:  # no strategy found the chosen kernel (e.g. an arm64 capture kernel): its own VMCOREINFO says
        recognised = recognise(model, VmcoreInfo.parse(chosen.vmcoreinfo))
        arch = recognised.arch.name if recognised is not None else None
    confidence: Confidence = "medium" if choice.ambiguous else "high"
    evidence.append(f"chosen: the {chosen.role} kernel (phys_base {chosen.phys_base:#x}): {choice.reason}")
    evidence.append(f"agreeing methods: {', '.join(methods)}")
    return DetectResult(
        chosen.phys_base, chosen.kernel_offset, methods[0], confidence, evidence, chosen.vmcoreinfo, found, arch,
        kernels, choice,
    )  # fmt: skip


def _as_candidate(k: Kernel) -> Candidate:
    return Candidate("kernels", k.phys_base, k.kernel_offset, k.vmcoreinfo)
