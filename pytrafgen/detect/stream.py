"""Flows of a capture larger than memory, emitted as they end.

The capture is read in chunks (``iter_pcap``); the packets of flows still open are carried
into the next chunk and assembled again with it. A flow is finished, and emitted, once the
newest timestamp seen is more than the idle timeout past its last packet, or once it holds
``max_flow_packets`` packets (its key's next packet starts a new flow either way), or once
a later flow started on its 5-tuple, or at the end of the capture. Memory is bounded by the chunk plus the packets of the flows active within
the last idle timeout, each at most ``max_flow_packets`` long.

The flows are those ``assemble_flows`` finds on the whole capture read at once, as long as
timestamps do not go backwards by more than the idle timeout. Two things make that so:

- a flow continuing a connection (cut by the length limit or the idle timeout, no SYN) keeps
  the client and server of the flow before it on the same 5-tuple, as the whole-capture
  assembler decides, even when that flow was emitted in an earlier chunk: the roles of the
  last emitted flow of each 5-tuple are remembered (:class:`RoleMemory`, 9 bytes per distinct
  5-tuple: about 25 MB for a capture of 2.7M flows, each on its own 5-tuple);
- a flow followed by another on the same 5-tuple is finished (no packet can join it any
  more), even before its idle timeout: only the newest flow of a 5-tuple is carried, so the
  reassembly cannot merge a continuation into an older, closed flow of the same 5-tuple (a
  connection reopened on it and cut at the length limit while the closed one waits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    new_packets: int  # packets of this batch's chunk (the rest are carried)


def iter_flow_batches(path: str | Path, settings: FlowSettings,
                      chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                      on_read: Callable[[int, int], None] | None = None) -> Iterator[FlowBatch]:
    """Batches of ``path``'s flows (module docstring); ``on_read``: passed to ``iter_pcap``."""
    from pytrafgen.capture import PacketTable, iter_pcap

    idle_ns = round(settings.idle_timeout_s * 1e9) if np.isfinite(settings.idle_timeout_s) \
        and settings.idle_timeout_s > 0 else None
    carry: Any = None
    carry_rows = np.zeros(0, np.int64)
    carry_clock = np.zeros(0, np.int64)
    clock = np.iinfo(np.int64).min  # newest timestamp read so far
    next_row = 0
    newest = np.iinfo(np.int64).min
    roles = RoleMemory()
    chunks = iter_pcap(path, chunk_packets=chunk_packets, on_read=on_read)
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
        keys, client_low = _keep_roles(table, flows, roles)
        if following is None:
            done = np.ones(len(flows), bool)
        else:
            done = ~keys.newest()
            if idle_ns is not None:
                done |= np.asarray(flows.end_ns, np.int64) + idle_ns < newest
            if settings.max_flow_packets:
                done |= np.asarray(flows.packets) >= settings.max_flow_packets
        first_packet = np.asarray(flows.first_packet, np.int64)
        first_row = global_rows[first_packet]
        yield FlowBatch(table, flows, done, first_row, dict(chunk.skipped), packet_clock[first_packet],
                        first_row >= rows[0] if len(rows) else np.zeros(len(flows), bool), len(chunk))
        _remember_roles(roles, keys, client_low, done)
        flow_id = np.asarray(flows.flow_id)
        open_flow = np.r_[~done, False]  # flow_id −1 (not in a flow) picks the trailing False
        keep = np.flatnonzero(open_flow[flow_id])
        carry = table.take(keep) if len(keep) else None
        carry_rows = global_rows[keep]
        carry_clock = packet_clock[keep]
        chunk = following


def _endpoints(addr: Any, port: Any) -> np.ndarray:
    """(F, 18) bytes per flow endpoint: address, then port big-endian."""
    port_bytes = np.asarray(port).astype(">u2").view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(np.concatenate([np.asarray(addr, np.uint8).reshape(-1, 16), port_bytes], axis=1))


@dataclass
class _Keys:
    """The 5-tuple of each flow of a chunk: ``hashes`` (64-bit, see :class:`RoleMemory`), ``group``
    (index of the flow's distinct 5-tuple), ``first`` (each 5-tuple's first flow), ``order``
    (flows grouped by 5-tuple, in first-packet order within one) and ``group_start`` (where
    each 5-tuple begins in ``order``)."""

    hashes: np.ndarray
    group: np.ndarray
    first: np.ndarray
    order: np.ndarray
    group_start: np.ndarray

    def before_in_group(self, mark: np.ndarray) -> np.ndarray:
        """Per flow: how many flows of its 5-tuple up to and including it are marked."""
        running = np.cumsum(mark[self.order])
        at_start = running[self.group_start] - mark[self.order][self.group_start]
        count = np.empty(len(mark), np.int64)
        count[self.order] = running - at_start[self.group[self.order]]
        return count

    def newest(self) -> np.ndarray:
        """Per flow: is it its 5-tuple's last flow (the only one later packets can join)."""
        sizes = np.bincount(self.group, minlength=len(self.first))
        return self.before_in_group(np.ones(len(self.group), bool)) == sizes[self.group]


