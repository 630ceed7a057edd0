"""``kdfix convert``: rewrite a dump as kdump / flattened / split / ELF, with another codec, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdfix.cli.output import JsonFlag, handle_errors, print_json, progress_bar, stdout

if TYPE_CHECKING:
    from kdfix.write.convert import ConvertResult

CODEC_NAMES = ("zlib", "lzo", "snappy", "zstd", "none")


# The options of ``kdfix convert``, declared once here so that the command reads as its signature.
InputsArgument = Annotated[list[Path], typer.Argument(metavar="IN...", help="Dump file; several = one split set.")]
OutputOption = Annotated[
    Path, typer.Option("-o", "--output", metavar="OUT", help="Output file (with --split: OUT.1..OUT.N).")
]
ToOption = Annotated[
    str | None, typer.Option("--to", metavar="kdump|elf", help="kdump or elf (default: the input's kind).")
]
CompressOption = Annotated[
    str | None,
    typer.Option("--compress", metavar="CODEC", help="zlib, lzo, snappy, zstd or none (default: the input's)."),
]
FlatOption = Annotated[bool | None, typer.Option("--flat/--no-flat", help="Flattened stream (default: as the input).")]
SplitOption = Annotated[int | None, typer.Option("--split", min=1, help="Write N split parts OUT.1..OUT.N.")]
DumpLevelOption = Annotated[
    int | None,
    typer.Option(
        "--dump-level",
        "-d",
        metavar="0-31",
        min=0,
        max=31,
        help="Exclude pages as makedumpfile -d does, the sum of: 1 zero, 2 non-private cache, "
        "4 cache incl. private, 8 user, 16 free. 1 is judged by content (KDUMP output shares one zero "
        "page, ELF leaves them out); 2-16 from the kernel's struct pages via VMCOREINFO, from the "
        "file or recovered from memory. Default: keep the input's pages.",
    ),
]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Compression processes.")]
UtsnameOption = Annotated[
    str | None,
    typer.Option(
        "--utsname",
        metavar="auto|keep",
        help="auto: fill a header utsname that is not sane from the kernel's init_uts_ns or VMCOREINFO; "
        "keep: the input's (default: auto for ELF input, keep for KDUMP).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("convert")
    @handle_errors
    def convert_command(
        inputs: InputsArgument,
        output: OutputOption,
        to: ToOption = None,
        compress: CompressOption = None,
        flat: FlatOption = None,
        split: SplitOption = None,
        dump_level: DumpLevelOption = None,
        workers: WorkersOption = 1,
        utsname: UtsnameOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Convert IN... to OUT; with no options the output keeps the input's container and codec.

        With --dump-level the header's dump_level is set and --json reports the pages excluded per class.
        Pages are passed through undecoded when the codec is unchanged, so converting a flattened file
        with --no-flat gives the bytes `makedumpfile -R` gives. The output is written to a temp file
        beside OUT and renamed over it only when complete; it keeps the input's file mode.
        """
        if compress is not None and compress not in CODEC_NAMES:
            raise typer.BadParameter(f"{compress!r} is not one of {', '.join(CODEC_NAMES)}", param_hint="--compress")
        if utsname is not None and utsname not in ("auto", "keep"):
            raise typer.BadParameter(f"{utsname!r} is not auto or keep", param_hint="--utsname")
        if to is not None and to not in ("kdump", "elf"):
            raise typer.BadParameter(f"{to!r} is not kdump or elf", param_hint="--to")
        from kdfix.write.convert import convert

        with progress_bar("convert", None) as progress:
            result = convert(
                [str(p) for p in inputs],
                output,
                to=to,
                codec=compress,
                flat=flat,
                split=split,
                dump_level=dump_level,
                workers=workers,
                progress=progress,
                utsname=utsname,
            )
        if as_json:
            print_json(result)
        else:
            _print_summary(result)


def _print_summary(result: ConvertResult) -> None:
    """The human lines of ``kdfix convert`` (the JSON has everything)."""
    outs = ", ".join(result.outputs)
    stdout.print(
        f"{outs}: {result.container} {result.codec}, {result.pages} pages "
        f"({result.zero_pages} zero, {result.raw_pages} raw, {result.compressed_pages} compressed), "
        f"{result.bytes} bytes in {result.seconds:.2f} s" + _excluded_text(result.excluded),
        markup=False,
        soft_wrap=True,
    )
    if result.utsname:
        stdout.print(f"utsname: {result.utsname}", markup=False, soft_wrap=True)
    for line in result.messages:
        stdout.print(line, markup=False, soft_wrap=True)


def _excluded_text(excluded: dict[str, int] | None) -> str:
    if excluded is None:
        return ""
    return (
        "; excluded " + ", ".join(f"{count} {name}" for name, count in excluded.items() if count)
        if any(excluded.values())
        else "; excluded nothing by struct page"
    )
