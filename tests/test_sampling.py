"""Grammar-constrained sampling with the real tokenizer grammar: with random weights (the worst
case for legality) every sampled sequence is accepted by the DFA; seeds reproduce; classes go
where asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytrafgen.errors import PytrafgenError
from pytrafgen.generators.ar import tokens as tok
from pytrafgen.generators.ar.config import GPTConfig
from pytrafgen.generators.ar.model import GPT
from pytrafgen.generators.ar.sample import (
    GrammarTables,
    SamplingSettings,
    SubVocabHead,
    draw,
    sample_batch,
    sample_classes,
)
from pytrafgen.tokenizer.vocab import Vocabulary

torch.set_num_threads(1)
CLASSES = ["benign_http", "syn_flood", "udp_flood"]


@pytest.fixture(scope="module")
def setup():
    vocab = Vocabulary(CLASSES, payload_cap=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.size, block_size=96, n_layer=1, n_head=2, n_embd=32,
                          class_conditioning=True, bos_token=tok.special_tokens(vocab).bos)).eval()
    grammar = tok.grammar_tables(vocab, torch.device("cpu"))
    return vocab, model, grammar


def _sample(setup, counts, seed=0, **settings):
    vocab, model, grammar = setup
    special = tok.special_tokens(vocab)
    return sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab), counts,
                          SamplingSettings(**{"batch_size": 16, **settings}), seed, torch.device("cpu"))


@pytest.mark.parametrize("strategy", ["stream", "batch"])
@pytest.mark.parametrize("settings", [{}, {"temperature": 1.5, "top_k": 50}, {"top_p": 0.9}, {"temperature": 0}])
def test_every_sampled_sequence_is_accepted_by_the_grammar(setup, settings, strategy):
    vocab = setup[0]
    grammar = vocab.grammar()
    sequences, names = _sample(setup, {"syn_flood": 20, "benign_http": 12}, strategy=strategy, **settings)
    assert len(sequences) == 32
    for seq, name in zip(sequences, names, strict=True):
        assert grammar.accepts(seq), f"rejected at token {grammar.first_error(seq)}: {seq.tolist()}"
        assert seq[1] == vocab.class_token(name)
        assert len(seq) <= 96


def test_without_the_mask_random_weights_emit_illegal_tokens(setup):
    """The check above can fail: the same model, unmasked, breaks the grammar at once."""
    vocab, model, grammar = setup
    everything = GrammarTables(torch.ones_like(grammar.allowed), grammar.next_state.clamp(min=0),
                               grammar.start_state)
    special = tok.special_tokens(vocab)
    prompts = torch.tensor([[special.bos, vocab.class_token("syn_flood")]] * 8)
    gen = torch.Generator().manual_seed(0)
    out, lengths = sample_batch(model, everything, prompts, special.eos, SamplingSettings(max_len=40), gen)
    rejected = [not vocab.grammar().accepts(out[i, : max(int(lengths[i]), 40)].numpy()) for i in range(8)]
    assert all(rejected)


def test_long_flows_are_closed_where_eos_was_legal(setup):
    """With EOS made unlikely every flow hits the context limit and is cut back to a packet end."""
    vocab, model, grammar = setup
    special = tok.special_tokens(vocab)
    penalty = torch.zeros(vocab.size)
    penalty[special.eos] = 1e4

    def decode_without_eos(idx, positions, cache, attend_len=None, class_token=None):
        return model.decode(idx, positions, cache, attend_len, class_token) - penalty

    prompts = torch.tensor([[special.bos, vocab.class_token("udp_flood")]] * 6)
    out, lengths = sample_batch(model, grammar, prompts, special.eos, SamplingSettings(max_len=96),
                                torch.Generator().manual_seed(1), decode_without_eos)
    for i in range(6):
        n = int(lengths[i])
        assert 0 < n <= 96
        assert vocab.grammar().accepts(out[i, :n].numpy())


def test_same_seed_same_flows_other_seed_other_flows(setup):
    a, _ = _sample(setup, {"udp_flood": 10}, seed=3)
    b, _ = _sample(setup, {"udp_flood": 10}, seed=3)
    c, _ = _sample(setup, {"udp_flood": 10}, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_several_classes_in_one_call_come_back_in_request_order(setup):
    vocab = setup[0]
    sequences, names = _sample(setup, {"udp_flood": 5, "benign_http": 7, "syn_flood": 3})
    assert names == ["udp_flood"] * 5 + ["benign_http"] * 7 + ["syn_flood"] * 3
    assert [int(s[1]) for s in sequences] == [vocab.class_token(n) for n in names]


def test_top_k_one_is_greedy(setup):
    greedy, _ = _sample(setup, {"syn_flood": 4}, temperature=0)
    top1, _ = _sample(setup, {"syn_flood": 4}, seed=9, top_k=1)
    assert all(np.array_equal(x, y) for x, y in zip(greedy, top1, strict=True))


def test_unknown_class_is_a_user_error(setup):
    with pytest.raises(PytrafgenError, match="unknown class"):
        _sample(setup, {"no_such_class": 1})


def test_draw_follows_the_softmax_and_never_picks_a_masked_token():
    from scipy.stats import chisquare

    logits = torch.full((1, 12), float("-inf"))
    logits[0, [0, 3, 4, 11]] = torch.tensor([0.0, 1.0, -1.0, 2.0])  # 0 and 11: the CDF's two ends
    expected = torch.softmax(logits, -1)[0]
    rows = logits.expand(20000, 12).contiguous()
    drawn = draw(rows, torch.Generator().manual_seed(3))
    counts = torch.bincount(drawn, minlength=12)
    assert counts[expected == 0].sum() == 0
    keep = expected > 0
    f_exp = expected[keep].double().numpy()
    assert chisquare(counts[keep].numpy(), f_exp / f_exp.sum() * 20000).pvalue > 1e-3
    # a row with a single possible token always gets it, wherever it sits
    for only in (0, 5, 11):
        one = torch.full((64, 12), float("-inf"))
        one[:, only] = 0.0
        assert (draw(one, torch.Generator().manual_seed(0)) == only).all()


# ------------------------------------------------------------------ stream strategy = batch strategy


def test_the_allowed_token_head_gives_the_full_heads_logits_in_ascending_token_order(setup):
    _, model, grammar = setup
    head = SubVocabHead(model.head_weight(), grammar.allowed)
    states = torch.arange(grammar.allowed.size(0))
    hidden = torch.randn(len(states), model.config.n_embd)
    logits, ids = head.logits(hidden, states)
    full = hidden @ model.head_weight().T
    for s in states.tolist():
        allowed = torch.nonzero(grammar.allowed[s], as_tuple=True)[0]
        k = len(allowed)
        assert torch.equal(ids[s, :k], allowed)  # the allowed tokens, ascending
        assert torch.allclose(logits[s, :k], full[s, allowed], atol=1e-5)
        assert torch.isinf(logits[s, k:]).all()  # padding is never drawn


def test_greedy_stream_and_batch_strategies_emit_the_same_flows(setup):
    counts = {"udp_flood": 6, "benign_http": 5, "syn_flood": 4}
    stream, names_a = _sample(setup, counts, temperature=0, strategy="stream", batch_size=4, bf16_linears=False)
    batch, names_b = _sample(setup, counts, temperature=0, strategy="batch")
    assert names_a == names_b
    assert all(np.array_equal(a, b) for a, b in zip(stream, batch, strict=True))


def test_a_float16_cache_emits_the_same_greedy_flows_as_a_float32_one(setup):
    """The stream strategy's float16 keys and values (a CPU with AVX-512) move logits by far
    less than the gaps between a greedy step's best two tokens: the same flows come out."""
    counts = {"udp_flood": 6, "benign_http": 5, "syn_flood": 4}
    half, _ = _sample(setup, counts, temperature=0, batch_size=4, half_cache=True, int8_cache=False,
                      bf16_linears=False)
    full, _ = _sample(setup, counts, temperature=0, batch_size=4, half_cache=False, int8_cache=False,
                      bf16_linears=False)
    assert all(np.array_equal(a, b) for a, b in zip(half, full, strict=True))


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_k": 20, "top_p": 0.9}])
def test_stream_and_batch_strategies_draw_from_the_same_distribution(setup, settings):
    """Per position, the tokens of many flows drawn by the two strategies (different seeds)
    pass a chi-squared test of homogeneity; so do the flow lengths. The stream strategy runs
    as a user's CPU runs it (its int8 cache where the CPU has AVX-512, bfloat16 projections
    where it multiplies bfloat16 natively: bf16_linears), the batch strategy is the plain
    float32 reference."""
    from scipy.stats import chi2_contingency

    n = 1500
    draws = {}
    for seed, strategy in ((1, "stream"), (2, "batch")):
        flows, _ = _sample(setup, {"syn_flood": n}, seed=seed, strategy=strategy, batch_size=256, max_len=24)
        draws[strategy] = flows
    for position in range(2, 10):
        a = [int(f[position]) for f in draws["stream"] if len(f) > position]
        b = [int(f[position]) for f in draws["batch"] if len(f) > position]
        tokens = sorted(set(a) | set(b))
        table = np.array([[a.count(t) for t in tokens], [b.count(t) for t in tokens]])
        table = table[:, table.sum(0) >= 10]  # chi-squared wants expected counts that are not tiny
        if table.shape[1] >= 2:
            assert chi2_contingency(table).pvalue > 1e-4, position
    lengths = [np.bincount([len(f) for f in draws[k]], minlength=25) for k in ("stream", "batch")]
    table = np.array(lengths)[:, (lengths[0] + lengths[1]) >= 10]
    assert chi2_contingency(table).pvalue > 1e-4


