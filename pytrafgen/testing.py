"""Helpers and pytest fixtures for plugin authors (and pytrafgen's own tests).

* ``TcpConversation``: a tiny capture builder: a TCP connection (handshake, data both ways,
  teardown) as Ethernet/IPv4 frames with valid checksums, written as pcap or dissected into
  a ``PacketTable``.
* ``registry_with(*plugins)``: run code against a registry that holds the built-ins plus
  plugins defined inline (modules or classes with ``@hookimpl`` functions).
* ``assert_codec_roundtrip(spec, payload, direction)``: a protocol's token codec gives the
  exact bytes back with ids inside its local vocabulary.
* ``assert_build_roundtrip(spec, stream, direction)``: ``build(parse(stream))`` is ``stream``.
* ``assert_tokenized_roundtrip(table, protocols)``: a capture through the real tokenizer with
  the protocol in the vocabulary: its payloads become app tokens and decode to the same bytes.
* ``rule_context(table)`` and ``check_rule(rule, ctx)``: evaluate a compliance rule on packets.
* ``field_records(table, classes)``: the ``FieldRecords`` of a capture's flows (what a generator
  returns from ``sample``); ``evaluation_set(table, classes)``: the ``EvalSet`` a validator
  receives for a capture, as ``pytrafgen evaluate`` builds it.

Fixtures (add ``pytest_plugins = ["pytrafgen.testing"]`` to a conftest.py):
``inline_plugins`` (a function: ``inline_plugins(MyPlugin)`` returns the registry and keeps it
active for the rest of the test) and ``conversation`` (a fresh ``TcpConversation``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from pytrafgen import plugins

if TYPE_CHECKING:
    from pytrafgen.capture import PacketTable
    from pytrafgen.evaluate.evalset import EvalSet
    from pytrafgen.interfaces import ProtocolSpec, Rule
    from pytrafgen.records import FieldRecords
    from pytrafgen.rules.context import RuleContext
    from pytrafgen.tokenizer.encode import EncodedFlows

TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class TcpConversation:
    """One TCP connection between a client and a server, built packet by packet.

    ``send(direction, payload)`` adds a data segment (0 client → server, 1 server → client);
    pass several payloads to ``send`` to split one message over segments. Sequence and
    acknowledgement numbers follow the bytes sent, so reassembly sees an in-order stream.
    """

    def __init__(self, client: tuple[str, int] = ("10.0.0.1", 40000),
                 server: tuple[str, int] = ("10.0.0.2", 80)) -> None:
        self.ends = (client, server)
        self.next_seq = [1000, 5000]  # per direction
        self.frames: list[bytes] = []
        self.ts_ns: list[int] = []

    def _frame(self, direction: int, flags: int, payload: bytes = b"") -> None:
        (src, sport), (dst, dport) = self.ends[direction], self.ends[1 - direction]
        src_b, dst_b = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
        seq, ack = self.next_seq[direction], self.next_seq[1 - direction]
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack if flags & TCP_ACK else 0, 5 << 4,
                          flags, 65535, 0, 0) + payload
        pseudo = src_b + dst_b + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), len(self.frames) & 0xFFFF, 0x4000,
                         64, 6, 0, src_b, dst_b)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        eth = bytes.fromhex("020000000002" "020000000001" if direction == 0 else "020000000001" "020000000002")
        self.frames.append(eth + b"\x08\x00" + ip + tcp)
        self.ts_ns.append(1_700_000_000_000_000_000 + 1_000_000 * len(self.frames))
        self.next_seq[direction] = (seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) % (1 << 32)

    def handshake(self) -> TcpConversation:
        self._frame(0, TCP_SYN)
        self._frame(1, TCP_SYN | TCP_ACK)
        self._frame(0, TCP_ACK)
        return self

    def send(self, direction: int, *segments: bytes) -> TcpConversation:
        for segment in segments:
            self._frame(direction, TCP_PSH | TCP_ACK, segment)
        return self

    def close(self) -> TcpConversation:
        self._frame(0, TCP_FIN | TCP_ACK)
        self._frame(1, TCP_FIN | TCP_ACK)
        self._frame(0, TCP_ACK)
        return self

    def table(self) -> PacketTable:
        from pytrafgen.capture import PacketTable

        return PacketTable.from_frames(self.frames, ts_ns=self.ts_ns)

    def write(self, path: str | Path) -> Path:
        from pytrafgen.capture import write_pcap

        return write_pcap(path, self.frames, ts_ns=self.ts_ns)


@contextlib.contextmanager
def registry_with(*extra: object, entry_points: bool = False,
                  order: Sequence[str] | None = None) -> Iterator[plugins.Registry]:
    """A registry of the built-ins plus ``extra`` inline plugins (and the installed entry-point
    plugins if ``entry_points``), active process-wide inside the ``with`` block. ``order``:
    plugin names to put first (default: ``PYTRAFGEN_PLUGIN_ORDER``, see pytrafgen.plugins)."""
    state = plugins.load_plugins(list(extra), include_entry_points=entry_points, order=order)
    previous = plugins.swap_state(state)
    try:
        yield state[1]
    finally:
        plugins.swap_state(previous)


def assert_codec_roundtrip(spec: ProtocolSpec, payload: bytes, direction: int) -> list[int]:
    """Encode ``payload``, check the ids lie in the local vocabulary and that decoding gives the
    same bytes; returns the tokens. Fails if the codec declines the payload (returns None)."""
    tokens = spec.encode(payload, direction)
    assert tokens is not None, f"{spec.name}: encode declined a payload of {len(payload)} bytes"
    assert all(0 <= t < len(spec.token_names) for t in tokens), f"{spec.name}: token id out of range"
    decoded = spec.decode(tokens, direction)
    assert decoded == payload, f"{spec.name}: decode differs from the payload at byte {_first_diff(decoded, payload)}"
    return tokens


def assert_build_roundtrip(spec: ProtocolSpec, stream: bytes, direction: int) -> list[dict[str, Any]]:
    """Parse ``stream`` into messages and build each back; the bytes must be the stream's."""
    messages = spec.parse(stream, direction)
    assert messages, f"{spec.name}: parse found no message"
    built = b"".join(spec.build(m, direction) for m in messages)
    assert built == stream, f"{spec.name}: built bytes differ from the stream at byte {_first_diff(built, stream)}"
    return messages


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def assert_tokenized_roundtrip(table: PacketTable, protocols: Mapping[str, ProtocolSpec],
                               classes: Sequence[str] = ("c",)) -> EncodedFlows:
    """Tokenize ``table`` (all flows of class ``classes[0]``) with a vocabulary holding the app
    protocols of ``protocols`` (name -> spec), check every app protocol encoded at least one
    payload with ids inside its range, and that decoding gives every stored payload back byte
    for byte. Returns the encoded flows (``.app_packets`` counts payloads per protocol)."""
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer import Vocabulary, decode, encode_flows

    vocab = Vocabulary.for_protocols(protocols.values(), list(classes))
    flows = assemble_flows(table)
    encoded = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols)
    for app in vocab.app_protocols:
        assert encoded.app_packets.get(app.name, 0) > 0, (
            f"{app.name}: no payload became app tokens (recognise() or encode() declined every one); "
            f"errors: {encoded.app_packets.get(f'{app.name}_errors', 0)}")
        r = vocab.ranges[f"app.{app.name}"]
        inside = (encoded.tokens >= r.start) & (encoded.tokens < r.stop)
        assert inside.any(), f"{app.name}: no token in its range {r.start}..{r.stop - 1}"
    records = decode(encoded.tokens, encoded.offsets, vocab, strict=True, protocols=protocols)
    got = [bytes(records.blob[o:o + n]) for o, n in
           zip(records.packets["payload_off"], records.packets["payload_stored"], strict=True) if n]
    want = [table.payload(i) for i in range(len(table)) if int(table.payload_len[i]) > 0]
    assert got == want, f"decoded payloads differ from the capture's (first difference at payload " \
                        f"{next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(got))})"
    return encoded


