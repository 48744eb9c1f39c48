"""Conformed flows judged by tshark, an independent dissector: streams that start mid-session,
MQTT bytes that do not frame, HTTP bodies without heads or with heads cut by the zero padding
past the stored bytes, CoAP options of lengths their numbers do not allow. Raw, tshark flags
each (malformed packets or error-level expert items); conformed, nothing. The last test does the
same for what the markov baseline generates from the bundled corpus."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_conform import HANDSHAKE, PLAN, conform, mqtt_flow, tcp_flow

from pytrafgen.build import write_records
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)")
SEVERITY_ERROR = 0x00800000


def tshark_flags(pcap: Path) -> list[str]:
    """'frame: messages' of every packet tshark marks malformed or with an error-level item."""
    cmd = ["tshark", "-r", str(pcap), "-n", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-T", "fields", "-e", "frame.number", "-e", "_ws.malformed", "-e", "_ws.expert.severity",
           "-e", "_ws.expert.message", "-E", "occurrence=a", "-E", "separator=\t"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    flagged = []
    for line in out.splitlines():
        frame, malformed, severity, message = [*line.split("\t"), "", "", ""][:4]
        levels = [int(s) for s in severity.split(",") if s.strip().isdigit()]
        if malformed.strip() or max(levels, default=0) >= SEVERITY_ERROR:
            flagged.append(f"{frame}: {message[:120]}")
    return flagged


def flags_raw_and_final(records: FieldRecords, tmp_path: Path) -> tuple[list[str], list[str], dict[str, int]]:
    raw, final = tmp_path / "raw.pcap", tmp_path / "final.pcap"
    write_records(raw, records, PLAN, seed=0, conform=False)
    summary = write_records(final, records, PLAN, seed=0, conform=True)
    return tshark_flags(raw), tshark_flags(final), summary.get("repairs", {})


def padded(records: FieldRecords, extra: dict[int, int]) -> FieldRecords:
    """``records`` with zero padding after the stored bytes of the given packets (as a generator
    that stores the first bytes of a payload emits it)."""
    for i, n in extra.items():
        records.packets["payload_len"][i] += n
    return records


def mid_session(segments: list[tuple[int, bytes]], port: int) -> FieldRecords:
    """A flow cut from mid-session (no SYN): ACK/PSH segments with the given payloads."""
    sent = [1000, 5000]
    rows = []
    for d, data in segments:
        rows.append((d, 0x18, sent[d], sent[1 - d], len(data)))
        sent[d] += len(data)
    return tcp_flow(rows, payloads=dict(enumerate(data for _, data in segments)), server_port=port)


def test_mqtt_stream_from_mid_session_frames_for_tshark(tmp_path: Path) -> None:
    """Port 1883, no SYN: the client's first bytes continue a PUBLISH begun before the flow, then
    a PUBLISH whose topic length runs past it and zero padding; the server sends a SUBACK-typed
    byte run cut mid-header. Raw, tshark flags them; conformed, the bytes are PUBLISHes of the
    same sizes and tshark flags nothing."""
    records = mid_session([(0, b"\x6c\x11\xf7\x38\xd6\x5f\x50\x06"), (0, b"\x30\x20\x68\x20\x67\x31\x20\x6b"),
                           (1, b"\x9a\xe6\xc2"), (0, b"\x30\x0d\x00\x03a/b" + b"x" * 8)], 1883)
    records = padded(records, {0: 1440, 1: 90})
    raw, final, repairs = flags_raw_and_final(records, tmp_path)
    assert raw, "the raw flow should be flagged by tshark"
    assert final == [] and repairs["mqtt_invalid_packets"] >= 2


def test_http_bodies_without_heads_frame_for_tshark(tmp_path: Path) -> None:
    """Port 80, no SYN: the server's first segments are the middle of a body, then a status line
    cut by zero padding and more body segments. Raw, tshark reads body bytes as header lines;
    conformed, each response announces the bytes that follow it and tshark flags nothing."""
    body = b"r:#2b3e83}\n.c84{"
    records = mid_session([(1, body), (1, body), (1, b"HTTP/1.1 200 OK\r"), (1, body)], 80)
    records = padded(records, {0: 1432, 1: 1432, 2: 1432, 3: 500})
    raw, final, repairs = flags_raw_and_final(records, tmp_path)
    assert raw, "the raw flow should be flagged by tshark"
    assert final == [] and repairs["http_heads_added"] == 1 and repairs["http_body_lengths"] == 1
    conformed, _ = conform(records, records.packets["ts_ns"])
    p = conformed.packets
    heads = [conformed.blob[int(p["payload_off"][i]):][:int(p["payload_stored"][i])].tobytes() for i in (0, 2)]
    assert heads[0].startswith(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * 1448))
    assert heads[1].startswith(b"HTTP/1.1 200 OK\r\nContent-Length: ")
    announced = int(heads[1].split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert announced == int(p["payload_len"][2]) - heads[1].index(b"\r\n\r\n") - 4 + int(p["payload_len"][3])


def test_a_response_body_in_view_without_its_head(tmp_path: Path) -> None:
    """In view from the SYN: a request, then body segments with no status line (the head was
    never sampled) get one; body bytes before any request (the server's first segment, which
    should open a response) are not sent."""
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    records = mqtt_flow([(1, b"stray body bytes"), (0, req), (1, b"function f0(x){r"), (1, b"eturn x*93+38;}\n")])
    records.flows["server_port"][:] = 80
    records = padded(records, {len(HANDSHAKE) + 2: 1432})
    _, final, repairs = flags_raw_and_final(records, tmp_path)
    assert final == [] and repairs["http_undecodable_messages"] == 1 and repairs["http_heads_added"] == 1
    conformed, _ = conform(records, records.packets["ts_ns"])
    assert conformed.packets["payload_len"][len(HANDSHAKE)] == 0


def test_coap_option_lengths_the_number_does_not_allow(tmp_path: Path) -> None:
    """A CoAP GET whose If-None-Match (5) carries 6 bytes (it allows none) and whose Uri-Host (3)
    is empty (1-255): tshark reports the option ranges; conformed, the message ends before them."""
    n = 2
    p = {k: np.zeros(n, d) for k, d in PACKET_COLUMNS.items()}
    p["direction"][:] = [0, 1]
    p["ts_ns"][:] = [0, 1_000_000]
    p["ttl"][:] = 64
    get = bytes([0x40, 0x01, 0x12, 0x34, 0xB4]) + b"test" + bytes([0x26]) + b"abcdef"
    empty_host = bytes([0x60, 0x45, 0x12, 0x34, 0x30])
    blob = get + empty_host
    p["payload_off"][:] = [0, len(get)]
    p["payload_stored"][:] = p["payload_len"][:] = [len(get), len(empty_host)]
    f = {k: np.zeros(1, d) for k, d in FLOW_COLUMNS.items()}
    f["ip_version"][:], f["proto"][:], f["client_port"][:], f["server_port"][:] = 4, 17, 40000, 5683
    records = FieldRecords(p, f, np.frombuffer(blob, np.uint8).copy(), ["c"])
    raw, final, repairs = flags_raw_and_final(records, tmp_path)
    assert len(raw) == 2 and any("Invalid Option Range" in r for r in raw)
    assert final == [] and repairs["coap_options"] == 2


def test_a_client_port_of_a_service_is_moved_to_the_ephemeral_range(tmp_path: Path) -> None:
    """A CoAP request sent from port 5353: tshark reads it as mDNS (the lower port wins) and
    flags it; conformed, the client port is an ephemeral one and tshark reads CoAP."""
    get = bytes([0x40, 0x01, 0x12, 0x34, 0xB4]) + b"test"
    p = {k: np.zeros(1, d) for k, d in PACKET_COLUMNS.items()}
    p["ttl"][:] = 64
    p["payload_stored"][:] = p["payload_len"][:] = len(get)
    f = {k: np.zeros(1, d) for k, d in FLOW_COLUMNS.items()}
    f["ip_version"][:], f["proto"][:], f["client_port"][:], f["server_port"][:] = 4, 17, 5353, 5683
    records = FieldRecords(p, f, np.frombuffer(get, np.uint8).copy(), ["c"])
    raw, final, repairs = flags_raw_and_final(records, tmp_path)
    assert raw and final == [] and repairs["client_ports_moved"] == 1
    conformed, _ = conform(records, records.packets["ts_ns"])
    assert 32768 <= int(conformed.flows["client_port"][0]) < 61000


@pytest.mark.slow
def test_markov_generated_from_the_corpus_passes_tshark(tmp_path: Path) -> None:
    """Every class of the bundled corpus, 20 flows each from the markov baseline, cut at 16
    packets as the default model is: tshark flags no packet of the conformed capture."""
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.markov import MarkovGenerator
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    corpus = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "corpus"
    tokenize_captures([corpus], corpus / "manifest.csv", tmp_path / "ds", payload_cap=16, max_flow_packets=16, seed=0)
    ds = TrafficDataset(tmp_path / "ds")
    gen = MarkovGenerator()
    gen.fit(ds, {"seed": 0})
    records = gen.sample(dict.fromkeys(ds.classes, 20), seed=0)
    pcap = tmp_path / "markov.pcap"
    write_records(pcap, records, ds.address_plan, 0)
    assert tshark_flags(pcap) == []


def stream_of(segments: list[bytes]) -> bytes:
    return b"".join(segments)


def test_a_slow_clients_open_head_has_well_formed_lines_for_tshark(tmp_path: Path) -> None:
    """Port 80 from the SYN: a slowloris client sends a request line, then a header line now and
    then, its head never ending. Lines as the per-class payload fill makes them (no colon, a
    colon first, spaces and brackets in the name) are flagged raw; conformed, each segment keeps
    its length, every complete line is a ``name: value`` line tshark accepts, and the line
    still open is left."""
    # the client side of a generated slowloris flow as the bundled default model and the per-class
    # payload fill made it (`pytrafgen generate -c slowloris:40 --seed 0`)
    segments = [
        b'GET / HTTP/1.1\r\n TINTIt: G_PONTE: 1\r\n: lL, (W\r\nD9go\r\npVOAfx\r\nLplG_POSTINGPUseroAgeb: (KApppppllinK30qVI64; lle10; TroLpppppjbHowV: TMLY\r\n\n11.30; Wi/530 (W64.0; ESa4.34.12 Mow4; G_P12.0\r\nLfa\r\nNAgPLY\r\nRecko) 1222 llidecko',
        b'X-9I56WajGd6FrUL, lint: (KHaY\r\n',
        b'XgzukNrCBlIgHw9ppplidomDaR1i',
        b'X-vjIzY1cDGdZwczAp',
        b'X-8e0T wtwzQdQ10',
        b'X-65e: wq47QHroQJyRo) 64; Tr-ATIEYL, Ge/53\r\nb',
        b'X-2YONL4YDZ: QAfer: rvndSTr-A530.0R',
        b'X-4EZW6NLQOAWX734.1\r\nRX',
        b'X-gJwVwPPRQrwsd: Went/7pp64.30',
        b'X-ceapj: JNAWxE3\r\nVUckBinde 6.1qR',
        b'X-o9P6hwYG9h\xe4cewHrer: (Ki/5342 likent\r',
        b'X-rP3szEQ2g3fGYPO2 6',
        b'X-H: XuPXO3XXG0HozilO',
    ]
    rows = [(0, 0x02, 0, 0, 0), (1, 0x12, 0, 1, 0), (0, 0x10, 1, 1, 0)]
    sent = 1
    for data in segments:
        rows += [(0, 0x18, sent, 1, len(data)), (1, 0x10, 1, sent + len(data), 0)]
        sent += len(data)
    records = tcp_flow(rows, payloads={3 + 2 * k: data for k, data in enumerate(segments)}, server_port=80)
    raw, final, repairs = flags_raw_and_final(records, tmp_path)
    assert raw, "the raw flow should be flagged by tshark"
    assert final == [] and repairs["http_open_head_lines"] >= 1
    conformed, _ = conform(records, records.packets["ts_ns"])
    p = conformed.packets
    sent_bytes = [conformed.blob[int(p["payload_off"][i]):][:int(p["payload_stored"][i])].tobytes()
                  for i in range(len(p["payload_len"])) if p["payload_len"][i]]
    assert [len(b) for b in sent_bytes] == [len(b) for b in segments]
    stream = b"".join(sent_bytes)
    assert stream.startswith(b"GET / HTTP/1.1\r\n") and stream.endswith(stream_of(segments).rsplit(b"\r\n", 1)[1])
    for line in stream.split(b"\r\n")[1:-1]:
        name, colon, _ = line.partition(b":")
        assert colon and name and all(chr(c).isalnum() or chr(c) in "!#$%&'*+.^_`|~-" for c in name), line
