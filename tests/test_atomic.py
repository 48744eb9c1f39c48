from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pytrafgen.atomic import (
    OUTPUT_MARKER,
    allow_replace,
    atomic_dir,
    atomic_file,
    check_output_file,
    is_pytrafgen_file,
)
from pytrafgen.errors import OutputError
from pytrafgen.flow_labels import FlowLabels, labels_path, write_labels_csv


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


def test_atomic_dir_replaces_its_own_output(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    ran = []
    with pytest.raises(OutputError, match="--force"), atomic_dir(target) as tmp:
        ran.append(tmp)
    assert not ran  # refused before the body did any work
    assert (target / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    allow_replace(target)  # what --force does
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "b"]


def test_atomic_dir_takes_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "empty" / "x").read_text() == "1"


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


def test_a_capture_with_the_labels_csv_pytrafgen_writes_is_recognised_as_its_own(tmp_path: Path) -> None:
    """``generate`` replaces its own earlier output without --force: the labels CSV it writes
    beside a pcap (today's columns, and the five of earlier versions) marks the pair as pytrafgen's."""
    pcap = tmp_path / "gen.pcap"
    pcap.write_bytes(b"pcap")
    assert not is_pytrafgen_file(pcap)
    one = np.array([6])
    write_labels_csv(labels_path(pcap), FlowLabels(classes=["syn_flood"], proto=one, client_port=one,
                                                   server_port=one, record_flow=np.array([0]),
                                                   frame_flow=np.array([0]), frame_class=["syn_flood"]))
    assert is_pytrafgen_file(pcap) and is_pytrafgen_file(labels_path(pcap))
    check_output_file(pcap)  # no OutputError
    labels_path(pcap).write_text("flow_index,class,proto,client_port,server_port\n0,syn_flood,6,1,80\n")
    assert is_pytrafgen_file(pcap)
    labels_path(pcap).write_text("flow_index,class,protocol\n")
    assert not is_pytrafgen_file(pcap)
    with pytest.raises(OutputError):
        check_output_file(pcap)
