"""Host context of a flow: what its client did just before, across flows (Zeek/CICIDS-like
"connection context"). A scanner opens many flows to many ports, a flood many flows to one
port, a normal client a few flows to one port; a single flow cannot show which it belongs to.

For flow *i* with client address *c* and start clock *t*, the window is every flow of the same
capture with client *c* whose first packet came at or before *i*'s first packet (capture
order) and whose start clock is at least *t* − ``CONTEXT_WINDOW_S``; *i* itself is in it.

* ``ctx_client_flows``: how many flows the window holds, as ⌊log2 count⌋;
* ``ctx_client_port_flows``: how many of them went to *i*'s server port, as ⌊log2 count⌋.

The window *around* the flow is every flow of client *c* whose start clock lies within
``CONTEXT_WINDOW_S`` of *t*, before or after:

* ``ctx_client_flows_around``: how many flows that window holds, as ⌊log2 count⌋;
* ``ctx_client_port_flows_around``: how many of them went to *i*'s server port, ⌊log2⌋.

The past window cannot tell the first probes of a long scan from a short one (nmap -sV's
SYN probes are packet for packet those of nmap -sS, and both start with a handful of flows);
what comes after can: a port scan goes on to thousands of flows, a version scan stops at a few
dozen. A streamed run therefore gives a flow its verdict only once the clock has passed its
start by ``CONTEXT_WINDOW_S`` (or the capture ended), see :class:`ContextWindow`.

The start clock of a flow is the newest packet timestamp read up to its first packet — its
start time in a capture whose timestamps never go backwards — so the window is a contiguous
run in capture order and a streamed run (which sees flows in that order, keeping only the
last window's starts per client) computes exactly what the whole capture gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONTEXT_WINDOW_S = 30.0
CONTEXT_NAMES: tuple[str, ...] = ("ctx_client_flows", "ctx_client_port_flows", "ctx_client_flows_around",
                                   "ctx_client_port_flows_around")


def start_clock(packets: Any, flows: Any) -> np.ndarray:
    """int64 start clock per flow of a whole capture (see the module docstring)."""
    ts = np.asarray(packets.ts_ns).astype(np.int64)
    if len(ts) == 0:
        return np.zeros(0, np.int64)
    return np.maximum.accumulate(ts)[np.asarray(flows.first_packet, np.int64)]


def _group_ids(keys: list[np.ndarray], sort: np.ndarray) -> np.ndarray:
    """Per row, the number of its group (rows with equal ``keys`` values), numbered in the
    order of ``sort`` (a sort by the keys)."""
    n = len(sort)
    change = np.zeros(n, bool)
    change[0] = True
    for key in keys:
        k = key[sort]
        change[1:] |= k[1:] != k[:-1]
    group = np.empty(n, np.int64)
    group[sort] = np.cumsum(change) - 1
    return group


def _window_counts(keys: list[np.ndarray], order: np.ndarray, rank: np.ndarray, low_rank: np.ndarray) -> np.ndarray:
    """Per row: rows with the same ``keys`` values, ``order`` ≤ its own and clock rank ≥ its
    ``low_rank`` (ranks must not decrease with ``order``)."""
    n = len(order)
    sort = np.lexsort((order, *keys))  # by group, then capture order
    group = _group_ids(keys, sort)
    scale = n + 1
    sorted_key = (group * scale + rank)[sort]  # nondecreasing: groups, then ranks within one
    position = np.empty(n, np.int64)
    position[sort] = np.arange(n)
    return position - np.searchsorted(sorted_key, group * scale + low_rank, side="left") + 1


def _around_counts(keys: list[np.ndarray], rank: np.ndarray, low_rank: np.ndarray, high_rank: np.ndarray) -> np.ndarray:
    """Per row: rows with the same ``keys`` values whose clock rank is in [low_rank, high_rank)."""
    n = len(rank)
    sort = np.lexsort((rank, *keys))
    group = _group_ids(keys, sort)
    scale = n + 1
    sorted_key = (group * scale + rank)[sort]
    return (np.searchsorted(sorted_key, group * scale + high_rank, side="left")
            - np.searchsorted(sorted_key, group * scale + low_rank, side="left"))


def context_features(client_addr: np.ndarray, server_port: np.ndarray, clock: np.ndarray,
                     order: np.ndarray, window_s: float = CONTEXT_WINDOW_S) -> np.ndarray:
    """(n, len(CONTEXT_NAMES)) float64 context of every given flow among the given flows
    (client address (n, 16) bytes, server port, start clock ns, capture order)."""
    if len(clock) == 0:
        return np.zeros((0, len(CONTEXT_NAMES)))
    window_ns = round(window_s * 1e9)
    clock = np.asarray(clock, np.int64)
    by_order = np.argsort(order, kind="stable")
    clock_in_order = clock[by_order]  # nondecreasing: the clock never runs backwards
    rank = np.searchsorted(clock_in_order, clock, side="left")
    low_rank = np.searchsorted(clock_in_order, clock - window_ns, side="left")  # first start in the window
    high_rank = np.searchsorted(clock_in_order, clock + window_ns, side="right")  # past the last one
    address = np.ascontiguousarray(client_addr, dtype=np.uint8).reshape(-1, 16).view(np.uint64)
    client = [address[:, 0], address[:, 1]]
    client_port = [*client, np.asarray(server_port, np.int64)]
    counts = np.stack([_window_counts(client, order, rank, low_rank),
                       _window_counts(client_port, order, rank, low_rank),
                       _around_counts(client, rank, low_rank, high_rank),
                       _around_counts(client_port, rank, low_rank, high_rank)], axis=1)
    # ⌊log2 count⌋: the scale is what separates a scan, a flood and a client; exact counts
    # would also make every flood flow's feature row distinct, and `detect run` predicts each
    # distinct row once
    return np.floor(np.log2(counts)).astype(np.float64)


def whole_capture_context(packets: Any, flows: Any) -> np.ndarray:
    """Context features of every flow of a whole capture."""
    return context_features(np.asarray(flows.client_addr), np.asarray(flows.server_port),
                            start_clock(packets, flows), np.asarray(flows.first_packet, np.int64))


class ContextWindow:
    """Host context of a streamed capture. Flows still to come start at the newest clock read
    so far or later, so a flow's context is final once that clock is more than
    CONTEXT_WINDOW_S past its start (or the capture has ended): no later flow can fall into
    either of its windows. The window keeps the starts (client, server port, clock, first row)
    of the flows that a flow still waiting for its context, or one still to come, may count.
    Memory: the starts of about two windows' worth of flows."""

    def __init__(self, window_s: float = CONTEXT_WINDOW_S) -> None:
        self.window_s = window_s
        self.window_ns = round(window_s * 1e9)
        self.client = np.zeros((0, 16), np.uint8)
        self.port = np.zeros(0, np.int64)
        self.clock = np.zeros(0, np.int64)
        self.row = np.zeros(0, np.int64)  # increasing: flows are added in capture order
        self.newest = np.iinfo(np.int64).min

    def add(self, client: np.ndarray, port: np.ndarray, clock: np.ndarray, row: np.ndarray) -> None:
        """Flows seen for the first time (their first packets in capture order after all
        flows added before)."""
        if len(row) == 0:
            return
        self.client = np.concatenate([self.client, np.asarray(client, np.uint8).reshape(-1, 16)])
        self.port = np.concatenate([self.port, np.asarray(port, np.int64)])
        self.clock = np.concatenate([self.clock, np.asarray(clock, np.int64)])
        self.row = np.concatenate([self.row, np.asarray(row, np.int64)])
        self.newest = max(self.newest, int(self.clock.max()))

    def final(self, clock: np.ndarray) -> np.ndarray:
        """bool per flow start clock: its context can no longer change."""
        return np.asarray(clock, np.int64) < self.newest - self.window_ns

    def context(self, row: np.ndarray) -> np.ndarray:
        """Context of flows added before, by first row (final only where ``final`` says so)."""
        values = context_features(self.client, self.port, self.clock, self.row, self.window_s)
        return values[np.searchsorted(self.row, np.asarray(row, np.int64))]

    def forget(self, oldest_waiting: int) -> None:
        """Drop the starts no flow can count any more: ``oldest_waiting`` is the start clock
        of the oldest flow still waiting for its context (flows to come start at ``newest``)."""
        keep = self.clock >= min(oldest_waiting, self.newest) - self.window_ns
        self.client, self.port, self.clock, self.row = (self.client[keep], self.port[keep], self.clock[keep],
                                                        self.row[keep])


__all__ = ["CONTEXT_NAMES", "CONTEXT_WINDOW_S", "ContextWindow", "context_features", "start_clock",
           "whole_capture_context"]
