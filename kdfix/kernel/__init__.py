"""The kernel in the dump, read without a debug vmlinux: its log, symbols, struct pages, memory map and where
it died."""
