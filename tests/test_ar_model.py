"""The AR model (KV cache, causality, weight tying, LoRA, sizes) and the numpy safetensors codec."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
import torch.nn.functional as F

from pytrafgen.errors import CheckpointError
from pytrafgen.generators.ar.config import GPTConfig, size_config
from pytrafgen.generators.ar.model import (
    GPT,
    KVCache,
    bf16_linear_copy,
    dequantize_slots,
    half_cache_supported,
    int8_cache_supported,
    quantize_slots,
)
from pytrafgen.generators.ar.sample import filter_logits
from pytrafgen.safetensors_io import load_file, load_torch, save_file, save_torch

torch.set_num_threads(1)
TINY = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)


# --------------------------------------------------------------------- safetensors codec


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "u8": np.frombuffer(b"\x00\x01\xff", dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "flag": np.array([True, False]),
    }


def test_our_file_reads_with_the_reference_package(tmp_path):
    arrays = _arrays()
    save_file(arrays, tmp_path / "a.safetensors", metadata={"k": "v"})
    theirs = safetensors.numpy.load_file(str(tmp_path / "a.safetensors"))
    assert set(theirs) == set(arrays)
    for name, array in arrays.items():
        assert theirs[name].dtype == array.dtype and np.array_equal(theirs[name], array), name
    with safetensors.safe_open(str(tmp_path / "a.safetensors"), "np") as fh:
        assert fh.metadata() == {"k": "v"}


def test_scalar_round_trips(tmp_path):
    save_file({"s": np.array(7.5)}, tmp_path / "s.safetensors")
    ours, _ = load_file(tmp_path / "s.safetensors")
    assert ours["s"].shape == () and ours["s"] == 7.5


def test_reference_file_reads_with_ours(tmp_path):
    arrays = _arrays()
    safetensors.numpy.save_file(arrays, str(tmp_path / "b.safetensors"), metadata={"x": "1"})
    ours, metadata = load_file(tmp_path / "b.safetensors")
    assert metadata == {"x": "1"}
    for name, array in arrays.items():
        assert ours[name].dtype == array.dtype and ours[name].shape == array.shape
        assert np.array_equal(ours[name], array), name


def test_bfloat16_round_trips_both_ways(tmp_path):
    t = torch.randn(4, 6).to(torch.bfloat16)
    safetensors.torch.save_file({"w": t}, str(tmp_path / "ref.safetensors"))
    assert torch.equal(load_torch(tmp_path / "ref.safetensors")["w"], t)
    save_torch({"w": t}, tmp_path / "ours.safetensors")
    assert torch.equal(safetensors.torch.load_file(str(tmp_path / "ours.safetensors"))["w"], t)


@pytest.mark.parametrize("damage", ["truncated", "huge_header", "bad_json", "offsets_past_end", "wrong_size"])
def test_damaged_files_raise_checkpoint_error(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    save_file({"w": np.arange(10, dtype=np.float32)}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if damage == "truncated":
        raw = raw[:5]
    elif damage == "huge_header":
        raw = struct.pack("<Q", 1 << 40) + raw[8:]
    elif damage == "bad_json":
        raw = raw[:8] + b"x" + raw[9:]
    else:
        header["w"]["data_offsets"] = [0, 400] if damage == "offsets_past_end" else [0, 36]
        body = json.dumps(header).encode()
        raw = struct.pack("<Q", len(body)) + body + raw[8 + n:]
    path.write_bytes(raw)
    with pytest.raises(CheckpointError):
        load_file(path)


# ------------------------------------------------------------------------------ the model


def test_kv_cache_decoding_matches_the_full_forward():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (3, 20))
    full, _ = model(idx)
    cache = KVCache.allocate(TINY, 3, TINY.block_size, torch.device("cpu"), torch.float32)
    steps = [model.decode(idx[:, :4], torch.arange(4), cache)]  # prefill of a 4-token prompt
    steps += [model.decode(idx[:, t:t + 1], torch.tensor([t]), cache) for t in range(4, 20)]
    assert torch.allclose(torch.stack(steps, 1), full[:, 3:20], atol=1e-5)
    # the eager path (attend over the filled prefix only) gives the same logits
    cache = KVCache.allocate(TINY, 3, TINY.block_size, torch.device("cpu"), torch.float32)
    eager = [model.decode(idx[:, :4], torch.arange(4), cache, 4)]
    eager += [model.decode(idx[:, t:t + 1], torch.tensor([t]), cache, t + 1) for t in range(4, 20)]
    assert torch.allclose(torch.stack(eager, 1), full[:, 3:20], atol=1e-5)


COND = GPTConfig(**{**TINY.to_dict(), "class_conditioning": True, "bos_token": 1})


def test_each_position_is_conditioned_on_its_flows_class_token():
    model = GPT(COND)
    # BOS=1; two flows: class 40 then class 41; a BOS mid-window still belongs to the flow before
    idx = torch.tensor([[1, 40, 5, 6, 1, 41, 7], [9, 9, 1, 42, 8, 8, 8]])
    expected = torch.tensor([[1, 40, 40, 40, 40, 41, 41], [1, 1, 1, 42, 42, 42, 42]])
    assert torch.equal(model.flow_class_tokens(idx), expected)


def test_conditioned_decoding_matches_the_full_forward():
    torch.manual_seed(0)
    model = GPT(COND).eval()
    assert not model.class_proj.weight.any()  # a new model starts unconditioned...
    torch.nn.init.normal_(model.class_proj.weight, std=0.5)  # ...here as if trained
    idx = torch.randint(2, COND.vocab_size, (3, 20))
    idx[:, 0] = 1  # sampling: BOS at position 0, the class token after it
    full, _ = model(idx)
    cache = KVCache.allocate(COND, 3, COND.block_size, torch.device("cpu"), torch.float32)
    steps = [model.decode(idx[:, :2], torch.arange(2), cache, 2, idx[:, 1])]
    steps += [model.decode(idx[:, t:t + 1], torch.tensor([t]), cache, t + 1, idx[:, 1]) for t in range(2, 20)]
    assert torch.allclose(torch.stack(steps, 1), full[:, 1:20], atol=1e-5)
    # the class token enters every later position's input, not only through attention
    other = idx.clone()
    other[:, 1] = (idx[:, 1] + 1) % COND.vocab_size
    positions = torch.arange(20)
    same = model._embed(idx, positions, model.flow_class_tokens(idx))
    moved = model._embed(other, positions, model.flow_class_tokens(other))
    assert torch.equal(same[:, 0], moved[:, 0])
    assert not torch.isclose(same[:, 2:], moved[:, 2:]).all(dim=-1).any()
    with pytest.raises(ValueError, match="class-conditioned"):
        model.decode(idx[:, :2], torch.arange(2), cache, 2)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % TINY.vocab_size
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_output_head_is_tied_to_the_token_embedding():
    model = GPT(TINY)
    names = set(model.state_dict())
    assert not any("head" in n for n in names)
    idx = torch.randint(0, TINY.vocab_size, (1, 5))
    before, _ = model(idx)
    with torch.no_grad():
        model.wte.weight[7] += 1.0  # token 7's output logit must move with its embedding
    after, _ = model(idx)
    assert not torch.allclose(before[..., 7], after[..., 7])


def test_loss_ignores_negative_targets():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    targets = torch.randint(0, TINY.vocab_size, (2, 8))
    _, loss_all = model(idx, targets)
    masked = targets.clone()
    masked[:, :4] = -1
    logits, loss_masked = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, TINY.vocab_size), targets[:, 4:].reshape(-1))
    assert torch.allclose(loss_masked, expected) and not torch.allclose(loss_all, loss_masked)


def test_named_sizes_have_the_documented_parameter_counts():
    small = GPT(size_config("small", 4096)[0]).num_params()
    assert 11e6 < small < 13.5e6
    base_cfg = size_config("base", 4096)[0]
    # count without allocating: 12 d^2 per layer + embeddings + norms
    d, L = base_cfg.n_embd, base_cfg.n_layer
    base = 12 * L * d * d + (4096 + base_cfg.block_size) * d + (2 * L + 1) * d
    assert 85e6 < base < 95e6
    assert size_config("tiny", 100)[0].n_embd < 128


def test_lora_starts_neutral_and_merges_exactly():
    torch.manual_seed(0)
    plain = GPT(TINY)
    lora_cfg = GPTConfig(**{**TINY.to_dict(), "lora_rank": 4})
    lora = GPT(lora_cfg)
    missing, unexpected = lora.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("lora_" in m for m in missing)
    idx = torch.randint(0, TINY.vocab_size, (2, 10))
    assert torch.allclose(lora(idx)[0], plain(idx)[0], atol=1e-6)  # B = 0: no change yet
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    merged = GPT(TINY)
    merged.load_state_dict(lora.merged_state_dict())
    assert torch.allclose(merged(idx)[0], lora(idx)[0], atol=1e-5)
    assert not torch.allclose(merged(idx)[0], plain(idx)[0], atol=1e-3)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False]]
    p = filter_logits(logits, top_k=0, top_p=0.75)  # 0.5 < 0.75, 0.5+0.3 reaches it
    assert torch.isfinite(p).tolist() == [[True, True, False, False]]
    p_small = filter_logits(logits, top_k=0, top_p=0.1)  # the likeliest always stays
    assert torch.isfinite(p_small).tolist() == [[True, False, False, False]]
    masked = logits.clone()
    masked[0, 0] = float("-inf")
    assert torch.isfinite(filter_logits(masked, 0, 0.9)).tolist() == [[False, True, True, False]]


HALF_KERNEL = half_cache_supported(COND.n_embd // COND.n_head)
INT8_KERNEL = int8_cache_supported(COND.n_embd // COND.n_head)


@pytest.mark.parametrize(("row_kernel", "dtype"), [
    (True, torch.float32), (False, torch.float32), (False, torch.float16),
    pytest.param(True, torch.float16, marks=pytest.mark.skipif(
        not HALF_KERNEL, reason="the float16 cache kernel needs a CPU with AVX-512")),
    pytest.param(True, torch.int8, marks=pytest.mark.skipif(
        not INT8_KERNEL, reason="the int8 cache kernel needs a CPU with AVX-512")),
])
def test_per_row_decoding_with_staggered_starts_matches_the_full_forward(row_kernel, dtype):
    """Rows of one cache at unrelated positions (a flow starts in a row whenever the one
    before it ends, sample_stream): each row's logits equal the full forward's at its position,
    through the C++ per-row kernel and through SDPA under a mask alike. Stale values a
    previous flow left in a row's later slots must not leak in. A float16 cache (keys and
    values rounded to float16, sums in float32) stays within 1e-2 of the float32 logits, an int8
    one (a scale per slot; stale slots hold random bytes, NaN scales included) within 5e-2."""
    torch.manual_seed(0)
    model = GPT(COND).eval()
    torch.nn.init.normal_(model.class_proj.weight, std=0.5)
    rows, length = 4, 16
    idx = torch.randint(2, COND.vocab_size, (rows, length))
    idx[:, 0] = 1
    full, _ = model(idx)
    expected = full  # (rows, length, V)
    cache = KVCache.allocate(COND, rows, COND.block_size, torch.device("cpu"), dtype)
    if dtype == torch.int8:  # stale slots of earlier flows: any bytes
        cache.k.copy_(torch.randint(-128, 128, cache.k.shape, dtype=torch.int8))
        cache.v.copy_(torch.randint(-128, 128, cache.v.shape, dtype=torch.int8))
    else:  # stale values of earlier flows
        cache.k.normal_()
        cache.v.normal_()
    start = torch.tensor([0, 3, 5, 9])  # the step at which each row's flow starts
    got = torch.zeros_like(expected)
    with torch.inference_mode():
        for step in range(int(start.max()) + length):
            pos = (step - start).clamp(0, length - 1)
            live = (step >= start) & (step - start < length)
            hidden = model.decode_rows(idx[torch.arange(rows), pos], pos, cache, int(pos.max()) + 1, idx[:, 1],
                                       row_kernel=row_kernel)
            logits = hidden @ model.head_weight().T
            got[live, pos[live]] = logits[live]
            # a row not started yet or already done keeps writing its last slot: harmless
    assert torch.allclose(got, expected, atol={torch.float32: 1e-4, torch.float16: 1e-2, torch.int8: 5e-2}[dtype])


# 20: the generic kernel's tail (not a multiple of its 8 lanes); 48 and 64: the AVX-512
# kernel where the CPU has it (3 and 4 16-wide vectors per head)
@pytest.mark.parametrize("dim", [20, 48, 64])
def test_attend_rows_kernel_matches_masked_attention(dim):
    from pytrafgen import _core

    torch.manual_seed(1)
    rows, heads, slots = 5, 3, 40
    q = torch.randn(rows, heads, dim)
    k, v = torch.randn(rows, heads, slots, dim), torch.randn(rows, heads, slots, dim)
    lengths = torch.tensor([1, 7, 40, 13, 2])
    mask = torch.arange(slots)[None, :] < lengths[:, None]
    expected = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask[:, None, None, :])[:, :, 0]
    for threads in (1, 2, 3):
        out = torch.empty_like(q)
        _core.attend_rows(q.numpy(), k.numpy(), v.numpy(), lengths.numpy(), dim ** -0.5, out.numpy(), threads)
        assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="length out of range"):
        _core.attend_rows(q.numpy(), k.numpy(), v.numpy(), torch.zeros(rows, dtype=torch.long).numpy(), 1.0,
                          out.numpy())


@pytest.mark.skipif(not half_cache_supported(48), reason="the float16 cache kernel needs a CPU with AVX-512")
def test_attend_rows_half_reads_float16_keys_and_values_exactly():
    """Keys and values stored as float16: the same attention as SDPA over those float16 values
    widened to float32 (only the storage is rounded, not the sums); 17..40 slots cover the
    16-wide softmax's masked tail."""
    from pytrafgen import _core

    torch.manual_seed(2)
    rows, heads, slots, dim = 6, 4, 40, 48
    q = torch.randn(rows, heads, dim)
    k, v = torch.randn(rows, heads, slots, dim).half(), torch.randn(rows, heads, slots, dim).half()
    lengths = torch.tensor([1, 16, 17, 40, 31, 2])
    mask = torch.arange(slots)[None, :] < lengths[:, None]
    expected = F.scaled_dot_product_attention(q[:, :, None], k.float(), v.float(),
                                              attn_mask=mask[:, None, None, :])[:, :, 0]
    for threads in (1, 2):
        out = torch.empty_like(q)
        _core.attend_rows_half(q.numpy(), k.numpy().view(np.uint16), v.numpy().view(np.uint16), lengths.numpy(),
                               dim ** -0.5, out.numpy(), threads)
        assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="AVX-512"):
        _core.attend_rows_half(q[:, :, :20].contiguous().numpy(), k[..., :20].contiguous().numpy().view(np.uint16),
                               v[..., :20].contiguous().numpy().view(np.uint16), lengths.numpy(), 1.0,
                               torch.empty(rows, heads, 20).numpy())


