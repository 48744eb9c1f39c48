"""What a plugin implements. Generators, tokenizers and validators are classes/objects
registered through ``pytrafgen.hookspecs``; these base classes say what they must provide.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.evaluate.evalset import EvalSet
    from pytrafgen.records import FieldRecords


class Generator(ABC):
    """A traffic generator. ``save`` writes a checkpoint directory whose ``config.json`` holds
    ``{"generator": name, ...}``; ``pytrafgen.generators.load_generator`` dispatches on it.
    Checkpoints never hold pickles (weights as safetensors, settings as JSON)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Progress of ``sample``: called as ``on_progress(done, total)`` with the flows finished
    #: so far and the flows asked for (``total`` may grow when flows are redrawn), at least
    #: once per batch and once at the end. Set it before calling ``sample``; None: silent.
    on_progress: Callable[[int, int], None] | None = None

    @classmethod
    def fit_setting_names(cls) -> frozenset[str] | None:
        """The ``fit`` settings this generator understands (the CLI's ``--set`` keys, which it
        rejects when they are not among them); None: not declared, anything is passed on."""
        return None

    @abstractmethod
    def fit(self, dataset: TrafficDataset, settings: Mapping[str, Any] | None = None) -> None:
        """Train on ``dataset`` (its train split; validation split for early stopping)."""

    @abstractmethod
    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        """Generate ``counts[class_name]`` flows per class, reproducibly for a given seed."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write a checkpoint directory (atomically: nothing under the final name until done)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Generator:
        """Read a checkpoint directory written by ``save``."""


class Validator(ABC):
    """A metric or check over real and generated traffic; returns JSON-able figures that
    always include the settings they were computed with."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Compute the figures. ``real`` is the real test split (with its training split
        reachable as ``real.train`` where a metric needs it, e.g. memorisation)."""


class Tokenizer(ABC):
    """Turns packets/flows into token sequences and back into field records."""

    name: ClassVar[str]

    @abstractmethod
    def vocabulary(self) -> Mapping[str, Any]:
        """The versioned vocabulary as a JSON-able mapping."""


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
    """A compliance rule. ``check(ctx)`` gets a ``pytrafgen.evaluate.context.RuleContext`` and
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
        """Whether a flow carries this protocol (ports and/or payload heuristics)."""
        return server_port in self.default_ports

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        """Local token ids for one packet's payload, or None to keep it as bytes."""
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
