"""pytrafgen: learn from real packet captures and generate labeled, fine-grained network traffic."""

from __future__ import annotations

from importlib.metadata import version as _distribution_version

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_packets, write_records
from pytrafgen.capture import PacketTable, iter_pcap, read_pcap, write_pcap
from pytrafgen.dataset import TrafficDataset
from pytrafgen.errors import CaptureError, PytrafgenError
from pytrafgen.flows import FlowTable, assemble_flows
from pytrafgen.hookspecs import hookimpl
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import records_from_packets
from pytrafgen.tokenizer import Vocabulary, decode, encode_flows

# single source: the version in pyproject.toml, as installed
__version__ = _distribution_version("pytrafgen")

__all__ = [
    "AddressPlan",
    "CaptureError",
    "FieldRecords",
    "FlowTable",
    "PacketTable",
    "PytrafgenError",
    "TrafficDataset",
    "Vocabulary",
    "__version__",
    "assemble_flows",
    "build_packets",
    "decode",
    "encode_flows",
    "hookimpl",
    "iter_pcap",
    "read_pcap",
    "records_from_packets",
    "write_pcap",
    "write_records",
]
