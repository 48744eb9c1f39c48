"""One capture → its flows' tokens, read in chunks (what ``tokenize_file`` returns, in bounded memory).

The capture is read ``chunk_packets`` records at a time through the flow streaming that
``pytrafgen detect run`` uses (:func:`pytrafgen.detect.stream.iter_flow_batches`): a flow is
encoded in the batch that finishes it (idle timeout, a later flow on its 5-tuple, the packet
limit, or the end of the file), so the flows and their tokens are those of the whole capture
read at once. What the dataset needs of the whole capture is kept per finished flow and is
small: its tokens, 12 bytes of its first frame and a few header fields (for the address plan),
and at most ``TAIL_SAMPLE_BYTES`` of payload per direction within and past the payload cap
(for the payload fill), and its gaps between packets (for the gap table). The vocabulary
depends only on the classes and the protocols, never on the data. Flows come out in the order the in-memory path gives them (first packet), so
the dataset is byte for byte the same.

Memory: the chunk, the packets of the flows still open (those active within the idle
timeout), and the per-flow results above — not the capture. With a spill file (what
``pytrafgen tokenize`` uses) the tokens and the payload samples go to disk as flows finish,
and what stays in memory per flow is a few fixed-size columns (about 100 bytes: lengths,
offsets, addresses, the first frame's head).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.tokenizer.vocab import Vocabulary

# records read at a time: large enough that re-assembling the carried open flows with each
# chunk costs little, small enough that a chunk's frames stay within a few hundred MB
DEFAULT_CHUNK_PACKETS = 262_144
_FIRST_KEYS = ("ts_ns", "linktype", "l3_off", "heads")
SAMPLES_SUFFIX = ".samples"  # beside a capture's token spill: its flows' payload samples


def tokenize_file_stream(path: str, class_index: int, vocab: Vocabulary, idle_timeout_s: float,
                         max_flow_packets: int, max_app_tokens: int,
                         protocols: Mapping[str, ProtocolSpec] | None = None,
                         chunk_packets: int = DEFAULT_CHUNK_PACKETS,
                         on_read: Callable[[int, int], None] | None = None,
                         spill: str | None = None) -> dict[str, Any]:
    """``tokenize_file``'s result for ``path``, read ``chunk_packets`` records at a time;
    ``on_read(offset, size)`` after each chunk: the byte offset reached in the file and its
    size. ``spill``: a file the tokens are appended to as flows finish (uint16, in the order
    they finish), instead of being kept: the result then has ``spill`` and ``spill_starts``
    (each flow's first token in it) in place of ``tokens``; and the payload samples go to
    ``spill + SAMPLES_SUFFIX`` (``FlowByteSamples.per_flow``): ``sample_spill``,
    ``sample_starts`` and ``sample_lens`` in place of ``payload_tails`` and ``payload_heads``.
    A capture without any record is read whole (it is its header alone)."""
    # the flow streaming of ``detect run`` (imported here: pytrafgen.detect loads its models)
    from pytrafgen.detect.data import FlowSettings
    from pytrafgen.detect.stream import iter_flow_batches
    from pytrafgen.iat_fill import FlowGapSamples
    from pytrafgen.payload_fill import FlowByteSamples

    settings = FlowSettings(idle_timeout_s=idle_timeout_s, max_flow_packets=max_flow_packets)
    acc = _Accumulated()
    spill_file = open(spill, "wb") if spill else None  # noqa: SIM115 (closed below, also on errors)
    sample_file = open(spill + SAMPLES_SUFFIX, "wb") if spill else None  # noqa: SIM115 (the same)
    try:
        for batch in iter_flow_batches(path, settings, chunk_packets, on_read=on_read):
            acc.add(batch, class_index, vocab, protocols, max_app_tokens, spill_file, sample_file)
    finally:
        for f in (spill_file, sample_file):
            if f is not None:
                f.close()
    parts = acc.parts
    if not parts:  # no record at all: nothing to stream
        from pytrafgen.tokenizer.pipeline import tokenize_file

        return tokenize_file(path, class_index, vocab.to_json(), idle_timeout_s, max_flow_packets, max_app_tokens,
                             protocols, chunk_packets=0)
    order = np.argsort(np.concatenate([p.pop("first_row") for p in parts]), kind="stable")  # in-memory order

    def joined(key: str) -> np.ndarray:
        """One column in flow order; the batches' pieces are dropped as it is built, so at most
        one column is held twice (the per-flow results are what grows with the capture)."""
        return np.concatenate([p.pop(key) for p in parts])[order]

    lengths = joined("lengths")
    starts = joined("starts")  # each flow's first token, in the spill or in the tokens kept
    result: dict[str, Any] = {
        "path": path,
        "lengths": lengths,
        "packets": acc.packets,
        "flows": acc.flows,
        "encoded_packets": acc.encoded_packets,
        "skipped": {**acc.read_skipped, **acc.encode_skipped},
        "app_packets": acc.app_packets,
        "l3": joined("l3"),
        "client_addr": joined("client_addr"),
        "server_addr": joined("server_addr"),
        "first_direction": joined("first_direction"),
    }
    firsts = [p.pop("first_packets") for p in parts]
    result["first_packets"] = {}
    for key in _FIRST_KEYS:
        result["first_packets"][key] = np.concatenate([f.pop(key) for f in firsts])[order]
    result["iat_gaps"] = FlowGapSamples.concat([p.pop("iat_gaps") for p in parts]).take(order)
    if spill:
        result.update(spill=spill, spill_starts=starts, sample_spill=spill + SAMPLES_SUFFIX,
                      sample_starts=joined("sample_starts"), sample_lens=joined("sample_lens"))
    else:
        from pytrafgen.dataset import gather_token_ranges

        for key in ("payload_tails", "payload_heads"):
            result[key] = FlowByteSamples.concat([p.pop(key) for p in parts]).take(order)
        result["tokens"] = gather_token_ranges(np.concatenate(acc.tokens), starts, lengths)
    return result


class _Accumulated:
    """What the batches of one capture add up to: per finished flow, what the dataset needs
    (``parts``, one dict per batch), its tokens (spilled to a file, or kept in ``tokens``) and
    the capture's counts."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.tokens: list[np.ndarray] = []
        self.token_count = 0
        self.sample_count = 0
        self.packets = self.flows = self.encoded_packets = 0
        self.read_skipped: dict[str, int] = {}
        self.encode_skipped: dict[str, int] = {}
        self.app_packets: dict[str, int] = {}

    def add(self, batch: Any, class_index: int, vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec] | None,
            max_app_tokens: int, spill_file: BinaryIO | None, sample_file: BinaryIO | None) -> None:
        from pytrafgen.iat_fill import flow_gap_samples
        from pytrafgen.payload_fill import flow_payload_samples
        from pytrafgen.tokenizer.encode import encode_flows
        from pytrafgen.tokenizer.pipeline import first_packet_heads

        for k, v in batch.skipped.items():
            self.read_skipped[f"read_{k}"] = self.read_skipped.get(f"read_{k}", 0) + int(v)
        self.packets += int(batch.new_packets)
        done = np.flatnonzero(batch.done)
        self.flows += len(done)
        if not len(done) and self.parts:
            return  # the first batch always makes a part: the results' columns get their dtypes
        table, flows = batch.packets, batch.flows
        labels = np.full(len(flows), -1, np.int32)  # open flows wait for the batch that finishes them
        labels[done] = class_index
        enc = encode_flows(table, flows, labels, vocab, protocols, max_app_tokens=max_app_tokens)
        self.encoded_packets += enc.packets
        for counts, into in ((enc.skipped, self.encode_skipped), (enc.app_packets, self.app_packets)):
            for k, v in counts.items():
                into[k] = into.get(k, 0) + int(v)
        # the encoder counts a flow left out (label −1) as unsupported: the open ones are not
        unsupported = self.encode_skipped.pop("unsupported_flow", 0) - (len(flows) - len(done))
        if unsupported:
            self.encode_skipped["unsupported_flow"] = unsupported
        kept = enc.encoded_flows
        first = np.asarray(flows.first_packet, np.int64)[kept]
        tails, heads = flow_payload_samples(table, flows, kept, vocab.payload_cap)
        tokens = np.ascontiguousarray(enc.tokens, np.uint16)  # only the finished flows have tokens
        if spill_file is not None:
            tokens.tofile(spill_file)
        else:
            self.tokens.append(tokens)
        if sample_file is not None:  # spilled: a flow's samples are the largest thing kept of it
            data, lens = tails.per_flow(heads)
            data.tofile(sample_file)
            totals = lens.sum(axis=1, dtype=np.int64)
            samples: dict[str, Any] = {"sample_starts": self.sample_count + np.cumsum(totals) - totals,
                                       "sample_lens": lens}
            self.sample_count += len(data)
        else:
            samples = {"payload_tails": tails, "payload_heads": heads}
        self.parts.append({
            **samples,
            "first_row": batch.first_row[kept],
            "starts": self.token_count + enc.offsets[:-1][kept],
            "lengths": np.diff(enc.offsets)[kept],
            "first_packets": first_packet_heads(table, first),
            "l3": np.asarray(flows.l3)[kept],
            "client_addr": np.asarray(flows.client_addr)[kept],
            "server_addr": np.asarray(flows.server_addr)[kept],
            "first_direction": np.asarray(flows.direction)[first],
            "iat_gaps": flow_gap_samples(table, flows, kept),
        })
        self.token_count += len(tokens)


__all__ = ["DEFAULT_CHUNK_PACKETS", "SAMPLES_SUFFIX", "tokenize_file_stream"]
