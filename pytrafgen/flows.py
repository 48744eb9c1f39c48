"""Bidirectional 5-tuple flows over a PacketTable (C++ ``csrc/flows.hpp``).

See docs/architecture.md §2. A packet is in a flow when it was dissected (status 0) and is
IPv4/IPv6; the client is the sender of the flow's first packet (the receiver, if that packet
is a TCP SYN+ACK: the SYN was missed). A new flow starts on the same 5-tuple after
``idle_timeout_s`` of silence, after ``max_flow_packets`` packets, or on a TCP SYN without
ACK once the flow has seen FIN or RST (port reuse). A flow continuing a connection cut by
the length limit or the idle timeout keeps the roles of the flow before it (its client is not
whoever happens to send its first packet), and a TCP flow first seen mid-connection (no SYN)
takes the side holding the service port as its server (well-known port against a
non-well-known one, registered against ephemeral).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pytrafgen import _core
from pytrafgen.capture import PacketTable
from pytrafgen.errors import PytrafgenError

CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1

# column name → dtype, as the C++ assembler writes them (csrc/columns.hpp; docs/architecture.md
# §2): per packet, then per flow (client_addr/server_addr are (F, 16))
FLOW_PACKET_COLUMNS: dict[str, np.dtype] = {name: np.dtype(d) for name, d, _ in _core.FLOW_PACKET_COLUMNS}
FLOW_COLUMNS: dict[str, np.dtype] = {name: np.dtype(d) for name, d, _ in _core.FLOW_COLUMNS}


@dataclass(eq=False)
class FlowTable:
    """Per packet: ``flow_id`` (int64, −1 outside flows) and ``direction`` (uint8).
    Per flow (length F, in order of first packet): the remaining columns."""

    flow_id: np.ndarray
    direction: np.ndarray
    proto: np.ndarray
    l3: np.ndarray
    client_addr: np.ndarray
    server_addr: np.ndarray
    client_port: np.ndarray
    server_port: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    packets_c2s: np.ndarray
    packets_s2c: np.ndarray
    bytes_c2s: np.ndarray  # frame bytes on the wire (wirelen), client → server
    bytes_s2c: np.ndarray
    first_packet: np.ndarray  # row of the flow's first packet in the PacketTable

    def __len__(self) -> int:
        return len(self.proto)

    @property
    def duration_ns(self) -> np.ndarray:
        return self.end_ns - self.start_ns

    @property
    def packets(self) -> np.ndarray:
        return self.packets_c2s + self.packets_s2c

    @property
    def bytes(self) -> np.ndarray:
        return self.bytes_c2s + self.bytes_s2c

    def packet_rows(self, flow: int) -> np.ndarray:
        """Rows of the PacketTable that belong to ``flow``, in capture order."""
        return np.flatnonzero(self.flow_id == flow)

# the dataclass spells the columns out for type checkers; a stale _core would disagree
if [f.name for f in fields(FlowTable)] != [*FLOW_PACKET_COLUMNS, *FLOW_COLUMNS]:
    raise ImportError("pytrafgen._core's flow columns differ from flows.FlowTable; rebuild _core")


def assemble_flows(table: PacketTable, idle_timeout_s: float = 120.0, max_flow_packets: int = 0) -> FlowTable:
    """Group the packets of ``table`` into bidirectional flows (see the module docstring).

    ``idle_timeout_s <= 0`` (or infinity) disables the idle split; ``max_flow_packets == 0``
    disables the length split."""
    if max_flow_packets < 0:
        raise PytrafgenError(f"max_flow_packets must be >= 0, got {max_flow_packets}")
    idle_ns = 0 if not np.isfinite(idle_timeout_s) else round(idle_timeout_s * 1e9)
    cols = _core.assemble_flows(
        table.status, table.l3, table.proto, table.src, table.dst, table.sport, table.dport,
        table.tcp_flags, table.ts_ns, table.wirelen, idle_ns, int(max_flow_packets),
    )
    return FlowTable(**cols)
