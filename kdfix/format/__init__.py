"""On-disk formats, declared once: KDUMP headers, page descriptors, bitmaps, flattened records, ELF, notes and
the file layout rules that reader, writer, QEMU-style generator and fixer all use."""
