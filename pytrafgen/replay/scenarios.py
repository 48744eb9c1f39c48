"""Replay scenarios: each starts a fresh namespace pair and target per input, replays the input,
and measures one effect at the target, plus supporting figures.

| scenario | target | replay | effect (primary figure) | tolerance |
|---|---|---|---|---|
| syn_flood | plain listener, backlog 64, syncookies off, 1 SYN-ACK retry | stateless, SYNs only | backlog occupancy = SYN_RECV / backlog | ±0.25 absolute |
| port_scan | plain listener on 22,80,443,1883,8080 | stateless, all client packets | distinct ports the target answered | ±50 % relative |
| http_bruteforce | nginx, basic auth on /admin/ | sessions (real TCP) | share of logged requests answered 401 | ±0.15 absolute |
| mqtt_bruteforce | mosquitto, password auth | sessions | share of CONNACKs refusing the login | ±0.15 absolute |
| mqtt_connect_flood | mosquitto, password auth | sessions held open | peak concurrent accepted sessions | ±30 % relative |
"""

from __future__ import annotations

import contextlib
import re
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytrafgen.errors import ReplayError
from pytrafgen.replay import targets
from pytrafgen.replay.guard import DestinationGuard
from pytrafgen.replay.netns import NamespacePair, inside
from pytrafgen.replay.observe import AnswerSniffer, PeakSampler
from pytrafgen.replay.senders import Bounds, peak_overlap, plan_sessions, replay_sessions, send_stateless
from pytrafgen.replay.trace import Trace

SYN_BACKLOG = 64
SCAN_OPEN_PORTS = (22, 80, 443, 1883, 8080)
NGINX = ("nginx", "nginx")
MOSQUITTO = (("mosquitto", "mosquitto"), ("mosquitto_passwd", "mosquitto"))
SETTLE_S = 0.3  # let the target finish answering before it is measured


@dataclass(frozen=True)
class Effect:
    value: float
    figures: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    effect: str  # what ``Effect.value`` is
    tolerance: float
    relative: bool  # tolerance relative to the real attack's value (else absolute)
    measure: Callable[[Trace, Bounds, Path], Effect]
    requires: tuple[tuple[str, str], ...] = ()  # (binary, Debian package) the target needs

    def check_requirements(self) -> None:
        for binary, package in self.requires:
            targets.require_binary(binary, package)

    def within(self, value: float, reference: float) -> bool:
        allowed = self.tolerance * abs(reference) if self.relative else self.tolerance
        return abs(value - reference) <= allowed + 1e-12

    @property
    def tolerance_text(self) -> str:
        return f"±{self.tolerance:.0%} of the real value" if self.relative else f"±{self.tolerance:g} absolute"


@contextlib.contextmanager
def _fresh_pair() -> Any:
    with NamespacePair.create() as pair:
        yield pair, DestinationGuard([pair.server_addr, pair.client_addr])


def _syn_recv(pid: int, port: int) -> int:
    return sum(1 for lport, state, _ in targets.tcp_sockets(pid) if lport == port and state == targets.TCP_SYN_RECV)


