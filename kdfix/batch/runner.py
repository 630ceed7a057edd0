"""Run ``fix_dump`` over a walked archive: a process pool, a JSON Lines report/journal, resume and clean Ctrl-C.

Only the main process writes the report, one line as each file finishes. Workers ignore a terminal
Ctrl-C while idle; with ``--out-dir`` (or ``--dry-run``) a Ctrl-C aborts the file under way at once (the
atomic writer removes its temp file, the original is never touched), with ``--in-place`` the edit under
way is allowed to finish (header patches are short) so that no file is left half patched.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import glob
import logging
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from kdfix.batch.report import Outcome, ReportWriter, Summary, read_report
from kdfix.batch.shard import Shard
from kdfix.batch.walk import TEMP_SUFFIX, FoundDump, SkippedFile, WalkResult, walk, walk_roots
from kdfix.errors import KdfixError, WriteError
from kdfix.faults import checkpoint

log = logging.getLogger(__name__)

DEFAULT_REPORT_NAME = "kdfix-batch-report.jsonl"
_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Progress of a batch: files and bytes finished (this run) out of those to do."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker needs to fix one dump (or split set)."""

    dump: FoundDump
    outputs: tuple[str, ...] | None  # absolute output paths (--out-dir), None for --in-place
    dry_run: bool
    out_root: str = ""
    fix_options: tuple[tuple[str, Any], ...] = ()


@dataclass(slots=True)
class BatchResult:
    """Everything a caller needs after a batch: the walk, this run's outcomes and the summary."""

    walk: WalkResult
    outcomes: list[Outcome] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    report: str | None = None

    @property
    def exit_code(self) -> int:
        """0: nothing failed; 1: some file failed (in this run or, resumed, before); 130: interrupted."""
        if self.summary.interrupted:
            return 130
        return 1 if self.summary.failed or self.summary.resumed_failed else 0


# ---- the worker side ---------------------------------------------------------------------------------------


class _WorkerState:
    in_job = False
    immediate = True  # Ctrl-C aborts the file under way (True: out-dir/dry-run) or waits for it (in-place)
    raised = False
    terminate = False


def _on_signal(signum: int, frame: object) -> None:
    if signum == signal.SIGTERM:
        _WorkerState.terminate = True
        if not _WorkerState.in_job:
            os._exit(128 + signum)
    if _WorkerState.in_job and _WorkerState.immediate and not _WorkerState.raised:
        _WorkerState.raised = True
        raise KeyboardInterrupt


def _set_parent_death_signal() -> None:
    """Linux: get SIGTERM when the parent dies (a SIGKILLed batch leaves no worker behind)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_init(immediate: bool) -> None:
    _WorkerState.immediate = immediate
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _set_parent_death_signal()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def prepare_output(out_root: str, rel: str) -> str:
    """The absolute output path of ``rel`` under ``out_root``, creating directories; never through a symlink."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise WriteError(f"unsafe relative path {rel!r}", path=rel)
    cur = out_root
    for comp in parts[:-1]:
        cur = os.path.join(cur, comp)
        with contextlib.suppress(FileExistsError):
            os.mkdir(cur)
        st = os.lstat(cur)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise WriteError("is a symlink or not a directory: not writing through it", path=cur)
    target = os.path.join(cur, parts[-1])
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(target).st_mode):
            raise WriteError("output is a symlink: not writing through it", path=target)
    return target


def _fix_one(path: str, output: str | None, job: Job) -> Any:
    from kdfix.fix import fix_dump

    opts = dict(job.fix_options)
    if output is None:
        return fix_dump(path, in_place=True, dry_run=job.dry_run, **opts)
    return fix_dump(path, output=output, dry_run=job.dry_run, **opts)


def _status_of(results: list[Any]) -> tuple[str, str | None]:
    statuses = [str(_jsonable(getattr(r, "status", "failed"))) for r in results]
    if any(s not in ("fixed", "ok") for s in statuses):
        bad = next(r for r, s in zip(results, statuses, strict=True) if s not in ("fixed", "ok"))
        msgs = [str(m) for m in (getattr(bad, "messages", ()) or ())]
        status = str(_jsonable(getattr(bad, "status", "failed")))
        return "failed", f"{status}: " + ("; ".join(msgs) or "no fix could be determined")
    return ("fixed" if "fixed" in statuses else "ok"), None


