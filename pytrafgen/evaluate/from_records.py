"""EvalSets straight from FieldRecords (a generator's output or a dataset split), built the
way ``pytrafgen generate`` writes them: packets in time order, lengths and checksums repaired
(or not, for the raw set). Each assembled flow takes the class of the record flow its first
packet was built from. ``write_flow_labels`` writes that as the companion labels CSV
``<pcap>.flows.csv`` (flow_index,class,proto,client_port,server_port) that ``pytrafgen
evaluate`` reads next to a generated pcap."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError
from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables
from pytrafgen.records import FieldRecords


def build_in_time_order(records: FieldRecords, plan: Any, seed: int, repair: bool = True) -> tuple[Any, np.ndarray]:
    """(PacketTable, record packet per row) of ``records`` built in timestamp order."""
    from pytrafgen.build import build_frames

    order = np.argsort(records.packets["ts_ns"], kind="stable")
    built = build_frames(records, plan, seed, repair=repair, order=order)
    table = built.to_table()
    if len(table) != len(built):
        raise PytrafgenError(f"built {len(built)} frames but the reader returned {len(table)} rows")
    return table, np.asarray(built.packet, np.int64)


def flow_classes(records: FieldRecords, flows: Any, record_packet: np.ndarray) -> list[str | None]:
    """Per assembled flow: the class of the record flow that its first packet came from."""
    first = np.asarray(flows.first_packet, np.int64)
    record_flow = records.packets["flow"][record_packet[first]]
    labels = records.flows["label"][record_flow]
    return [records.classes[int(c)] for c in labels]


def evalset_from_records(records: FieldRecords, plan: Any, seed: int, name: str, repair: bool = True,
                         kinds: dict[str, str] | None = None) -> EvalSet:
    from pytrafgen import assemble_flows

    table, record_packet = build_in_time_order(records, plan, seed, repair)
    classes = flow_classes(records, assemble_flows(table), record_packet)
    return evalset_from_tables([(table, classes)], name, kinds, [f"<{name}: built from records>"])


def write_flow_labels(pcap: str | Path, records: FieldRecords, plan: Any, seed: int) -> Path:
    """Write ``<pcap>.flows.csv`` for a pcap written by ``write_records(pcap, records, plan,
    seed)`` (the build is deterministic for a seed, so it is rebuilt here to see its flows)."""
    from pytrafgen import assemble_flows

    table, record_packet = build_in_time_order(records, plan, seed)
    flows = assemble_flows(table)
    classes = flow_classes(records, flows, record_packet)
    path = Path(str(pcap) + ".flows.csv")
    with atomic_file(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["flow_index", "class", "proto", "client_port", "server_port"])
        for f, cls in enumerate(classes):
            writer.writerow([f, cls, int(flows.proto[f]), int(flows.client_port[f]), int(flows.server_port[f])])
    return path
