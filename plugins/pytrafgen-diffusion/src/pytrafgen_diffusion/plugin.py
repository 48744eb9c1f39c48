"""Entry point of group ``pytrafgen``: registers the ``diffusion`` generator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytrafgen import hookimpl


@hookimpl
def register_generators(register: Callable[[Any], None]) -> None:
    from pytrafgen_diffusion.generator import DiffusionGenerator

    register(DiffusionGenerator)
