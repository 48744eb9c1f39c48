"""HTTP heads rebuilt from the fields they spell (see the package doc)."""

from __future__ import annotations

import re
from http import HTTPStatus

import numpy as np

from pytrafgen.conform.payloads import _Payloads
from pytrafgen.conform.tcp import SYN
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.records import FieldRecords

HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")
HTTP_METHOD_NAMES = frozenset(m.strip() for m in HTTP_METHODS)


HTTP_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
HTTP_TARGET = re.compile(rb"/[!-~]*\Z")
HTTP_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}(?: [^\r\n]*)?\Z")


def _http_head(data: bytes, direction: int, host: bytes, counts: dict[str, int]) -> bytes | None:
    """``data`` (a segment that starts a message) with its start line rebuilt from the fields
    it spells (a registered method, an origin-form target or "/", HTTP/1.0 or 1.1; a response's
    first status code in 100-599 and its reason phrase), header lines that are not
    ``name: value`` dropped and an HTTP/1.1 request given exactly one Host; zero padding after
    a head that does not end is dropped (a request's head stays open, as a slow client's does;
    a response's ends there). None when no method or status code is there to keep."""
    padded = data.find(b"\x00")
    end = data.find(b"\r\n\r\n")
    if end >= 0 and (padded < 0 or end < padded):
        head, rest, closed = data[:end], data[end + 4:], True
    elif padded >= 0:  # the rest is the builder's zero padding: a request's head stays open
        head, rest, closed = data[:padded], b"", direction == 1
    else:
        head, rest, closed = data, b"", False
    trailing = b"\r\n" if not closed and head.endswith(b"\r\n") else b""  # an open head's last line end
    lines = head[:len(head) - len(trailing)].split(b"\r\n")
    start = lines[0]
    words = start.split()
    version = b"HTTP/1.0" if start.endswith(b"1.0") else b"HTTP/1.1"
    if direction == 0:
        if not words or words[0] not in HTTP_METHOD_NAMES:
            return None
        target = words[1] if len(words) > 1 and HTTP_TARGET.match(words[1]) and words[1] != version else b"/"
        new_start = b" ".join((words[0], target, version))
    else:
        code = re.search(rb"(?<![0-9])[1-5][0-9]{2}(?![0-9])", start)
        if code is None:
            return None
        status = int(code.group())
        phrase = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""
        new_start = b"HTTP/1.1 " + code.group() + (b" " + phrase if phrase else b"")
        version = b"HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and HTTP_TOKEN.match(name) and all(32 <= c < 127 or c == 9 for c in value):
            headers.append(line)
    if len(headers) != len(lines) - 1:
        counts["http_header_lines"] = counts.get("http_header_lines", 0) + len(lines) - 1 - len(headers)
    if direction == 0 and version == b"HTTP/1.1" and closed:
        hosts = [h for h in headers if h.split(b":", 1)[0].lower() == b"host"]
        if len(hosts) != 1:
            headers = [b"Host: " + host] + [h for h in headers if h not in hosts]
            counts["http_host"] = counts.get("http_host", 0) + 1
    if new_start != start:
        counts["http_start_lines"] = counts.get("http_start_lines", 0) + 1
    return b"\r\n".join([new_start, *headers]) + (b"\r\n\r\n" + rest if closed else trailing)


def conform_http_heads(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int],
                       spec: ProtocolSpec | None) -> None:
    """HTTP messages whose head the HTTP rules would reject, rebuilt (``_http_head``) where a
    segment starts a message: a side's first segment when its SYN is in the flow, and any
    segment opening like a request (client) or a status line (server); a message with no
    method or status code to keep is not sent (its segment carries no data). ``spec``: the HTTP
    plugin's protocol (its recognise() picks the flows), None: not installed, nothing to do."""
    if spec is None:
        return
    p, fl = records.packets, records.flows
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    first: dict[tuple[int, int], int] = {}
    for i in rows.tolist():
        first.setdefault((int(p["flow"][i]), int(p["direction"][i])), i)
    flows = {f for f, _ in first}
    http = {f for f in flows if spec.recognise(int(fl["server_port"][f]),
                                               pay.get(first[(f, 0)])[:512] if (f, 0) in first else b"",
                                               pay.get(first[(f, 1)])[:512] if (f, 1) in first else b"")}
    syn = np.flatnonzero((p["tcp_flags"] & SYN) != 0)
    syn_sides = set(zip(p["flow"][syn].tolist(), p["direction"][syn].tolist(), strict=True))
    hosts: dict[bytes, int] = {}
    for i in rows.tolist():
        if int(p["flow"][i]) in http and p["direction"][i] == 0:
            for line in pay.get(i).split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"host" and HTTP_TARGET.match(b"/" + value.strip()):
                    hosts[value.strip()] = hosts.get(value.strip(), 0) + 1
    host = max(hosts, key=lambda h: hosts[h]) if hosts else b"localhost"
    for i in rows.tolist():
        f, d = int(p["flow"][i]), int(p["direction"][i])
        if f not in http:
            continue
        data = pay.get(i)
        client_first = pay.get(first[(f, 0)])[:8] if (f, 0) in first else b""
        request = data.split(b" ", 1)[0] in HTTP_METHOD_NAMES and b" HTTP/1." in data.split(b"\r\n", 1)[0]
        if client_first.startswith(HTTP_METHODS) and ((d == 0 and data[:5] == b"HTTP/") or (d == 1 and request)):
            pay.set(i, b"")  # a client's response, a server's request: the other side's message
            counts["http_wrong_side_messages"] = counts.get("http_wrong_side_messages", 0) + 1
            continue
        opens = data.split(b" ", 1)[0] in HTTP_METHOD_NAMES if d == 0 else data[:2] == b"HT"
        if not (opens or (first[(f, d)] == i and (f, d) in syn_sides)):
            continue
        msgs = spec.parse(data, d)
        ok = bool(msgs) and msgs[0].get("kind") != "invalid" and (
            d == 1 or msgs[0]["version"] != "HTTP/1.1"
            or sum(n.lower() == "host" for n, _ in msgs[0]["headers"]) == 1)
        # a head that does not end in the segment: a request still open (a slow client) is not
        # judged, nor a response whose start line is one
        start = data.split(b"\r\n", 1)[0].split(b"\x00", 1)[0].rstrip(b"\r")
        if msgs and msgs[0].get("error") == "incomplete" and (d == 0 or HTTP_STATUS_LINE.match(start)):
            ok = True
        if ok:
            continue
        fixed = _http_head(data, d, host, counts)
        if fixed is None:
            counts["http_undecodable_messages"] = counts.get("http_undecodable_messages", 0) + 1
            fixed = b""
        if fixed != data:
            pay.set(i, fixed)
