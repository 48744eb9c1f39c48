"""``BaselineGenerator``: the documented base class of the header-level baselines (``gan`` and
``diffusion``, or a third party's).

A baseline trains a torch network on a dataset's train-split ``FieldRecords`` and assembles
sampled header fields into records whose payload bytes are *real payload prefixes* of the same
class and direction (``EmpiricalParts``). What every such generator shares lives here: the
settings (``SIZES`` + ``DEFAULTS`` + what the caller gives), the device, the sampling options,
the checkpoint (``config.json`` with the settings and the network's shape, the dataset's
``vocab.json``/``address_plan.json`` copied beside it, ``weights.safetensors``), ``load``.

A subclass provides:

* ``name``, ``description``; ``SIZES`` (size name -> shape settings, e.g. ``{"tiny": {...}}``)
  and ``DEFAULTS`` (every other ``fit`` setting; it must hold ``size``, ``seed``, ``device``,
  ``payload_prefix_bytes``, ``payload_per_key``, ``quiet`` and ``sample_batch``);
* ``network_prefix``: the tensor-name prefix of the network's weights in the checkpoint;
* ``shape()``: a dataclass the network is built from (saved in ``config.json``), and
  ``build_network(shape)``: a new (untrained) ``torch.nn.Module`` of that shape;
* ``fit(dataset, settings)``: call ``data = self.begin_fit(dataset, settings)`` (a
  ``TrainingSet``: records, flows, classes, empirical parts), train, set ``self.net`` (on the
  CPU, in eval mode) and ``self.history``;
* ``sample(counts, seed)``: ``labels = self.labels_for(counts)``, run the network on
  ``self.device()``, return ``assemble_records(self.classes, flows, packets, self.parts, rng)``;
* optionally ``model_arrays()`` / ``restore_arrays(tensors)`` for fitted state other than the
  network (e.g. a feature encoding), and more ``sampling_options`` with ``apply_sampling``.

Plugins import everything they need from this module (the data parts it re-exports live in
``baseline_data``: ``FlowSet``, ``EmpiricalParts``, ``TrainingSet``, ``assemble_records``; the
checkpoint plumbing in ``baseline_ckpt``, both implementation modules of this base class).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from pytrafgen.errors import DatasetError, PytrafgenError
from pytrafgen.generators.baseline_ckpt import (
    arrays_to_state,
    counts_to_labels,
    read_checkpoint,
    state_to_arrays,
    training_progress,
    write_checkpoint,
)
from pytrafgen.generators.baseline_data import (
    EmpiricalParts,
    FlowSet,
    TrainingSet,
    assemble_records,
    iat_bucket,
    renamed_settings,
)
from pytrafgen.interfaces import Generator

B = TypeVar("B", bound="BaselineGenerator")


class BaselineGenerator(Generator):
    """A header-level baseline (see the module docstring for what a subclass provides)."""

    SIZES: ClassVar[dict[str, dict[str, int]]]
    DEFAULTS: ClassVar[dict[str, Any]]
    network_prefix: ClassVar[str]
    #: ``batch_size`` sets the flows per sampling batch (``sample_batch``)
    sampling_options: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        given = renamed_settings(settings)  # a checkpoint of before issue 17 says payload_cap
        self.settings: dict[str, Any] = {**self.DEFAULTS, **self.size(given.get("size", self.DEFAULTS["size"])),
                                         **given}
        self.classes: list[str] = []
        self.class_kinds: list[str] = []
        self.trained: list[str] = []
        self.parts: EmpiricalParts | None = None
        self.net: Any = None
        self.history: dict[str, float] = {}
        self._source_dir: Path | None = None

    # --- settings ------------------------------------------------------------------------
    @classmethod
    def fit_setting_names(cls) -> frozenset[str]:
        return frozenset(cls.DEFAULTS).union(*cls.SIZES.values())

    @classmethod
    def size(cls, name: str) -> dict[str, int]:
        """The shape settings of a size name; an unknown name is an error naming the sizes."""
        if name not in cls.SIZES:
            raise PytrafgenError(f"unknown size {name!r}; sizes: {', '.join(cls.SIZES)}")
        return cls.SIZES[name]

    def device(self) -> str:
        """The torch device of the ``device`` setting ("auto": CUDA when available)."""
        import torch

        name = str(self.settings["device"])
        if name == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return name

    def set_sampling(self, *, device: str | None = None, show_progress: bool | None = None,
                     **options: Any) -> None:
        """``device``, ``batch_size`` and the subclass's ``sampling_options`` (None keeps the
        current value); no temperature/top-k/top-p (those belong to token samplers)."""
        self.check_sampling_options(options)
        if device is not None:
            self.settings["device"] = device
        if options.get("batch_size") is not None:
            self.settings["sample_batch"] = int(options["batch_size"])
        self.apply_sampling({k: v for k, v in options.items() if k != "batch_size" and v is not None})

    def apply_sampling(self, options: Mapping[str, Any]) -> None:
        """Apply the subclass's own sampling options (already checked against
        ``sampling_options``); by default they are settings of the same name."""
        self.settings.update(options)

    # --- fit / sample helpers -----------------------------------------------------------------
    def begin_fit(self, dataset: Any, settings: Mapping[str, Any] | None) -> TrainingSet:
        """Merge ``settings`` (a new ``size`` brings its shape settings) and read the dataset's
        train split: classes, class kinds, trained classes and empirical parts are kept."""
        given = dict(settings or {})
        if "size" in given:
            self.settings.update(self.size(given["size"]))
        self.settings.update(given)
        data = TrainingSet.from_dataset(self.name, dataset, self.settings)
        self.classes, self.class_kinds, self.parts = data.classes, data.class_kinds, data.parts
        self._source_dir, self.trained = data.source_dir, data.trained
        return data

    def labels_for(self, counts: Mapping[str, int]) -> np.ndarray:
        """One class index per requested flow, after checking the generator is trained."""
        if self.net is None or self.parts is None:
            raise DatasetError(f"{self.name}: fit() or load() first")
        return counts_to_labels(counts, self.classes, self.trained)

    @abstractmethod
    def shape(self) -> Any:
        """The dataclass the network is built from (its fields go to ``config.json``)."""

    @abstractmethod
    def build_network(self, shape: Any) -> Any:
        """A new network (``torch.nn.Module``) of ``shape``."""

    def model_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state besides the network and the empirical parts, as named arrays."""
        return {}

    def restore_arrays(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Restore what ``model_arrays`` saved (called before the network is built)."""

    # --- checkpoint ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        if self.net is None or self.parts is None:
            raise DatasetError(f"{self.name}: nothing to save; fit() first")
        config = {"generator": self.name, "format": 1, "classes": self.classes, "class_kinds": self.class_kinds,
                  "trained_classes": self.trained, "settings": self.settings, "shape": asdict(self.shape()),
                  "history": self.history}
        tensors = {**state_to_arrays(self.net.state_dict(), self.network_prefix), **self.model_arrays(),
                   **self.parts.arrays()}
        write_checkpoint(path, config, tensors, self._source_dir)

    @classmethod
    def load(cls: type[B], path: Path) -> B:
        config, tensors = read_checkpoint(path, cls.name)
        gen = cls(config["settings"])
        gen.classes = list(config["classes"])
        gen.class_kinds = list(config.get("class_kinds", []))
        gen.trained = list(config["trained_classes"])
        gen.history = dict(config.get("history", {}))
        gen.restore_arrays(tensors)
        gen.parts = EmpiricalParts.from_arrays(tensors)
        net = gen.build_network(gen.shape())
        net.load_state_dict(arrays_to_state(tensors, cls.network_prefix))
        gen.net = net.eval()
        return gen


__all__ = ["BaselineGenerator", "EmpiricalParts", "FlowSet", "TrainingSet", "assemble_records", "iat_bucket",
           "training_progress"]
