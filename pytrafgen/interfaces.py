"""What a plugin implements. Generators, tokenizers and validators are classes/objects
registered through ``pytrafgen.hookspecs``; these base classes say what they must provide.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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
