"""A GPT decoder over traffic tokens (in the style of nanoGPT): pre-norm blocks, attention
through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where the device
has them), learned positions, the output head tied to the token embedding, optional LoRA
adapters for fine-tuning, and a static, preallocated KV cache for sampling.

The cache has fixed shapes (batch, heads, max length, head dim) and ``decode`` writes into it
with ``index_copy_`` at tensor positions. Compiled, it attends over the whole cache under a
mask, so a decode step has the same shapes every call and ``torch.compile`` / CUDA graphs can
capture it; eager (CPU), it attends over the filled prefix only (``attend_len``).
"""

from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytrafgen.generators.ar.config import GPTConfig


class LoRALinear(nn.Linear):
    """``nn.Linear`` without bias plus, when ``rank > 0``, a trainable low-rank update
    ``B @ A`` (B starts at zero, so the adapter starts as the identity change)."""

    def __init__(self, in_features: int, out_features: int, rank: int = 0, alpha: float = 16.0) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        if rank:
            self.lora_A = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
            self.lora_B = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 activations through bfloat16 weights: only a sampling copy (bf16_linear_copy,
        # no adapters); autocast (bfloat16 activations, float32 weights) takes the path below
        if self.weight.dtype == torch.bfloat16 and x.dtype == torch.float32:
            return F.linear(x.to(torch.bfloat16), self.weight).float()
        y = F.linear(x, self.weight)
        if self.rank:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale
        return y

    def merged_weight(self) -> torch.Tensor:
        if not self.rank:
            return self.weight
        return self.weight + (self.lora_B @ self.lora_A) * self.scale


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to ``max_len``."""

    k: torch.Tensor  # (n_layer, batch, n_head, max_len, head_dim)
    v: torch.Tensor

    @classmethod
    def allocate(cls, config: GPTConfig, batch: int, max_len: int, device: torch.device,
                 dtype: torch.dtype, zeroed: bool = True) -> KVCache:
        """``zeroed`` False leaves the slots unset: only for a reader that never looks past what
        was written (the per-row kernel); masked attention would still multiply them by 0, and
        an unset NaN times 0 is NaN. Unset, the pages a pool never reaches are never touched."""
        width = config.n_embd // config.n_head
        if dtype == torch.int8:  # a slot's int8 values, then its scale's 4 bytes (quantize_slots)
            width += SCALE_BYTES
        shape = (config.n_layer, batch, config.n_head, max_len, width)
        make = torch.zeros if zeroed else torch.empty
        return cls(make(shape, device=device, dtype=dtype), make(shape, device=device, dtype=dtype))


def cache_slots(layer_cache: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B * heads,) index of row b head h's slot ``positions[b]`` in the (B * heads * slots,
    head_dim) view of one layer's contiguous cache (B, heads, slots, head_dim): the write of a
    step's keys is then one ``index_copy_``, not an advanced-index assignment (Python-heavy)."""
    _, heads, slots, _ = layer_cache.shape
    rows = positions.size(0)
    device = positions.device
    return ((torch.arange(rows, device=device)[:, None] * heads + torch.arange(heads, device=device)) * slots
            + positions[:, None]).reshape(-1)


def half_cache_supported(head_dim: int) -> bool:
    """Whether the per-row kernel reads a float16 cache here (a CPU with AVX-512, heads a
    multiple of 16 wide)."""
    from pytrafgen import _core

    return bool(_core.half_cache_supported(head_dim))


def int8_cache_supported(head_dim: int) -> bool:
    """Whether the per-row kernel reads an int8 cache here (as ``half_cache_supported``)."""
    from pytrafgen import _core

    return bool(_core.int8_cache_supported(head_dim))


SCALE_BYTES = 4  # an int8 cache slot's scale: float32, after its values


def quantize_slots(x: torch.Tensor) -> torch.Tensor:
    """(..., dim) float → (..., dim + 4) int8 cache slots as the C++ kernel stores them: scale =
    max |x| / 127 over the slot, x * (127 / max |x|) rounded to nearest even, the scale's
    float32 bytes last (an all-zero slot: scale 0)."""
    x = x.float()
    absmax = x.abs().amax(-1, keepdim=True)
    inv = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    values = torch.round(x * inv).to(torch.int8)
    scale = (absmax / 127.0).contiguous().view(torch.int8)  # (..., 4): the float32's bytes
    return torch.cat([values, scale], -1)


def dequantize_slots(slots: torch.Tensor) -> torch.Tensor:
    """The float32 values int8 cache slots (..., dim + 4) stand for."""
    scale = slots[..., -SCALE_BYTES:].contiguous().view(torch.float32)
    return slots[..., :-SCALE_BYTES].float() * scale


def bf16_linear_copy(model: GPT) -> GPT:
    """A copy of ``model`` for sampling on a CPU with native bfloat16 dot products (AVX512-BF16,
    AMX): the attention and MLP projections hold bfloat16 weights and multiply bfloat16 inputs
    (float32 sums, a bfloat16 result widened back), three to four times as fast as float32 for
    a decoding step's shapes; embeddings, the head, layer norms and the class projection stay
    float32. The inputs and results are rounded to 8 significant bits: see
    ``SamplingSettings.bf16_linears`` for what that does to the distribution."""
    if model.config.lora_rank:
        raise ValueError("bf16_linear_copy needs a model without LoRA adapters (merge them first)")
    copy = deepcopy(model)
    for module in copy.modules():
        if isinstance(module, LoRALinear):
            module.weight.data = module.weight.data.to(torch.bfloat16)
    return copy


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = LoRALinear(config.n_embd, 3 * config.n_embd, config.lora_rank, config.lora_alpha)
        self.c_proj = LoRALinear(config.n_embd, config.n_embd, config.lora_rank, config.lora_alpha)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, attend_len: int | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            assert positions is not None
            k_cache, v_cache = cache
            k_cache.index_copy_(2, positions, k.to(k_cache.dtype))
            v_cache.index_copy_(2, positions, v.to(v_cache.dtype))
            if attend_len is not None:  # eager decoding: only the filled prefix of the cache
                k_cache, v_cache = k_cache[:, :, :attend_len], v_cache[:, :, :attend_len]
            if T == 1 and attend_len is not None:
                mask = None  # one query at position attend_len - 1 sees the whole prefix
            else:
                # query at position p sees cache slots 0..p; later slots hold stale values
                slots = torch.arange(k_cache.size(2), device=x.device)
                mask = slots[None, :] <= positions[:, None]
            y = F.scaled_dot_product_attention(q, k_cache.to(q.dtype), v_cache.to(q.dtype), attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)

    def forward_rows(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], positions: torch.Tensor,
                     attend_len: int, row_kernel: bool, flat: torch.Tensor | None) -> torch.Tensor:
        """One token per row, each at its own position (``positions`` (B,)): writes row b's key
        and value into cache slot ``positions[b]`` and attends over slots ``0..positions[b]``
        (slots past a row's position hold another flow's values). ``row_kernel``: the C++
        kernel that stores the new key and value and reads each row's own prefix in one call
        (CPU, float32 or float16 cache); else a scatter into the cache and SDPA over the first
        ``attend_len`` slots under a mask. ``flat`` (B * heads,): ``cache_slots``, for SDPA."""
        B, _, C = x.shape
        qkv = self.c_attn.forward(x)
        k_cache, v_cache = cache
        dim = C // self.n_head
        if row_kernel:
            from pytrafgen import _core

            y = torch.empty((B, self.n_head, dim))
            scale, threads = 1.0 / math.sqrt(dim), torch.get_num_threads()
            lengths = (positions + 1).numpy()
            qkv_np = qkv.reshape(B, 3 * C).numpy()
            if k_cache.dtype == torch.float16:  # raw bits: numpy has no float16 the kernel binds
                _core.attend_qkv_half(qkv_np, k_cache.numpy().view(np.uint16), v_cache.numpy().view(np.uint16),
                                      lengths, scale, y.numpy(), threads)
            elif k_cache.dtype == torch.int8:
                _core.attend_qkv_int8(qkv_np, k_cache.numpy(), v_cache.numpy(), lengths, scale, y.numpy(), threads)
            else:
                _core.attend_qkv(qkv_np, k_cache.numpy(), v_cache.numpy(), lengths, scale, y.numpy(), threads)
            return self.c_proj.forward(y.reshape(B, 1, C))
        assert flat is not None
        q, k, v = (t.view(B, self.n_head, dim) for t in qkv.split(C, dim=2))  # T = 1
        k_cache.view(-1, dim).index_copy_(0, flat, k.reshape(-1, dim).to(k_cache.dtype))
        v_cache.view(-1, dim).index_copy_(0, flat, v.reshape(-1, dim).to(v_cache.dtype))
        k_cache, v_cache = k_cache[:, :, :attend_len], v_cache[:, :, :attend_len]
        mask = torch.arange(attend_len, device=x.device)[None, :] <= positions[:, None]
        y = F.scaled_dot_product_attention(q[:, :, None], k_cache.to(q.dtype), v_cache.to(q.dtype),
                                           attn_mask=mask[:, None, None, :])
        return self.c_proj(y.reshape(B, 1, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = LoRALinear(config.n_embd, 4 * config.n_embd, config.lora_rank, config.lora_alpha)
        self.c_proj = LoRALinear(4 * config.n_embd, config.n_embd, config.lora_rank, config.lora_alpha)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, attend_len: int | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, positions, attend_len)
        return x + self.mlp(self.ln_2(x))

    def forward_rows(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], positions: torch.Tensor,
                     attend_len: int, row_kernel: bool, flat: torch.Tensor | None) -> torch.Tensor:
        # the layers' forward called directly: a module call's hook handling costs as much as a
        # small step's arithmetic, and sampling runs in eval mode (dropout is the identity)
        x = x + self.attn.forward_rows(self.ln_1.forward(x), cache, positions, attend_len, row_kernel, flat)
        mlp = self.mlp
        return x + mlp.c_proj.forward(F.gelu(mlp.c_fc.forward(self.ln_2.forward(x))))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        # class conditioning: each position gets class_proj(embedding of its flow's class token);
        # a projection, because the raw (tied) embedding would also push the output towards
        # the class token itself
        self.class_proj = nn.Linear(config.n_embd, config.n_embd, bias=False) if config.class_conditioning else None
        self.apply(self._init_weights)
        if self.class_proj is not None:
            nn.init.zeros_(self.class_proj.weight)  # starts as the unconditioned model
        # GPT-2: residual projections scaled down by depth so the residual stream stays O(1).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if "lora_" not in n)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM appendix / nanoGPT:
        6 per parameter plus the attention score and value products."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.block_size

    def flow_class_tokens(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) per position: the class token of the flow it belongs to, that is the token
        right after the last BOS before it (the class token itself included); BOS where no flow
        has started yet. Causal: position t only looks at tokens up to t."""
        bos = self.config.bos_token
        starts = torch.zeros_like(idx, dtype=torch.bool)
        starts[:, 1:] = idx[:, :-1] == bos
        steps = torch.arange(idx.size(1), device=idx.device).expand_as(idx)
        last_start = torch.where(starts, steps, -1).cummax(dim=1).values
        return torch.where(last_start >= 0, idx.gather(1, last_start.clamp(min=0)), bos)

    def _embed(self, idx: torch.Tensor, positions: torch.Tensor, flow_class: torch.Tensor | None) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(positions)
        if self.config.class_conditioning:
            if flow_class is None or self.config.bos_token < 0:
                raise ValueError("a class-conditioned model needs bos_token and the flow class of each position")
            assert self.class_proj is not None
            x = x + self.class_proj(self.wte(flow_class))
        return x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln_f(x), self.wte.weight)  # head tied to the embedding

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, with ``targets``, the mean cross-entropy (targets < 0 ignored)."""
        length = idx.size(1)
        if length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens exceeds the context of {self.config.block_size}")
        pos = torch.arange(length, device=idx.device)
        flow_class = self.flow_class_tokens(idx) if self.config.class_conditioning else None
        x = self.drop(self._embed(idx, pos, flow_class))
        for block in self.blocks:
            x = block(x)
        logits = self._logits(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def decode(self, idx: torch.Tensor, positions: torch.Tensor, cache: KVCache,
               attend_len: int | None = None, class_token: torch.Tensor | None = None) -> torch.Tensor:
        """Feed tokens ``idx`` (B, T) at ``positions`` (T,), fill the cache, and return the
        logits (B, V) for the token after the last one. ``attend_len`` (eager use; the last
        position + 1) attends over the filled prefix only; None keeps every call the same
        shape (whole cache under a mask) for torch.compile / CUDA graphs. ``class_token``
        (B,): each row's class token, for a class-conditioned model (one flow per row, BOS at
        position 0)."""
        flow_class = None
        if self.config.class_conditioning and class_token is not None:
            # as in training: BOS at position 0 has no flow yet, every later position its class
            flow_class = torch.where(positions[None, :] == 0, self.config.bos_token, class_token[:, None])
        x = self._embed(idx, positions, flow_class)
        for i, block in enumerate(self.blocks):
            x = block(x, (cache.k[i], cache.v[i]), positions, attend_len)
        return self._logits(x[:, -1:, :])[:, 0, :]

    def decode_rows(self, idx: torch.Tensor, positions: torch.Tensor, cache: KVCache, attend_len: int,
                    class_token: torch.Tensor | None = None, row_kernel: bool | None = None) -> torch.Tensor:
        """Feed one token per row, ``idx`` (B,) at that row's own position ``positions`` (B,),
        into rows ``0..B-1`` of ``cache``, attending over its first ``attend_len`` slots (at least
        the largest position + 1). Returns the final hidden states (B, C): the logits of the next
        token are ``hidden @ head_weight().T``, which a caller may compute for only the tokens it
        can emit. Rows are independent, so each may hold a flow started at another step.
        ``row_kernel`` (None: where it applies, a float32, float16 or int8 cache on a CPU outside
        autograd, float16 only where ``half_cache_supported``, int8 only where
        ``int8_cache_supported``) attends each row over its own prefix in C++ instead of SDPA over
        ``attend_len``. An int8 cache (``quantize_slots``' layout) is read by the C++ kernel only."""
        if row_kernel is None:
            row_kernel = (cache.k.device.type == "cpu"
                          and cache.k.dtype in (torch.float32, torch.float16, torch.int8)
                          and self.wte.weight.dtype == torch.float32 and not torch.is_grad_enabled())
            if row_kernel and cache.k.dtype == torch.float16:
                row_kernel = half_cache_supported(self.config.n_embd // self.config.n_head)
            if row_kernel and cache.k.dtype == torch.int8:
                row_kernel = int8_cache_supported(self.config.n_embd // self.config.n_head)
        if cache.k.dtype == torch.int8 and not row_kernel:
            raise ValueError("an int8 key/value cache needs the per-row kernel (a CPU with AVX-512, see "
                             "int8_cache_supported)")
        flow_class = None
        if self.config.class_conditioning and class_token is not None:
            flow_class = torch.where(positions == 0, self.config.bos_token, class_token)[:, None]
        x = self._embed(idx[:, None], positions[:, None], flow_class)
        flat = None if row_kernel else cache_slots(cache.k[0], positions)
        for i, block in enumerate(self.blocks):
            # ModuleList items are typed nn.Module; every item of self.blocks is a Block
            x = cast(Block, block).forward_rows(x, (cache.k[i], cache.v[i]), positions, attend_len, row_kernel,
                                                flat)
        return self.ln_f(x[:, 0, :])

    def head_weight(self) -> torch.Tensor:
        """(V, C): row v of it dotted with a final hidden state is token v's logit."""
        return self.wte.weight

    # --- LoRA -------------------------------------------------------------------------------

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "lora_" in n]

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights with LoRA updates folded in, under the names of a model without adapters."""
        state: dict[str, torch.Tensor] = {}
        for name, module in self.named_modules():
            if isinstance(module, LoRALinear):
                state[f"{name}.weight"] = module.merged_weight().detach()
        for name, tensor in self.state_dict().items():
            if "lora_" not in name and name not in state:
                state[name] = tensor.detach()
        return state


__all__ = ["GPT", "KVCache", "LoRALinear", "bf16_linear_copy", "dequantize_slots", "half_cache_supported",
           "int8_cache_supported", "quantize_slots"]
