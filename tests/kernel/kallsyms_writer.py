"""Test-side writer of the kernel's kallsyms tables (arch-kernels-and-introspection.md §5.2, §5.3)."""

from __future__ import annotations

from tests.kernel.printk_writer import SegmentMemory

NAMES, TOKEN_TABLE, TOKEN_INDEX, OFFSETS, BASE, NUM = 0x10_0000, 0x20_0000, 0x21_0000, 0x30_0000, 0x38_0000, 0x39_0000
MULTI = [b"_", b"__", b"get", b"set", b"sys_", b"do_", b"ret", b"init", b"page", b"lock", b"tcp_", b"irq"]


def token_list() -> list[bytes]:
    """256 tokens: the multi-character ones first, then every other byte value as itself."""
    singles = [bytes([b]) for b in range(1, 256) if bytes([b]) not in MULTI]
    return (MULTI + singles)[:256]


def encode(text: bytes, tokens: list[bytes]) -> list[int]:
    """Greedy longest-token encoding."""
    by_len = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    out, pos = [], 0
    while pos < len(text):
        i = next(i for i in by_len if text.startswith(tokens[i], pos))
        out.append(i)
        pos += len(tokens[i])
    return out


def write_kallsyms(symbols: list[tuple[str, str, int]], *, scheme: str, base: int = 0xFFFFFFFF81000000,
                   long_lengths: bool = True, word: int = 8) -> tuple[SegmentMemory, bytes]:  # fmt: skip
    """Lay out (type, name, address) symbols; returns memory and the VMCOREINFO (with SYMBOL(_stext))."""
    tokens = token_list()
    table = b"".join(t + b"\0" for t in tokens)
    index, pos = [], 0
    for t in tokens:
        index.append(pos)
        pos += len(t) + 1
    names = bytearray()
    for typ, name, _ in symbols:
        enc = encode((typ + name).encode("latin-1"), tokens)
        if len(enc) > 127:
            assert long_lengths
            names += bytes([0x80 | (len(enc) & 0x7F), len(enc) >> 7])
        else:
            names.append(len(enc))
        names += bytes(enc)
    mask = (1 << (8 * word)) - 1
    offsets = bytearray()
    for i, (_, _, addr) in enumerate(symbols):
        if scheme == "base-relative":
            value = (addr - base) & 0xFFFFFFFF
        elif scheme == "absolute-percpu":  # small addresses stored as themselves, others as base - 1 - value
            value = addr if addr < 0x80000000 else ((base - 1 - addr) & mask)
            value &= 0xFFFFFFFF
        else:  # place-relative
            value = (addr - (OFFSETS + 4 * i)) & 0xFFFFFFFF
        offsets += value.to_bytes(4, "little")
    stext = next(a for _, n, a in symbols if n == "_stext")
    memory = SegmentMemory({
        NAMES: bytes(names) + bytes(64), TOKEN_TABLE: table + bytes(300), OFFSETS: bytes(offsets),
        TOKEN_INDEX: b"".join(i.to_bytes(2, "little") for i in index), NUM: len(symbols).to_bytes(4, "little"),
        BASE: base.to_bytes(word, "little"),
    })  # fmt: skip
    info = (f"OSRELEASE={'6.1.0' if long_lengths else '6.0.0'}\nSYMBOL(_stext)={stext:x}\n"
            f"SYMBOL(kallsyms_names)={NAMES:x}\nSYMBOL(kallsyms_token_table)={TOKEN_TABLE:x}\n"
            f"SYMBOL(kallsyms_token_index)={TOKEN_INDEX:x}\nSYMBOL(kallsyms_offsets)={OFFSETS:x}\n"
            f"SYMBOL(kallsyms_num_syms)={NUM:x}\n")  # fmt: skip
    if scheme != "place-relative":
        info += f"SYMBOL(kallsyms_relative_base)={BASE:x}\n"
    return memory, info.encode()
