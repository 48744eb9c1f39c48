"""The CoAP plugin (plugins/pytrafgen-coap): the message layout, the token codec with option
deltas and lengths derived on decode, building, rules, and agreement with scapy's CoAP layer
(``scapy.contrib.coap``, the independent reference) on every CoAP capture at hand."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import scapy.contrib.coap as scapy_coap  # a pytrafgen dependency: the independent reference
from conftest import BUNDLED_CORPUS, captures_with, shared_ids

import pytrafgen
from pytrafgen.errors import TokenError
from pytrafgen.flows import assemble_flows
from pytrafgen.testing import assert_codec_roundtrip, check_rule, find_rule, rule_context

pytrafgen_coap = pytest.importorskip("pytrafgen_coap", reason="pytrafgen-coap is not installed")
from pytrafgen_coap.messages import build_message, parse_message  # noqa: E402
from pytrafgen_coap.tokens import TOKEN_ID, TOKEN_NAMES, decode_payload, encode_payload  # noqa: E402
from scapy.packet import Raw  # noqa: E402

COAP = pytrafgen_coap.CoapProtocol()
CoAP = scapy_coap.CoAP

GET = build_message({"type_name": "CON", "code_name": "0.01", "message_id": 0x1234, "token": b"\xab\xcd",
                     "options": [(11, "sensors"), (11, "temp"), (15, "unit=c"), (17, b"\x32")]})
CONTENT = build_message({"type_name": "ACK", "code_name": "2.05", "message_id": 0x1234, "token": b"\xab\xcd",
                         "options": [(12, b"\x32")], "payload": b'{"t": 21.5}'})
EMPTY_ACK = build_message({"type_name": "ACK", "code": 0, "message_id": 7})
# options 11, 35, 60, 292 in order: deltas 11, 24, 25, 232 (one extended byte each), lengths 20 (13 + 7)
# and 300 (269 + 31: two extended bytes)
EXTENDED = build_message({"type_name": "CON", "code_name": "0.02", "message_id": 1, "token": b"t",
                          "options": [(292, b"\x01"), (11, b"x" * 20), (60, b"\x01\x00"), (35, b"p" * 300)],
                          "payload": b"body"})


def scapy_bytes(raw: bytes) -> bytes:
    """The message rebuilt by scapy from the fields pytrafgen read: scapy derives the token
    length and every option delta and length itself."""
    m = parse_message(raw)
    assert m is not None and m.error is None
    pkt = CoAP(ver=m.version, type=m.type, code=m.code, msg_id=m.message_id, token=m.token,
               options=list(m.options), paymark=b"\xff" if m.payload else b"")
    return bytes(pkt / Raw(m.payload) if m.payload else pkt)


# -- layout and build ------------------------------------------------------------------------
def test_build_derives_token_length_deltas_and_lengths_as_scapy_does() -> None:
    for raw in (GET, CONTENT, EMPTY_ACK, EXTENDED):
        assert scapy_bytes(raw) == raw
    assert EXTENDED[0] == 0x41 and EXTENDED[1] == 0x02  # version 1, CON, TKL 1; 0.02 POST
    assert EXTENDED[5] == 0xB0 | 13 and EXTENDED[6] == 20 - 13  # Uri-Path: delta 11, length 13 + 7
    msg = parse_message(EXTENDED)
    assert msg is not None and msg.error is None
    assert msg.options == [(11, b"x" * 20), (35, b"p" * 300), (60, b"\x01\x00"), (292, b"\x01")]
    assert msg.payload == b"body" and msg.token == b"t" and msg.token_length == 1


def test_extended_nibbles_by_hand() -> None:
    # option 35 after 11: delta 24 = 13 + 11 (one extended byte); length 300 = 269 + 31 (two bytes)
    raw = build_message({"code": 1, "options": [(11, b""), (35, b"p" * 300)]})
    assert raw[4] == 0xB0  # Uri-Path, empty
    assert raw[5] == 0xDE and raw[6] == 11 and raw[7:9] == (31).to_bytes(2, "big")
    # option 292 after 0: delta 292 = 269 + 23 (two extended bytes)
    raw = build_message({"code": 1, "options": [(292, b"\x05")]})
    assert raw[4] == 0xE1 and raw[5:7] == (23).to_bytes(2, "big") and raw[7] == 5


def test_parse_reports_where_a_message_stops_being_well_formed() -> None:
    header = bytes([0x40, 0x01, 0, 1])
    assert parse_message(header[:3]) is None
    assert parse_message(bytes([0x49, 1, 0, 1]) + bytes(9)).error == "reserved token length"
    assert parse_message(header + bytes([0xB4]) + b"te").error.startswith("option not well-formed")
    assert parse_message(header + bytes([0xF0])).error.startswith("option not well-formed")  # delta 15, not 0xFF
    bare = parse_message(header + bytes([0xB1]) + b"a" + b"\xff")
    assert bare.error == "payload marker without a payload" and bare.end == len(header) + 2
    assert parse_message(header + bytes([0x1F])).error.startswith("option not well-formed")  # length 15


# -- token codec -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [GET, CONTENT, EMPTY_ACK, EXTENDED], ids=["get", "content", "empty-ack", "extended"])
def test_codec_round_trip(raw: bytes) -> None:
    tokens = assert_codec_roundtrip(COAP, raw, 0)
    names = [TOKEN_NAMES[t] for t in tokens]
    assert names[:3] == [f"VER:{raw[0] >> 6}", f"TYPE:{('CON', 'NON', 'ACK', 'RST')[(raw[0] >> 4) & 3]}",
                         f"CODE:{raw[1] >> 5}.{raw[1] & 31:02d}"]
    # no delta or length byte of the wire appears as a token: options are number + value
    assert names.count("OPT_END") == len(parse_message(raw).options)


def test_tokens_carry_numbers_and_values_deltas_and_lengths_derived() -> None:
    b = list
    tokens = [TOKEN_ID["VER:1"], TOKEN_ID["TYPE:NON"], TOKEN_ID["CODE:0.03"], 0, 9, TOKEN_ID["TOKEN_END"],
              TOKEN_ID["OPT:11"], *b(b"a" * 13), TOKEN_ID["OPT_END"],
              TOKEN_ID["OPT_NUM"], 0x01, 0x2C, *b(b"q"), TOKEN_ID["OPT_END"],  # option 300, unregistered
              TOKEN_ID["PAYLOAD"], *b(b"hi")]
    raw = decode_payload(tokens)
    assert raw == bytes([0x50, 0x03, 0, 9, 0xBD, 0]) + b"a" * 13 + bytes([0xE1, 0, 300 - 11 - 269]) + b"q\xffhi"
    assert scapy_bytes(raw) == raw
    assert encode_payload(raw) == tokens


def test_decode_absorbs_slips_the_layout_can() -> None:
    head = [TOKEN_ID["VER:1"], TOKEN_ID["TYPE:CON"], TOKEN_ID["CODE:0.01"], 0, 1]
    # options out of order are written in order; a marker with nothing after it is left out
    raw = decode_payload([*head, TOKEN_ID["TOKEN_END"], TOKEN_ID["OPT:15"], 0x61, TOKEN_ID["OPT_END"],
                          TOKEN_ID["OPT:11"], 0x62, TOKEN_ID["OPT_END"], TOKEN_ID["PAYLOAD"]])
    assert raw == bytes([0x40, 1, 0, 1, 0xB1, 0x62, 0x41, 0x61])
    # a token longer than 8 bytes keeps 8
    raw = decode_payload([*head, *range(10), TOKEN_ID["TOKEN_END"]])
    assert raw[0] & 0x0F == 8 and raw[4:] == bytes(range(8))
    with pytest.raises(TokenError, match="expected VER"):
        decode_payload([TOKEN_ID["TYPE:CON"]])
    with pytest.raises(TokenError, match="ends inside"):
        decode_payload(head)
    with pytest.raises(TokenError, match="expected an option or PAYLOAD"):
        decode_payload([*head, TOKEN_ID["TOKEN_END"], 0x41])


def test_datagrams_that_are_not_whole_messages_stay_bytes() -> None:
    header = bytes([0x40, 0x01, 0, 1])
    for raw in (header[:3], bytes([0x49, 1, 0, 1]) + bytes(9), header + bytes([0xB4]) + b"te",
                header + b"\xff", header + bytes([0xD0])):
        assert encode_payload(raw) is None


# -- real captures against scapy -------------------------------------------------------------
CAPTURES = sorted({*captures_with("coap"), BUNDLED_CORPUS / "benign_coap.pcap"})


def _coap_datagrams(path: Path) -> list[bytes]:
    """Payloads of the UDP flows the plugin recognises (port 5683 or both sides CoAP)."""
    table = pytrafgen.read_pcap(path)
    flows = assemble_flows(table)
    by_flow: dict[int, list[bytes]] = collections.defaultdict(list)
    first: dict[tuple[int, int], bytes] = {}
    for i in np.flatnonzero((np.asarray(flows.flow_id) >= 0) & (np.asarray(table.payload_len) > 0)).tolist():
        f = int(flows.flow_id[i])
        if int(flows.proto[f]) != 17:
            continue
        by_flow[f].append(table.payload(i))
        first.setdefault((f, int(flows.direction[i])), table.payload(i))
    return [p for f, payloads in by_flow.items()
            if COAP.recognise(int(flows.server_port[f]), first.get((f, 0), b""), first.get((f, 1), b""))
            for p in payloads]


@pytest.mark.parametrize("path", CAPTURES, ids=shared_ids(CAPTURES))
def test_real_coap_round_trips_and_agrees_with_scapy(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not found")
    datagrams = _coap_datagrams(path)
    assert datagrams, "no CoAP flow recognised"
    automaton = COAP.token_automaton()
    encoded = 0
    for raw in datagrams:
        tokens = encode_payload(raw)
        msg = parse_message(raw)
        if tokens is None:
            assert msg is None or msg.error is not None  # only what is not a whole message stays bytes
            continue
        encoded += 1
        assert decode_payload(tokens) == raw
        assert automaton.accepts(tokens)  # sampling may draw every message the encoder writes
        assert scapy_bytes(raw) == raw  # scapy derives the same deltas, lengths and TKL
        # scapy's dissector takes a payload marker right after the token for an option (its
        # options field reads until the marker only after one option): compare the rest
        if msg.options:
            s = CoAP(raw)
            numbers = [o[0] if isinstance(o[0], int) else scapy_coap.coap_options[1][o[0]] for o in s.options]
            assert (s.ver, s.type, s.tkl, s.code, s.msg_id, s.token) == (
                msg.version, msg.type, msg.token_length, msg.code, msg.message_id, msg.token)
            assert list(zip(numbers, (o[1] for o in s.options), strict=True)) == msg.options
            assert (bytes(s.payload) if s.paymark else b"") == msg.payload
    if path.name == "benign_coap.pcap":
        assert encoded == len(datagrams)  # libcoap's messages are all whole messages
    else:
        assert encoded > 0


def test_tokenizer_gives_real_coap_its_own_tokens(coap_capture: Path) -> None:
    from pytrafgen.tokenizer import Vocabulary, decode, encode_flows
    from pytrafgen.tokenizer.vocab import AppProtocol

    table = pytrafgen.read_pcap(coap_capture)
    flows = assemble_flows(table)
    vocab = Vocabulary(["benign_coap"], [AppProtocol("coap", "udp", COAP.token_names)], 16)
    # max_app_tokens above the largest message (665 bytes; the default 512 keeps 5 of them as bytes)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols={"coap": COAP},
                       max_app_tokens=2048)
    assert enc.app_packets.get("coap", 0) == len(_coap_datagrams(coap_capture))
    records = decode(enc.tokens, enc.offsets, vocab, strict=True, protocols={"coap": COAP})
    blob, p = records.blob, records.packets
    coap = (records.flows["proto"] == 17) & (records.flows["server_port"] == 5683)
    payloads = [blob[o:o + n].tobytes() for o, n, f in zip(p["payload_off"], p["payload_stored"], p["flow"],
                                                           strict=True) if n and coap[f]]
    assert sorted(payloads) == sorted(_coap_datagrams(coap_capture))  # whole payloads, past the cap of 16


@pytest.fixture
def coap_capture() -> Path:
    return next(p for p in CAPTURES if p.name == "benign_coap.pcap" and p.exists())


# -- rules -----------------------------------------------------------------------------------
def _udp_context(datagrams: list[tuple[int, bytes]], tmp_path: Path):
    """A rule context over one UDP flow client:40000 <-> server:5683 (direction 0 = to the server)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    frames = []
    for k, (d, raw) in enumerate(datagrams):
        ends = (("10.0.0.1", 40000), ("10.0.0.2", 5683))
        (src, sport), (dst, dport) = ends[d], ends[1 - d]
        pkt = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(raw)
        pkt.time = 1_700_000_000 + k
        frames.append(pkt)
    path = tmp_path / "coap.pcap"
    wrpcap(str(path), frames)
    return rule_context(pytrafgen.read_pcap(path), protocols={"coap": COAP})


