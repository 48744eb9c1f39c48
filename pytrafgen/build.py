"""FieldRecords -> packets: addresses from an address plan, fresh initial sequence numbers,
lengths and checksums recomputed (C++ ``csrc/build.hpp``), written as pcap.

``build_frames`` gives the raw frames (one buffer + offsets, record index per frame, a status
per record); ``build_packets`` dissects them into a PacketTable; ``write_records`` writes a
pcap in time order, atomically. Records the builder cannot turn into a packet (blob ranges
out of bounds, absurd lengths, unknown protocol, ...) are skipped and counted by reason,
never a crash (``BUILD_STATUS_NAMES``).

Seeded: the same records, plan and seed give the same bytes and timestamps. From the seed's
generator the address plan draws first, then the ISNs, then (if asked) flow start times.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen import _core
from pytrafgen.address_plan import ALL_CLASSES, DEFAULT_CLIENT_MAC, DEFAULT_SERVER_MAC, AddressPlan
from pytrafgen.atomic import atomic_file
from pytrafgen.capture import PacketTable
from pytrafgen.conform.ports import EPHEMERAL_PORTS
from pytrafgen.errors import PytrafgenError
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.records import FieldRecords

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
BUILD_STATUS_NAMES: tuple[str, ...] = tuple(_core.BUILD_STATUS_NAMES)
PCAP_SNAPLEN = 262144
# names of the derived fields a generator may emit in ``FieldRecords.raw_derived``
RAW_DERIVED_FIELDS = ("ip_hdr_len", "ip_total_len", "l4_hdr_len", "udp_len", "ip_csum", "l4_csum")


class BuildError(PytrafgenError):
    """Records cannot be built at all (missing addresses, bad arguments)."""


@dataclass
class BuiltFrames:
    """Frames built from records. ``packet[j]``: the record packet of frame j (a SYN-ACK that
    ``conform`` added: its flow's SYN); ``status``: one code per record packet (0 built, else the
    reason it was skipped)."""

    data: np.ndarray  # uint8
    frame_off: np.ndarray  # uint64 per frame
    frame_len: np.ndarray  # uint32 per frame
    packet: np.ndarray  # int64 per frame
    ts_ns: np.ndarray  # int64 per frame
    status: np.ndarray  # uint8 per record packet
    linktype: int
    # packets changed per field by ``conform`` (pytrafgen.conform): what the generator got wrong
    repairs: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_off)

    def frame(self, j: int) -> bytes:
        off = int(self.frame_off[j])
        return self.data[off : off + int(self.frame_len[j])].tobytes()

    @property
    def skipped(self) -> dict[str, int]:
        counts = np.bincount(self.status, minlength=len(BUILD_STATUS_NAMES))
        return {BUILD_STATUS_NAMES[s]: int(c) for s, c in enumerate(counts) if s and c}

    def pcap_bytes(self) -> bytes:
        """A nanosecond-resolution pcap of these frames, in their order."""
        if len(self.ts_ns) and int(self.ts_ns.min()) < 0:
            raise BuildError("negative timestamps cannot be written to pcap (pass start_ns=)")
        header = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, PCAP_SNAPLEN, self.linktype)
        return header + _core.pack_pcap_records(self.data, self.frame_off, self.frame_len, self.frame_len,
                                                self.ts_ns, True)

    def to_table(self, pcap: bytes | None = None) -> PacketTable:
        """Dissect the frames with the reader into a PacketTable (one row per frame). ``pcap``:
        this object's ``pcap_bytes()`` when the caller has them already."""
        cols, read_skipped = _core.CaptureFile.from_bytes(self.pcap_bytes() if pcap is None else pcap,
                                                          "<built>").read(0)
        skipped = dict(read_skipped)
        skipped.update({f"build_{reason}": count for reason, count in self.skipped.items()})
        return PacketTable(skipped=skipped, **cols)


def _mac_rows(text: str, n: int) -> np.ndarray:
    return np.tile(np.frombuffer(bytes(int(x, 16) for x in text.split(":")), np.uint8), (n, 1))


