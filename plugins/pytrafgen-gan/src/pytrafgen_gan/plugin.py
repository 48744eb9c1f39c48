"""Entry point of group ``pytrafgen``: registers the ``gan`` generator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytrafgen import hookimpl


@hookimpl
def register_generators(register: Callable[[Any], None]) -> None:
    from pytrafgen_gan.generator import GanGenerator

    register(GanGenerator)
