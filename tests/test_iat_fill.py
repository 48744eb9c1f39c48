"""Gaps inside their IAT bucket, learned per class (pytrafgen/iat_fill.py): the table reproduces the
within-bucket quantiles of known gaps, decoded gaps are drawn inside their bucket's edges, the
same seed gives the same gaps, a checkpoint without the table decodes exactly as before, and a bad
or mismatched table is a clear error. End to end on the bundled corpus: tokenize learns it (the
same in memory and streamed), ``pytrafgen learn-gaps`` adds it to a checkpoint, AR and markov use it."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp
from typer.testing import CliRunner

import pytrafgen
from pytrafgen.capture import read_pcap
from pytrafgen.cli.main import build_app
from pytrafgen.errors import CheckpointError, PytrafgenError
from pytrafgen.flows import assemble_flows
from pytrafgen.generators import load_generator
from pytrafgen.iat_fill import (
    FILE_NAME,
    MIN_CLASS_GAPS,
    QUANTILES,
    IatFill,
    add_to_checkpoint,
    flow_gap_samples,
    learn_from_captures,
)
from pytrafgen.plugins import get_registry
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords
from pytrafgen.tokenizer.vocab import Vocabulary

CORPUS = Path(pytrafgen.__file__).parent / "data" / "corpus"
DEFAULT_MODEL = Path(pytrafgen.__file__).parent / "data" / "default_model"
CLASSES = ["flood", "scan", "rare"]
VOCAB = Vocabulary()
EDGES = VOCAB.iat_edges_ns  # bucket k holds EDGES[k-1] <= gap < EDGES[k]
VALUES = VOCAB.iat_values_ns  # what a bucket token decodes to


def bucket_bounds(k: int) -> tuple[int, float]:
    """[low, high) of bucket k, from the vocabulary's edges (the reference)."""
    return (0 if k == 0 else int(EDGES[k - 1])), (float("inf") if k == len(EDGES) else int(EDGES[k]))


def known_gaps() -> dict[str, np.ndarray]:
    """Per class, gaps in bucket 7 ([7430, 10378) ns) spread differently, plus a few elsewhere."""
    rng = np.random.default_rng(5)
    return {"flood": np.concatenate([np.full(600, 8000), np.full(300, 9000), rng.integers(7430, 10378, 100),
                                     np.full(50, 40_000)]),
            "scan": np.concatenate([rng.integers(10_000, 10_378, 400), np.full(20, 2_000)]),
            "rare": np.array([7_500, 7_600])}  # fewer than MIN_CLASS_GAPS: all classes' gaps stand in


def learned_table() -> IatFill:
    gaps = known_gaps()
    flows = [g for name in CLASSES for g in np.array_split(gaps[name], 4)]  # 4 flows per class
    labels = np.repeat(np.arange(len(CLASSES)), 4)
    return IatFill.learn(flows, labels, CLASSES)


def decoded_records(gaps_per_flow: list[list[int]], labels: list[int]) -> FieldRecords:
    """Flows as the token decoder gives them: relative times from 0, each gap a bucket value."""
    n = sum(len(g) + 1 for g in gaps_per_flow)
    packets = {name: np.zeros(n, dtype) for name, dtype in PACKET_COLUMNS.items()}
    flows = {name: np.zeros(len(labels), dtype) for name, dtype in FLOW_COLUMNS.items()}
    packets["flow"][:] = np.repeat(np.arange(len(gaps_per_flow)), [len(g) + 1 for g in gaps_per_flow])
    packets["ts_ns"][:] = np.concatenate([np.cumsum([0, *g]) for g in gaps_per_flow])
    packets["ttl"][:] = np.arange(n) % 200
    flows["label"][:] = labels
    flows["ip_version"][:] = 4
    flows["proto"][:] = 6
    return FieldRecords(packets, flows, np.zeros(0, np.uint8), list(CLASSES))


def gaps_of(records: FieldRecords) -> list[np.ndarray]:
    p = records.packets
    return [np.diff(p["ts_ns"][p["flow"] == f]) for f in range(records.n_flows)]


