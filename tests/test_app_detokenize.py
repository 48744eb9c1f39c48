"""The C++ detokenizer of the declared app grammars (``csrc/app_detokenize.hpp``,
``pytrafgen.app_grammar.decode_payloads``) gives the plugins' Python decoders' bytes — the
reference — byte for byte: on every span the encoder writes for every payload of every lab
capture (the shared captures where they are, else the bundled corpus), and on every mutated
span it accepts (the others it leaves to Python); and the token decoder gives the same records
with it as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_CAPTURES, shared_ids

from pytrafgen import _core
from pytrafgen.app_grammar import decode_payloads, encode_payloads
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.interfaces import ProtocolSpec
from pytrafgen.tokenizer import Vocabulary, encode_flows
from pytrafgen.tokenizer.decode import _app_decoder, _app_grammars

pytrafgen_http = pytest.importorskip("pytrafgen_http", reason="the pytrafgen-http plugin is not installed")
pytrafgen_mqtt = pytest.importorskip("pytrafgen_mqtt", reason="the pytrafgen-mqtt plugin is not installed")

PROTOCOLS: dict[str, ProtocolSpec] = {"http": pytrafgen_http.HttpProtocol(), "mqtt": pytrafgen_mqtt.MqttProtocol()}


def _spans(spec: ProtocolSpec, capture: Path) -> tuple[list[list[int]], list[bytes]]:
    """The local token spans the grammar encodes from the capture's payloads, and the payloads."""
    table = read_pcap(capture)
    rows = np.flatnonzero((np.asarray(table.payload_len) > 0) & (np.asarray(table.status) == 0))
    off = (np.asarray(table.frame_off, np.uint64) + np.asarray(table.payload_off, np.uint64))[rows]
    grammar = spec.token_grammar()
    assert grammar is not None
    got = encode_payloads(grammar, table.data, off, np.asarray(table.payload_len, np.uint32)[rows])
    spans = [got.tokens[got.offsets[i]:got.offsets[i + 1]].tolist() for i in np.flatnonzero(got.status == 1)]
    return spans, [table.payload(int(rows[i])) for i in np.flatnonzero(got.status == 1)]


def _detokenize(spec: ProtocolSpec, spans: list[list[int]]) -> list[bytes | None]:
    grammar = spec.token_grammar()
    assert grammar is not None
    offsets = np.zeros(len(spans) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in spans])
    flat = np.array([t for s in spans for t in s], np.int32)
    got = decode_payloads(grammar, len(spec.token_names), flat, offsets)
    return [got.data[got.offsets[i]:got.offsets[i + 1]].tobytes() if got.ok[i] else None for i in range(len(spans))]


def _python(spec: ProtocolSpec, tokens: list[int]) -> bytes | None:
    try:
        return spec.decode(tokens, 0)
    except Exception:
        return None


@pytest.mark.parametrize("capture", SHARED_CAPTURES, ids=shared_ids(SHARED_CAPTURES))
@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_encoded_span_detokenizes_to_the_payload_and_the_python_bytes(capture: Path, name: str) -> None:
    spec = PROTOCOLS[name]
    spans, payloads = _spans(spec, capture)
    if not spans:
        pytest.skip(f"{capture.name}: no payload is {name}")
    mine = _detokenize(spec, spans)
    for tokens, payload, got in zip(spans, payloads, mine, strict=True):
        assert got == payload, f"{name}: {payload[:80]!r}"
        assert _python(spec, tokens) == payload
    print(f"{capture.name}: {len(spans)} {name} spans detokenized in C++")


