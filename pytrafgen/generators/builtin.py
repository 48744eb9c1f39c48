"""Registers the built-in generators through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from pytrafgen.hookspecs import hookimpl


@hookimpl
def register_generators(register: Callable[[type], None]) -> None:
    from pytrafgen.generators.ar.generator import ARGenerator

    register(ARGenerator)
