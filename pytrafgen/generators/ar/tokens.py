"""What the AR generator takes from the tokenizer and dataset: special and class token ids, the
grammar as tensors, vocabulary persistence, and decoding sampled sequences into records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.errors import DatasetError
from pytrafgen.generators.ar.data import SpecialTokens

if TYPE_CHECKING:
    import torch

    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.ar.sample import GrammarTables
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.records import FieldRecords
    from pytrafgen.tokenizer.vocab import Vocabulary


def vocab_json(dataset: TrafficDataset) -> dict[str, Any]:
    return dataset.vocab.to_json()


def vocab_hash(body: dict[str, Any]) -> str:
    return str(body["hash"])


def vocab_from_json(body: dict[str, Any]) -> Vocabulary:
    from pytrafgen.tokenizer.vocab import Vocabulary

    return Vocabulary.from_json(body)


def vocab_size(vocab: Vocabulary) -> int:
    return int(vocab.size)


def address_plan_json(dataset: TrafficDataset) -> dict[str, Any]:
    path = dataset.path / "address_plan.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the dataset's address plan ({exc})") from None


def special_tokens(vocab: Vocabulary) -> SpecialTokens:
    return SpecialTokens(bos=vocab.special("BOS"), eos=vocab.special("EOS"), pkt=vocab.special("PKT"))


def class_tokens(vocab: Vocabulary) -> dict[str, int]:
    return {name: vocab.class_token(name) for name in vocab.classes}


def grammar_tables(vocab: Vocabulary, device: torch.device, n_tokens: int | None = None,
                   protocols: Mapping[str, ProtocolSpec] | None = None) -> GrammarTables:
    """The sampling grammar's tables; ``n_tokens`` > the vocabulary's size (a model with continuation
    tokens) widens them with tokens that are never allowed and lead nowhere. With ``protocols``,
    app spans follow the automata the protocols declare (``sampling_grammar``), so what is
    sampled decodes."""
    import torch

    from pytrafgen.generators.ar.sample import GrammarTables
    from pytrafgen.tokenizer.grammar import sampling_grammar

    grammar = sampling_grammar(vocab, protocols)
    allowed, next_state = grammar.torch_tables(device)
    allowed, next_state = allowed.bool(), next_state.long()
    extra = (n_tokens or allowed.size(1)) - allowed.size(1)
    if extra > 0:
        allowed = torch.cat([allowed, allowed.new_zeros((allowed.size(0), extra))], dim=1)
        next_state = torch.cat([next_state, next_state.new_full((next_state.size(0), extra), -1)], dim=1)
    return GrammarTables(allowed, next_state, int(grammar.start_state))


# positions after BOS CLASS whose tokens are restricted per class at sampling: ip_version, proto
HEADER_POSITIONS = 2


def header_tokens(tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray, classes: Sequence[str]
                  ) -> dict[str, list[list[int]]]:
    """Per class, the tokens its flows use at each restricted header position (IP version,
    transport protocol), so sampling never emits a flow kind the class (and the address plan
    learned from it) never had."""
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets)
    out: dict[str, list[list[int]]] = {}
    for k, name in enumerate(classes):
        mine = starts[(labels == k) & (lengths > 2 + HEADER_POSITIONS)]
        if len(mine):
            out[name] = [sorted(set(tokens[mine + 2 + j].astype(int).tolist())) for j in range(HEADER_POSITIONS)]
    return out


def longest_flows(tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray, classes: Sequence[str], pkt: int
                  ) -> dict[str, int]:
    """Per class, the most packets (PKT tokens) one of its flows has."""
    marks = np.flatnonzero(tokens == pkt)
    per_flow = np.diff(np.searchsorted(marks, offsets.astype(np.int64)))
    return {name: int(per_flow[labels == k].max()) for k, name in enumerate(classes) if (labels == k).any()}


def header_masks(header: dict[str, list[list[int]]], vocab_size: int) -> dict[str, np.ndarray]:
    """(HEADER_POSITIONS, V) bool masks from ``header_tokens``."""
    masks = {}
    for name, positions in header.items():
        mask = np.zeros((len(positions), vocab_size), dtype=bool)
        for j, ids in enumerate(positions):
            mask[j, ids] = True
        masks[name] = mask
    return masks


def decodable(sequences: Sequence[np.ndarray], vocab: Vocabulary, reasons: dict[str, int],
              protocols: Mapping[str, ProtocolSpec] | None = None) -> list[bool]:
    """Whether each sequence decodes (application messages included) into a flow with at least
    one packet (the grammar allows an empty flow, which would write nothing); counts the
    failures' reasons into ``reasons``. One batch decode when all pass, per flow otherwise."""
    from pytrafgen.tokenizer import decode

    if not sequences:
        return []
    pkt = special_tokens(vocab).pkt
    has_packets = [bool((seq == pkt).any()) for seq in sequences]
    if not all(has_packets):
        reasons["no_packets"] = reasons.get("no_packets", 0) + has_packets.count(False)
    skipped: dict[str, int] = {}
    tokens, offsets = _concat(sequences)
    decode(tokens, offsets, vocab, skipped=skipped, protocols=protocols)
    if not skipped:
        return has_packets
    for reason, n in skipped.items():
        reasons[reason] = reasons.get(reason, 0) + n
    ok = []
    for seq, nonempty in zip(sequences, has_packets, strict=True):
        one: dict[str, int] = {}
        decode(seq, np.array([0, len(seq)], np.int64), vocab, skipped=one, protocols=protocols)
        ok.append(nonempty and not one)
    return ok


def _concat(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(list(sequences)).astype(np.uint16) if len(sequences) else np.zeros(0, np.uint16)
    return tokens, offsets


def decode_sequences(sequences: Sequence[np.ndarray], vocab: Vocabulary,
                     protocols: Mapping[str, ProtocolSpec] | None = None) -> FieldRecords:
    """Field records of ``BOS CLASS … EOS`` token sequences (classes from their class tokens)."""
    from pytrafgen.tokenizer import decode

    tokens, offsets = _concat(sequences)
    return decode(tokens, offsets, vocab, strict=True, protocols=protocols)


__all__ = [
    "HEADER_POSITIONS",
    "address_plan_json",
    "class_tokens",
    "decodable",
    "decode_sequences",
    "grammar_tables",
    "header_masks",
    "header_tokens",
    "longest_flows",
    "special_tokens",
    "vocab_from_json",
    "vocab_hash",
    "vocab_json",
    "vocab_size",
]