def field_records(table: PacketTable, classes: str | Sequence[str] = "c") -> FieldRecords:
    """The ``FieldRecords`` of every flow of ``table`` (flows assembled here): of class
    ``classes`` when it is one name, else ``classes[i]`` for flow i (in ``assemble_flows``
    order). What a generator's ``sample`` returns, e.g. to test a generator that transforms
    records or to build them into a pcap with ``pytrafgen.build.write_records``."""
    from pytrafgen.flows import assemble_flows
    from pytrafgen.records_from_packets import records_from_packets

    flows = assemble_flows(table)
    per_flow = [classes] * len(flows) if isinstance(classes, str) else list(classes)
    if len(per_flow) != len(flows):
        raise ValueError(f"field_records: {len(per_flow)} classes for {len(flows)} flows")
    names = list(dict.fromkeys(per_flow))
    labels = np.array([names.index(c) for c in per_flow], np.int32)
    return records_from_packets(table, flows, labels, names)


def evaluation_set(table: PacketTable, classes: str | Sequence[str | None] | None = "c", name: str = "generated",
                   train: PacketTable | None = None,
                   protocols: Mapping[str, ProtocolSpec] | None = None) -> EvalSet:
    """The ``EvalSet`` a ``Validator.evaluate`` receives for ``table``, built as ``pytrafgen
    evaluate`` builds it from a pcap (``evalset_from_tables``): ``classes`` is one class for
    every flow, one per flow, or None (unlabelled); ``train`` becomes ``.train`` (same classes)
    for validators that read the training split; ``protocols`` (default: the active registry's)
    the specs its rules are judged with (``EvalSet.protocols``)."""
    from pytrafgen.evaluate.evalset import evalset_from_tables

    es = evalset_from_tables([(table, classes)], name)
    if train is not None:
        es.train = evalset_from_tables([(train, classes if isinstance(classes, str) else None)], f"{name}-train")
        es.train.relabel(list(dict.fromkeys(es.classes + es.train.classes)))
        es.relabel(es.train.classes)
        es.train.protocols = protocols if protocols is not None else plugins.get_registry().protocols
    es.protocols = protocols if protocols is not None else plugins.get_registry().protocols
    return es


