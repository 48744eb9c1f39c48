"""Datasets: the stratified seeded split, writing and reading, and the ``tokenize``/``vocab`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenize_support import synthetic_frames
from typer.testing import CliRunner

from pytrafgen.capture import PacketTable, write_pcap
from pytrafgen.dataset import SPLITS, MappedFile, TokenParts, TrafficDataset, split_flows, write_dataset
from pytrafgen.errors import DatasetError
from pytrafgen.flows import assemble_flows
from pytrafgen.tokenizer import Vocabulary, encode_flows


def test_split_is_stratified_reproducible_and_per_class():
    labels = np.repeat(np.arange(5), [200, 20, 3, 1, 2])
    split = split_flows(labels, seed=7)
    assert np.array_equal(split, split_flows(labels, seed=7))
    assert not np.array_equal(split, split_flows(labels, seed=8))
    counts = {c: np.bincount(split[labels == c], minlength=3).tolist() for c in range(5)}
    assert counts[0] == [160, 20, 20] and counts[1] == [16, 2, 2]
    assert counts[2] == [1, 1, 1] and counts[3] == [1, 0, 0]
    # a class's split does not depend on the other classes present
    only_first = split_flows(labels[labels == 0], seed=7)
    assert np.array_equal(only_first, split[labels == 0])
    with pytest.raises(DatasetError):
        split_flows(labels, 0, (0.5, 0.2, 0.2))


@pytest.fixture(scope="module")
def encoded():
    frames, ts = synthetic_frames()
    table = PacketTable.from_frames(frames, ts)
    flows = assemble_flows(table)
    vocab = Vocabulary(["benign", "attack"], [], 32)
    labels = np.arange(len(flows)) % 2
    enc = encode_flows(table, flows, labels, vocab, protocols={})
    keep = enc.encoded_flows
    lengths = np.diff(enc.offsets)[keep]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return vocab, enc.tokens, offsets, labels[keep]


def test_write_and_read_back(tmp_path, encoded):
    vocab, tokens, offsets, labels = encoded
    split = np.array([0, 0, 1, 2, 0])
    manifest = write_dataset(tmp_path / "ds", vocab, tokens, offsets, labels, class_kinds={"attack": "malicious"},
                             seed=3, settings={"payload_cap": 32}, split=split)
    ds = TrafficDataset(tmp_path / "ds")
    assert ds.classes == ["benign", "attack"] and ds.vocab == vocab
    assert ds.class_kinds == {"benign": "unknown", "attack": "malicious"}
    assert manifest["counts"]["train"]["flows"] == 3 and ds.n_flows("test") == 1
    assert sum(manifest["counts"][s]["packets"] for s in SPLITS) == 15
    for s, name in enumerate(SPLITS):
        idx = np.flatnonzero(split == s)
        assert np.array_equal(ds.labels(name), labels[idx])
        for k, f in enumerate(idx):
            assert np.array_equal(ds.flow(name, k), tokens[offsets[f]:offsets[f + 1]])
        assert ds.records(name).n_flows == len(idx)
    assert ds.tokens("train").dtype == np.uint16


def test_tokens_gathered_where_they_lie_write_the_same_dataset(tmp_path, encoded):
    """``write_dataset`` with a ``TokenParts`` (flows spread over a mapped spill file, written in
    another order, and an in-memory array, as ``tokenize`` hands them) writes the same files as
    with every token in one array."""
    vocab, tokens, offsets, labels = encoded
    split = np.array([0, 0, 1, 2, 0])
    lengths = np.diff(offsets)
    spilled = [3, 1, 0]  # flows 0, 1, 3 live in the spill file, written in the order 3, 1, 0
    with (tmp_path / "spill.u16").open("wb") as fh:
        for f in spilled:
            tokens[offsets[f]:offsets[f + 1]].tofile(fh)
    spill_start = dict(zip(spilled, np.cumsum([0, *lengths[spilled]])[:-1].tolist(), strict=True))
    in_memory = np.concatenate([tokens[offsets[f]:offsets[f + 1]] for f in (2, 4)])
    part = np.array([0, 0, 1, 0, 1])
    start = np.array([spill_start[0], spill_start[1], 0, spill_start[3], lengths[2]])
    parts = TokenParts([MappedFile(tmp_path / "spill.u16", np.uint16), in_memory], part, start)
    write_dataset(tmp_path / "whole", vocab, tokens, offsets, labels, class_kinds={}, seed=3, split=split)
    write_dataset(tmp_path / "parts", vocab, parts, offsets, labels, class_kinds={}, seed=3, split=split)
    for f in sorted((tmp_path / "whole").iterdir()):
        got = (tmp_path / "parts" / f.name).read_bytes()
        if f.name == "manifest.json":  # the creation time may differ by a second
            assert {**json.loads(got), "created_utc": 0} == {**json.loads(f.read_bytes()), "created_utc": 0}
        else:
            assert got == f.read_bytes(), f.name


def test_broken_datasets_are_clear_errors(tmp_path, encoded):
    vocab, tokens, offsets, labels = encoded
    path = tmp_path / "ds"
    write_dataset(path, vocab, tokens, offsets, labels, class_kinds={}, seed=0)
    with pytest.raises(DatasetError, match="unknown split"):
        TrafficDataset(path).tokens("training")
    Vocabulary(["benign", "other"], [], 32).save(path / "vocab.json")
    with pytest.raises(DatasetError, match="not the vocabulary"):
        TrafficDataset(path)
    (path / "manifest.json").unlink()
    with pytest.raises(DatasetError, match=r"manifest\.json missing"):
        TrafficDataset(path)
    with pytest.raises(DatasetError, match="not a dataset directory"):
        TrafficDataset(tmp_path / "nothing")


# --- the commands ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli():
    from pytrafgen.cli.main import build_app

    return build_app()


@pytest.fixture
def captures(tmp_path):
    frames, ts = synthetic_frames()
    folder = tmp_path / "caps"
    folder.mkdir()
    write_pcap(folder / "a.pcap", frames[:8], ts_ns=ts[:8])
    (folder / "sub").mkdir()
    write_pcap(folder / "sub" / "b.pcap", frames[8:], ts_ns=ts[8:])
    (folder / "manifest.csv").write_text("file,class,label,packets\na.pcap,web,benign,8\nsub/b.pcap,misc,malicious,8\n")
    return folder


@pytest.fixture
def core_plugins_only(monkeypatch):
    """No third-party plugins here or in spawned workers (they inherit the environment): the
    commands' own logic is under test, not the installed app protocols (test_tokenize_app)."""
    from pytrafgen import plugins

    monkeypatch.setenv("PYTRAFGEN_PLUGINS", "")
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


