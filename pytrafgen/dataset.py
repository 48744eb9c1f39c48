"""Tokenized datasets: a directory of uint16 token shards per split plus JSON metadata.

Layout (docs/architecture.md §4)::

    manifest.json        format, classes and their kinds, counts per split, vocabulary hash,
                         settings, seed, sources
    vocab.json           the Vocabulary (its hash is checked against the manifest on open)
    address_plan.json    AddressPlan learned from the training split
    payload_fill.json    PayloadFill: bytes past the payload cap, learned per class from the
                         training split (``pytrafgen.payload_fill``)
    iat_fill.json        IatFill: gaps between packets inside their IAT bucket, learned per
                         class from the training split (``pytrafgen.iat_fill``)
    {split}.tokens.u16   raw uint16 tokens of every flow of the split, concatenated
    {split}.offsets.npy  int64 (F + 1): flow k is tokens[offsets[k]:offsets[k+1]]
    {split}.labels.npy   int16 (F): class index per flow

Splits are by flow, stratified by class and reproducible by seed (``split_flows``).
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.atomic import atomic_dir
from pytrafgen.errors import DatasetError
from pytrafgen.tokenizer.vocab import Vocabulary

if TYPE_CHECKING:
    from pytrafgen.address_plan import AddressPlan
    from pytrafgen.iat_fill import IatFill
    from pytrafgen.payload_fill import PayloadFill
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.records import FieldRecords

PAYLOAD_FILL_FILE = "payload_fill.json"  # pytrafgen.payload_fill.FILE_NAME
IAT_FILL_FILE = "iat_fill.json"  # pytrafgen.iat_fill.FILE_NAME
DATASET_FORMAT = "pytrafgen-dataset"
DATASET_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_flows(labels: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per flow, stratified by class.

    Within each class the flows are shuffled with a generator seeded by ``(seed, class)``, so
    a class's split does not depend on which other classes are present. A class with at least
    3 flows gets at least one validation and one test flow.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise DatasetError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    labels = np.asarray(labels)
    split = np.zeros(len(labels), np.int8)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng = np.random.default_rng([int(seed), int(cls)])
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        if n >= 3:
            n_val = max(n_val, 1 if fractions[1] > 0 else 0)
            n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_val = min(n_val, n)
        n_test = min(n_test, n - n_val)
        split[idx[n - n_val - n_test: n - n_test]] = 1
        split[idx[n - n_test:]] = 2
    return split


WRITE_BLOCK_TOKENS = 1 << 24  # tokens gathered and written at a time (32 MB)


def _token_blocks(split_offsets: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) flow ranges of about WRITE_BLOCK_TOKENS tokens each (a longer flow alone)."""
    n = len(split_offsets) - 1
    if n <= 0:
        return []
    ends = np.searchsorted(split_offsets, np.arange(1, int(split_offsets[-1]) // WRITE_BLOCK_TOKENS + 1)
                           * WRITE_BLOCK_TOKENS, side="right") - 1
    bounds = np.unique(np.r_[0, np.clip(ends, 1, n), n])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def gather_token_ranges(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``tokens[starts[k]:starts[k]+lengths[k]]`` for every k, concatenated (C++, no per-token index)."""
    from pytrafgen import _core

    as_bytes = tokens.view(np.uint8)
    got, _ = _core.gather_frames(as_bytes, np.asarray(starts, np.uint64) * 2, np.asarray(lengths, np.uint32) * 2)
    return got.view(np.uint16)


class MappedFile:
    """A file mapped read-only as a numpy array (``array``) whose pages are handed back after
    each use (``release``: madvise DONTNEED; a clean file page touched again is read back from
    the page cache), so reading a large spill file through does not keep it resident."""

    def __init__(self, path: str | Path, dtype: Any) -> None:
        self._map: mmap.mmap | None = None
        if Path(path).stat().st_size == 0:  # an empty file cannot be mapped
            self.array = np.zeros(0, dtype)
            return
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.array = np.frombuffer(self._map, dtype)

    def release(self) -> None:
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


class TokenParts:
    """Flows' tokens held in several arrays (each capture's, e.g. its spill file mapped from
    disk), read where they lie rather than copied into one array first: flow k is
    ``parts[part[k]][start[k]:start[k] + length]``."""

    def __init__(self, parts: Sequence[np.ndarray | MappedFile], part: np.ndarray, start: np.ndarray) -> None:
        self.parts = list(parts)
        self.part = np.asarray(part, np.int64)
        self.start = np.asarray(start, np.int64)

    def gather(self, flows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The tokens of ``flows`` (of ``lengths`` tokens each), concatenated; one C++ gather
        per run of flows in the same part (flows in dataset order come in few runs)."""
        part = self.part[flows]
        cuts = np.r_[0, np.flatnonzero(part[1:] != part[:-1]) + 1, len(flows)]
        pieces = []
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            if b == a:
                continue
            source = self.parts[int(part[a])]
            array = source.array if isinstance(source, MappedFile) else source
            pieces.append(gather_token_ranges(array, self.start[flows[a:b]], lengths[a:b]))
            if isinstance(source, MappedFile):
                source.release()
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.uint16)