@pytest.mark.parametrize("half", [False, pytest.param(True, marks=pytest.mark.skipif(
    not half_cache_supported(48), reason="the float16 cache kernel needs a CPU with AVX-512"))])
def test_attend_qkv_stores_the_new_key_and_value_then_attends(half):
    """The fused call of a decoding step: row b's key and value (the middle and last thirds of
    its qkv row) land in slot lengths[b]-1, float16 rounded as torch rounds (to nearest even),
    no other slot changes, and the query (first third) attends as SDPA does over the updated
    cache. Lengths 1..40 cover a block of 16 keys and its masked tail."""
    from pytrafgen import _core

    torch.manual_seed(3)
    rows, heads, slots, dim = 6, 4, 40, 48
    width = heads * dim
    qkv = torch.randn(rows, 3 * width)
    store = torch.float16 if half else torch.float32
    k, v = torch.randn(rows, heads, slots, dim).to(store), torch.randn(rows, heads, slots, dim).to(store)
    lengths = torch.tensor([1, 16, 17, 40, 33, 2])
    expected_k, expected_v = k.clone(), v.clone()
    at = lengths - 1
    expected_k[torch.arange(rows), :, at] = qkv[:, width:2 * width].reshape(rows, heads, dim).to(store)
    expected_v[torch.arange(rows), :, at] = qkv[:, 2 * width:].reshape(rows, heads, dim).to(store)
    mask = torch.arange(slots)[None, :] < lengths[:, None]
    q = qkv[:, :width].reshape(rows, heads, dim)
    expected = F.scaled_dot_product_attention(q[:, :, None], expected_k.float(), expected_v.float(),
                                              attn_mask=mask[:, None, None, :])[:, :, 0]
    attend = _core.attend_qkv_half if half else _core.attend_qkv

    def raw(t: torch.Tensor) -> np.ndarray:
        return t.numpy().view(np.uint16) if half else t.numpy()

    for threads in (1, 2):
        kc, vc, out = k.clone(), v.clone(), torch.empty(rows, heads, dim)
        attend(qkv.numpy(), raw(kc), raw(vc), lengths.numpy(), dim ** -0.5, out.numpy(), threads)
        assert torch.equal(kc, expected_k) and torch.equal(vc, expected_v)
        assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="qkv"):
        attend(qkv[:, :-1].contiguous().numpy(), raw(k), raw(v), lengths.numpy(), 1.0,
               torch.empty(rows, heads, dim).numpy())


