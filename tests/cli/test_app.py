"""The root command: --version, every command registered, unknown commands are usage errors (exit 2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kdfix import __version__
from kdfix.cli import COMMAND_MODULES, app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"kdfix {__version__}"


def test_every_command_module_is_registered():
    names = {c.name for c in app.registered_commands}
    assert {m.replace("_", "-") for m in COMMAND_MODULES} <= names


def test_unknown_command_is_a_usage_error():
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "kdfix", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"kdfix {__version__}"


def test_the_script_imports_only_the_command_it_runs():
    """``kdfix vmcoreinfo`` does not import the fix, batch or generate machinery (start-up time)."""
    code = (
        "import sys; sys.argv = ['kdfix', 'vmcoreinfo', '--help']\n"
        "from kdfix.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kdfix.fix', 'kdfix.batch', 'kdfix.generate'))))"
    )
    assert _python(code).stdout.strip().splitlines()[-1] == "[]"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c CODE`` in a fresh interpreter, which must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_single_command_app_still_needs_the_command_name():
    """With one command registered the app stays a group: ``kdfix info --help`` is the info command's help."""
    proc = subprocess.run([sys.executable, "-m", "kdfix", "info", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Usage: python -m kdfix info" in proc.stdout


def test_version_and_help_import_no_dump_machinery() -> None:
    """Start-up (issue 14, item 11): ``--version`` imports no parser at all, ``--help`` no reader or writer."""
    heavy = ("typer", "rich", "pydantic", "kdfix.read", "kdfix.write", "kdfix.model", "kdfix.fix", "kdfix.kernel",
             "kdfix.detect", "kdfix.notes", "kdfix.batch", "kdfix.arch", "kdfix.generate")  # fmt: skip
    code = (
        "import sys\n"
        "from kdfix.cli import main\n"
        "for argv in (['kdfix', '--version'], ['kdfix', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        f"    print('LOADED', sorted(m for m in sys.modules if m.startswith({heavy!r})), file=sys.stderr)\n"
    )
    after_version, after_help = [line for line in _python(code).stderr.splitlines() if line.startswith("LOADED")]
    assert after_version == "LOADED []"
    assert "'kdfix." not in after_help and "'rich" not in after_help and "pydantic" not in after_help, after_help


def test_info_imports_no_detection_strategy(synthetic_plain: tuple[Path, object]) -> None:
    """Start-up (issue 14, item 11): ``kdfix info`` loads the readers and the cheap two-kernel hint, not the
    strategies, the kernel-log decoder, a process pool or pydantic."""
    path, _ = synthetic_plain
    heavy = ("kdfix.detect.combine", "kdfix.detect.kernels", "kdfix.kernel", "concurrent.futures", "pydantic")
    assert _loaded_by(["info", str(path)], heavy)[1] == []


def _loaded_by(argv: list[str], prefixes: tuple[str, ...]) -> tuple[str, list[str]]:
    """(stdout, the modules starting with one of ``prefixes``) after ``kdfix ARGV`` ran, in a fresh interpreter,
    successfully."""
    code = (
        f"import sys; sys.argv = ['kdfix', *{argv!r}]\n"
        "from kdfix.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print('LOADED', sorted(m for m in sys.modules if m.startswith({prefixes!r})), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("LOADED ")]
    assert len(loaded) == 1, proc.stderr
    return proc.stdout, ast.literal_eval(loaded[0].removeprefix("LOADED "))


def test_fix_of_a_flattened_stream_imports_no_page_writer(synthetic_flat: tuple[Path, object], tmp_path: Path) -> None:
    """Start-up (issue 16, the fix bar): ``fix -o`` of a flattened stream reassembles and patches it, so it loads
    neither the KDUMP/ELF/split page writers, their process pool, nor the kernel-log decoder."""
    path, _ = synthetic_flat
    out = tmp_path / "fixed"
    heavy = ("kdfix.write.kdump", "kdfix.write.elf", "kdfix.write.split", "kdfix.write.parallel",
             "kdfix.write.convert", "kdfix.kernel.printk", "multiprocessing")  # fmt: skip
    stdout, loaded = _loaded_by(["fix", str(path), "-o", str(out)], heavy)
    assert out.exists() and "fixed" in stdout, stdout
    assert loaded == []


def test_the_write_package_gives_every_name_it_lists() -> None:
    """kdfix.write imports its modules on first use: each name in ``__all__`` resolves, to its own module's."""
    import importlib

    import kdfix.write as write

    for name in write.__all__:
        obj = getattr(write, name)
        assert obj.__module__.startswith("kdfix.write."), name
        assert getattr(importlib.import_module(obj.__module__), name) is obj


def test_the_collector_is_frozen_once_a_command_is_done(tmp_path: Path) -> None:
    """The interpreter's exit then searches no object of the run for cycles (start-up and exit time, issue 16):
    after a command that succeeded and after one that failed."""
    code = (
        "import gc, sys\n"
        "from kdfix.cli import main\n"
        f"for argv in (['kdfix', 'info', '--help'], ['kdfix', 'info', {str(tmp_path / 'missing')!r}]):\n"
        "    sys.argv = argv\n"
        "    gc.unfreeze()\n"
        "    try:\n        main()\n    except SystemExit as e:\n        code = e.code\n"
        "    print('FROZEN', bool(code), gc.get_freeze_count() > 0)\n"
    )
    assert [line for line in _python(code).stdout.splitlines() if line.startswith("FROZEN")] == [
        "FROZEN False True",
        "FROZEN True True",
    ]