def test_a_rejected_flow_is_drawn_again_in_the_same_pool(setup):
    vocab, model, grammar = setup
    special = tok.special_tokens(vocab)
    seen = []

    def accept(seq):
        seen.append(len(seq))
        return len(seq) % 2 == 0

    sequences, names = sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                                      {"udp_flood": 12}, SamplingSettings(batch_size=4), 0, torch.device("cpu"),
                                      accept=accept, max_redraws=50)
    assert len(sequences) == 12 and names == ["udp_flood"] * 12
    assert all(len(s) % 2 == 0 for s in sequences)
    assert len(seen) > 12  # some were rejected and redrawn
    # with no redraws allowed, rejected flows are left out for the caller to count
    fewer, _ = sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                              {"udp_flood": 12}, SamplingSettings(batch_size=4), 0, torch.device("cpu"),
                              accept=accept, max_redraws=0)
    assert len(fewer) == sum(1 for n in seen[-12:] if n % 2 == 0)


def test_a_redrawn_flow_starts_before_the_flows_still_waiting(setup):
    """With one row, flows run one after another: a rejected udp_flood flow is drawn again
    before any syn_flood flow starts (not in a tail after the whole queue)."""
    vocab, model, grammar = setup
    special = tok.special_tokens(vocab)
    finished = []

    def accept(seq):
        finished.append(int(seq[1]))
        return len(seq) % 2 == 0

    sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                   {"udp_flood": 4, "syn_flood": 2}, SamplingSettings(batch_size=1), 0, torch.device("cpu"),
                   accept=accept, max_redraws=50)
    udp, syn = vocab.class_token("udp_flood"), vocab.class_token("syn_flood")
    assert finished.count(udp) > 4  # some were redrawn
    first_syn = finished.index(syn)
    assert set(finished[:first_syn]) == {udp} and udp not in finished[first_syn:]


