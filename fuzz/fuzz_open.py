"""Long-running fuzz target for the readers (atheris / libFuzzer), seeded from the reliability seeds.

Each input is written to a temp file and read the way every read-only command does (open, model,
notes, VMCOREINFO, info, verify, memory reads). Anything but a KdfixError is a crash. Overnight run::

    pip install atheris
    python fuzz/fuzz_open.py --make-corpus fuzz/corpus      # seeds: writer-made dumps of every container + fixtures
    python fuzz/fuzz_open.py fuzz/corpus -rss_limit_mb=1024 -timeout=20 -max_len=2000000 -max_total_time=28800

Without atheris the same target runs under hypothesis for as long as asked::

    KDFIX_FUZZ_EXAMPLES=200000 python fuzz/fuzz_open.py --hypothesis

The CI-sized version of this is tests/reliability/test_mutation.py (structured field mutations).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.harness import QEMU_FIXTURES, exercise, fixture_bytes, synthetic_seeds

_TMP = tempfile.mkdtemp(prefix="kdfix-fuzz-")
_PATH = os.path.join(_TMP, "input")


def one_input(data: bytes) -> None:
    """Read ``data`` as a dump; only KdfixError may escape the library (``exercise`` re-raises the rest)."""
    with open(_PATH, "wb") as f:
        f.write(data)
    exercise([_PATH])


def make_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = synthetic_seeds(Path(_TMP) / "seeds")
    for name in QEMU_FIXTURES:
        seeds[name] = [str(fixture_bytes(name, Path(_TMP)))]
    for name, paths in seeds.items():
        for i, p in enumerate(paths):
            (directory / f"{name}.{i}").write_bytes(Path(p).read_bytes())


def run_hypothesis() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    corpus = Path(_TMP) / "corpus"
    make_corpus(corpus)
    seeds = [p.read_bytes() for p in sorted(corpus.iterdir())]

    @settings(max_examples=int(os.environ.get("KDFIX_FUZZ_EXAMPLES", "10000")), deadline=None,
              suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
    @given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 1 << 24), st.binary(min_size=1, max_size=8)),
                                            max_size=8), st.one_of(st.none(), st.integers(0, 1 << 24)))  # fmt: skip
    def target(seed: bytes, patches: list[tuple[int, bytes]], cut: int | None) -> None:
        buf = bytearray(seed)
        for off, chunk in patches:
            off %= max(1, len(buf))
            buf[off : off + len(chunk)] = chunk
        one_input(bytes(buf[:cut] if cut is not None else buf))

    target()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    if "--hypothesis" in sys.argv:
        run_hypothesis()
        return
    import atheris

    atheris.instrument_all()  # kdfix is already imported (through the harness): instrument what is loaded
    atheris.Setup(sys.argv, lambda data: one_input(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