def write_dataset(path: str | Path, vocab: Vocabulary, tokens: np.ndarray | TokenParts, offsets: np.ndarray,
                  labels: np.ndarray, *, class_kinds: Mapping[str, str], seed: int,
                  address_plan: AddressPlan | None = None, payload_fill: PayloadFill | None = None,
                  iat_fill: IatFill | None = None,
                  settings: Mapping[str, Any] | None = None,
                  sources: Sequence[Mapping[str, Any]] = (), fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  split: np.ndarray | None = None) -> dict[str, Any]:
    """Write flows (``tokens[offsets[k]:offsets[k+1]]``, class ``labels[k]``) as a dataset, atomically.

    ``tokens`` may be a ``TokenParts`` (each flow's tokens where they lie; ``offsets`` then
    only gives their lengths). ``split`` (0/1/2 per flow) defaults to ``split_flows(labels,
    seed, fractions)``. Returns the manifest.
    """
    if not isinstance(tokens, TokenParts):
        tokens = np.ascontiguousarray(tokens, np.uint16)  # a memory-mapped token file stays mapped
    offsets = np.asarray(offsets, np.int64)
    labels = np.asarray(labels, np.int16)
    if len(offsets) != len(labels) + 1:
        raise DatasetError(f"{len(labels)} labels for {len(offsets) - 1} flows")
    if split is None:
        split = split_flows(labels, seed, fractions)
    packets_per_flow = np.zeros(len(labels), np.int64)  # from the PKT tokens, counted block by block
    pkt = vocab.special("PKT")
    counts: dict[str, Any] = {}
    with atomic_dir(path) as tmp:
        for s, name in enumerate(SPLITS):
            idx = np.flatnonzero(split == s)
            lengths = offsets[idx + 1] - offsets[idx]
            split_offsets = np.zeros(len(idx) + 1, np.int64)
            split_offsets[1:] = np.cumsum(lengths)
            # the split's flows in blocks of about WRITE_BLOCK_TOKENS tokens: memory does not grow
            # with the dataset (its tokens may be a file mapped from disk)
            with (tmp / f"{name}.tokens.u16").open("wb") as fh:
                for lo, hi in _token_blocks(split_offsets):
                    block = tokens.gather(idx[lo:hi], lengths[lo:hi]) if isinstance(tokens, TokenParts) \
                        else gather_token_ranges(tokens, offsets[idx[lo:hi]], lengths[lo:hi])
                    block.tofile(fh)
                    pkt_at = np.flatnonzero(block == pkt)
                    local = split_offsets[lo:hi + 1] - split_offsets[lo]
                    packets_per_flow[idx[lo:hi]] = np.bincount(np.searchsorted(local, pkt_at, side="right") - 1,
                                                               minlength=hi - lo)[:hi - lo]
            np.save(tmp / f"{name}.offsets.npy", split_offsets)
            np.save(tmp / f"{name}.labels.npy", labels[idx])
            per_class = np.bincount(labels[idx], minlength=len(vocab.classes)) if len(idx) else np.zeros(
                len(vocab.classes), np.int64)
            counts[name] = {
                "flows": len(idx),
                "packets": int(packets_per_flow[idx].sum()),
                "tokens": int(split_offsets[-1]),
                "per_class": {c: int(per_class[k]) for k, c in enumerate(vocab.classes)},
            }
        vocab.save(tmp / "vocab.json")
        if address_plan is not None:
            address_plan.save(tmp / "address_plan.json")
        if payload_fill is not None:
            payload_fill.save(tmp / PAYLOAD_FILL_FILE)
        if iat_fill is not None:
            iat_fill.save(tmp / IAT_FILL_FILE)
        manifest = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "classes": list(vocab.classes),
            "class_kinds": {c: class_kinds.get(c, "unknown") for c in vocab.classes},
            "vocab_hash": vocab.hash,
            "vocab_size": vocab.size,
            "seed": int(seed),
            "split_fractions": list(fractions),
            "settings": dict(settings or {}),
            "counts": counts,
            "sources": [dict(s) for s in sources],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