def _legit_connect(pair: NamespacePair, guard: DestinationGuard, port: int, timeout_s: float = 1.0) -> bool:
    """Can an ordinary client still open a connection to the target?"""
    dst = str(guard.check(pair.server_addr))
    with inside(pair.client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((dst, port))
        except OSError:
            return False
    return True


def measure_syn_flood(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    port = 80
    # Only connection openings are replayed: the RSTs in a capture are the attacker host's
    # kernel answering SYN-ACKs it never asked for, not the attack (see docs/replay.md).
    timeline = [(i, p) for i, p in trace.timeline() if p.is_syn]
    with _fresh_pair() as (pair, guard):
        pair.set_sysctl("server", "net.ipv4.tcp_syncookies", "0")
        # A half-open entry then lives about 3 s (SYN-ACK, one retransmit after 1 s, 2 s more),
        # so occupancy measures the recent rate of unanswered openings, not everything a long
        # benign capture ever opened from the (never answering) spoof pool.
        pair.set_sysctl("server", "net.ipv4.tcp_synack_retries", "1")
        with targets.start_tcp_listener(pair, workdir, (port,), SYN_BACKLOG) as target:
            before = targets.tcp_counters(target.pid)
            with PeakSampler(lambda: _syn_recv(target.pid, port)) as sampler:
                sent = send_stateless(pair, guard, timeline, bounds, dport=port)
                time.sleep(SETTLE_S)
            after = targets.tcp_counters(target.pid)
            legit = _legit_connect(pair, guard, port)
    drops = after["TcpExt.ListenDrops"] - before["TcpExt.ListenDrops"]
    return Effect(value=min(sampler.peak / SYN_BACKLOG, 1.0), figures={
        "syn_sent": sent.sent, "syn_offered": sent.offered, "send_seconds": round(sent.seconds, 3),
        "backlog": SYN_BACKLOG, "peak_syn_recv": sampler.peak, "listen_drops": drops,
        "legit_client_connected": legit,
    })


def measure_port_scan(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    timeline = trace.timeline()
    with _fresh_pair() as (pair, guard), \
            targets.start_tcp_listener(pair, workdir, SCAN_OPEN_PORTS, SYN_BACKLOG), \
            AnswerSniffer(pair) as sniffer:
        sent = send_stateless(pair, guard, timeline, bounds)
        time.sleep(SETTLE_S)
    answers = sniffer.answers
    probed = {p.dport for _, p in timeline[: sent.sent]}
    return Effect(value=float(len(answers.answered_ports)), figures={
        "packets_sent": sent.sent, "packets_offered": sent.offered, "send_seconds": round(sent.seconds, 3),
        "ports_probed": len(probed), "ports_answered": len(answers.answered_ports),
        "open_ports_discovered": answers.open_ports, "open_ports_at_target": list(SCAN_OPEN_PORTS),
        "closed_ports_answered_rst": len(answers.rst_ports.keys() - answers.syn_ack_ports.keys()),
    })


def _session_figures(sessions: list, seconds: float) -> dict[str, Any]:
    return {
        "sessions": len(sessions), "sessions_connected": sum(s.connected for s in sessions),
        "sessions_failed": sum(bool(s.error) for s in sessions),
        "client_bytes_sent": sum(s.bytes_sent for s in sessions), "replay_seconds": round(seconds, 3),
    }


_ACCESS_LINE = re.compile(r"^(\S+) (\d{3}) ")


def measure_http_bruteforce(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_nginx(pair, workdir) as nginx:
        seconds = replay_sessions(pair, guard, sessions, nginx.ports[0], bounds)
        time.sleep(SETTLE_S)
        statuses: Counter = Counter()
        for line in nginx.logs["access"].read_text(errors="replace").splitlines():
            match = _ACCESS_LINE.match(line)
            if match and match.group(1) == str(pair.client_addr):
                statuses[match.group(2)] += 1
    logged = sum(statuses.values())
    return Effect(value=statuses["401"] / logged if logged else 0.0, figures={
        **_session_figures(sessions, seconds), "requests_logged": logged,
        "status_401": statuses["401"], "status_200": statuses["200"],
        "status_other": {k: v for k, v in sorted(statuses.items()) if k not in ("401", "200")},
    })


def connack_codes(received: bytes) -> list[int]:
    """Return codes of the CONNACK packets at the start of a broker's byte stream (MQTT 3.1.1
    byte 3, MQTT 5 reason code at the same place)."""
    codes = []
    pos = 0
    while pos + 2 <= len(received):
        ptype = received[pos] >> 4
        length, shift, i = 0, 0, pos + 1
        while i < len(received) and i < pos + 5:
            length |= (received[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not received[i - 1] & 0x80:
                break
        if i + length > len(received):
            break
        if ptype == 2 and length >= 2:
            codes.append(received[i + 1])
        pos = i + length
    return codes


def _established(pid: int, port: int) -> int:
    return sum(1 for lport, state, _ in targets.tcp_sockets(pid) if lport == port and state == targets.TCP_ESTABLISHED)


def _mqtt_replay(trace: Trace, bounds: Bounds, workdir: Path) -> tuple[list, float, int, str]:
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_mosquitto(pair, workdir) as broker:
        port = broker.ports[0]
        with PeakSampler(lambda: _established(broker.pid, port), interval_s=0.05) as sampler:
            seconds = replay_sessions(pair, guard, sessions, port, bounds)
        time.sleep(SETTLE_S)
        log = broker.logs["log"].read_text(errors="replace")
    return sessions, seconds, sampler.peak, log


def _mqtt_figures(sessions: list, seconds: float, peak: int, log: str) -> dict[str, Any]:
    codes: Counter = Counter()
    accepted = []
    for s in sessions:
        got = connack_codes(bytes(s.received))
        codes[str(got[0]) if got else "none"] += 1
        if got and got[0] == 0:
            accepted.append((s.answered_at, s.ended_at))
    return {
        **_session_figures(sessions, seconds), "connack_codes": dict(sorted(codes.items())),
        "peak_concurrent_accepted_sessions": peak_overlap(accepted),
        "peak_concurrent_tcp_connections_at_broker": peak,
        "broker_log_clients_connected": log.count("New client connected"),
        "broker_log_not_authorised": log.count("not authorised"),
    }


def measure_mqtt_bruteforce(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    figures = _mqtt_figures(*_mqtt_replay(trace, bounds, workdir))
    codes = figures["connack_codes"]
    answered = sum(v for k, v in codes.items() if k != "none")
    refused = answered - codes.get("0", 0)
    return Effect(value=refused / answered if answered else 0.0, figures=figures)


def measure_mqtt_connect_flood(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    figures = _mqtt_figures(*_mqtt_replay(trace, bounds, workdir))
    return Effect(value=float(figures["peak_concurrent_accepted_sessions"]), figures=figures)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("syn_flood", "SYN flood at a TCP listener: half-open connections fill its backlog",
             "backlog occupancy (peak SYN_RECV / backlog)", 0.25, False, measure_syn_flood),
    Scenario("port_scan", "port scan of a host with five open ports: the target answers each probed port",
             "distinct target ports answered (SYN-ACK or RST)", 0.5, True, measure_port_scan),
    Scenario("http_bruteforce", "HTTP basic-auth brute force at nginx /admin/",
             "share of logged requests answered 401", 0.15, False, measure_http_bruteforce, (NGINX,)),
    Scenario("mqtt_bruteforce", "MQTT password guessing at mosquitto",
             "share of CONNACKs refusing the login", 0.15, False, measure_mqtt_bruteforce, MOSQUITTO),
    Scenario("mqtt_connect_flood", "MQTT CONNECT flood holding many sessions at mosquitto",
             "peak concurrent sessions the broker accepted (CONNACK 0)", 0.3, True, measure_mqtt_connect_flood, MOSQUITTO),
)}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ReplayError(f"unknown replay scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def measure(scenario: Scenario, trace: Trace, bounds: Bounds) -> Effect:
    """One input measured in a fresh namespace pair with a fresh target, in a temporary dir."""
    with tempfile.TemporaryDirectory(prefix=f"pytrafgen-replay-{scenario.name}-") as tmp:
        return scenario.measure(trace, bounds, Path(tmp))
