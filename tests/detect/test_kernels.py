"""Several kernels in one dump (kdfix/detect/kernels.py): roles, the shared choice, and the ELF core header a
kdump capture kernel boots with, on synthetic memory built from the declarations (arch-kernels-and-introspection.md
§3.3-§3.5). The real case (QEMU dumps of a running capture kernel) is tests/oracle/test_kexec_fix.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.detect.kernels import (
    CoreHeader,
    Kernel,
    Kernels,
    assign_roles,
    find_core_headers,
    notes_of_cpus,
    parse_elfcorehdr,
)
from kdfix.errors import KdfixError
from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, NoteType
from kdfix.format.elf import ELF_EHDR, ET_CORE, EV_CURRENT, PT_LOAD, PT_NOTE, e_ident, ehdr_layout, phdr_layout
from kdfix.format.layout import LP64_LE
from kdfix.notes.framing import Note, pack_notes
from kdfix.read.memory import DictMemory

PS = 4096
EM_X86_64 = 62
MIB = 1 << 20


def _kernel(phys_base: int, *, cpus: tuple[int, ...] = (), crashtime: int | None = None,
            header: CoreHeader | None = None, text_paddr: int | None = None) -> Kernel:  # fmt: skip
    text = b"OSRELEASE=6.1.0\nNUMBER(phys_base)=%d\n" % phys_base
    if crashtime is not None:
        text += b"CRASHTIME=%d\n" % crashtime
    return Kernel("unknown", phys_base, 0, text, (), text_paddr, cpus, crashtime, header)


def _header(paddr: int = 0x3EF5D000) -> CoreHeader:
    return CoreHeader(paddr, EM_X86_64, ((0x1000, 0x9F000), (0x100000, 0x2EF00000), (0x3F000000, 0xFE0000)),
                      0x11E8000, b"OSRELEASE=6.1.0\n", ())  # fmt: skip


RESERVATION = (0x2F000000, 0x3F000000)


def test_capture_kernel_dump_roles_and_choice() -> None:
    first = _kernel(0x8000000, cpus=(1,), crashtime=5, header=_header(), text_paddr=0x9000000)
    capture = _kernel(0x21200000, cpus=(0,), text_paddr=0x31600000)
    kernels = Kernels(tuple(assign_roles([capture, first], RESERVATION)))
    roles = {k.role: k for k in kernels.kernels}
    assert roles["crashed"].phys_base == 0x8000000 and roles["running"].phys_base == 0x21200000
    assert roles["running"].in_reservation is True and roles["crashed"].in_reservation is False
    assert not kernels.ambiguous
    crashed, running = kernels.choose("crashed"), kernels.choose("running")
    assert crashed.kernel is roles["crashed"] and not crashed.ambiguous and "ELF core header" in crashed.reason
    assert running.kernel is roles["running"] and not running.ambiguous
    assert (
        kernels.problem() == "two kernels in memory: crashed (phys_base 0x8000000) and capture (phys_base 0x21200000)"
    )


def test_negative_phys_base_is_shown_signed() -> None:
    first = _kernel((-0x19400000) & (2**64 - 1), header=_header(), text_paddr=0x9000000)
    capture = _kernel(0x20200000, cpus=(0,), text_paddr=0x30000000)
    problem = Kernels(tuple(assign_roles([first, capture], RESERVATION))).problem()
    assert problem is not None and "crashed (phys_base -0x19400000)" in problem


def test_crashtime_marks_the_crashed_kernel_without_a_core_header() -> None:
    first = _kernel(0x8000000, crashtime=7)
    capture = _kernel(0x21200000, cpus=(0,))
    kernels = Kernels(tuple(assign_roles([first, capture], None)))
    assert [k.role for k in kernels.kernels] == ["crashed", "running"]
    assert "CRASHTIME" in kernels.choose().reason and not kernels.choose().ambiguous


def test_one_kernel_is_only_whatever_is_wanted() -> None:
    kernels = Kernels(tuple(assign_roles([_kernel(0x1000000, cpus=(0, 1), crashtime=3)], None)))
    for wanted in ("crashed", "running"):
        choice = kernels.choose(wanted)  # type: ignore[arg-type]
        assert choice.kernel is not None and choice.kernel.role == "only" and not choice.ambiguous
    assert kernels.problem() is None


def test_unexplained_kernels_are_ambiguous_and_prefer_the_dumps_own_vmcoreinfo() -> None:
    a, b = _kernel(0x1000000), _kernel(0x3000000)
    kernels = Kernels(tuple(assign_roles([a, b], None)))
    assert [k.role for k in kernels.kernels] == ["unknown", "unknown"]
    choice = kernels.choose("crashed", file_vmcoreinfo=b.vmcoreinfo)
    assert choice.ambiguous and choice.kernel is not None and choice.kernel.phys_base == 0x3000000
    assert choice.reason.startswith("ambiguous: 2 kernels")


def test_bad_wanted_is_a_clear_error() -> None:
    with pytest.raises(KdfixError, match="--kernel"):
        Kernels().choose("first")  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.frozensets(st.integers(0, 3), max_size=2), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_choice_is_one_of_the_kernels_and_unambiguous_only_for_a_clean_pair(
    specs: list[tuple[bool, bool, frozenset[int], bool]],
) -> None:
    kernels_in = [
        _kernel(0x200000 * (i + 1), cpus=tuple(sorted(cpus)), crashtime=1 if crashed else None,
                header=_header() if described else None, text_paddr=0x30000000 if inside else 0x1000000)
        for i, (described, crashed, cpus, inside) in enumerate(specs)
    ]  # fmt: skip
    kernels = Kernels(tuple(assign_roles(kernels_in, RESERVATION)))
    roles = [k.role for k in kernels.kernels]
    assert len(roles) == len(specs)
    if len(specs) == 1:
        assert roles == ["only"]
    # a kernel a core header describes is always crashed; one the CPUs run and nothing marks crashed is running
    for k, (described, crashed, cpus, inside) in zip(kernels.kernels, specs, strict=True):
        if len(specs) > 1 and described:
            assert k.role == "crashed"
        if len(specs) > 1 and not described and not any(s[0] for s in specs) and not crashed and (cpus or inside):
            assert k.role == "running"
    for wanted in ("crashed", "running"):
        choice = kernels.choose(wanted)  # type: ignore[arg-type]
        assert any(choice.kernel is k for k in kernels.kernels)
        clean = len(specs) == 1 or sorted(roles) == ["crashed", "running"]
        assert choice.ambiguous is (not clean)
        if not choice.ambiguous and len(specs) > 1:
            assert choice.kernel is not None and choice.kernel.role == wanted


# ---------------------------------------------------------------------------------------------- core header


def _prstatus(pid: int) -> bytes:
    return pid.to_bytes(4, "little").rjust(36, b"\0").ljust(336, b"\xab")


def _ehdr(phnum: int) -> bytes:
    eh, ph = ehdr_layout(LP64_LE), phdr_layout(LP64_LE)
    record = ELF_EHDR.make(e_ident=e_ident(LP64_LE), e_type=ET_CORE, e_machine=EM_X86_64, e_version=EV_CURRENT,
                           e_phoff=eh.size, e_ehsize=eh.size, e_phentsize=ph.size, e_phnum=phnum)  # fmt: skip
    return eh.pack(record)


def _synthetic_capture_memory(cmdline: bytes, block: int = PS) -> tuple[DictMemory, int, list[bytes]]:
    """Low RAM with a VMCOREINFO note and two crash_notes buffers (CPU 1 never answered: empty), and in the
    reservation [RESERVATION) a kexec-tools style core header and the capture kernel's command line."""
    abi = LP64_LE
    pages: dict[int, bytes] = {}

    def put(paddr: int, data: bytes) -> None:
        pfn, off = divmod(paddr, block)
        page = bytearray(pages.get(pfn, bytes(block)))
        page[off : off + len(data)] = data
        pages[pfn] = bytes(page)

    vmci_at, notes_at = 0x11E8000, 0x2000000
    vmci = pack_notes([Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, b"OSRELEASE=6.1.0\n")], abi) + bytes(12)
    put(vmci_at, vmci)
    descs = [_prstatus(101), b"", _prstatus(0)]
    sizes = []
    for cpu, desc in enumerate(descs):
        buf = pack_notes([Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, desc)], abi) if desc else b""
        buf += bytes(12)  # the terminating empty note (an empty buffer: a CPU that saved nothing)
        put(notes_at + cpu * 0x400, buf.ljust(368, b"\0"))
        sizes.append(368)
    header_at = RESERVATION[1] - 0xA3000
    ph = phdr_layout(abi)
    loads = [(0x1000, 0x9F000), (0x100000, RESERVATION[0] - 0x100000), (RESERVATION[1], 0x1000000)]
    phdrs = [(PT_NOTE, notes_at + cpu * 0x400, size) for cpu, size in enumerate(sizes)]
    phdrs += [(PT_NOTE, vmci_at, len(vmci))] + [(PT_LOAD, start, size) for start, size in loads]
    blob = _ehdr(len(phdrs))
    for p_type, paddr, size in phdrs:
        blob += ph.pack(ph.layout.make(p_type=p_type, p_offset=paddr, p_paddr=paddr, p_filesz=size, p_memsz=size))
    put(header_at, blob)
    put(header_at - 0x5C00, b"\0" + cmdline + b"\0")
    # the capture kernel's own /proc/vmcore header: p_paddr 0 for its merged notes (to be ignored)
    merged = _ehdr(1)
    merged += ph.pack(ph.layout.make(p_type=PT_NOTE, p_offset=0x1000, p_paddr=0, p_filesz=2000, p_memsz=2000))
    put(RESERVATION[0] + 0x922000, merged)
    return DictMemory(pages, block, max_pfn=(RESERVATION[1] + 0x1000000) // block), header_at, [descs[0], descs[2]]


@pytest.mark.parametrize("block", [PS, 0x10000], ids=["4k-blocks", "64k-blocks"])  # QEMU aarch64: 64 KiB blocks
@pytest.mark.parametrize("form", ["{k}K", "{h:#x}", "64M@{k}K", "0x4000000@{h:#x}"])
def test_core_header_found_with_its_cmdline_and_reservation(form: str, block: int) -> None:
    header_at = RESERVATION[1] - 0xA3000  # 4 KiB aligned, inside a 64 KiB block
    param = form.format(k=header_at // 1024, h=header_at)
    cmdline = b"console=ttyS0 irqpoll nr_cpus=1 reset_devices elfcorehdr=" + param.encode()
    memory, at, descs = _synthetic_capture_memory(cmdline, block)
    headers = find_core_headers(memory)
    assert [h.paddr for h in headers] == [at]
    h = headers[0]
    assert h.reservation() == RESERVATION
    assert h.vmcoreinfo_paddr == 0x11E8000 and h.vmcoreinfo == b"OSRELEASE=6.1.0\n"
    assert [n.desc for n in h.cpu_notes] == descs  # CPU 1's empty buffer dropped, as /proc/vmcore does
    assert h.cmdline is not None and h.cmdline[1] == cmdline


def test_core_header_without_matching_cmdline() -> None:
    memory, at, _descs = _synthetic_capture_memory(b"elfcorehdr=4K")
    (h,) = find_core_headers(memory)
    assert h.paddr == at and h.cmdline is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (b"irqpoll elfcorehdr=1031540K", 1031540 << 10),
        (b"elfcorehdr=0x3ef5d000 x", 0x3EF5D000),
        (b"elfcorehdr=16M@512M", 512 << 20),
        (b"elfcorehdr=2G", 2 << 30),
        (b"no such parameter", None),
    ],
)
def test_parse_elfcorehdr(text: bytes, want: int | None) -> None:
    assert parse_elfcorehdr(text) == want


def test_reservation_needs_a_hole_around_the_header() -> None:
    inside_a_load = replace(_header(), paddr=0x200000)
    assert inside_a_load.reservation() is None
    assert _header().reservation() == RESERVATION


def test_notes_of_cpus_keeps_the_per_cpu_notes_of_the_named_vcpus() -> None:
    core = [Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes([i]) * 336) for i in range(3)]
    qemu = [Note(b"QEMU", 0, bytes([i]) * 440) for i in range(3)]
    other = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, b"OSRELEASE=x\n")
    notes = [core[0], qemu[0], core[1], qemu[1], core[2], qemu[2], other]
    assert notes_of_cpus(notes, [1]) == (core[1], qemu[1], other)
    assert notes_of_cpus(notes, [0, 2]) == (core[0], qemu[0], core[2], qemu[2], other)
    assert notes_of_cpus(notes, []) == (other,)