def test_learned_table_holds_the_quantiles_of_each_class_gaps_in_each_bucket() -> None:
    table = learned_table()
    gaps = known_gaps()
    probs = np.linspace(0, 1, QUANTILES + 1)
    for name in ("flood", "scan"):
        buckets = np.digitize(gaps[name], EDGES)  # numpy's own bucketing as the reference
        assert set(table.classes[name]) == set(buckets.tolist())
        for k, row in table.classes[name].items():
            mine = gaps[name][buckets == k]
            assert row.count == len(mine)
            np.testing.assert_allclose(row.quantiles, np.quantile(mine, probs), atol=0.5)
    pooled7 = np.concatenate([g[np.digitize(g, EDGES) == 7] for g in gaps.values()])
    np.testing.assert_allclose(table.pooled[7].quantiles, np.quantile(pooled7, probs), atol=0.5)


def test_decoded_gaps_are_drawn_from_their_class_gaps() -> None:
    table = learned_table()
    gaps = known_gaps()
    n = 4000
    records = decoded_records([[int(VALUES[7])] * n, [int(VALUES[7])] * n], [0, 1])
    out, drawn = table.fill(records, seed=3)
    assert drawn == 2 * n
    flood, scan = gaps_of(out)
    real_flood = gaps["flood"][np.digitize(gaps["flood"], EDGES) == 7]
    real_scan = gaps["scan"][np.digitize(gaps["scan"], EDGES) == 7]
    # the draws follow each class's own gaps (KS against them: within one quantile interval's mass
    # and the sampling noise), not the other class's
    tolerance = 1 / QUANTILES + 0.02
    assert ks_2samp(flood, real_flood).statistic < tolerance
    assert ks_2samp(scan, real_scan).statistic < tolerance
    assert ks_2samp(flood, real_scan).statistic > 0.5
    assert abs(np.median(flood) - 8000) <= 50 and np.median(scan) > 10_000


def test_drawn_gaps_stay_inside_their_bucket_and_only_decoded_gaps_are_drawn() -> None:
    rng = np.random.default_rng(0)
    # a table with gaps in every bucket, spread to both edges
    spread = [rng.integers(lo, int(min(hi, 2 * 10**12)), 50) for lo, hi in map(bucket_bounds, range(len(VALUES)))]
    table = IatFill.learn([np.concatenate(spread)], np.array([0]), CLASSES)
    every_bucket = [int(v) for v in VALUES] * 20
    not_decoded = [7_431, 123_457]  # gaps a generator drew itself stay as they are
    records = decoded_records([every_bucket, not_decoded], [0, 1])
    out, drawn = table.fill(records, seed=1)
    assert drawn == len(every_bucket)
    got, kept = gaps_of(out)
    for gap, value in zip(got.tolist(), every_bucket, strict=True):
        lo, hi = bucket_bounds(int(np.flatnonzero(value == VALUES)[0]))
        assert lo <= gap < hi, (gap, lo, hi)
    assert len(set(got.tolist())) > len(VALUES)  # drawn, not the fixed values again
    assert kept.tolist() == not_decoded
    for name in PACKET_COLUMNS:  # only the times move
        if name != "ts_ns":
            assert np.array_equal(out.packets[name], records.packets[name]), name


def test_fallbacks_all_classes_then_the_fixed_value() -> None:
    table = learned_table()
    assert table.classes["rare"][7].count < MIN_CLASS_GAPS
    rare, = gaps_of(table.fill(decoded_records([[int(VALUES[7])] * 3000], [2]), seed=0)[0])
    pooled = np.concatenate([g[np.digitize(g, EDGES) == 7] for g in known_gaps().values()])
    assert ks_2samp(rare, pooled).statistic < 1 / QUANTILES + 0.02  # all classes' gaps, not its own two
    unseen = [int(VALUES[30])] * 5  # no class ever had a gap in bucket 30: its fixed value stays
    assert gaps_of(table.fill(decoded_records([unseen], [0]), seed=0)[0])[0].tolist() == unseen


