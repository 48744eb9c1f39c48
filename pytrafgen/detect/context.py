"""Host context of a flow: what its client did just before, across flows (Zeek/CICIDS-like
"connection context"). A scanner opens many flows to many ports, a flood many flows to one
port, a normal client a few flows to one port; a single flow cannot show which it belongs to.

For flow *i* with client address *c* and start clock *t*, the window is every flow of the same
capture with client *c* whose first packet came at or before *i*'s first packet (capture
order) and whose start clock is at least *t* − ``CONTEXT_WINDOW_S``; *i* itself is in it.

* ``ctx_client_flows``: how many flows the window holds, as ⌊log2 count⌋;
* ``ctx_client_port_flows``: how many of them went to *i*'s server port, as ⌊log2 count⌋.

The start clock of a flow is the newest packet timestamp read up to its first packet — its
start time in a capture whose timestamps never go backwards — so the window is a contiguous
run in capture order and a streamed run (which sees flows in that order, keeping only the
last window's starts per client) computes exactly what the whole capture gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONTEXT_WINDOW_S = 30.0
CONTEXT_NAMES: tuple[str, ...] = ("ctx_client_flows", "ctx_client_port_flows")


def start_clock(packets: Any, flows: Any) -> np.ndarray:
    """int64 start clock per flow of a whole capture (see the module docstring)."""
    ts = np.asarray(packets.ts_ns).astype(np.int64)
    if len(ts) == 0:
        return np.zeros(0, np.int64)
    return np.maximum.accumulate(ts)[np.asarray(flows.first_packet, np.int64)]


def _window_counts(keys: list[np.ndarray], order: np.ndarray, rank: np.ndarray, low_rank: np.ndarray) -> np.ndarray:
    """Per row: rows with the same ``keys`` values, ``order`` ≤ its own and clock rank ≥ its
    ``low_rank`` (ranks must not decrease with ``order``)."""
    n = len(order)
    sort = np.lexsort((order, *keys))  # by group, then capture order
    change = np.zeros(n, bool)
    change[0] = True
    for key in keys:
        k = key[sort]
        change[1:] |= k[1:] != k[:-1]
    group = np.empty(n, np.int64)
    group[sort] = np.cumsum(change) - 1
    scale = n + 1
    sorted_key = (group * scale + rank)[sort]  # nondecreasing: groups, then ranks within one
    position = np.empty(n, np.int64)
    position[sort] = np.arange(n)
    return position - np.searchsorted(sorted_key, group * scale + low_rank, side="left") + 1


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
    address = np.ascontiguousarray(client_addr, dtype=np.uint8).reshape(-1, 16).view(np.uint64)
    client = [address[:, 0], address[:, 1]]
    counts = np.stack([_window_counts(client, order, rank, low_rank),
                       _window_counts([*client, np.asarray(server_port, np.int64)], order, rank, low_rank)], axis=1)
    # ⌊log2 count⌋: the scale is what separates a scan, a flood and a client; exact counts
    # would also make every flood flow's feature row distinct, and `detect run` predicts each
    # distinct row once
    return np.floor(np.log2(counts)).astype(np.float64)


def whole_capture_context(packets: Any, flows: Any) -> np.ndarray:
    """Context features of every flow of a whole capture."""
    return context_features(np.asarray(flows.client_addr), np.asarray(flows.server_port),
                            start_clock(packets, flows), np.asarray(flows.first_packet, np.int64))


class ContextWindow:
    """Context features of a streamed capture. A flow's window holds only flows whose first
    packet came no later than its own, so its context is final once its first packet is read:
    it is computed then, from the starts (client, server port, clock, first row) of the flows
    begun within the last CONTEXT_WINDOW_S of the newest clock, and kept until the flow is
    classified. Memory: the last window's flow starts plus one pair of values per open flow."""

    def __init__(self, window_s: float = CONTEXT_WINDOW_S) -> None:
        self.window_s = window_s
        self.window_ns = round(window_s * 1e9)
        self.client = np.zeros((0, 16), np.uint8)
        self.port = np.zeros(0, np.int64)
        self.clock = np.zeros(0, np.int64)
        self.row = np.zeros(0, np.int64)
        self.pending_row = np.zeros(0, np.int64)  # flows added, not yet taken, by first row
        self.pending = np.zeros((0, len(CONTEXT_NAMES)))

    def add(self, client: np.ndarray, port: np.ndarray, clock: np.ndarray, row: np.ndarray) -> None:
        """Flows seen for the first time (their first packets in capture order after all
        flows added before)."""
        if len(row) == 0:
            return
        self.client = np.concatenate([self.client, np.asarray(client, np.uint8).reshape(-1, 16)])
        self.port = np.concatenate([self.port, np.asarray(port, np.int64)])
        self.clock = np.concatenate([self.clock, np.asarray(clock, np.int64)])
        self.row = np.concatenate([self.row, np.asarray(row, np.int64)])
        values = context_features(self.client, self.port, self.clock, self.row, self.window_s)
        added = len(row)
        self.pending_row = np.concatenate([self.pending_row, self.row[-added:]])
        self.pending = np.concatenate([self.pending, values[-added:]])
        # flows still to come start at the newest clock or later
        keep = self.clock >= int(self.clock.max()) - self.window_ns
        self.client, self.port, self.clock, self.row = (self.client[keep], self.port[keep], self.clock[keep],
                                                        self.row[keep])

    def take(self, row: np.ndarray) -> np.ndarray:
        """Context of flows added before, by first row; they are forgotten."""
        sort = np.argsort(self.pending_row, kind="stable")
        at = sort[np.searchsorted(self.pending_row, row, sorter=sort)]
        values = self.pending[at]
        keep = np.ones(len(self.pending_row), bool)
        keep[at] = False
        self.pending_row, self.pending = self.pending_row[keep], self.pending[keep]
        return values


__all__ = ["CONTEXT_NAMES", "CONTEXT_WINDOW_S", "ContextWindow", "context_features", "start_clock",
           "whole_capture_context"]
