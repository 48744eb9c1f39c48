"""Token sequences → FieldRecords (the C++ decoder; app-protocol spans detokenized in C++ by
their plugin's declared grammar where it has one and the span is one the encoder writes, else by
the plugin's ``decode``).

A malformed flow — truncated before ``EOS``, a token id outside the vocabulary, a class
token anywhere but right after ``BOS``, a field out of order, tokens other than ``PAD`` after
``EOS``, app tokens the protocol cannot decode — is never a crash: with ``strict=True`` it
raises :class:`~pytrafgen.errors.TokenError` naming the flow, the position and the token;
otherwise the flow is left out and counted in ``skipped`` under that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pytrafgen import _core
from pytrafgen.errors import TokenError
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords
from pytrafgen.tokenizer.encode import app_protocols_for
from pytrafgen.tokenizer.vocab import Vocabulary

DECODE_SKIP_REASONS = ("truncated", "out_of_range", "class_mid_flow", "wrong_order", "after_eos",
                       "app_decode_failed")


def _app_decoder(vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec]) -> Any:
    if not vocab.app_protocols:
        return None
    specs = [protocols.get(p.name) for p in vocab.app_protocols]
    # decode is a function of its arguments: spans that repeat (floods, polling, retries) are
    # decoded by the plugin once per call of ``decode``
    seen: dict[tuple[int, int, tuple[int, ...]], bytes | None] = {}

    def decode_span(index: int, local: list[int], direction: int) -> bytes | None:
        spec = specs[index]
        if spec is None:  # the plugin is not installed: the flow is skipped as app_decode_failed
            return None
        data = spec.decode(local, direction)
        return bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None

    def app_decode(index: int, local: list[int], direction: int) -> bytes | None:
        key = (index, direction, tuple(local))
        if key not in seen:
            try:
                seen[key] = decode_span(index, local, direction)
            except Exception:  # the flow is skipped as app_decode_failed, as before; so is its repeat
                seen[key] = None
        return seen[key]

    return app_decode


def _app_grammars(vocab: Vocabulary, protocols: Mapping[str, ProtocolSpec]) -> list[Any] | None:
    """Per app of the vocabulary: (its declared grammar as the core takes it, its local token
    count) for the C++ detokenizer, or None (no grammar: its Python decode only)."""
    if not vocab.app_protocols:
        return None
    out: list[Any] = []
    for p in vocab.app_protocols:
        spec = protocols.get(p.name)
        hook = getattr(spec, "token_grammar", None)  # optional: older plugins do not define it
        try:
            grammar = hook() if callable(hook) else None
            if grammar is None or spec is None:
                out.append(None)
                continue
            core = (grammar.to_core(), len(spec.token_names))
            _core.app_grammar_decode(*core, np.zeros(0, np.int32), np.zeros(1, np.int64))  # raises if malformed
            out.append(core)
        except Exception:  # a broken grammar costs speed, never the decode: Python decodes
            out.append(None)
    return out


def decode(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, *, strict: bool = False,
           skipped: dict[str, int] | None = None,
           protocols: Mapping[str, ProtocolSpec] | None = None) -> FieldRecords:
    """Decode flow ``k`` = ``tokens[offsets[k]:offsets[k+1]]`` for every k.

    An empty span (a flow the encoder left out) decodes to nothing and is not an error.
    Decoded flows start at 0 ns (timestamps are sums of the IAT buckets' values). ``skipped``,
    if given, receives the count of left-out flows by reason (see ``DECODE_SKIP_REASONS``).
    ``protocols``: protocol specs by name, needed when the vocabulary has app protocols.
    """
    tokens = np.asarray(tokens)
    if tokens.dtype != np.uint16:  # the encoder's own dtype needs no range check and no copy
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if len(tokens) and (tokens.min() < 0 or tokens.max() > 0xFFFF):
            # ids that do not even fit uint16 are out of range of any vocabulary
            bad = int(np.flatnonzero((tokens < 0) | (tokens > 0xFFFF))[0])
            if strict:
                raise TokenError(f"token {int(tokens[bad])} at position {bad} is outside the vocabulary")
            tokens = np.where((tokens < 0) | (tokens > 0xFFFF), 0xFFFF, tokens)
        tokens = tokens.astype(np.uint16)
    tokens = np.ascontiguousarray(tokens)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or np.any(np.diff(offsets) < 0) or (
            len(offsets) and (offsets[0] < 0 or offsets[-1] > len(tokens))):
        raise TokenError("offsets must be non-decreasing positions within the token array")
    protocols = app_protocols_for(vocab, protocols)
    res = _core.decode_tokens(tokens, offsets, vocab.codec_layout.to_core(), strict,
                              _app_decoder(vocab, protocols), _app_grammars(vocab, protocols))
    if res["first_error"] is not None:
        flow = int(res["error_flow"])
        pos = int(res["error_pos"])
        at = int(offsets[flow]) + pos
        token = (f"token {int(tokens[at])} ({_token_name(vocab, int(tokens[at]))})"
                 if at < offsets[flow + 1] else "the end of the flow")
        raise TokenError(f"flow {flow}: {res['first_error'].replace('_', ' ')} at position {pos}: {token}")
    if skipped is not None:
        for reason, count in res["errors"].items():
            if count:
                skipped[reason] = skipped.get(reason, 0) + int(count)
    packets = {name: np.asarray(res["packets"][name], dtype=dtype) for name, dtype in PACKET_COLUMNS.items()}
    flows = {name: np.asarray(res["flows"][name], dtype=dtype) for name, dtype in FLOW_COLUMNS.items()}
    return FieldRecords(packets=packets, flows=flows, blob=np.asarray(res["blob"], np.uint8),
                        classes=list(vocab.classes))


def _token_name(vocab: Vocabulary, token: int) -> str:
    try:
        return vocab.token_name(token)
    except ValueError:
        return "outside the vocabulary"


def decode_batch(rows: np.ndarray, vocab: Vocabulary, *, strict: bool = False,
                 skipped: dict[str, int] | None = None,
                 protocols: Mapping[str, ProtocolSpec] | None = None) -> FieldRecords:
    """Decode a (B, T) array whose rows are flows padded with ``PAD`` after ``EOS`` (sampler output)."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise TokenError(f"decode_batch expects a (flows, tokens) array, got shape {rows.shape}")
    offsets = np.arange(rows.shape[0] + 1, dtype=np.int64) * rows.shape[1]
    return decode(rows.reshape(-1), offsets, vocab, strict=strict, skipped=skipped, protocols=protocols)


__all__ = ["DECODE_SKIP_REASONS", "decode", "decode_batch"]
