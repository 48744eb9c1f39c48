"""Trim labeled captures into the small corpus that ships inside the package.

Whole flows are kept (in capture order, up to a packet budget per file) so that every class
keeps complete handshakes and teardowns; a flow longer than ``max_flow_packets`` keeps its
first packets (a file with few flows may give each of them more of its budget). The result is a folder of pcaps plus a manifest in the shared format
(file,class,label,packets,bytes,...), which ``pytrafgen tokenize --labels`` reads as is.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytrafgen.atomic import atomic_file, open_output_dir
from pytrafgen.capture import read_pcap, write_pcap
from pytrafgen.errors import PytrafgenError
from pytrafgen.flows import assemble_flows

MANIFEST_FIELDS = ("file", "class", "label", "packets", "bytes", "flows", "sha256", "source", "licence")


@dataclass(frozen=True)
class TrimSettings:
    max_packets_per_file: int = 1200
    max_bytes_per_file: int = 500_000
    max_flows_per_file: int = 150
    max_flow_packets: int = 200


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a shared-format manifest (file,class,label,...); paths relative to its folder."""
    if not path.is_file():
        raise PytrafgenError(f"manifest not found: {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for need in ("file", "class"):
        if rows and need not in rows[0]:
            raise PytrafgenError(f"{path}: manifest has no column {need!r}")
    return rows


def select_packets(path: Path, settings: TrimSettings) -> np.ndarray:
    """Rows of the capture to keep: whole flows in order of first packet, within the budget."""
    table = read_pcap(path)
    flows = assemble_flows(table)
    keep: list[np.ndarray] = []
    total = total_bytes = 0
    order = np.argsort(flows.first_packet, kind="stable")[: settings.max_flows_per_file]
    # A file of a few long flows (one MQTT publish flood connection) may spend its whole
    # budget on them; many short flows are each capped at max_flow_packets.
    per_flow = max(settings.max_flow_packets, settings.max_packets_per_file // max(len(order), 1))
    for flow in order:
        rows = flows.packet_rows(int(flow))[:per_flow]
        sizes = np.cumsum(table.caplen[rows], dtype=np.int64) + total_bytes
        rows = rows[sizes <= settings.max_bytes_per_file]
        if len(rows) == 0 or (total and total + len(rows) > settings.max_packets_per_file):
            break
        keep.append(rows)
        total += len(rows)
        total_bytes += int(table.caplen[rows].sum())
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def trim_corpus(manifest: Path, out_dir: Path, settings: TrimSettings | None = None) -> list[dict[str, str]]:
    """Write trimmed copies of every capture in ``manifest`` plus a manifest to ``out_dir``."""
    settings = settings or TrimSettings()
    source_dir = manifest.parent
    open_output_dir(out_dir)
    rows_out: list[dict[str, str]] = []
    for row in read_manifest(manifest):
        src = source_dir / row["file"]
        table = read_pcap(src)
        keep = select_packets(src, settings)
        trimmed = table.take(keep)
        dest = out_dir / Path(row["file"]).name
        write_pcap(dest, trimmed, nanosecond=False)
        rows_out.append({
            "file": dest.name,
            "class": row["class"],
            "label": row.get("label", ""),
            "packets": str(len(trimmed)),
            "bytes": str(int(trimmed.wirelen.sum())),
            "flows": str(len(assemble_flows(trimmed))),
            "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
            "source": f"{row['file']} ({row.get('source_tool', '').strip()})",
            "licence": row.get("licence", ""),
        })
    with atomic_file(out_dir / "manifest.csv", "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows_out)
    return rows_out
