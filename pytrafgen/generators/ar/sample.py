"""Batched, grammar-constrained sampling with a static KV cache.

Each sequence starts as ``BOS CLASS``. At every step the grammar's DFA state of each sequence
selects its row of the ``allowed`` table, illegal tokens get −inf logits before temperature /
top-k / top-p, and the sampled token advances the state through ``next_state``: so an illegal
token is never emitted. Optionally the first tokens after the class (the flow header's IP
version and transport protocol) are restricted per class to what that class's training flows
used. A sequence that reaches the context length without EOS is cut back to
the last position where EOS was legal and closed there (a sequence with no such position is
dropped and drawn again). Draws use one ``torch.Generator`` seeded from ``seed``: the same
seed, counts and batch size give the same flows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pytrafgen.errors import PytrafgenError
from pytrafgen.generators.ar.config import SamplingSettings
from pytrafgen.generators.ar.model import GPT, KVCache


@dataclass(frozen=True)
class GrammarTables:
    """The DFA as tensors on the sampling device."""

    allowed: torch.Tensor  # (S, V) bool
    next_state: torch.Tensor  # (S, V) int64, -1 illegal
    start_state: int


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches
    ``top_p``; the rest become −inf. Masked (−inf) logits stay masked."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits) by inverting its CDF with one uniform per row:
    exactly the distribution torch.multinomial draws from, at a tenth of its CPU cost (and of
    a Gumbel race's, which needs a random number per vocabulary entry). A token with
    probability 0 (−inf logit) is never drawn."""
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand((logits.size(0), 1), generator=generator, device=logits.device) * cdf[:, -1:]
    # first index whose CDF exceeds u: a zero-probability token repeats its predecessor's CDF
    token = torch.searchsorted(cdf, u, right=True).clamp_(max=logits.size(-1) - 1)[:, 0]
    # u rounding up to the total could step past the last possible token: take the likeliest
    possible = torch.isfinite(logits.gather(1, token[:, None]))[:, 0]
    return torch.where(possible, token, logits.argmax(dim=-1))