def test_quantize_slots_keeps_each_value_within_half_a_step_of_its_slot():
    """An int8 slot: max |x| maps to ±127, every value comes back within half a step (max |x| /
    254) of itself, and an all-zero slot stays zero (scale 0, no division by it)."""
    torch.manual_seed(5)
    x = torch.randn(3, 7, 48) * torch.logspace(-3, 3, 7)[None, :, None]
    x[0, 0] = 0
    slots = quantize_slots(x)
    assert slots.dtype == torch.int8 and slots.shape == (3, 7, 52)
    back = dequantize_slots(slots)
    step = x.abs().amax(-1, keepdim=True) / 127
    assert ((back - x).abs() <= step / 2 * (1 + 1e-5)).all()
    assert slots[..., :48].abs().amax(-1)[1:].eq(127).all()
    assert torch.equal(back[0, 0], torch.zeros(48))


@pytest.mark.skipif(not int8_cache_supported(48), reason="the int8 cache kernel needs a CPU with AVX-512")
def test_attend_qkv_int8_stores_quantized_slots_then_attends_over_them():
    """The int8 cache's decoding step: row b's key and value land in slot lengths[b]-1 exactly
    as ``quantize_slots`` quantizes them (values and scale bytes), no other slot changes, and the
    query attends as SDPA does over the dequantized cache; ``attend_rows_int8`` (no store) the
    same. Lengths 1..40 cover a block of 16 keys and its masked tail."""
    from pytrafgen import _core

    torch.manual_seed(6)
    rows, heads, slots, dim = 6, 4, 40, 48
    width = heads * dim
    qkv = torch.randn(rows, 3 * width) * 3
    k, v = quantize_slots(torch.randn(rows, heads, slots, dim)), quantize_slots(torch.randn(rows, heads, slots, dim))
    lengths = torch.tensor([1, 16, 17, 40, 33, 2])
    expected_k, expected_v = k.clone(), v.clone()
    at = lengths - 1
    expected_k[torch.arange(rows), :, at] = quantize_slots(qkv[:, width:2 * width].reshape(rows, heads, dim))
    expected_v[torch.arange(rows), :, at] = quantize_slots(qkv[:, 2 * width:].reshape(rows, heads, dim))
    mask = torch.arange(slots)[None, :] < lengths[:, None]
    q = qkv[:, :width].reshape(rows, heads, dim)
    expected = F.scaled_dot_product_attention(q[:, :, None], dequantize_slots(expected_k),
                                              dequantize_slots(expected_v), attn_mask=mask[:, None, None, :])[:, :, 0]
    for threads in (1, 2):
        kc, vc, out = k.clone(), v.clone(), torch.empty(rows, heads, dim)
        _core.attend_qkv_int8(qkv.numpy(), kc.numpy(), vc.numpy(), lengths.numpy(), dim ** -0.5, out.numpy(), threads)
        assert torch.equal(kc, expected_k) and torch.equal(vc, expected_v)
        assert torch.allclose(out, expected, atol=1e-5)
        out = torch.empty(rows, heads, dim)
        _core.attend_rows_int8(q.contiguous().numpy(), kc.numpy(), vc.numpy(), lengths.numpy(), dim ** -0.5,
                               out.numpy(), threads)
        assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="k does not match"):  # slots without their scale bytes
        _core.attend_qkv_int8(qkv.numpy(), k[..., :dim].contiguous().numpy(), v[..., :dim].contiguous().numpy(),
                              lengths.numpy(), 1.0, torch.empty(rows, heads, dim).numpy())
    with pytest.raises(ValueError, match="AVX-512"):
        _core.attend_rows_int8(q[:, :, :20].contiguous().numpy(), k[..., :24].contiguous().numpy(),
                               v[..., :24].contiguous().numpy(), lengths.numpy(), 1.0,
                               torch.empty(rows, heads, 20).numpy())