def rule_context(table: PacketTable, protocols: dict[str, ProtocolSpec] | None = None) -> RuleContext:
    """The context compliance rules run in, for a packet table (flows assembled here), with
    ``protocols`` (default: the active registry's, e.g. inside ``registry_with``)."""
    from pytrafgen.flows import assemble_flows
    from pytrafgen.rules.context import RuleContext

    flows = assemble_flows(table)
    if protocols is None:
        protocols = plugins.get_registry().protocols
    return RuleContext(table, flows, flows.flow_id, flows.direction, protocols=protocols)


def check_rule(rule: Rule, ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
    """Run one rule and check its contract: index arrays, violating within applicable."""
    applicable, violating = (np.asarray(a, np.int64) for a in rule.check(ctx))
    assert np.isin(violating, applicable).all(), f"{rule.id}: violating indices outside applicable"
    return applicable, violating


def find_rule(rules: Sequence[Rule], rule_id: str) -> Rule:
    return next(r for r in rules if r.id == rule_id)


@pytest.fixture
def inline_plugins() -> Iterator[Callable[..., plugins.Registry]]:
    """``inline_plugins(*plugins)`` activates a registry of built-ins plus those plugins until
    the end of the test."""
    stack = contextlib.ExitStack()

    def activate(*extra: object, entry_points: bool = False) -> plugins.Registry:
        return stack.enter_context(registry_with(*extra, entry_points=entry_points))

    with stack:
        yield activate


@pytest.fixture
def conversation() -> TcpConversation:
    return TcpConversation()
