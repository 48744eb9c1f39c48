"""What replay takes from a capture: the client side of each TCP and UDP flow, in time order.

Read with ``pytrafgen.read_pcap`` and ``pytrafgen.assemble_flows`` (architecture §1-2). Only
client-to-server TCP and UDP packets are kept: the server's side is what the live target
produces. Each flow remembers its IP version, so a scenario replays an IPv6 capture over IPv6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytrafgen.errors import ReplayError

TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(frozen=True)
class TracePacket:
    ts_ns: int
    flags: int
    sport: int
    dport: int
    l4_header: bytes  # the TCP (options included) or UDP header as captured
    payload: bytes
    proto: int = TCP

    @property
    def is_syn(self) -> bool:
        """A connection opening: SYN without ACK."""
        return self.proto == TCP and bool(self.flags & SYN) and not self.flags & ACK


@dataclass
class TraceFlow:
    client_port: int
    server_port: int
    start_ns: int
    end_ns: int
    packets: list[TracePacket] = field(default_factory=list)
    proto: int = TCP
    family: int = 4  # IP version of the captured flow

    def messages(self) -> list[tuple[int, bytes]]:
        """The client's payload segments (TCP) or datagrams (UDP) as (ns after the flow's start,
        bytes); a TCP segment retransmitted (same sequence number, same bytes) is sent once."""
        seen: set[tuple[int, bytes]] = set()
        out = []
        for pkt in self.packets:
            if not pkt.payload and pkt.proto == TCP:
                continue
            if pkt.proto != TCP:
                out.append((pkt.ts_ns - self.start_ns, pkt.payload))
                continue
            seq = int.from_bytes(pkt.l4_header[4:8], "big")
            if (seq, pkt.payload) in seen:
                continue
            seen.add((seq, pkt.payload))
            out.append((pkt.ts_ns - self.start_ns, pkt.payload))
        return out

    @property
    def client_closed(self) -> bool:
        """Whether the client ends the connection in view (a FIN or RST of its own); a flow the
        capture shows no end of (a generated flow stops at its last sampled packet) is still open."""
        return any(p.proto == TCP and p.flags & (FIN | RST) for p in self.packets)

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

    @property
    def family(self) -> int:
        """6 when most client packets are IPv6 (the scenario then replays over IPv6), else 4."""
        v6 = sum(len(f.packets) for f in self.flows if f.family == 6)
        return 6 if v6 * 2 > self.n_packets() else 4

    def of_proto(self, proto: int) -> Trace:
        """The flows of one transport protocol only."""
        return Trace(path=self.path, flows=[f for f in self.flows if f.proto == proto])


def load_trace(path: str | Path) -> Trace:
    """Read ``path`` and keep the client side of its TCP and UDP flows (IPv4 or IPv6)."""
    from pytrafgen import assemble_flows, read_pcap

    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path}: no such capture")
    table = read_pcap(path)
    flows = assemble_flows(table)
    flow_id = np.asarray(flows.flow_id)
    direction = np.asarray(flows.direction)
    proto = np.asarray(table.proto)
    keep = np.flatnonzero((np.asarray(table.status) == 0) & np.isin(proto, (TCP, UDP))
                          & (flow_id >= 0) & (direction == 0))
    keep = keep[np.argsort(np.asarray(table.ts_ns)[keep], kind="stable")]
    data = np.asarray(table.data)
    frame_off = np.asarray(table.frame_off)
    l4_off = np.asarray(table.l4_off)
    l4_len = np.asarray(table.l4_hdr_len)
    pay_off = np.asarray(table.payload_off)
    pay_len = np.asarray(table.payload_len)
    l3 = np.asarray(table.l3)
    by_flow: dict[int, TraceFlow] = {}
    for i in keep.tolist():
        fid = int(flow_id[i])
        if fid not in by_flow:
            by_flow[fid] = TraceFlow(client_port=int(flows.client_port[fid]), server_port=int(flows.server_port[fid]),
                                     start_ns=int(flows.start_ns[fid]), end_ns=int(flows.end_ns[fid]),
                                     proto=int(proto[i]), family=6 if int(l3[i]) == 6 else 4)
        base = int(frame_off[i])
        header = data[base + int(l4_off[i]): base + int(l4_off[i]) + int(l4_len[i])].tobytes()
        if len(header) < (20 if proto[i] == TCP else 8):
            continue  # a truncated transport header cannot be re-sent faithfully
        payload = data[base + int(pay_off[i]): base + int(pay_off[i]) + int(pay_len[i])].tobytes()
        by_flow[fid].packets.append(TracePacket(
            ts_ns=int(table.ts_ns[i]), flags=int(table.tcp_flags[i]), sport=int(table.sport[i]),
            dport=int(table.dport[i]), l4_header=header, payload=payload, proto=int(proto[i])))
    ordered = sorted(by_flow.values(), key=lambda f: f.start_ns)
    return Trace(path=path, flows=ordered)
