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
# Fields whose value is one item, not a comma-separated list (RFC 9110 §5.3: a sender must not
# repeat them in a message); servers refuse a repeat (nginx answers 400 "client sent duplicate
# header line" to a second Authorization). Host and Content-Length have steps of their own.
HTTP_SINGLETON_FIELDS = frozenset((
    b"authorization", b"proxy-authorization", b"content-type", b"content-location", b"user-agent", b"referer",
    b"from", b"date", b"expires", b"last-modified", b"location", b"retry-after", b"etag", b"age", b"server",
    b"max-forwards", b"range", b"content-range", b"if-modified-since", b"if-unmodified-since", b"if-range",
))


def _repeats_singleton(names: list[bytes]) -> bool:
    """Whether a message's header names (any case) repeat a singleton field."""
    seen = [n.strip().lower() for n in names if n.strip().lower() in HTTP_SINGLETON_FIELDS]
    return len(seen) != len(set(seen))


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
    if closed:  # a repeated singleton field: its first line stands (an open head may go on: left)
        seen: set[bytes] = set()
        kept = []
        for line in headers:
            name = line.split(b":", 1)[0].lower()
            if name in HTTP_SINGLETON_FIELDS and name in seen:
                counts["http_singleton_fields"] = counts.get("http_singleton_fields", 0) + 1
                continue
            seen.add(name)
            kept.append(line)
        headers = kept
    if direction == 0 and version == b"HTTP/1.1" and closed:
        hosts = [h for h in headers if h.split(b":", 1)[0].lower() == b"host"]
        if len(hosts) != 1:
            headers = [b"Host: " + host] + [h for h in headers if h not in hosts]
            counts["http_host"] = counts.get("http_host", 0) + 1
    if new_start != start:
        counts["http_start_lines"] = counts.get("http_start_lines", 0) + 1
    return b"\r\n".join([new_start, *headers]) + (b"\r\n\r\n" + rest if closed else trailing)


def _http_flows(records: FieldRecords, spec: ProtocolSpec, first: dict[tuple[int, int], bytes]) -> set[int]:
    """The TCP flows a reader takes for HTTP: on one of the protocol's ports (a dissector goes by
    the port), or recognised by the HTTP plugin; ``first``: each side's first payload bytes."""
    fl = records.flows
    ports = set(spec.default_ports)
    return {f for f in {k[0] for k in first}
            if int(fl["server_port"][f]) in ports or int(fl["client_port"][f]) in ports
            or spec.recognise(int(fl["server_port"][f]), first.get((f, 0), b""), first.get((f, 1), b""))}


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
    http = _http_flows(records, spec, {k: pay.get(i)[:512] for k, i in first.items()})
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
            or sum(n.lower() == "host" for n, _ in msgs[0]["headers"]) == 1) and (
            msgs[0].get("error") == "incomplete"
            or not _repeats_singleton([n.encode("latin-1") for n, _ in msgs[0].get("headers", [])]))
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


def _opens_message(data: bytes, direction: int) -> bool:
    """Whether a segment starts with a request line (client) or a status line (server)."""
    return data[:5] == b"HTTP/" if direction == 1 else data.split(b" ", 1)[0] in HTTP_METHOD_NAMES


NO_BODY_STATUS = re.compile(rb"HTTP/1\.[01] (?:1[0-9][0-9]|204|304)(?: |\Z)")


def _chunks_frame(body: bytes) -> bool:
    """Whether ``body`` (as far as it goes) is chunked transfer coding: size lines in hex, each
    chunk's bytes and CRLF after them."""
    pos = 0
    while pos < len(body):
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            return re.fullmatch(rb"[0-9A-Fa-f]*\r?", body[pos:]) is not None
        size = body[pos:line_end].split(b";", 1)[0]
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size):
            return False
        pos = line_end + 2 + int(size, 16)
        if int(size, 16) == 0:
            return True  # the last chunk: trailers follow
        if body[pos:pos + 2] not in (b"\r\n", b"\r", b"")[: 3 if pos + 2 > len(body) else 1]:
            return False
        pos += 2
    return True


