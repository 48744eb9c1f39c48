"""Captures + a labels manifest → a tokenized dataset (what ``pytrafgen tokenize`` runs).

Each capture is read in chunks, its flows assembled and encoded as they end
(:mod:`pytrafgen.tokenizer.stream`: bounded memory, the same flows and tokens as reading it
whole), in a worker process (files in parallel); every flow of a file gets the file's class. The flows of all files are then split
(by flow, stratified by class, seeded), the address plan is learned from the training flows,
and the dataset is written atomically.

The labels manifest is a CSV with at least ``file`` and ``class`` columns (``label``:
benign / malicious, optional; other columns ignored) — the format of the shared capture
manifests. A ``file`` entry is read relative to the manifest's own folder (or absolute); a
capture that no entry resolves to is matched by its file name when exactly one entry has
that name, so a manifest kept in another folder than its captures still labels them.
"""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.dataset import MappedFile, TokenParts
from pytrafgen.errors import DatasetError, PytrafgenError
from pytrafgen.tokenizer.encode import DEFAULT_MAX_APP_TOKENS
from pytrafgen.tokenizer.layout import DEFAULT_PAYLOAD_CAP
from pytrafgen.tokenizer.stream import DEFAULT_CHUNK_PACKETS, tokenize_file_stream
from pytrafgen.tokenizer.vocab import Vocabulary

if TYPE_CHECKING:
    from pytrafgen.payload_fill import PayloadFill
    from pytrafgen.protocol_spec import ProtocolSpec

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")


@dataclass(frozen=True)
class LabelEntry:
    path: Path
    class_name: str
    kind: str  # "benign", "malicious" or "unknown"


LABEL_KINDS = ("benign", "malicious")


def label_kind(value: str | None, where: str) -> str:
    """A manifest's ``label`` value: benign, malicious, or empty (unknown); else an error."""
    kind = (value or "").strip().lower()
    if not kind:
        return "unknown"
    if kind not in LABEL_KINDS:
        raise DatasetError(f"{where}: label {value!r} is not one of {', '.join(LABEL_KINDS)} "
                           f"(or empty); fix the 'label' column")
    return kind


def read_labels(manifest: str | Path) -> dict[Path, LabelEntry]:
    """Resolved capture path → its label entry, from a ``file,class[,label,…]`` CSV."""
    manifest = Path(manifest)
    try:
        with manifest.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if not {"file", "class"} <= columns:
                raise DatasetError(f"{manifest}: labels manifest needs columns 'file' and 'class' "
                                   f"(has: {', '.join(sorted(columns)) or 'none'})")
            rows = list(reader)
    except FileNotFoundError:
        raise DatasetError(f"{manifest}: labels manifest not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{manifest}: not a readable CSV ({exc})") from None
    entries: dict[Path, LabelEntry] = {}
    for line, row in enumerate(rows, start=2):
        name, cls = (row.get("file") or "").strip(), (row.get("class") or "").strip()
        if not name or not cls:
            raise DatasetError(f"{manifest}: line {line}: empty 'file' or 'class'")
        path = (manifest.parent / name).resolve()
        kind = label_kind(row.get("label"), f"{manifest}: line {line}")
        entries[path] = LabelEntry(path, cls, kind)
    return entries


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Capture files named directly or found (recursively, sorted) in the directories named."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in CAPTURE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or directory")
    if not files:
        raise DatasetError("no capture files found in " + ", ".join(str(i) for i in inputs))
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return unique