@pytest.mark.parametrize("strategy", ["stream", "batch"])
def test_the_per_class_header_restriction_holds(setup, strategy):
    vocab, model, grammar = setup
    special = tok.special_tokens(vocab)
    g = vocab.grammar()
    v6 = vocab.id("ip_version", 1)
    udp = vocab.id("proto", 1)
    header = {"benign_http": tok.header_masks({"benign_http": [[v6], [udp]]}, vocab.size)["benign_http"]}
    sequences, _ = sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                                  {"benign_http": 20}, SamplingSettings(batch_size=8, strategy=strategy), 0,
                                  torch.device("cpu"), header_allowed=header)
    assert len(sequences) == 20
    for seq in sequences:
        assert g.accepts(seq)
        assert (int(seq[2]), int(seq[3])) == (v6, udp)


def test_an_unknown_strategy_is_a_user_error(setup):
    with pytest.raises(PytrafgenError, match="unknown sampling strategy"):
        _sample(setup, {"udp_flood": 1}, strategy="fast")


def test_threads_follow_the_idle_cores_and_come_back(monkeypatch):
    from pytrafgen.generators.ar import sample

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(sample.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        monkeypatch.setattr(sample.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
        with sample.cpu_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 1  # busy machine: one thread
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(sample.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        with sample.cpu_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 2  # idle: both cores, never more than before
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(sample.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
        with sample.cpu_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 2  # the user's setting wins
    finally:
        torch.set_num_threads(before)