def test_an_int8_cache_outside_the_per_row_kernel_is_refused():
    model = GPT(COND).eval()
    cache = KVCache.allocate(COND, 2, COND.block_size, torch.device("cpu"), torch.int8)
    assert cache.k.shape[-1] == COND.n_embd // COND.n_head + 4
    with torch.inference_mode(), pytest.raises(ValueError, match="int8 key/value cache"):
        model.decode_rows(torch.ones(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), cache, 1,
                          row_kernel=False)


def test_a_bf16_linear_copy_rounds_only_the_projections_and_leaves_the_model_alone():
    """The sampling copy's projections hold bfloat16 weights and give float32 activations back;
    its logits stay within bfloat16 rounding of the float32 model's (next-token KL < 1e-3 for
    this random model), and the model it was copied from keeps its float32 weights."""
    torch.manual_seed(4)
    model = GPT(COND).eval()
    idx = torch.randint(2, COND.vocab_size, (3, 12))
    idx[:, 0] = 1
    copy = bf16_linear_copy(model)
    assert copy.blocks[0].attn.c_attn.weight.dtype == torch.bfloat16
    assert model.blocks[0].attn.c_attn.weight.dtype == torch.float32
    assert copy.wte.weight.dtype == torch.float32  # the head (tied embedding) stays float32
    with torch.inference_mode():
        expected, _ = model(idx)
        got, _ = copy(idx)
    assert got.dtype == torch.float32
    assert not torch.equal(got, expected)  # rounded: the copy does multiply in bfloat16
    kl = F.kl_div(F.log_softmax(got, -1), F.log_softmax(expected, -1), log_target=True, reduction="none").sum(-1)
    assert float(kl.max()) < 1e-3
    with pytest.raises(ValueError, match="LoRA"):
        bf16_linear_copy(GPT(GPTConfig(**{**COND.to_dict(), "lora_rank": 2})))


def test_a_lora_layer_under_autocast_still_applies_its_adapter():
    """bfloat16 activations through float32 weights (autocast training) keep the LoRA path; only
    float32 activations through bfloat16 weights (a sampling copy) take the bfloat16 shortcut."""
    from pytrafgen.generators.ar.model import LoRALinear

    torch.manual_seed(5)
    layer = LoRALinear(16, 8, rank=2)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x.bfloat16()).float()
    with_adapter = F.linear(x, layer.merged_weight())
    without = F.linear(x, layer.weight)
    assert torch.allclose(got, with_adapter, rtol=0.02, atol=0.05)  # bfloat16 rounding
    assert not torch.allclose(got, without, rtol=0.02, atol=0.05)