class RoleMemory:
    """Per 5-tuple, whether the client of its last flow dropped from the carry is the lower
    endpoint: sorted 64-bit hashes of the 5-tuples and one bool each (two 5-tuples sharing a
    hash, odds about 1e-6 for ten million 5-tuples, would share their roles)."""

    def __init__(self) -> None:
        self.hashes = np.zeros(0, np.uint64)
        self.client_low = np.zeros(0, bool)

    def __len__(self) -> int:
        return len(self.hashes)

    def _find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(self.hashes, hashes)
        found = np.zeros(len(hashes), bool)
        inside = at < len(self.hashes)
        found[inside] = self.hashes[at[inside]] == hashes[inside]
        return at, found

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(known, client_low) per hash; client_low is False where not known."""
        at, found = self._find(hashes)
        low = np.zeros(len(hashes), bool)
        low[found] = self.client_low[at[found]]
        return found, low

    def update(self, hashes: np.ndarray, client_low: np.ndarray) -> None:
        hashes, last = np.unique(hashes[::-1], return_index=True)  # sorted; the last of equal ones wins
        client_low = client_low[::-1][last]
        at, found = self._find(hashes)
        self.client_low[at[found]] = client_low[found]
        self.hashes = np.insert(self.hashes, at[~found], hashes[~found])
        self.client_low = np.insert(self.client_low, at[~found], client_low[~found])


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """64-bit hash per row of a (n, ≤40) uint8 array (splitmix64's mix over 8-byte words)."""
    padded = np.zeros((len(rows), 40), np.uint8)
    padded[:, :rows.shape[1]] = rows
    words = padded.view(np.uint64)
    h = np.full(len(rows), 0x9E3779B97F4A7C15, np.uint64)
    for j in range(words.shape[1]):
        h = h ^ words[:, j]
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return h


def _keep_roles(table: Any, flows: Any, roles: RoleMemory) -> tuple[_Keys, np.ndarray]:
    """Give the flows continuing a 5-tuple whose earlier flows were dropped (emitted in an
    earlier chunk) the roles the whole-capture assembler gives them: those of the flow before
    (``roles``), where the chunk's assembly, not seeing that flow, chose from the first packet
    or the ports. Swaps client and server of those flows in place; returns the flows' 5-tuples
    and whether each flow's client is its 5-tuple's lower endpoint (after the swap)."""
    client = _endpoints(flows.client_addr, flows.client_port)
    server = _endpoints(flows.server_addr, flows.server_port)
    client_s, server_s = client.view("S18").ravel(), server.view("S18").ravel()
    client_low = client_s < server_s
    low = np.where(client_low[:, None], client, server)
    high = np.where(client_low[:, None], server, client)
    head = np.stack([np.asarray(flows.proto, np.uint8), np.asarray(flows.l3, np.uint8)], axis=1)
    # fixed-width bytes: numpy drops trailing NULs, the same way for every flow, so equal keys stay equal
    key_bytes = np.ascontiguousarray(np.concatenate([head, low, high], axis=1))
    text = key_bytes.view("S38").ravel()
    order = np.argsort(text, kind="stable")  # one sort groups the 5-tuples, first-packet order kept within
    in_order = text[order]
    new_key = np.r_[True, in_order[1:] != in_order[:-1]][:len(text)]
    group_start = np.flatnonzero(new_key)
    group = np.empty(len(text), np.int64)
    group[order] = np.cumsum(new_key) - 1
    first = order[group_start]
    keys = _Keys(_hash_rows(key_bytes), group, first, order, group_start)
    first_packet = np.asarray(flows.first_packet, np.int64)
    syn = (np.asarray(flows.proto) == 6) & ((np.asarray(table.tcp_flags)[first_packet] & 2) != 0)
    # a 5-tuple's first flow in the chunk continues the dropped flow before it unless a SYN
    # decides its roles; the flows after it continue it in turn up to the next SYN
    known, before = roles.lookup(keys.hashes[first])
    swap_key = known & ~syn[first] & (before != client_low[first])
    flip = swap_key[group] & (keys.before_in_group(syn) == 0)
    flip &= client_s != server_s  # a flow from an endpoint to itself has no roles to swap
    if flip.any():
        column = flip[:, None]
        flows.client_addr, flows.server_addr = (np.where(column, flows.server_addr, flows.client_addr),
                                                np.where(column, flows.client_addr, flows.server_addr))
        for a, b in (("client_port", "server_port"), ("packets_c2s", "packets_s2c"), ("bytes_c2s", "bytes_s2c")):
            old_a, old_b = getattr(flows, a), getattr(flows, b)
            setattr(flows, a, np.where(flip, old_b, old_a))
            setattr(flows, b, np.where(flip, old_a, old_b))
        direction = np.asarray(flows.direction)
        swapped_packet = np.r_[flip, False][np.asarray(flows.flow_id)]  # flow_id −1 picks False
        flows.direction = np.where(swapped_packet, 1 - direction, direction).astype(direction.dtype)
        client_low = client_low ^ flip
    return keys, client_low


def _remember_roles(roles: RoleMemory, keys: _Keys, client_low: np.ndarray, dropped: np.ndarray) -> None:
    """Remember, per 5-tuple, the roles of its last flow dropped from the carry (the flow the
    next carried or new flow of that 5-tuple continues)."""
    last_dropped = dropped & (keys.before_in_group(dropped) == np.bincount(keys.group[dropped],
                                                                            minlength=len(keys.first))[keys.group])
    roles.update(keys.hashes[last_dropped], client_low[last_dropped])


__all__ = ["DEFAULT_CHUNK_PACKETS", "FlowBatch", "iter_flow_batches"]
