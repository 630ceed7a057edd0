"""``kdfix generate``: write a synthetic dump (``--style linux``: a Linux-like x86_64, aarch64 or i386 image with the
notes QEMU writes) or re-emit one as QEMU would (``--style qemu``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix import __version__
from kdfix.cli.output import EXIT_UNUSABLE, JsonFlag, fail, handle_errors, print_json, stdout
from kdfix.units import to_s64

if TYPE_CHECKING:
    from kdfix.generate.synthetic import SparseMemory, SyntheticTruth
    from kdfix.model import DumpModel
    from kdfix.notes.framing import Note

CODEC_CHOICES = ("zlib", "lzo", "snappy", "zstd", "none")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``96M``, ``1G``, ``65536``, ``128MiB`` → bytes (binary units)."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"bad size {text!r} (use e.g. 96M, 1G or a byte count)")
    return int(m[1]) * _UNITS[m[2].lower()]


def parse_signed_u64(text: str) -> int:
    """A signed value from decimal or 0x-hex, negative allowed; 64-bit two's complement is read as negative."""
    try:
        value = int(text.strip().replace("_", ""), 0)
    except ValueError:
        raise ValueError(f"bad number {text!r}") from None
    if not -(1 << 63) <= value < (1 << 64):
        raise ValueError(f"{text!r} is not a 64-bit value")
    return to_s64(value)


@dataclass(frozen=True)
class GenerateOptions:
    """What the command line asked for (shared by every style)."""

    output: Path
    memory_size: int
    cpus: int
    phys_base: int | None  # None: the architecture's default (0; aarch64 PHYS_OFFSET = the DRAM base)
    kaslr_offset: int
    release: str
    codec: str
    flat: bool
    vmcoreinfo: bool
    seed: int
    mark: bool
    source: Path | None = None  # --style qemu
    raw: bool = False  # --style qemu
    qemu_version: str = "7.2"  # --style qemu
    workers: int = 1  # --style qemu
    firmware: bool = True  # --style linux: dump the PC firmware ROM below 4 GiB too, as QEMU does
    # --style linux: the guest architecture (None: x86_64); --style qemu: the qemu-system-<arch> that took the dump
    # (None: the dump's own)
    arch: str | None = None


def kdfix_mark_note(style: str, opts: GenerateOptions) -> Note:
    """The KDFIX note that makes ``kdfix info`` report origin kdfix."""
    from kdfix.format.constants import NOTE_NAME_KDFIX, NOTE_TYPE_KDFIX
    from kdfix.notes.framing import Note

    text = f"kdfix {__version__} generate --style {style} seed={opts.seed}\n"
    return Note(NOTE_NAME_KDFIX, NOTE_TYPE_KDFIX, text.encode())


def generate_linux(opts: GenerateOptions) -> dict[str, Any]:
    """Build the synthetic Linux image and write it with the KDUMP writer (atomic output)."""
    import dataclasses

    from kdfix.arch import get_arch
    from kdfix.write import atomic_output, write_kdump
    from kdfix.write.recheck import recheck

    arch = get_arch(opts.arch or "x86_64").name
    model, memory, truth = _linux_image(arch, opts)
    if opts.mark:
        model = dataclasses.replace(model, notes=(*model.notes, kdfix_mark_note("linux", opts)))
    with atomic_output(opts.output) as tmp:
        result = write_kdump(tmp, model, memory, codec=opts.codec, flat=opts.flat, phys_base_from_vmcoreinfo=False)
        recheck(tmp, what="the generated dump")
    written = {
        "path": str(opts.output),
        "style": "linux",
        "arch": arch,
        "size": result.size,
        "pages": result.pages,
        "zero_pages": result.zero_pages,
        "compressed_pages": result.compressed_pages,
        "raw_pages": result.raw_pages,
        "codec": opts.codec,
        "flat": opts.flat,
        "cpus": opts.cpus,
        "memory_size": opts.memory_size,
        "firmware": opts.firmware,
        "max_mapnr": memory.max_pfn,
    }
    placed = _linux_truth(opts, truth, header_phys_base=model.phys_base)
    return written | placed | {"seconds": round(result.seconds, 3)}


