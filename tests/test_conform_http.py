"""HTTP conformed at build time (``pytrafgen.conform.http``): start lines rebuilt from their
fields, singleton fields kept once, messages with nothing to keep not sent, open heads left open,
client bytes of no service dropped; judged by the HTTP rules and, in a namespace, by nginx."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_conform import HANDSHAKE, PLAN, conform, http_flow

from pytrafgen.build import build_frames, write_records
from pytrafgen.evaluate.compliance import run_rules
from pytrafgen.evaluate.evalset import load_evalset
from pytrafgen.plugins import get_registry
from pytrafgen.records import FieldRecords


def http_rule_failures(records: FieldRecords, tmp_path: Path) -> dict[str, int]:
    pcap = tmp_path / "http.pcap"
    write_records(pcap, records, PLAN, seed=0, conform=False)
    per_rule = run_rules(load_evalset([pcap], "g"), protocols=get_registry().protocols)["per_rule"]
    return {k: v["violating"] for k, v in per_rule.items() if k.startswith("HTTP") and v.get("violating")}


def test_http_start_lines_are_rebuilt_from_their_fields(tmp_path: Path) -> None:
    """A request line "GET P/ HTP/1.1" without Host becomes "GET / HTTP/1.1" with the Host the flows use; a
    status line spelled "HT 404 Not Fund" becomes "HTTP/1.1 404 Not Found"; a header line that
    is not name: value is dropped. Raw, HTTP-001/002 fail (and stop the parse); conformed, no HTTP rule."""
    good = b"GET /a HTTP/1.1\r\nHost: h.example\r\n\r\n"
    bad_request = b"GET P/ HTP/1.1\r\nUser-Agent: x\r\nno colon\r\n\r\n"
    records = http_flow([(0, good), (1, b"HTTP/1.1 204 No Content\r\n\r\n"), (0, bad_request),
                         (1, b"HT 404 Not Fund\r\n\r\n")])
    assert set(http_rule_failures(records, tmp_path)) == {"HTTP-001", "HTTP-002"}
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["http_start_lines"] == 2 and counts["http_host"] == 1 and counts["http_header_lines"] == 1
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert built.frame(5).endswith(b"GET / HTTP/1.1\r\nHost: h.example\r\nUser-Agent: x\r\n\r\n")
    assert built.frame(6).endswith(b"HTTP/1.1 404 Not Found\r\n\r\n")
    assert http_rule_failures(out, tmp_path) == {}


def test_a_repeated_singleton_field_keeps_its_first_line() -> None:
    """A request repeating Authorization and User-Agent (fields that are one value, not a list:
    RFC 9110 §5.3; nginx answers such a request 400) keeps the first line of each; list fields
    (Accept) may repeat and stay, and an open head (it may go on past the flow) is left."""
    dup = (b"GET /admin/ HTTP/1.1\r\nHost: a\r\nAuthorization: Base\r\nUser-Agent: x\r\n"
           b"Authorization: Basic YWRtaW46eA==\r\nAccept: a\r\nAccept: b\r\nuser-agent: y\r\n\r\n")
    records = http_flow([(0, dup)])
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["http_singleton_fields"] == 2
    i = len(HANDSHAKE)
    off, n = int(out.packets["payload_off"][i]), int(out.packets["payload_len"][i])
    assert out.blob[off:off + n].tobytes() == (b"GET /admin/ HTTP/1.1\r\nHost: a\r\nAuthorization: Base\r\n"
                                               b"User-Agent: x\r\nAccept: a\r\nAccept: b\r\n\r\n")
    single = http_flow([(0, b"GET / HTTP/1.1\r\nHost: a\r\nAccept: a\r\nAccept: b\r\n\r\n")])
    assert "http_singleton_fields" not in conform(single, single.packets["ts_ns"])[1]
    still_open = http_flow([(0, b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nUser-Agent: y\r\n")])
    assert "http_singleton_fields" not in conform(still_open, still_open.packets["ts_ns"])[1]


def _nginx_in_namespaces_unavailable() -> str:
    if os.geteuid() != 0:
        return "replay needs root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("nginx") is None:
        return "iproute2 and nginx are needed (apt-get install iproute2 nginx)"
    return ""


@pytest.mark.netns
@pytest.mark.skipif(bool(_nginx_in_namespaces_unavailable()), reason=_nginx_in_namespaces_unavailable() or "ok")
def test_a_repeated_authorization_is_refused_by_nginx_and_conformed_is_judged(tmp_path: Path) -> None:
    """The real server: a generated brute-force guess repeating Authorization (as the bundled
    AR model's did: 12 of its 14 requests nginx answered 400) gets 400 from nginx; conformed, the
    same guess is judged (401), as the real attack's guesses are."""
    from pytrafgen.replay import scenarios
    from pytrafgen.replay.senders import Bounds
    from pytrafgen.replay.trace import load_trace

    guess = (b"GET /admin/ HTTP/1.1\r\nHost: 10.99.0.1\r\nConnection: close\r\nAuthorization: Base\r\n"
             b"Authorization: Basic YWRtaW46eA==\r\nUser-Agent: Mozilla/4.0 (Hydra)\r\n\r\n")
    records = http_flow([(0, guess)])
    statuses = {}
    for stage, conformed in (("raw", False), ("final", True)):
        pcap = tmp_path / f"{stage}.pcap"
        write_records(pcap, records, PLAN, seed=0, conform=conformed, protocols=get_registry().protocols)
        effect = scenarios.measure(scenarios.get_scenario("http_bruteforce"), load_trace(pcap),
                                  Bounds(max_sessions=5, timeout_s=1.0, hold_cap_s=1.0))
        statuses[stage] = (effect.figures["status_401"], effect.figures["status_other"])
    assert statuses == {"raw": (0, {"400": 1}), "final": (1, {})}


def test_http_messages_without_a_code_or_method_are_not_sent_and_open_heads_stay_open() -> None:
    """A status line with no 3-digit code has nothing to keep: its segment carries no data. A
    request head cut off by zero padding (a slow client's, or the payload stored in part) stays
    open: only the padding goes when its start line needs rebuilding, and nothing is changed
    when it does not."""
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    out, counts = conform(http_flow([(0, req), (1, b"HTP/1.1 20 21 OK\r\n\r\n")]), np.arange(5, dtype=np.int64))
    assert counts["http_undecodable_messages"] == 1 and out.packets["payload_len"][4] == 0
    slow = b"GET / HTTP/1.1\r\nHost: a\r\n"
    records = http_flow([(0, slow)], padded={0: 20})
    out, counts = conform(records, records.packets["ts_ns"])
    assert not any(k.startswith("http") for k in counts) and out.packets["payload_len"][3] == len(slow) + 20
    records = http_flow([(0, b"GET / HTP/1.1\r\nHost: a\r\n")], padded={0: 20})
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["http_start_lines"] == 1 and out.packets["payload_len"][3] == len(slow)


def test_client_bytes_of_no_service_are_not_sent(tmp_path: Path) -> None:
    """A flow to port 80 opened by the client's SYN whose client sends bytes of no HTTP method
    (TCP-020): the client's segments go without data; one that opens with a request is kept."""
    records = http_flow([(0, b"GOT / HTTP/1.1\r\n"), (0, b"X-a: b\r\n")])
    pcap = tmp_path / "raw.pcap"
    write_records(pcap, records, PLAN, seed=0, conform=False)
    assert run_rules(load_evalset([pcap], "g"), protocols=get_registry().protocols)["per_rule"]["TCP-020"]["violating"] == 1
    out, counts = conform(records, records.packets["ts_ns"])
    assert counts["unmatched_service_payloads"] == 2 and out.packets["payload_len"][3:].tolist() == [0, 0]
    kept = http_flow([(0, b"GET / HTTP/1.1\r\n"), (0, b"X-a: b\r\n")])
    _, counts = conform(kept, kept.packets["ts_ns"])
    assert "unmatched_service_payloads" not in counts