def _endpoints(records: FieldRecords, plan: AddressPlan | None, addresses: Any,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """client/server addresses and MACs per flow: ``addresses`` if given (a mapping or an object
    such as PacketOrigin with client_addr/server_addr and optionally client_mac/server_mac),
    else those already in the records, else drawn from the plan."""
    n = records.n_flows

    def pick(name: str) -> np.ndarray | None:
        if addresses is None:
            return None
        value = addresses.get(name) if isinstance(addresses, Mapping) else getattr(addresses, name, None)
        return None if value is None else np.ascontiguousarray(value, np.uint8)

    out: dict[str, np.ndarray] = {}
    given_client, given_server = pick("client_addr"), pick("server_addr")
    if given_client is not None and given_server is not None:
        out["client_addr"], out["server_addr"] = given_client, given_server
    elif records.client_addr is not None and records.server_addr is not None:
        out["client_addr"] = np.ascontiguousarray(records.client_addr, np.uint8)
        out["server_addr"] = np.ascontiguousarray(records.server_addr, np.uint8)
    drawn = plan.assign(records, rng) if plan is not None else None
    if "client_addr" not in out:
        if drawn is None:
            raise BuildError("build: no addresses: pass an address plan or addresses=")
        out["client_addr"], out["server_addr"] = drawn["client_addr"], drawn["server_addr"]
    for role, default in (("client", DEFAULT_CLIENT_MAC), ("server", DEFAULT_SERVER_MAC)):
        mac = pick(f"{role}_mac")
        if mac is None:
            mac = drawn[f"{role}_mac"] if drawn is not None else _mac_rows(default, n)
        out[f"{role}_mac"] = mac
    for name, width in (("client_addr", 16), ("server_addr", 16), ("client_mac", 6), ("server_mac", 6)):
        if out[name].shape != (n, width):
            raise BuildError(f"build: {name} must be ({n}, {width}), got {out[name].shape}")
    return out


MAX_PORT_DRAWS = 64  # tries for a free port before a colliding flow keeps its own


def _distinct_five_tuples(flows: dict[str, np.ndarray], ends: Mapping[str, np.ndarray], seed: int
                          ) -> dict[str, np.ndarray]:
    """``flows`` with the client port of a flow replaced by a free ephemeral port where its
    5-tuple (either way round) is already another flow's. Generated flows share the few
    addresses of the plan and their ports come from the model, so two of them can collide and
    a reader would merge them into one connection; a real client's stack never reuses a
    5-tuple that way. The first flow of a 5-tuple keeps its port; each later one takes the first
    free port of ``MAX_PORT_DRAWS`` draws. Where those find no free port (a plan with one address
    pair and tens of thousands of flows to one service), the flow and later ones of the same
    endpoints keep their ports and merge. The hashing and the search run in C++
    (``csrc/build_prep.hpp``); the draws come from numpy, in bulk, the same ports as one draw per
    flow."""
    rng = np.random.default_rng([seed, 0x5A5])
    ports = _core.distinct_client_ports(
        np.ascontiguousarray(flows["proto"], np.uint8), ends["client_addr"],
        np.ascontiguousarray(flows["client_port"], np.uint16), ends["server_addr"],
        np.ascontiguousarray(flows["server_port"], np.uint16),
        lambda rows: rng.integers(*EPHEMERAL_PORTS, size=(rows, MAX_PORT_DRAWS)))
    return flows if ports is None else {**flows, "client_port": ports}


def _service_side_as_server(records: FieldRecords, isn: np.ndarray | None
                            ) -> tuple[FieldRecords, np.ndarray | None, int]:
    """Records whose roles put the service port on the server side. A generator trained on
    flows whose later chunks named the first sender the client (before the flow table kept a
    connection's roles across chunks) can emit a flow whose "client" holds the service port;
    built as is, the server's port would sit on a client address. A flow is turned round when
    its client port serves more flows of its class (as their server port) than its server
    port does, and it does not open with its client's SYN: every packet's direction is
    flipped, the ports (and ``isn`` columns) exchanged. Returns (records, isn, flows swapped)."""
    flows = records.flows
    label = flows["label"].astype(np.int64)
    keys = label * 65536 + flows["server_port"].astype(np.int64)
    served, counts = np.unique(keys, return_counts=True)

    def serving(port: np.ndarray) -> np.ndarray:
        k = label * 65536 + port.astype(np.int64)
        at = np.clip(np.searchsorted(served, k), 0, max(len(served) - 1, 0))
        return np.where(len(served) and served[at] == k, counts[at] if len(counts) else 0, 0)

    swap = serving(flows["client_port"]) > serving(flows["server_port"])
    if records.n_packets and swap.any():
        flow = records.packets["flow"]
        first = np.full(records.n_flows, -1, np.int64)
        first[flow[::-1]] = np.arange(records.n_packets - 1, -1, -1)  # first packet of each flow
        has = first >= 0
        fp = first[has]
        opens_with_syn = np.zeros(records.n_flows, bool)
        opens_with_syn[has] = (((records.packets["tcp_flags"][fp] & 0x12) == 0x02)
                               & (records.packets["direction"][fp] == 0) & (flows["proto"][has] == 6))
        swap &= ~opens_with_syn
    if not swap.any():
        return records, isn, 0
    packets = dict(records.packets)
    packets["direction"] = np.where(swap[records.packets["flow"]], 1 - records.packets["direction"],
                                    records.packets["direction"]).astype(np.uint8)
    new_flows = dict(flows)
    new_flows["client_port"] = np.where(swap, flows["server_port"], flows["client_port"]).astype(np.uint16)
    new_flows["server_port"] = np.where(swap, flows["client_port"], flows["server_port"]).astype(np.uint16)
    if isn is not None and np.shape(isn) == (records.n_flows, 2):  # a bad shape is build_frames' to report
        isn = np.ascontiguousarray(isn, np.uint32).copy()
        isn[swap] = isn[swap][:, ::-1]
    out = FieldRecords(packets=packets, flows=new_flows, blob=records.blob, classes=records.classes,
                       client_addr=records.client_addr, server_addr=records.server_addr,
                       raw_derived=records.raw_derived)
    return out, isn, int(swap.sum())


DEFAULT_FLOW_INTERVAL_S = 1.0  # for a class whose plan learned no rate (a single flow)


def _class_interval(plan: AddressPlan, name: str) -> float:
    """The class's real flow interval, else the plan's over all classes, else one second."""
    for entry in (plan.classes.get(name), plan.classes.get(ALL_CLASSES)):
        if entry is not None and entry.flow_interval_s is not None:
            return max(float(entry.flow_interval_s), 0.0)
    return DEFAULT_FLOW_INTERVAL_S


def _arrival_starts(records: FieldRecords, plan: AddressPlan, rng: np.random.Generator) -> np.ndarray:
    """Flow start times (ns) as Poisson arrivals at each class's real flow rate (the plan's
    ``flow_interval_s``), classes side by side from 0."""
    labels = records.flows["label"]
    starts = np.zeros(records.n_flows, np.int64)
    for k in np.unique(labels):
        interval = _class_interval(plan, records.classes[int(k)])
        idx = np.flatnonzero(labels == k)
        gaps = rng.exponential(interval * 1e9, len(idx))
        gaps[0] = 0.0
        starts[idx] = np.cumsum(gaps).astype(np.int64)
    return starts


def _timestamps(records: FieldRecords, rng: np.random.Generator, flow_spread_s: float | None,
                start_ns: int | None, plan: AddressPlan | None = None) -> np.ndarray:
    """Per-packet timestamps: the records', each flow moved to a start drawn uniformly within
    ``flow_spread_s`` seconds if given, else (when flows of one class pile up at the same start
    instant, as generated flows do — modelled one at a time, each from its own time 0 — and a
    plan is given) to Poisson arrivals at each class's real rate; times within a flow are kept.
    Then all are shifted so the first packet is at ``start_ns`` if given. Each flow's first
    time and the pile-up test come from one C++ pass (``_core.flow_first_ts``)."""
    ts = records.packets["ts_ns"]
    if flow_spread_s is not None and not flow_spread_s >= 0:
        raise BuildError(f"build: flow_spread_s must be >= 0, got {flow_spread_s}")
    want_piled = flow_spread_s is None and plan is not None and records.n_flows > 1 and len(ts) > 0
    # Out-of-range flow indices (None) are the C++ builder's to count as bad records; leave them be.
    found = None if records.n_flows == 0 else _core.flow_first_ts(
        np.ascontiguousarray(records.packets["flow"], np.int32), np.ascontiguousarray(ts, np.int64),
        np.ascontiguousarray(records.flows["label"], np.int16), want_piled)
    if found is None:
        return ts if start_ns is None or not len(ts) else ts - int(ts.min()) + int(start_ns)
    first, piled = found
    starts = None
    if flow_spread_s is not None:
        starts = (rng.random(records.n_flows) * flow_spread_s * 1e9).astype(np.int64)
    elif piled:
        starts = _arrival_starts(records, plan, rng)  # type: ignore[arg-type]  # piled implies a plan
    if starts is not None and len(ts):
        flow = records.packets["flow"]
        ts = ts + (starts - first)[flow]
    if start_ns is not None and len(ts):
        ts = ts - int(ts.min()) + int(start_ns)
    return ts


def build_frames(records: FieldRecords, plan: AddressPlan | None = None, seed: int = 0,
                 linktype: int = LINKTYPE_ETHERNET, repair: bool = True, isn: np.ndarray | None = None,
                 addresses: Any = None, order: np.ndarray | None = None, *, time_order: bool = False,
                 flow_spread_s: float | None = None, start_ns: int | None = None,
                 conform: bool = False, protocols: Mapping[str, ProtocolSpec] | None = None) -> BuiltFrames:
    """Build ``records`` into frames (see the module docstring).

    ``isn``: (F,2) uint32 client/server initial sequence numbers (default: drawn from the seed).
    ``addresses``: per-flow addresses/MACs to use instead of the plan's (e.g. the PacketOrigin of
    ``records_and_origin`` for an exact round trip). ``repair=False`` writes the values in
    ``records.raw_derived`` (those present) instead of recomputing them. ``order``: record
    packet indices to emit, in that order; ``time_order``: emit in timestamp order instead.
    ``flow_spread_s``: draw each flow's start uniformly within this many seconds; by default,
    when flows of one class start at the same instant (generated ones), all flows are placed as
    arrivals at each class's real flow rate from the plan; ``start_ns``: shift so the first packet
    is at this time. ``conform``: make generated flows valid by construction first
    (``pytrafgen.conform``: TCP teardown after data, seq/ack continuity, well-formed options, CoAP
    options that fit); what it changed is counted per field in ``BuiltFrames.repairs``;
    ``protocols`` (name -> spec, needed with ``conform``) frame the app payloads.
    """
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
        raise BuildError(f"build: linktype must be {LINKTYPE_ETHERNET} (Ethernet) or {LINKTYPE_RAW} (raw IP)")
    rng = np.random.default_rng(seed)
    repairs: dict[str, int] = {}
    if addresses is None and records.client_addr is None:  # endpoints drawn from the plan
        records, isn, swapped = _service_side_as_server(records, isn)
        if swapped:
            repairs["roles_swapped_flows"] = swapped
    origin = None  # per built record packet, the caller's record packet (conform may add packets)
    if conform:
        from pytrafgen.conform import conform_with_origin

        if protocols is None:
            raise BuildError("build: conform needs the protocol specs (protocols=)")
        n_given = records.n_packets
        records, changed, origin = conform_with_origin(records, records.packets["ts_ns"], protocols)
        repairs.update(changed)
        if records.n_packets == n_given:
            origin = None
        elif order is not None:
            raise BuildError("build: order names the records' packets, and conform added SYN-ACKs; "
                             "use time_order instead")
    ends = _endpoints(records, plan, addresses, rng)
    flows = records.flows
    if addresses is None and records.client_addr is None:  # endpoints drawn from the plan
        flows = _distinct_five_tuples(flows, ends, seed)
    n_flows = records.n_flows
    if isn is None:
        isn = rng.integers(0, 1 << 32, size=(n_flows, 2), dtype=np.uint32)
    isn = np.ascontiguousarray(isn, np.uint32)
    if isn.shape != (n_flows, 2):
        raise BuildError(f"build: isn must be ({n_flows}, 2), got {isn.shape}")
    ts = _timestamps(records, rng, flow_spread_s, start_ns, plan if addresses is None else None)
    raw = {} if repair else {k: np.ascontiguousarray(v, np.uint16) for k, v in records.raw_derived.items()
                             if k in RAW_DERIVED_FIELDS}
    if time_order:
        order = np.argsort(ts, kind="stable")
    if order is not None:
        order = np.ascontiguousarray(order, np.int64)
    try:
        out = _core.build_frames(records.packets, flows, ends["client_addr"], ends["server_addr"],
                                 ends["client_mac"], ends["server_mac"], isn, records.blob, linktype, repair,
                                 raw, order)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise BuildError(str(exc)) from None
    packet = out["packet"]
    in_record_order = order is None and len(packet) == records.n_packets  # then packet == arange
    frame_ts = ts if in_record_order else ts[packet]
    status = out["status"]
    if origin is not None:  # frames and statuses named by the caller's packets (an added SYN-ACK: its SYN)
        given = np.r_[True, origin[1:] != origin[:-1]]
        packet, status = origin[packet], status[given]
    return BuiltFrames(data=out["data"], frame_off=out["frame_off"], frame_len=out["frame_len"],
                       packet=packet, ts_ns=frame_ts, status=status, linktype=linktype, repairs=repairs)


def build_packets(records: FieldRecords, plan: AddressPlan | None = None, seed: int = 0,
                  linktype: int = LINKTYPE_ETHERNET, repair: bool = True, isn: np.ndarray | None = None,
                  addresses: Any = None, **timing: Any) -> PacketTable:
    """Build ``records`` and dissect the result into a PacketTable (rows in record order; skipped
    records are left out and counted in ``table.skipped`` as ``build_<reason>``). ``timing``:
    ``flow_spread_s`` / ``start_ns`` as in ``build_frames``."""
    return build_frames(records, plan, seed, linktype, repair, isn, addresses, **timing).to_table()


CAPTURE_FORMATS = ("pcap", "pcapng")


def write_records(path: str | os.PathLike[str], records: FieldRecords, plan: AddressPlan | None = None,
                  seed: int = 0, linktype: int = LINKTYPE_ETHERNET, repair: bool = True,
                  isn: np.ndarray | None = None, addresses: Any = None, *,
                  flow_spread_s: float | None = None, start_ns: int | None = None,
                  labels: bool = True, file_format: str = "pcap", conform: bool | None = None,
                  protocols: Mapping[str, ProtocolSpec] | None = None) -> dict[str, Any]:
    """Build ``records`` and write them as a pcap or pcapng (nanosecond timestamps, packets in
    time order, atomically). ``flow_spread_s`` / ``start_ns`` as in ``build_frames``.
    ``labels``: also write ``<path>.flows.csv``, each flow's class in the order a reader finds the
    flows in the file (``pytrafgen.flow_labels``); in pcapng every packet also carries its class
    and flow as a packet comment. ``conform`` (default: as ``repair``): make the flows valid by
    construction (see ``build_frames``) with ``protocols`` (name -> spec; None: the loaded
    plugins', resolved here: an edge, docs/architecture.md). Returns a summary: path, packets, skipped (by reason),
    bytes, repairs (packets changed per field), flow_labels (the CSV's path, or None) and
    flow_classes (class per flow, reader order)."""
    from pytrafgen.flow_labels import label_built_flows, labels_path, pcapng_bytes, write_labels_csv

    if file_format not in CAPTURE_FORMATS:
        raise BuildError(f"build: file format must be one of {', '.join(CAPTURE_FORMATS)}, got {file_format!r}")
    conform = repair if conform is None else conform
    if conform and protocols is None:
        from pytrafgen.plugins import get_registry

        protocols = get_registry().protocols
    built = build_frames(records, plan, seed, linktype, repair, isn, addresses, time_order=True,
                         flow_spread_s=flow_spread_s, start_ns=start_ns, conform=conform, protocols=protocols)
    if file_format == "pcapng":
        flow_labels = label_built_flows(built, records) if labels else None
        blob = pcapng_bytes(built, flow_labels.comments() if flow_labels is not None else None)
    else:
        blob = built.pcap_bytes()
        flow_labels = label_built_flows(built, records, blob) if labels else None
    with atomic_file(path, "wb") as fh:
        fh.write(blob)
    csv_path = write_labels_csv(labels_path(path), flow_labels) if flow_labels is not None else None
    return {"path": str(Path(path)), "packets": len(built), "skipped": built.skipped, "bytes": len(blob),
            "repairs": built.repairs,
            "flow_labels": None if csv_path is None else str(csv_path),
            "flow_classes": None if flow_labels is None else flow_labels.classes}


__all__ = ["BUILD_STATUS_NAMES", "CAPTURE_FORMATS", "RAW_DERIVED_FIELDS", "BuildError", "BuiltFrames", "build_frames",
           "build_packets", "write_records"]