def process(job: Job) -> Outcome:
    """Fix one dump or split set as ``kdfix fix`` would; every error becomes a ``failed`` outcome.

    KeyboardInterrupt propagates: an interrupted file has no outcome and is redone by ``--resume``.
    """
    dump = job.dump
    started = time.time()
    began = time.monotonic()
    base: dict[str, Any] = {
        "path": dump.path, "kind": dump.kind, "files": dump.rel_files, "size_bytes": dump.size_bytes,
        "dry_run": job.dry_run, "started": round(started, 3),
    }  # fmt: skip
    _WorkerState.in_job, _WorkerState.raised = True, False
    try:
        checkpoint("batch.file.start")
        if dump.kind == "split":
            from kdfix.fix import fix_split_set

            results = [fix_split_set(dump.files, outputs=job.outputs, in_place=job.outputs is None,
                                     dry_run=job.dry_run, **dict(job.fix_options))]  # fmt: skip
        else:
            results = [_fix_one(dump.files[0], None if job.outputs is None else job.outputs[0], job)]
        status, error = _status_of(results)
        edits = [_jsonable(e) for r in results for e in (getattr(r, "edits", ()) or ())]
        messages = tuple(str(m) for r in results for m in (getattr(r, "messages", ()) or ()))
        checkpoint("batch.file.done")
        out_rel = None
        if job.outputs is not None and not job.dry_run and all(os.path.exists(o) for o in job.outputs):
            out_rel = job.outputs[0]
        return Outcome(status=status, error=error, edits=tuple(edits), messages=messages, output=out_rel,
                       seconds=round(time.monotonic() - began, 6), **base)  # fmt: skip
    except KdfixError as exc:
        return Outcome(status="failed", error=str(exc), seconds=round(time.monotonic() - began, 6), **base)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return Outcome(status="failed", error=f"{where}{exc.strerror or exc}",
                       seconds=round(time.monotonic() - began, 6), **base)  # fmt: skip
    except Exception as exc:  # a bug on one file must not stop the batch
        log.exception("internal error on %s", dump.path)
        return Outcome(status="failed", error=f"internal error: {type(exc).__name__}: {exc}",
                       seconds=round(time.monotonic() - began, 6), **base)  # fmt: skip
    finally:
        _WorkerState.in_job = False
        if _WorkerState.terminate:
            os._exit(143)


# ---- the main side -----------------------------------------------------------------------------------------


class _Stop:
    """Ctrl-C in the main process: set a flag (and abort an inline job when that is safe)."""

    def __init__(self, immediate: bool) -> None:
        self.requested = False
        self.immediate = immediate
        self.inline_job = False
        self._old: Any = None

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum: int, frame: object) -> None:
        first = not self.requested
        self.requested = True
        if first and self.inline_job and self.immediate:
            raise KeyboardInterrupt


def _remove_stale_temps(paths: Sequence[str]) -> None:
    """Remove ``.NAME.*.kdfix-tmp`` files beside ``paths`` (atomic.py names them so), and ``..NAME.*.kdfix-tmp``:
    the temp file of a write whose own target was a temp file (fix -o reassembling). They are left by a SIGKILLed
    run, and by a Ctrl-C that lands where atomic_output cannot clean up (inside mkstemp, before its ``try``)."""
    for p in paths:
        where, name = glob.escape(os.path.dirname(p)), glob.escape(os.path.basename(p))
        for prefix in (".", ".."):
            for tmp in glob.glob(os.path.join(where, f"{prefix}{name}.*{TEMP_SUFFIX}")):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _job_files(job: Job) -> tuple[str, ...]:
    """The files a job writes, beside which its temp files are."""
    return job.outputs or job.dump.files


