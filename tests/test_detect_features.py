"""Detector flow features against an independent per-flow computation: scapy dissects each
frame, plain Python computes every statistic flow by flow."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

import pytrafgen
from pytrafgen.demo.default import corpus_dir
from pytrafgen.detect.context import CONTEXT_WINDOW_S
from pytrafgen.detect.data import FlowSettings
from pytrafgen.detect.features import FEATURE_NAMES, FIRST_PAYLOAD_BYTES, detect_features

scapy_all = pytest.importorskip("scapy.all")


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0}
    return {"min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "std": statistics.pstdev(values)}


def _reference(table: pytrafgen.PacketTable, flows: object, f: int) -> dict[str, float]:
    """Every feature of flow ``f``, from scapy's view of its frames."""
    rows = np.flatnonzero(flows.flow_id == f).tolist()
    pkts = []
    for r in rows:
        frame = scapy_all.Ether(table.frame(r))
        ip = frame.getlayer(scapy_all.IP) or frame.getlayer(scapy_all.IPv6)
        l4 = ip.payload
        tcp = frame.getlayer(scapy_all.TCP)
        udp = frame.getlayer(scapy_all.UDP)
        icmp = frame.getlayer(scapy_all.ICMP)
        if tcp is not None:
            payload = bytes(tcp.payload)
            header = len(bytes(ip)) - len(bytes(tcp.payload)) if ip.haslayer(scapy_all.IP) else 0
        elif udp is not None:
            payload = bytes(udp.payload)
            header = len(bytes(ip)) - len(payload)
        else:
            payload = bytes(l4.payload) if icmp is not None else b""
            header = len(bytes(ip)) - len(payload)
        ip_len = ip.len if ip.haslayer(scapy_all.IP) else 40 + ip.plen
        ip_payload = bytes(ip)[: ip_len]
        pkts.append({
            "ts": int(table.ts_ns[r]), "size": int(table.wirelen[r]), "dir": int(flows.direction[r]),
            "payload": payload[: max(0, ip_len - header)], "payload_len": max(0, ip_len - header),
            "header": header if len(ip_payload) else 0, "flags": int(tcp.flags) if tcp is not None else 0,
            "window": int(tcp.window) if tcp is not None else -1, "ttl": ip.ttl if hasattr(ip, "ttl") else ip.hlim,
            "icmp": int(icmp.type) if icmp is not None else -1,
        })
    ref: dict[str, float] = {}
    ref["proto"] = int(flows.proto[f])
    ref["server_port"] = int(flows.server_port[f])
    ref["client_port_privileged"] = float(int(flows.client_port[f]) < 1024)
    duration = (max(p["ts"] for p in pkts) - min(p["ts"] for p in pkts)) / 1e9
    ref["duration_s"] = duration
    sides = {"fwd": [p for p in pkts if p["dir"] == 0], "bwd": [p for p in pkts if p["dir"] == 1]}
    for side, ps in sides.items():
        ref[f"packets_{side}"] = len(ps)
        ref[f"bytes_{side}"] = sum(p["size"] for p in ps)
        ref[f"payload_bytes_{side}"] = sum(p["payload_len"] for p in ps)
        ref[f"data_packets_{side}"] = sum(p["payload_len"] > 0 for p in ps)
        ref[f"header_bytes_{side}"] = sum(p["header"] for p in ps)
    total = ref["bytes_fwd"] + ref["bytes_bwd"]
    ref["bytes_per_s"] = total / duration if duration > 0 else 0.0
    ref["packets_per_s"] = len(pkts) / duration if duration > 0 else 0.0
    ref["down_up_ratio"] = ref["packets_bwd"] / ref["packets_fwd"] if ref["packets_fwd"] else 0.0
    for side, ps in (("all", pkts), *sides.items()):
        for name, v in _stats([p["size"] for p in ps]).items():
            ref[f"pkt_len_{side}_{name}"] = v
        gaps = [max(b["ts"] - a["ts"], 0) / 1e9 for a, b in itertools.pairwise(ps)]
        for name, v in _stats(gaps).items():
            ref[f"iat_{side}_{name}"] = v
    for name, bit in (("fin", 1), ("syn", 2), ("rst", 4), ("psh", 8), ("ack", 16), ("urg", 32), ("ece", 64),
                      ("cwr", 128)):
        ref[f"{name}_count"] = sum(bool(p["flags"] & bit) for p in pkts)
        if name in ("psh", "syn", "rst"):
            for side, ps in sides.items():
                ref[f"{name}_{side}"] = sum(bool(p["flags"] & bit) for p in ps)
    for side, ps in sides.items():
        ref[f"init_win_{side}"] = ps[0]["window"] if ps else -1
        ref[f"ttl_{side}"] = statistics.fmean(p["ttl"] for p in ps) if ps else 0.0
        data = [p for p in ps if p["payload_len"] > 0]
        ref[f"first_payload_len_{side}"] = data[0]["payload_len"] if data else 0
        first = data[0]["payload"] if data else b""
        for k in range(FIRST_PAYLOAD_BYTES):
            ref[f"first_payload_{side}_b{k}"] = first[k] if k < len(first) else -1
    ref["first_icmp_type"] = pkts[0]["icmp"]
    ref.update(_context_reference(table, flows, f))
    return ref


