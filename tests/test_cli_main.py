from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pytrafgen


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytrafgen", *args], capture_output=True, text=True, timeout=300)


def test_user_error_is_one_line_without_traceback(tmp_path) -> None:
    proc = _run("inspect", str(tmp_path / "missing.pcap"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.pcap" in lines[0]


def test_usage_error_exit_code() -> None:
    proc = _run("inspect", "--no-such-option")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr


def test_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("pytrafgen ")


def test_version_is_the_one_in_pyproject() -> None:
    """pyproject.toml is the single source: the package and ``--version`` report what it says."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert pytrafgen.__version__ == project["version"]
    assert _run("--version").stdout == f"pytrafgen {project['version']}\n"