def _skipped_outcome(s: SkippedFile) -> Outcome:
    return Outcome(path=s.path, status="failed" if s.failed else "skipped", error=s.reason, size_bytes=s.size_bytes,
                   started=round(time.time(), 3))  # fmt: skip


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_batch(
    paths: Sequence[str | os.PathLike[str]],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    workers: int | None = None,
    report: str | os.PathLike[str] | None = None,
    resume: bool = False,
    dry_run: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard: Shard | None = None,
    fix_options: dict[str, Any] | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> BatchResult:
    """Walk ``paths``, fix every dump found (into ``out_dir`` mirroring the tree, or ``in_place``), report each file.

    ``report`` defaults to ``out_dir/kdfix-batch-report.jsonl`` (no default with ``in_place``; ``resume``
    then needs one). Raises KdfixError when the batch itself cannot run; per-file errors are outcomes.
    """
    if (out_dir is not None and in_place) or (out_dir is None and not in_place and not dry_run):
        raise KdfixError("give exactly one of --out-dir DIR and --in-place (or neither with --dry-run)",
                         field="out_dir")  # fmt: skip
    out_root = None if out_dir is None else _prepare_out_root(paths, out_dir, dry_run)
    explicit_report = report is not None
    if report is None and out_root is not None:
        report = os.path.join(out_root, _default_report_name(shard))
    if resume and report is None:
        raise KdfixError("--resume needs --report FILE (the report of the run to resume)", field="report")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise KdfixError(f"--workers must be at least 1, got {workers}", field="workers")

    report_path = None if report is None else os.path.realpath(os.fspath(report))
    found = walk(paths, include=include, exclude=exclude, ignore=[p for p in (out_root, report_path) if p is not None])
    result = BatchResult(found, report=report_path)
    began = time.monotonic()
    done = read_report(report_path) if resume and report_path is not None else {}
    dumps, skipped = _still_to_do(found, shard, done, result.summary)
    jobs = _make_jobs(dumps, out_root, dry_run, fix_options)
    if resume:
        _remove_stale_temps([p for j in jobs for p in _job_files(j)])
    # a dry run writes a report only when asked for one by name
    writer = ReportWriter(report_path, append=resume) if report_path and (explicit_report or not dry_run) else None
    recorder = _Recorder(result, writer, len(jobs), sum(d.size_bytes for d in dumps), progress, on_outcome)
    try:
        for s in skipped:
            recorder.record(_skipped_outcome(s))
        recorder.report_progress()
        immediate = dry_run or not in_place
        with _Stop(immediate) as stop:
            if workers == 1 or len(jobs) <= 1:
                _run_inline(jobs, stop, recorder.finished)
            else:
                _run_pool(jobs, workers, stop, recorder.finished, immediate)
            result.summary.interrupted = stop.requested
    finally:
        if writer is not None:
            writer.close()
        result.summary.not_done = len(jobs) - recorder.files_done
        result.summary.seconds = time.monotonic() - began
    return result


def _prepare_out_root(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], dry_run: bool) -> str:
    """The real path of ``--out-dir``, created unless dry-running; never one of the walked directories."""
    out_root = os.path.realpath(os.fspath(out_dir))
    if any(root == out_root for root, _, _ in walk_roots(paths)):
        raise KdfixError("--out-dir must not be a walked directory (outputs would replace the originals)",
                         path=os.fspath(out_dir))  # fmt: skip
    if not dry_run:
        try:
            os.makedirs(out_root, exist_ok=True)
        except OSError as exc:
            raise WriteError(f"cannot create the output directory: {exc.strerror or exc}", path=out_root) from exc
    return out_root


def _default_report_name(shard: Shard | None) -> str:
    """One report per shard, so that shards sharing an output directory do not write the same file."""
    return DEFAULT_REPORT_NAME if shard is None else f"kdfix-batch-report.{shard.index}-of-{shard.count}.jsonl"


def _still_to_do(
    found: WalkResult, shard: Shard | None, done: dict[str, Any], summary: Summary
) -> tuple[list[FoundDump], list[SkippedFile]]:
    """This shard's dumps and skipped files not already in the resumed report (counted in ``summary``)."""
    dumps = [d for d in found.dumps if shard is None or shard.holds(d.path)]
    skipped = [s for s in found.skipped if shard is None or shard.holds(s.path)]
    summary.resumed = sum(1 for d in dumps if d.path in done) + sum(1 for s in skipped if s.path in done)
    paths = [d.path for d in dumps] + [s.path for s in skipped]
    summary.resumed_failed = sum(1 for p in paths if done.get(p, {}).get("status") == "failed")
    return [d for d in dumps if d.path not in done], [s for s in skipped if s.path not in done]


def _make_jobs(
    dumps: Sequence[FoundDump], out_root: str | None, dry_run: bool, fix_options: dict[str, Any] | None
) -> list[Job]:
    """One job per dump; with an output root, each file's output mirrors its place in the walked tree."""
    opts = tuple(sorted((fix_options or {}).items()))
    jobs: list[Job] = []
    for d in dumps:
        outputs = None
        if out_root is not None:
            outputs = tuple(os.path.join(out_root, *rel.split("/")) for rel in d.rel_files)
        jobs.append(Job(d, outputs, dry_run, out_root or "", opts))
    return jobs