def _context_reference(table: pytrafgen.PacketTable, flows: object, f: int) -> dict[str, float]:
    """Host context of flow ``f`` by its definition, flow by flow in plain Python."""
    ts = [int(t) for t in table.ts_ns]
    first = [int(p) for p in flows.first_packet]

    def clock(g: int) -> int:
        return max(ts[: first[g] + 1])

    client = bytes(flows.client_addr[f])
    window = [g for g in range(len(first)) if bytes(flows.client_addr[g]) == client and first[g] <= first[f]
              and clock(g) >= clock(f) - CONTEXT_WINDOW_S * 1e9]
    same_port = sum(int(flows.server_port[g]) == int(flows.server_port[f]) for g in window)
    around = [g for g in range(len(first)) if bytes(flows.client_addr[g]) == client
              and abs(clock(g) - clock(f)) <= CONTEXT_WINDOW_S * 1e9]
    around_port = sum(int(flows.server_port[g]) == int(flows.server_port[f]) for g in around)
    return {"ctx_client_flows": math.floor(math.log2(len(window))),
            "ctx_client_port_flows": math.floor(math.log2(same_port)),
            "ctx_client_flows_around": math.floor(math.log2(len(around))),
            "ctx_client_port_flows_around": math.floor(math.log2(around_port))}


@pytest.mark.parametrize("name", ["benign_http", "benign_mqtt", "udp_flood", "nmap_version_scan", "benign_coap"])
def test_features_match_a_per_flow_reference(name: str) -> None:
    table = pytrafgen.read_pcap(corpus_dir() / f"{name}.pcap")
    flows = FlowSettings(max_flow_packets=40).assemble(table)
    values = detect_features(table, flows)
    assert values.shape == (len(flows), len(FEATURE_NAMES))
    for f in np.random.default_rng(0).choice(len(flows), min(6, len(flows)), replace=False):
        ref = _reference(table, flows, int(f))
        assert set(ref) == set(FEATURE_NAMES)
        for j, feature in enumerate(FEATURE_NAMES):
            assert math.isclose(float(values[f, j]), float(ref[feature]), rel_tol=1e-5, abs_tol=1e-6), \
                (name, int(f), feature, float(values[f, j]), ref[feature])


def test_empty_and_one_way_flows() -> None:
    table = pytrafgen.read_pcap(corpus_dir() / "syn_flood.pcap")
    flows = pytrafgen.assemble_flows(table.take(np.arange(0)))
    assert detect_features(table.take(np.arange(0)), flows).shape == (0, len(FEATURE_NAMES))
    one = table.take(np.arange(1))
    values = detect_features(one, pytrafgen.assemble_flows(one))
    row = dict(zip(FEATURE_NAMES, values[0].tolist(), strict=True))
    assert row["packets_fwd"] == 1 and row["packets_bwd"] == 0
    assert row["iat_all_mean"] == 0 and row["init_win_bwd"] == -1 and row["first_payload_bwd_b0"] == -1