def test_rules_pass_a_clean_exchange_and_catch_each_violation(tmp_path: Path) -> None:
    rules = COAP.rules()
    clean = _udp_context([(0, GET), (1, CONTENT), (0, EXTENDED), (1, EMPTY_ACK)], tmp_path)
    for rule in rules:
        _, violating = check_rule(rule, clean)
        assert len(violating) == 0, rule.id
    assert len(check_rule(find_rule(rules, "COAP-006"), clean)[0]) == 3
    bad = {
        "COAP-001": bytes([0x80, 1, 0, 1]),  # version 2
        "COAP-002": bytes([0x49, 1, 0, 1]) + bytes(9),  # TKL 9
        "COAP-003": bytes([0x40, 1, 0, 1, 0xB4]) + b"te",  # option runs past the datagram
        "COAP-004": bytes([0x40, 0x20 | 1, 0, 1]),  # code 1.01
        "COAP-005": build_message({"type_name": "RST", "code_name": "2.05", "message_id": 3}),  # RST not empty
        "COAP-006": build_message({"code": 1, "options": [(12, b"\x01\x02\x03")]}),  # Content-Format of 3 bytes
    }
    for rule_id, raw in bad.items():
        ctx = _udp_context([(0, GET), (0, raw)], tmp_path)
        _, violating = check_rule(find_rule(rules, rule_id), ctx)
        assert violating.tolist() == [1], rule_id
    for raw in (build_message({"type_name": "NON", "code": 0}), bytes([0x60, 0, 0, 1, 0xB1]) + b"a",
                build_message({"type_name": "ACK", "code_name": "0.01"})):  # NON empty, Empty with options, ACK request
        ctx = _udp_context([(0, raw)], tmp_path)
        assert check_rule(find_rule(rules, "COAP-005"), ctx)[1].tolist() == [0]


