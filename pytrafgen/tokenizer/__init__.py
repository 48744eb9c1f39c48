"""The static protocol-field tokenizer: vocabulary, encoder, decoder and grammar (docs/tokenizer.md)."""

from __future__ import annotations

from pytrafgen.tokenizer.decode import DECODE_SKIP_REASONS, decode, decode_batch
from pytrafgen.tokenizer.encode import EncodedFlows, encode_flows
from pytrafgen.tokenizer.grammar import Grammar
from pytrafgen.tokenizer.layout import DEFAULT_PAYLOAD_CAP, CodecLayout
from pytrafgen.tokenizer.vocab import AppProtocol, FieldRange, Vocabulary

__all__ = [
    "DECODE_SKIP_REASONS",
    "DEFAULT_PAYLOAD_CAP",
    "AppProtocol",
    "CodecLayout",
    "EncodedFlows",
    "FieldRange",
    "Grammar",
    "Vocabulary",
    "decode",
    "decode_batch",
    "encode_flows",
]
