"""One capture → its flows' tokens, read in chunks (what ``tokenize_file`` returns, in bounded memory).

The capture is read ``chunk_packets`` records at a time through the flow streaming that
``pytrafgen detect run`` uses (:func:`pytrafgen.detect.stream.iter_flow_batches`): a flow is
encoded in the batch that finishes it (idle timeout, a later flow on its 5-tuple, the packet
limit, or the end of the file), so the flows and their tokens are those of the whole capture
read at once. What the dataset needs of the whole capture is kept per finished flow and is
small: its tokens, 12 bytes of its first frame and a few header fields (for the address plan),
and at most ``TAIL_SAMPLE_BYTES`` of payload per direction within and past the payload cap
(for the payload fill). The vocabulary depends only on the classes and the protocols, never
on the data. Flows come out in the order the in-memory path gives them (first packet), so
the dataset is byte for byte the same.

Memory: the chunk, the packets of the flows still open (those active within the idle
timeout), and the per-flow results above — not the capture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.tokenizer.vocab import Vocabulary

# records read at a time: large enough that re-assembling the carried open flows with each
# chunk costs little, small enough that a chunk's frames stay within a few hundred MB
DEFAULT_CHUNK_PACKETS = 262_144
_FIRST_KEYS = ("ts_ns", "linktype", "l3_off", "heads")


def tokenize_file_stream(path: str, class_index: int, vocab: Vocabulary, idle_timeout_s: float,
                         max_flow_packets: int, max_app_tokens: int,
                         protocols: Mapping[str, ProtocolSpec] | None = None,
                         chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                         on_read: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``tokenize_file``'s result for ``path``, read ``chunk_packets`` records at a time;
    ``on_read(offset, size)`` after each chunk: the byte offset reached in the file and its
    size. A capture without any record is read whole (it is its header alone)."""
    # the flow streaming of ``detect run`` (imported here: pytrafgen.detect loads its models)
    from pytrafgen.detect.data import FlowSettings
    from pytrafgen.detect.stream import iter_flow_batches
    from pytrafgen.payload_fill import FlowByteSamples, flow_payload_samples
    from pytrafgen.tokenizer.encode import encode_flows
    from pytrafgen.tokenizer.pipeline import first_packet_heads

    settings = FlowSettings(idle_timeout_s=idle_timeout_s, max_flow_packets=max_flow_packets)
    parts: list[dict[str, Any]] = []
    packets = flows_done = encoded_packets = 0
    read_skipped: dict[str, int] = {}
    encode_skipped: dict[str, int] = {}
    app_packets: dict[str, int] = {}
    for batch in iter_flow_batches(path, settings, chunk_packets, on_read=on_read):
        for k, v in batch.skipped.items():
            read_skipped[f"read_{k}"] = read_skipped.get(f"read_{k}", 0) + int(v)
        packets += int(batch.new_packets)
        done = np.flatnonzero(batch.done)
        flows_done += len(done)
        if not len(done) and parts:
            continue  # the first batch always makes a part: the results' columns get their dtypes
        table, flows = batch.packets, batch.flows
        labels = np.full(len(flows), -1, np.int32)  # open flows wait for the batch that finishes them
        labels[done] = class_index
        enc = encode_flows(table, flows, labels, vocab, protocols, max_app_tokens=max_app_tokens)
        encoded_packets += enc.packets
        for counts, into in ((enc.skipped, encode_skipped), (enc.app_packets, app_packets)):
            for k, v in counts.items():
                into[k] = into.get(k, 0) + int(v)
        # the encoder counts a flow left out (label −1) as unsupported: the open ones are not
        encode_skipped["unsupported_flow"] = encode_skipped.get("unsupported_flow", 0) - (len(flows) - len(done))
        if not encode_skipped["unsupported_flow"]:
            del encode_skipped["unsupported_flow"]
        kept = enc.encoded_flows
        first = np.asarray(flows.first_packet, np.int64)[kept]
        tails, heads = flow_payload_samples(table, flows, kept, vocab.payload_cap)
        parts.append({
            "first_row": batch.first_row[kept],
            "tokens": enc.tokens,  # only the finished flows have tokens: in kept order
            "lengths": np.diff(enc.offsets)[kept],
            "first_packets": first_packet_heads(table, first),
            "l3": np.asarray(flows.l3)[kept],
            "client_addr": np.asarray(flows.client_addr)[kept],
            "server_addr": np.asarray(flows.server_addr)[kept],
            "first_direction": np.asarray(flows.direction)[first],
            "payload_tails": tails,
            "payload_heads": heads,
        })
    if not parts:  # no record at all: nothing to stream
        from pytrafgen.tokenizer.pipeline import tokenize_file

        return tokenize_file(path, class_index, vocab.to_json(), idle_timeout_s, max_flow_packets, max_app_tokens,
                             protocols, chunk_packets=0)
    first_row = np.concatenate([p["first_row"] for p in parts])
    order = np.argsort(first_row, kind="stable")  # the in-memory path's flow order: by first packet
    lengths = np.concatenate([p["lengths"] for p in parts])
    tokens = np.concatenate([p["tokens"] for p in parts])
    starts = np.zeros(len(lengths), np.int64)
    starts[1:] = np.cumsum(lengths)[:-1]
    sorted_lengths = lengths[order]
    gather = np.arange(int(sorted_lengths.sum())) + np.repeat(
        starts[order] - np.r_[0, np.cumsum(sorted_lengths)[:-1]].astype(np.int64), sorted_lengths)

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])[order]

    return {
        "path": path,
        "tokens": tokens[gather],
        "lengths": sorted_lengths,
        "packets": packets,
        "flows": flows_done,
        "encoded_packets": encoded_packets,
        "skipped": {**read_skipped, **encode_skipped},
        "app_packets": app_packets,
        "first_packets": {key: np.concatenate([p["first_packets"][key] for p in parts])[order]
                          for key in _FIRST_KEYS},
        "l3": joined("l3"),
        "client_addr": joined("client_addr"),
        "server_addr": joined("server_addr"),
        "first_direction": joined("first_direction"),
        "payload_tails": FlowByteSamples.concat([p["payload_tails"] for p in parts]).take(order),
        "payload_heads": FlowByteSamples.concat([p["payload_heads"] for p in parts]).take(order),
    }


__all__ = ["DEFAULT_CHUNK_PACKETS", "tokenize_file_stream"]
