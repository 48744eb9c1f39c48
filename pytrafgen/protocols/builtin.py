"""The built-in protocol plugin: registers IPv4, IPv6, TCP, UDP and ICMP through the same
``register_protocols`` hook a third-party package implements."""

from __future__ import annotations

from collections.abc import Callable

from pytrafgen.hookspecs import hookimpl
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.protocols.l3l4 import L3L4_PROTOCOLS


@hookimpl
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    for spec in L3L4_PROTOCOLS:
        register(spec)
