"""Declarative app-protocol grammars: what a protocol plugin returns from
``ProtocolSpec.token_grammar()`` so that the C++ core (``csrc/app_grammar.hpp``) tokenizes its
payloads instead of the plugin's Python ``encode``.

A grammar is data: the plugin's local token ids, its enumerations and name tables, and (for
binary packets) a list of field operations per packet type. Two message families:

* :class:`TextGrammar` — text messages: a request line (method SP target SP version) or a
  status line (version SP code [SP reason]), ``Name:value`` header lines, an empty line, and a
  body framed by a length header, a chunked transfer coding, or the end of the data (HTTP/1.x).
* :class:`BinaryGrammar` — binary packets: a type/flags byte, a variable-length remaining
  length, and a body described per type by field operations (:class:`Field`): length-prefixed
  strings, enumerations, bytes, varint-prefixed blocks, conditions on earlier values or on
  the header flags, the rest (MQTT 3.1.1 / 5.0).

The plugin's Python ``encode`` stays the reference: the C++ path must give the same local
tokens for every payload (``tests/test_app_grammar.py`` checks it on every shared capture).
The C++ core also detokenizes with the grammar (``decode_payloads``; the token decoder uses it
for app spans): the sequences the encoder writes decode there, any other sequence (a sampler's
slip) goes to ``ProtocolSpec.decode``, which stays the reference
(``tests/test_app_detokenize.py`` checks both, byte for byte, on every shared capture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrafgen import _core

BINARY_TYPES = 16  # a 4-bit packet type


@dataclass(frozen=True)
class TextGrammar:
    """An HTTP/1.x-style text message grammar. ``tokens`` maps each structural role to the
    plugin's local token id: request, response, end (closes a text), headers_end, msg_end,
    method_other / version_other / status_other / header_other (an unlisted value follows as
    text; a status as three byte tokens), reason_standard (the code's standard reason phrase),
    reason_none (no reason part), value (``": "`` + text), value_raw (``":"`` + text),
    value_length (a length header equal to the complete body's length, derived). Byte tokens are
    the ids 0-255."""

    tokens: Mapping[str, int]
    methods: Mapping[bytes, int]
    versions: Mapping[bytes, int]
    statuses: Mapping[bytes, int]  # three-digit codes
    standard_reasons: Mapping[bytes, bytes]  # code -> reason phrase
    header_names: Mapping[bytes, int]  # exact spelling -> token
    length_header: bytes = b"content-length"
    transfer_header: bytes = b"transfer-encoding"
    chunked: bytes = b"chunked"
    version_prefix: bytes = b"HTTP/"
    no_body_statuses: tuple[bytes, ...] = (b"204", b"304")
    no_body_status_class: bytes = b"1"

    def to_core(self) -> dict[str, Any]:
        return {"family": "text", "tokens": dict(self.tokens), "methods": dict(self.methods),
                "versions": dict(self.versions), "statuses": dict(self.statuses),
                "standard_reasons": dict(self.standard_reasons), "header_names": dict(self.header_names),
                "length_header": self.length_header.lower(), "transfer_header": self.transfer_header.lower(),
                "chunked": self.chunked.lower(), "version_prefix": self.version_prefix,
                "no_body_statuses": list(self.no_body_statuses), "no_body_status_class": self.no_body_status_class}


@dataclass(frozen=True)
class Field:
    """One field operation of a binary packet body. ``op``:

    * ``u8``: one byte as a byte token (kept in variable slot ``var`` if given);
    * ``bytes``: ``n`` bytes; ``rest``: every byte left;
    * ``str16``: a 16-bit big-endian length, that many bytes, then token ``end`` (the length is
      derived at decode time);
    * ``enum_str16``: the same, written as ``table[bytes]`` when listed, else ``other`` + bytes
      + ``end``;
    * ``enum_u8``: one byte, ``table[byte]`` when listed else ``other`` + the byte (kept in ``var``);
    * ``varbytes``: a minimally encoded variable-byte length, the bytes, then ``end``;
    * ``if_eq`` / ``if_any``: the fields in ``then`` when variable ``var`` equals ``n`` / has a
      bit of mask ``n``; ``if_header_any``: when the fixed header's flags have a bit of ``n``.

    A body that runs out, or has bytes left after its fields, is written as RAW bytes."""

    op: str
    var: int = -1
    n: int = 0
    end: int = -1
    other: int = -1
    table: Mapping[Any, int] = field(default_factory=dict)
    then: tuple[Field, ...] = ()

    def to_core(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "var": self.var, "n": self.n, "end": self.end, "other": self.other}
        if self.table:
            out["table"] = dict(self.table)
        if self.then:
            out["then"] = [f.to_core() for f in self.then]
        return out


@dataclass(frozen=True)
class PacketType:
    """What a binary grammar knows of one packet type: whether it exists, the fixed-header flags
    it must carry (``flags & flag_mask == flag_value``, or ``!=`` when ``flag_differ``), the
    shortest RAW body that decodes back unchanged, and its body's fields (None: always RAW)."""

    allowed: bool = True
    flag_mask: int = 0
    flag_value: int = 0
    flag_differ: bool = False
    min_raw_body: int = 0
    body: tuple[Field, ...] | None = None


@dataclass(frozen=True)
class BinaryGrammar:
    """A binary packet grammar (type/flags byte, variable-byte remaining length, typed body).
    ``tokens``: type0 and flags0 (the ids of type 0 and flags 0; the others follow), rl_derived
    (the length is derived), rl_explicit (its bytes follow, then the body as bytes: a packet
    cut short or not minimally encoded), raw (the body as bytes), packet_end. ``types``: the 16
    packet types."""

    tokens: Mapping[str, int]
    types: Sequence[PacketType]

    def to_core(self) -> dict[str, Any]:
        if len(self.types) != BINARY_TYPES:
            raise ValueError(f"binary grammar: {len(self.types)} packet types, expected {BINARY_TYPES}")
        return {"family": "binary", "tokens": dict(self.tokens),
                "types": [{"allowed": t.allowed, "flag_mask": t.flag_mask, "flag_value": t.flag_value,
                           "flag_differ": t.flag_differ, "min_raw_body": t.min_raw_body,
                           "body": None if t.body is None else [f.to_core() for f in t.body]}
                          for t in self.types]}


AppGrammar = TextGrammar | BinaryGrammar


@dataclass(frozen=True)
class TokenAutomaton:
    """Which local token sequences a protocol's ``decode`` turns into bytes, as a deterministic
    finite automaton the sampler's grammar follows inside the protocol's spans (what a plugin
    returns from ``ProtocolSpec.token_automaton()``): a sampled span then always decodes, and
    no flow is drawn again for it. It must accept every span the plugin's ``encode`` writes.

    States are ``0 .. len(state_names) - 1``, 0 the start; ``edges``: (state, first local id,
    stop local id, target) — the ids ``first .. stop - 1`` lead from ``state`` to ``target``;
    ``accepting``: the states a span may end in (``APP_END`` is allowed there only)."""

    state_names: tuple[str, ...]
    edges: tuple[tuple[int, int, int, int], ...]
    accepting: frozenset[int]

    def check(self, n_local: int) -> None:
        """Raise ``ValueError`` unless the automaton is well-formed over ``n_local`` local ids:
        edges within range and deterministic, at least one accepting state."""
        n = len(self.state_names)
        if n == 0 or not self.accepting or not all(0 <= s < n for s in self.accepting):
            raise ValueError("token automaton: no states, or accepting states out of range")
        taken = np.zeros((n, n_local), dtype=bool)
        for state, first, stop, target in self.edges:
            if not (0 <= state < n and 0 <= target < n and 0 <= first < stop <= n_local):
                raise ValueError(f"token automaton: edge {(state, first, stop, target)} out of range")
            if taken[state, first:stop].any():
                raise ValueError(f"token automaton: not deterministic at state {self.state_names[state]!r}")
            taken[state, first:stop] = True

    def accepts(self, local: Sequence[int]) -> bool:
        """Whether the local token ids ``local`` are a whole span the automaton allows."""
        step: dict[int, list[tuple[int, int, int]]] = {}
        for state, first, stop, target in self.edges:
            step.setdefault(state, []).append((first, stop, target))
        state = 0
        for tok in local:
            state = next((target for first, stop, target in step.get(state, ()) if first <= int(tok) < stop), -1)
            if state < 0:
                return False
        return state in self.accepting


class AutomatonBuilder:
    """Collects a ``TokenAutomaton``'s states and edges by name; the first state is the start."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.edges: list[tuple[int, int, int, int]] = []

    def state(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1

    def edge(self, state: int, first: int, stop: int, target: int) -> None:
        """Local ids ``first .. stop - 1`` lead from ``state`` to ``target``."""
        self.edges.append((state, first, stop, target))

    def token(self, state: int, token: int, target: int) -> None:
        self.edge(state, token, token + 1, target)

    def build(self, accepting: Sequence[int]) -> TokenAutomaton:
        return TokenAutomaton(tuple(self.names), tuple(self.edges), frozenset(accepting))


@dataclass
class EncodedPayloads:
    """Local tokens of many payloads: payload i's are ``tokens[offsets[i]:offsets[i+1]]``.
    ``status``: 1 encoded, 0 kept as bytes, -1 kept as bytes because a length in it is
    malformed (where the Python reference codec raised)."""

    status: np.ndarray  # int8
    offsets: np.ndarray  # int64, n + 1
    tokens: np.ndarray  # int32


def encode_payloads(grammar: AppGrammar, data: np.ndarray, off: np.ndarray, length: np.ndarray) -> EncodedPayloads:
    """Tokenize ``data[off[i]:off[i]+length[i]]`` for every i with ``grammar`` in C++."""
    status, offsets, tokens = _core.app_grammar_encode(
        grammar.to_core(), np.ascontiguousarray(data, np.uint8), np.ascontiguousarray(off, np.uint64),
        np.ascontiguousarray(length, np.uint32))
    return EncodedPayloads(status, offsets, tokens)


@dataclass
class DecodedPayloads:
    """Bytes of many local token spans: span i's are ``data[offsets[i]:offsets[i+1]]`` where
    ``ok[i]``; where not, the span is not a sequence the encoder writes and the plugin's
    Python ``decode`` (the reference, lenient by design) decides what it becomes."""

    ok: np.ndarray  # bool
    offsets: np.ndarray  # int64, n + 1
    data: np.ndarray  # uint8


def decode_payloads(grammar: AppGrammar, n_local: int, tokens: np.ndarray, offsets: np.ndarray) -> DecodedPayloads:
    """Detokenize span i = ``tokens[offsets[i]:offsets[i+1]]`` (local ids < ``n_local``) with
    ``grammar`` in C++ (``csrc/app_detokenize.hpp``)."""
    ok, data_off, data = _core.app_grammar_decode(grammar.to_core(), int(n_local),
                                                  np.ascontiguousarray(tokens, np.int32),
                                                  np.ascontiguousarray(offsets, np.int64))
    return DecodedPayloads(ok.astype(bool), data_off, data)


__all__ = ["AppGrammar", "AutomatonBuilder", "BinaryGrammar", "DecodedPayloads", "EncodedPayloads", "Field", "PacketType",
           "TextGrammar", "TokenAutomaton", "decode_payloads", "encode_payloads"]
