"""The header utsname every writer stores (kdfix.write.utsname), and convert's use of it.

Expected values come from notes-and-vmcoreinfo.md §6 (libkdumpfile's sanity rules and machine table) and from the
synthetic kernel's declared init_uts_ns strings, never from the code under test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import kdfix
from kdfix.format.constants import EM_386, EM_AARCH64, EM_X86_64
from kdfix.generate import synthetic
from kdfix.generate.synthetic import build_linux_image
from kdfix.model import DumpModel, make_utsname
from kdfix.read.memory import DictMemory
from kdfix.units import cstr
from kdfix.write import write_elf, write_kdump
from kdfix.write.convert import convert
from kdfix.write.utsname import choose_utsname, is_sane, utsname_fields

MiB = 1 << 20
# notes-and-vmcoreinfo.md §6: the machine strings libkdumpfile maps to each architecture
LIBKDUMPFILE_MACHINES = {EM_X86_64: {"x86_64"}, EM_AARCH64: {"aarch64", "arm64"}, EM_386: {"i386", "i586", "i686"}}


@pytest.fixture(scope="module")
def image():  # type: ignore[no-untyped-def]
    return build_linux_image(memory_size=32 * MiB, firmware=False, release="6.1.0-uts-test")


def _blank(model: DumpModel, machine: str = "") -> DumpModel:
    return dataclasses.replace(model, utsname=make_utsname(machine=machine))


def _strings(fields: dict[str, bytes]) -> dict[str, str]:
    return {name: cstr(raw) for name, raw in fields.items()}


def test_a_sane_utsname_is_kept(image) -> None:  # type: ignore[no-untyped-def]
    model, memory, _ = image
    choice = choose_utsname(model, memory)
    assert choice.fields is None and "sane" in choice.source


def test_the_kernels_init_uts_ns_comes_first(image) -> None:  # type: ignore[no-untyped-def]
    """QEMU's header (machine only) is replaced by the kernel's own strings, read from memory."""
    model, memory, truth = image
    choice = choose_utsname(_blank(model, "x86_64"), memory)
    assert choice.fields is not None and "init_uts_ns" in choice.source
    assert _strings(choice.fields) == {
        "sysname": "Linux",
        "nodename": synthetic.UTS_NODENAME,
        "release": truth.release,
        "version": synthetic.UTS_VERSION,
        "machine": "x86_64",
        "domainname": synthetic.UTS_DOMAINNAME,
    }
    assert is_sane(choice.fields)


def test_a_kernel_structure_that_disagrees_with_vmcoreinfo_is_not_used(image) -> None:  # type: ignore[no-untyped-def]
    """init_uts_ns holding another release is refused (and said so); OSRELEASE is used instead."""
    model, memory, truth = image
    other = truth.vmcoreinfo.replace(f"OSRELEASE={truth.release}".encode(), b"OSRELEASE=6.1.0-other")
    choice = choose_utsname(dataclasses.replace(_blank(model), vmcoreinfo=other), memory)
    assert choice.fields is not None and choice.source == "VMCOREINFO OSRELEASE"
    assert any("init_uts_ns" in m for m in choice.messages)
    got = _strings(choice.fields)
    assert got["release"] == "6.1.0-other" and got["sysname"] == "Linux" and got["machine"] == "x86_64"
    assert is_sane(choice.fields)


@pytest.mark.parametrize("e_machine", sorted(LIBKDUMPFILE_MACHINES))
def test_osrelease_and_the_architectures_machine(e_machine: int) -> None:
    """Without memory: OSRELEASE and a machine string libkdumpfile maps to the dump's architecture."""
    model = DumpModel(e_machine=e_machine, vmcoreinfo=b"OSRELEASE=6.1.0-arch\nPAGESIZE=4096\n")
    choice = choose_utsname(model, None)
    assert choice.fields is not None
    got = _strings(choice.fields)
    assert got["release"] == "6.1.0-arch" and got["machine"] in LIBKDUMPFILE_MACHINES[e_machine]
    assert is_sane(choice.fields)


