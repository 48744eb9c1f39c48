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

Two strategies draw from that same distribution:

- ``stream`` (the default): one pool of ``batch_size`` rows for all requested flows of all
  classes; a row whose flow ends takes the next flow at once (its cache slots are simply
  overwritten), so no step is spent on finished flows, and the output head is computed only
  for the tokens the row's grammar state allows (``SubVocabHead``: 67 distinct allowed sets of
  at most ~420 tokens instead of a 7k vocabulary for the bundled default). Most of a decoding
  step's time on a CPU went to that head and to finished rows.
  On a CPU with AVX512-BF16 a step is one C++ call (``FusedStep``) and the head, the draw
  and the rows' bookkeeping another (``SubVocabHead.draw_advance``): the ~100 torch operators
  of a step were most of its time when few rows are left (``fused_step``).
- ``batch``: fixed batches of prompts run to the end with the full head; every step has the
  same shapes, which is what a compiled decode step with CUDA graphs needs (``compile``).
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from pytrafgen.errors import PytrafgenError
from pytrafgen.generators.ar.config import SamplingSettings
from pytrafgen.generators.ar.continuation import ContinuationTokens
from pytrafgen.generators.ar.continuing import Continuing
from pytrafgen.generators.ar.fused_step import FusedStep, fused_step_applies
from pytrafgen.generators.ar.model import (
    GPT,
    KVCache,
    bf16_linear_copy,
    half_cache_supported,
    int8_cache_supported,
)


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


