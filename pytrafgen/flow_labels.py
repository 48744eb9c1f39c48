"""Per-flow labels of a built capture, taken from the capture's own flows, and pcapng output
with each packet's class and flow in a packet comment.

Labels must name the flows a reader finds in the written file, in the order it finds them
(each flow's first packet, i.e. arrival order), whatever order the records were in and however
the builder moved flows in time. So they are computed from the built frames themselves: the
frames are dissected and assembled into flows exactly as ``pytrafgen evaluate`` will read them,
and each assembled flow takes the class of the record flow its first frame was built from.

``<capture>.flows.csv`` columns: flow_index (the reader's flow order), class, proto,
client_port, server_port, record_flow (index of the record flow it came from). Read back with
``companion_labels(pcap)`` (where the CSV is), ``read_labels_csv`` and ``label_flows_by_key``
(``pytrafgen evaluate`` and ``pytrafgen detect`` both do).
"""

from __future__ import annotations

import csv
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.build import BuiltFrames
    from pytrafgen.records import FieldRecords

LABELS_SUFFIX = ".flows.csv"
LABEL_COLUMNS = ("flow_index", "class", "proto", "client_port", "server_port", "record_flow")
PCAPNG_TSRESOL_NS = 9  # if_tsresol: 10^-9 s


@dataclass
class FlowLabels:
    """Per assembled flow of a built capture (length F, reader order), and per frame."""

    classes: list[str]
    proto: np.ndarray
    client_port: np.ndarray
    server_port: np.ndarray
    record_flow: np.ndarray  # int64: the record flow each assembled flow was built from
    frame_flow: np.ndarray  # int64 per frame: its assembled flow (-1: in none)
    frame_class: list[str]  # per frame: the class of the record flow it was built from

    def __len__(self) -> int:
        return len(self.classes)

    def rows(self) -> list[tuple[int, str, int, int, int, int]]:
        return list(zip(range(len(self.classes)), self.classes, self.proto.tolist(), self.client_port.tolist(),
                        self.server_port.tolist(), self.record_flow.tolist(), strict=True))

    def comments(self) -> list[str]:
        """One packet comment per frame: its class and its flow (as in the labels file)."""
        return [f"class={c} flow={int(f)}" if f >= 0 else f"class={c}"
                for c, f in zip(self.frame_class, self.frame_flow.tolist(), strict=True)]


def label_built_flows(built: BuiltFrames, records: FieldRecords, pcap: bytes | None = None) -> FlowLabels:
    """Labels of the flows a reader assembles from ``built`` (frames in output order).
    ``pcap``: ``built.pcap_bytes()`` when the caller has it already (saves building it again)."""
    from pytrafgen.flows import assemble_flows

    table = built.to_table(pcap)
    if len(table) != len(built):
        raise PytrafgenError(f"labels: built {len(built)} frames but the reader returned {len(table)} rows")
    flows = assemble_flows(table)
    record_packet = np.asarray(built.packet, np.int64)
    frame_record_flow = records.packets["flow"][record_packet].astype(np.int64)
    frame_label = records.flows["label"][frame_record_flow]
    first = np.asarray(flows.first_packet, np.int64)
    record_flow = frame_record_flow[first]
    names = np.array(records.classes, dtype=object)  # indexed in bulk, not per frame in Python
    return FlowLabels(
        classes=names[records.flows["label"][record_flow]].tolist(),
        proto=np.asarray(flows.proto), client_port=np.asarray(flows.client_port),
        server_port=np.asarray(flows.server_port), record_flow=record_flow,
        frame_flow=np.asarray(flows.flow_id, np.int64), frame_class=names[frame_label].tolist())


def labels_path(capture: str | os.PathLike[str]) -> Path:
    return Path(str(capture) + LABELS_SUFFIX)


def write_labels_csv(path: str | Path, labels: FlowLabels) -> Path:
    """Write the labels CSV atomically; returns its path."""
    path = Path(path)
    with atomic_file(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABEL_COLUMNS)
        writer.writerows(labels.rows())
    return path