def test_unknown_architecture_keeps_the_header_and_says_why() -> None:
    """No ELF machine, notes or arch-specific VMCOREINFO key: no machine is guessed (never an x86_64 default)."""
    model = DumpModel(vmcoreinfo=b"OSRELEASE=6.1.0-arch\nPAGESIZE=4096\n")
    choice = choose_utsname(model, None)
    assert choice.fields is None and "architecture" in choice.source


def test_no_vmcoreinfo_keeps_the_header() -> None:
    choice = choose_utsname(DumpModel(e_machine=EM_X86_64), None)
    assert choice.fields is None and "VMCOREINFO" in choice.source


# ---- convert -----------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, str]:
    with kdfix.open_dump(path) as dump:
        return _strings(utsname_fields(dump.model.utsname))


def test_elf_to_kdump_fills_utsname_from_the_kernel(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, memory, truth = image
    write_elf(tmp_path / "in.elf", model, memory)
    result = convert([tmp_path / "in.elf"], tmp_path / "out", to="kdump")
    assert "init_uts_ns" in result.utsname
    got = _header(tmp_path / "out")
    assert got["release"] == truth.release and got["version"] == synthetic.UTS_VERSION
    assert got["nodename"] == synthetic.UTS_NODENAME and got["machine"] == "x86_64"


def test_elf_to_split_fills_every_parts_utsname(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, memory, truth = image
    write_elf(tmp_path / "in.elf", model, memory)
    result = convert([tmp_path / "in.elf"], tmp_path / "out", to="kdump", split=2)
    for part in result.outputs:
        assert _header(Path(part))["release"] == truth.release


def test_kdump_input_keeps_its_header_unless_asked(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A container change keeps the header (as makedumpfile -R does); --utsname auto fills it, also when a
    flattened input would otherwise be reassembled record by record."""
    model, memory, truth = image
    write_kdump(tmp_path / "in", _blank(model, "x86_64"), memory, flat=True)
    kept = convert([tmp_path / "in"], tmp_path / "kept", flat=False)
    assert kept.utsname.startswith("kept")
    assert _header(tmp_path / "kept")["release"] == ""
    filled = convert([tmp_path / "in"], tmp_path / "filled", flat=False, utsname="auto")
    assert "init_uts_ns" in filled.utsname
    assert _header(tmp_path / "filled")["release"] == truth.release


def test_unknown_utsname_mode_is_refused(image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, memory, _ = image
    write_kdump(tmp_path / "in", model, memory)
    with pytest.raises(kdfix.KdfixError, match="utsname"):
        convert([tmp_path / "in"], tmp_path / "out", utsname="guess")


def test_i386_elf_to_kdump_gets_the_32bit_header(tmp_path: Path) -> None:
    """QEMU writes ELF64 for i386 guests; i386 makedumpfile and crash read only the 32-bit KDUMP header
    (arch-kernels-and-introspection.md §2.6), so that is what convert writes, with the i386 machine."""
    pages = {pfn: bytes([pfn]) * 4096 for pfn in range(1, 9)}
    model = DumpModel(e_machine=EM_386, vmcoreinfo=b"OSRELEASE=6.1.0-i386\nPAGESIZE=4096\n", max_mapnr=16)
    write_elf(tmp_path / "in.elf", model, DictMemory(pages, max_pfn=16))
    convert([tmp_path / "in.elf"], tmp_path / "out", to="kdump")
    with kdfix.open_dump(tmp_path / "out") as dump:
        assert dump.model.abi.word_size == 4
        assert dict(dump.memory.iter_pages()) == pages
    got = _header(tmp_path / "out")
    assert got["release"] == "6.1.0-i386" and got["machine"] in LIBKDUMPFILE_MACHINES[EM_386]
