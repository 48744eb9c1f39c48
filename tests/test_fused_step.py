"""The fused decoding step (``_core.DecodeStep``, fused_step.py) against the torch operators it
replaces (``GPT.decode_rows`` of the bfloat16 sampling copy), and the fused head and draw
(``_core.HeadDraw``) against ``SubVocabHead.logits`` then ``draw``; both refuse sizes they cannot
read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytrafgen import _core
from pytrafgen.generators.ar.config import GPTConfig
from pytrafgen.generators.ar.fused_step import FusedStep, fused_step_applies, pack_linear
from pytrafgen.generators.ar.model import GPT, KVCache, bf16_linear_copy
from pytrafgen.generators.ar.sample import PoolArrays, SamplingSettings, SubVocabHead, _pick

torch.set_num_threads(1)
BOS = 1


def _model() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=32, class_conditioning=True,
                          bos_token=BOS))
    with torch.no_grad():  # a trained model's class projection is not zero
        assert model.class_proj is not None
        model.class_proj.weight.normal_(0, 0.05)
    return bf16_linear_copy(model).eval()


needs_step = pytest.mark.skipif(not _core.decode_step_supported(32, 2),
                                reason="the fused step needs a CPU with AVX512-BF16")


def test_pack_linear_puts_each_weight_where_the_kernel_reads_it():
    weight = torch.randn(32, 6).to(torch.bfloat16)
    packed = pack_linear(weight)
    bits = weight.view(torch.int16).numpy().view(np.uint16)
    for o in range(32):
        for i in range(6):
            assert packed[_core.pack_index(o, i, 6)] == bits[o, i]


@needs_step
@pytest.mark.parametrize("dtype", [torch.int8, torch.float16, torch.float32])
def test_fused_step_matches_the_torch_step_with_staggered_rows(dtype):
    """Rows at their own positions (a refilled pool), 20 steps: hidden states within bfloat16
    rounding of the operator path, and both caches hold the same keys and values."""
    model = _model()
    assert fused_step_applies(model)
    step = FusedStep(model)
    config, rows, slots = model.config, 5, 40
    caches = [KVCache.allocate(config, rows + 2, slots, torch.device("cpu"), dtype) for _ in range(2)]
    classes = torch.tensor([3, 4, 5, 3, 6])
    positions = torch.tensor([0, 3, 7, 1, 12])
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    with torch.inference_mode():
        for _ in range(20):
            tokens = torch.randint(0, config.vocab_size, (rows,), generator=generator)
            view = KVCache(caches[0].k[:, :rows], caches[0].v[:, :rows])
            want = model.decode_rows(tokens, positions, view, int(positions.max()) + 1, classes, True)
            got = step(tokens, positions, classes, caches[1])
            worst = max(worst, float((want - got).abs().max()))
            logits_want, logits_got = want @ model.wte.weight.T, got @ model.wte.weight.T
            kl = (logits_want.log_softmax(-1).exp() * (logits_want.log_softmax(-1) - logits_got.log_softmax(-1)))
            assert float(kl.sum(-1).max()) < 1e-3
            positions = positions + 1
    # a projection result one bfloat16 step (2^-8 relative) apart at most, through 2 layers
    assert worst < 0.1
    for a, b in ((caches[0].k, caches[1].k), (caches[0].v, caches[1].v)):
        if dtype == torch.int8:
            values_a, values_b = a[..., :-4].float(), b[..., :-4].float()
            assert float((values_a - values_b).abs().max()) <= 8  # a few quantization steps
        else:
            assert torch.allclose(a.float(), b.float(), atol=0.05)
    assert torch.equal(caches[1].k[:, rows:], caches[0].k[:, rows:])  # rows past the step untouched


@needs_step
def test_the_first_position_takes_bos_as_its_class():
    model = _model()
    step = FusedStep(model)
    cache = KVCache.allocate(model.config, 2, 8, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        hidden = step(torch.tensor([BOS, BOS]), torch.tensor([0, 0]), torch.tensor([3, 9]), cache)
    assert torch.equal(hidden[0], hidden[1])


@needs_step
def test_the_fused_step_refuses_what_it_cannot_read():
    model = _model()
    step = FusedStep(model)
    cache = KVCache.allocate(model.config, 2, 8, torch.device("cpu"), torch.int8)
    ok = (torch.tensor([5, 6]), torch.tensor([1, 2]), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="token outside the vocabulary"):
        step(torch.tensor([5, 300]), ok[1], ok[2], cache)
    with pytest.raises(ValueError, match="position out of range"):
        step(ok[0], torch.tensor([1, 8]), ok[2], cache)
    with pytest.raises(ValueError, match="position out of range"):
        step(ok[0], torch.tensor([-1, 2]), ok[2], cache)
    with pytest.raises(ValueError, match="class token outside"):
        step(ok[0], ok[1], torch.tensor([3, -2]), cache)
    with pytest.raises(ValueError, match="more rows than the cache holds"):
        step(torch.tensor([5, 6, 7]), torch.tensor([1, 2, 3]), torch.tensor([3, 3, 3]), cache)
    with pytest.raises(ValueError, match="needs each row's class token"):
        step(ok[0], ok[1], None, cache)
    with pytest.raises(ValueError, match="contiguous"):
        step(*ok, KVCache(cache.k[:, :1], cache.v[:, :1]))
    other = KVCache.allocate(GPTConfig(vocab_size=300, block_size=64, n_layer=3, n_head=2, n_embd=32), 2, 8,
                             torch.device("cpu"), torch.int8)
    with pytest.raises(ValueError, match="do not match the model"):
        step(*ok, other)


def test_a_model_with_float32_projections_keeps_the_operator_path():
    plain = GPT(GPTConfig(vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    assert not fused_step_applies(plain)


def _head_setup():
    torch.manual_seed(2)
    vocab, embd, states = 50, 16, 7
    allowed = torch.rand(states, vocab) < 0.3
    allowed[:, 0] = True  # no empty set
    allowed[3] = allowed[1]  # two states sharing a set
    weight = torch.randn(vocab, embd)
    return SubVocabHead(weight, allowed), weight, allowed


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_the_fused_draw_picks_the_operator_paths_token_for_the_same_uniforms(temperature):
    head, _, _ = _head_setup()
    settings = SamplingSettings(temperature=temperature)
    hidden = torch.randn(200, 16)
    state = torch.randint(0, 7, (200,))
    fused = head.draw(hidden, state, settings, torch.Generator().manual_seed(5))
    assert fused is not None
    logits, ids = head.logits(hidden, state)
    column = _pick(logits, settings, torch.Generator().manual_seed(5))
    reference = ids.gather(1, column[:, None])[:, 0]
    # the same uniforms: a token differs only where a uniform falls within rounding of a CDF step
    assert int((fused != reference).sum()) <= 1


def test_the_fused_draw_only_emits_allowed_tokens_with_their_probabilities():
    head, weight, allowed = _head_setup()
    hidden = torch.randn(1, 16).expand(20000, 16).contiguous()
    state = torch.full((20000,), 2)
    tokens = head.draw(hidden, state, SamplingSettings(), torch.Generator().manual_seed(0))
    assert tokens is not None
    assert bool(allowed[2, tokens].all())
    logits = (hidden[0] @ weight.T).masked_fill(~allowed[2], float("-inf"))
    expected = torch.softmax(logits, -1) * 20000
    counts = torch.bincount(tokens, minlength=50).float()
    big = expected > 200
    assert torch.allclose(counts[big], expected[big], rtol=0.15)


def test_top_k_and_top_p_leave_the_draw_to_the_operator_path():
    head, _, _ = _head_setup()
    hidden, state = torch.randn(3, 16), torch.zeros(3, dtype=torch.long)
    assert head.draw(hidden, state, SamplingSettings(top_k=5), torch.Generator()) is None
    assert head.draw(hidden, state, SamplingSettings(top_p=0.9), torch.Generator()) is None


def _tables(states: int, vocab: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((states, vocab), np.int64), np.zeros(states, bool)


def test_the_fused_draw_refuses_states_and_uniforms_out_of_range():
    offsets, ids = np.array([0, 2], np.int64), np.array([4, 9], np.int64)
    draw = _core.HeadDraw(offsets, ids, np.ones((2, 16), np.float32), np.zeros(3, np.int64), *_tables(3))
    hidden, out = np.ones((1, 16), np.float32), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="state out of range"):
        draw.draw(hidden, np.array([3], np.int64), np.array([0.5], np.float32), 1.0, out)
    with pytest.raises(ValueError, match="uniform outside"):
        draw.draw(hidden, np.array([0], np.int64), np.array([1.0], np.float32), 1.0, out)
    with pytest.raises(ValueError, match="needs one uniform per row"):
        draw.draw(hidden, np.array([0], np.int64), None, 1.0, out)
    with pytest.raises(ValueError, match="set out of range"):
        _core.HeadDraw(offsets, ids, np.ones((2, 16), np.float32), np.array([1], np.int64), *_tables(1))
    with pytest.raises(ValueError, match="offsets span"):
        _core.HeadDraw(np.array([0, 3], np.int64), ids, np.ones((2, 16), np.float32), np.zeros(1, np.int64),
                       *_tables(1))
    with pytest.raises(ValueError, match="token outside the vocabulary"):
        _core.HeadDraw(offsets, ids, np.ones((2, 16), np.float32), np.zeros(1, np.int64), *_tables(1, vocab=9))
    with pytest.raises(ValueError, match="transition to no state"):
        _core.HeadDraw(offsets, ids, np.ones((2, 16), np.float32), np.zeros(1, np.int64),
                       np.full((1, 10), 1, np.int64), np.zeros(1, bool))
    draw.draw(hidden, np.array([0], np.int64), None, 0.0, out)  # greedy: equal logits, the first
    assert out[0] == 4



def test_draw_advance_does_the_steps_bookkeeping_as_the_operator_path():
    """Draw then advance a pool of 6 rows (4 stepping) in place: each stepping row's token goes to
    out[row, pos + 1], its state through the grammar, feed and pos forward, last_eos_ok where EOS
    was allowed; the rows past ``rows`` are untouched; the count says how many rows ended."""
    torch.manual_seed(3)
    vocab, states, eos, max_len = 40, 5, 7, 12
    allowed = torch.rand(states, vocab) < 0.5
    allowed[:, eos] = torch.tensor([True, False, True, False, True])
    allowed[:, 0] = True
    next_state = torch.randint(0, states, (states, vocab))
    weight = torch.randn(vocab, 16)
    head = SubVocabHead(weight, allowed, next_state, eos)
    settings = SamplingSettings()
    state = torch.tensor([0, 1, 2, 3, 4, 0])
    pos = torch.tensor([3, 5, 10, 1, 2, 4])
    feed, last_eos_ok = torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)
    out = torch.full((6, max_len), -1, dtype=torch.long)
    hidden = torch.randn(6, 16)
    before = (state.clone(), pos.clone())
    pool = PoolArrays(state.numpy(), pos.numpy(), feed.numpy(), last_eos_ok.numpy(), out.numpy(),
                      torch.zeros(6, dtype=torch.long).numpy())
    ended = head.draw_advance(hidden.numpy(), 4, settings, torch.Generator().manual_seed(9), pool, eos)
    token = head.draw(hidden[:4], before[0][:4], settings, torch.Generator().manual_seed(9))
    assert token is not None
    for r in range(4):
        target = int(before[1][r]) + 1
        assert int(out[r, target]) == int(token[r]) and int(feed[r]) == int(token[r])
        assert int(pos[r]) == target
        assert int(state[r]) == int(next_state[before[0][r], token[r]])
        assert int(last_eos_ok[r]) == (target if bool(allowed[before[0][r], eos]) else 0)
    assert ended == int(((token == eos) | (before[1][:4] + 1 == max_len - 1)).sum())
    assert ended >= 1  # row 2 reached the last slot
    assert torch.equal(state[4:], before[0][4:]) and torch.equal(pos[4:], before[1][4:])
    assert bool((out[4:] == -1).all())
    with pytest.raises(ValueError, match="past max_len"):
        head.draw_advance(hidden.numpy(), 4, settings, torch.Generator(), pool, eos)  # row 2 is at the end


@needs_step
def test_fused_step_false_keeps_the_operator_path(monkeypatch):
    """``fused_step`` decides which path the stream strategy takes; both emit grammar-legal flows."""
    from pytrafgen.generators.ar import sample as sample_module
    from pytrafgen.generators.ar import tokens as tok
    from pytrafgen.tokenizer.vocab import Vocabulary

    vocab = Vocabulary(["syn_flood"], payload_cap=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.size, block_size=48, n_layer=1, n_head=2, n_embd=32,
                          class_conditioning=True, bos_token=tok.special_tokens(vocab).bos)).eval()
    grammar = tok.grammar_tables(vocab, torch.device("cpu"))
    special = tok.special_tokens(vocab)
    built = []

    class Counting(FusedStep):
        def __init__(self, m: GPT) -> None:
            built.append(1)
            super().__init__(m)

    monkeypatch.setattr(sample_module, "FusedStep", Counting)
    for fused in (False, True):
        flows, _ = sample_module.sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                                                {"syn_flood": 8}, SamplingSettings(batch_size=4, fused_step=fused),
                                                0, torch.device("cpu"))
        assert len(built) == int(fused)
        assert len(flows) > 0
        for flow in flows:
            state = grammar.start_state
            for token in flow.astype(np.int64):
                state = int(grammar.next_state[state, token])
                assert state >= 0
