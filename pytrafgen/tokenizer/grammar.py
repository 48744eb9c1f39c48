"""The grammar of token sequences as a deterministic finite automaton over token ids.

The encoder only ever writes sequences this DFA accepts, and the decoder decodes every
sequence it accepts (application tokens aside: their content is the protocol plugin's to
judge). A sampler masks illegal next tokens with ``allowed[state]`` and advances with
``next_state[state, token]``, on whole batches at once (``torch_tables`` for GPU tensors).

The state remembers what the structure needs and nothing more: the flow's kind (IP version ×
TCP/UDP/ICMP), where in the packet we are, and how many bytes an explicit length still asks
for (IPv4 options, IPv6 extension headers, TCP options, stored payload bytes). That is why
lengths precede their bytes: counting states keep the table at S ≈ 900 + 6 × payload cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.tokenizer.vocab import MAX_IP4_OPT_WORDS, MAX_TCP_OPT_WORDS, SPECIAL_TOKENS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytrafgen.app_grammar import TokenAutomaton
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.tokenizer.vocab import Vocabulary

# flow kinds: (name, ip version, value of the ``proto`` range)
FLOW_KINDS = (("v4.tcp", 4, 0), ("v4.udp", 4, 1), ("v4.icmp", 4, 2),
              ("v6.tcp", 6, 0), ("v6.udp", 6, 1), ("v6.icmp6", 6, 3))


class _Builder:
    """Collects states and edges (token ranges → target state) before the dense tables exist."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.names: list[str] = []
        self.edges: list[tuple[int, int, int, int]] = []  # state, first token, stop token, target

    def state(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1

    def range_edge(self, state: int, range_name: str, target: int) -> None:
        r = self.vocab.ranges[range_name]
        if r.size:
            self.edges.append((state, r.start, r.stop, target))

    def token_edge(self, state: int, token: int, target: int) -> None:
        self.edges.append((state, token, token + 1, target))

    def value_edge(self, state: int, range_name: str, value: int, target: int) -> None:
        self.token_edge(state, self.vocab.id(range_name, value), target)

    def chain(self, name: str, ranges: list[str], target: int) -> int:
        """States reading ``ranges`` one token each, then ``target``; returns the first state."""
        nxt = target
        for k in range(len(ranges) - 1, -1, -1):
            s = self.state(f"{name}[{k}]")
            self.range_edge(s, ranges[k], nxt)
            nxt = s
        return nxt

    def counter(self, name: str, max_n: int, byte_range: str, target: int) -> list[int]:
        """``out[n]`` reads n more tokens of ``byte_range`` then goes to ``target`` (out[0] = target)."""
        out = [target]
        for n in range(1, max_n + 1):
            s = self.state(f"{name}[{n} left]")
            self.range_edge(s, byte_range, out[n - 1])
            out.append(s)
        return out


def _digit_names(vocab: Vocabulary, field: str) -> list[str]:
    return [n for n in vocab.ranges if n.startswith(field + ".") and n[len(field) + 1] in "bn"
            and n[len(field) + 2:].isdigit()]


def _app_span(b: _Builder, kind: str, name: str, automaton: TokenAutomaton | None, payload: int,
              body: int) -> None:
    """The states of one app protocol's span in a packet of flow kind ``kind``: after its begin
    token, any of its local tokens until ``APP_END`` — or, with the protocol's automaton, only
    the local token sequences the automaton accepts."""
    r = b.vocab.ranges[f"app.{name}"]
    app_end = b.vocab.special("APP_END")
    if automaton is None:
        inside = b.state(f"{kind}:app.{name}")
        b.token_edge(payload, r.start, inside)
        if r.size > 1:
            b.edges.append((inside, r.start + 1, r.stop, inside))
        b.token_edge(inside, app_end, body)
        return
    states = [b.state(f"{kind}:app.{name}:{s}") for s in automaton.state_names]
    b.token_edge(payload, r.start, states[0])
    for state, first, stop, target in automaton.edges:  # local id k is token r.start + 1 + k
        b.edges.append((states[state], r.start + 1 + first, r.start + 1 + stop, states[target]))
    for state in sorted(automaton.accepting):
        b.token_edge(states[state], app_end, body)


def _build(vocab: Vocabulary, automata: Mapping[str, TokenAutomaton]) -> tuple[_Builder, int, int]:
    b = _Builder(vocab)
    sp = {name: vocab.special(name) for name in SPECIAL_TOKENS}
    start = b.state("start")
    end = b.state("end")
    b.token_edge(end, sp["PAD"], end)
    cls = b.state("class")
    b.token_edge(start, sp["BOS"], cls)
    version = b.state("ip_version")
    b.range_edge(cls, "class", version)
    proto_of = {4: b.state("v4.proto"), 6: b.state("v6.proto")}
    b.value_edge(version, "ip_version", 0, proto_of[4])
    b.value_edge(version, "ip_version", 1, proto_of[6])
    cap = vocab.payload_cap
    for kind, ip_version, proto_value in FLOW_KINDS:
        l4name = kind.split(".")[1]
        body = b.state(f"{kind}:body")
        b.token_edge(body, sp["EOS"], end)
        if l4name in ("tcp", "udp"):
            header = b.chain(f"{kind}:ports", ["client_port.b1", "client_port.b0", "server_port.b1",
                                                "server_port.b0"], body)
        else:
            header = body
        b.value_edge(proto_of[ip_version], "proto", proto_value, header)

        # payload: explicit length then min(length, cap) bytes, or one app protocol's tokens
        payload = b.state(f"{kind}:payload_len.b1")
        pay = b.counter(f"{kind}:payload", cap, "payload.byte", body)
        h_top = (cap + 255) // 256
        lo_states = [b.state(f"{kind}:payload_len.b0[hi={h}]") for h in range(h_top + 1)]
        hi = vocab.ranges["payload_len.b1"]
        for h in range(256):
            b.token_edge(payload, hi.start + h, lo_states[min(h, h_top)])
        lo = vocab.ranges["payload_len.b0"]
        for h, s in enumerate(lo_states):
            for low in range(256):
                b.token_edge(s, lo.start + low, pay[min(h * 256 + low, cap)])
        if l4name in ("tcp", "udp"):
            for app in vocab.app_protocols:
                if app.transport not in ("", l4name):
                    continue
                _app_span(b, kind, app.name, automata.get(app.name), payload, body)

        # L4 header fields
        if l4name == "tcp":
            window = b.chain(f"{kind}:window", ["window.b1", "window.b0"], payload)
            ack = b.state(f"{kind}:ack")
            b.range_edge(ack, "ack.next", window)
            b.range_edge(ack, "ack.same", window)
            ack_bytes = b.chain(f"{kind}:ack", _digit_names(vocab, "ack")[1:], window)
            b.range_edge(ack, "ack.b3", ack_bytes)
            seq = b.state(f"{kind}:seq")
            b.range_edge(seq, "seq.next", ack)
            b.range_edge(seq, "seq.b3", b.chain(f"{kind}:seq", _digit_names(vocab, "seq")[1:], ack))
            opts = b.counter(f"{kind}:tcp_opt", 4 * MAX_TCP_OPT_WORDS, "tcp_opt.byte", seq)
            urg = [b.chain(f"{kind}:urgent(w={w})", _digit_names(vocab, "urgent"), opts[4 * w])
                   for w in range(MAX_TCP_OPT_WORDS + 1)]
            high = {}
            for has_urg in (0, 1):
                for w in range(MAX_TCP_OPT_WORDS + 1):
                    s = b.state(f"{kind}:tcp_flags.hi(urg={has_urg},w={w})")
                    b.range_edge(s, "tcp_flags.hi", urg[w] if has_urg else opts[4 * w])
                    high[has_urg, w] = s
            misc = b.state(f"{kind}:tcp_misc")
            for v in range(vocab.ranges["tcp_misc"].size):
                w, has_urg, has_hi = v % 11, (v // 11) & 1, (v // 11) >> 1
                target = high[has_urg, w] if has_hi else (urg[w] if has_urg else opts[4 * w])
                b.value_edge(misc, "tcp_misc", v, target)
            l4start = b.state(f"{kind}:tcp_flags")
            b.range_edge(l4start, "tcp_flags", misc)
        elif l4name == "udp":
            l4start = payload
        else:
            l4start = b.chain(f"{kind}:icmp", ["icmp_type", *_digit_names(vocab, "icmp_code"),
                                               *_digit_names(vocab, "icmp_rest")], payload)

        # L3 fields
        if ip_version == 4:
            opt = b.counter(f"{kind}:ip_opt", 4 * MAX_IP4_OPT_WORDS, "ip_opt.byte", l4start)
            opt_words = b.state(f"{kind}:ip_opt.words")
            for j in range(MAX_IP4_OPT_WORDS):
                b.value_edge(opt_words, "ip_opt.words", j, opt[4 * (j + 1)])
            frag = {o: b.chain(f"{kind}:frag(opt={o})", _digit_names(vocab, "frag_offset"),
                               opt_words if o else l4start) for o in (0, 1)}
            flags = b.state(f"{kind}:ip_flags")
            for v in range(32):
                has_frag, has_opt = (v >> 3) & 1, (v >> 4) & 1
                target = frag[has_opt] if has_frag else (opt_words if has_opt else l4start)
                b.value_edge(flags, "ip_flags", v, target)
            ipid = b.state(f"{kind}:ip_id")
            b.range_edge(ipid, "ip_id.delta", flags)
            names = _digit_names(vocab, "ip_id")
            b.range_edge(ipid, names[0], b.chain(f"{kind}:ip_id", names[1:], flags))
            after_tos = ipid
        else:
            ext_words = vocab.ranges["ip6_ext.words"].size - 1
            ext = b.counter(f"{kind}:ip6_ext", 4 * ext_words, "ip_opt.byte", l4start)
            ext_len = b.state(f"{kind}:ip6_ext.words")
            for w in range(ext_words + 1):
                b.value_edge(ext_len, "ip6_ext.words", w, ext[4 * w])
            fl = b.state(f"{kind}:flow_label")
            b.range_edge(fl, "flow_label.same", ext_len)
            names = _digit_names(vocab, "flow_label")
            b.range_edge(fl, names[0], b.chain(f"{kind}:flow_label", names[1:], ext_len))
            after_tos = fl
        packet = b.chain(f"{kind}:packet", ["iat", "ttl", "tos"], after_tos)
        direction = b.state(f"{kind}:dir")
        b.token_edge(direction, sp["DIR_C2S"], packet)
        b.token_edge(direction, sp["DIR_S2C"], packet)
        b.token_edge(body, sp["PKT"], direction)
    return b, start, end


class Grammar:
    """Dense DFA tables: ``allowed`` (S, V) bool, ``next_state`` (S, V) int32 (−1: illegal).

    ``automata`` (app protocol name → its ``TokenAutomaton``) narrows those protocols' spans to
    what their decoders accept (the sampling grammar, ``sampling_grammar``); without it an app
    span is any of the protocol's local tokens (the plugin's ``decode`` judges them)."""

    def __init__(self, vocab: Vocabulary, automata: Mapping[str, TokenAutomaton] | None = None) -> None:
        builder, self.start_state, self.end_state = _build(vocab, automata or {})
        self.vocab_size = vocab.size
        self.state_names: list[str] = builder.names
        n_states = len(builder.names)
        self.next_state = np.full((n_states, vocab.size), -1, dtype=np.int32)
        for state, first, stop, target in builder.edges:
            row = self.next_state[state, first:stop]
            if np.any(row >= 0):
                raise AssertionError(f"grammar is not deterministic at state {builder.names[state]}")
            row[:] = target
        self.allowed = self.next_state >= 0
        self.pad_token = vocab.special("PAD")

    @property
    def n_states(self) -> int:
        return self.next_state.shape[0]

    def step(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Next states of a batch; −1 where the token is illegal or the state already was −1."""
        states = np.asarray(states, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        ok = (states >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        out = np.full(states.shape, -1, dtype=np.int32)
        out[ok] = self.next_state[states[ok], tokens[ok]]
        return out

    def run(self, tokens: np.ndarray) -> int:
        """The state after reading ``tokens`` from the start (−1 once a token is illegal)."""
        state = self.start_state
        for t in np.asarray(tokens, dtype=np.int64):
            if not 0 <= t < self.vocab_size:
                return -1
            state = int(self.next_state[state, t])
            if state < 0:
                return -1
        return state

    def accepts(self, tokens: np.ndarray) -> bool:
        """Whether ``tokens`` is one complete flow (``BOS`` … ``EOS``, optionally PAD after)."""
        return self.run(tokens) == self.end_state

    def first_error(self, tokens: np.ndarray) -> int:
        """Index of the first illegal token, ``len(tokens)`` if the flow is incomplete, −1 if accepted."""
        state = self.start_state
        for i, t in enumerate(np.asarray(tokens, dtype=np.int64)):
            if not 0 <= t < self.vocab_size or self.next_state[state, t] < 0:
                return i
            state = int(self.next_state[state, t])
        return -1 if state == self.end_state else len(tokens)

    def torch_tables(self, device: Any = "cpu") -> tuple[Any, Any]:
        """``(allowed, next_state)`` as torch tensors on ``device`` (bool, int64) for batched masking:
        ``logits.masked_fill(~allowed[states], -inf)``, then ``states = next_state[states, tokens]``."""
        import torch

        allowed = torch.from_numpy(self.allowed).to(device)
        next_state = torch.from_numpy(self.next_state.astype(np.int64)).to(device)
        return allowed, next_state

    def __repr__(self) -> str:
        return f"Grammar({self.n_states} states × {self.vocab_size} tokens)"


def app_automata(vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec] | None) -> dict[str, TokenAutomaton]:
    """The token automata (``ProtocolSpec.token_automaton``) of the vocabulary's app protocols
    that declare one, checked against their local vocabulary. A protocol whose hook raises or
    returns a malformed automaton is left unconstrained: that costs redraws, never a flow."""
    out: dict[str, TokenAutomaton] = {}
    for app in vocab.app_protocols:
        spec = (protocols or {}).get(app.name)
        hook = getattr(spec, "token_automaton", None)  # optional: older plugins do not define it
        try:
            automaton = hook() if callable(hook) else None
            if automaton is not None:
                automaton.check(len(app.token_names))
                out[app.name] = automaton
        except Exception:  # a broken automaton: the span is sampled unconstrained, as before
            continue
    return out


def sampling_grammar(vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec] | None) -> Grammar:
    """The grammar sampling follows: ``vocab.grammar()`` with every app span narrowed to what
    its protocol's decoder accepts, where the protocol declares how (``app_automata``)."""
    return vocab.grammar(app_automata(vocab, protocols))