def test_tokenize_command(cli, captures, tmp_path, core_plugins_only):
    def run(out, workers):
        return CliRunner().invoke(cli, ["tokenize", str(captures), "--labels", str(captures / "manifest.csv"),
                                        "--out", str(out), "--payload-cap", "16", "--seed", "5", "-j", workers,
                                        "--json"])

    result = run(tmp_path / "ds", "1")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["classes"] == ["misc", "web"]
    assert manifest["class_kinds"] == {"misc": "malicious", "web": "benign"}
    assert manifest["settings"]["payload_cap"] == 16 and manifest["seed"] == 5
    assert sum(manifest["counts"][s]["packets"] for s in SPLITS) == 15
    assert [s["encoded_flows"] for s in manifest["sources"]] == [1, 4]
    ds = TrafficDataset(tmp_path / "ds")
    assert ds.vocab.payload_cap == 16 and ds.address_plan is not None
    assert sum(ds.records(s).n_packets for s in SPLITS) == 15
    # files in parallel worker processes give the very same dataset
    assert run(tmp_path / "parallel", "2").exit_code == 0
    for s in SPLITS:
        assert (tmp_path / "ds" / f"{s}.tokens.u16").read_bytes() == (
            tmp_path / "parallel" / f"{s}.tokens.u16").read_bytes()


def test_tokenize_rejects_files_missing_from_the_manifest(cli, captures, tmp_path, core_plugins_only):
    write_pcap(captures / "stray.pcap", synthetic_frames()[0][:2])
    result = CliRunner().invoke(cli, ["tokenize", str(captures), "--labels", str(captures / "manifest.csv"),
                                      "--out", str(tmp_path / "ds")])
    assert isinstance(result.exception, DatasetError)
    assert "stray.pcap: not in the labels manifest" in str(result.exception)
    assert not (tmp_path / "ds").exists()
    result = CliRunner().invoke(cli, ["tokenize", str(captures / "a.pcap"), "--out", str(tmp_path / "ds")])
    assert isinstance(result.exception, DatasetError) and "--labels" in str(result.exception)


def test_vocab_command(cli, tmp_path, encoded, core_plugins_only):
    result = CliRunner().invoke(cli, ["vocab", "--json", "--payload-cap", "20"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["payload_cap"] == 20 and body["size"] == Vocabulary.from_json(body).size
    table = CliRunner().invoke(cli, ["vocab"], terminal_width=200)
    assert table.exit_code == 0 and "seq.b3" in table.output and "grammar" in table.output
    vocab, tokens, offsets, labels = encoded
    write_dataset(tmp_path / "ds", vocab, tokens, offsets, labels, class_kinds={}, seed=0)
    mine = CliRunner().invoke(cli, ["vocab", "--dataset", str(tmp_path / "ds"), "--json"])
    assert json.loads(mine.output)["hash"] == vocab.hash


def test_tokenize_names_an_unreadable_capture(cli, captures, tmp_path, core_plugins_only):
    (captures / "junk.pcap").write_bytes(b"not a capture at all")
    with (captures / "manifest.csv").open("a") as fh:
        fh.write("junk.pcap,web,benign,0\n")
    result = CliRunner().invoke(cli, ["tokenize", str(captures), "--labels", str(captures / "manifest.csv"),
                                      "--out", str(tmp_path / "ds"), "-j", "1"])
    assert isinstance(result.exception, DatasetError)
    assert "junk.pcap: at byte 0" in str(result.exception)


def test_tokenize_takes_several_manifests(cli, captures, tmp_path, core_plugins_only):
    (captures / "one.csv").write_text("file,class\na.pcap,web\n")
    (captures / "sub" / "two.csv").write_text("file,class,label\nb.pcap,misc,malicious\n")
    args = ["tokenize", str(captures), "--labels", str(captures / "one.csv"), "--labels",
            str(captures / "sub" / "two.csv"), "--out", str(tmp_path / "ds"), "-j", "1", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["class_kinds"] == {"misc": "malicious", "web": "unknown"}
    (captures / "sub" / "two.csv").write_text("file,class\nb.pcap,misc\n../a.pcap,other\n")
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, DatasetError) and "labelled both 'web' and 'other'" in str(result.exception)
