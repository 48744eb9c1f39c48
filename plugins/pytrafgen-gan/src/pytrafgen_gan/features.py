"""Flows as DoppelGANger inputs: per-flow attributes and a fixed-length per-packet series.

Attributes (generated; the class is the condition, not generated):
  * (IP version, protocol) — one-hot over the combinations seen in training,
  * server port — one-hot over the most frequent ports, the last slot meaning "another port"
    (decoded by drawing one of the class's other training ports),
  * size — log packet count scaled to [0, 1].

Per packet (``PACKET_FEATURES``, all in [0, 1]): direction, the nine TCP flag bits, log payload
length, log inter-arrival time, TTL, log window, DF bit, TOS, ICMP type and code, and the
DoppelGANger *generation flag* (1 while the flow goes on). Flows are cut to ``max_len`` packets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pytrafgen.generators.baseline import FlowSet

FLAG_BITS = 9
LOG_LEN_MAX = np.log1p(65535.0)
LOG_IAT_MAX = np.log1p(1e8)  # µs: 100 s
PACKET_FEATURES = ("direction", *(f"flag{i}" for i in range(FLAG_BITS)), "payload_len", "iat", "ttl", "window",
                   "df", "tos", "icmp_type", "icmp_code", "gen_flag")
N_FEATURES = len(PACKET_FEATURES)
GEN_FLAG = N_FEATURES - 1


@dataclass
class FlowEncoding:
    """The vocabularies that map flow attributes to and from one-hot slots."""

    combos: np.ndarray  # (K, 2) int64: (ip_version, proto)
    ports: np.ndarray  # (P,) int64: frequent server ports; slot P means "another port"
    other_ports: np.ndarray  # server ports outside ``ports``, with their class
    other_port_label: np.ndarray
    max_len: int

    @classmethod
    def fit(cls, flows: FlowSet, max_len: int, n_ports: int) -> FlowEncoding:
        combos = np.unique(np.stack([flows.ip_version, flows.proto], 1).astype(np.int64), axis=0)
        values, counts = np.unique(flows.server_port.astype(np.int64), return_counts=True)
        ports = np.sort(values[np.argsort(-counts, kind="stable")[:n_ports]])
        other = ~np.isin(flows.server_port, ports)
        return cls(combos, ports, flows.server_port[other].astype(np.int64), flows.label[other].astype(np.int64),
                   max_len)

    @property
    def attr_dim(self) -> int:
        return len(self.combos) + len(self.ports) + 2

    def arrays(self) -> dict[str, np.ndarray]:
        return {"enc.combos": self.combos, "enc.ports": self.ports, "enc.other_ports": self.other_ports,
                "enc.other_port_label": self.other_port_label}

    @classmethod
    def from_arrays(cls, tensors: Mapping[str, np.ndarray], max_len: int) -> FlowEncoding:
        return cls(tensors["enc.combos"], tensors["enc.ports"], tensors["enc.other_ports"],
                   tensors["enc.other_port_label"], max_len)

    def encode(self, flows: FlowSet) -> tuple[np.ndarray, np.ndarray]:
        """(attributes (F, A), features (F, max_len, N_FEATURES)) as float32."""
        n_flows, k, p = flows.n_flows, len(self.combos), len(self.ports)
        attrs = np.zeros((n_flows, self.attr_dim), np.float32)
        combo_key = flows.ip_version.astype(np.int64) * 256 + flows.proto
        attrs[np.arange(n_flows), np.searchsorted(self.combos[:, 0] * 256 + self.combos[:, 1], combo_key)] = 1
        port_slot = np.searchsorted(self.ports, flows.server_port.astype(np.int64))
        known = (port_slot < p) & (self.ports[np.minimum(port_slot, p - 1)] == flows.server_port)
        attrs[np.arange(n_flows), k + np.where(known, port_slot, p)] = 1
        length = np.minimum(flows.lengths, self.max_len)
        attrs[:, -1] = np.log(length) / np.log(self.max_len)

        pk = flows.packets
        pos = flows.position_in_flow()
        keep = pos < self.max_len
        cols: list[np.ndarray] = [pk["direction"].astype(np.float32)]
        cols += [((pk["tcp_flags"] >> i) & 1).astype(np.float32) for i in range(FLAG_BITS)]
        cols += [np.log1p(pk["payload_len"].astype(np.float64)) / LOG_LEN_MAX,
                 np.minimum(np.log1p(pk["iat_ns"] / 1e3) / LOG_IAT_MAX, 1.0),
                 pk["ttl"] / 255.0, np.log1p(pk["window"].astype(np.float64)) / LOG_LEN_MAX,
                 (pk["ip_flags"] >> 1) & 1, pk["tos"] / 255.0, pk["icmp_type"] / 255.0, pk["icmp_code"] / 255.0,
                 np.ones(len(pos))]
        feats = np.zeros((n_flows, self.max_len, N_FEATURES), np.float32)
        feats[pk["flow"][keep], pos[keep]] = np.stack(cols, 1)[keep]
        return attrs, feats

    def decode(self, labels: np.ndarray, attrs: np.ndarray, feats: np.ndarray,
               rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(per-flow columns, per-packet columns) for ``assemble_records``."""
        k, p = len(self.combos), len(self.ports)
        combo = self.combos[attrs[:, :k].argmax(1)]
        slot = attrs[:, k:k + p + 1].argmax(1)
        server_port = np.where(slot < p, self.ports[np.minimum(slot, p - 1)], 0)
        for i in np.flatnonzero(slot == p):
            pool = self.other_ports[self.other_port_label == labels[i]]
            pool = pool if len(pool) else self.other_ports
            server_port[i] = rng.choice(pool) if len(pool) else self.ports[0]
        # length: leading packets whose generation flag is on (at least one)
        on = feats[:, :, GEN_FLAG] > 0.5
        on[:, 0] = True
        length = np.cumprod(on, axis=1).sum(1)
        flow = np.repeat(np.arange(len(labels)), length)
        pos = np.arange(len(flow)) - np.repeat(np.cumsum(length) - length, length)
        f = feats[flow, pos].astype(np.float64)
        bits = f[:, 1:1 + FLAG_BITS] > 0.5
        packets = {
            "flow": flow,
            "direction": (f[:, 0] > 0.5).astype(np.uint8),
            "tcp_flags": (bits * (1 << np.arange(FLAG_BITS))).sum(1),
            "payload_len": np.rint(np.expm1(f[:, 10].clip(0, 1) * LOG_LEN_MAX)).astype(np.int64),
            "iat_ns": np.rint(np.expm1(f[:, 11].clip(0, 1) * LOG_IAT_MAX) * 1e3).astype(np.int64),
            "ttl": np.rint(f[:, 12].clip(0, 1) * 255),
            "window": np.rint(np.expm1(f[:, 13].clip(0, 1) * LOG_LEN_MAX)).clip(0, 65535),
            "ip_flags": (f[:, 14] > 0.5).astype(np.uint8) << 1,
            "tos": np.rint(f[:, 15].clip(0, 1) * 255),
            "icmp_type": np.rint(f[:, 16].clip(0, 1) * 255),
            "icmp_code": np.rint(f[:, 17].clip(0, 1) * 255),
        }
        flows = {"label": labels, "ip_version": combo[:, 0], "proto": combo[:, 1], "server_port": server_port}
        return flows, packets