class SubVocabHead:
    """The output head restricted to what the grammar allows: the states' distinct allowed sets,
    each with its token ids in ascending order and the matching rows of the head weight.

    ``logits(hidden, state)`` returns (B, K) logits over each row's allowed tokens (ascending
    ids, −inf padding up to the largest set) and the (B, K) token ids they stand for. Because
    the ids ascend, a draw by CDF inversion over these K columns picks the same token as over
    the full vocabulary with the forbidden tokens at −inf (their probability is 0 and they do
    not move the CDF), and an argmax picks the same first maximum."""

    def __init__(self, weight: torch.Tensor, allowed: torch.Tensor, next_state: torch.Tensor | None = None,
                 eos: int | None = None) -> None:
        """``next_state`` (the grammar's transitions) and ``eos``: for ``draw_advance``."""
        sets, self.set_of_state = torch.unique(allowed, dim=0, return_inverse=True)
        self.width = int(sets.sum(dim=1).max())
        # padding columns point at token 0; their logits stay −inf, so they are never drawn
        self.ids = torch.zeros((len(sets), self.width), dtype=torch.long, device=weight.device)
        self.weights: list[torch.Tensor] = []  # per set: its tokens' rows of the head weight
        for g in range(len(sets)):
            ids = torch.nonzero(sets[g], as_tuple=True)[0]
            self.ids[g, : len(ids)] = ids
            self.weights.append(weight[ids].detach().contiguous())
        self._fused = None  # the head and the draw in one C++ call (CPU only)
        if weight.device.type == "cpu":
            from pytrafgen import _core

            sizes = [w.size(0) for w in self.weights]
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            flat_ids = np.concatenate([self.ids[g, :k].numpy() for g, k in enumerate(sizes)]).astype(np.int64)
            if next_state is None:  # draw only: no transitions to step through
                next_state = torch.full(allowed.shape, -1, dtype=torch.long)
            eos_ok = allowed[:, eos] if eos is not None else torch.zeros(allowed.size(0), dtype=torch.bool)
            self._fused = _core.HeadDraw(offsets, flat_ids, torch.cat(self.weights).float().contiguous().numpy(),
                                         self.set_of_state.to(torch.long).contiguous().numpy(),
                                         next_state.to(torch.long).contiguous().numpy(),
                                         eos_ok.contiguous().numpy())

    def logits(self, hidden: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        group = self.set_of_state[state]
        out = torch.full((hidden.size(0), self.width), float("-inf"), device=hidden.device)
        order = torch.argsort(group)
        present, counts = torch.unique_consecutive(group[order], return_counts=True)
        start = 0
        for g, n in zip(present.tolist(), counts.tolist(), strict=True):
            rows = order[start:start + n]
            start += n
            weight = self.weights[g]
            out[rows, : weight.size(0)] = (hidden[rows] @ weight.T).float()
        return out, self.ids[group]

    def draw(self, hidden: torch.Tensor, state: torch.Tensor, settings: SamplingSettings,
             generator: torch.Generator) -> torch.Tensor | None:
        """Each row's next token in one C++ call (``_core.HeadDraw``): the same distribution as
        ``logits`` then ``_pick``, one uniform per row from ``generator`` as ``draw`` takes it, so
        equal logits give equal tokens. None where it does not apply (top-k or top-p filtering,
        not a CPU): the caller takes the operator path."""
        if self._fused is None or settings.top_k or settings.top_p < 1.0:
            return None
        rows = hidden.size(0)
        uniforms = None
        if settings.temperature > 0:
            uniforms = torch.rand((rows,), generator=generator, device=hidden.device).numpy()
        token = torch.empty(rows, dtype=torch.long)
        self._fused.draw(hidden.float().contiguous().numpy(), state.contiguous().numpy(), uniforms,
                         float(settings.temperature), token.numpy())
        return token

    def fused_applies(self, settings: SamplingSettings) -> bool:
        """Whether ``draw`` and ``draw_advance`` run in C++ for these settings."""
        return self._fused is not None and not settings.top_k and settings.top_p >= 1.0

    def draw_advance(self, hidden: np.ndarray, rows: int, settings: SamplingSettings, generator: torch.Generator,
                     pool: PoolArrays, eos: int) -> int:
        """``draw`` for rows 0..rows-1 of a CPU pool, then the step's bookkeeping on its buffers in
        place (the token into ``out`` at ``pos + 1``, ``last_eos_ok``, the grammar state, ``feed``,
        ``pos``), in one C++ call; returns how many rows ended (EOS or the last slot). Only where
        ``fused_applies``."""
        assert self._fused is not None
        uniforms = torch.rand((rows,), generator=generator).numpy() if settings.temperature > 0 else None
        return self._fused.draw_advance(hidden, rows, uniforms, float(settings.temperature), pool.state, pool.pos,
                                        pool.feed, pool.last_eos_ok, pool.out, eos)


@dataclass(frozen=True)
class PoolArrays:
    """numpy views of a CPU pool's per-row buffers (they share the tensors' memory)."""

    state: np.ndarray
    pos: np.ndarray
    feed: np.ndarray
    last_eos_ok: np.ndarray
    out: np.ndarray
    row_class: np.ndarray


@contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """On a CPU, as many torch threads as there are cores not already busy (1-minute load
    average), at least one and never more than set before: threads of a busy machine wait on
    each other, and a decoding step then takes several times as long as on one thread.
    ``OMP_NUM_THREADS``, when set, is left to decide."""
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        idle = cores - os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average here (Windows): keep torch's choice
        idle = before
    torch.set_num_threads(max(1, min(before, int(idle + 0.5))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16, from Linux's
    /proc/cpuinfo): elsewhere oneDNN emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _pick(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator) -> torch.Tensor:
    """Column index per row: greedy at temperature 0, else a filtered draw."""
    if settings.temperature <= 0:
        return logits.argmax(dim=-1)
    return draw(filter_logits(logits / settings.temperature, settings.top_k, settings.top_p), generator)


@torch.inference_mode()
def sample_stream(
    model: GPT,
    grammar: GrammarTables,
    flows: list[int],
    bos: int,
    eos: int,
    settings: SamplingSettings,
    generator: torch.Generator,
    header_allowed: torch.Tensor | None = None,
    flow_header: list[int] | None = None,
    on_flow: Callable[[int, np.ndarray | None], None] | None = None,
    head: SubVocabHead | None = None,
    continuation: ContinuationTokens | None = None,
    pkt: int = -1,
    class_caps: Mapping[int, int] | None = None,
) -> None:
    """Sample one flow per entry of ``flows`` (each a class token) through a pool of at most
    ``settings.batch_size`` rows, refilled as flows end. ``on_flow(i, tokens)`` gets flow i's
    ``BOS CLASS … EOS`` tokens (int64) when it is done, or None when it reached the context
    without any position where EOS was legal; it may append flows to ``flows`` (and
    ``flow_header``) to have them drawn in the same pool, before the flows still waiting. On a
    CPU the cache is int8 where ``settings.int8_cache`` and the kernel allow it, else float16
    where ``settings.half_cache`` does. ``header_allowed`` (M, H, V) bool with
    ``flow_header[i]`` the mask index of flow i restricts its first H sampled tokens. ``head``
    None computes the full head (masked), else only the allowed logits (same distribution).
    ``continuation`` (a model with continuation tokens; ``pkt`` the PKT token): a flow that
    reaches the context goes on in the same row from a continuation prompt (``Continuing``)
    until EOS or ``settings.max_flow_packets`` (or ``class_caps[its class token]``, if less);
    ``on_flow`` then gets the whole flow."""
    if not flows:
        return
    device = grammar.allowed.device
    max_len = settings.max_len or model.config.block_size
    rows = min(settings.batch_size, len(flows))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    row_kernel = device.type == "cpu" and model.head_weight().dtype == torch.float32
    head_dim = model.config.n_embd // model.config.n_head
    if row_kernel and settings.int8_cache and int8_cache_supported(head_dim):
        dtype = torch.int8  # reading the cache is most of a CPU step: about a quarter of float32's bytes
    elif row_kernel and settings.half_cache and half_cache_supported(head_dim):
        dtype = torch.float16  # half the bytes
    # the per-row kernel reads only the slots a row wrote: no need to zero (and fault in) a
    # cache of rows x context slots, most of which a pool never reaches
    cache = KVCache.allocate(model.config, rows, max_len, device, dtype, zeroed=not row_kernel)
    # the whole step in one C++ call where it runs (bfloat16 projections, AVX512-BF16)
    fused = FusedStep(model) if row_kernel and settings.fused_step and fused_step_applies(model) else None
    fused_draw = settings.fused_step
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    # BOS at position 0 has no class yet: its keys and values are the same in every row
    with autocast:
        first = torch.tensor([bos], device=device)
        model.decode_rows(first, torch.zeros(1, dtype=torch.long, device=device),
                          KVCache(cache.k[:, :1], cache.v[:, :1]), 1, first, row_kernel)
    bos_k, bos_v = cache.k[:, 0, :, 0].clone(), cache.v[:, 0, :, 0].clone()
    after_bos = grammar.next_state[grammar.start_state, bos]
    n_header = header_allowed.size(1) if header_allowed is not None else 0

    flow = torch.zeros(rows, dtype=torch.long, device=device)  # which flow each row holds
    row_class = torch.zeros(rows, dtype=torch.long, device=device)  # its class token
    row_header = torch.zeros(rows, dtype=torch.long, device=device)  # its header mask
    pos = torch.ones(rows, dtype=torch.long, device=device)  # position of the token fed next
    feed = torch.zeros(rows, dtype=torch.long, device=device)  # the token fed next
    state = torch.zeros(rows, dtype=torch.long, device=device)  # DFA state after ``feed``
    last_eos_ok = torch.zeros(rows, dtype=torch.long, device=device)
    out = torch.full((rows, max_len), eos, dtype=torch.long, device=device)
    # flows not started yet, next first; a flow ``on_flow`` appends (a redraw) goes to the front:
    # started at once it ends with the pool, not in a tail of its own where rows sit idle
    waiting = deque(range(len(flows)))
    going_on = None
    if continuation is not None:
        going_on = Continuing(model, grammar, continuation, pkt, eos, settings.max_flow_packets, rows, max_len,
                              device, autocast, class_caps)

    def start(slots: torch.Tensor) -> None:
        """Put the next flows into rows ``slots``: BOS's cache entry, then the class token to feed."""
        chosen = [waiting.popleft() for _ in range(len(slots))]
        classes = torch.tensor([flows[i] for i in chosen], dtype=torch.long, device=device)
        states = grammar.next_state[after_bos, classes]
        if bool((states < 0).any()):
            raise PytrafgenError("sampling prompt (BOS, class token) is not accepted by the grammar")
        if flow_header is not None:
            row_header[slots] = torch.tensor([flow_header[i] for i in chosen], dtype=torch.long, device=device)
        flow[slots] = torch.tensor(chosen, dtype=torch.long, device=device)
        row_class[slots], pos[slots], feed[slots], state[slots], last_eos_ok[slots] = classes, 1, classes, states, 0
        out[slots, 0], out[slots, 1] = bos, classes
        if going_on is not None:
            going_on.prefix[slots.cpu().numpy()] = 2
        cache.k[:, slots, :, :1], cache.v[:, slots, :, :1] = bos_k[:, None, :, None], bos_v[:, None, :, None]

    start(torch.arange(rows, device=device))
    active = rows  # rows 0..active-1 hold unfinished flows
    allowed_eos = grammar.allowed[:, eos]
    # a CPU pool whose step and draw both run in C++: the bookkeeping too, on numpy views
    fast = None
    if fused is not None and head is not None and fused_draw and head.fused_applies(settings):
        fast = PoolArrays(state.numpy(), pos.numpy(), feed.numpy(), last_eos_ok.numpy(), out.numpy(),
                          row_class.numpy())
        hidden_buf = np.empty((rows, model.config.n_embd), dtype=np.float32)
        k_np, v_np = fused.cache_arrays(cache)
    while active:
        n = active
        # a row in its class's header (its first sampled tokens) takes the operator path's masks
        if fast is not None and (header_allowed is None or int(fast.pos[:n].min()) - 1 >= n_header):
            assert fused is not None and head is not None
            fused.run(fast.feed[:n], fast.pos[:n], fast.row_class[:n], k_np, v_np, hidden_buf[:n],
                      torch.get_num_threads())
            if not head.draw_advance(hidden_buf[:n], n, settings, generator, fast, eos):
                continue
            token, target = feed[:n].clone(), pos[:n].clone()
            ended = (token == eos) | (target == max_len - 1)
        else:
            st = state[:n]
            if fused is not None:
                hidden = fused(feed[:n], pos[:n], row_class[:n], cache, torch.get_num_threads())
            else:
                view = KVCache(cache.k[:, :n], cache.v[:, :n])
                attend_len = int(pos[:n].max()) + 1
                with autocast:
                    hidden = model.decode_rows(feed[:n], pos[:n], view, attend_len, row_class[:n], row_kernel)
            target = pos[:n] + 1  # where the sampled token goes
            eos_ok = allowed_eos[st]
            in_header = None
            if header_allowed is not None:
                in_header = target - 2 < n_header
                if not bool(in_header.any()):
                    in_header = None
            # no row restricted by its class's header: the head and the draw in one C++ call
            drawn = (head.draw(hidden, st, settings, generator) if head is not None and fused_draw
                     and in_header is None else None)
            if drawn is not None:
                token = drawn
            else:
                if head is None:
                    logits = (hidden @ model.head_weight().T).float().masked_fill(~grammar.allowed[st],
                                                                                 float("-inf"))
                    ids = None
                else:
                    logits, ids = head.logits(hidden, st)
                if in_header is not None:
                    assert header_allowed is not None
                    mask = header_allowed[row_header[:n], (target - 2).clamp(max=n_header - 1)]  # (n, V)
                    keep = mask if ids is None else mask.gather(1, ids)
                    logits = logits.masked_fill(in_header[:, None] & ~keep, float("-inf"))
                    eos_ok = eos_ok & (~in_header | mask[:, eos])
                column = _pick(logits, settings, generator)
                token = column if ids is None else ids.gather(1, column[:, None])[:, 0]
            last_eos_ok[:n] = torch.where(eos_ok, target, last_eos_ok[:n])
            out[torch.arange(n, device=device), target] = token
            state[:n] = grammar.next_state[st, token]
            feed[:n], pos[:n] = token, target
            ended = (token == eos) | (target == max_len - 1)
        if not bool(ended.any()):
            continue
        known = len(flows)
        finished = []
        for r in torch.nonzero(ended, as_tuple=True)[0].tolist():
            length = int(target[r]) + 1
            if int(token[r]) == eos:
                seq = out[r, :length].cpu().numpy().copy()
                if going_on is not None:
                    seq = going_on.whole(int(flow[r]), seq, r)
            else:
                # out of room: go on from a continuation prompt, else close it where EOS was last legal
                seq = None
                if going_on is not None:
                    goes_on, tokens = going_on.cut(int(flow[r]), out[r, :length].cpu().numpy(), r)
                    if goes_on:
                        assert tokens is not None
                        prompt = torch.from_numpy(tokens).to(device)
                        going_on.prefill(cache, r, prompt, row_class[r])
                        out[r, : len(prompt)] = prompt
                        feed[r], pos[r] = prompt[-1], len(prompt) - 1
                        state[r], last_eos_ok[r] = going_on.state_after(tokens), 0
                        continue
                    seq = tokens  # the whole flow closed (cap reached, no room to go on), or None
                if seq is None and int(last_eos_ok[r]) > 2:
                    seq = out[r, : int(last_eos_ok[r]) + 1].cpu().numpy().copy()
                    seq[-1] = eos
            finished.append(r)
            if on_flow is not None:
                on_flow(int(flow[r]), seq)
        waiting.extendleft(reversed(range(known, len(flows))))  # redraws first, in the order asked
        if not finished:
            continue
        done = torch.tensor(finished, dtype=torch.long, device=device)
        refill = done[: len(waiting)]
        if len(refill):
            start(refill)
        # rows left without a flow: move the last unfinished rows into them so rows 0..active-1
        # stay the unfinished ones (the step then runs on a prefix view of the cache, no copy)
        for r in sorted(done[len(refill):].tolist(), reverse=True):
            last = active - 1
            if r != last:
                for buf in (flow, row_class, row_header, pos, feed, state, last_eos_ok, out):
                    buf[r] = buf[last]
                if going_on is not None:
                    going_on.prefix[r] = going_on.prefix[last]
                filled = int(pos[r])  # slots 0..pos-1 hold the moved flow; pos is fed next
                cache.k[:, r, :, :filled] = cache.k[:, last, :, :filled]
                cache.v[:, r, :, :filled] = cache.v[:, last, :, :filled]
            active -= 1


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
    accept: Callable[[np.ndarray], bool] | None = None,
    max_redraws: int = 0,
    continuation: ContinuationTokens | None = None,
    pkt: int = -1,
    class_caps: Mapping[int, int] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """``counts[class]`` token sequences per class (mixed in batches); returns the sequences
    (uint16, each ``BOS CLASS … EOS``) and the class of each, in request order.
    ``header_allowed[class]`` (H, V) bool restricts that class's first H sampled tokens.
    ``accept(tokens)`` False rejects a finished flow: the stream strategy draws it again in the
    same pool, up to ``max_redraws`` times, so a redraw costs no extra pass; flows still rejected
    (and, with the batch strategy, all rejected flows) are left out for the caller to count.
    ``continuation`` (with ``pkt``, the PKT token): flows go on past the context (stream
    strategy only; the batch strategy cuts them at the context as before)."""
    unknown = [c for c in counts if c not in class_tokens]
    if unknown:
        raise PytrafgenError(f"unknown class {unknown[0]!r}; the model knows {', '.join(class_tokens)}")
    if settings.strategy not in ("stream", "batch"):
        raise PytrafgenError(f"unknown sampling strategy {settings.strategy!r}; use stream or batch")
    pending = [name for name, n in counts.items() for _ in range(int(n))]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    model.eval()
    if settings.strategy == "stream" and not settings.compile:
        sequences, names = _sample_stream_classes(model, grammar, bos, eos, class_tokens, pending, settings,
                                                  generator, on_progress, header_allowed, accept, max_redraws,
                                                  continuation, pkt, class_caps)
    else:
        sequences, names = _sample_fixed_batches(model, grammar, bos, eos, class_tokens, pending, settings,
                                                 generator, device, on_progress, header_allowed)
        if accept is not None:
            kept = [accept(seq) for seq in sequences]
            sequences = [seq for seq, ok in zip(sequences, kept, strict=True) if ok]
            names = [name for name, ok in zip(names, kept, strict=True) if ok]
    # report in request order: classes in the order of ``counts``
    order = {name: i for i, name in enumerate(counts)}
    perm = sorted(range(len(names)), key=lambda i: order[names[i]])
    return [sequences[i] for i in perm], [names[i] for i in perm]


def _sample_stream_classes(
    model: GPT, grammar: GrammarTables, bos: int, eos: int, class_tokens: Mapping[str, int], pending: list[str],
    settings: SamplingSettings, generator: torch.Generator, on_progress: Callable[[int], None] | None,
    header_allowed: Mapping[str, np.ndarray] | None, accept: Callable[[np.ndarray], bool] | None,
    max_redraws: int, continuation: ContinuationTokens | None, pkt: int, class_caps: Mapping[int, int] | None,
) -> tuple[list[np.ndarray], list[str]]:
    device = grammar.allowed.device
    # the head over allowed tokens pays on a CPU; a GPU computes the whole head as fast
    head = SubVocabHead(model.head_weight(), grammar.allowed, grammar.next_state, eos) if device.type == "cpu" else None
    if device.type == "cpu" and settings.bf16_linears and native_bf16():
        model = bf16_linear_copy(model)
    header = None
    header_index: dict[str, int] = {}
    if header_allowed:
        header_index = {c: i for i, c in enumerate(header_allowed)}
        header = torch.from_numpy(np.stack(list(header_allowed.values()))).to(device)
    # flows drawn so far: the requested ones, then redraws appended while the pool runs
    flow_names = list(pending)
    flows = [class_tokens[c] for c in flow_names]
    flow_header = [header_index[c] for c in flow_names] if header_allowed else None
    attempt = [0] * len(flows)  # how many times the request behind each flow was redrawn
    sequences: list[np.ndarray] = []
    names: list[str] = []
    unclosed = 0  # flows in a row that reached the context without a place to close them
    limit = 3 * min(settings.batch_size, len(flows))

    def on_flow(i: int, tokens: np.ndarray | None) -> None:
        nonlocal unclosed
        unclosed = unclosed + 1 if tokens is None else 0
        if unclosed >= limit:
            raise PytrafgenError("sampling produced no complete flow in 3 batches; the context is too short")
        if tokens is not None:
            # every finished flow counts, a rejected one too: the caller's total grows by each
            # rejection (as with the batch strategy, whose rejected flows come back as requests)
            if on_progress:
                on_progress(1)
            seq = tokens.astype(np.uint16)
            if accept is None or accept(seq):
                sequences.append(seq)
                names.append(flow_names[i])
                return
            if attempt[i] >= max_redraws:
                return  # left out: the caller sees it missing
        # drawn again in the same pool (a flow without a place to close it always is)
        flow_names.append(flow_names[i])
        flows.append(flows[i])
        attempt.append(attempt[i] + (tokens is not None))
        if flow_header is not None:
            flow_header.append(flow_header[i])

    sample_stream(model, grammar, flows, bos, eos, settings, generator, header, flow_header, on_flow, head,
                  continuation, pkt, class_caps)
    return sequences, names


def _sample_fixed_batches(
    model: GPT, grammar: GrammarTables, bos: int, eos: int, class_tokens: Mapping[str, int], pending: list[str],
    settings: SamplingSettings, generator: torch.Generator, device: torch.device,
    on_progress: Callable[[int], None] | None, header_allowed: Mapping[str, np.ndarray] | None,
) -> tuple[list[np.ndarray], list[str]]:
    decode_fn = torch.compile(model.decode, mode="reduce-overhead") if settings.compile else None
    sequences: list[np.ndarray] = []
    names: list[str] = []
    failures = 0
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
    return sequences, names


__all__ = ["Continuing", "GrammarTables", "SamplingSettings", "SubVocabHead", "cpu_threads", "draw", "filter_logits",
           "native_bf16", "sample_batch", "sample_classes", "sample_stream"]
