"""The HTTP plugin (plugins/pytrafgen-http): parsing, the exact token codec, building, rules,
and agreement with tshark on every HTTP capture in ../shared/data."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import captures_with, shared_ids

from pytrafgen.errors import TokenError
from pytrafgen.testing import (
    TcpConversation,
    assert_build_roundtrip,
    assert_codec_roundtrip,
    check_rule,
    find_rule,
    rule_context,
)

pytrafgen_http = pytest.importorskip("pytrafgen_http", reason="pytrafgen-http is not installed")
from pytrafgen_http.tokens import TOKEN_ID, TOKEN_NAMES, decode_payload  # noqa: E402

HTTP = pytrafgen_http.HttpProtocol()
REQUEST = 0
RESPONSE = 1


HTTP_CAPTURES = captures_with("http")


# -- parsing ---------------------------------------------------------------------------------
def test_parse_request_fields() -> None:
    stream = b"POST /login?x=1 HTTP/1.1\r\nHost: lab\r\nContent-Length: 7\r\nX-Odd:tight\r\n\r\nuser=me"
    (msg,) = HTTP.parse(stream, REQUEST)
    assert (msg["method"], msg["target"], msg["version"]) == ("POST", "/login?x=1", "HTTP/1.1")
    assert msg["headers"] == [("Host", "lab"), ("Content-Length", "7"), ("X-Odd", "tight")]
    assert msg["body"] == b"user=me" and msg["body_complete"] and msg["content_length"] == 7
    assert (msg["offset"], msg["length"]) == (0, len(stream))


def test_parse_pipelined_responses_head_and_chunked() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\n"
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # answers HEAD: no body
    not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\n\r\n"
    tail = b"HTTP/1.0 404 Nope\r\nContent-Length: 3\r\n\r\nabc"
    msgs = HTTP.parse(chunked + head_reply + not_modified + tail, RESPONSE)
    assert [m["status"] for m in msgs] == [200, 200, 304, 404]
    assert msgs[0]["body"] == b"4\r\nWiki\r\n0\r\n\r\n"
    assert msgs[1]["body"] == b"" and msgs[2]["body"] == b""
    assert msgs[3]["reason"] == "Nope" and msgs[3]["body"] == b"abc"
    assert msgs[3]["offset"] == len(chunked + head_reply + not_modified)


def test_parse_reports_where_it_stops() -> None:
    msgs = HTTP.parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\nX-a: b\r\n", REQUEST)
    assert [m["kind"] for m in msgs] == ["request", "invalid"]
    assert msgs[1]["error"] == "incomplete" and msgs[1]["offset"] == 27
    (bad,) = HTTP.parse(b"HELLO THERE\r\n\r\n", REQUEST)
    assert bad["error"] == "start line"
    msgs = HTTP.parse(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", REQUEST)
    assert msgs[0]["error"] == "header line"


# -- token codec -----------------------------------------------------------------------------
CODEC_CASES = {
    "get": (b"GET /index.html HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", 0),
    "post": (b"POST /api HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 0),
    "odd method and header": (b"PROPFIND /d HTTP/1.1\r\nhost:x\r\nX-Custom:  two spaces\r\n\r\n", 0),
    "pipelined": (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n", 0),
    "response standard reason": (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello", 1),
    "response odd reason": (b"HTTP/1.1 302 Moved Temporarily\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 1),
    "no reason": (b"HTTP/1.1 599\r\n\r\n", 1),
    "body cut by segment": (b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n<html>", 1),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1),
    "close delimited": (b"HTTP/1.0 200 OK\r\n\r\nrest of the connection", 1),
    "target with space": (b"GET /cgi;cat /etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 0),
}


@pytest.mark.parametrize("case", list(CODEC_CASES))
def test_codec_round_trip(case: str) -> None:
    payload, direction = CODEC_CASES[case]
    assert_codec_roundtrip(HTTP, payload, direction)


def test_known_fields_are_single_tokens_and_content_length_is_derived() -> None:
    tokens = HTTP.encode(b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 0)
    assert tokens is not None
    names = [TOKEN_NAMES[t] for t in tokens]
    assert names[:2] == ["REQUEST", "METHOD:POST"]
    assert "VERSION:HTTP/1.1" in names and "HEADER:Host" in names and "VALUE_LENGTH" in names
    assert "0x33" not in names  # the length digit "3" is not spelt out
    # A generator that writes a longer body gets a matching Content-Length at decode time.
    body_end = names.index("MSG_END")
    longer = tokens[:body_end] + list(b"defg") + tokens[body_end:]
    assert decode_payload(longer).endswith(b"Content-Length: 7\r\n\r\nabcdefg")


def test_encode_declines_what_is_not_whole_messages() -> None:
    assert HTTP.encode(b"continuation of a body", 1) is None
    assert HTTP.encode(b"GET / HTTP/1.1\r\nHost: a\r\n", 0) is None  # head not finished (slowloris)
    assert HTTP.encode(b"GET / HTTP/1.1\nHost: a\n\n", 0) is None  # bare LF
    swapped = HTTP.encode(b"HTTP/1.1 200 OK\r\n\r\n", 0)  # roles swapped: still exact
    assert swapped is not None and TOKEN_NAMES[swapped[0]] == "RESPONSE"


def test_vocabulary_is_modest_and_unique() -> None:
    assert 300 < len(TOKEN_NAMES) <= 600
    assert len(set(TOKEN_NAMES)) == len(TOKEN_NAMES)
    assert TOKEN_ID["0x41"] == 0x41


def test_a_message_that_breaks_off_is_closed_where_it_breaks() -> None:
    """Sampled tokens that break the grammar inside headers or a body keep what decoded: the
    message is closed there (Content-Length derived from the body so far), later messages
    dropped; a broken second start line keeps the first message. Both parse as HTTP."""
    tokens = HTTP.encode(b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 0)
    names = [TOKEN_NAMES[t] for t in tokens]
    in_body = [*tokens[:names.index("MSG_END") - 1], TOKEN_ID["VERSION:HTTP/1.1"], 7, 7]
    closed = decode_payload(in_body)
    assert closed == b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"
    in_headers = [*tokens[:names.index("HEADER:Host")], TOKEN_ID["VERSION:HTTP/1.1"]]
    assert decode_payload(in_headers) == b"POST /api HTTP/1.1\r\n\r\n"
    assert decode_payload([*tokens, TOKEN_ID["REQUEST"], TOKEN_ID["END"]]) == decode_payload(tokens)
    for payload in (closed, decode_payload(in_headers)):
        (msg,) = HTTP.parse(payload, 0)
        assert msg["kind"] == "request"


@pytest.mark.parametrize(
    "tokens",
    [[], [TOKEN_ID["REQUEST"]], [TOKEN_ID["REQUEST"], 9999], [TOKEN_ID["METHOD:GET"]],
     [TOKEN_ID["RESPONSE"], TOKEN_ID["VERSION:HTTP/1.1"], TOKEN_ID["STATUS_OTHER"], ord("2"), TOKEN_ID["END"]]],
    ids=["empty", "truncated", "out of range", "no message start", "structure inside status"],
)
def test_decode_rejects_malformed_sequences(tokens: list[int]) -> None:
    with pytest.raises(TokenError):
        decode_payload(tokens)


# -- build -----------------------------------------------------------------------------------
def test_build_derives_content_length_and_round_trips() -> None:
    built = HTTP.build({"kind": "request", "method": "PUT", "target": "/f", "version": "HTTP/1.1",
                        "headers": [("Host", "h"), ("Content-Length", "999")], "body": b"12345"}, 0)
    assert built == b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345"
    added = HTTP.build({"kind": "response", "status": 201, "reason": "Created", "body": b"ok"}, 1)
    assert added == b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    stream = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n"
    assert_build_roundtrip(HTTP, stream, 1)


# -- rules -----------------------------------------------------------------------------------
def _ctx(client: list[bytes], server: list[bytes]) -> object:
    conv = TcpConversation().handshake()
    for c, s in zip(client, server, strict=True):
        conv.send(0, c)
        if s:
            conv.send(1, s)
    return rule_context(conv.close().table(), protocols={"http": HTTP})


def test_rules_are_many_and_documented() -> None:
    rules = HTTP.rules()
    assert len(rules) >= 8
    assert len({r.id for r in rules}) == len(rules)
    assert all(r.id.startswith("HTTP-") and r.protocol == "http" and r.description for r in rules)


@pytest.mark.parametrize(
    ("rule_id", "bad_client", "bad_server"),
    [
        ("HTTP-001", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", b""),
        ("HTTP-003", b"GET / HTTP/1.1\r\nHost a\r\n\r\n", b""),
        ("HTTP-004", b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", b""),
        ("HTTP-005", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"),
        ("HTTP-008", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", b""),
        ("HTTP-009", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", b""),
        ("HTTP-010", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                     b"0\r\n\r\n", b""),
        ("HTTP-011", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n"),
        ("HTTP-012", b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", b""),
    ],
)
def test_rule_fires_on_a_crafted_bad_message(rule_id: str, bad_client: bytes, bad_server: bytes) -> None:
    rule = find_rule(HTTP.rules(), rule_id)
    good = _ctx([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    applicable, violating = check_rule(rule, good)
    assert len(violating) == 0
    applicable, violating = check_rule(rule, _ctx([bad_client], [bad_server]))
    assert len(applicable) >= 1 and len(violating) == 1


def test_response_without_request_and_short_body_are_flagged() -> None:
    two_answers = _ctx([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"],
                       [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    assert len(check_rule(find_rule(HTTP.rules(), "HTTP-006"), two_answers)[1]) == 1
    short = _ctx([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"])
    assert len(check_rule(find_rule(HTTP.rules(), "HTTP-007"), short)[1]) == 1
    head = _ctx([b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"], [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"])
    assert len(check_rule(find_rule(HTTP.rules(), "HTTP-007"), head)[1]) == 0


def test_message_split_over_segments_is_one_message() -> None:
    conv = TcpConversation().handshake()
    conv.send(0, b"GET /split HTTP/1.1\r\nHo", b"st: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
    ctx = rule_context(conv.close().table(), protocols={"http": HTTP})
    (flow,) = ctx.streams("http")
    assert [m["target"] for m in flow.c2s.messages] == ["/split", "/two"]
    assert [flow.c2s.packet_at(m["offset"]) for m in flow.c2s.messages] == [3, 4]


# -- shared captures -------------------------------------------------------------------------
def _tshark_http(path: Path, tcp_rows: np.ndarray) -> collections.Counter:
    fields = ["frame.number", "http.request.method", "http.request.uri", "http.response.code"]
    # desegment_body off: tshark reports a message at its header, as our parser does, so a
    # capture cut mid-body (the bundled corpus is trimmed to a byte budget) counts it on both sides
    cmd = ["tshark", "-r", str(path), "-o", "http.desegment_body:FALSE", "-Y", "http", "-T", "fields",
           "-E", "aggregator=\x1f"]
    out = subprocess.run(cmd + [a for f in fields for a in ("-e", f)], capture_output=True, text=True,
                         check=True).stdout
    seen: collections.Counter = collections.Counter()
    for line in filter(None, out.split("\n")):  # not splitlines(): it splits at \x1f too
        frame, methods, uris, codes = line.split("\t")
        if not tcp_rows[int(frame) - 1]:
            continue  # a frame pytrafgen's dissector does not see as TCP (e.g. tunnelled)
        for method, uri in zip(methods.split("\x1f"), uris.split("\x1f"), strict=False):
            if method:
                seen[(method, uri)] += 1
        seen.update(("response", code) for code in codes.split("\x1f") if code)
    return seen


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("path", HTTP_CAPTURES, ids=shared_ids(HTTP_CAPTURES))
def test_fields_agree_with_tshark_and_tokens_round_trip(path: Path) -> None:
    from pytrafgen.capture import read_pcap

    table = read_pcap(path)
    ctx = rule_context(table, protocols={"http": HTTP})
    ours: collections.Counter = collections.Counter()
    for flow in ctx.streams("http"):
        # tshark reports the target up to its first space (attack traffic sends spaces in it)
        ours.update((m["method"], m["target"].split(" ")[0]) for m in flow.c2s.messages if m["kind"] == "request")
        ours.update(("response", str(m["status"])) for m in flow.s2c.messages if m["kind"] == "response")
    assert ours == _tshark_http(path, table.proto == 6)
    encoded = 0
    for flow in ctx.streams("http"):
        for direction in (0, 1):
            for i in flow.direction(direction).packets:
                payload = table.payload(int(i))
                tokens = HTTP.encode(payload, direction)
                if tokens is not None:
                    assert HTTP.decode(tokens, direction) == payload
                    encoded += 1
    assert encoded >= 1


def test_recognise_by_payload_then_port() -> None:
    assert HTTP.recognise(8081, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"")
    assert HTTP.recognise(9999, b"BREW /pot HTTP/1.1\r\n", b"")  # unknown method, still HTTP
    assert HTTP.recognise(40000, b"HTTP/1.1 200 OK\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n")  # roles swapped
    assert HTTP.recognise(80, b"", b"")  # no payload yet (a SYN flood): the port decides
    assert not HTTP.recognise(80, b"\x16\x03\x01\x02\x00", b"")  # TLS on port 80 is not HTTP
    assert not HTTP.recognise(1883, bytes([0x10, 0x0C]) + b"\x00\x04MQTT", b"")


def test_a_request_line_sampled_without_its_version_gets_http_1_1() -> None:
    tokens = HTTP.encode(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    assert tokens is not None
    no_version = [t for t in tokens if TOKEN_NAMES[t] != "VERSION:HTTP/1.1"]
    assert decode_payload(no_version) == b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"


HTTP_REQUEST_LINE = re.compile(rb"[!-~]+ /[!-~]* [!-~]+\Z")
HTTP_STATUS_LINE = re.compile(rb"[!-~]+ [1-5][0-9][0-9](?: [ -~]*)?\Z")


def random_token_sequences(n: int, seed: int) -> list[list[int]]:
    """Token sequences as a model that ignores the grammar would sample them: structure tokens,
    names and bytes mixed, some starting like a message, a few ids out of range."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length = int(rng.integers(0, 40))
        seq = rng.integers(0, len(TOKEN_NAMES) + 3, size=length).tolist()
        if k % 3 == 0:
            seq = [TOKEN_ID["REQUEST" if k % 2 else "RESPONSE"], *seq]
        out.append(seq)
    return out


