"""Legitimate clients that run beside a replay and report what an ordinary user of the target
experienced: an HTTP client, a CoAP client and an MQTT subscriber. Each runs in a thread with
its sockets in the run's client namespace, sends only to the run's server address (through
the destination guard) and stops at a deadline.
"""

from __future__ import annotations

import abc
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pytrafgen.protocols.mqtt_wire import encode_remaining_length
from pytrafgen.replay.guard import DestinationGuard
from pytrafgen.replay.netns import NamespacePair, inside
from pytrafgen.replay.senders import Bounds, Exchange, exchange_datagrams
from pytrafgen.replay.targets import MQTT_PASSWORD, MQTT_USER


@dataclass
class ProbeResults:
    """Outcome of each legitimate request: latency in seconds, or the error that ended it."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def share_failed_or_slower(self, slow_s: float) -> float:
        """Share of requests that failed or took longer than ``slow_s``."""
        if not self.attempts:
            return 0.0
        bad = sum(self.errors.values()) + sum(1 for lat in self.latencies if lat > slow_s)
        return bad / self.attempts

    def figures(self, prefix: str) -> dict[str, object]:
        lat = sorted(self.latencies)
        return {
            f"{prefix}_requests": self.attempts, f"{prefix}_answered": len(lat),
            f"{prefix}_errors": dict(sorted(self.errors.items())),
            f"{prefix}_median_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            f"{prefix}_max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


class _Periodic(abc.ABC):
    """Runs ``self.once()`` every ``interval_s`` in a thread from ``__enter__`` until ``__exit__``;
    each legitimate client says what one of its requests is."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.results = ProbeResults()

    @abc.abstractmethod
    def once(self) -> None:
        """One request, recorded with ``_record``."""

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self._interval)

    def _record(self, started: float, error: str) -> None:
        if error:
            self.results.errors[error] = self.results.errors.get(error, 0) + 1
        else:
            self.results.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> _Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


LEGIT_HTTP_PATH = "/?pytrafgen-legit-client"  # marks its requests in the target's access log