def test_recognises_port_5683_and_coap_elsewhere_only_both_ways() -> None:
    assert COAP.recognise(5683, GET, b"") and COAP.recognise(5683, b"", b"")
    assert not COAP.recognise(5683, b"\x00garbage", b"")
    assert COAP.recognise(40001, GET, CONTENT)
    assert not COAP.recognise(40001, GET, b"") and not COAP.recognise(53, b"\x12\x34" + bytes(10), b"\x12\x34")


def test_plugin_is_registered_through_its_entry_point() -> None:
    from pytrafgen import plugins

    registry = plugins.load_plugins()[1]
    assert "coap" in registry.protocols and registry.protocols["coap"].transport == "udp"
    assert {r.id for r in registry.protocols["coap"].rules()} == {f"COAP-00{n}" for n in range(1, 7)}


def _decoded_or_error(decode: object, tokens: list[int]) -> bytes | str:
    try:
        return decode(tokens)  # type: ignore[operator, no-any-return]
    except TokenError as exc:
        return f"TokenError: {exc}"


@pytest.mark.parametrize("path", CAPTURES, ids=shared_ids(CAPTURES))
def test_sliced_decode_is_the_token_at_a_time_reader(path: Path) -> None:
    """``decode_payload`` decodes what the encoder writes by slices and hands anything else to
    the token-at-a-time reader (``_decode_checked``): the two give the same bytes, or the same
    error, on every real message's tokens and on seeded mutations of them (tokens dropped,
    replaced by any local id, duplicated, cut short)."""
    from pytrafgen_coap.tokens import _decode_checked

    if not path.exists():
        pytest.skip(f"{path} not found")
    rng = np.random.default_rng(7)
    sequences = [t for raw in _coap_datagrams(path) if (t := encode_payload(raw)) is not None]
    assert sequences, "no CoAP message encoded"
    tried = 0
    for tokens in sequences[:400]:
        variants = [tokens, tokens[:rng.integers(0, len(tokens) + 1)]]
        for _ in range(6):
            mutated = list(tokens)
            at = int(rng.integers(0, len(mutated)))
            kind = rng.integers(0, 3)
            if kind == 0:
                del mutated[at]
            elif kind == 1:
                mutated[at] = int(rng.integers(-1, len(TOKEN_NAMES) + 1))
            else:
                mutated.insert(at, mutated[at])
            variants.append(mutated)
        for v in variants:
            assert _decoded_or_error(decode_payload, v) == _decoded_or_error(_decode_checked, v), v
            tried += 1
    assert tried >= 8 * min(len(sequences), 400)