def _linux_image(arch: str, opts: GenerateOptions) -> tuple[DumpModel, SparseMemory, SyntheticTruth]:
    """(model, memory, truth) of the synthetic image; a bad size or offset is a one-line error."""
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.generate.synthetic_arch import build_arch_image

    # Each builder's keywords spelled out, not one shared **dict: type checkers and help() see every call.
    try:
        if arch == "x86_64":
            return build_linux_image(
                memory_size=opts.memory_size,
                cpus=opts.cpus,
                phys_base=opts.phys_base or 0,
                kaslr_offset=opts.kaslr_offset,
                release=opts.release,
                seed=opts.seed,
                vmcoreinfo_in_notes=opts.vmcoreinfo,
                firmware=opts.firmware,
            )
        return build_arch_image(
            arch,
            memory_size=opts.memory_size,
            cpus=opts.cpus,
            phys_base=opts.phys_base,
            kaslr_offset=opts.kaslr_offset,
            release=opts.release,
            seed=opts.seed,
            vmcoreinfo_in_notes=opts.vmcoreinfo,
            firmware=opts.firmware,
        )
    except ValueError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None


def _linux_truth(opts: GenerateOptions, truth: SyntheticTruth, *, header_phys_base: int) -> dict[str, Any]:
    """What the generator put where: the answers detect and fix are tested against."""
    return {
        "release": truth.release,
        "vmcoreinfo_in_notes": opts.vmcoreinfo,
        "phys_base": truth.phys_base,
        "phys_base_signed": truth.phys_base_signed,
        "header_phys_base": header_phys_base,
        "kernel_offset": truth.kaslr_offset,
        "text_paddr": truth.text_paddr,
        "text_vaddr": truth.text_vaddr,
        "init_uts_ns": truth.init_uts_ns,
        "swapper_pg_dir": truth.swapper_pg_dir,
        "linux_banner": truth.linux_banner,
        "vmcoreinfo_note_paddr": truth.vmcoreinfo_note_paddr,
        "vmcoreinfo_data_paddr": truth.vmcoreinfo_data_paddr,
    }


def generate_qemu(opts: GenerateOptions) -> dict[str, Any]:
    """``--style qemu --from SOURCE``: QEMU's own kdump output for SOURCE (kdfix.cli.generate_qemu)."""
    from kdfix.cli.generate_qemu import generate_qemu_style

    return generate_qemu_style(
        source=opts.source,
        output=opts.output,
        compress=opts.codec,
        raw=opts.raw,
        qemu_version=opts.qemu_version,
        workers=opts.workers,
        mark=opts.mark,
        qemu_target=opts.arch,
    )


# --style NAME → handler; add a style by adding a row.
STYLES: dict[str, Callable[[GenerateOptions], dict[str, Any]]] = {
    "linux": generate_linux,
    "qemu": generate_qemu,
}


