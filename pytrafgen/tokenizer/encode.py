"""Packets + flows → one token sequence per flow (the C++ encoder, plus app-protocol spans).

L3/L4 fields and payload bytes are encoded in C++ (``_core.encode_flows``, GIL released).
Flows that an application protocol plugin recognises (``ProtocolSpec.recognise`` on the
server port and the first payload each side sent) have each payload offered to the plugin's
``encode``; a payload it encodes — and decodes back to exactly the same bytes — is written as
``app.<name>`` begin token, its local tokens, ``APP_END`` instead of length + bytes. Any other
payload stays bytes, so every packet round-trips whatever the plugin does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytrafgen import _core
from pytrafgen.errors import PluginError, PytrafgenError
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.tokenizer.vocab import CORE_RANGE_NAMES, Vocabulary

if tuple(_core.tokenizer_range_names()) != CORE_RANGE_NAMES:  # a stale build would mis-encode silently
    raise ImportError("pytrafgen._core's token layout differs from pytrafgen.tokenizer.vocab; rebuild _core")

DEFAULT_MAX_APP_TOKENS = 512
PACKET_FIELDS = ("frame_off", "caplen", "ts_ns", "status", "l3", "proto", "ttl", "tos", "ip_flags", "icmp_type",
                 "icmp_code", "l3_off", "ip_hdr_len", "frag_offset", "l4_off", "l4_hdr_len", "tcp_flags",
                 "window", "urgent", "ip_id", "flow_label", "seq", "ack", "payload_off", "payload_len",
                 "payload_wirelen")


def codec_spec(vocab: Vocabulary) -> dict[str, Any]:
    """The vocabulary layout as the C++ codec takes it."""
    classes = vocab.ranges["class"]
    return {
        "layout": vocab.core_layout(),
        "class_start": classes.start,
        "n_classes": classes.size,
        "vocab_size": vocab.size,
        "payload_cap": vocab.payload_cap,
        "iat_edges": vocab.iat_edges_ns,
        "iat_values": vocab.iat_values_ns,
        "apps": vocab.app_table(),
    }


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


def _first_payloads(table: Any, flow_id: np.ndarray, direction: np.ndarray, flow_rows: np.ndarray
                    ) -> dict[tuple[int, int], int]:
    """Row of the first non-empty payload per (flow, direction), for the flows in ``flow_rows``."""
    cand = np.flatnonzero((flow_id >= 0) & (np.asarray(table.payload_len) > 0) & (np.asarray(table.status) == 0))
    cand = cand[np.isin(flow_id[cand], flow_rows)]
    key = flow_id[cand] * 2 + direction[cand]
    keys, first = np.unique(key, return_index=True)
    return {(int(k) // 2, int(k) % 2): int(cand[i]) for k, i in zip(keys, first, strict=True)}


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
    firsts = _first_payloads(table, flow_id, direction, candidates)
    with_payload = sorted({f for f, _ in firsts})
    chosen: dict[int, str] = {}
    for f in with_payload:
        transport = "tcp" if fproto[f] == 6 else "udp"
        client = table.payload(firsts[f, 0]) if (f, 0) in firsts else b""
        server = table.payload(firsts[f, 1]) if (f, 1) in firsts else b""
        for app in apps:
            if app.transport in ("", transport) and _plugin_call(
                    counts, app.name, protocols[app.name].recognise, int(flows.server_port[f]), client, server):
                chosen[f] = app.name
                break
    if not chosen:
        return empty
    begin_of = {app.name: vocab.app_begin(app.name) for app in apps}
    end_token = vocab.special("APP_END")
    rows = np.flatnonzero(np.isin(flow_id, np.fromiter(chosen, np.int64)) & (np.asarray(table.status) == 0)
                          & (np.asarray(table.payload_len) > 0)
                          & (np.asarray(table.payload_len) == np.asarray(table.payload_wirelen)))
    packet_idx: list[int] = []
    spans: list[np.ndarray] = []
    for i in rows:
        name = chosen[int(flow_id[i])]
        spec = protocols[name]
        payload = table.payload(int(i))
        d = int(direction[i])
        local = _plugin_call(counts, name, spec.encode, payload, d)
        if local is None:
            continue
        local = np.asarray(local, np.int64)
        n_local = len(spec.token_names)
        if local.ndim != 1:
            raise PluginError(f"protocol {name!r}: encode() must return a flat list of local token ids, "
                              f"got an array of shape {local.shape}")
        if len(local) and (local.min() < 0 or local.max() >= n_local):
            bad = int(local[(local < 0) | (local >= n_local)][0])
            raise PluginError(f"protocol {name!r}: encode() returned local token id {bad}, outside its "
                              f"{n_local} token_names (ids 0..{n_local - 1})")
        if len(local) > max_app_tokens:
            continue
        # only exact round trips become app tokens
        if _plugin_call(counts, name, spec.decode, local.tolist(), d) != payload:
            continue
        begin = begin_of[name]
        spans.append(np.concatenate([[begin], begin + 1 + local, [end_token]]).astype(np.uint16))
        packet_idx.append(int(i))
        counts[name] = counts.get(name, 0) + 1
    if not packet_idx:
        return empty
    offsets = np.zeros(len(spans) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in spans])
    return np.asarray(packet_idx, np.int64), offsets, np.concatenate(spans), counts


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
    packets = {name: getattr(table, name) for name in PACKET_FIELDS}
    packets["flow_id"] = flows.flow_id
    packets["direction"] = flows.direction
    flow_cols = {"l3": flows.l3, "proto": flows.proto, "client_port": flows.client_port,
                 "server_port": flows.server_port}
    tokens, offsets, n_packets, skipped = _core.encode_flows(
        packets, table.data, flow_cols, labels, codec_spec(vocab), app_packet, app_offsets, app_tokens)
    return EncodedFlows(tokens, offsets, int(n_packets), {k: int(v) for k, v in skipped.items() if v}, app_counts)


__all__ = ["EncodedFlows", "app_protocols_for", "codec_spec", "encode_flows"]
