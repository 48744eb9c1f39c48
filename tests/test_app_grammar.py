"""The declarative app-protocol grammars (``pytrafgen.app_grammar``, C++ ``csrc/app_grammar.hpp``)
give the same local tokens as the plugins' Python encoders — the reference — token for token,
on every payload of every lab capture (the shared captures where they are, else the bundled
corpus), whichever protocol the flow really carries; and malformed input never crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_CAPTURES, shared_ids

from pytrafgen.app_grammar import encode_payloads
from pytrafgen.capture import read_pcap
from pytrafgen.interfaces import ProtocolSpec

pytrafgen_http = pytest.importorskip("pytrafgen_http", reason="the pytrafgen-http plugin is not installed")
pytrafgen_mqtt = pytest.importorskip("pytrafgen_mqtt", reason="the pytrafgen-mqtt plugin is not installed")

PROTOCOLS: dict[str, ProtocolSpec] = {"http": pytrafgen_http.HttpProtocol(), "mqtt": pytrafgen_mqtt.MqttProtocol()}


def _reference(spec: ProtocolSpec, payload: bytes) -> tuple[int, list[int]]:
    """(status, tokens) as the Python path gives them: the encoder, kept only if it decodes back."""
    try:
        local = spec.encode(payload, 0)
    except Exception:
        return -1, []
    if local is None or spec.decode(local, 0) != payload:
        return 0, []
    return 1, list(local)


def _check(spec: ProtocolSpec, payloads: list[bytes]) -> int:
    data = np.frombuffer(b"".join(payloads), np.uint8)
    length = np.array([len(p) for p in payloads], np.uint32)
    off = np.concatenate([[0], np.cumsum(length[:-1], dtype=np.uint64)]).astype(np.uint64)
    grammar = spec.token_grammar()
    assert grammar is not None
    got = encode_payloads(grammar, data, off, length)
    encoded = 0
    for i, payload in enumerate(payloads):
        status, tokens = _reference(spec, payload)
        mine = got.tokens[got.offsets[i]:got.offsets[i + 1]].tolist()
        assert (int(got.status[i]), mine) == (status, tokens), f"{spec.name} payload {i}: {payload[:80]!r}"
        encoded += status == 1
    return encoded


@pytest.mark.parametrize("capture", SHARED_CAPTURES, ids=shared_ids(SHARED_CAPTURES))
@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_grammar_tokens_equal_the_python_encoder(capture: Path, name: str) -> None:
    table = read_pcap(capture)
    rows = np.flatnonzero((np.asarray(table.payload_len) > 0) & (np.asarray(table.status) == 0))
    payloads = [table.payload(int(i)) for i in rows]
    if not payloads:
        pytest.skip(f"{capture.name} has no payloads")
    encoded = _check(PROTOCOLS[name], payloads)
    print(f"{capture.name}: {name} encoded {encoded} of {len(payloads)} payloads")


HTTP_CASES = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost:a\r\nX-Odd:  two\r\n\r\n",
    b"FOO /x HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel",
    b"HTTP/1.1 200 Fine\r\nContent-Length: 00005\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 204\r\n\r\n",
    b"HTTP/1.1 299 \r\n\r\nbody to the end",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nhel",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n",
    b"\r\n\r\n",
    b"HTTP/1.1 20",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffffffff\r\nx",
]
MQTT_CASES = [
    bytes.fromhex("101000044d5154540402003c0004746573740000"),  # CONNECT with bytes left over
    bytes.fromhex("100c00044d5154540402003c0000"),  # CONNECT 3.1.1, empty client id
    bytes.fromhex("101000044d51545405020000000003616263") + b"",  # CONNECT 5.0
    bytes.fromhex("10110004") + b"MQTT" + bytes.fromhex("05020000ffffffff7f"),  # 5.0, props length over 4 bytes
    bytes.fromhex("100f00064d514973647003c2003c0001") + b"c",  # MQIsdp, flags announce user/pass missing
    bytes.fromhex("3007000174") + b"ab" + bytes.fromhex("c000"),  # PUBLISH + PINGREQ
    bytes.fromhex("32090001740001") + b"ab",  # QoS 1 PUBLISH
    bytes.fromhex("3603000174"),  # QoS 3
    bytes.fromhex("4001") + b"\x01",  # PUBACK with 1 byte: would decode padded
    bytes.fromhex("20020000"),  # CONNACK
    bytes.fromhex("208002"),  # CONNACK, non-minimal length, cut short
    bytes.fromhex("30ffffffff7f"),  # remaining length over 4 bytes
    bytes.fromhex("3005"),  # cut PUBLISH
    bytes.fromhex("00"),
    bytes.fromhex("e000f0"),
]


@pytest.mark.parametrize(("name", "payload"), [("http", p) for p in HTTP_CASES] + [("mqtt", p) for p in MQTT_CASES])
def test_edge_cases_match_the_reference(name: str, payload: bytes) -> None:
    _check(PROTOCOLS[name], [payload])


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_random_and_truncated_bytes_never_crash_and_match(name: str) -> None:
    rng = np.random.default_rng(5)
    seeds = HTTP_CASES if name == "http" else MQTT_CASES
    payloads = [bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8)) for _ in range(300)]
    payloads += [p[:k] for p in seeds for k in range(1, len(p) + 1)]
    payloads += [bytes(b ^ int(rng.integers(0, 256)) if rng.random() < 0.1 else b for b in p)
                 for p in seeds for _ in range(10)]
    _check(PROTOCOLS[name], payloads)


def test_out_of_range_payload_stays_bytes() -> None:
    grammar = PROTOCOLS["http"].token_grammar()
    assert grammar is not None
    got = encode_payloads(grammar, np.frombuffer(HTTP_CASES[0], np.uint8), np.array([0, 10, 2**40], np.uint64),
                          np.array([len(HTTP_CASES[0]), 100, 1], np.uint32))
    assert got.status.tolist() == [1, 0, 0]


@pytest.mark.parametrize("capture", SHARED_CAPTURES, ids=shared_ids(SHARED_CAPTURES))
def test_encode_flows_same_with_and_without_grammars(capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole tokenizer output (every flow's tokens, counts) is the same whether the plugins'
    grammars run in C++ or their Python ``encode`` does."""
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer import AppProtocol, Vocabulary, encode_flows

    table = read_pcap(capture)
    flows = assemble_flows(table)
    labels = np.zeros(len(flows), np.int32)
    vocab = Vocabulary(["c"], [AppProtocol(p.name, p.transport, tuple(p.token_names)) for p in PROTOCOLS.values()], 16)
    fast = encode_flows(table, flows, labels, vocab, protocols=PROTOCOLS)
    for spec in PROTOCOLS.values():
        monkeypatch.setattr(spec, "token_grammar", lambda: None)
    reference = encode_flows(table, flows, labels, vocab, protocols=PROTOCOLS)
    assert np.array_equal(fast.tokens, reference.tokens)
    assert np.array_equal(fast.offsets, reference.offsets)
    assert fast.app_packets == reference.app_packets
    assert fast.skipped == reference.skipped


