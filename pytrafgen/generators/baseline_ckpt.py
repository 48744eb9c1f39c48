"""Checkpoint directories, class resolution and torch-state conversion for the baselines (the
implementation of ``pytrafgen.generators.baseline.BaselineGenerator.save`` / ``load``).

A checkpoint directory holds ``config.json`` (``{"generator": name, ...}``), the dataset's
``vocab.json`` / ``address_plan.json`` / ``payload_fill.json`` / ``iat_fill.json`` where the training dataset had
them (so ``generate`` builds with the training data's address plan and payload fill), and ``weights.safetensors`` (numpy arrays via
:mod:`pytrafgen.safetensors_io`; never pickle).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.atomic import atomic_dir
from pytrafgen.errors import CheckpointError, PytrafgenError
from pytrafgen.safetensors_io import load_file, save_file

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
DATASET_SIDE_FILES = ("vocab.json", "address_plan.json", "payload_fill.json", "iat_fill.json")


def dataset_dir(dataset: Any) -> Path | None:
    """The directory a dataset was read from (``TrafficDataset.path``), if it has one."""
    value = getattr(dataset, "path", None)
    return Path(value) if value is not None else None


def write_checkpoint(path: str | Path, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                     source_dir: Path | None = None) -> None:
    """Write a checkpoint directory atomically (nothing under ``path`` until it is complete)."""
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        for name in DATASET_SIDE_FILES:
            if source_dir is not None and (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, tmp / name)
        save_file(dict(tensors), tmp / WEIGHTS, metadata={"generator": str(config["generator"])})


def read_checkpoint(path: str | Path, generator: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, tensors) of a checkpoint written for ``generator``; CheckpointError otherwise."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no {CONFIG})")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("generator") != generator:
        found = config.get("generator") if isinstance(config, dict) else None
        raise CheckpointError(f"{config_path}: checkpoint of generator {found!r}, not {generator!r}")
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path}: checkpoint has no {WEIGHTS}")
    tensors, _ = load_file(path / WEIGHTS)
    return config, tensors


def counts_to_labels(counts: Mapping[str, int], classes: list[str], trained: list[str]) -> np.ndarray:
    """One class index per requested flow, in request order; names must be trained classes."""
    labels: list[np.ndarray] = []
    for name, n in counts.items():
        if name not in classes:
            raise PytrafgenError(f"unknown class {name!r}; this checkpoint knows: {', '.join(classes)}")
        if name not in trained:
            raise PytrafgenError(f"class {name!r} had no training flows; trained classes: {', '.join(trained)}")
        if int(n) < 0:
            raise PytrafgenError(f"class {name!r}: flow count must be >= 0, got {n}")
        labels.append(np.full(int(n), classes.index(name), np.int16))
    return np.concatenate(labels) if labels else np.zeros(0, np.int16)


def state_to_arrays(state: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    """A torch ``state_dict`` as float32/int numpy arrays under ``prefix.``."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in state.items()}


def arrays_to_state(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, Any]:
    import torch

    start = f"{prefix}."
    return {k[len(start):]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
            if k.startswith(start)}


def dataset_classes(dataset: Any, records_classes: list[str]) -> tuple[list[str], list[str]]:
    """(class names, class kinds) of a dataset; kinds default to 'unknown' when absent."""
    classes = list(getattr(dataset, "classes", None) or records_classes)
    kinds = getattr(dataset, "class_kinds", None)
    if isinstance(kinds, Mapping):
        kinds = [kinds.get(c, "unknown") for c in classes]
    return classes, list(kinds) if kinds is not None else ["unknown"] * len(classes)


@contextlib.contextmanager
def training_progress(label: str, quiet: bool,
                      given: Callable[[int, int], None] | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback: ``given`` if any, else a rich progress bar unless
    ``quiet`` (library callers pass quiet; ``pytrafgen train`` passes its ``--quiet``)."""
    if given is not None or quiet:
        yield given
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