class TrafficDataset:
    """A tokenized dataset directory, opened read-only (token shards are memory-mapped).

    ``protocols``: protocol specs by name; the dataset keeps those of its vocabulary's app
    protocols (``self.protocols``), which decode its app tokens (``records``) and which a
    generator trained on it decodes with. None: the loaded plugins' (resolved here, once, and
    only when the vocabulary has app protocols: opening a dataset is one of the edges that
    resolve plugins, docs/architecture.md)."""

    def __init__(self, path: str | Path, protocols: Mapping[str, ProtocolSpec] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: not a dataset directory")
        try:
            self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        except FileNotFoundError:
            raise DatasetError(f"{self.path}: manifest.json missing (not a tokenized dataset?)") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.path}/manifest.json: not valid JSON ({exc})") from None
        if self.manifest.get("format") != DATASET_FORMAT:
            raise DatasetError(f"{self.path}: manifest.json is not a pytrafgen dataset manifest")
        if self.manifest.get("version") != DATASET_VERSION:
            raise DatasetError(f"{self.path}: dataset version {self.manifest.get('version')} is not supported")
        self.vocab = Vocabulary.load(self.path / "vocab.json")
        if self.vocab.hash != self.manifest.get("vocab_hash"):
            raise DatasetError(f"{self.path}: vocab.json (hash {self.vocab.hash}) is not the vocabulary the "
                               f"dataset was written with ({self.manifest.get('vocab_hash')})")
        self.protocols: dict[str, ProtocolSpec] = {}
        if self.vocab.app_protocols:
            from pytrafgen.plugins import get_registry
            from pytrafgen.tokenizer.encode import app_protocols_for

            self.protocols = app_protocols_for(self.vocab, get_registry().protocols if protocols is None else protocols)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def class_kinds(self) -> dict[str, str]:
        """Class name → "benign" / "malicious" (as the labels manifest said; "unknown" if it did not)."""
        return dict(self.manifest["class_kinds"])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    def _file(self, split: str, suffix: str) -> Path:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        f = self.path / f"{split}.{suffix}"
        if not f.exists():
            raise DatasetError(f"{f}: missing")
        return f

    def tokens(self, split: str) -> np.ndarray:
        """All tokens of the split (uint16, memory-mapped)."""
        f = self._file(split, "tokens.u16")
        if f.stat().st_size == 0:
            return np.zeros(0, np.uint16)
        return np.memmap(f, dtype=np.uint16, mode="r")

    def offsets(self, split: str) -> np.ndarray:
        offsets = np.load(self._file(split, "offsets.npy"))
        if offsets.ndim != 1 or offsets[-1] != self._file(split, "tokens.u16").stat().st_size // 2:
            raise DatasetError(f"{self.path}: {split}.offsets.npy does not match {split}.tokens.u16")
        return offsets

    def labels(self, split: str) -> np.ndarray:
        return np.load(self._file(split, "labels.npy"))

    def n_flows(self, split: str) -> int:
        return int(self.manifest["counts"][split]["flows"])

    def flow(self, split: str, k: int) -> np.ndarray:
        """The tokens of flow ``k`` of ``split``."""
        offsets = self.offsets(split)
        return np.asarray(self.tokens(split)[offsets[k]:offsets[k + 1]])

    def records(self, split: str, *, strict: bool = True) -> FieldRecords:
        """The split decoded into FieldRecords (flows in split order)."""
        from pytrafgen.tokenizer.decode import decode

        return decode(np.asarray(self.tokens(split)), self.offsets(split), self.vocab, strict=strict,
                      protocols=self.protocols)

    @cached_property
    def address_plan(self) -> AddressPlan:
        from pytrafgen.address_plan import AddressPlan

        f = self.path / "address_plan.json"
        if not f.exists():
            raise DatasetError(f"{f}: missing")
        return AddressPlan.load(f)

    def __repr__(self) -> str:
        counts = {s: self.manifest["counts"][s]["flows"] for s in SPLITS}
        return f"TrafficDataset({self.path}, classes={self.classes}, flows={counts}, vocab={self.vocab.hash})"


__all__ = ["DATASET_FORMAT", "SPLITS", "MappedFile", "TokenParts", "TrafficDataset", "split_flows", "write_dataset"]
