"""Synthetic dumps for batch tests: built once per session from kdfix.generate.synthetic + kdfix.write, then copied."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from kdfix.generate.synthetic import build_linux_image
from kdfix.write import write_elf, write_kdump, write_split

MiB = 1 << 20
PHYS_BASE = 0x200000  # the synthetic kernel's true phys_base; the header carries QEMU's misparse of it


@dataclass(frozen=True)
class Templates:
    """Session-wide dumps: ``broken`` needs a header fix (wrong phys_base), ``good`` needs none."""

    broken: Path
    good: Path
    flat: Path
    elf: Path
    split: tuple[Path, ...]
    phys_base: int


def make_templates(d: Path) -> Templates:
    """Write the template dumps into directory ``d``."""
    model, mem, truth = build_linux_image(memory_size=32 * MiB, phys_base=PHYS_BASE, qemu_header_bug=True)
    assert model.phys_base != truth.phys_base  # the bug the fix must correct
    write_kdump(d / "broken.kdump", model, mem, phys_base_from_vmcoreinfo=False)
    write_kdump(d / "good.kdump", model, mem)  # header phys_base from VMCOREINFO: nothing to fix
    write_kdump(d / "broken.flat", model, mem, flat=True, phys_base_from_vmcoreinfo=False)
    write_elf(d / "core.elf", model, mem)
    parts = tuple(d / f"split.{i}" for i in (1, 2, 3))
    write_split(list(parts), model, mem, phys_base_from_vmcoreinfo=False)
    return Templates(d / "broken.kdump", d / "good.kdump", d / "broken.flat", d / "core.elf", parts, truth.phys_base)


def put(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (parents created)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def build_archive(root: Path, t: Templates) -> dict[str, str]:
    """A nested archive with arbitrary names; returns {relative path: what it is}."""
    layout = {
        "case-001/vmcore": t.broken,
        "case-001/notes.txt": None,
        "case-002/2024/x/dump.bin": t.broken,
        "case-002/flat-stream": t.flat,
        "case-003/already-fine": t.good,
        "case-003/elfcore": t.elf,
        "weird name (copy)/a b": t.broken,
    }
    kinds: dict[str, str] = {}
    for rel, src in layout.items():
        if src is None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("customer notes\n")
            kinds[rel] = "text"
        else:
            put(src, root / rel)
            kinds[rel] = src.name
    for i, part in enumerate(t.split, 1):
        put(part, root / "case-004" / f"part-{'cab'[i - 1]}")
    kinds["case-004/part-c"] = "split"  # lowest range first: part 1 was written as part-c
    # a truncated dump (header intact, data cut) and a non-core ELF
    data = t.broken.read_bytes()
    (root / "case-005").mkdir()
    (root / "case-005/truncated").write_bytes(data[: 3 * 4096 + 100])
    (root / "case-005/prog").write_bytes(Path(os.path.realpath(sys.executable)).read_bytes()[:8192])
    kinds["case-005/truncated"] = "truncated"
    kinds["case-005/prog"] = "elf-exec"
    return kinds
