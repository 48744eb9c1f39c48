"""Flow assembly: hand-built flows, and an independent Python assembler over the shared captures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ALL_SHARED, shared_ids
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

import pytrafgen
from pytrafgen.capture import PacketTable
from pytrafgen.errors import PytrafgenError
from pytrafgen.flows import FlowTable

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
S = 1_000_000_000


def eth(p: Packet) -> bytes:
    return bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02") / p)


def table_of(pkts: list[Packet], ts_s: list[float]) -> PacketTable:
    return PacketTable.from_frames([eth(p) for p in pkts], ts_ns=[round(t * S) for t in ts_s])


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, data: bytes = b"") -> Packet:
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / data


def test_tcp_conversation_directions_and_counts() -> None:
    pkts = [tcp(A, B, 1000, 80, "S"), tcp(B, A, 80, 1000, "SA"), tcp(A, B, 1000, 80, "A"),
            tcp(A, B, 1000, 80, "PA", b"GET /"), tcp(B, A, 80, 1000, "PA", b"200 OK!!"),
            Ether(src="00:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(),
            tcp(C, B, 2000, 80, "S")]
    frames = [eth(p) if not isinstance(p, Ether) else bytes(p) for p in pkts]
    table = PacketTable.from_frames(frames, ts_ns=[i * S for i in range(len(frames))])
    flows = pytrafgen.assemble_flows(table)
    assert flows.flow_id.tolist() == [0, 0, 0, 0, 0, -1, 1]
    assert flows.direction.tolist() == [0, 1, 0, 0, 1, 0, 0]
    assert len(flows) == 2
    assert bytes(flows.client_addr[0])[12:] == bytes([10, 0, 0, 1])
    assert bytes(flows.server_addr[0])[12:] == bytes([10, 0, 0, 2])
    assert (flows.client_port[0], flows.server_port[0], flows.proto[0], flows.l3[0]) == (1000, 80, 6, 4)
    assert (flows.packets_c2s[0], flows.packets_s2c[0]) == (3, 2)
    wire = table.wirelen.astype(np.uint64)
    assert flows.bytes_c2s[0] == wire[[0, 2, 3]].sum() and flows.bytes_s2c[0] == wire[[1, 4]].sum()
    assert (flows.start_ns[0], flows.end_ns[0], flows.duration_ns[0]) == (0, 4 * S, 4 * S)
    assert flows.first_packet.tolist() == [0, 6]
    assert flows.packet_rows(0).tolist() == [0, 1, 2, 3, 4]


def test_idle_timeout_splits_flows() -> None:
    pkts = [IP(src=A, dst=B) / UDP(sport=5, dport=53)] * 3 + [IP(src=B, dst=A) / UDP(sport=53, dport=5)]
    table = table_of(pkts, [0, 100, 300, 301])
    assert pytrafgen.assemble_flows(table, idle_timeout_s=120).flow_id.tolist() == [0, 0, 1, 1]
    assert pytrafgen.assemble_flows(table, idle_timeout_s=100).flow_id.tolist() == [0, 0, 1, 1]
    assert pytrafgen.assemble_flows(table, idle_timeout_s=99.9).flow_id.tolist() == [0, 1, 2, 2]
    assert pytrafgen.assemble_flows(table, idle_timeout_s=250).flow_id.tolist() == [0, 0, 0, 0]
    for never in (0, float("inf")):
        assert pytrafgen.assemble_flows(table, idle_timeout_s=never).flow_id.tolist() == [0, 0, 0, 0]
    split = pytrafgen.assemble_flows(table)
    assert split.direction.tolist() == [0, 0, 0, 1]
    assert split.start_ns.tolist() == [0, 300 * S] and split.end_ns.tolist() == [100 * S, 301 * S]


def test_max_flow_packets_splits_flows() -> None:
    table = table_of([IP(src=A, dst=B) / UDP(sport=5, dport=6)] * 5, [0, 1, 2, 3, 4])
    flows = pytrafgen.assemble_flows(table, max_flow_packets=2)
    assert flows.flow_id.tolist() == [0, 0, 1, 1, 2]
    assert flows.packets_c2s.tolist() == [2, 2, 1]
    with pytest.raises(PytrafgenError):
        pytrafgen.assemble_flows(table, max_flow_packets=-1)


def test_syn_ack_first_and_port_reuse() -> None:
    pkts = [tcp(B, A, 80, 1000, "SA"), tcp(A, B, 1000, 80, "A"), tcp(A, B, 1000, 80, "R"),
            tcp(A, B, 1000, 80, "S"), tcp(A, B, 1000, 80, "S"), tcp(B, A, 80, 1000, "SA")]
    flows = pytrafgen.assemble_flows(table_of(pkts, [0, 1, 2, 3, 4, 5]))
    # the SYN was missed: the SYN+ACK's receiver is the client
    assert flows.flow_id.tolist() == [0, 0, 0, 1, 1, 1]
    assert flows.direction.tolist() == [1, 0, 0, 0, 0, 1]
    assert flows.client_port.tolist() == [1000, 1000] and flows.server_port.tolist() == [80, 80]


def test_icmp_and_ipv6_keys() -> None:
    pkts = [IP(src=A, dst=B) / ICMP(type=8), IP(src=B, dst=A) / ICMP(type=0),
            IPv6(src="::1", dst="::2") / UDP(sport=1, dport=2), IPv6(src="::2", dst="::1") / UDP(sport=2, dport=1),
            IP(src=A, dst=B) / UDP(sport=1, dport=2)]
    flows = pytrafgen.assemble_flows(table_of(pkts, [0, 1, 2, 3, 4]))
    assert flows.flow_id.tolist() == [0, 0, 1, 1, 2]
    assert flows.direction.tolist() == [0, 1, 0, 1, 0]
    assert flows.l3.tolist() == [4, 6, 4] and flows.proto.tolist() == [1, 17, 17]


def reference_flows(t: PacketTable, idle_ns: int) -> dict[str, list]:
    """Plain-Python assembly by the rules of docs/architecture.md §2."""
    active: dict[tuple, int] = {}
    flows: list[dict] = []
    fid_of, dir_of = [-1] * len(t), [0] * len(t)
    for i in range(len(t)):
        if t.status[i] != 0 or t.l3[i] == 0:
            continue
        src, dst = bytes(t.src[i]), bytes(t.dst[i])
        sp, dp, proto, ts = int(t.sport[i]), int(t.dport[i]), int(t.proto[i]), int(t.ts_ns[i])
        flags = int(t.tcp_flags[i]) if proto == 6 else 0
        key = (int(t.l3[i]), proto, *sorted([(src, sp), (dst, dp)]))
        f = active.get(key)
        if f is not None:
            st = flows[f]
            if (idle_ns > 0 and ts - st["last"] > idle_ns) or (st["closed"] and flags & 0x12 == 0x02):
                f = None
        if f is None:
            before = active.get(key)
            if flags & 0x02:  # a SYN's sender is the client, a SYN+ACK's receiver
                reverse = bool(flags & 0x10)
            elif before is not None:  # a later chunk of the same connection keeps its roles
                reverse = (src, sp) != flows[before]["client"]
            else:  # TCP first seen mid-connection: the service port's side is the server
                reverse = proto == 6 and ((sp < 1024 <= dp) or (sp < 32768 <= dp))
            client = (dst, dp) if reverse else (src, sp)
            f = active[key] = len(flows)
            flows.append({"client": client, "last": ts, "closed": False, "start": ts, "end": ts, "first": i,
                          "c2s": 0, "s2c": 0, "bc2s": 0, "bs2c": 0})
        st = flows[f]
        c2s = (src, sp) == st["client"]
        fid_of[i], dir_of[i] = f, 0 if c2s else 1
        st["c2s" if c2s else "s2c"] += 1
        st["bc2s" if c2s else "bs2c"] += int(t.wirelen[i])
        st["last"], st["end"] = max(st["last"], ts), max(st["end"], ts)
        st["closed"] |= bool(flags & 0x05)
    return {"flow_id": fid_of, "direction": dir_of, "start_ns": [f["start"] for f in flows],
            "end_ns": [f["end"] for f in flows], "first_packet": [f["first"] for f in flows],
            "packets_c2s": [f["c2s"] for f in flows], "packets_s2c": [f["s2c"] for f in flows],
            "bytes_c2s": [f["bc2s"] for f in flows], "bytes_s2c": [f["bs2c"] for f in flows],
            "client_port": [f["client"][1] for f in flows]}


@pytest.mark.parametrize("path", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_flows_match_reference_assembler(path: Path) -> None:
    table = pytrafgen.read_pcap(path, max_packets=5000)
    flows: FlowTable = pytrafgen.assemble_flows(table, idle_timeout_s=5.0)
    expected = reference_flows(table, 5 * S)
    for name, values in expected.items():
        assert getattr(flows, name).tolist() == values, name
