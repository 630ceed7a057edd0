"""``kdfix map``: page runs cover every pfn once and agree with the bitmaps; the SVG, parsed and rendered headless
to PNG, draws exactly the regions the JSON lists: in the PNG, the pixel at each labelled region's x position (the
SVG's documented geometry: one row per RAM region, drawn at its own scale) has that region's colour. The
crashkernel reservation of the two-kernel guest is the one the first kernel showed in /proc/iomem."""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import build_app
from kdfix.kernel.memmap_svg import BAR, COLOURS, LEFT, ROW, WIDTH
from kdfix.read.probe import open_dump
from tests.cli.test_json_shapes import assert_documented
from tests.oracle.fixtures import require_tool
from tests.oracle.kexec_guest import KexecDumps


def _map(path: Path, svg: Path) -> dict:  # type: ignore[type-arg]
    res = CliRunner().invoke(build_app(["map"]), ["map", str(path), "--json", "--svg", str(svg)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_map_of_a_real_guest_matches_bitmaps_and_svg(tmp_path: Path, guest_panic) -> None:  # type: ignore[no-untyped-def]
    svg = tmp_path / "map.svg"
    data = _map(guest_panic.kdump_zlib, svg)
    assert_documented("map", set(data))
    runs = data["page_runs"]
    assert runs[0]["start_pfn"] == 0 and runs[-1]["end_pfn"] == data["max_pfn"]
    assert all(a["end_pfn"] == b["start_pfn"] for a, b in itertools.pairwise(runs))
    with open_dump(guest_panic.kdump_zlib) as dump:
        dumped = {(a, b) for a, b in dump.memory.dumped.iter_runs()}
        assert data["counts"]["data"] + data["counts"]["zero"] == dump.memory.dumped.count()
        zero = sum(1 for pfn in dump.memory.dumped.iter_set() if dump.memory.page(pfn) == bytes(4096))
    assert zero == data["counts"]["zero"]
    assert dumped  # the QEMU dump has RAM
    kinds = {r["kind"] for r in data["regions"]}
    assert {"ram", "kernel_image", "vmcoreinfo"} <= kinds

    tree = ET.parse(svg)
    drawn = {(e.get("data-kind"), int(e.get("data-start"), 16), int(e.get("data-end"), 16))
             for e in tree.iter() if e.get("data-kind") and e.get("data-kind") not in ("data", "zero", "excluded",
                                                                                        "hole")}  # fmt: skip
    listed = {(r["kind"], r["start"], r["end"]) for r in data["regions"] if r["kind"] != "ram"}
    assert drawn == listed
    texts = {t.text for t in tree.iter() if t.tag.endswith("text")}
    ram = [r for r in data["regions"] if r["kind"] == "ram"]
    assert {f"{r['start']:#x}" for r in ram} <= texts and {"kernel image", "vmcoreinfo"} <= texts

    require_tool("rsvg-convert")
    png = tmp_path / "map.png"
    subprocess.run([shutil.which("rsvg-convert") or "rsvg-convert", str(svg), "-o", str(png)], check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    width, pixels = _decode_png(png.read_bytes())
    assert width == WIDTH  # rendered at the SVG's own scale: one pixel per unit
    others = [r for r in data["regions"] if r["kind"] != "ram"]
    checked = set()
    for row, region in enumerate(ram):
        scale = (WIDTH - 2 * LEFT) / (region["end"] - region["start"])
        y = 40 + row * ROW + BAR + 2 + 4  # the middle of the 8-unit band of labelled regions under the row's bar
        for r in others:
            a, b = max(r["start"], region["start"]), min(r["end"], region["end"])
            if a >= b or (b - a) * scale < 4:
                continue  # not in this row, or too narrow to sample away from its antialiased edges
            x = int(LEFT + ((a + b) / 2 - region["start"]) * scale)
            paddr = region["start"] + (x + 0.5 - LEFT) / scale
            top = [o for o in others if o["start"] <= paddr < o["end"]][-1]  # drawn last, on top
            assert pixels[y][x] == _rgb(COLOURS[top["kind"]]), (r, x, y)
            checked.add(top["kind"])
    assert {"kernel_image", "firmware"} <= checked


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _decode_png(blob: bytes) -> tuple[int, list[list[tuple[int, int, int]]]]:
    """(width, rows of RGB pixels) of an 8-bit RGB/RGBA non-interlaced PNG, as rsvg-convert writes them."""
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(blob):
        (length,) = struct.unpack_from(">I", blob, pos)
        kind, body = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[list[tuple[int, int, int]]] = []
    prev = bytearray(stride)
    for y in range(height):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)])
        prev = line
    return width, rows


def test_map_labels_the_crashkernel_reservation(tmp_path: Path, kexec_guest: KexecDumps) -> None:
    data = _map(kexec_guest.kdump_zlib, tmp_path / "map.svg")
    (ck,) = [r for r in data["regions"] if r["kind"] == "crashkernel"]
    lo, hi = kexec_guest.crash_region  # /proc/iomem's "Crash kernel" of the first kernel
    assert (ck["start"], ck["end"]) == (lo, hi + 1)
    assert "crashkernel=256M" in ck["label"]
    image = next(r for r in data["regions"] if r["kind"] == "kernel_image")
    code = kexec_guest.first.kernel_code_start  # the map describes the crashed kernel, outside the reservation
    assert code <= image["start"] < code + (2 << 20)
    assert not lo <= image["start"] <= hi
