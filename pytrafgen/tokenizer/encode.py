"""Packets + flows → one token sequence per flow (the C++ encoder, plus app-protocol spans).

L3/L4 fields and payload bytes are encoded in C++ (``_core.encode_flows``, GIL released).
Flows that an application protocol plugin recognises (``ProtocolSpec.recognise`` on the
server port and the first payload each side sent) have each payload offered to the plugin's
``encode``; a payload it encodes — and decodes back to exactly the same bytes — is written as
``app.<name>`` begin token, its local tokens, ``APP_END`` instead of length + bytes. Any other
payload stays bytes, so every packet round-trips whatever the plugin does. A plugin that
declares its grammar (``ProtocolSpec.token_grammar``, ``pytrafgen.app_grammar``) has all its
payloads tokenized in C++ in one call instead, with the same tokens as its ``encode``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrafgen import _core
from pytrafgen.capture import PACKET_COLUMNS
from pytrafgen.errors import PluginError, PytrafgenError
from pytrafgen.flows import FLOW_COLUMNS, FLOW_PACKET_COLUMNS
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.tokenizer.vocab import CORE_RANGE_NAMES, Vocabulary

if tuple(_core.tokenizer_range_names()) != CORE_RANGE_NAMES:  # a stale build would mis-encode silently
    raise ImportError("pytrafgen._core's token layout differs from pytrafgen.tokenizer.vocab; rebuild _core")

DEFAULT_MAX_APP_TOKENS = 512
_ROW_COLUMNS = tuple(name for name in PACKET_COLUMNS if name != "data")  # ``data`` is passed on its own


def app_protocols_for(vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec] | None) -> dict[str, ProtocolSpec]:
    """The specs of the vocabulary's app protocols among ``protocols`` (name -> spec; missing
    ones are left out: their payloads stay bytes, their flows do not decode), in the order of
    ``protocols`` (the order recognition asks them in). ``protocols`` may
    be None only for a vocabulary without app protocols: the caller resolves the plugins (the
    registry's ``Registry.protocols``) and hands them down."""
    if not vocab.app_protocols:
        return {}
    if protocols is None:
        names = ", ".join(p.name for p in vocab.app_protocols)
        raise PytrafgenError(f"the vocabulary uses the application protocols {names}: pass their specs as "
                             "protocols= (the plugin registry's Registry.protocols)")
    known = {p.name for p in vocab.app_protocols}
    return {name: spec for name, spec in protocols.items() if name in known}  # in the order given


@dataclass
class EncodedFlows:
    """Token sequences of a FlowTable's flows: flow ``k`` is ``tokens[offsets[k]:offsets[k+1]]``
    (empty when the flow was not encoded). Unpacks as ``tokens, offsets``."""

    tokens: np.ndarray  # uint16
    offsets: np.ndarray  # int64, F + 1
    packets: int  # packets encoded
    skipped: dict[str, int] = field(default_factory=dict)  # by reason (flows for *_flow, else packets)
    # payloads encoded by each app protocol; "<name>_errors": calls in which the plugin raised
    app_packets: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.tokens, self.offsets))

    @property
    def encoded_flows(self) -> np.ndarray:
        """Indices of the flows that have a token sequence."""
        return np.flatnonzero(np.diff(self.offsets) > 0)


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, axis=0, return_index=True, return_inverse=True)`` without the unique
    rows (same groups, same order: rows sorted lexicographically, each group's first row), by
    one lexsort: numpy's row unique sorts a structured copy, several times slower."""
    if not len(keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort(keys.T[::-1])  # stable: a group's first row sorts first
    ranked = keys[order]
    starts = np.ones(len(order), bool)
    starts[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    group = np.empty(len(order), np.int64)
    group[order] = np.cumsum(starts) - 1
    return order[starts], group


def _flow_mask(flow_rows: np.ndarray, n_flows: int) -> np.ndarray:
    """(F,) bool: whether each flow is in ``flow_rows`` (a lookup per packet, not a sort)."""
    mask = np.zeros(n_flows, bool)
    mask[flow_rows] = True
    return mask


def _first_payloads(table: Any, flow_id: np.ndarray, direction: np.ndarray, flow_rows: np.ndarray,
                    n_flows: int) -> np.ndarray:
    """(F, 2) row of the first non-empty payload per flow and direction (-1: none), for the
    flows in ``flow_rows``."""
    cand = np.flatnonzero((flow_id >= 0) & (np.asarray(table.payload_len) > 0) & (np.asarray(table.status) == 0))
    cand = cand[_flow_mask(flow_rows, n_flows)[flow_id[cand]]]
    key = flow_id[cand] * 2 + direction[cand]
    keys, first = np.unique(key, return_index=True)
    out = np.full(2 * n_flows, -1, np.int64)
    out[keys] = cand[first]
    return out.reshape(n_flows, 2)


def _plugin_call(counts: dict[str, int], name: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or None when the plugin raises (counted as ``<name>_errors``): a broken
    plugin costs its payloads their app tokens (they stay bytes), never the run."""
    try:
        return fn(*args)
    except Exception:
        counts[f"{name}_errors"] = counts.get(f"{name}_errors", 0) + 1
        return None


def _app_spans(table: Any, flows: Any, vocab: Vocabulary, labels: np.ndarray,
               protocols: Mapping[str, ProtocolSpec], max_app_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Packet indices (sorted), span offsets and tokens of the payloads app protocols encode."""
    counts: dict[str, int] = {}
    empty = (np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.uint16), counts)
    # recognition asks the protocols in the order given (the registry's plugin order, see
    # docs/plugins.md "Conflicts"); the vocabulary's own order (by name) only lays out token ids
    by_name = {p.name: p for p in vocab.app_protocols}
    apps = [by_name[name] for name in protocols if name in by_name]
    if not apps or len(table) == 0:
        return empty
    flow_id = np.asarray(flows.flow_id, np.int64)
    direction = np.asarray(flows.direction, np.uint8)
    fproto = np.asarray(flows.proto)
    candidates = np.flatnonzero(np.isin(fproto, (6, 17)) & (labels >= 0))
    firsts = _first_payloads(table, flow_id, direction, candidates, len(fproto))
    with_payload = np.flatnonzero((firsts >= 0).any(axis=1))
    # Flows that open alike (a flood, a scan) are asked about once: recognise is a function of
    # its arguments, so flows are grouped by (transport, server port, both first payloads' length
    # and 128-bit digest) in bulk and one flow of each group is offered to the plugins.
    data = np.ascontiguousarray(table.data, np.uint8)
    rows = firsts[with_payload]
    starts = np.where(rows >= 0, (np.asarray(table.frame_off, np.int64) + np.asarray(table.payload_off, np.int64))[
        np.maximum(rows, 0)], 0)
    lengths = np.where(rows >= 0, np.asarray(table.payload_len, np.int64)[np.maximum(rows, 0)], 0)
    digests = _core.payload_digests(data, starts.reshape(-1), lengths.reshape(-1)).reshape(len(rows), 4)
    server_ports = np.asarray(flows.server_port, np.int64)[with_payload]
    keys = np.column_stack([fproto[with_payload].astype(np.uint64), server_ports.astype(np.uint64),
                            lengths.astype(np.uint64), digests])
    representative, group = _unique_rows(keys)
    buf = data.data
    names: list[str | None] = []
    for k in representative.tolist():
        transport = "tcp" if fproto[with_payload[k]] == 6 else "udp"
        client, server = (bytes(buf[int(starts[k, d]): int(starts[k, d] + lengths[k, d])]) for d in (0, 1))
        names.append(next((app.name for app in apps if app.transport in ("", transport) and _plugin_call(
            counts, app.name, protocols[app.name].recognise, int(server_ports[k]), client, server)), None))
    flow_app = np.array(names, dtype=object)[np.asarray(group).reshape(-1)]
    recognised = flow_app != None  # noqa: E711  (elementwise over an object array)
    chosen_ids = with_payload[recognised]
    chosen_app = flow_app[recognised]
    if not len(chosen_ids):
        return empty
    begin_of = {app.name: vocab.app_begin(app.name) for app in apps}
    end_token = vocab.special("APP_END")
    ok_rows = (np.asarray(table.status) == 0) & (np.asarray(table.payload_len) > 0) & (
        np.asarray(table.payload_len) == np.asarray(table.payload_wirelen))
    parts: list[_Spans] = []
    for app in apps:
        mine = chosen_ids[chosen_app == app.name]
        rows = np.flatnonzero(ok_rows & (flow_id >= 0) & _flow_mask(mine, len(fproto))[np.maximum(flow_id, 0)])
        if not len(rows):
            continue
        spec = protocols[app.name]
        hook = getattr(spec, "token_grammar", None)  # optional: older plugins do not define it
        grammar = _plugin_call(counts, app.name, hook) if callable(hook) else None
        if grammar is not None:
            part = _grammar_spans(table, rows, grammar, len(spec.token_names), max_app_tokens, counts, app.name)
        else:
            part = _python_spans(table, rows, direction, spec, max_app_tokens, counts, app.name)
        if len(part.packet):
            counts[app.name] = counts.get(app.name, 0) + len(part.packet)
            parts.append(part.as_tokens(begin_of[app.name], end_token))
    if not parts:
        return empty
    merged = _merge_spans(parts)
    return merged.packet, merged.offsets, np.asarray(merged.tokens, np.uint16), counts


@dataclass
class _Spans:
    """App spans of some packets (sorted): packet i's tokens are ``tokens[offsets[i]:offsets[i+1]]``."""

    packet: np.ndarray  # int64
    offsets: np.ndarray  # int64
    tokens: np.ndarray  # local ids (int), or vocabulary ids (uint16) once framed

    def as_tokens(self, begin: int, end: int) -> _Spans:
        """Local ids as vocabulary ids, each span framed by ``begin`` ... ``end``."""
        lens = np.diff(self.offsets)
        framed = np.empty(len(self.tokens) + 2 * len(lens), np.uint16)  # vocabulary ids fit 16 bits
        new_off = np.zeros(len(lens) + 1, np.int64)
        new_off[1:] = np.cumsum(lens + 2)
        framed[new_off[:-1]] = begin
        framed[new_off[1:] - 1] = end
        dest = np.arange(len(self.tokens)) + np.repeat(new_off[:-1] + 1 - self.offsets[:-1], lens)
        framed[dest] = self.tokens + (begin + 1)
        return _Spans(self.packet, new_off, framed)


def _gather(tokens: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``tokens[starts[k]:starts[k]+lens[k]]`` for every k, concatenated."""
    out_off = np.zeros(len(lens), np.int64)
    out_off[1:] = np.cumsum(lens)[:-1]
    return tokens[np.arange(int(lens.sum())) + np.repeat(starts - out_off, lens)]


def _merge_spans(parts: list[_Spans]) -> _Spans:
    """One set of spans, in packet order."""
    if len(parts) == 1:
        return parts[0]
    packet = np.concatenate([p.packet for p in parts])
    lens = np.concatenate([np.diff(p.offsets) for p in parts])
    base = np.cumsum([0] + [len(p.tokens) for p in parts[:-1]])
    starts = np.concatenate([p.offsets[:-1] + b for p, b in zip(parts, base, strict=True)])
    order = np.argsort(packet, kind="stable")
    offsets = np.zeros(len(order) + 1, np.int64)
    offsets[1:] = np.cumsum(lens[order])
    tokens = _gather(np.concatenate([p.tokens for p in parts]), starts[order], lens[order])
    return _Spans(packet[order], offsets, tokens)


def _grammar_spans(table: Any, rows: np.ndarray, grammar: Any, n_local: int, max_app_tokens: int,
                   counts: dict[str, int], name: str) -> _Spans:
    """Local tokens of the payloads of ``rows`` from the protocol's declared grammar (C++, in bulk)."""
    from pytrafgen.app_grammar import encode_payloads

    off = np.asarray(table.frame_off, np.uint64)[rows] + np.asarray(table.payload_off, np.uint64)[rows]
    got = _plugin_call(counts, name, encode_payloads, grammar, table.data, off,
                       np.asarray(table.payload_len, np.uint32)[rows])  # a malformed grammar raises
    if got is None or (len(got.tokens) and (got.tokens.min() < 0 or got.tokens.max() >= n_local)):
        if got is not None:  # token ids outside the protocol's local vocabulary: a broken grammar
            counts[f"{name}_errors"] = counts.get(f"{name}_errors", 0) + 1
        return _Spans(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    errors = int((got.status < 0).sum())
    if errors:
        counts[f"{name}_errors"] = counts.get(f"{name}_errors", 0) + errors
    lens = np.diff(got.offsets)
    keep = (got.status == 1) & (lens <= max_app_tokens)
    offsets = np.zeros(int(keep.sum()) + 1, np.int64)
    offsets[1:] = np.cumsum(lens[keep])
    return _Spans(rows[keep].astype(np.int64), offsets,
                  _gather(got.tokens, got.offsets[:-1][keep], lens[keep]))


def _python_spans(table: Any, rows: np.ndarray, direction: np.ndarray, spec: ProtocolSpec, max_app_tokens: int,
                  counts: dict[str, int], name: str) -> _Spans:
    """Local tokens of the payloads of ``rows`` from the plugin's Python ``encode``, once per
    distinct payload and direction (``encode`` is a function of its arguments: a flood's or a
    poll's repeated messages cost one call); only exact round trips are kept."""
    data = np.ascontiguousarray(table.data, np.uint8)
    start = np.asarray(table.frame_off, np.int64)[rows] + np.asarray(table.payload_off, np.int64)[rows]
    length = np.asarray(table.payload_len, np.int64)[rows]
    keys = np.column_stack([direction[rows].astype(np.uint64), length.astype(np.uint64),
                            _core.payload_digests(data, start, length)])
    first, group = _unique_rows(keys)
    n_local = len(spec.token_names)
    raw = data.data
    spans: list[np.ndarray | None] = []
    for k in first.tolist():
        payload = bytes(raw[int(start[k]): int(start[k] + length[k])])
        d = int(direction[rows[k]])
        local = _plugin_call(counts, name, spec.encode, payload, d)
        if local is None:
            spans.append(None)
            continue
        local = np.asarray(local, np.int64)
        if local.ndim != 1:
            raise PluginError(f"protocol {name!r}: encode() must return a flat list of local token ids, "
                              f"got an array of shape {local.shape}")
        if len(local) and (local.min() < 0 or local.max() >= n_local):
            bad = int(local[(local < 0) | (local >= n_local)][0])
            raise PluginError(f"protocol {name!r}: encode() returned local token id {bad}, outside its "
                              f"{n_local} token_names (ids 0..{n_local - 1})")
        # only exact round trips become app tokens
        ok = len(local) <= max_app_tokens and _plugin_call(counts, name, spec.decode, local.tolist(), d) == payload
        spans.append(local if ok else None)
    kept = np.array([s is not None for s in spans], bool)[group]
    lens = np.array([0 if s is None else len(s) for s in spans], np.int64)
    offsets = np.zeros(int(kept.sum()) + 1, np.int64)
    offsets[1:] = np.cumsum(lens[group[kept]])
    distinct = [s if s is not None else np.zeros(0, np.int64) for s in spans]
    flat = np.concatenate(distinct) if distinct else np.zeros(0, np.int64)
    flat_off = np.zeros(len(distinct) + 1, np.int64)
    flat_off[1:] = np.cumsum(lens)
    tokens = _gather(flat, flat_off[:-1][group[kept]], lens[group[kept]])
    return _Spans(rows[kept].astype(np.int64), offsets, tokens)


def core_columns(table: Any, flows: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The column dicts ``_core.encode_flows`` borrows (no copies): every PacketTable row column
    plus each packet's ``flow_id`` and ``direction``, and the FlowTable's per-flow columns."""
    packets = {name: getattr(table, name) for name in _ROW_COLUMNS}
    packets.update({name: getattr(flows, name) for name in FLOW_PACKET_COLUMNS})
    return packets, {name: getattr(flows, name) for name in FLOW_COLUMNS}


def encode_flows(table: Any, flows: Any, flow_labels: Sequence[int] | np.ndarray, vocab: Vocabulary,
                 protocols: Mapping[str, ProtocolSpec] | None = None,
                 max_app_tokens: int = DEFAULT_MAX_APP_TOKENS) -> EncodedFlows:
    """Encode every flow of ``flows`` (a FlowTable over ``table``, a PacketTable).

    ``flow_labels``: class index per flow (−1: leave the flow out). ``protocols``: protocol
    specs by name, needed when the vocabulary has app protocols (see ``app_protocols_for``). A payload
    whose app encoding is longer than ``max_app_tokens`` stays bytes (up to the payload cap),
    so one large message cannot blow up a flow's length.
    """
    labels = np.ascontiguousarray(flow_labels, dtype=np.int32)
    if labels.shape != (len(flows),):
        raise ValueError(f"flow_labels must have one entry per flow ({len(flows)}), got {labels.shape}")
    protocols = app_protocols_for(vocab, protocols)
    app_packet, app_offsets, app_tokens, app_counts = _app_spans(table, flows, vocab, labels, protocols,
                                                                  max_app_tokens)
    packets, flow_cols = core_columns(table, flows)
    tokens, offsets, n_packets, skipped = _core.encode_flows(
        packets, table.data, flow_cols, labels, vocab.codec_layout.to_core(), app_packet, app_offsets, app_tokens)
    return EncodedFlows(tokens, offsets, int(n_packets), {k: int(v) for k, v in skipped.items() if v}, app_counts)


__all__ = ["EncodedFlows", "app_protocols_for", "core_columns", "encode_flows"]
