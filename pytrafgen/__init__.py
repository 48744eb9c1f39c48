"""pytrafgen: learn from real packet captures and generate labeled, fine-grained network traffic."""

from __future__ import annotations

from pytrafgen.capture import PacketTable, iter_pcap, read_pcap, write_pcap
from pytrafgen.errors import CaptureError, PytrafgenError
from pytrafgen.flows import FlowTable, assemble_flows
from pytrafgen.hookspecs import hookimpl
from pytrafgen.records import FieldRecords

__all__ = [
    "CaptureError",
    "FieldRecords",
    "FlowTable",
    "PacketTable",
    "PytrafgenError",
    "assemble_flows",
    "hookimpl",
    "iter_pcap",
    "read_pcap",
    "write_pcap",
]
