"""App spans sampled under the protocols' token automata (``ProtocolSpec.token_automaton``):
what the sampling grammar allows decodes, what the encoder writes is allowed, and the spans the
bundled default sampled that CoAP's decoder refused (each one a whole flow drawn again) are
out of the grammar now."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BUNDLED_CORPUS, captures_with, shared_ids

import pytrafgen
from pytrafgen.app_grammar import AutomatonBuilder, TokenAutomaton, decode_payloads
from pytrafgen.errors import TokenError
from pytrafgen.flows import assemble_flows
from pytrafgen.tokenizer import AppProtocol, Vocabulary, encode_flows
from pytrafgen.tokenizer.grammar import app_automata, sampling_grammar

pytrafgen_coap = pytest.importorskip("pytrafgen_coap", reason="pytrafgen-coap is not installed")
from pytrafgen_coap import CoapProtocol  # noqa: E402
from pytrafgen_coap.messages import build_message, parse_message  # noqa: E402
from pytrafgen_coap.tokens import TOKEN_ID, TOKEN_NAMES, decode_payload, encode_payload  # noqa: E402

COAP = CoapProtocol()
AUTOMATON = COAP.token_automaton()

# Spans the bundled default sampled for benign_coap (seed 0, before the automaton) that
# ``decode_payload`` refused, one per kind of failure seen (benchmarks/results/decode_redraws.md).
REFUSED_SPANS = {
    "app_end_inside_an_option": "VER:1 TYPE:CON CODE:0.04 0xf7 0x7d 0x01 TOKEN_END OPT:11 0x73 0x65 0x6e",
    "empty_span": "",
    "opt_end_closes_the_token": "VER:1 TYPE:ACK CODE:2.05 0x67 0x65 OPT_END",
    "code_twice": "VER:1 TYPE:ACK CODE:2.05 CODE:2.05 0xf1 0x59 0x01 TOKEN_END",
    "token_end_closes_an_option": "VER:1 TYPE:ACK CODE:2.04 0x22 0x22 0x2c 0x01 TOKEN_END OPT:11 0x74 0x63 TOKEN_END",
    "code_inside_the_token": "VER:1 TYPE:CON CODE:2.05 0x4e 0x47 0x58 CODE:2.05 0x01 TOKEN_END",
    "type_as_message_id": "VER:1 TYPE:CON CODE:0.01 TYPE:NON 0x46 0x01 TOKEN_END",
    "type_inside_an_option": "VER:1 TYPE:CON CODE:0.01 0xb5 0x03 0x01 TOKEN_END OPT:60 0x02 0x37 TYPE:NON",
    "byte_for_the_code": "VER:1 TYPE:NON 0xab 0xf1 0x02 CODE:2.02 0x8a OPT_END",
    "option_inside_the_token": "VER:1 TYPE:ACK CODE:2.04 0x31 0x30 OPT:60 0x02 0x32",
    "opt_end_inside_the_payload": "VER:1 TYPE:CON CODE:0.01 0xb5 0x63 0x01 TOKEN_END PAYLOAD 0x69 0x74 OPT_END",
    "version_as_message_id": "VER:1 TYPE:CON CODE:0.01 VER:1 TYPE:NON 0x01 TOKEN_END",
    "header_only": "VER:1 TYPE:CON CODE:0.01 0x12",
}


def ids(names: str) -> list[int]:
    return [TOKEN_ID[n] for n in names.split()]


def walk(automaton: TokenAutomaton, rng: np.random.Generator, stop: float = 0.15) -> list[int]:
    """A random span through the automaton: a uniform edge each step, ending at an accepting
    state with probability ``stop``."""
    out_edges: dict[int, list[tuple[int, int, int]]] = {}
    for state, first, stop_id, target in automaton.edges:
        out_edges.setdefault(state, []).append((first, stop_id, target))
    state, span = 0, list[int]()
    while not (state in automaton.accepting and (rng.random() < stop or len(span) > 400)):
        first, stop_id, target = out_edges[state][rng.integers(len(out_edges[state]))]
        span.append(int(rng.integers(first, stop_id)))
        state = target
    return span


@pytest.mark.parametrize("name", sorted(REFUSED_SPANS))
def test_spans_the_decoder_refuses_are_outside_the_automaton(name: str) -> None:
    span = ids(REFUSED_SPANS[name])
    with pytest.raises(TokenError):
        decode_payload(span)
    assert not AUTOMATON.accepts(span)


def test_every_span_the_automaton_accepts_decodes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        span = walk(AUTOMATON, rng)
        msg = parse_message(decode_payload(span))
        assert msg is not None and msg.error is None, [TOKEN_NAMES[t] for t in span]
        assert msg.version == span[0] - TOKEN_ID["VER:0"]


def test_the_automaton_accepts_what_the_encoder_writes() -> None:
    messages = [
        build_message({"type_name": "CON", "code_name": "0.01", "message_id": 0x1234, "token": b"\xab" * 8,
                       "options": [(11, "sensors"), (11, "temp"), (15, "unit=c"), (2000, b"\x01")]}),
        build_message({"type_name": "ACK", "code_name": "2.05", "message_id": 1, "token": b"",
                       "options": [(12, b"\x32")], "payload": b'{"t": 21.5}'}),
        build_message({"type_name": "ACK", "code": 0, "message_id": 7}),
        build_message({"type_name": "RST", "code": 0, "message_id": 9, "payload": b"x"}),
    ]
    for raw in messages:
        tokens = encode_payload(raw)
        assert tokens is not None and AUTOMATON.accepts(tokens), raw


def test_a_token_longer_than_8_bytes_is_not_sampled() -> None:
    span = ids("VER:1 TYPE:CON CODE:0.01 0x00 0x01 " + "0x41 " * 9 + "TOKEN_END")
    assert decode_payload(span)  # the decoder would absorb it (keeping 8 bytes) ...
    assert not AUTOMATON.accepts(span)  # ... but the encoder never writes one: not sampled


def _coap_vocab_and_flows() -> tuple[Vocabulary, list[np.ndarray]]:
    path = BUNDLED_CORPUS / "benign_coap.pcap"
    table = pytrafgen.read_pcap(path)
    flows = assemble_flows(table)
    vocab = Vocabulary(["benign_coap"], [AppProtocol("coap", "udp", COAP.token_names)], 16)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols={"coap": COAP},
                       max_app_tokens=2048)
    assert enc.app_packets.get("coap", 0) > 0
    return vocab, [enc.tokens[a:b] for a, b in zip(enc.offsets[:-1], enc.offsets[1:], strict=True) if b > a]


def test_sampling_grammar_accepts_every_real_coap_flow_and_refuses_the_slips() -> None:
    vocab, flows = _coap_vocab_and_flows()
    strict = sampling_grammar(vocab, {"coap": COAP})
    assert strict.n_states > vocab.grammar().n_states
    assert all(strict.accepts(f) for f in flows)  # what the encoder writes stays sampleable
    begin, end = vocab.app_begin("coap"), vocab.special("APP_END")
    flow = next(f for f in flows if (f == begin).any())
    at = int(np.flatnonzero(flow == begin)[0])
    close = at + int(np.flatnonzero(flow[at:] == end)[0])
    for name, names in REFUSED_SPANS.items():
        local = np.array(ids(names), dtype=np.int64) + begin + 1
        seq = np.concatenate([flow[:at + 1], local, flow[close:]])
        assert vocab.grammar().accepts(seq), name  # the structure alone allowed it
        assert strict.first_error(seq) == at + 1 + _refused_at(ids(names)), name


def _refused_at(span: Sequence[int]) -> int:
    """Where in ``span`` + APP_END the automaton stops: the first token it cannot read, or
    ``len(span)`` (the APP_END) where the span stops short of a whole message."""
    step = {(s, t): tgt for s, a, b, tgt in AUTOMATON.edges for t in range(a, b)}
    state = 0
    for k, tok in enumerate(span):
        if (state, tok) not in step:
            return k
        state = step[state, tok]
    assert state not in AUTOMATON.accepting
    return len(span)


# -- HTTP and MQTT: their decoders take any tokens (filling in what is missing); sampled under
# their automata, what they decode is a sequence the encoder writes, so nothing is filled in
APPS = ("coap", "http", "mqtt")


def _spec(name: str) -> Any:
    return pytest.importorskip(f"pytrafgen_{name}", reason=f"pytrafgen-{name} is not installed").__dict__[
        f"{name.capitalize() if name != 'coap' else 'Coap'}Protocol"]()


@pytest.mark.parametrize("name", ["http", "mqtt"])
def test_sampled_spans_are_sequences_the_encoder_writes(name: str) -> None:
    spec = _spec(name)
    automaton = spec.token_automaton()
    automaton.check(len(spec.token_names))
    rng = np.random.default_rng(7)
    spans = [walk(automaton, rng, 0.1) for _ in range(1500)]
    tokens = np.concatenate([np.array(s, np.int32) for s in spans])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in spans])]).astype(np.int64)
    # the C++ detokenizer takes only what the encoder writes: every sampled span is one
    detok = decode_payloads(spec.token_grammar(), len(spec.token_names), tokens, offsets)
    assert detok.ok.all(), f"{int((~detok.ok).sum())} sampled spans are not sequences the encoder writes"
    strict = importlib.import_module(f"pytrafgen_{name}.tokens").decode_payload
    for k, span in enumerate(spans):
        assert strict(span) == detok.data[detok.offsets[k]:detok.offsets[k + 1]].tobytes() == spec.decode(span, 0)


def test_sampled_mqtt_packets_have_the_flags_their_type_requires() -> None:
    from pytrafgen_mqtt.packets import plausible, split_packets
    from pytrafgen_mqtt.tokens import TOKEN_ID as MQTT_ID

    spec = _spec("mqtt")
    automaton = spec.token_automaton()
    assert not automaton.accepts([MQTT_ID[n] for n in ("TYPE:PUBACK", "FLAGS:1", "RL_DERIVED", "RAW", "0x00", "0x01",
                                                       "PKT_END")])
    assert not automaton.accepts([MQTT_ID[n] for n in ("TYPE:PUBACK", "FLAGS:0", "RL_DERIVED", "RAW", "PKT_END")])
    rng = np.random.default_rng(3)
    for _ in range(500):
        span = walk(automaton, rng, 0.5)
        if MQTT_ID["RL_EXPLICIT"] in span:
            continue  # a length given as bytes may announce more than follows (a packet cut short)
        data = spec.decode(span, 0)
        packets, consumed, error = split_packets(data)
        assert error is None and consumed == len(data) and plausible(packets)


def _real_spans(name: str, path: Path) -> list[list[int]]:
    spec = _spec(name)
    table = pytrafgen.read_pcap(path)
    flows = assemble_flows(table)
    out = []
    for i in np.flatnonzero((np.asarray(flows.flow_id) >= 0) & (np.asarray(table.payload_len) > 0)).tolist():
        tokens = spec.encode(table.payload(i), int(flows.direction[int(flows.flow_id[i])]))
        if tokens is not None:
            out.append(tokens)
    return out


REAL = [(name, path) for name in APPS
        for path in sorted({*captures_with(name), *BUNDLED_CORPUS.glob(f"*{name}*.pcap")})]


@pytest.mark.parametrize(("name", "path"), REAL, ids=[f"{n}-{i}" for (n, _), i in zip(
    REAL, shared_ids([p for _, p in REAL]), strict=True)])
def test_every_real_span_is_one_the_automaton_accepts(name: str, path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not found")
    automaton = _spec(name).token_automaton()
    spans = _real_spans(name, path)
    if not spans:
        pytest.skip(f"{path.name}: no {name} message the encoder tokenizes")
    refused = [s for s in spans if not automaton.accepts(s)]
    assert not refused, f"{len(refused)} of {len(spans)} spans refused"


def test_outside_app_spans_the_sampling_grammar_is_the_grammar() -> None:
    """Every state outside an app span allows the same tokens and leads to the same state (by
    name): a flow without app spans is drawn from the same masked distribution as before."""
    specs = {name: _spec(name) for name in APPS}
    vocab = Vocabulary(["a", "b"], [AppProtocol(n, s.transport, s.token_names) for n, s in specs.items()], 16)
    plain, strict = vocab.grammar(), sampling_grammar(vocab, specs)
    assert strict.n_states > plain.n_states
    index = {name: k for k, name in enumerate(strict.state_names)}
    for k, name in enumerate(plain.state_names):
        if ":app." in name:
            continue
        mine = index[name]
        assert np.array_equal(plain.allowed[k], strict.allowed[mine]), name
        for tok in np.flatnonzero(plain.allowed[k]):
            before, after = plain.state_names[plain.next_state[k, tok]], strict.state_names[strict.next_state[mine, tok]]
            assert after == before or (":app." in before and after.startswith(before + ":")), (name, tok)


class _Broken(CoapProtocol):
    def token_automaton(self) -> TokenAutomaton:
        a = AutomatonBuilder()
        s = a.state("s")
        a.edge(s, 0, 10, s)
        a.edge(s, 5, 6, s)  # not deterministic
        return a.build([s])


class _Raising(CoapProtocol):
    def token_automaton(self) -> TokenAutomaton:
        raise RuntimeError("boom")


@pytest.mark.parametrize("spec", [_Broken(), _Raising()], ids=["not_deterministic", "raises"])
def test_a_broken_automaton_leaves_the_span_unconstrained(spec: Any) -> None:
    vocab = Vocabulary(["benign_coap"], [AppProtocol("coap", "udp", COAP.token_names)], 16)
    assert app_automata(vocab, {"coap": spec}) == {}
    assert sampling_grammar(vocab, {"coap": spec}) is vocab.grammar()


def test_automaton_check_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="out of range"):
        TokenAutomaton(("s",), ((0, 0, 11, 0),), frozenset({0})).check(10)
    with pytest.raises(ValueError, match="no states"):
        TokenAutomaton(("s",), (), frozenset()).check(10)
    TokenAutomaton(("s",), ((0, 0, 10, 0),), frozenset({0})).check(10)


@pytest.mark.slow
def test_bundled_default_samples_every_class_without_app_redraws() -> None:
    from pytrafgen.generators import load_generator
    from pytrafgen.generators.ar.generator import ARGenerator
    from pytrafgen.plugins import get_registry

    gen = load_generator(Path(pytrafgen.__file__).parent / "data" / "default_model", None, get_registry())
    assert isinstance(gen, ARGenerator)
    gen.set_sampling(max_flow_packets=64)
    gen.show_progress = False
    counts = {name: 2 for name in gen.vocabulary().classes} | {"benign_coap": 8}
    records = gen.sample(counts, seed=0)
    assert records.n_flows == sum(counts.values())
    assert "app_decode_failed" not in gen.last_sample_stats["redrawn_reasons"], gen.last_sample_stats
