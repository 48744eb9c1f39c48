"""The built-in statistical baseline ``markov``: a cheap lower bound for the learned generators.

Per class:

* **flow attributes** — (IP version, protocol, server port, packet count) drawn jointly from
  the empirical distribution of the class's training flows (a random training flow's tuple);
  client ports and inter-flow start gaps likewise from the class's empirical values.
* **packets** — a first-order Markov chain over packet *states* (direction, TCP flags,
  log₂ payload-length bucket, log₂ inter-arrival bucket), with a START state; transition counts
  are the class's training transitions. A state whose training packets were always last
  restarts from START's distribution (a new burst) while the flow still needs packets.
* **per-packet fields** in a state (exact IAT, TTL, TOS, IP flags, window, payload length,
  ICMP type/code) are emitted jointly from one real packet of that class and state (up to
  ``emission_rows`` kept per state).
* **payload** — real payload prefixes of the same class and direction with the nearest
  length (``EmpiricalParts``), not byte statistics: protocol syntax survives, at the cost of
  copying training bytes (the memorisation metric shows it). TCP seq/ack are made continuous.
* **gaps** — the training records are decoded from tokens, so an emitted gap is its IAT bucket's
  fixed value; where the dataset (then the checkpoint) has ``iat_fill.json``, ``sample`` draws
  each from the class's real gaps in that bucket, as the AR generator does (``pytrafgen.iat_fill``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pytrafgen.errors import CheckpointError, DatasetError, PytrafgenError
from pytrafgen.generators.baseline_ckpt import (
    counts_to_labels,
    read_checkpoint,
    write_checkpoint,
)
from pytrafgen.generators.baseline_data import (
    EmpiricalParts,
    FlowSet,
    TrainingSet,
    assemble_records,
    iat_bucket,
    length_bucket,
    renamed_settings,
)
from pytrafgen.hookspecs import hookimpl
from pytrafgen.interfaces import Generator
from pytrafgen.records import FieldRecords

if TYPE_CHECKING:
    from pytrafgen.iat_fill import IatFill

EMITTED_FIELDS = ("iat_ns", "ttl", "tos", "ip_flags", "window", "payload_len", "icmp_type", "icmp_code")
DEFAULTS: dict[str, Any] = {"seed": 0, "emission_rows": 64, "max_flows_per_class": 20000,
                            "payload_prefix_bytes": 512, "payload_per_key": 256}


def _state_keys(flows: FlowSet) -> np.ndarray:
    pk = flows.packets
    return (((pk["direction"].astype(np.int64) * 512 + pk["tcp_flags"]) * 32
             + length_bucket(pk["payload_len"])) * 64 + iat_bucket(pk["iat_ns"]))


def _group_starts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys of a sorted array and where each begins (plus the end)."""
    uniq, starts = np.unique(sorted_keys, return_index=True)
    return uniq, np.concatenate([starts, [len(sorted_keys)]]).astype(np.int64)