class HttpProbe(_Periodic):
    """GET / over a new connection every ``interval_s``; an answer is any HTTP status line
    within ``timeout_s`` (refused, reset or silent connections count as errors). Its requests
    carry ``LEGIT_HTTP_PATH``, so a scenario leaves them out of the replay's own figures."""

    def __init__(self, pair: NamespacePair, guard: DestinationGuard, port: int, family: int = 4,
                 interval_s: float = 0.2, timeout_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self._dst = str(guard.check(pair.server(family)))
        self._family = socket.AF_INET if family == 4 else socket.AF_INET6
        self._pair, self._guard, self._port, self._timeout = pair, guard, port, timeout_s

    def once(self) -> None:
        with inside(self._pair.client_ns):
            sock = socket.socket(self._family, socket.SOCK_STREAM)
        started = time.perf_counter()
        error = ""
        with sock:
            sock.settimeout(self._timeout)
            try:
                sock.connect((str(self._guard.check(self._dst)), self._port))
                sock.sendall(f"GET {LEGIT_HTTP_PATH} HTTP/1.1\r\nHost: target\r\nConnection: close\r\n\r\n".encode())
                head = sock.recv(64)
                if not head.startswith(b"HTTP/1."):
                    error = "no HTTP answer" if not head else "not HTTP"
            except TimeoutError:
                error = "timeout"
            except OSError as exc:
                error = exc.__class__.__name__
        self._record(started, error)


def coap_get(message_id: int, path: bytes = b"time") -> bytes:
    """A confirmable CoAP GET (RFC 7252) with a 2-byte token and one Uri-Path option."""
    return struct.pack("!BBH", 0x40 | 2, 0x01, message_id & 0xFFFF) + struct.pack("!H", message_id & 0xFFFF) \
        + bytes([0xB0 | len(path)]) + path


def coap_probe(pair: NamespacePair, guard: DestinationGuard, port: int, duration_s: float, family: int = 4,
               interval_s: float = 0.02, start_s: float = 0.05) -> tuple[list[Exchange], float]:
    """CoAP GET /time every ``interval_s`` for ``duration_s``, each from its own socket (request/
    response UDP); returns the exchanges (with their answers) and the seconds it ran."""
    count = max(1, int(duration_s / interval_s))
    exchanges = [Exchange(start_s=start_s + k * interval_s, datagrams=[(0.0, coap_get(k + 1))]) for k in range(count)]
    seconds = exchange_datagrams(pair, guard, exchanges, port, Bounds(max_packets=count, timeout_s=duration_s + 1.0),
                                 family=family, linger_s=1.0)
    return exchanges, seconds


def coap_results(exchanges: list[Exchange]) -> ProbeResults:
    results = ProbeResults()
    for ex in exchanges:
        if not ex.sent_at:
            results.errors["not sent"] = results.errors.get("not sent", 0) + 1
        elif not ex.answers:
            results.errors["no answer"] = results.errors.get("no answer", 0) + 1
        else:
            results.latencies.append(ex.answers[0][0] - ex.sent_at[0])
    return results


# -- MQTT subscriber -------------------------------------------------------------------------

def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + encode_remaining_length(len(body)) + body


def mqtt_connect(client_id: str, user: str = MQTT_USER, password: str = MQTT_PASSWORD) -> bytes:
    """MQTT 3.1.1 CONNECT with clean session, keep-alive 60 s, user name and password."""
    body = _mqtt_string("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + _mqtt_string(client_id) \
        + _mqtt_string(user) + _mqtt_string(password)
    return mqtt_packet(1, 0, body)


def mqtt_packets(stream: bytes) -> tuple[list[int], int]:
    """The packet types of the complete MQTT packets at the start of ``stream``, and how many
    bytes they take (the rest is an incomplete packet)."""
    types: list[int] = []
    pos = 0
    while pos + 2 <= len(stream):
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= len(stream) or i > pos + 4:
                return types, pos
            length |= (stream[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not stream[i - 1] & 0x80:
                break
        if i + length > len(stream):
            break
        types.append(stream[pos] >> 4)
        pos = i + length
    return types, pos


class MqttSubscriber:
    """Subscribes to ``#`` (QoS 0) with the broker's credentials before the replay and counts the
    PUBLISH packets delivered to it, with their arrival times, until ``__exit__`` plus a drain
    period in which the broker may still deliver what it queued."""

    def __init__(self, pair: NamespacePair, guard: DestinationGuard, port: int, family: int = 4,
                 drain_s: float = 1.0) -> None:
        dst = str(guard.check(pair.server(family)))
        with inside(pair.client_ns):
            self._sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.settimeout(3.0)
        self._sock.connect((dst, port))
        self._sock.sendall(mqtt_connect("pytrafgen-replay-subscriber"))
        self._sock.sendall(mqtt_packet(8, 2, (1).to_bytes(2, "big") + _mqtt_string("#") + b"\x00"))
        self._buffer = b""
        self.connack = -1
        self.subscribed = False
        self._read_until(lambda: self.subscribed, time.perf_counter() + 3.0)
        self._drain = drain_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.delivered: list[float] = []  # perf_counter() of each PUBLISH received

    def _read_until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.perf_counter() < deadline:
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            self._consume(chunk)

    def _consume(self, chunk: bytes) -> None:
        now = time.perf_counter()
        self._buffer += chunk
        types, used = mqtt_packets(self._buffer)
        if self.connack < 0 and types and types[0] == 2:
            self.connack = self._buffer[3] if len(self._buffer) > 3 else -1
        for ptype in types:
            if ptype == 9:
                self.subscribed = True
            elif ptype == 3:
                self.delivered.append(now)
        self._buffer = self._buffer[used:]

    def _run(self) -> None:
        self._sock.settimeout(0.05)
        stop_at = None
        while True:
            if self._stop.is_set() and stop_at is None:
                stop_at = time.perf_counter() + self._drain
            if stop_at is not None and time.perf_counter() >= stop_at:
                return
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._consume(chunk)

    def __enter__(self) -> MqttSubscriber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._drain + 5)
        with contextlib.suppress(OSError):
            self._sock.close()
