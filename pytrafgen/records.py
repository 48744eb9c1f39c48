"""The field-record table: the one exchange format between stages.

Every generator produces it (the AR model as tokens that the tokenizer decodes into it,
the baselines directly); ``pytrafgen.build`` turns it into packet bytes with lengths and
checksums repaired. So every generator gets the same builder, pcap writer and validators.

Layout: per-packet columns (length P) and per-flow columns (length F). Variable-length
bytes (IPv4 options, L4 options, payload) live in one ``blob`` buffer addressed by
(offset, length) pairs. Addresses are per flow and per *role* (client = the flow's
initiator, server = the responder); ``direction`` says which role sent a packet.
Sequence/acknowledgement numbers are relative to the sender's / the peer's initial
sequence number; the builder draws fresh initial numbers. Every column is listed with its
dtype and meaning in docs/architecture.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pytrafgen import _core

CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1

# column name → dtype, per packet and per flow, in a fixed order: the columns the C++ decoder
# writes and the builder reads (csrc/columns.hpp). docs/architecture.md §3 says what each holds.
PACKET_COLUMNS: dict[str, np.dtype] = {name: np.dtype(d) for name, d, _ in _core.RECORD_PACKET_COLUMNS}
FLOW_COLUMNS: dict[str, np.dtype] = {name: np.dtype(d) for name, d, _ in _core.RECORD_FLOW_COLUMNS}


@dataclass
class FieldRecords:
    """Per-packet protocol fields of a set of flows; see the module docstring."""

    packets: dict[str, np.ndarray]
    flows: dict[str, np.ndarray]
    blob: np.ndarray  # uint8
    classes: list[str]
    # Filled by an address plan at build time; (F, 16) uint8, IPv4 as IPv4-mapped IPv6.
    client_addr: np.ndarray | None = None
    server_addr: np.ndarray | None = None
    # Derived fields as a generator emitted them (before repair), only for generators that
    # emit them (e.g. the diffusion baseline's bit rows): name -> (P,) array.
    raw_derived: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_packets(self) -> int:
        return len(self.packets["flow"])

    @property
    def n_flows(self) -> int:
        return len(self.flows["label"])

    def validate(self) -> None:
        """Raise ValueError unless every column is present with its dtype and length."""
        for name, dtype in PACKET_COLUMNS.items():
            col = self.packets.get(name)
            if col is None:
                raise ValueError(f"field records: missing packet column {name!r}")
            if col.dtype != dtype or col.ndim != 1:
                raise ValueError(f"field records: packet column {name!r} must be 1-D {dtype}, got {col.dtype}")
        lengths = {len(self.packets[n]) for n in PACKET_COLUMNS}
        if len(lengths) != 1:
            raise ValueError(f"field records: packet columns differ in length: {sorted(lengths)}")
        for name, dtype in FLOW_COLUMNS.items():
            col = self.flows.get(name)
            if col is None:
                raise ValueError(f"field records: missing flow column {name!r}")
            if col.dtype != dtype or col.ndim != 1:
                raise ValueError(f"field records: flow column {name!r} must be 1-D {dtype}, got {col.dtype}")
        if len({len(self.flows[n]) for n in FLOW_COLUMNS}) != 1:
            raise ValueError("field records: flow columns differ in length")
        if self.blob.dtype != np.uint8 or self.blob.ndim != 1:
            raise ValueError("field records: blob must be 1-D uint8")
        n_flows = self.n_flows
        flow = self.packets["flow"]
        if len(flow) and (flow.min() < 0 or flow.max() >= n_flows):
            raise ValueError("field records: packet 'flow' index out of range")
        labels = self.flows["label"]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError("field records: flow 'label' out of range of classes")
        for off, length in (("ip_opt_off", "ip_opt_len"), ("l4_opt_off", "l4_opt_len"),
                            ("payload_off", "payload_stored")):
            ends = self.packets[off] + self.packets[length].astype(np.uint64)
            if len(ends) and int(ends.max()) > len(self.blob):
                raise ValueError(f"field records: {off}/{length} reach past the blob")
        if np.any(self.packets["payload_stored"] > self.packets["payload_len"]):
            raise ValueError("field records: payload_stored exceeds payload_len")

    @classmethod
    def empty(cls, classes: list[str]) -> FieldRecords:
        return cls(
            packets={n: np.zeros(0, d) for n, d in PACKET_COLUMNS.items()},
            flows={n: np.zeros(0, d) for n, d in FLOW_COLUMNS.items()},
            blob=np.zeros(0, np.uint8),
            classes=list(classes),
        )

    def take_flows(self, flows: np.ndarray | list[int]) -> FieldRecords:
        """The records of ``flows`` (flow indices; one named twice is taken twice), renumbered
        0..k-1 in the order given. Packets keep their order within each flow, and their original
        interleaving when ``flows`` is increasing. The blob is shared, so byte offsets stay
        valid; addresses and raw derived fields follow."""
        flows = np.asarray(flows, np.int64).reshape(-1)
        if len(flows) and (flows.min() < 0 or flows.max() >= self.n_flows):
            raise ValueError(f"field records: flow index out of range (0..{self.n_flows - 1})")
        packet_flow = self.packets["flow"].astype(np.int64)
        by_flow = np.argsort(packet_flow, kind="stable")
        counts = np.bincount(packet_flow, minlength=self.n_flows)
        starts = np.cumsum(counts) - counts
        taken = counts[flows]
        within = np.arange(int(taken.sum())) - np.repeat(np.cumsum(taken) - taken, taken)
        keep = by_flow[np.repeat(starts[flows], taken) + within]
        new_flow = np.repeat(np.arange(len(flows)), taken)
        if len(flows) > 1 and np.all(np.diff(flows) > 0):  # each flow once, in order: packets as they were
            again = np.argsort(keep, kind="stable")
            keep, new_flow = keep[again], new_flow[again]
        packets = {k: v[keep] for k, v in self.packets.items()}
        packets["flow"] = new_flow.astype(PACKET_COLUMNS["flow"])
        return FieldRecords(packets=packets, flows={k: v[flows] for k, v in self.flows.items()}, blob=self.blob,
                            classes=list(self.classes),
                            client_addr=None if self.client_addr is None else self.client_addr[flows],
                            server_addr=None if self.server_addr is None else self.server_addr[flows],
                            raw_derived={k: v[keep] for k, v in self.raw_derived.items()})

    @classmethod
    def concat(cls, parts: list[FieldRecords]) -> FieldRecords:
        """The flows of every part, in order, as one set: flow and blob offsets shifted, class
        labels mapped into the union of the parts' classes (first seen first). Addresses and
        raw derived fields are kept only when every part has them."""
        if not parts:
            raise ValueError("field records: concat needs at least one part")
        classes = list(dict.fromkeys(c for p in parts for c in p.classes))
        packets: dict[str, list[np.ndarray]] = {n: [] for n in PACKET_COLUMNS}
        flows: dict[str, list[np.ndarray]] = {n: [] for n in FLOW_COLUMNS}
        flow_base = blob_base = 0
        for p in parts:
            for n in PACKET_COLUMNS:
                col = p.packets[n]
                if n == "flow":
                    col = col + flow_base
                elif n in ("ip_opt_off", "l4_opt_off", "payload_off"):
                    col = col + np.uint64(blob_base)
                packets[n].append(col.astype(PACKET_COLUMNS[n]))
            relabel = np.array([classes.index(c) for c in p.classes], np.int64)
            for n in FLOW_COLUMNS:
                col = relabel[p.flows[n]] if n == "label" and len(p.flows[n]) else p.flows[n]
                flows[n].append(np.asarray(col).astype(FLOW_COLUMNS[n]))
            flow_base += p.n_flows
            blob_base += len(p.blob)

        def joined(name: str) -> np.ndarray | None:
            cols = [getattr(p, name) for p in parts]
            return None if any(c is None for c in cols) else np.concatenate(cols)

        raw_keys = set.intersection(*(set(p.raw_derived) for p in parts))
        return cls(packets={n: np.concatenate(v) for n, v in packets.items()},
                   flows={n: np.concatenate(v) for n, v in flows.items()},
                   blob=np.concatenate([p.blob for p in parts]).astype(np.uint8), classes=classes,
                   client_addr=joined("client_addr"), server_addr=joined("server_addr"),
                   raw_derived={k: np.concatenate([p.raw_derived[k] for p in parts]) for k in sorted(raw_keys)})

    def __repr__(self) -> str:
        return f"FieldRecords({self.n_flows} flows, {self.n_packets} packets, classes={self.classes})"


__all__ = [
    "CLIENT_TO_SERVER",
    "FLOW_COLUMNS",
    "PACKET_COLUMNS",
    "SERVER_TO_CLIENT",
    "FieldRecords",
]