def _mutations(spans: list[list[int]], n_local: int, rng: np.random.Generator, count: int) -> list[list[int]]:
    """Spans with a token replaced, dropped, inserted or the end cut: what a sampler may slip."""
    out = []
    for _ in range(count):
        s = list(spans[int(rng.integers(len(spans)))])
        kind = int(rng.integers(4))
        at = int(rng.integers(len(s) + 1))
        near = [t for t in s if t > 255] or [0]
        tok = int(rng.choice(near)) if rng.random() < 0.7 else int(rng.integers(n_local))
        if kind == 0 and at < len(s):
            s[at] = tok
        elif kind == 1 and at < len(s):
            del s[at]
        elif kind == 2:
            s.insert(at, tok)
        else:
            s = s[:at]
        out.append(s)
    return out


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_a_mutated_span_the_detokenizer_accepts_has_the_python_bytes(name: str) -> None:
    spec = PROTOCOLS[name]
    spans: list[list[int]] = []
    for capture in SHARED_CAPTURES:
        spans += _spans(spec, capture)[0][:400]
    assert spans, "no lab capture holds this protocol"
    rng = np.random.default_rng(7)
    mutated = _mutations(spans, len(spec.token_names), rng, 3000)
    mine = _detokenize(spec, mutated)
    accepted = 0
    for tokens, got in zip(mutated, mine, strict=True):
        if got is not None:
            accepted += 1
            assert got == _python(spec, tokens), f"{name}: {tokens[:40]}"
    assert 0 < accepted < len(mutated)  # some slips still follow the grammar, some do not
    print(f"{name}: {accepted} of {len(mutated)} mutated spans decoded in C++, the rest left to Python")


def test_out_of_range_ids_and_bad_offsets_are_refused_not_crashed() -> None:
    spec = PROTOCOLS["http"]
    grammar = spec.token_grammar()
    assert grammar is not None
    got = decode_payloads(grammar, len(spec.token_names), np.array([-1, 5, 99999], np.int32), np.array([0, 1, 3]))
    assert not got.ok.any() and len(got.data) == 0
    with pytest.raises(ValueError):
        decode_payloads(grammar, len(spec.token_names), np.zeros(2, np.int32), np.array([0, 5]))


@pytest.mark.parametrize("capture", SHARED_CAPTURES[:5], ids=shared_ids(SHARED_CAPTURES[:5]))
def test_token_decoder_gives_the_same_records_with_the_cxx_detokenizer(capture: Path) -> None:
    table = read_pcap(capture)
    flows = assemble_flows(table)
    vocab = Vocabulary.for_protocols(PROTOCOLS.values(), ["c"], 64)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, PROTOCOLS)
    args = (enc.tokens, enc.offsets, vocab.codec_layout.to_core(), False, _app_decoder(vocab, PROTOCOLS))
    python_only = _core.decode_tokens(*args, None)
    with_cxx = _core.decode_tokens(*args, _app_grammars(vocab, PROTOCOLS))
    assert bytes(with_cxx["blob"]) == bytes(python_only["blob"])
    for part in ("packets", "flows"):
        for column, values in python_only[part].items():
            assert np.array_equal(with_cxx[part][column], values), column


def test_sampled_tokens_decode_to_the_same_records_with_the_cxx_detokenizer() -> None:
    """What the bundled AR model sampled (benchmarks/results/ar_tokens.npz, slips included)."""
    from pytrafgen.generators import load_generator
    from pytrafgen.tokenizer.encode import app_protocols_for

    repo = Path(__file__).resolve().parents[1]
    gen = load_generator(repo / "pytrafgen" / "data" / "default_model")
    # the AR generator's own vocabulary (not part of the Generator contract)
    vocab = gen.vocabulary()  # type: ignore[attr-defined]
    protocols = app_protocols_for(vocab, gen.protocols)
    sampled = np.load(repo / "benchmarks" / "results" / "ar_tokens.npz")
    args = (np.ascontiguousarray(sampled["tokens"], np.uint16), np.ascontiguousarray(sampled["offsets"], np.int64),
            vocab.codec_layout.to_core(), False, _app_decoder(vocab, protocols))
    python_only = _core.decode_tokens(*args, None)
    grammars = _app_grammars(vocab, protocols)
    # HTTP and MQTT declare grammars; CoAP (in the default's vocabulary) decodes in Python either way
    assert grammars is not None and sum(g is not None for g in grammars) >= 2
    with_cxx = _core.decode_tokens(*args, grammars)
    assert len(python_only["packets"]["flow"]) > 1000
    assert bytes(with_cxx["blob"]) == bytes(python_only["blob"])
    for part in ("packets", "flows"):
        for column, values in python_only[part].items():
            assert np.array_equal(with_cxx[part][column], values), column
