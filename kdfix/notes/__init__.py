"""ELF notes: framing, typed views (PRSTATUS, QEMU CPU state) and VMCOREINFO text."""
