"""kdfix.arch: recognising a dump's architecture from each clue, the refusal of unknown ones, and kernel_reader."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.arch import ARCHES, default_machine, get_arch, identify, kernel_reader, recognise
from kdfix.errors import AddressError, UnsupportedError
from kdfix.format.constants import EM_386, EM_AARCH64, EM_ARM, EM_X86_64, NOTE_NAME_CORE, NOTE_NAME_QEMU, NoteType
from kdfix.generate.synthetic import build_linux_image
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from tests.arch.guests import aarch64_guest, i386_guest

MiB = 1 << 20


def prstatus_model(size: int, **kw) -> DumpModel:
    return DumpModel(notes=(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes(size)),), **kw)


@pytest.mark.parametrize(("e_machine", "name"), [(EM_X86_64, "x86_64"), (EM_AARCH64, "aarch64"), (EM_386, "i386"),
                                                 (EM_ARM, "arm")])  # fmt: skip
def test_elf_machine(e_machine, name):
    assert identify(DumpModel(e_machine=e_machine)).name == name


@pytest.mark.parametrize(("size", "name"), [(336, "x86_64"), (392, "aarch64"), (144, "i386"), (148, "arm")])
def test_prstatus_size(size, name):
    """Sizes from arch-kernels-and-introspection.md §1.8, §2.5 and notes-and-vmcoreinfo.md §2."""
    found = recognise(prstatus_model(size))
    assert found is not None and found.arch.name == name and f"{size} bytes" in found.evidence[0]


@pytest.mark.parametrize(("machine", "name"), [("x86_64", "x86_64"), ("aarch64", "aarch64"), ("i686", "i386"),
                                               ("armv7l", "arm")])  # fmt: skip
def test_utsname_machine(machine, name):
    assert identify(DumpModel(utsname=make_utsname(machine=machine))).name == name


@pytest.mark.parametrize(("key", "name"), [("NUMBER(phys_base)=0", "x86_64"), ("NUMBER(kimage_voffset)=0x1", "aarch64"),
                                           ("CONFIG_X86_PAE=y", "i386")])  # fmt: skip
def test_vmcoreinfo_keys(key, name):
    model = DumpModel(vmcoreinfo=f"OSRELEASE=6.1\n{key}\n".encode())
    assert identify(model).name == name


def test_qemu_aarch64_block_size():
    """QEMU writes 64 KiB blocks on aarch64 and no QEMU CPU notes (§1.6): enough when nothing else tells."""
    assert identify(DumpModel(block_size=65536)).name == "aarch64"
    qemu_note = Note(NOTE_NAME_QEMU, 0, bytes(440))
    assert recognise(DumpModel(block_size=65536, notes=(qemu_note,))) is None


def test_unknown_is_refused_in_one_line():
    for model in (DumpModel(), DumpModel(utsname=make_utsname(machine="Unknown")), prstatus_model(100)):
        with pytest.raises(UnsupportedError) as err:
            identify(model)
        assert "\n" not in str(err.value) and "architecture" in str(err.value)
    with pytest.raises(UnsupportedError, match="unknown architecture 'sparc64'"):
        get_arch("sparc64")


def test_stronger_clue_wins_and_weaker_is_noted():
    model = dataclasses.replace(prstatus_model(392, e_machine=EM_AARCH64), utsname=make_utsname(machine="x86_64"))
    found = recognise(model)
    assert found is not None and found.arch.name == "aarch64"
    assert any("ignored" in e and "x86_64" in e for e in found.evidence)


def test_registry_names_and_machines():
    assert set(ARCHES) >= {"x86_64", "aarch64", "i386"}
    assert default_machine(get_arch("aarch64")) == "aarch64"
    assert default_machine(get_arch("i386")) == "i686"  # QEMU 7.2 and Debian's 686 kernels (§2.6)
    assert get_arch("i686") is get_arch("i386")


@settings(max_examples=10, deadline=None)
@given(st.booleans(), st.integers(0, 1000))
def test_kernel_reader_aarch64_reads_image_and_linear(kaslr, seed):
    model, memory, truth = aarch64_guest(kaslr=kaslr, seed=seed)
    kmem = kernel_reader(model, memory, truth.vmcoreinfo)
    assert kmem.arch.name == "aarch64" and kmem.phys_base == truth.phys_base
    assert kmem.read(truth.init_uts_ns, 5) == b"Linux"
    assert kmem.read(truth.init_uts_ns + 130, len(truth.release)) == truth.release.encode()
    # The image VA resolves by the walk; the linear alias of the same PA by the linear rule: same bytes.
    pa = kmem.vtop(truth.init_uts_ns)
    linear = 0xFFFF000000000000 + ((pa - truth.phys_base) & ((1 << 64) - 1))
    assert kmem.translate(linear).how == "rule" and kmem.walk(linear) == pa
    assert kmem.read(linear, 5) == b"Linux"
    with pytest.raises(AddressError):
        kmem.read(0xFFFF800000000000 - 0x1000, 8)  # below the image, unmapped


@pytest.mark.parametrize("pae", [True, False])
def test_kernel_reader_i386(pae):
    model, memory, truth = i386_guest(kaslr=True, pae=pae, seed=3)
    kmem = kernel_reader(model, memory, truth.vmcoreinfo)
    assert kmem.arch.name == "i386" and kmem.space.kernel_offset == truth.kernel_offset
    assert kmem.read(truth.init_uts_ns, 5) == b"Linux"
    assert kmem.vtop(truth.init_uts_ns) == truth.init_uts_ns - 0xC0000000


def test_kernel_reader_x86_64_matches_image_rule():
    model, memory, truth = build_linux_image(memory_size=128 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000)
    kmem = kernel_reader(model, memory)
    assert kmem.arch.name == "x86_64"
    assert kmem.read(truth.linux_banner, 13) == b"Linux version"
    assert kmem.vtop(truth.init_uts_ns) == (truth.init_uts_ns - 0xFFFFFFFF80000000 - 0x32200000) % (1 << 64)


def test_kernel_reader_refuses_without_vmcoreinfo_or_arch():
    with pytest.raises(UnsupportedError, match="no VMCOREINFO"):
        kernel_reader(DumpModel(), None)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="architecture"):
        kernel_reader(DumpModel(vmcoreinfo=b"OSRELEASE=6.1\n"), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "pc"), [(392, "pc"), (144, "eip"), (148, "pc"), (336, "rip")])
def test_prstatus_decoded_by_size(size, pc):
    """kdfix notes decodes every architecture's NT_PRSTATUS; the program counter sits where §1.8/§2.5 say."""
    from kdfix.format.layout import LP64_LE
    from kdfix.notes.prstatus import parse_prstatus, prstatus_arch

    offsets = {392: 368, 144: 120, 148: 132, 336: 112 + 16 * 8}
    width = 8 if size in (392, 336) else 4
    desc = bytearray(size)
    desc[offsets[size] : offsets[size] + width] = (0x1234).to_bytes(width, "little")
    record = parse_prstatus(bytes(desc), LP64_LE)
    assert getattr(record.pr_reg, pc) == 0x1234
    assert prstatus_arch(bytes(desc)) == {392: "aarch64", 144: "i386", 148: "arm", 336: "x86_64"}[size]


def test_prstatus_of_unknown_size_is_refused():
    from kdfix.errors import FormatError
    from kdfix.format.layout import LP64_LE
    from kdfix.notes.prstatus import parse_prstatus

    with pytest.raises(FormatError, match="100 bytes"):
        parse_prstatus(bytes(100), LP64_LE)