def tokenize_file(path: str, class_index: int, vocab_json: dict[str, Any], idle_timeout_s: float,
                  max_flow_packets: int, max_app_tokens: int,
                  protocols: Mapping[str, ProtocolSpec] | None = None, chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                  on_read: Callable[[int, int], None] | None = None, spill: str | None = None) -> dict[str, Any]:
    """One capture → its flows' tokens and what the address plan and the payload fill need (runs
    in a worker, which gets the parent's app protocol specs pickled: it sees the same plugins as
    the parent). ``chunk_packets``: records read at a time (0: the whole capture at once);
    ``on_read(offset, size)``: bytes of the file read so far, after each chunk; ``spill``: a
    file the streamed tokens go to instead of memory (``tokenize_file_stream``)."""
    from pytrafgen.capture import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.iat_fill import flow_gap_samples
    from pytrafgen.payload_fill import flow_payload_samples
    from pytrafgen.tokenizer.encode import encode_flows

    vocab = Vocabulary.from_json(vocab_json)
    if chunk_packets > 0:
        try:
            return tokenize_file_stream(path, class_index, vocab, idle_timeout_s, max_flow_packets, max_app_tokens,
                                        protocols, chunk_packets, on_read, spill)
        except PytrafgenError as exc:  # one-argument error: it crosses the process boundary intact
            raise DatasetError(str(exc)) from None
    try:
        table = read_pcap(path)
        flows = assemble_flows(table, idle_timeout_s=idle_timeout_s, max_flow_packets=max_flow_packets)
    except PytrafgenError as exc:  # one-argument error: it crosses the process boundary intact
        raise DatasetError(str(exc)) from None
    labels = np.full(len(flows), class_index, np.int32)
    enc = encode_flows(table, flows, labels, vocab, protocols, max_app_tokens=max_app_tokens)
    kept = enc.encoded_flows
    lengths = np.diff(enc.offsets)[kept]
    first = np.asarray(flows.first_packet, np.int64)[kept]
    tails, heads = flow_payload_samples(table, flows, kept, vocab.payload_cap)
    return {
        "path": path,
        "tokens": enc.tokens,
        "lengths": lengths,
        "packets": len(table),
        "flows": len(flows),
        "encoded_packets": enc.packets,
        "skipped": {**{f"read_{k}": int(v) for k, v in table.skipped.items()}, **enc.skipped},
        "app_packets": enc.app_packets,
        # what AddressPlan.learn reads: each kept flow's first packet and its roles' addresses
        "first_packets": first_packet_heads(table, first),
        "l3": np.asarray(flows.l3)[kept],
        "client_addr": np.asarray(flows.client_addr)[kept],
        "server_addr": np.asarray(flows.server_addr)[kept],
        "first_direction": np.asarray(flows.direction)[first],
        # what PayloadFill.learn reads: each kept flow's payload bytes past the cap and within it
        "payload_tails": tails,
        "payload_heads": heads,
        # what IatFill.learn reads: each kept flow's gaps between its packets
        "iat_gaps": flow_gap_samples(table, flows, kept),
    }


FRAME_HEAD = 12  # the Ethernet addresses: all AddressPlan.learn reads of a frame


