"""The two ways replay sends traffic, both from inside the run's client namespace, both through
the destination guard before every packet or connection, both bounded in count and time.

* ``send_stateless``: the captured client packets as raw IPv4/TCP packets (addresses rewritten
  to the namespace pair, checksums recomputed), keeping the capture's timing up to a rate cap.
  Sources are spoof-pool addresses, so the target's answers are never answered by our kernel.
* ``replay_sessions``: each flow's client messages (HTTP requests, MQTT CONNECTs, ...) re-sent
  over a new real TCP connection at the flow's original offsets, because a real server needs a
  real handshake; what the server answers is kept per session.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

from pytrafgen.errors import ReplayError
from pytrafgen.replay.guard import DestinationGuard
from pytrafgen.replay.netns import NamespacePair, inside, raise_fd_limit
from pytrafgen.replay.trace import TraceFlow, TracePacket

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


def build_ipv4_tcp(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, pkt: TracePacket,
                   dport: int | None = None, ip_id: int = 0) -> bytes:
    """One IPv4 packet carrying ``pkt``'s TCP header and payload between the given addresses,
    with the TCP checksum recomputed for them (the kernel fills in the IP header checksum)."""
    header = bytearray(pkt.tcp_header)
    if dport is not None:
        header[2:4] = dport.to_bytes(2, "big")
    header[16:18] = b"\0\0"
    segment = bytes(header) + pkt.payload
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(segment))
    header[16:18] = _checksum(pseudo + segment).to_bytes(2, "big")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ip_id & 0xFFFF, 0, 64, 6, 0,
                     src.packed, dst.packed)
    return ip + bytes(header) + pkt.payload


@dataclass
class StatelessResult:
    sent: int
    offered: int
    seconds: float


def send_stateless(pair: NamespacePair, guard: DestinationGuard, timeline: list[tuple[int, TracePacket]],
                   bounds: Bounds, dport: int | None = None) -> StatelessResult:
    """Send ``(flow index, packet)`` pairs in order from spoof-pool sources (one per flow) to the
    server address; the capture's gaps are kept, squeezed to at most ``bounds.max_rate_pps``."""
    dst = guard.check(pair.server_addr)
    if not isinstance(dst, ipaddress.IPv4Address):
        raise ReplayError(f"stateless replay sends IPv4 only, not to {dst}")
    pool = pair.spoof_pool
    rng = random.Random(0)
    chosen = timeline[: bounds.max_packets]
    with inside(pair.client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
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
                sock.sendto(build_ipv4_tcp(src, target, pkt, dport, rng.getrandbits(16)), (str(target), 0))
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
        close_s = min(max(flow.last_client_ns / 1e9, messages[-1][0]), bounds.hold_cap_s)
        sessions.append(Session(start_s=start_s, messages=messages, close_s=close_s))
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


def replay_sessions(pair: NamespacePair, guard: DestinationGuard, sessions: list[Session], port: int,
                    bounds: Bounds) -> float:
    """Run ``sessions`` against ``server_addr:port``; returns the seconds it took. Every session
    ends by ``bounds.timeout_s`` + its hold time at the latest."""
    dst = str(guard.check(pair.server_addr))
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
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex((dst, port))
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
