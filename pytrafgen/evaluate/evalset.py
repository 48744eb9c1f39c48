"""``EvalSet``: one side of an evaluation — packets, flows, per-flow class labels.

Built from pcaps (``pytrafgen.read_pcap`` + ``assemble_flows``), several files concatenated
into one table, with each flow's class taken from a manifest CSV (``file,class[,label]``:
every flow of a file gets its class) or, for a generated pcap, from its companion per-flow
labels CSV (see ``pytrafgen.flow_labels.companion_labels``). Packet and flow columns are kept in
:class:`ColumnTable` objects with the attribute names of docs/architecture.md §1–2, so rules
and features read them exactly as they would read a ``PacketTable`` / ``FlowTable``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.errors import PytrafgenError
from pytrafgen.evaluate.features import FlowFeatures, flow_features
from pytrafgen.flow_labels import companion_labels, label_flows_by_key, read_labels_csv

if TYPE_CHECKING:
    from pytrafgen.protocol_spec import ProtocolSpec

PACKET_COLUMN_NAMES: tuple[str, ...] = (
    "frame_off", "caplen", "wirelen", "ts_ns", "linktype", "iface", "status", "l3", "l3_off",
    "ip_hdr_len", "ip_total_len", "src", "dst", "proto", "ttl", "tos", "ip_id", "ip_flags",
    "frag_offset", "flow_label", "ip_csum", "l4_off", "l4_hdr_len", "sport", "dport", "tcp_flags",
    "seq", "ack", "window", "urgent", "icmp_type", "icmp_code", "l4_csum", "payload_off",
    "payload_len", "payload_wirelen",
)  # fmt: skip
FLOW_COLUMN_NAMES: tuple[str, ...] = (
    "proto", "l3", "client_addr", "server_addr", "client_port", "server_port", "start_ns", "end_ns",
    "packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "first_packet",
)  # fmt: skip
UNLABELLED = -1


class ColumnTable:
    """Named numpy columns readable as attributes (``table.ttl``); a packet table also has the
    shared byte buffer ``data`` and ``payload(i)`` like ``PacketTable``."""

    def __init__(self, columns: Mapping[str, np.ndarray], data: np.ndarray | None = None) -> None:
        self.columns = dict(columns)
        self.data = data if data is not None else np.zeros(0, np.uint8)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), None)
        return 0 if first is None else len(first)

    def payload(self, i: int) -> bytes:
        start = int(self.frame_off[i]) + int(self.payload_off[i])
        return bytes(self.data[start : start + int(self.payload_len[i])])

    def frame(self, i: int) -> bytes:
        start = int(self.frame_off[i])
        return bytes(self.data[start : start + int(self.caplen[i])])


@dataclass
class EvalSet:
    """Packets + flows + per-flow labels (index into ``classes``; -1 = unlabelled)."""

    name: str
    packets: ColumnTable
    flows: ColumnTable
    flow_id: np.ndarray  # int64 per packet, -1 outside flows
    direction: np.ndarray  # uint8 per packet
    labels: np.ndarray  # int64 per flow
    classes: list[str]
    class_kinds: dict[str, str] = field(default_factory=dict)  # class -> "benign" | "malicious"
    sources: list[str] = field(default_factory=list)
    raw: EvalSet | None = None  # the same traffic written before build-time repair
    repairs: dict[str, int] | None = None  # packets changed per field by repair; None: not known
    train: EvalSet | None = None  # the real training split (memorisation, utility)
    _features: FlowFeatures | None = field(default=None, repr=False)
    # figures that depend on this set alone, reused across generated sets (e.g. real-only utility)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    # the protocol specs (name -> spec) its rules and streams are judged with; run_validators
    # hands them to the sets it evaluates; None: not given
    protocols: Mapping[str, ProtocolSpec] | None = field(default=None, repr=False)

    @property
    def n_packets(self) -> int:
        return len(self.flow_id)

    @property
    def n_flows(self) -> int:
        return len(self.labels)

    def features(self) -> FlowFeatures:
        if self._features is None:
            self._features = flow_features(self.packets, self.flows, self.flow_id, self.direction)
        return self._features

    def context(self, protocols: Mapping[str, ProtocolSpec] | None = None, stage: str = "final") -> Any:
        """The ``RuleContext`` of this set, with ``protocols`` (default: the set's own)."""
        from pytrafgen.rules.context import RuleContext

        return RuleContext(self.packets, self.flows, self.flow_id, self.direction, self.protocols_or(protocols),
                           stage)

    def protocols_or(self, protocols: Mapping[str, ProtocolSpec] | None) -> Mapping[str, ProtocolSpec]:
        """``protocols`` if given, else the set's own; neither is an error (rules need them)."""
        chosen = protocols if protocols is not None else self.protocols
        if chosen is None:
            raise PytrafgenError(f"evaluation set {self.name!r} has no protocol specs to judge it with: pass "
                                 "protocols= (the plugin registry's Registry.protocols)")
        return chosen

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def relabel(self, classes: Sequence[str]) -> EvalSet:
        """The same set with labels re-indexed into ``classes`` (which must contain ours)."""
        index = {c: i for i, c in enumerate(classes)}
        mapping = np.array([index[c] for c in self.classes] + [UNLABELLED], np.int64)
        self.labels = mapping[self.labels]  # label -1 picks the trailing UNLABELLED
        self.classes = list(classes)
        return self

    def take_flows(self, flows: np.ndarray, name: str | None = None) -> EvalSet:
        """A new set holding only ``flows`` (and their packets), renumbered."""
        flows = np.sort(np.asarray(flows, np.int64))
        new_id = np.full(self.n_flows, -1, np.int64)
        new_id[flows] = np.arange(len(flows))
        keep = np.flatnonzero((self.flow_id >= 0) & (new_id[np.maximum(self.flow_id, 0)] >= 0))
        packets = _take_packets(self.packets, keep)
        flow_cols = {k: v[flows] for k, v in self.flows.columns.items()}
        # first_packet pointed into the old packet numbering
        old_to_new = np.full(self.n_packets, -1, np.int64)
        old_to_new[keep] = np.arange(len(keep))
        if "first_packet" in flow_cols:
            flow_cols["first_packet"] = old_to_new[flow_cols["first_packet"].astype(np.int64)]
        return EvalSet(
            name or self.name, packets, ColumnTable(flow_cols), new_id[self.flow_id[keep]],
            self.direction[keep], self.labels[flows], list(self.classes), dict(self.class_kinds),
            list(self.sources), protocols=self.protocols,
        )


def _take_packets(table: ColumnTable, keep: np.ndarray) -> ColumnTable:
    cols = {k: v[keep] for k, v in table.columns.items()}
    lengths = table.caplen[keep].astype(np.int64)
    starts = table.frame_off[keep].astype(np.int64)
    new_off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    idx = np.repeat(starts - new_off, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    cols["frame_off"] = new_off.astype(table.frame_off.dtype)
    return ColumnTable(cols, table.data[idx])


def _concat(parts: list[tuple[Any, Any, np.ndarray, np.ndarray]]) -> tuple[ColumnTable, ColumnTable,
                                                                             np.ndarray, np.ndarray]:
    """Concatenate (PacketTable, FlowTable, flow_id, direction) parts into one table pair."""
    pcols: dict[str, list[np.ndarray]] = {n: [] for n in PACKET_COLUMN_NAMES}
    fcols: dict[str, list[np.ndarray]] = {n: [] for n in FLOW_COLUMN_NAMES}
    datas, flow_ids, directions = [], [], []
    data_base = packet_base = flow_base = 0
    for packets, flows, fid, direction in parts:
        for n in PACKET_COLUMN_NAMES:
            col = np.asarray(getattr(packets, n))
            pcols[n].append(col.astype(np.uint64) + np.uint64(data_base) if n == "frame_off" else col)
        for n in FLOW_COLUMN_NAMES:
            col = np.asarray(getattr(flows, n))
            fcols[n].append(col.astype(np.int64) + packet_base if n == "first_packet" else col)
        fid = np.asarray(fid, np.int64)
        flow_ids.append(np.where(fid >= 0, fid + flow_base, -1))
        directions.append(np.asarray(direction, np.uint8))
        data = np.asarray(packets.data, np.uint8)
        datas.append(data)
        data_base += len(data)
        packet_base += len(fid)
        flow_base += len(np.asarray(flows.proto))
    packets_t = ColumnTable({n: np.concatenate(v) for n, v in pcols.items()}, np.concatenate(datas))
    flows_t = ColumnTable({n: np.concatenate(v) for n, v in fcols.items()})
    return packets_t, flows_t, np.concatenate(flow_ids), np.concatenate(directions)


def read_manifest(path: Path) -> dict[str, tuple[str, str]]:
    """``file -> (class, label)`` from a CSV with columns file,class[,label]."""
    try:
        with Path(path).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise PytrafgenError(f"{path}: cannot read the labels manifest ({exc.strerror})") from None
    if not rows or "file" not in rows[0] or "class" not in rows[0]:
        raise PytrafgenError(f"{path}: a labels manifest needs the columns file,class")
    from pytrafgen.tokenizer.pipeline import label_kind

    entries: dict[str, tuple[str, str]] = {}
    for line, r in enumerate(rows, start=2):
        kind = label_kind(r.get("label"), f"{path}: line {line}")
        entry = (r["class"], "" if kind == "unknown" else kind)
        # captures are matched by file name (or the path as written), wherever the CSV lies
        entries[r["file"]] = entry
        entries.setdefault(Path(r["file"]).name, entry)
    return entries


def evalset_from_tables(parts: Sequence[tuple[Any, Sequence[str | None] | str | None]], name: str,
                        kinds: Mapping[str, str] | None = None, sources: Sequence[str] = (),
                        max_flow_packets: int = 0) -> EvalSet:
    """One EvalSet from (PacketTable, classes) parts: ``classes`` is one class for every flow
    of that table, a per-flow list (in ``assemble_flows`` order), or None (unlabelled).
    ``max_flow_packets``: cut flows into chunks of at most this many packets, as ``pytrafgen
    tokenize --max-flow-packets`` does (0: whole flows)."""
    from pytrafgen import assemble_flows

    assembled = []
    flow_classes: list[str | None] = []
    for table, classes in parts:
        flows = assemble_flows(table, max_flow_packets=max_flow_packets)
        assembled.append((table, flows, flows.flow_id, flows.direction))
        n = len(np.asarray(flows.proto))
        if classes is None or isinstance(classes, str):
            flow_classes += [classes] * n
        else:
            if len(classes) != n:
                raise PytrafgenError(f"{name}: {len(classes)} flow labels for {n} flows")
            flow_classes += list(classes)
    if not assembled:
        raise PytrafgenError(f"{name}: no capture files given")
    packets, flows_t, flow_id, direction = _concat(assembled)
    classes_seen = list(dict.fromkeys(c for c in flow_classes if c is not None))
    index = {c: i for i, c in enumerate(classes_seen)}
    labels = np.array([index[c] if c is not None else UNLABELLED for c in flow_classes], np.int64)
    return EvalSet(name, packets, flows_t, flow_id, direction, labels, classes_seen, dict(kinds or {}),
                   list(sources))


def load_evalset(
    paths: Iterable[Path],
    name: str,
    manifest: Mapping[str, tuple[str, str]] | None = None,
    default_class: str | None = None,
) -> EvalSet:
    """Read pcaps into one EvalSet. A flow's class comes from the manifest (by file name or
    path), else the pcap's companion labels CSV, else ``default_class``; otherwise unlabelled."""
    from pytrafgen import assemble_flows, read_pcap

    parts: list[tuple[Any, Sequence[str | None] | str | None]] = []
    kinds: dict[str, str] = {}
    sources: list[str] = []
    for path in paths:
        path = Path(path)
        table = read_pcap(path)
        sources.append(str(path))
        entry = None
        if manifest is not None:
            entry = manifest.get(path.name) or manifest.get(str(path))
        if entry is not None:
            parts.append((table, entry[0]))
            if entry[1]:
                kinds[entry[0]] = entry[1]
        elif (companion := companion_labels(path)) is not None:
            flows = assemble_flows(table)
            parts.append((table, label_flows_by_key(flows, read_labels_csv(companion), companion)))
        else:
            parts.append((table, default_class))
    return evalset_from_tables(parts, name, kinds, sources)


def stratified_split(labels: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow indices of a (train, test) split stratified by label; every class with at least
    two flows lands on both sides."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_share)
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


__all__ = ["UNLABELLED", "ColumnTable", "EvalSet", "companion_labels", "evalset_from_tables", "load_evalset",
           "read_manifest", "stratified_split"]
