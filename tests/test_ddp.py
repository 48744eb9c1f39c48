"""Distributed training: two CPU processes under torchrun (gloo) stay in lock-step (DDP averages
their gradients), only rank 0 writes the checkpoint, and the result differs from one process
(so the second rank's windows really were used)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import CAPTURES

from pytrafgen.generators import load_generator
from pytrafgen.generators.ar.generator import ARGenerator

SETTINGS = {"stage": "pretrain", "size": "tiny", "steps": 4, "batch_size": 2, "block_size": 64, "device": "cpu",
            "quiet": True, "eval_every": 2, "eval_batches": 1, "checkpoint_every": 2}

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.ar.generator import ARGenerator
    from pytrafgen.generators.ar.train import shutdown_distributed

    dataset, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    gen = ARGenerator()
    gen.fit(TrafficDataset(dataset), {**settings, "checkpoint_dir": out + "/ck"})
    rank = int(os.environ["RANK"])
    if rank == 0:
        gen.save(out + "/ck")
    weights = gen.snapshot.resume_tensors
    digest = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights)
                                     if k.startswith("model."))).hexdigest()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"world": int(os.environ["WORLD_SIZE"]), "digest": digest,
                   "tokens": gen.snapshot.state.tokens}, fh)
    shutdown_distributed()
""")


def _digest(gen: ARGenerator) -> str:
    weights = gen.snapshot.resume_tensors
    return hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights)
                                   if k.startswith("model."))).hexdigest()


def test_two_gloo_processes_train_in_lockstep(tmp_path):
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    dataset = tmp_path / "ds"
    tokenize_captures([CAPTURES / "benign_coap.pcap"], CAPTURES / "manifest.csv", dataset, payload_cap=16)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(dataset), str(tmp_path), json.dumps(SETTINGS)],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # gradients all-reduced: identical weights
    assert ranks[0]["tokens"] == SETTINGS["steps"] * SETTINGS["batch_size"] * SETTINGS["block_size"] * 2

    loaded = load_generator(tmp_path / "ck")
    assert loaded.snapshot.state.step == SETTINGS["steps"]

    torch.set_num_threads(1)
    alone = ARGenerator()
    alone.fit(TrafficDataset(dataset), SETTINGS)
    assert _digest(alone) != ranks[0]["digest"]  # rank 1's windows changed the result


def test_a_plain_launch_is_a_world_of_one(monkeypatch):
    from pytrafgen.generators.ar.train import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")  # a stray RANK without WORLD_SIZE: still a single process
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
