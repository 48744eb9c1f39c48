"""The sampler's side of continuation (the design is in continuation.py): the flows of a
stream pool that go on past the model's context, their segments, prompts and stitching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from pytrafgen.errors import PytrafgenError
from pytrafgen.generators.ar.continuation import ContinuationTokens, continuation_prompt
from pytrafgen.generators.ar.model import GPT, KVCache, quantize_slots

if TYPE_CHECKING:
    from pytrafgen.generators.ar.sample import GrammarTables


class Continuing:
    """The flows of a stream pool that go on past the context (see continuation.py).

    When a row's segment fills the context, ``cut`` keeps its whole packets (the packet being
    sampled when the room ran out is dropped and drawn again) and returns the next prompt,
    ``BOS CLASS CONT BUCKET header last-packets``, which ``prefill`` writes into the row's
    cache; the flow then goes on in that row. ``whole`` stitches a flow's segments back into one
    ``BOS CLASS header packet* EOS`` sequence."""

    def __init__(self, model: GPT, grammar: GrammarTables, tokens: ContinuationTokens, pkt: int, eos: int,
                 max_packets: int, rows: int, max_len: int, device: torch.device,
                 autocast: torch.autocast, class_caps: Mapping[int, int] | None = None) -> None:
        self.model, self.tokens, self.pkt, self.eos = model, tokens, pkt, eos
        self.max_packets, self.max_len = max_packets, max_len
        self.class_caps = dict(class_caps or {})
        self.device, self.autocast = device, autocast
        self.next_state = grammar.next_state.cpu().numpy()
        self.start_state = grammar.start_state
        self.prefix = np.full(rows, 2, dtype=np.int64)  # per row: where its segment's new tokens start
        self.header: dict[int, np.ndarray] = {}  # flow -> BOS CLASS header
        self.pieces: dict[int, list[np.ndarray]] = {}  # flow -> whole packets of its finished segments
        self.recent: dict[int, list[np.ndarray]] = {}  # flow -> its last packets (the next context)
        self.count: dict[int, int] = {}  # flow -> packets so far

    def cut(self, flow: int, seg: np.ndarray, row: int) -> tuple[bool, np.ndarray | None]:
        """(True, prompt) when the flow goes on; (False, the whole flow closed with EOS) when
        it reached ``max_packets`` or its segment has no whole new packet; (False, None) for a
        flow not continued before whose segment has none (closed as without continuation)."""
        start = int(self.prefix[row])
        marks = np.flatnonzero(seg == self.pkt)
        marks = marks[marks >= start]
        if len(marks) < 2:  # not one whole packet in a full context: no progress possible
            return False, self._stitch(flow, [np.array([self.eos])]) if flow in self.pieces else None
        if flow not in self.header:
            self.header[flow] = seg[: marks[0]].astype(np.int64)
        body = seg[marks[0]: marks[-1]].astype(np.int64)
        self.pieces.setdefault(flow, []).append(body)
        packets = np.split(body, marks[1:-1] - marks[0])
        self.count[flow] = self.count.get(flow, 0) + len(packets)
        context = (self.recent.get(flow, []) + packets)[-self.tokens.context_packets:]
        self.recent[flow] = context
        caps = [c for c in (self.max_packets, self.class_caps.get(int(seg[1]), 0)) if c > 0]
        if caps and self.count[flow] >= min(caps):
            return False, self._stitch(flow, [np.array([self.eos])])
        prompt = continuation_prompt(self.header[flow], context, self.count[flow], self.tokens)
        while len(prompt) > self.max_len // 2 and context:  # room for new packets, as in training
            context = context[1:]
            prompt = continuation_prompt(self.header[flow], context, self.count[flow], self.tokens)
        self.prefix[row] = len(prompt)
        return True, prompt

    def whole(self, flow: int, seq: np.ndarray, row: int) -> np.ndarray:
        """The whole flow of a segment that ended (``seq``: the row's tokens up to its EOS)."""
        if flow not in self.pieces:
            return seq
        return self._stitch(flow, [seq[int(self.prefix[row]):]])

    def _stitch(self, flow: int, tail: list[np.ndarray]) -> np.ndarray:
        parts = [self.header.pop(flow), *self.pieces.pop(flow), *tail]
        self.recent.pop(flow, None)
        self.count.pop(flow, None)
        return np.concatenate(parts).astype(np.int64)

    def state_after(self, prompt: np.ndarray) -> int:
        """The grammar's state after a continuation prompt (CONT and its bucket are not grammar
        tokens: the state goes from the class token straight on to the header)."""
        state = self.next_state[self.start_state, prompt[0]]
        for token in (prompt[1], *prompt[4:]):
            state = self.next_state[state, token]
        if state < 0:
            raise PytrafgenError("a continuation prompt is not accepted by the grammar")
        return int(state)

    def prefill(self, cache: KVCache, row: int, prompt: torch.Tensor, class_token: torch.Tensor) -> None:
        """Write the keys and values of ``prompt`` (all but its last token, which the next step
        feeds) into ``row`` of the pool's cache, in one forward pass."""
        n = len(prompt) - 1
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        one = KVCache.allocate(self.model.config, 1, n, self.device, dtype)
        with self.autocast:
            self.model.decode(prompt[None, :n], torch.arange(n, device=self.device), one, n, class_token.view(1))
        store = quantize_slots if cache.k.dtype == torch.int8 else (lambda t: t.to(cache.k.dtype))
        cache.k[:, row, :, :n] = store(one.k[:, 0])
        cache.v[:, row, :, :n] = store(one.v[:, 0])
