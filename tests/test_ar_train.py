"""Training the AR generator on real tokenized captures: windows, the CLI from pre-training to a
pcap, exact resumption after a kill, early stopping, LoRA, checkpoints that never unpickle."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import CAPTURES
from typer.testing import CliRunner

from pytrafgen.errors import CheckpointError, DatasetError, PluginError
from pytrafgen.generators import load_generator
from pytrafgen.generators.ar import tokens as tok
from pytrafgen.generators.ar.data import FlowWindows, class_shares
from pytrafgen.generators.ar.generator import ARGenerator

torch.set_num_threads(1)
FILES = ("benign_coap.pcap", "mqtt_bruteforce.pcap", "nmap_version_scan.pcap")
# tiny, shrunk further so every step takes a fraction of a second on a CPU
FAST = {"size": "tiny", "block_size": 128, "batch_size": 2, "eval_every": 4, "eval_batches": 1,
        "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    out = tmp_path_factory.mktemp("ar") / "ds"
    tokenize_captures([CAPTURES / f for f in FILES], CAPTURES / "manifest.csv", out, payload_cap=16, workers=1)
    return out


@pytest.fixture(scope="module")
def dataset(dataset_dir):
    from pytrafgen.dataset import TrafficDataset

    return TrafficDataset(dataset_dir)


def _cli(*args: str) -> dict:
    from pytrafgen.cli.main import build_app

    result = CliRunner().invoke(build_app(), [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- windows


def test_windows_start_at_bos_and_truncated_flows_stay_grammatical(dataset):
    vocab = dataset.vocab
    special = tok.special_tokens(vocab)
    block = 64  # shorter than most flows: many are cut
    windows = FlowWindows(dataset.tokens("train"), dataset.offsets("train"), dataset.labels("train"), block,
                          special, seed=0)
    assert windows.truncated > 0
    grammar = vocab.grammar()
    for k in range(len(windows)):
        start = windows.flow_starts[k]
        end = windows.flow_starts[k + 1] if k + 1 < len(windows) else windows.n_tokens
        flow = windows.stream[start:end]
        assert len(flow) <= block and grammar.accepts(flow), k
    x, y = windows.batch(windows.class_balanced_weights({0: 1.0}), 16, np.random.default_rng(0))
    assert x.shape == (16, block) and (x[:, 0] == special.bos).all()
    assert (y[x == special.bos] == -1).all() and (y[:, :-1] == x[:, 1:]).sum() > 0
    # every window drawn with these weights starts at a flow of class 0
    assert set(x[:, 1].tolist()) == {vocab.class_token(dataset.classes[0])}


def test_class_shares_balance_classes_and_replay_benign():
    kinds = ["benign", "malicious", "malicious", "unknown"]
    assert class_shares(kinds, "pretrain", 0.3) == {0: 1.0}
    assert class_shares(kinds, "finetune", 0.2) == pytest.approx({1: 0.4, 2: 0.4, 0: 0.2})
    with pytest.raises(DatasetError):
        class_shares(["malicious"], "pretrain", 0.2)


# ------------------------------------------------------------------ CLI to a pcap and back


@pytest.fixture(scope="module")
def finetuned(dataset_dir, tmp_path_factory):
    """Pre-trained then fine-tuned through the CLI, just long enough to emit sane packets."""
    root = tmp_path_factory.mktemp("ck")
    common = ["--device", "cpu", "--steps", "40", "--batch-size", "2", "--lr", "1e-2"]
    _cli("pretrain", str(dataset_dir), "--out", str(root / "pre"), "--size", "tiny", *common)
    report = _cli("finetune", str(root / "pre"), str(dataset_dir), "--out", str(root / "fine"), *common)
    assert [s["stage"] for s in report["stages"]] == ["pretrain", "finetune"]
    return root


def test_generated_pcaps_read_back_with_the_requested_classes(finetuned, tmp_path):
    import pytrafgen

    fine = finetuned / "fine"
    both = _cli("generate", str(fine), "--class", "mqtt_bruteforce:5", "--class", "nmap_version_scan:3",
                "--out", str(tmp_path / "both.pcap"), "--raw-out", str(tmp_path / "raw.pcap"), "--seed", "1")
    assert both["flows"] == {"mqtt_bruteforce": 5, "nmap_version_scan": 3}
    # the reader may split a generated flow (e.g. a SYN after its FIN opens a new connection),
    # never merge two: every generated flow gets its own 5-tuple
    read_back = pytrafgen.assemble_flows(pytrafgen.read_pcap(tmp_path / "both.pcap"))
    assert len(read_back) >= 8
    with open(str(tmp_path / "both.pcap") + ".flows.csv", newline="") as fh:
        labels = [row["class"] for row in csv.DictReader(fh)]
    assert len(labels) == len(read_back) and set(labels) == {"mqtt_bruteforce", "nmap_version_scan"}
    assert len(pytrafgen.read_pcap(tmp_path / "raw.pcap")) == len(pytrafgen.read_pcap(tmp_path / "both.pcap"))
    # one class per file: the flows read back are exactly the ones asked for, on the transport
    # their class has in training (the per-class header restriction guarantees it): MQTT brute
    # force TCP, CoAP UDP. (Ports are not asserted: decoding is total, so this few-step model's
    # flows are all kept, not only those whose messages happened to decode.)
    for name, n in (("mqtt_bruteforce", 4), ("benign_coap", 3)):
        out = tmp_path / f"{name}.pcap"
        single = _cli("generate", str(fine), "--class", name, "-n", str(n), "--out", str(out), "--seed", "2")
        assert single["flows"] == {name: n}
        flows = pytrafgen.assemble_flows(pytrafgen.read_pcap(out))
        assert len(flows) == n
        assert (flows.proto == (6 if name == "mqtt_bruteforce" else 17)).all(), flows.proto


def test_lora_finetuning_trains_only_the_adapters(finetuned, dataset_dir, tmp_path):
    from pytrafgen.safetensors_io import load_torch

    out = tmp_path / "lora"
    _cli("finetune", str(finetuned / "pre"), str(dataset_dir), "--out", str(out), "--lora-rank", "4",
         "--steps", "3", "--batch-size", "2", "--device", "cpu")
    assert json.loads((out / "config.json").read_text())["model"]["lora_rank"] == 0  # adapters merged
    before = load_torch(finetuned / "pre" / "weights.safetensors")
    state = load_torch(out / "train_state.safetensors")
    merged = load_torch(out / "weights.safetensors")
    assert any(k.startswith("model.") and "lora_B" in k for k in state)
    for name, tensor in before.items():
        assert torch.equal(state[f"model.{name}"], tensor), name  # frozen
    changed = [n for n in before if not torch.equal(merged[n], before[n])]
    assert changed and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in changed)


def test_generic_train_command_runs_a_registered_generator(dataset_dir, tmp_path):
    out = tmp_path / "ck"
    report = _cli("train", str(dataset_dir), "--generator", "ar", "--out", str(out), "--device", "cpu",
                  "--set", "size=tiny", "--set", "steps=3", "--set", "batch_size=2", "--set", "block_size=128")
    assert [s["stage"] for s in report["stages"]] == ["pretrain", "finetune"]
    assert isinstance(load_generator(out), ARGenerator)


# --------------------------------------------------------------------------- resumption


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(dataset, tmp_path):
    settings = {**FAST, "stage": "pretrain", "steps": 12, "checkpoint_every": 4}
    straight = ARGenerator()
    straight.fit(dataset, settings)

    killed = ARGenerator()
    save = killed.save

    def save_then_die(path):
        save(path)
        if killed.snapshot.state.step == 8:
            raise Killed

    killed.save = save_then_die
    with pytest.raises(Killed):
        killed.fit(dataset, {**settings, "checkpoint_dir": tmp_path / "ck"})
    resumed = ARGenerator.load(tmp_path / "ck")
    assert resumed.snapshot.state.step == 8
    resumed.fit(dataset, {**settings, "resume": True})
    assert resumed.snapshot.state.step == 12
    for name, tensor in straight.snapshot.resume_tensors.items():
        if not name.startswith("rng."):
            assert torch.equal(tensor, resumed.snapshot.resume_tensors[name]), name
    assert resumed.snapshot.state.history == straight.snapshot.state.history


def test_early_stopping_keeps_the_best_weights(dataset):
    gen = ARGenerator()
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 40, "lr": 0.0, "warmup_steps": 1, "patience": 2})
    state = gen.snapshot.state
    assert state.stopped_early and state.step == 12  # evaluations at 4, 8, 12: no improvement after 4
    assert [h["step"] for h in state.history] == [4, 8, 12]


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_load_without_unpickling(dataset, tmp_path, monkeypatch):
    gen = ARGenerator()
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 2})
    gen.save(tmp_path / "ck")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load_generator(tmp_path / "ck")
    for name, tensor in gen.weights.items():
        assert torch.equal(tensor, loaded.weights[name]), name
    loaded.set_sampling(device="cpu", show_progress=False, batch_size=8)
    records = loaded.sample({"benign_coap": 2}, seed=0)
    assert records.n_flows == 2 and set(records.flows["label"].tolist()) == {dataset.classes.index("benign_coap")}


def test_finetuning_on_another_vocabulary_is_refused(dataset, tmp_path):
    gen = ARGenerator()
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 1})
    gen.vocab_json = {**gen.vocab_json, "hash": "0000000000000000"}
    with pytest.raises(DatasetError, match="vocabulary"):
        gen.fit(dataset, {**FAST, "stage": "finetune", "steps": 1})


def test_load_generator_rejects_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        load_generator(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"generator": "no-such-generator"}))
    with pytest.raises(PluginError):
        load_generator(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"generator": "ar", "model": {}}))
    with pytest.raises(CheckpointError):
        load_generator(tmp_path)


def test_generate_works_for_any_registered_generator(dataset_dir, tmp_path):
    import pytrafgen

    out = tmp_path / "markov"
    _cli("train", str(dataset_dir), "--generator", "markov", "--out", str(out))
    report = _cli("generate", str(out), "--class", "benign_coap:4", "--out", str(tmp_path / "m.pcap"))
    assert report["flows"] == {"benign_coap": 4}
    assert len(pytrafgen.read_pcap(tmp_path / "m.pcap")) > 0
    with pytest.raises(AssertionError, match="takes no sampling options"):
        _cli("generate", str(out), "--class", "benign_coap:1", "--top-k", "5", "--out", str(tmp_path / "x.pcap"))


def test_class_counts_parse():
    from pytrafgen.cli.generate import parse_class_counts
    from pytrafgen.errors import PytrafgenError

    assert parse_class_counts(["a:100", "b", "a:5"], 7) == {"a": 105, "b": 7}
    assert parse_class_counts(["ns:x:3"], None) == {"ns:x": 3}
    for bad, n in ((["b"], None), (["a:-1"], None), (["a:many"], None), ([], 3)):
        with pytest.raises(PytrafgenError):
            parse_class_counts(bad, n)
