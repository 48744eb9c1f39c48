"""``.ci/run``: pytest always runs, then ``ruff check`` and ``mypy``; the run fails if any of the
three fails, and pytest's exit code 5 (no tests collected) fails it too.

Runs a copy of the script next to a stand-in README whose test command exits with a chosen code,
with ``ruff``/``mypy`` replaced by stubs that record their arguments, and ``id`` reporting a
non-root user so the Debian package step is skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _stub(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _ci(tmp_path: Path, test_rc: int, ruff_rc: int = 0, mypy_rc: int = 0) -> tuple[subprocess.CompletedProcess[str], str]:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    calls = tmp_path / "calls"
    (tmp_path / "README.md").write_text(
        "```bash\n# 2. install the test dependencies and run the tests\n"
        f"echo pytest >> {calls} && (exit {test_rc})\n```\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _stub(bindir, "id", "echo 1000")
    _stub(bindir, "ruff", f'echo "ruff $*" >> {calls}; exit {ruff_rc}')
    _stub(bindir, "mypy", f'echo "mypy $*" >> {calls}; exit {mypy_rc}')
    for tool in ("sed", "dirname"):
        real = shutil.which(tool)
        assert real is not None
        os.symlink(real, bindir / tool)
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bindir), "HOME": str(tmp_path)})
    return proc, calls.read_text() if calls.exists() else ""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_all_pass(tmp_path: Path) -> None:
    proc, calls = _ci(tmp_path, 0)
    assert proc.returncode == 0, proc.stderr
    # the exact commands a developer runs (here no plugins/ folder exists, so the glob stays as typed)
    assert calls.splitlines() == ["pytest", "ruff check pytrafgen plugins tests benchmarks",
                                  "mypy pytrafgen plugins/*/src"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize(("test_rc", "ruff_rc", "mypy_rc", "named"), [
    (1, 0, 0, "the test command (exit 1)"),
    (5, 0, 0, "the test command (exit 5)"),
    (0, 1, 0, "ruff check"),
    (0, 0, 1, "mypy"),
])
def test_any_failure_fails_the_run_and_all_three_still_run(tmp_path: Path, test_rc: int, ruff_rc: int,
                                                            mypy_rc: int, named: str) -> None:
    proc, calls = _ci(tmp_path, test_rc, ruff_rc, mypy_rc)
    assert proc.returncode == 1
    assert [c.split()[0] for c in calls.splitlines()] == ["pytest", "ruff", "mypy"]
    assert named in proc.stderr
