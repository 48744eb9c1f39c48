"""The grammar DFA: it accepts everything the encoder writes, everything it accepts decodes,
and its batched numpy / torch stepping agree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from tokenize_support import synthetic_frames

from pytrafgen.capture import PacketTable
from pytrafgen.flows import assemble_flows
from pytrafgen.interfaces import ProtocolSpec
from pytrafgen.tokenizer import AppProtocol, Vocabulary, decode, encode_flows

CLASSES = ["benign", "attack", "scan"]
APP = AppProtocol("anyapp", "tcp", ("a", "b", "c"))


class AnyApp(ProtocolSpec):
    """Decodes any local tokens (so random walks through app spans are decodable)."""

    name = "anyapp"
    layer = "app"
    token_names = APP.token_names

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        return bytes(tokens)


def _random_walk(grammar, vocab, rng, max_len=3000) -> np.ndarray | None:
    eos, end_app = vocab.special("EOS"), vocab.special("APP_END")
    app_begin = vocab.app_begin(APP.name) if vocab.app_protocols else -1
    state, out = grammar.start_state, []
    while state != grammar.end_state:
        legal = np.flatnonzero(grammar.allowed[state])
        if eos in legal and (rng.random() < 0.25 or len(out) > max_len):
            tok = eos
        elif end_app in legal and rng.random() < 0.3:
            tok = end_app
        elif app_begin in legal and rng.random() < 0.2:  # 1 of 257 choices: help the walk find it
            tok = app_begin
        else:
            tok = int(rng.choice(legal))
        out.append(tok)
        state = int(grammar.next_state[state, tok])
        if len(out) > 2 * max_len:
            return None
    return np.array(out)


@pytest.mark.parametrize("cap", [0, 3, 64, 300])
def test_every_accepted_sequence_decodes(cap):
    vocab = Vocabulary(CLASSES, [APP], cap)
    grammar = vocab.grammar()
    rng = np.random.default_rng(cap)
    walks = [w for w in (_random_walk(grammar, vocab, rng) for _ in range(150)) if w is not None]
    assert len(walks) > 140
    tokens = np.concatenate(walks)
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in walks])])
    rec = decode(tokens, offsets, vocab, strict=True, protocols={"anyapp": AnyApp()})
    assert rec.n_flows == len(walks)
    assert rec.n_packets == int(np.sum(tokens == vocab.special("PKT")))
    # the walks reach the rarely used branches too
    for name in ("frag_offset.n3", "urgent.n0", "tcp_flags.hi", "ip_opt.byte", "app.anyapp", "icmp_rest.n0"):
        r = vocab.ranges[name]
        assert np.any((tokens >= r.start) & (tokens < r.stop)), name


@pytest.mark.parametrize("cap", [0, 16, 64, 1024])
def test_encoder_output_is_accepted(cap):
    frames, ts = synthetic_frames()
    table = PacketTable.from_frames(frames, ts)
    flows = assemble_flows(table)
    vocab = Vocabulary(CLASSES, [APP], cap)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols={})
    grammar = vocab.grammar()
    for f in enc.encoded_flows:
        seq = enc.tokens[enc.offsets[f]:enc.offsets[f + 1]]
        assert grammar.first_error(seq) == -1
        # one token less is incomplete, one more is illegal
        assert grammar.first_error(seq[:-1]) == len(seq) - 1
        assert grammar.first_error(np.append(seq, vocab.special("PKT"))) == len(seq)


def test_illegal_positions_are_found():
    vocab = Vocabulary(CLASSES, [], 8)
    g = vocab.grammar()
    bos, pkt = vocab.special("BOS"), vocab.special("PKT")
    assert g.first_error([pkt]) == 0
    assert g.first_error([bos, vocab.class_token("scan"), vocab.class_token("scan")]) == 2
    assert g.first_error([bos, vocab.size]) == 1
    assert g.first_error([bos]) == 1  # incomplete
    assert not g.accepts([bos, vocab.class_token("benign")])


def test_tables_shape_and_determinism():
    vocab = Vocabulary(CLASSES, [APP], 64)
    g = vocab.grammar()
    assert g.allowed.shape == g.next_state.shape == (g.n_states, vocab.size)
    assert g.n_states * vocab.size < 12_000_000  # small enough to mask GPU batches with one gather
    assert np.array_equal(g.allowed, g.next_state >= 0)
    # from the start only BOS; after EOS only PAD
    assert np.flatnonzero(g.allowed[g.start_state]).tolist() == [vocab.special("BOS")]
    assert np.flatnonzero(g.allowed[g.end_state]).tolist() == [vocab.special("PAD")]
    # the class position allows exactly the class tokens
    after_bos = g.next_state[g.start_state, vocab.special("BOS")]
    r = vocab.ranges["class"]
    assert np.flatnonzero(g.allowed[after_bos]).tolist() == list(range(r.start, r.stop))


def test_batched_step_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    vocab = Vocabulary(CLASSES, [], 16)
    g = vocab.grammar()
    rng = np.random.default_rng(0)
    walks = [_random_walk(g, vocab, rng, max_len=200) for _ in range(8)]
    assert all(w is not None for w in walks)
    length = max(len(w) for w in walks)
    batch = np.full((8, length), vocab.special("PAD"))
    for k, w in enumerate(walks):
        batch[k, :len(w)] = w
    allowed_t, next_t = g.torch_tables("cpu")
    states = np.full(8, g.start_state)
    states_t = torch.full((8,), g.start_state, dtype=torch.long)
    for pos in range(length):
        assert np.all(g.allowed[states, batch[:, pos]])
        assert bool(allowed_t[states_t, torch.from_numpy(batch[:, pos])].all())
        states = g.step(states, batch[:, pos])
        states_t = next_t[states_t, torch.from_numpy(batch[:, pos])]
        assert np.array_equal(states, states_t.numpy())
    assert np.all(states == g.end_state)
    # an illegal token sends a batch row to −1, and −1 stays −1
    dead = g.step(np.array([g.start_state]), np.array([vocab.special("EOS")]))
    assert dead.tolist() == [-1] and g.step(dead, np.array([0])).tolist() == [-1]


@pytest.mark.gpu
def test_torch_tables_on_the_gpu_match_numpy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    vocab = Vocabulary(CLASSES, [APP], 64)
    g = vocab.grammar()
    allowed, next_state = g.torch_tables("cuda")
    states = torch.arange(g.n_states, device="cuda")
    tokens = torch.randint(0, vocab.size, (g.n_states,), device="cuda")
    assert np.array_equal(allowed[states].cpu().numpy(), g.allowed)
    assert np.array_equal(next_state[states, tokens].cpu().numpy(), g.step(np.arange(g.n_states), tokens.cpu().numpy()))
