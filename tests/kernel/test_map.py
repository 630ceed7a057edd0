"""``kdfix map``: page runs cover every pfn once and agree with the bitmaps; the SVG, parsed and rendered headless
to PNG, draws exactly the regions the JSON lists."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import build_app
from kdfix.read.probe import open_dump
from tests.cli.test_json_shapes import assert_documented
from tests.oracle.fixtures import require_tool


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
