"""``kdfix generate --style qemu``: the handler called from :mod:`kdfix.cli.generate` (kdfix.generate.qemu)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kdfix.cli.output import EXIT_UNUSABLE, fail


def generate_qemu_style(
    *,
    source: Path | None,
    output: Path,
    compress: str = "zlib",
    raw: bool = False,
    qemu_version: str = "7.2",
    workers: int = 1,
    mark: bool = False,
    qemu_target: str | None = None,
) -> dict[str, Any]:
    """Write QEMU's ``dump-guest-memory`` kdump output for SOURCE; returns the JSON-able summary."""
    from kdfix.generate.qemu import QEMU_COMPRESSORS, generate_qemu

    if source is None:
        raise fail("--style qemu needs --from SOURCE (an ELF dump, ideally QEMU's own, or any dump kdfix reads)")
    if compress not in QEMU_COMPRESSORS:
        raise fail(f"QEMU compresses with {', '.join(QEMU_COMPRESSORS)}, not {compress!r}", EXIT_UNUSABLE)
    if workers < 1:
        raise fail("--workers must be at least 1", EXIT_UNUSABLE)
    t0 = time.perf_counter()
    res = generate_qemu(
        source,
        output,
        compress=compress,
        raw=raw,
        qemu_version=qemu_version,
        workers=workers,
        mark=mark,
        qemu_target=qemu_target,
    )
    return {
        "path": res.path,
        "style": "qemu",
        "source": str(source),
        "format": res.format,
        "qemu_version": res.qemu_version,
        "arch": res.arch,
        "qemu_target": res.qemu_target,
        "size": res.file_size,
        "dump_size": res.dump_size,
        "records": res.records,
        "pages": res.pages,
        "zero_pages": res.zero_pages,
        "compressed_pages": res.compressed_pages,
        "raw_pages": res.raw_pages,
        "codec": compress,
        "flat": not raw,
        "cpus": res.nr_cpus,
        "max_mapnr": res.max_mapnr,
        "note_size": res.note_size,
        "header_phys_base": res.phys_base,
        "vmcoreinfo": res.vmcoreinfo,
        "marked": res.marked,
        "workers": res.workers,
        "seconds": round(time.perf_counter() - t0, 3),
    }
