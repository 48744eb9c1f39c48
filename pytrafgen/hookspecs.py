"""The plugin hooks. Every hook takes a ``register`` callback, so one plugin can add several
things. Built-ins (TCP/UDP, the AR generator, the core validators) register through these
same hooks; third-party packages do so through the entry-point group ``pytrafgen``. A plugin
implementing a hook not declared here is refused when it loads (pluggy ``check_pending``).

A plugin module looks like::

    from pytrafgen import hookimpl

    @hookimpl
    def register_generators(register):
        register(MyGenerator)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from pytrafgen.interfaces import Generator, ProtocolSpec, Validator

hookspec = pluggy.HookspecMarker("pytrafgen")
hookimpl = pluggy.HookimplMarker("pytrafgen")


@hookspec
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    """Register protocols: recognition, field table, parse/build, tokenization, compliance rules."""


@hookspec
def register_generators(register: Callable[[type[Generator]], None]) -> None:
    """Register generator classes: ``fit``, ``sample``, ``save``, ``load``."""


@hookspec
def register_validators(register: Callable[[Validator], None]) -> None:
    """Register validators: metrics or checks over (real, generated) traffic."""


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add extra sub-commands to the ``pytrafgen`` CLI."""

