"""Generators: ``load_generator`` opens any checkpoint directory by the ``generator`` name in
its ``config.json``, through the plugin registry (built-in ``ar`` or a plugin's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pytrafgen.errors import CheckpointError
from pytrafgen.interfaces import Generator

if TYPE_CHECKING:
    from pytrafgen.plugins import Registry


def read_checkpoint_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a checkpoint directory."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("generator"), str):
        raise CheckpointError(f"{config_path}: has no \"generator\" name")
    return config


def load_generator(path: str | Path, generator: str | None = None, registry: Registry | None = None) -> Generator:
    """Load the checkpoint at ``path`` with the generator its config names (or ``generator``),
    from ``registry`` (default: the loaded plugins'; an edge, docs/architecture.md), and hand
    it the registry's protocol specs (``Generator.protocols``)."""
    from pytrafgen.plugins import get_registry, lookup

    reg = registry if registry is not None else get_registry()
    name = generator or read_checkpoint_config(path)["generator"]
    gen = lookup("generator", reg.generators, name).load(Path(path))
    gen.protocols = reg.protocols
    return gen


__all__ = ["load_generator", "read_checkpoint_config"]
