"""Registers the built-in generators (and the AR generator's stage commands) through the same
hooks a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pytrafgen.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def register_generators(register: Callable[[type], None]) -> None:
    from pytrafgen.generators.ar.generator import ARGenerator

    register(ARGenerator)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    """``pytrafgen pretrain`` / ``finetune``: the AR generator's training stages."""
    from pytrafgen.generators.ar.commands import register_commands as add_ar_commands

    add_ar_commands(app)