# The options of ``kdfix generate``, declared once here so that the command reads as its signature.
OutputOption = Annotated[Path, typer.Option("-o", "--output", help="Output dump path (written atomically).")]
StyleOption = Annotated[str, typer.Option("--style", help="linux (synthetic Linux image) or qemu.")]
MemoryOption = Annotated[str, typer.Option("--memory", help="Guest memory size, e.g. 96M, 1G.")]
CpusOption = Annotated[int, typer.Option("--cpus", min=1, max=1024, help="Number of vCPUs.")]
PhysBaseOption = Annotated[
    str | None,
    typer.Option(
        "--phys-base",
        help="The header phys_base meaning (x86_64 phys_base, aarch64 PHYS_OFFSET; i386 has none): decimal "
        "or 0x-hex, negative or u64 two's complement. Default 0 (aarch64: the DRAM base 0x40000000).",
    ),
]
KaslrOption = Annotated[str, typer.Option("--kaslr-offset", help="KERNELOFFSET (2 MiB multiple).")]
ReleaseOption = Annotated[str, typer.Option("--release", help="OSRELEASE / utsname release.")]
CompressOption = Annotated[str, typer.Option("--compress", help="zlib, lzo, snappy, zstd or none.")]
FlatOption = Annotated[bool, typer.Option("--flat", help="Write a flattened (makedumpfile -F) stream.")]
NoVmcoreinfoOption = Annotated[
    bool, typer.Option("--no-vmcoreinfo", help="Omit the VMCOREINFO note (QEMU without the device).")
]
NoFirmwareOption = Annotated[
    bool,
    typer.Option(
        "--no-firmware",
        help="--style linux: RAM only (no BIOS ROM at 0xfffc0000, max_mapnr = RAM pages); such coverage is "
        "makedumpfile's, so with VMCOREINFO kdfix info reports origin makedumpfile.",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the page contents.")]
MarkOption = Annotated[bool, typer.Option("--mark", help="Add a KDFIX note (kdfix info reports origin kdfix).")]
FromOption = Annotated[
    Path | None, typer.Option("--from", help="--style qemu: the dump (ideally QEMU's ELF) to re-emit.")
]
RawOption = Annotated[bool, typer.Option("--raw", help="--style qemu: kdump-raw-* layout (QEMU >= 8.2).")]
QemuVersionOption = Annotated[
    str, typer.Option("--qemu-version", help="--style qemu: QEMU release to imitate (default 7.2).")
]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="--style qemu: compression processes.")]
ArchOption = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="--style linux: the guest architecture, x86_64 (default), aarch64 or i386. --style qemu: the "
        "qemu-system-ARCH that took the dump; default the dump's own. Use x86_64 for an EM_386 dump taken "
        "by qemu-system-x86_64 (QEMU < 8.0 writes its name into utsname.machine).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("generate")
    @handle_errors
    def generate_command(
        output: OutputOption,
        style: StyleOption = "linux",
        memory: MemoryOption = "96M",
        cpus: CpusOption = 1,
        phys_base: PhysBaseOption = None,
        kaslr_offset: KaslrOption = "0",
        release: ReleaseOption = "6.1.0-kdfix-synthetic",
        compress: CompressOption = "zlib",
        flat: FlatOption = False,
        no_vmcoreinfo: NoVmcoreinfoOption = False,
        no_firmware: NoFirmwareOption = False,
        seed: SeedOption = 0,
        mark: MarkOption = False,
        source: FromOption = None,
        raw: RawOption = False,
        qemu_version: QemuVersionOption = "7.2",
        workers: WorkersOption = 1,
        arch: ArchOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Generate a dump; without --mark an x86_64 --style linux dump has QEMU's headers and notes (kdfix info:
        origin "qemu-style (generated?)" when its synthetic kernel or BIOS shows)."""
        if style not in STYLES:
            raise fail(f"unknown style {style!r} (choose from {', '.join(STYLES)})", EXIT_UNUSABLE)
        if compress not in CODEC_CHOICES:
            raise fail(f"unknown codec {compress!r} (choose from {', '.join(CODEC_CHOICES)})", EXIT_UNUSABLE)
        try:
            opts = GenerateOptions(
                output=output,
                memory_size=parse_size(memory),
                cpus=cpus,
                phys_base=None if phys_base is None else parse_signed_u64(phys_base),
                kaslr_offset=parse_signed_u64(kaslr_offset),
                release=release,
                codec=compress,
                flat=flat,
                vmcoreinfo=not no_vmcoreinfo,
                seed=seed,
                mark=mark,
                source=source,
                raw=raw,
                qemu_version=qemu_version,
                workers=workers,
                firmware=not no_firmware,
                arch=arch,
            )
        except ValueError as exc:
            raise fail(str(exc), EXIT_UNUSABLE) from None
        info = STYLES[style](opts)
        if as_json:
            print_json(info)
        else:
            _print_summary(info)


def _print_summary(info: dict[str, Any]) -> None:
    """The human lines of ``kdfix generate`` (the JSON has everything)."""
    stdout.print(
        f"wrote {info['path']} ({info['size']} bytes, {info['pages']} pages, {info.get('codec', '')})",
        markup=False,
        soft_wrap=True,
    )
    if "phys_base" in info:
        stdout.print(
            f"phys_base {info['phys_base']:#x} ({info['phys_base_signed']}), "
            f"kernel_offset {info['kernel_offset']:#x}, _text at PA {info['text_paddr']:#x}",
            markup=False,
            soft_wrap=True,
        )
