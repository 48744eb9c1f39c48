"""Labeled flows for detectors: captures read and assembled file by file, each flow with its
class, its feature row and (kept for the transformer) its packets.

A real capture's flows all take the class the labels manifest (``file,class,label``, the
format of ``manifest.csv``) gives the file; a generated pcap's flows take theirs from its
companion ``<pcap>.flows.csv`` (``pytrafgen generate`` writes it) or, when there is none, from
the packet comments ``class=… flow=…`` of a pcapng (``generate --format pcapng``): each flow
takes the class in its first packet's comment. Flows are assembled with
the detector's ``idle_timeout_s`` and ``max_flow_packets``; a companion CSV numbers the flows
of the default assembly (idle timeout 120 s, no packet limit), so each segment takes the class of the flow its
first packet belonged to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.errors import PytrafgenError


@dataclass(frozen=True)
class FlowSettings:
    """How packets are grouped into flows; a detector keeps the settings it was trained with."""

    idle_timeout_s: float = 120.0
    max_flow_packets: int = 100  # longer flows are cut into segments (bounds streaming memory)

    def assemble(self, table: Any) -> Any:
        from pytrafgen import assemble_flows

        return assemble_flows(table, idle_timeout_s=self.idle_timeout_s, max_flow_packets=self.max_flow_packets)


@dataclass
class CaptureFlows:
    """One capture: its packets, its flows and each flow's class name (None: unlabeled)."""

    path: Path
    packets: Any  # PacketTable
    flows: Any  # FlowTable
    classes: list[str | None]


@dataclass
class LabeledFlows:
    """Captures with class names per flow, plus the benign/malicious kind of each class."""

    captures: list[CaptureFlows]
    class_kinds: dict[str, str] = field(default_factory=dict)
    settings: FlowSettings = field(default_factory=FlowSettings)

    def labels(self) -> list[str | None]:
        return [c for cap in self.captures for c in cap.classes]

    @property
    def n_flows(self) -> int:
        return sum(len(cap.classes) for cap in self.captures)


def read_capture(path: Path, settings: FlowSettings) -> tuple[Any, Any]:
    """PacketTable and FlowTable of one capture; a capture without IP flows is an error."""
    from pytrafgen import read_pcap

    table = read_pcap(path)
    flows = settings.assemble(table)
    if len(flows) == 0:
        raise PytrafgenError(f"{path}: no IP traffic (no flows in {len(table)} packets)")
    return table, flows


def _classes_from_companion(table: Any, flows: Any, companion: Path) -> list[str | None]:
    """Class per flow of ``flows`` from a companion labels CSV. Rows are matched by
    ``flow_index``; when the CSV also names each flow's proto and ports and those disagree
    with the flow at that index (a labels file numbered in another order than the pcap's
    flows), rows are matched by (proto, client port, server port) instead."""
    from pytrafgen import assemble_flows
    from pytrafgen.flow_labels import label_flows_by_key, read_labels_csv

    whole = assemble_flows(table)  # the assembly `pytrafgen generate` numbered the flows by
    try:
        rows = read_labels_csv(companion)
        if rows and {"flow_index", "proto", "client_port", "server_port"} <= set(rows[0]):
            key = np.stack([np.asarray(whole.proto, np.int64), np.asarray(whole.client_port, np.int64),
                            np.asarray(whole.server_port, np.int64)], axis=1)
            index = np.array([int(r["flow_index"]) for r in rows], np.int64)
            given = np.array([[int(r["proto"]), int(r["client_port"]), int(r["server_port"])] for r in rows])
            inside = (index >= 0) & (index < len(key))
            if not inside.all() or not (key[index[inside]] == given[inside]).all():
                rows = [{k: v for k, v in r.items() if k != "flow_index"} for r in rows]
        by_flow = label_flows_by_key(whole, rows, companion)
    except (KeyError, ValueError, TypeError) as exc:
        raise PytrafgenError(f"{companion}: malformed flow labels ({type(exc).__name__}: {exc})") from None
    if all(c is None for c in by_flow):
        raise PytrafgenError(f"{companion}: no row matches a flow of the pcap")
    names = np.array([c if c is not None else "" for c in by_flow] + [""], dtype=object)
    packet_class = names[np.asarray(whole.flow_id)]  # flow_id −1 picks the trailing ""
    return [c or None for c in packet_class[np.asarray(flows.first_packet, np.int64)]]


def _classes_from_comments(path: Path, flows: Any) -> list[str | None] | None:
    """Class per flow from pcapng packet comments (``class=NAME ...`` on the flow's first
    packet); None when the capture has no packet comments at all."""
    from pytrafgen.capture import read_packet_comments

    comments = read_packet_comments(path)
    if not comments:
        return None
    classes: list[str | None] = []
    for row in np.asarray(flows.first_packet, np.int64).tolist():
        fields = dict(part.split("=", 1) for part in comments.get(row, "").split() if "=" in part)
        classes.append(fields.get("class") or None)
    if all(c is None for c in classes):
        raise PytrafgenError(f"{path}: packet comments name no class (expected 'class=NAME flow=N')")
    return classes


def load_labeled(paths: Sequence[Path], manifest: Mapping[str, tuple[str, str]] | None,
                 settings: FlowSettings, generated: bool = False) -> LabeledFlows:
    """Read ``paths``; a file's class comes from ``manifest`` (by file name or path), else
    (generated pcaps) from its companion ``<pcap>.flows.csv``, else from its pcapng packet
    comments. A real capture that the manifest does not list is an error; so is a generated
    pcap with neither a companion file nor class comments."""
    from pytrafgen.flow_labels import companion_labels

    captures: list[CaptureFlows] = []
    kinds: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        table, flows = read_capture(path, settings)
        entry = (manifest.get(path.name) or manifest.get(str(path))) if manifest else None
        if entry is not None:
            classes: list[str | None] = [entry[0]] * len(flows)
            if entry[1]:
                kinds[entry[0]] = entry[1]
        elif generated and (companion := companion_labels(path)) is not None:
            classes = _classes_from_companion(table, flows, companion)
        elif generated and (from_comments := _classes_from_comments(path, flows)) is not None:
            classes = from_comments
        elif generated:
            raise PytrafgenError(f"{path}: no flow labels (write {path}.flows.csv, as `pytrafgen generate` does, "
                                 "or packet comments 'class=NAME' in a pcapng, as `generate --format pcapng` does)")
        else:
            raise PytrafgenError(f"{path}: not listed in the labels manifest")
        captures.append(CaptureFlows(path, table, flows, classes))
    return LabeledFlows(captures, kinds, settings)


__all__ = ["CaptureFlows", "FlowSettings", "LabeledFlows", "load_labeled", "read_capture"]
