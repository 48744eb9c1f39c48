"""Whole flows past the model's context: continuation segments (CONT + packets-so-far bucket)
round-trip, a tiny model trained in seconds on real long flows samples flows longer than its
context that decode and build into valid packets, and a checkpoint without the new tokens
still loads and samples as before (cut at its context)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CAPTURES

from pytrafgen.generators import load_generator
from pytrafgen.generators.ar import tokens as tok
from pytrafgen.generators.ar.config import GPTConfig
from pytrafgen.generators.ar.continuation import (
    ContinuationTokens,
    bucket_packets,
    continuation_tokens,
    packet_bucket,
    split_flow,
    split_flows,
)
from pytrafgen.generators.ar.data import FlowWindows
from pytrafgen.generators.ar.generator import ARGenerator
from pytrafgen.generators.ar.model import GPT, KVCache

torch.set_num_threads(1)
# flows of dozens to hundreds of packets: far longer than a 256-token context (a few packets)
FILES = ("benign_mqtt.pcap", "slowloris.pcap")
BLOCK = 256
FAST = {"size": "tiny", "block_size": BLOCK, "batch_size": 4, "eval_every": 10, "eval_batches": 1,
        "device": "cpu", "quiet": True, "lr": 3e-3,
        "continuation_buckets": 14}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    if not (CAPTURES / "manifest.csv").is_file():
        pytest.skip(f"needs the shared captures at {CAPTURES}")
    out = tmp_path_factory.mktemp("cont") / "ds"
    tokenize_captures([CAPTURES / f for f in FILES], CAPTURES / "manifest.csv", out, payload_cap=8, workers=1)
    return TrafficDataset(out)


@pytest.fixture(scope="module")
def trained(dataset) -> ARGenerator:
    gen = ARGenerator("tiny")
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 60})
    return gen


def test_packet_buckets_are_log2_and_capped():
    assert [packet_bucket(n, 14) for n in (1, 2, 3, 4, 7, 8, 1000)] == [0, 1, 1, 2, 2, 3, 9]
    assert packet_bucket(10**6, 14) == 13 and packet_bucket(0, 14) == 0
    for b in range(13):
        assert packet_bucket(bucket_packets(b), 14) == b


def test_segments_round_trip_to_the_whole_flow(dataset):
    special = tok.special_tokens(dataset.vocab)
    cont = ContinuationTokens(cont=dataset.vocab.size, buckets=14, context_packets=2)
    tokens, offsets = dataset.tokens("train"), dataset.offsets("train")
    long_flows = np.flatnonzero(np.diff(offsets) > 2 * BLOCK)
    grammar = dataset.vocab.grammar()
    checked = 0
    for i in long_flows:
        flow = tokens[offsets[i]:offsets[i + 1]].astype(np.int64)
        if np.diff(np.flatnonzero(flow == special.pkt)).max() > BLOCK - 16:
            continue  # a packet too long to follow a prompt: the flow would end there
        checked += 1
        segs, masks = split_flow(flow, BLOCK, special.pkt, special.eos, cont)
        assert len(segs) > 1 and all(len(s) <= BLOCK for s in segs)
        header_len = int(np.flatnonzero(flow == special.pkt)[0])
        stitched = [segs[0]]
        packets_so_far = int(np.count_nonzero(segs[0] == special.pkt))
        for seg, mask in zip(segs[1:], masks[1:], strict=True):
            # BOS CLASS CONT BUCKET header, its bucket the packets emitted before it
            assert seg[0] == special.bos and seg[1] == flow[1] and seg[2] == cont.cont
            assert seg[3] == cont.bucket_token(packets_so_far)
            assert (seg[4:4 + header_len - 2] == flow[2:header_len]).all()
            given = int(np.count_nonzero(mask[: np.argmin(mask)])) + 1  # the prompt: its targets are ignored
            stitched.append(seg[given:])
            packets_so_far += int(np.count_nonzero(seg[given:] == special.pkt))
        whole = np.concatenate(stitched)
        # non-final segments' last token is not a target: the flow goes on
        assert all(m[-1] for m in masks[:-1]) and not masks[-1][-1]
        assert (whole == flow).all() and grammar.accepts(whole)
    assert checked >= 5


def test_windows_of_continued_flows_mask_prompts(dataset):
    special = tok.special_tokens(dataset.vocab)
    cont = ContinuationTokens(cont=dataset.vocab.size, buckets=14, context_packets=2)
    windows = FlowWindows(dataset.tokens("train"), dataset.offsets("train"), dataset.labels("train"), BLOCK,
                          special, seed=0, continuation=cont)
    assert windows.continued > 0 and windows.truncated == 0
    x, y = windows.batch(windows.class_balanced_weights({0: 1.0}), 32, np.random.default_rng(0))
    assert x.shape == (32, BLOCK) and (x[:, 0] == special.bos).all()
    # the token after CONT (its bucket) and CONT itself are never targets
    assert not np.isin(y, np.arange(cont.cont, cont.model_vocab_size)).any()
    assert (x == cont.cont).any()  # continuation windows are drawn
    segs = split_flows(dataset.tokens("train"), dataset.offsets("train"), BLOCK, special.pkt, special.eos, cont)
    assert segs.continued == windows.continued


def test_prefill_matches_feeding_token_by_token(trained):
    model = GPT(trained.model_config)
    model.load_state_dict(trained.weights)
    model.eval()
    prompt = torch.tensor([[trained.model_config.bos_token, 5, 7, 9, 11, 13]])
    cls = prompt[:, 1]
    one = KVCache.allocate(model.config, 1, 8, torch.device("cpu"), torch.float32)
    step = KVCache.allocate(model.config, 1, 8, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        whole = model.decode(prompt, torch.arange(6), one, 6, cls)
        for t in range(6):
            last = model.decode(prompt[:, t:t + 1], torch.tensor([t]), step, t + 1, cls)
    assert torch.allclose(whole, last, atol=1e-4)
    assert torch.allclose(one.k[:, :, :, :6], step.k[:, :, :, :6], atol=1e-5)


def test_tiny_model_samples_whole_flows_longer_than_its_context(trained, dataset):
    from pytrafgen.generators.ar.sample import sample_classes

    cfg = trained.model_config
    assert cfg.continuation_buckets > 0 and cfg.vocab_size == dataset.vocab.size + 1 + cfg.continuation_buckets
    vocab = dataset.vocab
    special = tok.special_tokens(vocab)
    model = GPT(cfg)
    model.load_state_dict(trained.weights)
    device = torch.device("cpu")
    grammar = tok.grammar_tables(vocab, device, cfg.vocab_size)
    settings = replace(trained.sampling, max_flow_packets=60, batch_size=8)
    counts = {name: 8 for name in dataset.classes}
    sequences, names = sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab), counts,
                                      settings, seed=1, device=device,
                                      continuation=continuation_tokens(cfg), pkt=special.pkt)
    assert len(sequences) == 16 and sorted(set(names)) == sorted(dataset.classes)
    checker = vocab.grammar()
    for seq in sequences:  # every flow, continued or not, is one grammatical BOS CLASS … EOS sequence
        assert seq[-1] == special.eos and checker.accepts(seq)
        assert not np.isin(seq, np.arange(vocab.size, cfg.vocab_size)).any()  # no model-only token leaks
        assert np.count_nonzero(seq == special.pkt) <= 60 + BLOCK // 20
    longer = [len(s) for s in sequences if len(s) > BLOCK]
    assert len(longer) >= 4, [len(s) for s in sequences]  # past the context, some many times over
    assert max(longer) > 3 * BLOCK


def test_continued_tcp_flows_build_into_valid_packets(trained, dataset, tmp_path):
    scapy = pytest.importorskip("scapy.all")
    from pytrafgen.build import write_records

    trained.set_sampling(device="cpu", show_progress=False, max_flow_packets=40)
    records = trained.sample({"benign_mqtt": 6}, seed=2)
    assert np.bincount(records.packets["flow"]).max() > 10
    pcap = tmp_path / "g.pcap"
    summary = write_records(pcap, records, dataset.address_plan, seed=0)
    packets = scapy.rdpcap(str(pcap))
    assert len(packets) == records.n_packets and not summary["skipped"]
    # the TCP state carries over segment boundaries: per flow and side, seq never goes back
    # by more than a retransmission would (the builder derives it from relative seq tokens)
    by_side: dict[tuple, list[int]] = {}
    for p in packets:
        if scapy.TCP in p:
            ip = p[scapy.IP] if scapy.IP in p else p[scapy.IPv6]
            key = (ip.src, p[scapy.TCP].sport, ip.dst, p[scapy.TCP].dport)
            by_side.setdefault(key, []).append(p[scapy.TCP].seq)
    assert any(len(v) > 10 for v in by_side.values())
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark not installed: the tshark check is skipped")
        return
    # tshark (the project's compliance oracle) finds no malformed packet and no error-level
    # expert note (a bad checksum or length would be one)
    out = subprocess.run([tshark, "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                          "-Y", "_ws.malformed || _ws.expert.severity == error"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", out.stdout[:1000]


def test_checkpoint_without_continuation_tokens_samples_as_before(dataset, tmp_path):
    gen = ARGenerator("tiny")
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 4, "continuation_buckets": 0})
    assert gen.model_config.vocab_size == dataset.vocab.size
    gen.save(tmp_path / "old")
    body = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("continuation_buckets", "continuation_context"):  # as saved before they existed
        body["model"].pop(key)
    (tmp_path / "old" / "config.json").write_text(json.dumps(body))
    old = load_generator(tmp_path / "old")
    assert isinstance(old, ARGenerator) and old.model_config is not None
    assert old.model_config.continuation_buckets == 0 and continuation_tokens(old.model_config) is None
    old.set_sampling(device="cpu", show_progress=False)
    records = old.sample({dataset.classes[0]: 6}, seed=0)
    assert records.n_flows == 6
    # cut at the context: no flow longer than fits in BLOCK tokens
    assert np.bincount(records.packets["flow"]).max() <= BLOCK // 10
    # a warm start gives it the tokens, and it trains and samples on
    old.add_continuation(buckets=14)
    assert old.model_config.vocab_size == dataset.vocab.size + 15
    assert old.weights["wte.weight"].shape[0] == dataset.vocab.size + 15
    old.fit(dataset, {**FAST, "stage": "pretrain", "steps": 2})
    assert old.completed[-1]["continued_flows"] > 0
    assert old.sample({dataset.classes[0]: 2}, seed=0).n_flows == 2


def test_gptconfig_from_old_dict_has_no_continuation():
    old = {k: v for k, v in GPTConfig().to_dict().items() if not k.startswith("continuation")}
    assert GPTConfig.from_dict(old).continuation_buckets == 0
    assert continuation_tokens(replace(GPTConfig(), continuation_buckets=3, vocab_size=100)) == \
        ContinuationTokens(cont=96, buckets=3, context_packets=4)


def test_warm_start_onto_a_vocabulary_with_another_protocol(dataset, tmp_path):
    """A checkpoint tokenized without one application protocol (as the bundled default was
    before CoAP) moves onto a dataset's vocabulary with it: shared ranges keep their rows."""
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    protocols = dict(get_registry().protocols)
    if "coap" not in protocols:
        pytest.skip("needs the CoAP plugin (plugins/pytrafgen-coap)")
    fewer = {k: v for k, v in protocols.items() if k != "coap"}
    out = tmp_path / "fewer"
    tokenize_captures([CAPTURES / f for f in FILES], CAPTURES / "manifest.csv", out, payload_cap=8, workers=1,
                      protocols=fewer)
    small = TrafficDataset(out, fewer)
    assert small.vocab.hash != dataset.vocab.hash
    gen = ARGenerator("tiny")
    gen.fit(small, {**FAST, "stage": "pretrain", "steps": 2, "continuation_buckets": 0})
    old_rows = gen.weights["wte.weight"].clone()
    old_class = small.vocab.class_token(small.classes[0])
    gen.adopt_vocabulary(dataset.vocab.to_json())
    new_class = dataset.vocab.class_token(dataset.classes[0])
    assert new_class != old_class and torch.equal(gen.weights["wte.weight"][new_class], old_rows[old_class])
    assert gen.model_config.vocab_size == dataset.vocab.size
    special = tok.special_tokens(dataset.vocab)
    assert gen.model_config.bos_token == special.bos
    gen.add_continuation()
    gen.fit(dataset, {**FAST, "stage": "pretrain", "steps": 2})
    gen.set_sampling(device="cpu", show_progress=False, max_flow_packets=20)
    assert gen.sample({dataset.classes[0]: 2}, seed=0).n_flows == 2