def first_packet_heads(table: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What AddressPlan.learn reads of the packets ``rows``: time, link type, L3 offset and the
    first FRAME_HEAD bytes of the frame (zeros past a shorter one), in bulk rather than a copy
    of the whole rows."""
    from pytrafgen import _core

    lens = np.minimum(np.asarray(table.caplen)[rows], FRAME_HEAD).astype(np.uint32)
    got, _ = _core.gather_frames(table.data, np.asarray(table.frame_off, np.uint64)[rows], lens)
    heads = np.zeros((len(rows), FRAME_HEAD), np.uint8)
    heads[np.arange(FRAME_HEAD) < lens[:, None]] = got  # row-major: each frame's bytes, then zeros
    return {"ts_ns": np.asarray(table.ts_ns)[rows], "linktype": np.asarray(table.linktype)[rows],
            "l3_off": np.asarray(table.l3_off)[rows], "heads": heads}


def _learn_plan(results: list[dict[str, Any]], labels: np.ndarray, train: np.ndarray, classes: list[str]) -> Any:
    """The address plan from the training flows' first packets and addresses; each column is
    popped from the results as it is taken (nothing reads them after), so the training copy
    replaces the whole one in memory rather than adding to it."""
    from pytrafgen.address_plan import AddressPlan

    def taken(pieces: list[np.ndarray]) -> np.ndarray:
        return pieces[0][train] if len(pieces) == 1 else np.concatenate(pieces)[train]

    firsts = [r.pop("first_packets") for r in results]
    heads = {key: taken([f.pop(key) for f in firsts]) for key in ("ts_ns", "linktype", "l3_off", "heads")}
    table = SimpleNamespace(ts_ns=heads["ts_ns"], linktype=heads["linktype"], l3_off=heads["l3_off"],
                            data=heads["heads"].reshape(-1),
                            frame_off=np.arange(len(train), dtype=np.int64) * FRAME_HEAD)
    flows = SimpleNamespace(
        l3=taken([r.pop("l3") for r in results]),
        client_addr=taken([r.pop("client_addr") for r in results]),
        server_addr=taken([r.pop("server_addr") for r in results]),
        direction=taken([r.pop("first_direction") for r in results]),
        first_packet=np.arange(len(train), dtype=np.int64),
    )
    return AddressPlan.learn(table, flows, labels[train], classes)


def read_label_files(manifests: Sequence[str | Path]) -> dict[Path, LabelEntry]:
    """The entries of several manifests; a capture they label differently is an error."""
    entries: dict[Path, LabelEntry] = {}
    for manifest in manifests:
        for path, entry in read_labels(manifest).items():
            if path in entries and entries[path] != entry:
                raise DatasetError(f"{path}: labelled both {entries[path].class_name!r} and "
                                   f"{entry.class_name!r} (in {manifest})")
            entries[path] = entry
    return entries


def match_labels(files: Sequence[Path], entries: dict[Path, LabelEntry],
                 manifests: Sequence[str | Path]) -> dict[Path, LabelEntry]:
    """Each capture's entry: by resolved path (``file`` relative to its manifest's folder), else
    by file name when exactly one entry has that name; a capture with neither is an error."""
    by_name: dict[str, list[LabelEntry]] = {}
    for known in entries.values():
        by_name.setdefault(known.path.name, []).append(known)
    matched: dict[Path, LabelEntry] = {}
    missing: list[Path] = []
    for f in files:
        entry = entries.get(f.resolve())
        if entry is None and len(by_name.get(f.name, [])) == 1:
            entry = by_name[f.name][0]
        if entry is None:
            missing.append(f)
        else:
            matched[f] = entry
    if missing:
        f = missing[0]
        how = (f"{len(by_name[f.name])} rows name {f.name} in different folders"
               if len(by_name.get(f.name, [])) > 1 else f"no row names {f.name}")
        raise DatasetError(
            f"{f}: not in the labels manifest {', '.join(str(m) for m in manifests)} ({how}; a 'file' entry "
            f"is read relative to the manifest's own folder, else matched by file name); add a row "
            f"'{f.name},CLASS,benign|malicious'"
            + (f" (and {len(missing) - 1} more files)" if len(missing) > 1 else ""))
    return matched


def tokenize_captures(inputs: Sequence[str | Path], labels_csv: str | Path | Sequence[str | Path],
                      out: str | Path, *,
                      payload_cap: int = DEFAULT_PAYLOAD_CAP, seed: int = 0, workers: int = 1,
                      idle_timeout_s: float = 120.0, max_flow_packets: int = 0,
                      max_app_tokens: int = DEFAULT_MAX_APP_TOKENS,
                      on_file_done: Callable[[Path], None] | None = None,
                      protocols: Mapping[str, ProtocolSpec] | None = None,
                      chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                      on_bytes: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Tokenize ``inputs`` into a dataset at ``out``; returns its manifest. ``labels_csv``: one
    labels manifest or several (each capture must be in one of them). ``chunk_packets``:
    records read at a time per capture (0: each capture whole, in memory; the dataset is the
    same). ``on_bytes(done, total)``: bytes of the captures read so far and their total size
    (per chunk with one worker, per file with several). The vocabulary gets the
    app protocols among ``protocols`` (name -> spec; None: the loaded plugins', resolved here:
    an edge, see docs/architecture.md)."""
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.encode import app_protocols_for

    manifests = [labels_csv] if isinstance(labels_csv, (str, Path)) else list(labels_csv)
    entries = match_labels(expand_inputs(inputs), read_label_files(manifests), manifests)
    files = list(entries)
    classes = sorted({entries[f].class_name for f in files})
    kinds: dict[str, str] = {}
    for f in files:
        kinds.setdefault(entries[f].class_name, entries[f].kind)
    if protocols is None:
        protocols = get_registry().protocols
    vocab = Vocabulary.for_protocols(protocols.values(), classes, payload_cap)
    apps = app_protocols_for(vocab, protocols)
    with _spill_dir(out, chunk_packets > 0) as spill_dir:
        spills = [str(spill_dir / f"{k}.tokens.u16") if spill_dir else None for k in range(len(files))]
        args: list[FileArgs] = [(str(f), classes.index(entries[f].class_name), vocab.to_json(), idle_timeout_s, max_flow_packets,
                 max_app_tokens, apps, chunk_packets) for f in files]
        ordered = _tokenize_files(args, spills, files, workers, on_file_done, on_bytes)
        return _write(ordered, args, spill_dir, out, vocab, classes, kinds, seed, payload_cap, idle_timeout_s,
                      max_flow_packets, max_app_tokens)


