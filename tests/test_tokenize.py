"""Encoder and decoder: exact field round trip against records_from_packets, the shortcut
tokens, the payload cap, skipped flows, and malformed sequences (never a crash)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenize_support import synthetic_frames

from pytrafgen.capture import PacketTable
from pytrafgen.errors import TokenError
from pytrafgen.flows import assemble_flows
from pytrafgen.records import PACKET_COLUMNS
from pytrafgen.records_from_packets import records_from_packets
from pytrafgen.tokenizer import Vocabulary, decode, decode_batch, encode_flows

CLASSES = ["benign", "attack"]


@pytest.fixture(scope="module")
def capture():
    frames, ts = synthetic_frames()
    table = PacketTable.from_frames(frames, ts)
    flows = assemble_flows(table)
    labels = np.arange(len(flows), dtype=np.int32) % 2
    return table, flows, labels


def _encode(capture, cap=64):
    table, flows, labels = capture
    vocab = Vocabulary(CLASSES, [], cap)
    return vocab, encode_flows(table, flows, labels, vocab, protocols={})


def _blob(records, off, length, i):
    o, n = int(records.packets[off][i]), int(records.packets[length][i])
    return records.blob[o:o + n].tobytes()


@pytest.mark.parametrize("cap", [0, 5, 64, 1024])
def test_decode_gives_records_from_packets_field_by_field(capture, cap):
    table, flows, labels = capture
    vocab, enc = _encode(capture, cap)
    got = decode(enc.tokens, enc.offsets, vocab, strict=True)
    ref = records_from_packets(table, flows, labels, CLASSES)
    assert got.n_flows == ref.n_flows == 5  # the GRE flow is left out
    assert got.n_packets == ref.n_packets == 15
    for name in PACKET_COLUMNS:
        if name.endswith("_off") or name in ("ts_ns", "payload_stored"):
            continue
        np.testing.assert_array_equal(got.packets[name], ref.packets[name], err_msg=name)
    for name in ref.flows:
        np.testing.assert_array_equal(got.flows[name], ref.flows[name], err_msg=name)
    for i in range(got.n_packets):
        assert _blob(got, "ip_opt_off", "ip_opt_len", i) == _blob(ref, "ip_opt_off", "ip_opt_len", i)
        assert _blob(got, "l4_opt_off", "l4_opt_len", i) == _blob(ref, "l4_opt_off", "l4_opt_len", i)
        stored = min(int(ref.packets["payload_len"][i]), cap)
        assert got.packets["payload_stored"][i] == stored
        assert _blob(got, "payload_off", "payload_stored", i) == _blob(ref, "payload_off", "payload_stored", i)[:stored]


def test_header_features_survive(capture):
    vocab, enc = _encode(capture)
    got = decode(enc.tokens, enc.offsets, vocab, strict=True)
    p = got.packets
    assert p["urgent"][5] == 3 and p["tcp_flags"][5] == 0x5 << 9 | 0x38  # URG+PSH+ACK, reserved bits 101
    assert p["ip_opt_len"][3] == 4 and p["ip_id"][5] == 40000
    assert p["seq"][1] == 0 and p["ack"][1] == 1  # relative, across the server ISN's wrap-around
    assert p["seq"][7] == 19  # the retransmission keeps its seq
    v6 = np.flatnonzero(got.flows["ip_version"][p["flow"]] == 6)
    assert sorted(set(p["flow_label"][v6].tolist())) == [0, 0x12345, 0xABCDE]
    frag = v6[p["ip_opt_len"][v6] == 8]
    assert p["ip_id"][frag].tolist() == [0xDEADBEEF] and p["ip_flags"][frag].tolist() == [1]
    icmp = np.flatnonzero(got.flows["proto"][p["flow"]] == 1)
    assert p["icmp_rest"][icmp].tolist() == [0x12340001, 0x12340001]


def test_shortcut_tokens_are_used(capture):
    vocab, enc = _encode(capture)
    tcp_flow = enc.tokens[enc.offsets[0]:enc.offsets[1]]
    names = [vocab.token_name(t) for t in tcp_flow]
    # every in-order TCP packet uses seq.next; the retransmission spells its seq out
    assert names.count("seq.next=0") == 7 and names.count("seq.b3=0") == 1
    assert names.count("ack.next=0") >= 5
    assert "ip_id.delta=1" in names
    assert names[:2] == ["BOS", "class=benign"]


def test_flow_layout_and_skips(capture):
    _, flows, labels = capture
    vocab, enc = _encode(capture)
    lengths = np.diff(enc.offsets)
    assert lengths[flows.proto == 47].tolist() == [0]
    assert enc.skipped == {"unsupported_flow": 1}
    assert enc.packets == 15
    for f in enc.encoded_flows:
        seq = enc.tokens[enc.offsets[f]:enc.offsets[f + 1]]
        assert seq[0] == vocab.special("BOS") and seq[-1] == vocab.special("EOS")
        assert seq[1] == vocab.class_token(CLASSES[labels[f]])
    tokens, offsets = enc  # unpacks as the architecture's (tokens, offsets)
    assert tokens.dtype == np.uint16 and offsets.dtype == np.int64


def test_unlabelled_flow_is_left_out(capture):
    table, flows, _ = capture
    vocab = Vocabulary(CLASSES, [], 64)
    enc = encode_flows(table, flows, np.full(len(flows), -1, np.int32), vocab, protocols={})
    assert len(enc.tokens) == 0 and enc.skipped == {"unsupported_flow": len(flows)}


def test_timestamps_are_bucketed_gaps(capture):
    table, flows, _ = capture
    vocab, enc = _encode(capture)
    got = decode(enc.tokens, enc.offsets, vocab, strict=True)
    rows = np.flatnonzero(flows.flow_id == 0)
    gaps = np.diff(table.ts_ns[rows])
    decoded = np.diff(got.packets["ts_ns"][got.packets["flow"] == 0])
    big = gaps >= 1_000
    ratio = decoded[big] / gaps[big]
    assert np.all((ratio > 0.75) & (ratio < 1.33))  # within the bucket's resolution
    assert np.all(decoded[~big] == 0)


# --- malformed sequences ---------------------------------------------------------------------

def _one_flow(capture):
    vocab, enc = _encode(capture)
    return vocab, enc.tokens[enc.offsets[0]:enc.offsets[1]].astype(np.int64)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda v, t: t[:-1], "truncated"),
    (lambda v, t: t[:3], "truncated"),
    (lambda v, t: np.concatenate([t[:5], [v.size + 3], t[6:]]), "out_of_range"),
    (lambda v, t: np.concatenate([t[:9], [v.class_token("attack")], t[9:]]), "class_mid_flow"),
    (lambda v, t: np.concatenate([t[:8], t[9:]]), "wrong_order"),
    (lambda v, t: np.concatenate([t, [v.special("PKT")]]), "after_eos"),
    (lambda v, t: np.concatenate([t[:1], t[2:]]), "wrong_order"),
])
def test_malformed_flow_raises_or_is_counted(capture, mutate, reason):
    vocab, good = _one_flow(capture)
    bad = mutate(vocab, good)
    tokens = np.concatenate([good, bad, good])
    offsets = np.array([0, len(good), len(good) + len(bad), 2 * len(good) + len(bad)])
    with pytest.raises(TokenError, match=f"flow 1: {reason.replace('_', ' ')}"):
        decode(tokens, offsets, vocab, strict=True)
    skipped: dict[str, int] = {}
    rec = decode(tokens, offsets, vocab, skipped=skipped)
    assert skipped == {reason: 1}
    assert rec.n_flows == 2 and rec.n_packets == 2 * 8


def test_empty_spans_decode_to_nothing(capture):
    vocab, good = _one_flow(capture)
    skipped: dict[str, int] = {}
    rec = decode(np.concatenate([good, good]), np.array([0, 0, len(good), len(good), 2 * len(good)]), vocab,
                 strict=True, skipped=skipped)
    assert rec.n_flows == 2 and skipped == {}


def test_pad_after_eos_is_accepted_in_batches(capture):
    vocab, good = _one_flow(capture)
    rows = np.full((2, len(good) + 7), vocab.special("PAD"), np.int64)
    rows[0, :len(good)] = good
    rows[1, :len(good) - 3] = good[:-3]
    skipped: dict[str, int] = {}
    rec = decode_batch(rows, vocab, skipped=skipped)
    assert rec.n_flows == 1 and skipped == {"truncated": 1}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=70000), max_size=120), st.integers(0, 4))
def test_random_tokens_never_crash(tokens, n_cuts):
    vocab = Vocabulary(CLASSES, [], 16)
    tokens = np.array(tokens, dtype=np.int64)
    cuts = np.sort(np.random.default_rng(len(tokens)).integers(0, len(tokens) + 1, n_cuts))
    offsets = np.concatenate([[0], cuts, [len(tokens)]])
    skipped: dict[str, int] = {}
    rec = decode(tokens, offsets, vocab, skipped=skipped)
    assert rec.n_flows + sum(skipped.values()) == int(np.count_nonzero(np.diff(offsets)))


def test_bad_offsets_are_a_token_error(capture):
    vocab, good = _one_flow(capture)
    with pytest.raises(TokenError, match="offsets"):
        decode(good, np.array([0, len(good) + 5]), vocab)
    with pytest.raises(TokenError, match="offsets"):
        decode(good, np.array([4, 2]), vocab)


CORRUPTED_COLUMNS = ("frame_off", "caplen", "l3_off", "ip_hdr_len", "l4_off", "l4_hdr_len", "payload_off",
                     "payload_len", "payload_wirelen", "proto", "l3", "ip_flags", "frag_offset", "urgent")


def test_corrupted_packet_columns_never_break_the_encoder(capture):
    """Columns that contradict the bytes (as a buggy reader or a hand-made table could give):
    every read is bounds-checked, and whatever is written still follows the grammar."""
    table, flows, labels = capture
    vocab = Vocabulary(CLASSES, [], 16)
    grammar = vocab.grammar()
    rng = np.random.default_rng(1)
    for _ in range(60):
        bad = table.take(np.arange(len(table)))
        for name in rng.choice(CORRUPTED_COLUMNS, size=3, replace=False):
            col = getattr(bad, name)
            rows = rng.integers(0, len(col), size=4)
            col[rows] = rng.integers(0, np.iinfo(col.dtype).max, size=4, endpoint=True, dtype=col.dtype)
        enc = encode_flows(bad, flows, labels, vocab, protocols={})
        for f in enc.encoded_flows:
            assert grammar.accepts(enc.tokens[enc.offsets[f]:enc.offsets[f + 1]])
        assert decode(enc.tokens, enc.offsets, vocab, strict=True).n_packets == enc.packets


def _random_flow_frames(rng: np.random.Generator, n: int) -> list[bytes]:
    """One TCP, one UDP and one ICMP flow with random header values in every packet."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    frames = []
    for k in range(n):
        c2s = bool(rng.integers(2))
        src, dst = ("10.1.0.1", "10.1.0.2") if c2s or k == 0 else ("10.1.0.2", "10.1.0.1")
        ip = IP(src=src, dst=dst, ttl=int(rng.integers(256)), tos=int(rng.integers(256)),
                id=int(rng.integers(65536)), flags=int(rng.integers(8)))
        payload = Raw(rng.integers(0, 256, int(rng.integers(0, 90)), dtype=np.uint8).tobytes())
        kind = k % 3
        if kind == 0:
            sport, dport = (33000, 8080) if src == "10.1.0.1" else (8080, 33000)
            opts = [("NOP", None)] * int(rng.integers(0, 9))
            l4 = TCP(sport=sport, dport=dport, seq=int(rng.integers(2**32)), ack=int(rng.integers(2**32)),
                     flags=int(rng.integers(512)), window=int(rng.integers(65536)),
                     urgptr=int(rng.integers(65536)) * int(rng.integers(2)), options=opts)
        elif kind == 1:
            sport, dport = (5000, 6000) if src == "10.1.0.1" else (6000, 5000)
            l4 = UDP(sport=sport, dport=dport)
        else:
            l4 = ICMP(type=int(rng.integers(256)), code=int(rng.integers(256)), id=int(rng.integers(65536)),
                      seq=int(rng.integers(65536)))
        frames.append(bytes(Ether() / ip / l4 / payload))
    return frames


@pytest.mark.parametrize("seed", range(4))
def test_random_header_values_round_trip(seed):
    rng = np.random.default_rng(seed)
    frames = _random_flow_frames(rng, 60)
    ts = np.cumsum(rng.integers(0, 10**9, len(frames)))
    table = PacketTable.from_frames(frames, ts)
    flows = assemble_flows(table)
    labels = np.zeros(len(flows), np.int32)
    vocab = Vocabulary(["benign"], [], 100)
    enc = encode_flows(table, flows, labels, vocab, protocols={})
    got = decode(enc.tokens, enc.offsets, vocab, strict=True)
    ref = records_from_packets(table, flows, labels, ["benign"])
    assert got.n_packets == ref.n_packets == len(frames)
    for name in PACKET_COLUMNS:
        if not (name.endswith("_off") or name == "ts_ns"):
            np.testing.assert_array_equal(got.packets[name], ref.packets[name], err_msg=name)
    for i in range(got.n_packets):
        for off, length in (("ip_opt_off", "ip_opt_len"), ("l4_opt_off", "l4_opt_len"),
                            ("payload_off", "payload_stored")):
            assert _blob(got, off, length, i) == _blob(ref, off, length, i)