def test_same_seed_same_gaps_other_seed_other_gaps() -> None:
    table = learned_table()
    records = decoded_records([[int(VALUES[7])] * 200, [int(VALUES[7]), int(VALUES[5])] * 50], [0, 1])
    a, b, c = (table.fill(records, seed=s)[0].packets["ts_ns"] for s in (7, 7, 8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_saved_table_round_trips_and_bad_tables_are_clear_errors(tmp_path: Path) -> None:
    table = learned_table()
    table.save(tmp_path / FILE_NAME)
    again = IatFill.load(tmp_path / FILE_NAME)
    assert again is not None and again.to_json() == table.to_json()
    assert IatFill.load(tmp_path / "absent.json") is None
    body = table.to_json()
    bad = {
        "not json": "{",
        "other format": json.dumps({**body, "format": 99}),
        "other buckets": json.dumps({**body, "iat": {"buckets": 32, "min_ns": 1000, "max_ns": 10**12}}),
        "outside its bucket": json.dumps({**body, "pooled": {"7": {"count": 3, "quantiles": [5] * (QUANTILES + 1)}}}),
        "unordered": json.dumps({**body, "pooled": {"7": {"count": 3,
                                                          "quantiles": [9000, 8000] + [9000] * (QUANTILES - 1)}}}),
        "short row": json.dumps({**body, "pooled": {"7": {"count": 3, "quantiles": [8000]}}}),
    }
    for why, text in bad.items():
        (tmp_path / FILE_NAME).write_text(text)
        with pytest.raises(PytrafgenError, match=f"{FILE_NAME}: not a usable inter-arrival gap table"):
            IatFill.load(tmp_path / FILE_NAME)
        assert why


@pytest.fixture(scope="module")
def corpus_table() -> IatFill:
    return learn_from_captures([CORPUS], CORPUS / "manifest.csv")


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled default as a checkpoint made before the table (without iat_fill.json)."""
    ckpt = tmp_path_factory.mktemp("old") / "ckpt"
    shutil.copytree(DEFAULT_MODEL, ckpt)
    (ckpt / FILE_NAME).unlink(missing_ok=True)
    return ckpt


def test_tokenize_learns_the_gaps_of_the_training_flows_the_same_in_memory_and_streamed(tmp_path: Path) -> None:
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    for chunk in (0, 1000):
        tokenize_captures([CORPUS], CORPUS / "manifest.csv", tmp_path / f"ds{chunk}", chunk_packets=chunk)
    assert (tmp_path / "ds0" / FILE_NAME).read_bytes() == (tmp_path / "ds1000" / FILE_NAME).read_bytes()
    table = IatFill.load(tmp_path / "ds0" / FILE_NAME)
    assert table is not None and set(table.classes) <= set(json.loads((tmp_path / "ds0" / "manifest.json")
                                                                        .read_text())["classes"])


def test_bulk_gap_samples_match_a_per_packet_reference() -> None:
    table = read_pcap(CORPUS / "benign_mqtt.pcap")
    flows = assemble_flows(table)
    kept = np.arange(0, len(flows), 2)
    samples = flow_gap_samples(table, flows, kept)
    for k, f in enumerate(kept.tolist()):
        ts = [int(table.ts_ns[i]) for i in range(len(table)) if int(flows.flow_id[i]) == f]
        expected = [max(b - a, 0) for a, b in itertools.pairwise(ts)]
        assert samples.data[samples.offsets[k]:samples.offsets[k + 1]].tolist() == expected


def sample_default(ckpt: Path, seed: int) -> FieldRecords:
    gen = load_generator(ckpt, None, get_registry())
    gen.set_sampling(device="cpu", show_progress=False)
    return gen.sample({"syn_flood": 4, "http_bruteforce": 2}, seed=seed)


def test_checkpoint_without_the_table_decodes_bucket_values_as_before(old_checkpoint: Path) -> None:
    gen = load_generator(old_checkpoint, None, get_registry())
    assert getattr(gen, "iat_fill", "missing") is None
    records = sample_default(old_checkpoint, seed=2)
    gaps = np.concatenate(gaps_of(records))
    assert len(gaps) and set(gaps.tolist()) <= set(VALUES.tolist())  # every gap a bucket's fixed value


def test_learn_gaps_adds_the_table_and_sampling_then_draws_gaps(tmp_path: Path, old_checkpoint: Path,
                                                               corpus_table: IatFill) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(old_checkpoint, ckpt)
    result = CliRunner().invoke(build_app(), ["learn-gaps", str(ckpt), "--captures", str(CORPUS), "--labels",
                                              str(CORPUS / "manifest.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["replaced"] is False
    assert IatFill.load(ckpt / FILE_NAME).to_json() == corpus_table.to_json()  # type: ignore[union-attr]
    before, after, again = sample_default(old_checkpoint, 2), sample_default(ckpt, 2), sample_default(ckpt, 2)
    assert np.array_equal(after.packets["ts_ns"], again.packets["ts_ns"])  # same seed, same gaps
    for name in PACKET_COLUMNS:  # the same sampled flows; only the times differ
        if name not in ("ts_ns", "payload_off"):
            assert np.array_equal(before.packets[name], after.packets[name]), name
    new_gaps = np.concatenate(gaps_of(after))
    old_gaps = np.concatenate(gaps_of(before))
    assert not set(new_gaps.tolist()) <= set(VALUES.tolist())
    assert np.array_equal(np.digitize(new_gaps, EDGES), np.digitize(old_gaps, EDGES))  # each in its bucket


def test_mismatched_or_corrupt_table_in_a_checkpoint_is_a_clear_error(tmp_path: Path, old_checkpoint: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(old_checkpoint, ckpt)
    foreign = IatFill.learn([np.full(10, 8000)], np.array([0]), ["not_a_class"])
    with pytest.raises(PytrafgenError, match="not_a_class"):
        add_to_checkpoint(ckpt, foreign)
    foreign.save(ckpt / FILE_NAME)
    with pytest.raises(CheckpointError, match="not_a_class"):
        load_generator(ckpt, None, get_registry())
    (ckpt / FILE_NAME).write_text('{"format": 1}')
    with pytest.raises(CheckpointError, match=FILE_NAME):
        load_generator(ckpt, None, get_registry())
    with pytest.raises(PytrafgenError, match="not a gap table pytrafgen wrote"):  # not overwritten
        add_to_checkpoint(ckpt, IatFill.learn([np.full(10, 8000)], np.array([0]), ["syn_flood"]))
    assert (ckpt / FILE_NAME).read_text() == '{"format": 1}'
    result = CliRunner().invoke(build_app(), ["generate", str(ckpt), "--class", "syn_flood:1", "--out",
                                              str(tmp_path / "g.pcap"), "-q"])
    assert result.exit_code != 0 and FILE_NAME in str(result.exception or result.output)


def test_learn_gaps_needs_one_source_and_names_missing_captures(tmp_path: Path, old_checkpoint: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(build_app(), ["learn-gaps", str(old_checkpoint)])
    assert result.exit_code != 0 and "either --dataset or --captures" in str(result.exception)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"sources": [{"file": str(tmp_path / "gone.pcap"), "class": "x"}],
                                                  "settings": {}, "seed": 0}))
    result = runner.invoke(build_app(), ["learn-gaps", str(old_checkpoint), "--dataset", str(ds)])
    assert result.exit_code != 0 and "gone.pcap" in str(result.exception)
    assert not (old_checkpoint / FILE_NAME).exists()


def test_markov_draws_its_gaps_from_the_dataset_table(tmp_path: Path) -> None:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.markov import MarkovGenerator
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    tokenize_captures([CORPUS / "syn_flood.pcap", CORPUS / "http_bruteforce.pcap"], CORPUS / "manifest.csv",
                      tmp_path / "ds")
    gen = MarkovGenerator()
    gen.fit(TrafficDataset(tmp_path / "ds", get_registry().protocols))
    assert gen.iat_fill is not None
    gen.save(tmp_path / "markov")
    loaded = load_generator(tmp_path / "markov", None, get_registry())
    assert (tmp_path / "markov" / FILE_NAME).is_file()
    counts = {"syn_flood": 20, "http_bruteforce": 5}
    with_table = loaded.sample(counts, seed=4)
    loaded.iat_fill = None  # type: ignore[attr-defined]
    without = loaded.sample(counts, seed=4)
    assert set(np.concatenate(gaps_of(without)).tolist()) <= set(VALUES.tolist())  # decoded training gaps
    drawn = np.concatenate(gaps_of(with_table))
    assert not set(drawn.tolist()) <= set(VALUES.tolist())
    assert np.array_equal(np.digitize(drawn, EDGES), np.digitize(np.concatenate(gaps_of(without)), EDGES))


def test_train_writes_the_dataset_table_into_the_checkpoint(tmp_path: Path) -> None:
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    tokenize_captures([CORPUS / "syn_flood.pcap", CORPUS / "nmap_syn_scan.pcap"], CORPUS / "manifest.csv",
                      tmp_path / "ds")
    toy = ["size=tiny", "steps=2", "n_embd=32", "n_layer=1", "n_head=2", "block_size=128", "batch_size=2",
           "eval_every=2", "eval_batches=1"]
    result = CliRunner().invoke(build_app(), ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "ckpt"),
                                              "--device", "cpu", "-q", *[x for s in toy for x in ("--set", s)]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / "ckpt" / FILE_NAME).read_bytes() == (tmp_path / "ds" / FILE_NAME).read_bytes()
    gen = load_generator(tmp_path / "ckpt", None, get_registry())
    assert gen.iat_fill is not None  # type: ignore[attr-defined]