def _framed_head(data: bytes, direction: int, following: bytes, host: bytes, last: bool = False) -> bytes | None:
    """``data`` (a segment that starts a message, or b"" for a message whose head is missing)
    with a head that announces the bytes after it (in ``data`` and ``following``, the side's
    next segments up to its next message): one
    Content-Length of that many bytes in place of the Content-Length and Transfer-Encoding
    lines (none where a head without either has no body); a response whose status has no body
    (1xx, 204, 304) and bytes after it is a 200. The side's ``last`` message may run past the
    flow's end: a larger Content-Length, or chunked coding that frames, is kept. A server's
    zero padding after a head that does not end (the builder's, past the stored bytes) becomes
    the start of the body; None for a head that stays open (a slow client's, or one continued
    in the next segment)."""
    if not data:
        start = b"HTTP/1.1 200 OK" if direction == 1 else b"POST / HTTP/1.1\r\nHost: " + host
        return start + b"\r\nContent-Length: %d\r\n\r\n" % len(following)
    end = data.find(b"\r\n\r\n")
    padded = data.find(b"\x00")
    closed = end >= 0 and (padded < 0 or end < padded)
    if closed:
        head, rest = data[:end], data[end + 4:]
    elif padded >= 0 and direction == 1:
        head, rest = data[:padded].rstrip(b"\r\n"), data[padded:]
    else:
        return None
    lines = head.split(b"\r\n")
    total = len(rest) + len(following)
    if direction == 1 and NO_BODY_STATUS.match(lines[0]):
        if not total:
            return data
        lines[0] = b"HTTP/1.1 200 OK"
    framing = [k for k in range(1, len(lines))
               if lines[k].split(b":", 1)[0].strip().lower() in (b"content-length", b"transfer-encoding")]
    if closed and lines[0] == head.split(b"\r\n", 1)[0] and _announces(lines, framing, rest + following, direction, last):
        return data
    length = [b"Content-Length: %d" % total] if framing or total else []
    at = framing[0] if framing else len(lines)  # in place of the first framing line
    kept = [h for k, h in enumerate(lines[:at]) if k not in framing] + length + [
        h for k, h in enumerate(lines[at:], at) if k not in framing]
    return b"\r\n".join(kept) + b"\r\n\r\n" + rest


def _announces(lines: list[bytes], framing: list[int], after: bytes, direction: int, last: bool) -> bool:
    """Whether a head's framing lines already frame the bytes ``after`` it: one Content-Length
    of their size, or of fewer where a message of the side starts right after them (sent in one
    segment with the body's end), none where there are none; for the side's ``last`` message
    (its body may run past the flow's end) also a larger Content-Length, or chunked coding
    that frames."""
    total = len(after)
    if not framing:
        return total == 0
    if len(framing) > 1:
        return False
    name, _, value = lines[framing[0]].partition(b":")
    value = value.strip()
    if name.strip().lower() == b"content-length":
        return value.isdigit() and (int(value) == total or (last and int(value) > total) or (
            int(value) < total and _opens_message(after[int(value):], direction)))
    return last and value.lower() == b"chunked" and _chunks_frame(after)


