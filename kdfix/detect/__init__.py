"""Recover the header phys_base and KERNELOFFSET of a dump: one strategy per module, validated and cross-checked.

Which methods run, and what "phys_base" means (x86_64 phys_base, aarch64 PHYS_OFFSET, i386 0), is the dump's
architecture's to say (kdfix.arch).

Each strategy is ``find_by_<method>(model, memory, *, vmlinux_symbols, log, known) -> Candidate | None``
(phys-base-and-kaslr.md §2-§3), written as a ``@strategy(METHOD)`` body over an Attempt (candidate.py);
``validate.py`` turns candidates into Checks (§4); ``combine.detect()`` combines them. Importing the package
imports no strategy: each caller imports the module it needs, so a command pays only for what it runs.
"""