def test_total_decode_yields_a_start_line_for_any_tokens() -> None:
    """``HttpProtocol.decode`` (the AR model's decode path) never fails: any token sequence gives
    a message whose start line parses as the kind its side sends, or nothing for no tokens; a
    sequence the grammar accepts decodes exactly as ``decode_payload``."""
    from pytrafgen_http.messages import split_messages

    for seq in random_token_sequences(3000, 0):
        for direction in (0, 1):
            data = HTTP.decode(seq, direction)
            if not seq:
                assert data == b""
                continue
            try:
                assert data == decode_payload(seq)
                continue
            except TokenError:
                pass
            messages, _, error = split_messages(data, None)
            assert messages or error not in ("start line",), (seq, data)
            line = data.split(b"\r\n", 1)[0]
            assert HTTP_REQUEST_LINE.match(line) or HTTP_STATUS_LINE.match(line), (seq, data)
    for payload in (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"):
        tokens = HTTP.encode(payload, 0)
        assert tokens is not None and HTTP.decode(tokens, 0) == payload


def test_total_decode_fills_what_the_start_line_lacks() -> None:
    """The sampled sequences that used to be drawn again: a response with no status (200 OK),
    a request target broken by MSG_END (closed there), a request without its REQUEST token."""
    no_status = [TOKEN_ID["RESPONSE"], TOKEN_ID["VERSION:HTTP/1.1"], TOKEN_ID["HEADER:Host"], TOKEN_ID["VALUE"],
                 *b"a", TOKEN_ID["END"], TOKEN_ID["HEADERS_END"], TOKEN_ID["MSG_END"]]
    assert HTTP.decode(no_status, 1) == b"HTTP/1.1 200 OK\r\nHost: a\r\n\r\n"
    broken_target = [TOKEN_ID["REQUEST"], TOKEN_ID["METHOD:GET"], *b"/body>\r\n", TOKEN_ID["MSG_END"]]
    assert HTTP.decode(broken_target, 0).startswith(b"GET /body> HTTP/1.1\r\n")
    headless = [TOKEN_ID["HEADER:Host"], TOKEN_ID["VALUE"], *b"h", TOKEN_ID["END"], TOKEN_ID["HEADERS_END"],
                TOKEN_ID["MSG_END"]]
    assert HTTP.decode(headless, 0) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