def conform_http_bodies(records: FieldRecords, pay: _Payloads, ts: np.ndarray, counts: dict[str, int],
                        spec: ProtocolSpec | None) -> None:
    """Each side of an HTTP flow (an HTTP port, or recognised) framed from its first byte, as a
    reader of the connection frames it: every message announces, in one Content-Length, the
    bytes that follow it up to the side's next message (``_framed_head``), and bytes before a
    side's first message get a head of their own (a server's: "200 OK"; a client's: a POST),
    except a server's where the client's SYN is in the flow (its requests are all in view) that
    come before any request or where the server's responses already answer every request (as
    the HTTP parser counts them): those are not sent, nor, there, responses (with their bodies)
    beyond the requests.
    Counted per segment changed: ``http_body_lengths``, ``http_heads_added``,
    ``http_headless_bodies``. ``spec``: the HTTP plugin's protocol, None: nothing to do."""
    if spec is None:
        return
    p, fl = records.packets, records.flows
    rows = np.flatnonzero((fl["proto"][p["flow"]] == 6) & (pay.length > 0))
    rows = rows[np.lexsort((rows, ts[rows], p["flow"][rows]))]
    sides: dict[tuple[int, int], list[int]] = {}
    for i in rows.tolist():
        sides.setdefault((int(p["flow"][i]), int(p["direction"][i])), []).append(i)
    http = _http_flows(records, spec, {k: pay.get(side[0])[:512] for k, side in sides.items()})
    syn = np.flatnonzero((p["tcp_flags"] & SYN) != 0)
    syn_sides = set(zip(p["flow"][syn].tolist(), p["direction"][syn].tolist(), strict=True))
    host = b"localhost"
    for (f, d), side in sides.items():
        if f in http and d == 0 and _opens_message(pay.get(side[0]), 0):
            for line in pay.get(side[0]).split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                if line.lower().startswith(b"host:") and HTTP_TARGET.match(b"/" + line[5:].strip()):
                    host = line[5:].strip()
                    break
    for (f, d), side in sides.items():
        if f not in http:
            continue
        starts = [k for k, i in enumerate(side) if _opens_message(pay.get(i), d)]
        client = sides.get((f, 0), [])
        requests = sum(m.get("kind") == "request" for m in spec.parse(b"".join(pay.get(i) for i in client), 0))
        added = 0
        if not starts or starts[0] != 0:  # bytes before the side's first message
            before = any(ts[i] < ts[side[0]] and _opens_message(pay.get(i), 0) for i in client)
            if d == 1 and (f, 0) in syn_sides and (not before or len(starts) >= requests):
                for i in side[:starts[0] if starts else len(side)]:
                    pay.set(i, b"")
                    counts["http_headless_bodies"] = counts.get("http_headless_bodies", 0) + 1
                side = side[starts[0]:] if starts else []
                starts = [k - starts[0] for k in starts] if starts else []
            else:
                body = b"".join(pay.get(i) for i in side[:starts[0] if starts else len(side)])
                pay.set(side[0], (_framed_head(b"", d, body, host) or b"") + pay.get(side[0]))
                counts["http_heads_added"] = counts.get("http_heads_added", 0) + 1
                added = 1
                side = side[starts[0]:] if starts else []
                starts = [k - starts[0] for k in starts] if starts else []
        if d == 1 and (f, 0) in syn_sides:  # responses beyond the requests the parser counts
            allowed = max(requests - added, 0)
            for n in range(allowed, len(starts)):
                for i in side[starts[n]:starts[n + 1] if n + 1 < len(starts) else len(side)]:
                    pay.set(i, b"")
                    counts["http_unrequested_responses"] = counts.get("http_unrequested_responses", 0) + 1
            starts = starts[:allowed]
        for n, k in enumerate(starts):
            following = side[k + 1:starts[n + 1] if n + 1 < len(starts) else len(side)]
            data = pay.get(side[k])
            framed = _framed_head(data, d, b"".join(pay.get(i) for i in following), host, last=n + 1 == len(starts))
            if framed is not None and framed != data:
                pay.set(side[k], framed)
                counts["http_body_lengths"] = counts.get("http_body_lengths", 0) + 1
            elif framed is None:  # a head that stays open (a slow client's): its lines made well-formed
                _conform_open_head(pay, side[k:k + 1 + len(following)], counts)


HTTP_TCHAR = frozenset(b"!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


def _header_line(line: bytes) -> bytes:
    """``line`` as a well-formed header line of the same length (at least 2 bytes): a name of
    token characters (others become "X"), a colon where the line had one after its first byte
    (else at its first space, else its middle) and a value without control characters."""
    n = len(line)
    colon = line.find(b":")
    if not 1 <= colon < n:
        space = line.find(b" ", 1)
        colon = space if 1 <= space < n else max(1, n // 2)
    name = bytes(c if c in HTTP_TCHAR else 0x58 for c in line[:colon])
    value = bytes(0x20 if (c < 0x20 and c != 0x09) or c == 0x7F else c for c in line[colon + 1:])
    return name + b":" + value


def _conform_open_head(pay: _Payloads, segments: list[int], counts: dict[str, int]) -> None:
    """The header lines of a message whose head does not end in the flow (a slow client's that
    sends a header line now and then), spread over ``segments`` (the first holds the start
    line), each made a well-formed ``name: value`` line of its own length (``_header_line``), so
    no segment changes size. The line still open at the end is left: it may end past the flow.
    Counted per segment changed: ``http_open_head_lines``."""
    parts = [pay.get(i) for i in segments]
    stream = b"".join(parts)
    lines = stream.split(b"\r\n")
    fixed = [lines[0], *(_header_line(x) if len(x) >= 2 else x for x in lines[1:-1]), lines[-1]] if len(lines) > 1 else lines
    out = b"\r\n".join(fixed)
    if out == stream:
        return
    pos = 0
    for i, old in zip(segments, parts, strict=True):
        new = out[pos:pos + len(old)]
        pos += len(old)
        if new != old:
            pay.set(i, new)
            counts["http_open_head_lines"] = counts.get("http_open_head_lines", 0) + 1