# tokenize_file's positional arguments for one capture
FileArgs = tuple[str, int, dict[str, Any], float, int, int, "Mapping[str, ProtocolSpec] | None", int]


def _tokenize_files(args: list[FileArgs], spills: list[str | None], files: list[Path], workers: int,
                    on_file_done: Callable[[Path], None] | None,
                    on_bytes: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """Each capture's ``tokenize_file`` result, in file order (workers in parallel)."""
    sizes = [f.stat().st_size for f in files]
    total_bytes, finished_bytes = sum(sizes), 0
    results: dict[str, dict[str, Any]] = {}
    if workers <= 1 or len(files) == 1:
        for a, size, spill in zip(args, sizes, spills, strict=True):
            def read_so_far(offset: int, _size: int, before: int = finished_bytes) -> None:
                if on_bytes:
                    on_bytes(before + offset, total_bytes)

            results[a[0]] = tokenize_file(*a, on_read=read_so_far, spill=spill)
            finished_bytes += size
            if on_bytes:
                on_bytes(finished_bytes, total_bytes)
            if on_file_done:
                on_file_done(Path(a[0]))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        with ProcessPoolExecutor(max_workers=min(workers, len(files)), mp_context=ctx) as pool:
            futures = {pool.submit(tokenize_file, *a, spill=spill): (a[0], size)
                       for a, size, spill in zip(args, sizes, spills, strict=True)}
            for fut in as_completed(futures):
                name, size = futures[fut]
                results[name] = fut.result()
                finished_bytes += size
                if on_bytes:
                    on_bytes(finished_bytes, total_bytes)
                if on_file_done:
                    on_file_done(Path(name))
    return [results[a[0]] for a in args]  # file order, whatever order workers finished in


@contextlib.contextmanager
def _spill_dir(out: str | Path, wanted: bool) -> Iterator[Path | None]:
    """A scratch folder beside ``out`` for the streamed tokens (removed afterwards), or None."""
    if not wanted:
        yield None
        return
    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.tokens-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _flow_tokens(ordered: list[dict[str, Any]], spill_dir: Path | None) -> np.ndarray | TokenParts:
    """Every flow's tokens in dataset order: concatenated in memory, or, for spilled captures,
    read where they lie (each spill mapped read-only, its flows in the order they finished):
    the dataset's split files are gathered from them directly, with no copy of every token."""
    if spill_dir is None:
        return np.concatenate([r["tokens"] for r in ordered]) if ordered else np.zeros(0, np.uint16)
    parts: list[np.ndarray | MappedFile] = []
    starts: list[np.ndarray] = []
    for r in ordered:
        if "spill" not in r:  # a capture without records, read whole: its tokens are in memory
            parts.append(r["tokens"])
            starts.append(np.cumsum(r["lengths"]) - r["lengths"])
            continue
        parts.append(MappedFile(r["spill"], np.uint16))
        starts.append(r["spill_starts"])
    part = np.repeat(np.arange(len(ordered)), [len(r["lengths"]) for r in ordered])
    return TokenParts(parts, part, np.concatenate(starts) if starts else np.zeros(0, np.int64))


SAMPLE_BLOCK_BYTES = 1 << 26  # payload sample bytes read back from a spill at a time (64 MB)


def _learn_fill(ordered: list[dict[str, Any]], labels: np.ndarray, train: np.ndarray, classes: list[str],
                payload_cap: int) -> PayloadFill:
    """The payload fill learned from the training flows' samples (``train``: a mask over the
    flows in dataset order), counted capture by capture and, for a spilled capture, a block of
    flows at a time read back from its sample spill: memory does not grow with the samples."""
    from pytrafgen.payload_fill import FlowByteSamples, PayloadFill, SampleCounts, count_samples

    counts: SampleCounts | None = None
    base = 0
    for r in ordered:
        n = len(r["lengths"])
        mine = np.flatnonzero(train[base:base + n])
        mine_labels = labels[base:base + n][mine]
        base += n
        if "sample_spill" not in r:  # popped: a capture's samples are dropped once counted
            tails, heads = r.pop("payload_tails").take(mine), r.pop("payload_heads").take(mine)
            counts = count_samples(tails, heads, mine_labels, len(classes), counts)
            continue
        spilled = MappedFile(r["sample_spill"], np.uint8)
        sizes = np.cumsum(r["sample_lens"][mine].sum(axis=1, dtype=np.int64))
        cuts = np.unique(np.r_[0, np.searchsorted(sizes, np.arange(1, int(sizes[-1]) // SAMPLE_BLOCK_BYTES + 1)
                                                  * SAMPLE_BLOCK_BYTES) if len(sizes) else [], len(mine)]).astype(np.int64)
        for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            flows = mine[lo:hi]
            tails, heads = FlowByteSamples.from_per_flow(spilled.array, r["sample_starts"][flows],
                                                         r["sample_lens"][flows])
            spilled.release()
            counts = count_samples(tails, heads, mine_labels[lo:hi], len(classes), counts)
    if counts is None:  # no capture at all: the empty counts
        empty = FlowByteSamples(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        counts = count_samples(empty, empty, np.zeros(0, np.int64), len(classes))
    return PayloadFill.from_counts(counts, classes, payload_cap)


def _write(ordered: list[dict[str, Any]], args: list[FileArgs], spill_dir: Path | None, out: str | Path,
           vocab: Vocabulary, classes: list[str], kinds: dict[str, str], seed: int, payload_cap: int,
           idle_timeout_s: float, max_flow_packets: int, max_app_tokens: int) -> dict[str, Any]:
    """Split the flows, learn the address plan, the payload fill and the gaps, write the dataset."""
    from pytrafgen.dataset import split_flows, write_dataset
    from pytrafgen.iat_fill import FlowGapSamples, IatFill

    files = [a[0] for a in args]
    tokens = _flow_tokens(ordered, spill_dir)
    lengths = np.concatenate([r["lengths"] for r in ordered])
    offsets = np.zeros(len(lengths) + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    labels = np.concatenate([np.full(len(r["lengths"]), a[1], np.int16) for r, a in zip(ordered, args, strict=True)])
    if len(labels) == 0:
        raise DatasetError("no flow could be tokenized from " + ", ".join(str(f) for f in files))
    split = split_flows(labels, seed)
    train = np.flatnonzero(split == 0)
    plan = _learn_plan(ordered, labels, train, classes)
    fill = _learn_fill(ordered, labels, split == 0, classes, payload_cap)
    # popped: each capture's gap samples are dropped once the training flows' are taken
    gaps = IatFill.learn_samples(FlowGapSamples.concat([r.pop("iat_gaps") for r in ordered]).take(train),
                                 labels[train], classes)
    sources = [{"file": r["path"], "class": classes[a[1]], "packets": r["packets"], "flows": r["flows"],
                "encoded_flows": len(r["lengths"]), "encoded_packets": r["encoded_packets"],
                # keys sorted: the counts of a capture read in chunks come in another order
                "skipped": dict(sorted(r["skipped"].items())), "app_packets": dict(sorted(r["app_packets"].items()))}
               for r, a in zip(ordered, args, strict=True)]
    settings = {"payload_cap": payload_cap, "idle_timeout_s": idle_timeout_s,
                "max_flow_packets": max_flow_packets, "max_app_tokens": max_app_tokens,
                "app_protocols": [p.name for p in vocab.app_protocols]}
    return write_dataset(out, vocab, tokens, offsets, labels, class_kinds=kinds, seed=seed, address_plan=plan,
                         payload_fill=fill, iat_fill=gaps,
                         settings=settings, sources=sources, split=split)


__all__ = ["LABEL_KINDS", "LabelEntry", "expand_inputs", "label_kind", "match_labels", "read_label_files", "read_labels", "tokenize_captures", "tokenize_file"]
