"""What a plugin implements. Generators and validators are classes/objects registered through
``pytrafgen.hookspecs``; these base classes say what they must provide. Protocols
(``ProtocolSpec``, ``FieldSpec``, ``Rule``) are defined in ``pytrafgen.protocol_spec`` and
re-exported here. Tokenization is not pluggable as a whole: an app protocol plugs its own
token codec into the static tokenizer (``ProtocolSpec.encode``/``decode``/``token_names``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pytrafgen.errors import PytrafgenError
from pytrafgen.protocol_spec import FieldSpec, ProtocolSpec, Rule

if TYPE_CHECKING:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.evaluate.evalset import EvalSet
    from pytrafgen.records import FieldRecords


class Generator(ABC):
    """A traffic generator: the whole contract the CLI (``train``, ``generate``, ``compare``,
    ``demo``) relies on; it probes nothing else.

    ``save`` writes a checkpoint directory whose ``config.json`` holds ``{"generator": name,
    ...}``; ``pytrafgen.generators.load_generator`` dispatches on it. Checkpoints never hold
    pickles (weights as safetensors, settings as JSON). ``pytrafgen generate`` also needs
    ``address_plan.json`` (``AddressPlan.save``; the dataset's, ``dataset.address_plan``) in the
    checkpoint directory, and a generator that samples tokens keeps its ``vocab.json`` there.

    ``pytrafgen train DATASET -g NAME --set k=v`` constructs ``cls()`` (no arguments), calls
    ``fit(TrafficDataset(DATASET), settings)`` with ``settings`` = ``{"device", "seed",
    "quiet"}`` plus the ``--set`` pairs (values parsed as JSON where they are JSON; keys checked
    against ``fit_setting_names()``), then ``save(out)``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The options ``set_sampling`` accepts besides ``device`` and ``show_progress`` (e.g.
    #: temperature, top_k, top_p, batch_size); ``pytrafgen generate`` refuses the others.
    sampling_options: ClassVar[frozenset[str]] = frozenset()
    #: ``fit`` writes resumable checkpoints to ``settings["checkpoint_dir"]`` as it trains (the
    #: CLI then passes the output directory).
    checkpoints_during_fit: ClassVar[bool] = False
    #: ``fit`` draws its own progress (the CLI then shows no activity line of its own).
    draws_fit_progress: ClassVar[bool] = False
    #: Progress of ``sample``: called as ``on_progress(done, total)`` with the flows finished
    #: so far and the flows asked for (``total`` may grow when flows are redrawn), at least
    #: once per batch and once at the end. Set it before calling ``sample``; None: silent.
    on_progress: Callable[[int, int], None] | None = None
    #: The protocol specs (name -> spec) the generator decodes application tokens with.
    #: ``fit`` takes them from ``dataset.protocols``; ``pytrafgen.generators.load_generator``
    #: sets them on a loaded checkpoint (from its ``registry=``, default the loaded plugins').
    #: None: not set; a generator whose vocabulary has app protocols then refuses to sample.
    protocols: Mapping[str, ProtocolSpec] | None = None

    #: Figures about the latest ``sample`` call (JSON-able, e.g. flows redrawn); ``pytrafgen
    #: generate --json`` prints them under "sampling". Empty: nothing to say.
    last_sample_stats: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance, never mutated

    @classmethod
    def fit_setting_names(cls) -> frozenset[str] | None:
        """The ``fit`` settings this generator understands (the CLI's ``--set`` keys, which it
        rejects when they are not among them); None: not declared, anything is passed on."""
        return None

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any], flag: str = "--set") -> None:
        """Refuse settings ``fit_setting_names`` does not list, naming the accepted ones."""
        accepted = cls.fit_setting_names()
        if accepted is None:
            return
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise PytrafgenError(f"{flag}: generator {cls.name!r} has no setting {', '.join(unknown)}; "
                                 f"accepted: {', '.join(sorted(accepted))}")

    def set_sampling(self, *, device: str | None = None, show_progress: bool | None = None,
                     **options: Any) -> None:
        """Options for later ``sample`` calls (None keeps the current value). ``device`` and
        ``show_progress`` are accepted by every generator (ignored where meaningless); any
        other option must be in ``sampling_options``. Generators with options override this
        (and call ``self.check_sampling_options(options)``)."""
        self.check_sampling_options(options)

    def check_sampling_options(self, options: Mapping[str, Any]) -> None:
        """Refuse given (not None) options that are not in ``sampling_options``."""
        unknown = sorted(k for k, v in options.items() if v is not None and k not in self.sampling_options)
        if unknown:
            raise PytrafgenError(f"generator {self.name!r} takes no sampling options ({', '.join(unknown)})"
                                 + (f"; it takes {', '.join(sorted(self.sampling_options))}"
                                    if self.sampling_options else ""))

    def training_stages(self) -> list[dict[str, Any]]:
        """The finished training stages, one JSON-able dict each with at least ``stage`` and
        ``steps`` (``tokens``, ``best_val_loss``, ``stopped_early`` where known); ``pytrafgen
        train`` prints them. Empty: the generator has no staged training to report."""
        return []

    def finish_fit(self) -> None:  # noqa: B027 - an optional hook: nothing to release by default
        """Release what ``fit`` holds beyond the model (e.g. a distributed process group); the
        CLI calls it after ``fit``, also when ``fit`` raised."""

    def is_writer(self) -> bool:
        """Whether this process writes checkpoints (False on all but one rank of a
        multi-process ``fit``)."""
        return True

    def export(self, path: Path) -> None:
        """Write a checkpoint meant for shipping (no resumable training state, weights as small
        as sampling allows); default: ``save``."""
        self.save(path)

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


__all__ = ["FieldSpec", "Generator", "ProtocolSpec", "Rule", "Validator"]
