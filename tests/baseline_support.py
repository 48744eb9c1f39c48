"""Training data for the baseline-generator tests: a small dataset of real flows from the
shared captures, through the real reader, flow table and ``records_from_packets``, offered
through the ``TrafficDataset`` interface the generators use (``records(split)``, ``classes``,
``class_kinds``, ``path`` holding the learned ``address_plan.json``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytrafgen.address_plan import AddressPlan
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.generators.baseline_data import FlowSet
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import records_from_packets


@dataclass
class SmallDataset:
    train: FieldRecords
    classes: list[str]
    class_kinds: list[str]
    path: Path

    def records(self, split: str) -> FieldRecords:
        return self.train


def _subset(records: FieldRecords, max_flows: int, max_packets: int) -> FieldRecords:
    """The first ``max_flows`` flows, each cut to its first ``max_packets`` packets."""
    flow = records.packets["flow"].astype(np.int64)
    order = np.lexsort((records.packets["ts_ns"], flow))
    flow_sorted = flow[order]
    starts = np.searchsorted(flow_sorted, flow_sorted, side="left")
    pos = np.arange(len(order)) - starts
    keep = order[(flow_sorted < max_flows) & (pos < max_packets)]
    packets = {k: v[keep] for k, v in records.packets.items()}
    flows = {k: v[:max_flows] for k, v in records.flows.items()}
    raw = {k: v[keep] for k, v in records.raw_derived.items()}
    return FieldRecords(packets, flows, records.blob, records.classes, raw_derived=raw)


def _concat(parts: list[FieldRecords], classes: list[str]) -> FieldRecords:
    packets: dict[str, list[np.ndarray]] = {k: [] for k in parts[0].packets}
    flows: dict[str, list[np.ndarray]] = {k: [] for k in parts[0].flows}
    blob_at = flow_at = 0
    for r in parts:
        for k, v in r.packets.items():
            if k.endswith("_off"):
                v = v + np.uint64(blob_at)
            elif k == "flow":
                v = v + flow_at
            packets[k].append(v.astype(r.packets[k].dtype))
        for k, v in r.flows.items():
            flows[k].append(v)
        blob_at += len(r.blob)
        flow_at += r.n_flows
    raw = {k: np.concatenate([r.raw_derived[k] for r in parts]) for k in parts[0].raw_derived}
    return FieldRecords({k: np.concatenate(v) for k, v in packets.items()},
                        {k: np.concatenate(v) for k, v in flows.items()},
                        np.concatenate([r.blob for r in parts]), classes, raw_derived=raw)


def small_dataset(captures: Path, class_names: list[str], out_dir: Path, max_flows: int = 30,
                  max_packets: int = 40) -> SmallDataset:
    """Up to ``max_flows`` flows (first ``max_packets`` packets each) of each named class; the
    address plan learned from them is written to ``out_dir/address_plan.json``."""
    with (captures / "manifest.csv").open(newline="") as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    parts, plan = [], AddressPlan()
    for k, name in enumerate(class_names):
        table = read_pcap(captures / rows[name]["file"])
        flows = assemble_flows(table)
        labels = np.full(len(flows.proto), k, np.int16)
        parts.append(_subset(records_from_packets(table, flows, labels, class_names), max_flows, max_packets))
        plan.classes.update(AddressPlan.learn(table, flows, labels, class_names).classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.save(out_dir / "address_plan.json")
    return SmallDataset(_concat(parts, class_names), class_names, [rows[c]["label"] for c in class_names], out_dir)


def assert_syn_and_udp_floods_apart(records: FieldRecords) -> None:
    """Generated syn_flood flows (label 0) are TCP to port 80 opening with a SYN, udp_flood
    flows (label 1) UDP to port 40000, each for at least 80 % of the flows: what a model that
    learned the class condition makes and an unconditioned one mixes up."""
    fs = FlowSet.from_records(records)
    first = fs.offsets[:-1]
    syn, udp = fs.label == 0, fs.label == 1
    assert np.mean((fs.proto[syn] == 6) & (fs.server_port[syn] == 80)) >= 0.8
    assert np.mean(fs.packets["tcp_flags"][first[syn]] == 2) >= 0.8
    assert np.mean((fs.proto[udp] == 17) & (fs.server_port[udp] == 40000)) >= 0.8
