"""Run a detector over captures: one verdict per flow, streamed (see :mod:`.stream`)."""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from pytrafgen.detect.context import CONTEXT_NAMES, ContextWindow
from pytrafgen.detect.data import FlowSettings
from pytrafgen.detect.model import Detector
from pytrafgen.detect.stream import DEFAULT_CHUNK_PACKETS, FlowBatch, iter_flow_batches
from pytrafgen.errors import PytrafgenError

VERDICT_COLUMNS = ("file", "proto", "client_addr", "client_port", "server_addr", "server_port", "start", "end",
                   "packets", "bytes", "predicted_class", "probability", "verdict")
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


@dataclass
class Verdicts:
    """Verdicts for one batch of finished flows (columns, one entry per flow)."""

    file: str
    first_row: np.ndarray  # the flow's first packet, as a row of its capture
    proto: np.ndarray
    client_addr: np.ndarray  # (n, 16) uint8, IPv4 as IPv4-mapped IPv6
    client_port: np.ndarray
    server_addr: np.ndarray
    server_port: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    predicted: np.ndarray  # class index
    probability: np.ndarray

    def __len__(self) -> int:
        return len(self.predicted)


@dataclass
class RunSummary:
    classes: list[str]
    class_kinds: dict[str, str]
    flows: np.ndarray = field(init=False)
    packets: np.ndarray = field(init=False)
    bytes: np.ndarray = field(init=False)
    probability_sum: np.ndarray = field(init=False)
    skipped: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.classes)
        self.flows, self.packets = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.bytes, self.probability_sum = np.zeros(n, np.int64), np.zeros(n)

    def add(self, v: Verdicts) -> None:
        n = len(self.classes)
        self.flows += np.bincount(v.predicted, minlength=n)
        self.packets += np.bincount(v.predicted, weights=v.packets, minlength=n).astype(np.int64)
        self.bytes += np.bincount(v.predicted, weights=v.bytes, minlength=n).astype(np.int64)
        self.probability_sum += np.bincount(v.predicted, weights=v.probability, minlength=n)

    def to_json(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for i, c in enumerate(self.classes):
            rows.append({"class": c, "verdict": self.class_kinds.get(c, "unknown"), "flows": int(self.flows[i]),
                         "packets": int(self.packets[i]), "bytes": int(self.bytes[i]),
                         "mean_probability": float(self.probability_sum[i] / self.flows[i]) if self.flows[i] else None})
        malicious = sum(r["flows"] for r in rows if r["verdict"] == "malicious")
        return {"files": self.files, "flows": int(self.flows.sum()), "malicious_flows": malicious,
                "per_class": rows, "skipped": dict(self.skipped)}


def _address_strings(addrs: np.ndarray) -> list[str]:
    """Text of (F,16) IPv4-mapped/IPv6 addresses, formatting each distinct address once."""
    if len(addrs) == 0:
        return []
    unique, inverse = np.unique(np.ascontiguousarray(addrs).view(np.dtype((np.void, 16))).ravel(),
                                return_inverse=True)
    texts = []
    for raw in unique:
        address = ipaddress.IPv6Address(bytes(raw))
        texts.append(str(address.ipv4_mapped or address))
    return [texts[i] for i in inverse.ravel()]


Columns = dict[str, np.ndarray]


def _concat(parts: list[Columns]) -> Columns:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if len(parts) > 1 else parts[0]


def _pick(columns: Columns, select: np.ndarray) -> Columns:
    return {k: v[select] for k, v in columns.items()}


def iter_finished_flows(path: str | Path, settings: FlowSettings,
                        take: Callable[[FlowBatch, np.ndarray], Columns],
                        chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                        skipped: dict[str, int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, Columns]]:
    """Finished flows of one capture once their host context (:mod:`.context`) is final:
    ``(first_row, context, columns)`` in first-row order, where ``columns`` is what
    ``take(batch, done)`` returned (arrays with one entry per flow) for them when their batch
    finished them. A flow waits at most CONTEXT_WINDOW_S of capture time after its start."""
    window = ContextWindow()
    waiting: list[tuple[np.ndarray, np.ndarray, Columns]] = []  # (first_row, start clock, columns)

    def release(ready_only: bool, oldest_open: int) -> Iterator[tuple[np.ndarray, np.ndarray, Columns]]:
        """Yield the waiting flows whose context is final (all with ``ready_only`` False);
        ``oldest_open``: start clock of the oldest flow not finished yet (its window must stay)."""
        if not waiting:
            window.forget(oldest_open)
            return
        first_row = np.concatenate([w[0] for w in waiting])
        clock = np.concatenate([w[1] for w in waiting])
        columns = _concat([w[2] for w in waiting])
        ready = window.final(clock) if ready_only else np.ones(len(clock), bool)
        waiting.clear()
        if not ready.all():
            waiting.append((first_row[~ready], clock[~ready], _pick(columns, ~ready)))
        if ready.any():
            order = np.flatnonzero(ready)[np.argsort(first_row[ready], kind="stable")]
            yield first_row[order], window.context(first_row[order]), _pick(columns, order)
        window.forget(min(oldest_open, int(clock[~ready].min())) if not ready.all() else oldest_open)

    for batch in iter_flow_batches(path, settings, chunk_packets):
        if skipped is not None:
            for k, v in batch.skipped.items():
                skipped[k] = skipped.get(k, 0) + v
        f = batch.flows
        window.add(np.asarray(f.client_addr)[batch.new], np.asarray(f.server_port)[batch.new],
                   batch.start_clock[batch.new], batch.first_row[batch.new])
        done = np.flatnonzero(batch.done)
        if len(done):
            waiting.append((batch.first_row[done], batch.start_clock[done], take(batch, done)))
        still_open = batch.start_clock[~batch.done]
        yield from release(True, int(still_open.min()) if len(still_open) else window.newest)
    yield from release(False, window.newest)


def iter_verdicts(detector: Detector, path: str | Path, chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                  skipped: dict[str, int] | None = None) -> Iterator[Verdicts]:
    """Verdicts of every flow of one capture, batch by batch as flows finish and their host
    context is final."""

    def take(batch: FlowBatch, done: np.ndarray) -> Columns:
        f = batch.flows
        columns = {name: np.asarray(getattr(f, name))[done] for name in _FLOW_COLUMNS}
        # the context is not final yet: placeholder columns, filled in by with_context
        columns["inputs"] = detector.encode_selected(batch.packets, f, done, np.zeros((len(done), len(CONTEXT_NAMES))))
        return columns

    for first_row, context, c in iter_finished_flows(path, detector.header.settings, take, chunk_packets, skipped):
        proba = detector.predict_proba(detector.with_context(c["inputs"], context))
        predicted = proba.argmax(axis=1)
        yield Verdicts(str(path), first_row, c["proto"], c["client_addr"], c["client_port"], c["server_addr"],
                       c["server_port"], c["start_ns"], c["end_ns"], c["packets"], c["bytes"], predicted,
                       proba[np.arange(len(predicted)), predicted])


_FLOW_COLUMNS = ("proto", "client_addr", "client_port", "server_addr", "server_port", "start_ns", "end_ns",
                 "packets", "bytes")


def _iso(ns: np.ndarray) -> list[str]:
    """UTC ISO-8601 text of nanosecond timestamps, e.g. 2026-11-22T10:47:08.679486000Z."""
    return [t + "Z" for t in np.datetime_as_string(np.asarray(ns, np.int64).astype("datetime64[ns]"), unit="ns")]


CSV_SLICE = 16_384  # rows turned into text at a time (bounds the transient strings)


def write_verdict_rows(writer: Any, v: Verdicts, detector: Detector) -> None:
    classes = detector.header.classes
    kinds = {c: detector.header.verdict(c) for c in classes}
    for lo in range(0, len(v), CSV_SLICE):
        s = slice(lo, lo + CSV_SLICE)
        names = [classes[i] for i in v.predicted[s].tolist()]
        protos = [PROTO_NAMES.get(p, str(p)) for p in v.proto[s].tolist()]
        writer.writerows(zip([v.file] * len(names), protos, _address_strings(v.client_addr[s]),
                             v.client_port[s].tolist(), _address_strings(v.server_addr[s]), v.server_port[s].tolist(),
                             _iso(v.start_ns[s]), _iso(v.end_ns[s]), v.packets[s].tolist(), v.bytes[s].tolist(),
                             names, [f"{p:.4f}" for p in v.probability[s].tolist()], [kinds[c] for c in names],
                             strict=True))


def run_detector(detector: Detector, paths: Sequence[str | Path], out: IO[str] | None,
                 chunk_packets: int = DEFAULT_CHUNK_PACKETS) -> RunSummary:
    """Classify every flow of ``paths``; write the verdict CSV to ``out`` (if given)."""
    summary = RunSummary(list(detector.header.classes), dict(detector.header.class_kinds))
    writer = csv.writer(out) if out is not None else None
    if writer is not None:
        writer.writerow(VERDICT_COLUMNS)
    for path in paths:
        summary.files.append(str(path))
        before = int(summary.flows.sum())
        for verdicts in iter_verdicts(detector, path, chunk_packets, summary.skipped):
            summary.add(verdicts)
            if writer is not None:
                write_verdict_rows(writer, verdicts, detector)
        if int(summary.flows.sum()) == before:
            raise PytrafgenError(f"{path}: no IP traffic (no flows to classify)")
    return summary


__all__ = ["VERDICT_COLUMNS", "RunSummary", "Verdicts", "iter_verdicts", "run_detector"]
