"""What a compliance rule sees: the packets, their flows, and reassembled application streams.

A ``Rule.check(ctx)`` gets a :class:`RuleContext` and returns ``(applicable, violating)`` index
arrays into ``ctx.packets`` (packet-scope rules) or ``ctx.flows`` (flow-scope rules).

Packet columns are read as attributes of a ``PacketTable`` (docs/architecture.md §1), flow
columns as attributes of a ``FlowTable`` (§2). ``ctx.col(name)`` is a shortcut for a packet
column. Per-flow packet lists are precomputed once (``flow_packets(f)``, in capture order),
so flow rules never sort.

``ctx.streams("http")`` gives, for every flow the protocol recognises, both directions'
in-order reassembled payload bytes and the messages that protocol's ``ProtocolSpec.parse``
finds in them. TCP reassembly orders segments by sequence number relative to the first
segment of that direction and drops retransmitted bytes; a sequence gap ends the stream
there (``truncated`` says so), because what follows a gap may start mid-message. A TCP stream
whose side sent no SYN in the flow may begin mid-message (``starts_mid``), and one of a flow
without FIN or RST may continue past its last packet (``open_end``): a flow cut from a longer
connection (``--max-flow-packets``) or a capture started or stopped mid-connection. Rules judge
only what such a stream shows. UDP streams are the datagrams concatenated in capture order, and
``ProtocolSpec.parse`` gets one datagram at a time (its messages' offsets counted in the stream).
Results are cached per protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrafgen.protocol_spec import ProtocolSpec

PROTO_TCP = 6
PROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST = 1, 2, 4
TRANSPORT_NUMBERS = {"tcp": PROTO_TCP, "udp": PROTO_UDP}


@dataclass
class DirectionStream:
    """One direction of one flow, reassembled."""

    data: bytes
    packets: np.ndarray  # int64: packet indices whose payload contributed, in stream order
    starts: np.ndarray  # int64: byte offset in ``data`` where each of ``packets`` begins
    truncated: bool  # a sequence gap (lost/uncaptured segment) cut the stream short
    messages: list[dict[str, Any]] = field(default_factory=list)
    # TCP: the flow holds no SYN of this side, so the stream may begin mid-message (a flow cut
    # from a longer connection, a capture started mid-connection)
    starts_mid: bool = False
    # TCP: the flow holds no FIN or RST, so the stream may continue past its end (a flow cut
    # at N packets, a capture stopped mid-connection)
    open_end: bool = False

    def packet_at(self, offset: int) -> int:
        """The packet that carried stream byte ``offset`` (-1 if the stream is empty)."""
        if len(self.packets) == 0:
            return -1
        i = int(np.searchsorted(self.starts, offset, side="right")) - 1
        return int(self.packets[max(i, 0)])


def _empty_stream() -> DirectionStream:
    return DirectionStream(b"", np.zeros(0, np.int64), np.zeros(0, np.int64), False)


@dataclass
class FlowStreams:
    """Both directions of one flow: ``c2s`` (client → server) and ``s2c``."""

    flow: int
    c2s: DirectionStream
    s2c: DirectionStream

    def direction(self, d: int) -> DirectionStream:
        return self.c2s if d == 0 else self.s2c


def _parse_datagrams(spec: ProtocolSpec, stream: DirectionStream, direction: int) -> list[dict[str, Any]]:
    """A UDP stream's messages: each datagram parsed on its own (a datagram is a message
    boundary), offsets counted in the stream."""
    out: list[dict[str, Any]] = []
    ends = [*stream.starts[1:].tolist(), len(stream.data)]
    for start, end in zip(stream.starts.tolist(), ends, strict=True):
        for message in spec.parse(stream.data[start:end], direction):
            out.append({**message, "offset": start + int(message.get("offset", 0))})
    return out


class RuleContext:
    """Packets + flows + per-packet ``flow_id``/``direction`` as a rule sees them.

    ``stage`` is ``"final"`` for packets as built (derived fields repaired) or ``"raw"`` for
    packets written as generated; rules about builder-derived fields may read it.
    ``protocols`` maps protocol names to their specs (the caller resolves them, e.g. from the
    plugin registry, and hands them down).
    """

    def __init__(
        self,
        packets: Any,
        flows: Any,
        flow_id: np.ndarray,
        direction: np.ndarray,
        protocols: Mapping[str, ProtocolSpec],
        stage: str = "final",
    ) -> None:
        self.packets = packets
        self.flows = flows
        self.flow_id = np.asarray(flow_id, dtype=np.int64)
        self.direction = np.asarray(direction, dtype=np.uint8)
        self.stage = stage
        self.protocols = dict(protocols)
        self.n_packets = len(self.flow_id)
        self.n_flows = len(np.asarray(flows.proto))
        # Packets grouped by flow in capture order: a stable sort keeps the original order.
        in_flow = np.flatnonzero(self.flow_id >= 0)
        order = in_flow[np.argsort(self.flow_id[in_flow], kind="stable")]
        counts = np.bincount(self.flow_id[in_flow], minlength=self.n_flows)[: self.n_flows]
        self.flow_order = order.astype(np.int64)
        self.flow_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # Position of each packet within its flow (0 = first packet); -1 outside flows.
        self.index_in_flow = np.full(self.n_packets, -1, np.int64)
        if len(order):
            starts = np.repeat(self.flow_offsets[:-1], counts)
            self.index_in_flow[order] = np.arange(len(order)) - starts
        self._streams: dict[str, list[FlowStreams]] = {}

    # -- column access ------------------------------------------------------------------
    def col(self, name: str) -> np.ndarray:
        """A packet column by name (see docs/architecture.md §1)."""
        return np.asarray(getattr(self.packets, name))

    def flow_col(self, name: str) -> np.ndarray:
        """A flow column by name (see docs/architecture.md §2)."""
        return np.asarray(getattr(self.flows, name))

    def flow_packets(self, f: int) -> np.ndarray:
        """Packet indices of flow ``f`` in capture order."""
        return self.flow_order[self.flow_offsets[f] : self.flow_offsets[f + 1]]

    def packet_flow_proto(self) -> np.ndarray:
        """Per packet: the IP protocol number of its flow (0 outside flows)."""
        proto = self.flow_col("proto").astype(np.int64)
        out = np.zeros(self.n_packets, np.int64)
        inside = self.flow_id >= 0
        out[inside] = proto[self.flow_id[inside]]
        return out

    def payload(self, i: int) -> bytes:
        """Captured L4 payload bytes of packet ``i``."""
        start = int(self.col("frame_off")[i]) + int(self.col("payload_off")[i])
        return bytes(self.col("data")[start : start + int(self.col("payload_len")[i])])

    def frame(self, i: int) -> bytes:
        start = int(self.col("frame_off")[i])
        return bytes(self.col("data")[start : start + int(self.col("caplen")[i])])

    # -- application streams ------------------------------------------------------------
    def streams(self, protocol_name: str) -> list[FlowStreams]:
        """Reassembled, parsed streams of every flow that ``protocol_name`` recognises."""
        if protocol_name not in self._streams:
            spec = self.protocols.get(protocol_name)
            self._streams[protocol_name] = [] if spec is None else self._build_streams(spec)
        return self._streams[protocol_name]

    def _first_payload_packet(self, direction: int) -> np.ndarray:
        """Per flow, the first packet (capture order) of ``direction`` carrying payload; -1 if none."""
        cand = np.flatnonzero((self.flow_id >= 0) & (self.direction == direction) & (self.col("payload_len") > 0))
        out = np.full(self.n_flows, -1, np.int64)
        flows, first = np.unique(self.flow_id[cand], return_index=True)
        out[flows] = cand[first]
        return out

    def _build_streams(self, spec: ProtocolSpec) -> list[FlowStreams]:
        transport = TRANSPORT_NUMBERS.get(spec.transport)
        proto = self.flow_col("proto")
        server_port = self.flow_col("server_port")
        first_c2s, first_s2c = self._first_payload_packet(0), self._first_payload_packet(1)
        # Recognition looks at the first payload of each side; a flow without payload can only
        # be recognised by its port, so that verdict is cached per port.
        by_port: dict[int, bool] = {}
        out: list[FlowStreams] = []
        for f in range(self.n_flows):
            if transport is not None and int(proto[f]) != transport:
                continue
            port = int(server_port[f])
            if first_c2s[f] < 0 and first_s2c[f] < 0:
                if port not in by_port:
                    by_port[port] = spec.recognise(port, b"", b"")
                if not by_port[port]:
                    continue
            else:
                head_c = self.payload(int(first_c2s[f]))[:512] if first_c2s[f] >= 0 else b""
                head_s = self.payload(int(first_s2c[f]))[:512] if first_s2c[f] >= 0 else b""
                if not spec.recognise(port, head_c, head_s):
                    continue
            if first_c2s[f] < 0 and first_s2c[f] < 0:
                out.append(FlowStreams(f, _empty_stream(), _empty_stream()))
                continue
            pkts = self.flow_packets(f)
            dirs = self.direction[pkts]
            tcp = int(proto[f]) == PROTO_TCP
            c2s = self._reassemble(pkts[dirs == 0], tcp)
            s2c = self._reassemble(pkts[dirs == 1], tcp)
            if tcp:
                flags = self.col("tcp_flags")[pkts].astype(np.int64)
                closed = bool(np.any(flags & (TCP_FIN | TCP_RST)))
                for d, stream in ((0, c2s), (1, s2c)):
                    stream.starts_mid = not bool(np.any(((flags & TCP_SYN) != 0) & (dirs == d)))
                    stream.open_end = not closed
            for d, stream in ((0, c2s), (1, s2c)):
                stream.messages = (spec.parse(stream.data, d) if tcp else _parse_datagrams(spec, stream, d)
                                   ) if stream.data else []
            out.append(FlowStreams(f, c2s, s2c))
        return out

    def _reassemble(self, pkts: np.ndarray, tcp: bool) -> DirectionStream:
        lengths = self.col("payload_len")[pkts].astype(np.int64)
        pkts = pkts[lengths > 0]
        if len(pkts) == 0:
            return _empty_stream()
        if not tcp:
            lens = self.col("payload_len")[pkts].astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
            data = b"".join(self.payload(int(i)) for i in pkts)
            return DirectionStream(data, pkts.astype(np.int64), offsets, False)
        # Relative sequence numbers (mod 2^32) from the first data segment of this direction;
        # segments more than 2^31 "before" it are earlier data that arrived late.
        seq = self.col("seq")[pkts].astype(np.int64)
        rel = (seq - seq[0]) % (1 << 32)
        rel = np.where(rel >= (1 << 31), rel - (1 << 32), rel)
        order = np.argsort(rel, kind="stable")
        base = int(rel[order[0]])
        chunks: list[bytes] = []
        used: list[int] = []
        starts: list[int] = []
        end = 0  # stream bytes assembled so far
        truncated = False
        for k in order:
            pos = int(rel[k]) - base
            payload = self.payload(int(pkts[k]))
            if pos > end:
                truncated = True
                break
            skip = end - pos
            if skip >= len(payload):
                continue  # a retransmission of bytes we already have
            used.append(int(pkts[k]))
            starts.append(end)
            chunks.append(payload[skip:])
            end += len(payload) - skip
        return DirectionStream(b"".join(chunks), np.asarray(used, np.int64), np.asarray(starts, np.int64),
                               truncated)


__all__ = ["DirectionStream", "FlowStreams", "RuleContext"]
