"""The per-flow Python preparation ``pytrafgen.build`` used before it moved to C++
(``csrc/build_prep.hpp``), kept verbatim as the reference the bulk path is tested against
(``tests/test_build_bulk.py``): same records, plan and seed must give the same bytes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import EPHEMERAL_PORTS, MAX_PORT_DRAWS, BuildError, _arrival_starts
from pytrafgen.records import FieldRecords


def _connection_keys(proto: np.ndarray, client_addr: np.ndarray, client_port: np.ndarray,
                     server_addr: np.ndarray, server_port: np.ndarray) -> np.ndarray:
    """(F, 7) uint64 rows naming each flow's connection the same either way round: protocol,
    then the lower and the higher (address high, address low, port) endpoint."""
    def endpoint(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
        halves = np.ascontiguousarray(addr, np.uint8).view(">u8").astype(np.uint64)
        return np.column_stack([halves, port.astype(np.uint64)])

    client, server = endpoint(client_addr, client_port), endpoint(server_addr, server_port)
    # lexicographic client <= server, column by column
    le = np.ones(len(client), bool)
    for k in (2, 1, 0):
        le = (client[:, k] < server[:, k]) | ((client[:, k] == server[:, k]) & le)
    low = np.where(le[:, None], client, server)
    high = np.where(le[:, None], server, client)
    return np.column_stack([proto.astype(np.uint64), low, high])


def _distinct_five_tuples(flows: dict[str, np.ndarray], ends: Mapping[str, np.ndarray], seed: int
                          ) -> dict[str, np.ndarray]:
    """``flows`` with the client port of a flow replaced by a free ephemeral port where its
    5-tuple (either way round) is already another flow's. Generated flows share the few
    addresses of the plan and their ports come from the model, so two of them can collide and
    a reader would merge them into one connection; a real client's stack never reuses a
    5-tuple that way. The first flow of a 5-tuple keeps its port. Where ``MAX_PORT_DRAWS``
    draws find no free port (a plan with one address pair and tens of thousands of flows to
    one service), the flow and later ones of the same endpoints keep their ports and merge.
    Flows without a collision cost no Python loop."""
    n = len(flows["client_port"])
    proto, client_port, server_port = flows["proto"], flows["client_port"], flows["server_port"]
    keys = _connection_keys(proto, ends["client_addr"], client_port, ends["server_addr"], server_port)
    _, first = np.unique(keys, axis=0, return_index=True)
    again = np.ones(n, bool)
    again[first] = False
    if not again.any():
        return flows
    taken = set(map(tuple, keys[~again].tolist()))
    new_port = np.array(client_port, dtype=np.uint16)
    rng = np.random.default_rng([seed, 0x5A5])
    rows = np.flatnonzero(again)
    # the same key rows as _connection_keys, as Python tuples: (proto, lower endpoint, higher)
    client_halves = np.ascontiguousarray(ends["client_addr"][rows], np.uint8).view(">u8").tolist()
    server_halves = np.ascontiguousarray(ends["server_addr"][rows], np.uint8).view(">u8").tolist()
    full: set[tuple] = set()  # (proto, client address, server endpoint) with no free port found
    for j, i in enumerate(rows.tolist()):
        p, server = int(proto[i]), (*server_halves[j], int(server_port[i]))
        if (p, *client_halves[j], server) in full:
            continue
        for port in rng.integers(*EPHEMERAL_PORTS, size=MAX_PORT_DRAWS).tolist():
            client = (*client_halves[j], port)
            key = (p, *min(client, server), *max(client, server))
            if key not in taken:
                new_port[i] = port
                taken.add(key)
                break
        else:
            full.add((p, *client_halves[j], server))
    return {**flows, "client_port": new_port}



def _piled_up(first: np.ndarray, labels: np.ndarray) -> bool:
    """Whether two flows of one class start at the same instant: generated flows (modelled one
    at a time, each from its own time 0) do; flows of a real capture practically never."""
    keys = np.stack([labels.astype(np.int64), first], axis=1)
    return len(np.unique(keys, axis=0)) < len(keys)


def _timestamps(records: FieldRecords, rng: np.random.Generator, flow_spread_s: float | None,
                start_ns: int | None, plan: AddressPlan | None = None) -> np.ndarray:
    """Per-packet timestamps: the records', each flow moved to a start drawn uniformly within
    ``flow_spread_s`` seconds if given, else (when flows of one class pile up at the same start
    instant, as generated flows do, and a plan is given) to Poisson arrivals at each class's real
    rate; times within a flow are kept. Then all are shifted so the first packet is at
    ``start_ns`` if given."""
    ts = records.packets["ts_ns"]
    # Out-of-range flow indices are the C++ builder's to count as bad records; leave them be.
    flow = np.clip(records.packets["flow"], 0, max(records.n_flows - 1, 0))
    if records.n_flows == 0 or np.any(flow != records.packets["flow"]):
        return ts if start_ns is None or not len(ts) else ts - int(ts.min()) + int(start_ns)
    first = np.full(records.n_flows, np.iinfo(np.int64).max, np.int64)
    if len(ts):
        np.minimum.at(first, flow, ts)
    starts = None
    if flow_spread_s is not None:
        if not flow_spread_s >= 0:
            raise BuildError(f"build: flow_spread_s must be >= 0, got {flow_spread_s}")
        starts = (rng.random(records.n_flows) * flow_spread_s * 1e9).astype(np.int64)
    elif plan is not None and records.n_flows > 1 and len(ts):
        present = np.unique(flow)
        if _piled_up(first[present], records.flows["label"][present]):
            starts = _arrival_starts(records, plan, rng)
    if starts is not None and len(ts):
        ts = ts - first[flow] + starts[flow]
    if start_ns is not None and len(ts):
        ts = ts - int(ts.min()) + int(start_ns)
    return ts
