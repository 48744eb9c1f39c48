"""What replay takes from a capture: the client side of each TCP flow, in time order.

Read with ``pytrafgen.read_pcap`` and ``pytrafgen.assemble_flows`` (architecture §1-2). Only
client-to-server TCP packets are kept: the server's side is what the live target produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytrafgen.errors import ReplayError

TCP = 6
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(frozen=True)
class TracePacket:
    ts_ns: int
    flags: int
    sport: int
    dport: int
    tcp_header: bytes  # the TCP header as captured, options included
    payload: bytes

    @property
    def is_syn(self) -> bool:
        """A connection opening: SYN without ACK."""
        return bool(self.flags & SYN) and not self.flags & ACK


@dataclass
class TraceFlow:
    client_port: int
    server_port: int
    start_ns: int
    end_ns: int
    packets: list[TracePacket] = field(default_factory=list)

    def messages(self) -> list[tuple[int, bytes]]:
        """The client's payload segments as (ns after the flow's start, bytes); a segment
        retransmitted (same sequence number, same bytes) is sent once."""
        seen: set[tuple[int, bytes]] = set()
        out = []
        for pkt in self.packets:
            if not pkt.payload:
                continue
            seq = int.from_bytes(pkt.tcp_header[4:8], "big")
            if (seq, pkt.payload) in seen:
                continue
            seen.add((seq, pkt.payload))
            out.append((pkt.ts_ns - self.start_ns, pkt.payload))
        return out

    @property
    def last_client_ns(self) -> int:
        """When the client's last packet (often its FIN or RST) left, after the flow's start."""
        return (self.packets[-1].ts_ns - self.start_ns) if self.packets else 0


@dataclass
class Trace:
    path: Path
    flows: list[TraceFlow]

    def timeline(self) -> list[tuple[int, TracePacket]]:
        """Every client packet as (flow index, packet), in capture time order."""
        pkts = [(i, p) for i, f in enumerate(self.flows) for p in f.packets]
        pkts.sort(key=lambda item: item[1].ts_ns)
        return pkts

    def n_packets(self) -> int:
        return sum(len(f.packets) for f in self.flows)


def load_trace(path: str | Path) -> Trace:
    """Read ``path`` and keep the client side of its TCP flows (IPv4 or IPv6)."""
    from pytrafgen import assemble_flows, read_pcap

    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path}: no such capture")
    table = read_pcap(path)
    flows = assemble_flows(table)
    flow_id = np.asarray(flows.flow_id)
    direction = np.asarray(flows.direction)
    keep = np.flatnonzero((np.asarray(table.status) == 0) & (np.asarray(table.proto) == TCP)
                          & (flow_id >= 0) & (direction == 0))
    keep = keep[np.argsort(np.asarray(table.ts_ns)[keep], kind="stable")]
    data = np.asarray(table.data)
    frame_off = np.asarray(table.frame_off)
    l4_off = np.asarray(table.l4_off)
    l4_len = np.asarray(table.l4_hdr_len)
    pay_off = np.asarray(table.payload_off)
    pay_len = np.asarray(table.payload_len)
    by_flow: dict[int, TraceFlow] = {}
    for i in keep.tolist():
        fid = int(flow_id[i])
        if fid not in by_flow:
            by_flow[fid] = TraceFlow(client_port=int(flows.client_port[fid]), server_port=int(flows.server_port[fid]),
                                     start_ns=int(flows.start_ns[fid]), end_ns=int(flows.end_ns[fid]))
        base = int(frame_off[i])
        header = data[base + int(l4_off[i]): base + int(l4_off[i]) + int(l4_len[i])].tobytes()
        if len(header) < 20:
            continue  # a truncated TCP header cannot be re-sent faithfully
        payload = data[base + int(pay_off[i]): base + int(pay_off[i]) + int(pay_len[i])].tobytes()
        by_flow[fid].packets.append(TracePacket(
            ts_ns=int(table.ts_ns[i]), flags=int(table.tcp_flags[i]), sport=int(table.sport[i]),
            dport=int(table.dport[i]), tcp_header=header, payload=payload))
    ordered = sorted(by_flow.values(), key=lambda f: f.start_ns)
    return Trace(path=path, flows=ordered)