@torch.no_grad()
def sample_batch(
    model: GPT,
    grammar: GrammarTables,
    prompts: torch.Tensor,
    eos: int,
    settings: SamplingSettings,
    generator: torch.Generator,
    decode_fn: Callable[..., torch.Tensor] | None = None,
    header_allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of ``prompts`` (B, P) on the model's device. Returns the tokens
    (B, max_len) and per row the length of a complete sequence (0 where none could be made).
    ``header_allowed`` (B, H, V) bool further restricts the first H sampled tokens per row."""
    device = prompts.device
    batch, prompt_len = prompts.shape
    max_len = settings.max_len or model.config.block_size
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cache = KVCache.allocate(model.config, batch, max_len, device, dtype)
    # compiled: fixed shapes (whole cache, masked); eager: attend over the filled prefix only
    eager = decode_fn is None
    decode = decode_fn or model.decode
    out = torch.full((batch, max_len), eos, dtype=torch.long, device=device)
    out[:, :prompt_len] = prompts
    state = torch.full((batch,), grammar.start_state, dtype=torch.long, device=device)
    for t in range(prompt_len):
        state = grammar.next_state[state, prompts[:, t]]
    if bool((state < 0).any()):
        raise PytrafgenError("sampling prompt (BOS, class token) is not accepted by the grammar")
    length = torch.zeros(batch, dtype=torch.long, device=device)  # set when EOS is emitted
    last_eos_ok = torch.zeros(batch, dtype=torch.long, device=device)  # last t where EOS was legal
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    class_token = prompts[:, 1] if prompt_len > 1 else None
    with autocast:
        logits = decode(prompts, torch.arange(prompt_len, device=device), cache,
                        prompt_len if eager else None, class_token)
    for t in range(prompt_len, max_len):
        allowed = grammar.allowed[state]
        if header_allowed is not None and t - prompt_len < header_allowed.size(1):
            allowed = allowed & header_allowed[:, t - prompt_len]
        last_eos_ok = torch.where(allowed[:, eos] & ~done, t, last_eos_ok)
        logits = logits.float().masked_fill(~allowed, float("-inf"))
        if settings.temperature <= 0:
            token = logits.argmax(dim=-1)
        else:
            logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p)
            token = draw(logits, generator)
        token = torch.where(done, eos, token)
        out[:, t] = token
        state = torch.where(done, state, grammar.next_state[state, token])
        finished = (token == eos) & ~done
        length = torch.where(finished, t + 1, length)
        done |= finished
        # a host sync every step costs more than a few wasted steps on a GPU
        if t % 16 == 15 and bool(done.all()):
            break
        if t + 1 < max_len:
            with autocast:
                logits = decode(token[:, None], torch.tensor([t], device=device), cache, t + 1 if eager else None,
                                class_token)
    # sequences that ran out of room: close them where EOS was last legal
    cut = ~done & (last_eos_ok > prompt_len)
    rows = torch.nonzero(cut, as_tuple=True)[0]
    out[rows, last_eos_ok[rows]] = eos
    length = torch.where(cut, last_eos_ok + 1, length)
    return out, length


def sample_classes(
    model: GPT,
    grammar: GrammarTables,
    bos: int,
    eos: int,
    class_tokens: Mapping[str, int],
    counts: Mapping[str, int],
    settings: SamplingSettings,
    seed: int,
    device: torch.device,
    on_progress: Callable[[int], None] | None = None,
    header_allowed: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """``counts[class]`` token sequences per class (mixed in batches); returns the sequences
    (uint16, each ``BOS CLASS … EOS``) and the class of each, in request order.
    ``header_allowed[class]`` (H, V) bool restricts that class's first H sampled tokens."""
    unknown = [c for c in counts if c not in class_tokens]
    if unknown:
        raise PytrafgenError(f"unknown class {unknown[0]!r}; the model knows {', '.join(class_tokens)}")
    pending = [name for name, n in counts.items() for _ in range(int(n))]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    decode_fn = torch.compile(model.decode, mode="reduce-overhead") if settings.compile else None
    sequences: list[np.ndarray] = []
    names: list[str] = []
    failures = 0
    model.eval()
    while pending:
        chunk = pending[: settings.batch_size]
        # a fixed batch shape keeps a compiled decode step from recompiling on the last batch
        rows = settings.batch_size if settings.compile else len(chunk)
        padded = chunk + [chunk[-1]] * (rows - len(chunk))
        prompts = torch.tensor([[bos, class_tokens[c]] for c in padded], dtype=torch.long, device=device)
        header = None
        if header_allowed:
            header = torch.from_numpy(np.stack([header_allowed[c] for c in padded])).to(device)
        tokens, lengths = sample_batch(model, grammar, prompts, eos, settings, generator, decode_fn, header)
        tokens_np, lengths_np = tokens.cpu().numpy(), lengths.cpu().numpy()
        retry = []
        for i, name in enumerate(chunk):
            if lengths_np[i] > 0:
                sequences.append(tokens_np[i, : lengths_np[i]].astype(np.uint16))
                names.append(name)
            else:
                retry.append(name)
        failures = failures + 1 if len(retry) == len(chunk) else 0
        if failures >= 3:
            raise PytrafgenError("sampling produced no complete flow in 3 batches; the context is too short")
        if on_progress:
            on_progress(len(chunk) - len(retry))
        pending = retry + pending[len(chunk):]
    # report in request order: classes in the order of ``counts``
    order = {name: i for i, name in enumerate(counts)}
    perm = sorted(range(len(names)), key=lambda i: order[names[i]])
    return [sequences[i] for i in perm], [names[i] for i in perm]


__all__ = ["GrammarTables", "SamplingSettings", "draw", "filter_logits", "sample_batch", "sample_classes"]
