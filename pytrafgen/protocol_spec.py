"""The protocol contract: what a protocol plugin implements (``ProtocolSpec``), its field
table (``FieldSpec``) and compliance rules (``Rule``).

It is the bottom of the package's import graph (it imports nothing of pytrafgen but the
errors), so the tokenizer, the rule plumbing and the protocols use it without importing the
generator/validator contracts in ``pytrafgen.interfaces`` (which re-exports these names).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.app_grammar import AppGrammar, TokenAutomaton


@dataclass(frozen=True)
class FieldSpec:
    """One protocol field, as the vocabulary table and docs show it."""

    name: str
    width_bits: int | None  # None: variable length
    role: str  # "value" | "length" (derived) | "checksum" (derived) | "payload"
    encoding: str  # how the tokenizer encodes it: "enum", "uint", "bytes", "text", "bucket", ...
    description: str = ""


@dataclass(frozen=True)
class Rule:
    """A compliance rule. ``check(ctx)`` gets a ``pytrafgen.rules.context.RuleContext`` and
    returns ``(applicable, violating)``: two index arrays into the context's packets
    (``scope == "packet"``) or flows (``scope == "flow"``); ``violating`` ⊆ ``applicable``."""

    id: str  # e.g. "TCP-003", "MQTT-012"
    protocol: str
    scope: str
    description: str
    check: Callable[[Any], Any]


class ProtocolSpec(ABC):
    """A protocol that pytrafgen can recognise, parse, tokenize, build back and check.

    L4 protocols (TCP, UDP, ...) are handled by the C++ core and register mainly their field
    table and rules. Application protocols (HTTP, MQTT, ...) come from plugins and add their
    own token space: ``token_names`` is the protocol's *local* vocabulary (ids 0..n-1), which
    the vocabulary offsets into a range of its own.

    Per packet, an app protocol either encodes the whole TCP/UDP payload into local tokens
    (the payload starts at a message boundary and parses into complete messages), or returns
    None and the tokenizer keeps that payload as bytes (continuations of a message split over
    segments, unparsable data). Either way the packet's bytes round-trip exactly.
    """

    name: ClassVar[str]
    layer: ClassVar[str]  # "l3", "l4" or "app"
    transport: ClassVar[str] = ""  # app protocols: "tcp" or "udp"
    default_ports: ClassVar[tuple[int, ...]] = ()
    fields: ClassVar[tuple[FieldSpec, ...]] = ()
    token_names: ClassVar[tuple[str, ...]] = ()

    def recognise(self, server_port: int, client_payload: bytes, server_payload: bytes) -> bool:
        """Whether a flow carries this protocol (ports and/or payload heuristics). A function of
        its arguments: the tokenizer asks once for flows that open with the same payloads."""
        return server_port in self.default_ports

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        """Local token ids for one packet's payload, or None to keep it as bytes."""
        return None

    def token_grammar(self) -> AppGrammar | None:
        """Optional: the protocol's message grammar as data (``pytrafgen.app_grammar``), so the
        C++ core tokenizes its payloads in bulk; ``encode`` stays the reference and the
        fallback, and must give the same tokens. None (the default): ``encode`` is called per
        payload."""
        return None

    def token_automaton(self) -> TokenAutomaton | None:
        """Optional: the local token sequences ``decode`` accepts, as a finite automaton
        (``pytrafgen.app_grammar.TokenAutomaton``) that sampling follows inside this protocol's
        spans, so no sampled flow is drawn again because its span does not decode. It must
        accept every span ``encode`` writes. None (the default): any local tokens may be
        sampled and ``decode`` judges them."""
        return None

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        """Payload bytes from local token ids (derived lengths recomputed)."""
        raise PytrafgenError(f"protocol {self.name!r} has no token codec")

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        """Messages (field name -> value) in an in-order byte stream of one direction (over UDP:
        one datagram); each holds ``offset``, its first byte's position in ``stream`` (rules map
        it to a packet)."""
        return []

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        """Bytes of one message from its fields, derived lengths recomputed."""
        raise PytrafgenError(f"protocol {self.name!r} cannot build messages")

    def rules(self) -> list[Rule]:
        """Compliance rules this protocol contributes to ``pytrafgen evaluate``."""
        return []


__all__ = ["FieldSpec", "ProtocolSpec", "Rule"]