class _Recorder:
    """The main process's one place that takes an outcome: report line, summary, result, callbacks, progress."""

    def __init__(
        self,
        result: BatchResult,
        writer: ReportWriter | None,
        files_total: int,
        bytes_total: int,
        progress: Callable[[BatchProgress], None] | None,
        on_outcome: Callable[[Outcome], None] | None,
    ) -> None:
        self.result, self.writer = result, writer
        self.files_total, self.bytes_total = files_total, bytes_total
        self.progress, self.on_outcome = progress, on_outcome
        self.files_done = self.bytes_done = 0

    def record(self, outcome: Outcome) -> None:
        if self.writer is not None:
            self.writer.write(outcome)
            checkpoint("batch.report.line")
        self.result.summary.add(outcome)
        self.result.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def finished(self, job: Job, outcome: Outcome) -> None:
        self.record(outcome)
        self.files_done += 1
        self.bytes_done += job.dump.size_bytes
        self.report_progress()

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(BatchProgress(self.files_done, self.files_total, self.bytes_done, self.bytes_total))


def _run_inline(jobs: Sequence[Job], stop: _Stop, finished: Callable[[Job, Outcome], None]) -> None:
    for job in jobs:
        if stop.requested:
            return
        prepared = _job_with_dirs(job)
        if isinstance(prepared, Outcome):
            finished(job, prepared)
            continue
        stop.inline_job = True
        try:
            outcome = process(prepared)
        except KeyboardInterrupt:
            stop.requested = True
            _remove_stale_temps(_job_files(prepared))
            return
        finally:
            stop.inline_job = False
        finished(job, outcome)


def _job_with_dirs(job: Job) -> Job | Outcome:
    if job.outputs is None or job.dry_run:
        return job
    try:
        outs = tuple(prepare_output(job.out_root, rel) for rel in job.dump.rel_files)
    except (KdfixError, OSError) as exc:
        return Outcome(path=job.dump.path, status="failed", kind=job.dump.kind, files=job.dump.rel_files,
                       error=str(exc), size_bytes=job.dump.size_bytes, started=round(time.time(), 3))  # fmt: skip
    return dataclasses.replace(job, outputs=outs)


def _run_pool(
    jobs: Sequence[Job], workers: int, stop: _Stop, finished: Callable[[Job, Outcome], None], immediate: bool
) -> None:
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue = list(reversed(jobs))
    running: dict[Future[Outcome], Job] = {}
    retried: set[str] = set()  # jobs already rerun once after their worker died
    forwarded = False
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(immediate,))  # fmt: skip
    try:
        while True:
            refused = False  # the pool broke (a worker died) before wait() said so: renew it, resubmit the job
            while queue and not stop.requested and len(running) < 2 * workers:
                job = queue.pop()
                prepared = _job_with_dirs(job)
                if isinstance(prepared, Outcome):
                    finished(job, prepared)
                    continue
                try:
                    running[executor.submit(process, prepared)] = job
                except BrokenProcessPool:
                    queue.append(job)
                    refused = True
                    break
            if not running:
                if not refused:
                    return
                executor.shutdown(wait=False, cancel_futures=True)
                executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                               initargs=(immediate,))  # fmt: skip
                continue
            if stop.requested and immediate and not forwarded:
                forwarded = True
                for proc in list(getattr(executor, "_processes", {}).values()):
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGINT)
            done, _ = wait(list(running), timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            broken = False
            orphaned: list[Job] = []  # jobs whose worker died or was interrupted: temp files may be left behind
            for fut in done:
                job = running.pop(fut)
                try:
                    outcome = fut.result()
                except KeyboardInterrupt:  # aborted by Ctrl-C: no outcome, --resume redoes it
                    orphaned.append(job)
                    continue
                except BrokenProcessPool:
                    broken = True
                    orphaned.append(job)
                    if stop.requested:
                        continue
                    if job.dump.path not in retried:  # maybe another file's worker died: try once more
                        retried.add(job.dump.path)
                        queue.append(job)
                        continue
                    outcome = Outcome(path=job.dump.path, status="failed", kind=job.dump.kind,
                                      files=job.dump.rel_files, size_bytes=job.dump.size_bytes,
                                      error="worker process died (killed or crashed) while fixing this file",
                                      started=round(time.time(), 3))  # fmt: skip
                finished(job, outcome)
            _remove_stale_temps([p for j in orphaned for p in _job_files(j)])
            if broken:
                executor.shutdown(wait=False, cancel_futures=True)
                executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                               initargs=(immediate,))  # fmt: skip
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
