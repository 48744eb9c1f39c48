"""The three ways replay sends traffic, all from inside the run's client namespace, all through
the destination guard before every packet, connection or datagram, all bounded in count and
time, over IPv4 or IPv6 (the capture's version).

* ``send_stateless``: the captured client packets (TCP or UDP) as raw IP packets (addresses
  rewritten to the namespace pair, checksums recomputed), keeping the capture's timing up to a
  rate cap, optionally looped (floods). Sources are spoof-pool addresses, so the target's
  answers are never answered by our kernel.
* ``replay_sessions``: each flow's client messages (HTTP requests, MQTT CONNECTs, ...) re-sent
  over a new real TCP connection at the flow's original offsets, because a real server needs a
  real handshake; what the server answers is kept per session.
* ``exchange_datagrams``: request/response UDP: each flow's datagrams from one real UDP socket,
  the server's answers kept per flow.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import os
import random
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field, replace

from pytrafgen.errors import ReplayError
from pytrafgen.replay.guard import Address, DestinationGuard
from pytrafgen.replay.netns import NamespacePair, inside, raise_fd_limit
from pytrafgen.replay.trace import UDP, TraceFlow, TracePacket

_SLEEP_THRESHOLD_S = 0.002  # shorter waits are spun: sleep() overshoots them badly
# A live server answers more slowly than the captured one did: a session waits up to this long
# past its captured close time for an answer to its last message before it closes.
ANSWER_GRACE_S = 0.5


# Ceilings no command line can raise: replay is a measurement, never a load generator.
HARD_LIMITS = {"max_packets": 1_000_000, "timeout_s": 600.0, "max_rate_pps": 200_000.0,
               "max_sessions": 5000, "hold_cap_s": 60.0}


@dataclass
class Bounds:
    """Limits every replay obeys: packets (stateless) or client messages (stateful), concurrent
    sessions, seconds of sending, packets per second, and how long one session may be held."""

    max_packets: int = 2000
    timeout_s: float = 10.0
    max_rate_pps: float = 20000.0
    max_sessions: int = 400
    hold_cap_s: float = 3.0

    def __post_init__(self) -> None:
        for name, value in (("max_packets", self.max_packets), ("timeout_s", self.timeout_s),
                            ("max_rate_pps", self.max_rate_pps), ("max_sessions", self.max_sessions),
                            ("hold_cap_s", self.hold_cap_s)):
            if not 0 < value <= HARD_LIMITS[name]:
                raise ReplayError(f"replay bound {name}={value} must lie in (0, {HARD_LIMITS[name]:g}]")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


IPV6_HDRINCL = 36  # linux/in6.h: the IPv6 header is ours, as IP_HDRINCL for IPv4


def _pseudo_header(src: Address, dst: Address, proto: int, length: int) -> bytes:
    if isinstance(src, ipaddress.IPv4Address):
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, proto)


def build_packet(src: Address, dst: Address, pkt: TracePacket, dport: int | None = None, ip_id: int = 0) -> bytes:
    """One IPv4 or IPv6 packet (the version of ``src``/``dst``) carrying ``pkt``'s TCP or UDP
    header and payload between the given addresses, the destination port rewritten when given,
    the transport checksum (and UDP length) recomputed for them. The kernel fills in the IPv4
    header checksum."""
    header = bytearray(pkt.l4_header)
    if dport is not None:
        header[2:4] = dport.to_bytes(2, "big")
    length = len(header) + len(pkt.payload)
    if pkt.proto == UDP:
        header[4:6] = length.to_bytes(2, "big")
        csum_at = 6
    else:
        csum_at = 16
    header[csum_at:csum_at + 2] = b"\0\0"
    csum = _checksum(_pseudo_header(src, dst, pkt.proto, length) + bytes(header) + pkt.payload)
    if pkt.proto == UDP and csum == 0:
        csum = 0xFFFF  # 0 means "no checksum" in UDP
    header[csum_at:csum_at + 2] = csum.to_bytes(2, "big")
    if isinstance(src, ipaddress.IPv4Address):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ip_id & 0xFFFF, 0, 64, pkt.proto, 0,
                         src.packed, dst.packed)
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, length, pkt.proto, 64, src.packed, dst.packed)
    return ip + bytes(header) + pkt.payload


def raw_socket(pair: NamespacePair, family: int) -> socket.socket:
    """A raw socket inside the client namespace whose packets carry our own IP header."""
    with inside(pair.client_ns):
        if family == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
    return sock


def looped(timeline: list[tuple[int, TracePacket]], bounds: Bounds) -> list[tuple[int, TracePacket]]:
    """``timeline`` repeated at the flood's flow arrival rate up to ``bounds.max_packets``
    packets. A repetition starts one flow-start span (first to last flow start, plus the rate
    cap's gap) after the previous one, so new flows keep arriving at the capture's rate; a
    flow's later packets keep their offsets and may fall among the next repetition's (one
    flow with a late packet, as a generated flood can hold, does not stretch the period and
    slow the flood). Every repetition is made of *new* flows (flow index and source port
    shifted per round), as a flood's later packets are in a capture: a target that keeps
    per-peer state (libcoap opens a session per address and port) must meet a stream of new
    peers, not the same few again. In time order."""
    if not timeline or bounds.max_packets == 0:
        return []
    n_flows = max(i for i, _ in timeline) + 1
    starts: dict[int, int] = {}
    for index, pkt in timeline:
        starts.setdefault(index, pkt.ts_ns)
    period_ns = max(starts.values()) - min(starts.values()) + int(1e9 / bounds.max_rate_pps)

    def shifted(rnd: int, index: int, pkt: TracePacket) -> tuple[int, TracePacket]:
        header = bytearray(pkt.l4_header)
        header[0:2] = (1024 + (pkt.sport - 1024 + rnd * n_flows) % 64512).to_bytes(2, "big")
        return (index + rnd * n_flows, replace(pkt, ts_ns=pkt.ts_ns + rnd * period_ns,
                                               sport=int.from_bytes(header[0:2], "big"), l4_header=bytes(header)))

    # A lazy merge of the repetitions in time order: repetition k+1 joins when k's first packet
    # is taken (nothing of it can come earlier), so only the repetitions in flight are held.
    heap: list[tuple[int, int, int]] = [(timeline[0][1].ts_ns, 0, 0)]  # (ts, round, position)
    out: list[tuple[int, TracePacket]] = []
    while len(out) < bounds.max_packets:
        _, rnd, pos = heapq.heappop(heap)
        index, pkt = timeline[pos]
        out.append(shifted(rnd, index, pkt))
        if pos == 0:
            heapq.heappush(heap, (timeline[0][1].ts_ns + (rnd + 1) * period_ns, rnd + 1, 0))
        if pos + 1 < len(timeline):
            heapq.heappush(heap, (timeline[pos + 1][1].ts_ns + rnd * period_ns, rnd, pos + 1))
    return out


@dataclass
class StatelessResult:
    sent: int
    offered: int
    seconds: float


def send_stateless(pair: NamespacePair, guard: DestinationGuard, timeline: list[tuple[int, TracePacket]],
                   bounds: Bounds, dport: int | None = None, family: int = 4, loop: bool = False) -> StatelessResult:
    """Send ``(flow index, packet)`` pairs (TCP or UDP) in order from spoof-pool sources (one per
    flow) to the server address of IP version ``family``; the capture's gaps are kept, squeezed
    to at most ``bounds.max_rate_pps``. With ``loop`` the timeline is sent again and again (the
    capture's rate kept, see ``looped``) until ``bounds.timeout_s`` or ``bounds.max_packets``, as a
    flood keeps going: a short generated flood is then judged by its rate, not by its length."""
    dst = guard.check(pair.server(family))
    pool = pair.spoof(family)
    rng = random.Random(0)
    chosen = looped(timeline, bounds) if loop else timeline[: bounds.max_packets]
    sock = raw_socket(pair, family)
    min_gap = 1.0 / bounds.max_rate_pps
    sent = 0
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        t0 = time.perf_counter()
        first_ts = chosen[0][1].ts_ns if chosen else 0
        due = 0.0
        for flow_index, pkt in chosen:
            due = max((pkt.ts_ns - first_ts) / 1e9, due + min_gap if sent else 0.0)
            if due > bounds.timeout_s:
                break
            wait = due - (time.perf_counter() - t0)
            if wait > _SLEEP_THRESHOLD_S:
                time.sleep(wait)
            else:
                while time.perf_counter() - t0 < due:
                    pass
            target = guard.check(dst)
            src = pool[flow_index % len(pool)]
            try:
                sock.sendto(build_packet(src, target, pkt, dport, rng.getrandbits(16)), (str(target), 0))
            except OSError as exc:
                # A generated packet larger than the link MTU cannot be sent as one raw datagram:
                # it stays unsent (offered - sent counts it) instead of ending the replay.
                if exc.errno != errno.EMSGSIZE:
                    raise
                continue
            sent += 1
        seconds = time.perf_counter() - t0
    return StatelessResult(sent=sent, offered=len(timeline), seconds=seconds)


@dataclass
class Session:
    """One replayed flow: its client messages re-sent over a fresh connection."""

    start_s: float
    messages: list[tuple[float, bytes]]
    close_s: float
    sock: socket.socket | None = None
    connected: bool = False
    next_message: int = 0
    outbox: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    received_before_last: int = -1  # bytes received when the last message was queued
    bytes_sent: int = 0
    server_closed: bool = False
    error: str = ""
    done: bool = False
    answered_at: float = 0.0  # perf_counter() when the server's first bytes arrived (0: never)
    ended_at: float = 0.0  # perf_counter() when the session closed
    port: int = 0  # the flow's captured server port (used when the replay keeps ports)


def plan_sessions(flows: list[TraceFlow], bounds: Bounds) -> list[Session]:
    """Sessions for the flows that fit the bounds: at most ``max_sessions`` flows holding at most
    ``max_packets`` client messages together, starting within ``timeout_s``."""
    sessions: list[Session] = []
    budget = bounds.max_packets
    origin = min((f.start_ns for f in flows), default=0)
    for flow in flows:
        # Messages after the hold cap would never go out: the session is closed by then.
        messages = [(ns / 1e9, data) for ns, data in flow.messages() if ns / 1e9 <= bounds.hold_cap_s]
        start_s = (flow.start_ns - origin) / 1e9
        if not messages or len(messages) > budget or start_s > bounds.timeout_s:
            continue
        budget -= len(messages)
        # A connection the client never closes in view stays open as long as the bounds allow:
        # closing it at its last packet would send a FIN the traffic does not hold.
        close_s = min(max(flow.last_client_ns / 1e9, messages[-1][0]), bounds.hold_cap_s) if flow.client_closed \
            else bounds.hold_cap_s
        sessions.append(Session(start_s=start_s, messages=messages, close_s=close_s, port=flow.server_port))
        if len(sessions) >= bounds.max_sessions or budget == 0:
            break
    return sessions


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def replay_sessions(pair: NamespacePair, guard: DestinationGuard, sessions: list[Session], port: int | None,
                    bounds: Bounds, family: int = 4) -> float:
    """Run ``sessions`` against the server address of IP version ``family`` at ``port`` (None:
    each session's own captured port); returns the seconds it took. Every session ends by
    ``bounds.timeout_s`` + its hold time at the latest."""
    dst = str(guard.check(pair.server(family)))
    sock_family = socket.AF_INET if family == 4 else socket.AF_INET6
    raise_fd_limit(len(sessions) + 1024)
    selector = selectors.DefaultSelector()
    pending = sorted(sessions, key=lambda s: s.start_s, reverse=True)
    live: list[Session] = []
    t0 = time.perf_counter()
    deadline = bounds.timeout_s + bounds.hold_cap_s + ANSWER_GRACE_S
    # The whole loop runs inside the client namespace: even a bug here cannot reach the host's
    # networks, and the guard still checks each connection.
    with inside(pair.client_ns):
        while pending or live:
            now = time.perf_counter() - t0
            if now > deadline:
                break
            while pending and pending[-1].start_s <= now:
                session = pending.pop()
                guard.check(dst)
                sock = socket.socket(sock_family, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex((dst, port if port is not None else session.port))
                session.sock = sock
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, session)
                live.append(session)
            for session in live:
                if _queue_due_messages(session, now):
                    _flush(selector, session)
                if not session.done and _time_to_close(session, now - session.start_s):
                    _finish(selector, session)
            timeout = 0.005 if pending else 0.02
            for key, events in selector.select(timeout):
                _service(selector, key.data, events)
            live = [s for s in live if not s.done]
        for session in live:
            _finish(selector, session)
    selector.close()
    return time.perf_counter() - t0


def _queue_due_messages(session: Session, now: float) -> bool:
    queued = False
    while session.next_message < len(session.messages) and \
            session.messages[session.next_message][0] <= now - session.start_s:
        session.outbox += session.messages[session.next_message][1]
        session.next_message += 1
        queued = True
        if session.next_message == len(session.messages):
            session.received_before_last = len(session.received)
    return queued


def _time_to_close(session: Session, elapsed: float) -> bool:
    if session.outbox or session.next_message < len(session.messages) or elapsed < session.close_s:
        return False
    answered = len(session.received) > session.received_before_last
    return answered or elapsed >= session.close_s + ANSWER_GRACE_S


def _flush(selector: selectors.BaseSelector, session: Session) -> None:
    """Write what the socket takes now; watch for writability only while bytes remain queued
    (or the connect has not completed)."""
    if session.sock is None or session.done:
        return
    try:
        if session.connected and session.outbox:
            n = session.sock.send(session.outbox)
            session.bytes_sent += n
            session.outbox = session.outbox[n:]
    except BlockingIOError:
        pass
    except OSError as exc:
        session.error = session.error or exc.__class__.__name__
        _finish(selector, session)
        return
    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbox or not session.connected else 0)
    selector.modify(session.sock, want, session)


def _service(selector: selectors.BaseSelector, session: Session, events: int) -> None:
    sock = session.sock
    if sock is None or session.done:
        return
    if events & selectors.EVENT_WRITE and not session.connected:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            session.error = os.strerror(err)
            _finish(selector, session)
            return
        session.connected = True
    if events & selectors.EVENT_READ:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            session.error = session.error or exc.__class__.__name__
            _finish(selector, session)
            return
        if not chunk:
            # The server ended the conversation (auth refused, Connection: close, ...).
            session.server_closed = True
            _finish(selector, session)
            return
        session.connected = True
        if not session.received:
            session.answered_at = time.perf_counter()
        session.received += chunk
    _flush(selector, session)


def _finish(selector: selectors.BaseSelector, session: Session) -> None:
    if session.sock is not None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(session.sock)
        session.sock.close()
        session.sock = None
    if not session.done:
        session.ended_at = time.perf_counter()
    session.done = True


@dataclass
class Exchange:
    """One request/response UDP flow: its datagrams sent from one socket, the answers kept."""

    start_s: float
    datagrams: list[tuple[float, bytes]]
    sent: int = 0
    answers: list[tuple[float, bytes]] = field(default_factory=list)  # (seconds after start, bytes)
    sent_at: list[float] = field(default_factory=list)


def exchange_datagrams(pair: NamespacePair, guard: DestinationGuard, exchanges: list[Exchange], port: int,
                       bounds: Bounds, family: int = 4, linger_s: float = 0.5) -> float:
    """Request/response UDP from the client namespace: each exchange gets its own socket
    (so the server's answers come back to it), sends its datagrams at their offsets to the
    server address of IP version ``family`` and keeps what is answered until ``linger_s``
    after its last datagram. At most ``bounds.max_packets`` datagrams in ``bounds.timeout_s``."""
    dst = str(guard.check(pair.server(family)))
    sock_family = socket.AF_INET if family == 4 else socket.AF_INET6
    selector = selectors.DefaultSelector()
    budget = bounds.max_packets
    plan: list[tuple[float, Exchange, bytes]] = []
    for ex in exchanges:
        for offset, data in ex.datagrams:
            if budget == 0 or ex.start_s + offset > bounds.timeout_s:
                break
            plan.append((ex.start_s + offset, ex, data))
            budget -= 1
    plan.sort(key=lambda item: item[0], reverse=True)
    end = max((due for due, _, _ in plan), default=0.0) + linger_s
    socks: dict[int, socket.socket] = {}
    t0 = time.perf_counter()
    with inside(pair.client_ns):
        for ex in exchanges:
            sock = socket.socket(sock_family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            socks[id(ex)] = sock
            selector.register(sock, selectors.EVENT_READ, ex)
        try:
            while True:
                now = time.perf_counter() - t0
                if now > end:
                    break
                while plan and plan[-1][0] <= now:
                    _, ex, data = plan.pop()
                    try:
                        socks[id(ex)].sendto(data, (str(guard.check(dst)), port))
                    except BlockingIOError:
                        continue  # the send buffer is full: this datagram is lost, as on a wire
                    ex.sent += 1
                    ex.sent_at.append(now)
                wait = max(0.0, min(plan[-1][0] - now if plan else end - now, 0.01))
                for key, _ in selector.select(wait):
                    ex = key.data
                    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        ex.answers.append((time.perf_counter() - t0, data))
        finally:
            selector.close()
            for sock in socks.values():
                sock.close()
    return time.perf_counter() - t0