# --- reading a labels CSV back (pytrafgen evaluate, pytrafgen detect) ----------------------

COMPANION_SUFFIXES = (".labels.csv", ".flows.csv")


def companion_labels(pcap: Path) -> Path | None:
    """The per-flow labels CSV written next to a generated pcap (``<pcap>.labels.csv`` or
    ``<pcap>.flows.csv``, or with the ``.pcap`` suffix replaced), if there is one."""
    pcap = Path(pcap)
    for suffix in COMPANION_SUFFIXES:
        for candidate in (pcap.with_name(pcap.name + suffix), pcap.with_suffix(suffix)):
            if candidate.exists():
                return candidate
    return None


def read_labels_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a per-flow labels CSV (``<capture>.flows.csv``; a ``class`` column at least)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "class" not in rows[0]:
        raise PytrafgenError(f"{path}: a per-flow labels CSV needs a 'class' column")
    return rows


def label_flows_by_key(flows: Any, rows: list[dict[str, str]], path: Path) -> list[str | None]:
    """Match label rows to assembled flows: by ``flow_index`` (the order of each flow's first
    packet, as ``write_labels_csv`` writes it), else by (proto, client port, server port)."""
    n = len(np.asarray(flows.proto))
    out: list[str | None] = [None] * n
    if rows and "flow_index" in rows[0]:
        for r in rows:
            f = int(r["flow_index"])
            if not 0 <= f < n:
                raise PytrafgenError(f"{path}: flow index {f} out of range (the pcap has {n} flows)")
            out[f] = r["class"]
        return out
    if not rows or not {"client_port", "server_port"} <= set(rows[0]):
        raise PytrafgenError(f"{path}: needs a flow_index column or client_port,server_port columns")
    by_key: dict[tuple[int, int], list[int]] = {}
    for f in range(n):
        by_key.setdefault((int(flows.client_port[f]), int(flows.server_port[f])), []).append(f)
    for r in rows:
        for f in by_key.get((int(r["client_port"]), int(r["server_port"])), []):
            if out[f] is None and (not r.get("proto") or int(r["proto"]) == int(flows.proto[f])):
                out[f] = r["class"]
                break
    return out


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def pcapng_bytes(built: BuiltFrames, comments: Sequence[str] | None = None, snaplen: int = 262144) -> bytes:
    """A pcapng of ``built``'s frames in their order (nanosecond timestamps, one interface),
    each Enhanced Packet Block carrying ``comments[j]`` as its opt_comment when given."""
    n = len(built)
    if comments is not None and len(comments) != n:
        raise PytrafgenError(f"pcapng: {len(comments)} comments for {n} frames")
    if n and int(np.min(built.ts_ns)) < 0:
        raise PytrafgenError("negative timestamps cannot be written to pcapng (pass start_ns=)")
    end = _option(0, b"")
    parts = [
        _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + end),
        _block(1, struct.pack("<HHI", built.linktype, 0, snaplen) + _option(9, bytes([PCAPNG_TSRESOL_NS])) + end),
    ]
    data = built.data
    offs, lens, ts = built.frame_off.tolist(), built.frame_len.tolist(), built.ts_ns.tolist()
    for j in range(n):
        frame = data[offs[j] : offs[j] + lens[j]].tobytes()
        t = int(ts[j])
        opts = (_option(1, comments[j].encode()) + end) if comments is not None else b""
        body = struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, lens[j], lens[j]) + frame + bytes(-lens[j] % 4)
        parts.append(_block(6, body + opts))
    return b"".join(parts)


__all__ = ["COMPANION_SUFFIXES", "LABELS_SUFFIX", "LABEL_COLUMNS", "FlowLabels", "companion_labels", "label_built_flows",
           "label_flows_by_key", "labels_path", "pcapng_bytes", "read_labels_csv",
           "write_labels_csv"]