class MarkovGenerator(Generator):
    name: ClassVar[str] = "markov"
    description: ClassVar[str] = "per-class empirical flow attributes + Markov chain over packet field states"

    @classmethod
    def fit_setting_names(cls) -> frozenset[str]:
        return frozenset(DEFAULTS) | {"device", "quiet"}  # device/quiet: every CLI fit passes them

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = {**DEFAULTS, **renamed_settings(settings)}  # old checkpoints say payload_cap
        self.classes: list[str] = []
        self.class_kinds: list[str] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.parts: EmpiricalParts | None = None
        self.iat_fill: IatFill | None = None  # the dataset's gap table (None: gaps stay bucket values)
        self._source_dir: Path | None = None

    @property
    def trained_classes(self) -> list[str]:
        if not self.tensors:
            return []
        return [self.classes[int(c)] for c in np.unique(self.tensors["attr_label"])]

    def fit(self, dataset: Any, settings: Mapping[str, Any] | None = None) -> None:
        self.settings.update(dict(settings or {}))
        data = TrainingSet.from_dataset("markov", dataset, self.settings)
        self.classes, self.class_kinds, self.parts = data.classes, data.class_kinds, data.parts
        self._source_dir, flows = data.source_dir, data.flows
        from pytrafgen.iat_fill import FILE_NAME, IatFill  # here: listing plugins stays fast

        self.iat_fill = IatFill.load(self._source_dir / FILE_NAME) if self._source_dir is not None else None
        rng = np.random.default_rng(int(self.settings["seed"]))

        keep_flow = np.zeros(flows.n_flows, bool)
        for c in np.unique(flows.label):
            mine = np.flatnonzero(flows.label == c)
            cap = int(self.settings["max_flows_per_class"])
            keep_flow[rng.choice(mine, cap, replace=False) if len(mine) > cap else mine] = True
        attrs = np.stack([flows.label, flows.ip_version, flows.proto, flows.server_port, flows.lengths], 1)

        keys = _state_keys(flows)
        state_keys, state_of = np.unique(keys, return_inverse=True)
        n_states = len(state_keys)
        flow_of = flows.packets["flow"]
        cls_of = flows.label[flow_of].astype(np.int64)
        prev = np.concatenate([[n_states], state_of[:-1]])  # n_states is START
        prev[flows.offsets[:-1]] = n_states
        pair = (cls_of * (n_states + 1) + prev) * n_states + state_of
        pair_keys, pair_counts = np.unique(pair, return_counts=True)

        # Emission rows: up to ``emission_rows`` random real packets per (class, state).
        group = cls_of * n_states + state_of
        perm = rng.permutation(len(group))
        order = perm[np.argsort(group[perm], kind="stable")]
        sorted_group = group[order]
        _, starts = _group_starts(sorted_group)
        rank = np.arange(len(order)) - np.repeat(starts[:-1], np.diff(starts))
        rows = order[rank < int(self.settings["emission_rows"])]
        rows = rows[np.argsort(group[rows], kind="stable")]

        self.tensors = {
            "attrs": attrs[keep_flow].astype(np.int64),
            "attr_label": flows.label[keep_flow].astype(np.int16),
            "state_keys": state_keys.astype(np.int64),
            "transition_keys": pair_keys.astype(np.int64),
            "transition_counts": pair_counts.astype(np.int64),
            "emission_group": group[rows].astype(np.int64),
            **{f"emission.{f}": flows.packets[f][rows].astype(np.int64) for f in EMITTED_FIELDS},
        }

    def _require_fitted(self) -> EmpiricalParts:
        if self.parts is None or not self.tensors:
            raise DatasetError("markov: fit() or load() first")
        return self.parts

    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        parts = self._require_fitted()
        t = self.tensors
        labels = counts_to_labels(counts, self.classes, self.trained_classes)
        rng = np.random.default_rng(seed)
        if len(labels) == 0:
            return FieldRecords.empty(self.classes)
        if self.on_progress is not None:  # one vectorised walk: nothing finishes before the end
            self.on_progress(0, len(labels))
        attr_label = t["attr_label"]
        attrs = np.zeros((len(labels), 5), np.int64)
        for c in np.unique(labels):
            mine = np.flatnonzero(labels == c)
            pool = np.flatnonzero(attr_label == c)
            attrs[mine] = t["attrs"][rng.choice(pool, len(mine))]
        n_packets = np.maximum(attrs[:, 4], 1)
        states = self._walk(labels.astype(np.int64), n_packets, rng)

        n_states = len(t["state_keys"])
        flow = np.repeat(np.arange(len(labels)), n_packets)
        cls = labels.astype(np.int64)[flow]
        uniq, starts = _group_starts(t["emission_group"])
        gidx = np.searchsorted(uniq, cls * n_states + states)
        row = starts[gidx] + (rng.random(len(states)) * np.diff(starts)[gidx]).astype(np.int64)
        key = t["state_keys"][states]
        packets = {f: t[f"emission.{f}"][row] for f in EMITTED_FIELDS}
        packets.update(flow=flow, direction=key // (512 * 32 * 64), tcp_flags=(key // (32 * 64)) % 512)
        flows = {"label": labels, "ip_version": attrs[:, 1], "proto": attrs[:, 2], "server_port": attrs[:, 3]}
        records = assemble_records(self.classes, flows, packets, parts, rng)
        if self.iat_fill is not None:
            records = self.iat_fill.fill(records, seed)[0]
        if self.on_progress is not None:
            self.on_progress(len(labels), len(labels))
        return records

    def _walk(self, labels: np.ndarray, n_packets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """State ids of every packet, flows concatenated; one vectorised step per position."""
        t = self.tensors
        n_states = len(t["state_keys"])
        keys, counts = t["transition_keys"], t["transition_counts"]
        row_of_pair = keys // n_states  # (class, from) row ids, sorted because keys are sorted
        rows, row_starts = _group_starts(row_of_pair)
        cum = np.cumsum(counts)
        base = np.concatenate([[0], cum])
        offsets = np.concatenate([[0], np.cumsum(n_packets)])
        out = np.zeros(int(offsets[-1]), np.int64)
        current = np.full(len(labels), n_states, np.int64)
        for step in range(int(n_packets.max())):
            active = np.flatnonzero(n_packets > step)
            row_key = labels[active] * (n_states + 1) + current[active]
            pos = np.searchsorted(rows, row_key)
            found = (pos < len(rows)) & (rows[np.minimum(pos, len(rows) - 1)] == row_key)
            # dead end (only ever a last packet in training): restart from START
            start_key = labels[active] * (n_states + 1) + n_states
            pos = np.where(found, pos, np.searchsorted(rows, start_key))
            lo, hi = row_starts[pos], row_starts[pos + 1]
            target = base[lo] + rng.random(len(active)) * (base[hi] - base[lo])
            pick = np.minimum(np.searchsorted(cum, target, side="right"), hi - 1)
            nxt = keys[pick] % n_states
            out[offsets[active] + step] = nxt
            current[active] = nxt
        return out

    def save(self, path: Path) -> None:
        parts = self._require_fitted()
        config = {"generator": self.name, "format": 1, "classes": self.classes, "class_kinds": self.class_kinds,
                  "settings": self.settings}
        write_checkpoint(path, config, {**self.tensors, **parts.arrays()}, self._source_dir)

    @classmethod
    def load(cls, path: Path) -> MarkovGenerator:
        config, tensors = read_checkpoint(path, cls.name)
        gen = cls(config.get("settings"))
        gen.classes = list(config["classes"])
        gen.class_kinds = list(config.get("class_kinds", ["unknown"] * len(gen.classes)))
        gen.parts = EmpiricalParts.from_arrays(tensors)
        own = ("attrs", "attr_label", "state_keys", "transition_keys", "transition_counts", "emission_group")
        gen.tensors = {k: v for k, v in tensors.items() if k in own or k.startswith("emission.")}
        from pytrafgen.iat_fill import FILE_NAME, IatFill

        try:
            gen.iat_fill = IatFill.load(Path(path) / FILE_NAME)
            if gen.iat_fill is not None:
                gen.iat_fill.check_classes(gen.classes, str(path))
        except PytrafgenError as exc:
            raise CheckpointError(str(exc)) from None
        return gen


@hookimpl
def register_generators(register: Any) -> None:
    register(MarkovGenerator)
