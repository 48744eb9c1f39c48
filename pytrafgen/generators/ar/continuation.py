"""Whole flows past the model's context: continuation segments and their prompts.

A flow longer than the context (``block_size`` tokens) is not cut: it is split into segments
(also in docs/training.md, "Continuation, not truncation"):

* segment 0 is ``BOS CLASS header packets…`` up to the last whole packet that fits, with no
  EOS unless the flow ends there;
* segment k > 0 is ``BOS CLASS CONT BUCKET header`` followed by the last ``context_packets``
  packets already emitted (context, not trained on), then the next packets of the flow, and
  EOS where the flow ends. ``BUCKET`` says how many packets the flow has so far (log₂ buckets),
  so the model learns when a flow of its class ends given how far it is.

``CONT`` and the buckets are model-only tokens appended after the tokenizer's vocabulary
(ids ``vocab_size``, ``vocab_size + 1 …``): the grammar never sees them (they are only ever
fed, never sampled), and every packet token of a continued flow is the token it would have in
the whole flow (sequence numbers relative to the flow's initial ones, ``seq.next`` chains,
inter-arrival times), so the sampled segments concatenate into one ordinary
``BOS CLASS header packet* EOS`` sequence that the decoder turns into one valid flow.

A checkpoint without these tokens (``GPTConfig.continuation_buckets == 0``) trains and samples
as before: truncated to its context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pytrafgen.generators.ar.config import GPTConfig

DEFAULT_BUCKETS = 14  # log2 buckets: 1, 2–3, 4–7, … 4096–8191, ≥ 8192 packets so far
DEFAULT_CONTEXT_PACKETS = 4


@dataclass(frozen=True)
class ContinuationTokens:
    """Ids of the model-only tokens of a continuation prompt."""

    cont: int  # = the tokenizer vocabulary's size
    buckets: int  # how many packets-so-far buckets follow CONT
    context_packets: int  # packets of the previous segment repeated as context

    @property
    def model_vocab_size(self) -> int:
        return self.cont + 1 + self.buckets

    def bucket_token(self, packets_so_far: int) -> int:
        return self.cont + 1 + packet_bucket(packets_so_far, self.buckets)


def continuation_tokens(config: GPTConfig) -> ContinuationTokens | None:
    """The model's continuation tokens, None for a model without them."""
    if config.continuation_buckets <= 0:
        return None
    return ContinuationTokens(cont=config.vocab_size - 1 - config.continuation_buckets,
                              buckets=config.continuation_buckets, context_packets=config.continuation_context)


def packet_bucket(packets_so_far: int, buckets: int) -> int:
    """log₂ bucket of a packet count ≥ 1: 1 → 0, 2–3 → 1, 4–7 → 2, …, capped at ``buckets - 1``."""
    return min(max(int(packets_so_far), 1).bit_length() - 1, buckets - 1)


def bucket_packets(bucket: int) -> int:
    """The smallest packet count of a bucket (the inverse of ``packet_bucket`` at its low end)."""
    return 1 << bucket


@dataclass
class Segments:
    """Segments of a token stream's flows, each a token array with its loss mask.

    ``tokens[i]`` is a ``BOS …`` sequence; ``no_target[i]`` is True at input positions whose
    next-token target is ignored (prompt/context positions of a continuation, and the last
    token of a segment the flow goes on after); ``flow[i]`` the flow it came from."""

    tokens: list[np.ndarray]
    no_target: list[np.ndarray]
    flow: list[int]
    dropped: int = 0  # flows whose first packet alone does not fit the context
    continued: int = 0  # flows split into more than one segment


def split_flow(flow: np.ndarray, block_size: int, pkt: int, eos: int, cont: ContinuationTokens
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Segments of one ``BOS CLASS header packet* EOS`` flow (see module doc). Each segment has
    at most ``block_size`` tokens; a packet too long for any segment ends the flow there (the
    segments before it are kept, the last without EOS)."""
    if len(flow) <= block_size:
        mask = np.zeros(len(flow), bool)
        return [flow], [mask]
    starts = np.flatnonzero(flow == pkt)
    if not len(starts):
        return [], []
    ends = np.append(starts[1:], len(flow) - 1)  # packet j is flow[starts[j]:ends[j]]; EOS last
    header = flow[:starts[0]]
    segments: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    j = 0  # next packet to emit
    n = len(starts)
    while j < n:
        if j == 0:
            prompt = header
        else:
            # context: the last packets emitted, as many of context_packets as leave room
            first = max(0, j - cont.context_packets)
            while first < j and (4 + len(header) - 2 + ends[j - 1] - starts[first] + ends[j] - starts[j]
                                 > block_size // 2):
                first += 1
            prompt = np.concatenate([header[:2], [cont.cont, cont.bucket_token(j)], header[2:],
                                     flow[starts[first]:ends[j - 1]]]).astype(flow.dtype)
        room = block_size - len(prompt)
        # packets j..k-1 fit; EOS too if k == n
        k = j + int(np.searchsorted(ends[j:] - starts[j], room, side="right"))  # packets j..k-1 fit
        if k == j:
            break  # packet j does not fit even right after the prompt: the flow ends here
        closes = k == n and ends[n - 1] - starts[j] + 1 <= room
        if k == n and not closes:
            k -= 1  # keep room for EOS: the last packet goes to the next segment
            if k == j:
                break
        body = flow[starts[j]:ends[k - 1]]
        parts = [prompt, body] + ([np.array([eos], flow.dtype)] if closes else [])
        seg = np.concatenate(parts).astype(flow.dtype)
        mask = np.zeros(len(seg), bool)
        if j > 0:
            mask[: len(prompt) - 1] = True  # the prompt is given, its tokens are not targets
        if not closes:
            mask[-1] = True  # the flow goes on in the next segment, not into the next window's BOS
        segments.append(seg)
        masks.append(mask)
        j = k
    return segments, masks


def split_flows(tokens: np.ndarray, offsets: np.ndarray, block_size: int, pkt: int, eos: int,
                cont: ContinuationTokens) -> Segments:
    """``split_flow`` over every flow of a split (flows that fit the context are kept whole)."""
    out = Segments([], [], [])
    lengths = np.diff(offsets)
    for i in range(len(lengths)):
        flow = tokens[offsets[i]:offsets[i + 1]].astype(np.int64)
        segs, masks = split_flow(flow, block_size, pkt, eos, cont)
        if not segs:
            out.dropped += 1
            continue
        out.continued += len(segs) > 1
        out.tokens.extend(segs)
        out.no_target.extend(masks)
        out.flow.extend([i] * len(segs))
    return out


def continuation_prompt(header: np.ndarray, context: list[np.ndarray], packets_so_far: int,
                        cont: ContinuationTokens) -> np.ndarray:
    """``BOS CLASS CONT BUCKET header-rest context-packets``: what a flow's next segment starts
    from at sampling (``header`` is ``BOS CLASS ip_version proto [ports]``)."""
    parts = [header[:2], np.array([cont.cont, cont.bucket_token(packets_so_far)], np.int64), header[2:], *context]
    return np.concatenate(parts).astype(np.int64)


__all__ = ["DEFAULT_BUCKETS", "DEFAULT_CONTEXT_PACKETS", "ContinuationTokens", "Segments", "bucket_packets",
           "continuation_prompt", "continuation_tokens", "packet_bucket", "split_flow", "split_flows"]