class _BrokenGrammar(pytrafgen_http.HttpProtocol):
    """A grammar naming token ids outside the protocol's local vocabulary."""

    def token_grammar(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        good = super().token_grammar()
        return replace(good, tokens={role: 10_000 + i for i, role in enumerate(good.tokens)})


class _RaisingGrammar(pytrafgen_http.HttpProtocol):
    def token_grammar(self):  # type: ignore[no-untyped-def]
        from pytrafgen.app_grammar import TextGrammar

        return TextGrammar(tokens={}, methods={}, versions={}, statuses={}, standard_reasons={}, header_names={})


@pytest.mark.parametrize("spec", [_BrokenGrammar(), _RaisingGrammar()], ids=["ids_out_of_range", "roles_missing"])
def test_a_broken_grammar_costs_its_payloads_their_app_tokens_not_the_run(spec: ProtocolSpec) -> None:
    from pytrafgen.flows import assemble_flows
    from pytrafgen.records_from_packets import records_from_packets
    from pytrafgen.testing import TcpConversation
    from pytrafgen.tokenizer import AppProtocol, Vocabulary, decode, encode_flows

    conv = TcpConversation()
    conv.handshake()
    conv.send(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conv.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    table = conv.table()
    flows = assemble_flows(table)
    vocab = Vocabulary(["c"], [AppProtocol(spec.name, spec.transport, tuple(spec.token_names))], 256)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols={"http": spec})
    assert enc.app_packets.get("http_errors", 0) >= 1 and "http" not in enc.app_packets
    records = decode(enc.tokens, enc.offsets, vocab, protocols={"http": spec}, strict=True)
    original = records_from_packets(table, flows, np.zeros(len(flows), np.int16), ["c"])
    got = [records.blob[o:o + n].tobytes() for o, n in zip(records.packets["payload_off"],
                                                          records.packets["payload_stored"], strict=True)]
    want = [original.blob[o:o + n].tobytes() for o, n in zip(original.packets["payload_off"],
                                                           original.packets["payload_stored"], strict=True)]
    assert got == want and b"hi" in b"".join(got)
