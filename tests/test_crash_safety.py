"""Crash safety: SIGKILL during AR training, then ``--resume``, reaches the uninterrupted run's
result; checkpoints load without unpickling; every output writer, killed at the moment it puts
its output in place, leaves the previous version (or nothing) under the final name — never a
truncated file.

Tolerance for the resumed run: every weight and optimizer moment within 1e-6 of the
uninterrupted run (it is bit-identical on one thread: windows of step s come from an RNG seeded
by (seed, rank, s), and the checkpoint holds the RNG state and AdamW moments).
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CAPTURES

from pytrafgen.safetensors_io import load_file

SUPPORT = Path(__file__).resolve().parent / "crash_support"
FILES = ("benign_coap.pcap", "mqtt_bruteforce.pcap", "nmap_version_scan.pcap")
STEPS, CHECKPOINT_EVERY, KILL_AFTER_STEP = 12, 4, 6
TOLERANCE = 1e-6


def _env(**extra: str) -> dict[str, str]:
    """One thread (reproducible float sums) and crash_support/ on the path (its sitecustomize)."""
    path = os.pathsep.join(p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def _pretrain(dataset: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "pytrafgen", "pretrain", str(dataset), "--out", str(out), "--size", "tiny",
            "--steps", str(STEPS), "--checkpoint-every", str(CHECKPOINT_EVERY), "--batch-size", "2",
            "--seed", "7", "--device", "cpu", "--quiet", "--json", *more]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    out = tmp_path_factory.mktemp("crash") / "ds"
    tokenize_captures([CAPTURES / f for f in FILES], CAPTURES / "manifest.csv", out, payload_cap=16, workers=1)
    return out


@pytest.fixture(scope="module")
def straight_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "ckpt"
    _run(_pretrain(dataset, out))
    return out


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint load unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    import torch

    monkeypatch.setattr(torch, "load", forbidden)


def _load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    tensors, _ = load_file(path / "weights.safetensors")
    state, _ = load_file(path / "train_state.safetensors")
    tensors.update({f"resume:{k}": v for k, v in state.items() if not k.startswith("rng.")})
    return tensors, json.loads((path / "train_state.json").read_text())["state"]


@pytest.mark.timeout(900)
def test_sigkill_during_training_then_resume_matches_the_straight_run(
        dataset: Path, straight_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, stall = tmp_path / "ckpt", tmp_path / "stalled"
    killed = subprocess.Popen(_pretrain(dataset, out), env=_env(PYTRAFGEN_TEST_STALL_AT_STEP=str(KILL_AFTER_STEP),
                                                               PYTRAFGEN_TEST_STALL_FILE=str(stall)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not stall.exists():
            assert killed.poll() is None, f"training ended before step {KILL_AFTER_STEP}: {killed.communicate()[0]}"
            assert time.monotonic() < deadline, "training never reached the kill point"
            time.sleep(0.05)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(60) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.communicate()
    # The checkpoint of step 4 landed; steps 5 and 6 were done and lost with the process.
    saved = json.loads((out / "train_state.json").read_text())["state"]
    assert saved["step"] == CHECKPOINT_EVERY < KILL_AFTER_STEP

    resumed = _run(_pretrain(dataset, out, "--resume"))
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["stages"][-1]["steps"] == STEPS

    _forbid_unpickling(monkeypatch)
    want, want_state = _load_checkpoint(straight_run)
    got, got_state = _load_checkpoint(out)
    assert set(got) == set(want)
    worst = max(float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64)))) for k in want)
    assert worst <= TOLERANCE, f"resumed weights differ from the straight run's by up to {worst}"
    assert got_state["step"] == want_state["step"] == STEPS
    assert got_state["history"] == want_state["history"]


def test_checkpoints_load_without_unpickling(straight_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_unpickling(monkeypatch)
    real_open = builtins.open
    opened: list[str] = []

    def tracking_open(file: object, *args: object, **kwargs: object) -> object:
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", tracking_open)
    from pytrafgen.generators import load_generator

    gen = load_generator(straight_run)
    assert gen.snapshot is not None and gen.snapshot.state.step == STEPS
    assert not any(name.endswith((".pt", ".pth", ".pkl", ".bin")) for name in opened)


# ------------------------------------------------------------------------- atomic writers
WRITER_TARGETS = {  # writer → its final name inside the test's directory
    "pcap": "out.pcap", "safetensors": "weights.safetensors", "vocab": "vocab.json",
    "report": "report/report.json", "dataset": "dataset", "checkpoint": "checkpoint",
}


def _snapshot(path: Path) -> dict[str, bytes] | None:
    """Contents of a file, or of every file under a directory; None if absent."""
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def _kill_writer(writer: str, final: Path, kill_at: str, extra: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SUPPORT / "kill_writer.py"), writer, str(final), *extra, kill_at]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("writer", "kill_at"), [
    ("pcap", "replace"), ("safetensors", "replace"), ("vocab", "replace"), ("report", "replace"),
    ("dataset", "replace"), ("dataset", "first-rename"),
    # ~30 s each (torch in three processes); their files go through atomic_dir and the
    # safetensors writer, which the cases above cover by default
    pytest.param("checkpoint", "replace", marks=pytest.mark.slow),
    pytest.param("checkpoint", "first-rename", marks=pytest.mark.slow),
])
def test_a_killed_writer_leaves_no_truncated_output(writer: str, kill_at: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    extra = [str(request.getfixturevalue("straight_run"))] if writer == "checkpoint" else []
    final = tmp_path / WRITER_TARGETS[writer]
    # A complete first version, written unkilled: the writer never writes under the final name
    # directly (the audit hook would exit 3), so the kill below can only hit a temporary.
    first = _kill_writer(writer, final, "never", extra)
    assert first.returncode == 0, first.stdout + first.stderr
    before = _snapshot(final)
    assert before
    names_before = {p.name for p in final.parent.iterdir()}
    killed = _kill_writer(writer, final, kill_at, extra)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    after = _snapshot(final)
    if final.is_file() or writer not in ("dataset", "checkpoint"):
        assert after == before  # os.replace of a file is atomic: the old version stays whole
    else:
        # A directory is replaced in two renames (old aside, new in place): killed between
        # them, the final name is briefly absent and the old version waits, whole, beside it.
        assert after in (before, None)
        if after is None:
            assert _snapshot(final.with_name(f".{final.name}.old")) == before
    leftovers = [p.name for p in final.parent.iterdir() if p.name not in {*names_before, f".{final.name}.old"}]
    assert all(name.startswith(f".{final.name}.") and name.endswith(".tmp") for name in leftovers), leftovers
    # and a fresh run over the debris completes
    again = _kill_writer(writer, final, "never", extra)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(_snapshot(final) or {}) == set(before)  # same files (a manifest holds its own date)


def test_the_audit_hook_catches_a_direct_writer(tmp_path: Path) -> None:
    """The writer test would notice a writer that opens its final name for writing."""
    final = tmp_path / "direct.bin"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import kill_writer; from pathlib import Path; "
            "kill_writer.install(Path(sys.argv[2]).absolute(), 'replace'); open(sys.argv[2], 'wb').write(b'x')")
    done = subprocess.run([sys.executable, "-c", code, str(SUPPORT), str(final)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3 and "DIRECT WRITE" in done.stderr
    assert not final.exists()


def test_stall_hook_is_inert_without_its_variable() -> None:
    env = {k: v for k, v in _env().items() if not k.startswith("PYTRAFGEN_TEST_")}
    done = subprocess.run([sys.executable, "-c", "import sitecustomize, sys; print(sitecustomize._STALL_AT)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "0"

