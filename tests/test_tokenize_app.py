"""The application-protocol path: a tiny inline protocol plugin gets its own token range, its
``encode`` replaces payload bytes, ``decode`` gives them back; a broken plugin never costs
the round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from tokenize_support import synthetic_frames

from pytrafgen import hookimpl, plugins
from pytrafgen.capture import PacketTable
from pytrafgen.errors import TokenError
from pytrafgen.flows import assemble_flows
from pytrafgen.interfaces import ProtocolSpec
from pytrafgen.records_from_packets import records_from_packets
from pytrafgen.tokenizer import AppProtocol, Vocabulary, decode, encode_flows

CLASSES = ["benign"]
CAP = 4  # far below the app payloads: they must still come back whole


class ReversedBytes(ProtocolSpec):
    """Payloads starting 00 01, tokenized as a marker then the bytes in reverse order."""

    name: ClassVar[str] = "revtest"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "udp"
    default_ports: ClassVar[tuple[int, ...]] = (53,)
    token_names: ClassVar[tuple[str, ...]] = (*(f"byte{i}" for i in range(256)), "MARK")

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        if not payload.startswith(b"\x00\x01"):
            return None
        return [256, *reversed(payload)]

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        if not tokens or tokens[0] != 256:
            raise ValueError("no marker")
        return bytes(reversed(list(tokens[1:])))


class Lossy(ReversedBytes):
    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        return super().decode(tokens, direction)[1:]


class Raising(ReversedBytes):
    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        raise RuntimeError("plugin bug")


@pytest.fixture(scope="module")
def capture():
    frames, ts = synthetic_frames()
    table = PacketTable.from_frames(frames, ts)
    flows = assemble_flows(table)
    return table, flows, np.zeros(len(flows), np.int32)


def _vocab() -> Vocabulary:
    return Vocabulary(CLASSES, [AppProtocol("revtest", "udp", ReversedBytes.token_names)], CAP)


def test_app_tokens_replace_payload_and_round_trip(capture):
    table, flows, labels = capture
    vocab = _vocab()
    spec = ReversedBytes()
    enc = encode_flows(table, flows, labels, vocab, protocols={"revtest": spec})
    assert enc.app_packets == {"revtest": 2}  # the two non-empty UDP payloads
    begin = vocab.app_begin("revtest")
    assert int(np.sum(enc.tokens == begin)) == 2
    assert int(np.sum(enc.tokens == vocab.special("APP_END"))) == 2
    grammar = vocab.grammar()
    for f in enc.encoded_flows:
        assert grammar.accepts(enc.tokens[enc.offsets[f]:enc.offsets[f + 1]])
    got = decode(enc.tokens, enc.offsets, vocab, strict=True, protocols={"revtest": spec})
    ref = records_from_packets(table, flows, labels, CLASSES)
    np.testing.assert_array_equal(got.packets["payload_len"], ref.packets["payload_len"])
    udp = np.flatnonzero((got.flows["proto"][got.packets["flow"]] == 17) & (got.packets["payload_len"] > 0))
    assert len(udp) == 2
    for i in udp:
        o, n = int(got.packets["payload_off"][i]), int(got.packets["payload_stored"][i])
        ro, rn = int(ref.packets["payload_off"][i]), int(ref.packets["payload_stored"][i])
        assert n == rn > CAP
        assert got.blob[o:o + n].tobytes() == ref.blob[ro:ro + rn].tobytes()
    # TCP payloads of the same capture stay bytes, capped
    tcp = np.flatnonzero((got.flows["proto"][got.packets["flow"]] == 6) & (got.packets["payload_len"] > 0))
    assert np.array_equal(got.packets["payload_stored"][tcp], np.minimum(got.packets["payload_len"][tcp], CAP))
    assert got.packets["payload_len"][tcp].max() > CAP


def test_missing_plugin_at_decode_is_a_clear_skip(capture):
    table, flows, labels = capture
    vocab = _vocab()
    enc = encode_flows(table, flows, labels, vocab, protocols={"revtest": ReversedBytes()})
    skipped: dict[str, int] = {}
    rec = decode(enc.tokens, enc.offsets, vocab, protocols={}, skipped=skipped)
    assert skipped == {"app_decode_failed": 1} and rec.n_flows == 4
    with pytest.raises(TokenError, match="app decode failed"):
        decode(enc.tokens, enc.offsets, vocab, strict=True, protocols={})


@pytest.mark.parametrize(("plugin", "counts"), [(Lossy(), {}), (Raising(), {"revtest_errors": 2})])
def test_plugin_that_cannot_round_trip_leaves_bytes(capture, plugin, counts):
    table, flows, labels = capture
    vocab = _vocab()
    enc = encode_flows(table, flows, labels, vocab, protocols={"revtest": plugin})
    assert enc.app_packets == counts
    assert not np.any(enc.tokens == vocab.app_begin("revtest"))
    got = decode(enc.tokens, enc.offsets, vocab, strict=True, protocols={"revtest": plugin})
    assert got.n_packets == 15


def test_max_app_tokens_falls_back_to_bytes(capture):
    table, flows, labels = capture
    vocab = _vocab()
    enc = encode_flows(table, flows, labels, vocab, protocols={"revtest": ReversedBytes()}, max_app_tokens=20)
    assert enc.app_packets == {"revtest": 1}  # the 7-byte query fits, the 64-byte answer does not


class _InlinePlugin:
    @hookimpl
    def register_protocols(self, register):
        register(ReversedBytes())


def test_registered_app_protocol_gets_its_own_range(monkeypatch):
    _, registry = plugins.load_plugins(extra=[_InlinePlugin()])
    monkeypatch.setattr(plugins, "get_registry", lambda: registry)
    vocab = Vocabulary.for_protocols(plugins.get_registry().protocols.values(), CLASSES)
    r = vocab.ranges["app.revtest"]
    assert r.size == 1 + len(ReversedBytes.token_names)
    assert vocab.token_name(r.start) == "app.revtest.begin"
    assert vocab.token_name(r.start + 1 + 256) == "app.revtest:MARK"
    others = [x for x in vocab.ranges.values() if x.name != "app.revtest"]
    assert all(x.stop <= r.start or x.start >= r.stop for x in others)
