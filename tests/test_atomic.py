from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytrafgen.atomic import atomic_dir, atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_file(target) as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_dir_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "a").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_killed_writer_leaves_no_final_file(tmp_path: Path) -> None:
    target = tmp_path / "big.pcap"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pytrafgen.atomic import atomic_file
        with atomic_file({str(target)!r}) as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".big.pcap.") and name.endswith(".tmp") for name in leftovers)
    assert os.path.getsize(tmp_path / leftovers[0]) == 1000
