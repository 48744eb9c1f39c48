"""A whole decoding step in one C++ call (``_core.DecodeStep``, csrc/decode_step.hpp) for the
stream sampler on a CPU with AVX512-BF16.

``GPT.decode_rows`` runs about a hundred torch operators per step (embedding, per layer a layer
norm, three to four projections each with its bfloat16 casts, the attention kernel, GELU,
residual adds), each with its dispatch and Python cost: when few rows are left in the pool
(the tail of long flows runs one row at a time) that overhead is nearly the whole step. The
fused step computes the same thing with the same roundings (bfloat16 projection inputs and
results, float32 elsewhere) for every row in one call, the GIL released.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from pytrafgen.generators.ar.model import GPT, Block, KVCache, LoRALinear


def pack_linear(weight: torch.Tensor) -> np.ndarray:
    """An (out, in) bfloat16 weight as the fused step reads it (``_core.pack_index``): blocks of
    16 outputs, within a block each pair of inputs' 32 values, output-major, the pair adjacent."""
    out_features, in_features = weight.shape
    bits = weight.detach().contiguous().view(torch.int16).numpy().view(np.uint16)
    return bits.reshape(out_features // 16, 16, in_features // 2, 2).transpose(0, 2, 1, 3).reshape(-1)


def fused_step_applies(model: GPT) -> bool:
    """Whether ``FusedStep`` computes this model's step: a sampling copy with bfloat16 projections
    (``bf16_linear_copy``, no adapters), float32 embeddings, on a CPU whose C++ core runs the step
    (AVX512-BF16, a head size the attention kernel reads)."""
    from pytrafgen import _core

    config = model.config
    if model.wte.weight.device.type != "cpu" or model.wte.weight.dtype != torch.float32:
        return False
    linears = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not linears or any(m.rank or m.weight.dtype != torch.bfloat16 for m in linears):
        return False
    return bool(_core.decode_step_supported(config.n_embd, config.n_head))


class FusedStep:
    """``GPT.decode_rows`` for rows 0..n-1 of a contiguous CPU cache, as one C++ call; returns
    the final hidden states (n, C) float32 like it. Only for a model ``fused_step_applies`` to."""

    def __init__(self, model: GPT) -> None:
        from pytrafgen import _core

        config = model.config
        blocks = [cast(Block, b) for b in model.blocks]  # ModuleList items are typed nn.Module
        norms: list[torch.Tensor] = [n.weight for b in blocks for n in (b.ln_1, b.ln_2)]
        norms.append(model.ln_f.weight)
        linears = [pack_linear(lin.weight) for b in blocks
                   for lin in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]

        def f32(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().numpy())

        class_proj = f32(model.class_proj.weight) if model.class_proj is not None else None
        self.class_conditioning = model.class_proj is not None
        self.embd = config.n_embd
        self._step = _core.DecodeStep(f32(model.wte.weight), f32(model.wpe.weight), class_proj,
                                      f32(torch.stack(norms)), np.concatenate(linears), config.n_head,
                                      max(config.bos_token, 0))

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, class_token: torch.Tensor | None,
                 cache: KVCache, threads: int = 1) -> torch.Tensor:
        hidden = torch.empty((tokens.size(0), self.embd))
        k, v = self.cache_arrays(cache)
        classes = class_token.numpy() if class_token is not None else None
        self.run(tokens.numpy(), positions.numpy(), classes, k, v, hidden.numpy(), threads)
        return hidden

    @staticmethod
    def cache_arrays(cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """The cache's keys and values as the step writes them (numpy views of the whole pool)."""
        if not (cache.k.is_contiguous() and cache.v.is_contiguous()):
            raise ValueError("the fused step writes into the pool's whole cache: it must be contiguous")
        k, v = cache.k.numpy(), cache.v.numpy()
        if cache.k.dtype == torch.float16:  # raw bits: numpy has no float16 the kernel binds
            k, v = k.view(np.uint16), v.view(np.uint16)
        return k, v

    def run(self, tokens: np.ndarray, positions: np.ndarray, classes: np.ndarray | None, k: np.ndarray,
            v: np.ndarray, hidden: np.ndarray, threads: int = 1) -> None:
        """The step on numpy arrays (``cache_arrays``' views), ``hidden`` (rows, C) written."""
        self._step.run(tokens, positions, classes if self.class_conditioning else None, k, v, hidden, threads)


__all__ = ["FusedStep", "fused_step_applies", "pack_linear"]
