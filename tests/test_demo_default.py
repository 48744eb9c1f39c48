"""``pytrafgen demo train-default``: the command that made the bundled checkpoint still makes
one (at a toy size here) in the form that ships: float16 weights, class-conditioned, no
training state, loadable and able to sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pytrafgen.cli.main import build_app
from pytrafgen.errors import PytrafgenError
from pytrafgen.generators import load_generator
from pytrafgen.safetensors_io import load_file


def test_train_default_writes_the_shippable_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytrafgen.demo import default

    toy = {"n_embd": 32, "n_layer": 1, "n_head": 2, "block_size": 256, "batch_size": 2, "eval_every": 2,
           "eval_batches": 1, "checkpoint_every": 0, "warmup_steps": 1}
    monkeypatch.setattr(default, "MODEL_SETTINGS", {**default.MODEL_SETTINGS, **toy})
    monkeypatch.setattr(default, "STAGE_STEPS", {"pretrain": 3, "finetune": 3})
    out, work = tmp_path / "model", tmp_path / "work"
    result = CliRunner().invoke(build_app(), ["demo", "train-default", "--out", str(out), "--work", str(work),
                                              "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)

    config = json.loads((out / "config.json").read_text())
    assert [s["stage"] for s in config["stages"]] == ["pretrain", "finetune"]
    assert config["model"]["class_conditioning"] and config["model"]["bos_token"] >= 0
    # whole flows: continuation tokens, and each class's longest flow kept for the sampling cap
    assert config["model"]["continuation_buckets"] > 0
    assert set(config["longest_flow_packets"]) == set(config["classes"])
    tensors, _ = load_file(out / "weights.safetensors")
    assert "class_proj.weight" in tensors
    assert {a.dtype for a in tensors.values() if a.dtype.kind == "f"} == {np.dtype(np.float16)}
    # the gaps inside each IAT bucket ship with it, learned from the corpus it was trained on
    assert (out / "iat_fill.json").read_bytes() == (work / "dataset" / "iat_fill.json").read_bytes()
    # the resumable training state stays in --work, it does not ship
    assert not (out / "train_state.safetensors").exists()
    assert (work / "checkpoint" / "train_state.safetensors").exists()

    gen = load_generator(out)  # hands it the loaded plugins' protocols
    gen.set_sampling(device="cpu", show_progress=False)
    records = gen.sample({"syn_flood": 2}, seed=0)
    assert records.n_flows == 2 and records.n_packets >= 2

    # --warm-start: continues from that checkpoint for WARM_START_STEPS
    monkeypatch.setattr(default, "WARM_START_STEPS", {"pretrain": 2, "finetune": 2})
    again = tmp_path / "again"
    result = CliRunner().invoke(build_app(), ["demo", "train-default", "--out", str(again), "--work",
                                              str(tmp_path / "work2"), "--warm-start", str(out), "--device", "cpu",
                                              "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    warm = json.loads((again / "config.json").read_text())
    assert [s["steps"] for s in warm["stages"]] == [2, 2] and warm["model"] == config["model"]

    # --steps STAGE=N overrides one stage of the schedule, the other keeps its default
    longer = tmp_path / "longer"
    result = CliRunner().invoke(build_app(), ["demo", "train-default", "--out", str(longer), "--work",
                                              str(tmp_path / "work3"), "--warm-start", str(out), "--steps",
                                              "finetune=3", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert [s["steps"] for s in json.loads((longer / "config.json").read_text())["stages"]] == [2, 3]


@pytest.mark.parametrize("pair", ["finetune", "finetune=0", "finetune=x", "sft=3"])
def test_train_default_rejects_bad_steps(tmp_path: Path, pair: str) -> None:
    result = CliRunner().invoke(build_app(), ["demo", "train-default", "--out", str(tmp_path / "m"), "--work",
                                              str(tmp_path / "w"), "--steps", pair])
    # the CLI's run() prints PytrafgenError as one line with exit code 2
    assert isinstance(result.exception, PytrafgenError) and "--steps expects STAGE=N" in str(result.exception)
    assert not (tmp_path / "w").exists()  # refused before any work
