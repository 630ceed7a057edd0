"""Readers: containers (kdump, flattened, split, ELF) that expose one PhysicalMemory."""