def test_continued_flows_close_at_twice_the_longest_training_flow(trained, dataset):
    special = tok.special_tokens(dataset.vocab)
    longest = tok.longest_flows(dataset.tokens("train"), dataset.offsets("train"), dataset.labels("train"),
                                dataset.classes, special.pkt)
    assert trained.longest_flow == longest and max(longest.values()) > 100
    saved = dict(trained.longest_flow)
    try:
        trained.longest_flow = {c: 5 for c in saved}  # caps of 10 packets, checked at segment ends
        trained.set_sampling(device="cpu", show_progress=False, max_flow_packets=0)
        records = trained.sample({c: 6 for c in dataset.classes}, seed=3)
        assert np.bincount(records.packets["flow"]).max() <= 10 + BLOCK // 10
    finally:
        trained.longest_flow = saved


def test_python_api_sample_fills_payloads_past_the_cap(trained, tmp_path):
    """gen.sample() gives the bytes `pytrafgen generate` writes: payloads past the token cap
    are drawn from the checkpoint's payload_fill.json, so the CLI's fill has nothing left to do."""
    from pytrafgen.payload_fill import fill_payloads

    assert trained.payload_fill_text is not None
    trained.set_sampling(device="cpu", show_progress=False, max_flow_packets=30)
    records = trained.sample({"benign_mqtt": 4, "slowloris": 4}, seed=4)
    p = records.packets
    assert (p["payload_len"] > 8).any()  # payloads longer than the 8-byte token cap
    assert (p["payload_stored"] == p["payload_len"]).all()
    trained.save(tmp_path / "ckpt")
    again, note = fill_payloads(records, tmp_path / "ckpt", seed=4)
    assert note == "" and np.array_equal(again.blob, records.blob)
