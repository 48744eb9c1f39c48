"""Flows of a capture larger than memory, emitted as they end.

The capture is read in chunks (``iter_pcap``); the packets of flows still open are carried
into the next chunk and assembled again with it. A flow is finished, and emitted, once the
newest timestamp seen is more than the idle timeout past its last packet, or once it holds
``max_flow_packets`` packets (its key's next packet starts a new flow either way), or at the
end of the capture. Memory is bounded by the chunk plus the packets of the flows active within
the last idle timeout, each at most ``max_flow_packets`` long.

The flows are those ``assemble_flows`` finds on the whole capture read at once, as long as
timestamps do not go backwards by more than the idle timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.detect.data import FlowSettings

DEFAULT_CHUNK_PACKETS = 65_536


@dataclass
class FlowBatch:
    """A chunk's packets with its flows; ``done`` marks the flows finished in this batch and
    ``first_row`` is each flow's first packet as a row number of the whole capture."""

    packets: Any  # PacketTable
    flows: Any  # FlowTable over ``packets``
    done: np.ndarray  # bool per flow
    first_row: np.ndarray  # int64 per flow
    skipped: dict[str, int]
    start_clock: np.ndarray  # int64 per flow: newest timestamp read up to its first packet
    new: np.ndarray  # bool per flow: its first packet is in this batch's chunk (not carried)


def iter_flow_batches(path: str | Path, settings: FlowSettings,
                      chunk_packets: int = DEFAULT_CHUNK_PACKETS) -> Iterator[FlowBatch]:
    from pytrafgen.capture import PacketTable, iter_pcap

    idle_ns = round(settings.idle_timeout_s * 1e9) if np.isfinite(settings.idle_timeout_s) \
        and settings.idle_timeout_s > 0 else None
    carry: Any = None
    carry_rows = np.zeros(0, np.int64)
    carry_clock = np.zeros(0, np.int64)
    clock = np.iinfo(np.int64).min  # newest timestamp read so far
    next_row = 0
    newest = np.iinfo(np.int64).min
    chunks = iter_pcap(path, chunk_packets=chunk_packets)
    chunk = next(chunks, None)
    while chunk is not None:
        following = next(chunks, None)  # one chunk ahead, to know when this one is the last
        rows = np.arange(next_row, next_row + len(chunk), dtype=np.int64)
        next_row += len(chunk)
        table = chunk if carry is None else PacketTable.concat([carry, chunk])
        global_rows = rows if carry is None else np.concatenate([carry_rows, rows])
        chunk_clock = np.maximum.accumulate(np.r_[clock, np.asarray(chunk.ts_ns, np.int64)])[1:]
        clock = int(chunk_clock[-1]) if len(chunk_clock) else clock
        packet_clock = chunk_clock if carry is None else np.concatenate([carry_clock, chunk_clock])
        if len(chunk):
            newest = max(newest, int(np.asarray(chunk.ts_ns).max()))
        flows = settings.assemble(table)
        if following is None:
            done = np.ones(len(flows), bool)
        else:
            done = np.zeros(len(flows), bool)
            if idle_ns is not None:
                done |= np.asarray(flows.end_ns, np.int64) + idle_ns < newest
            if settings.max_flow_packets:
                done |= np.asarray(flows.packets) >= settings.max_flow_packets
        first_packet = np.asarray(flows.first_packet, np.int64)
        first_row = global_rows[first_packet]
        yield FlowBatch(table, flows, done, first_row, dict(chunk.skipped), packet_clock[first_packet],
                        first_row >= rows[0] if len(rows) else np.zeros(len(flows), bool))
        flow_id = np.asarray(flows.flow_id)
        open_flow = np.r_[~done, False]  # flow_id −1 (not in a flow) picks the trailing False
        keep = np.flatnonzero(open_flow[flow_id])
        carry = table.take(keep) if len(keep) else None
        carry_rows = global_rows[keep]
        carry_clock = packet_clock[keep]
        chunk = following


__all__ = ["DEFAULT_CHUNK_PACKETS", "FlowBatch", "iter_flow_batches"]
