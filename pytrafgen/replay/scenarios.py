"""Replay scenarios: each starts a fresh namespace pair and target per input, replays the input,
and measures one effect at the target, plus supporting figures.

| scenario | target | replay | effect (primary figure) | tolerance |
|---|---|---|---|---|
| syn_flood | plain listener, backlog 64, syncookies off, 1 SYN-ACK retry | stateless, SYNs only | backlog occupancy = SYN_RECV / backlog | ±0.25 absolute |
| port_scan | plain listener on 22,80,443,1883,8080 | stateless, all client packets | distinct ports the target answered | ±50 % relative |
| http_bruteforce | nginx, basic auth on /admin/ | sessions (real TCP) | share of logged requests answered 401 | ±0.15 absolute |
| mqtt_bruteforce | mosquitto, password auth | sessions | share of CONNACKs refusing the login | ±0.15 absolute |
| mqtt_connect_flood | mosquitto, password auth | sessions held open | peak concurrent accepted sessions | ±30 % relative |
| udp_flood | coap-server (libcoap) | stateless UDP, looped, to 5683 | legit CoAP requests lost or > 5 ms | ±0.3 absolute |
| slowloris | nginx, worker_connections 256 | sessions held open | connection occupancy | ±0.25 absolute |
| http_flood | nginx | sessions | 2xx/3xx responses served per second | at least 50 % of real |
| mqtt_publish_flood | mosquitto + subscriber to # | sessions | messages delivered per second | at least 50 % of real |
| nmap_version_scan | nginx on 80 + mosquitto on 1883 | sessions to the probed ports | share of services identified | ±0.25 absolute |

Every scenario replays an IPv6 capture over IPv6 (``Trace.family``).
"""

from __future__ import annotations

import contextlib
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytrafgen.errors import ReplayError
from pytrafgen.replay import targets
from pytrafgen.replay.clients import (
    LEGIT_HTTP_PATH,
    HttpProbe,
    MqttSubscriber,
    coap_probe,
    coap_results,
    mqtt_packets,
)
from pytrafgen.replay.guard import DestinationGuard
from pytrafgen.replay.netns import NamespacePair, inside
from pytrafgen.replay.observe import AnswerSniffer, PeakSampler
from pytrafgen.replay.senders import Bounds, peak_overlap, plan_sessions, replay_sessions, send_stateless
from pytrafgen.replay.trace import TCP, UDP, Trace

SYN_BACKLOG = 64
SCAN_OPEN_PORTS = (22, 80, 443, 1883, 8080)
NGINX = ("nginx", "nginx")
MOSQUITTO = (("mosquitto", "mosquitto"), ("mosquitto_passwd", "mosquitto"))
SETTLE_S = 0.3  # let the target finish answering before it is measured
LEGIT_WINDOW_S = 3.0  # longest a legitimate client probes alongside a replay
COAP_PORT = 5683
COAP_SLOW_S = 0.005  # a CoAP GET answered later than this counts as degraded (unloaded: < 1 ms)
SLOWLORIS_WORKER_CONNECTIONS = 256
MIN_RATE_SPAN_S = 0.02  # a burst shorter than this is timed as this long (scheduler noise)
RATE_TRIM = 0.05  # the share of a flood's events left out at each end when its rate is timed


def bulk_rate(times: list[float]) -> tuple[float, float]:
    """(events per second, seconds) of a flood's bulk: its middle events, ``RATE_TRIM`` of them
    left out at each end (none below 20 events), over the time from the first to the last of
    them (at least ``MIN_RATE_SPAN_S``). A straggler (one generated flow whose request comes
    0.4 s after the 199 others were served) then times its own delay, not the flood's rate;
    (0, 0) for fewer than two events."""
    if len(times) < 2:
        return 0.0, 0.0
    ordered = sorted(times)
    cut = int(len(ordered) * RATE_TRIM)
    bulk = ordered[cut:len(ordered) - cut]
    span = max(bulk[-1] - bulk[0], MIN_RATE_SPAN_S)
    return len(bulk) / span, span


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
    proto: int = TCP  # the transport the scenario replays; other flows of an input are left out
    # a rate of load on the target: an input that loads it more than the real attack has the
    # effect too (a faster flood is no less a flood), so only the lower side of the band counts
    at_least: bool = False

    def check_requirements(self) -> None:
        for binary, package in self.requires:
            targets.require_binary(binary, package)

    def within(self, value: float, reference: float) -> bool:
        allowed = self.tolerance * abs(reference) if self.relative else self.tolerance
        if self.at_least and value >= reference:
            return True
        return abs(value - reference) <= allowed + 1e-12

    @property
    def tolerance_text(self) -> str:
        if self.at_least:
            return (f"at least {1 - self.tolerance:.0%} of the real value" if self.relative
                    else f"at least the real value − {self.tolerance:g}")
        return f"±{self.tolerance:.0%} of the real value" if self.relative else f"±{self.tolerance:g} absolute"


@contextlib.contextmanager
def _fresh_pair() -> Any:
    with NamespacePair.create() as pair:
        yield pair, DestinationGuard(pair.addresses)


def _syn_recv(pid: int, port: int) -> int:
    return sum(1 for lport, state, _ in targets.tcp_sockets(pid) if lport == port and state == targets.TCP_SYN_RECV)


def _legit_connect(pair: NamespacePair, guard: DestinationGuard, port: int, family: int = 4,
                   timeout_s: float = 1.0) -> bool:
    """Can an ordinary client still open a connection to the target?"""
    dst = str(guard.check(pair.server(family)))
    with inside(pair.client_ns):
        sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM)
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
    family = trace.family
    with _fresh_pair() as (pair, guard):
        pair.set_sysctl("server", "net.ipv4.tcp_syncookies", "0")
        # A half-open entry then lives about 3 s (SYN-ACK, one retransmit after 1 s, 2 s more),
        # so occupancy measures the recent rate of unanswered openings, not everything a long
        # benign capture ever opened from the (never answering) spoof pool.
        pair.set_sysctl("server", "net.ipv4.tcp_synack_retries", "1")
        with targets.start_tcp_listener(pair, workdir, (port,), SYN_BACKLOG, family) as target:
            before = targets.tcp_counters(target.pid)
            with PeakSampler(lambda: _syn_recv(target.pid, port)) as sampler:
                sent = send_stateless(pair, guard, timeline, bounds, dport=port, family=family)
                time.sleep(SETTLE_S)
            after = targets.tcp_counters(target.pid)
            legit = _legit_connect(pair, guard, port, family)
    drops = after["TcpExt.ListenDrops"] - before["TcpExt.ListenDrops"]
    return Effect(value=min(sampler.peak / SYN_BACKLOG, 1.0), figures={
        "syn_sent": sent.sent, "syn_offered": sent.offered, "send_seconds": round(sent.seconds, 3),
        "backlog": SYN_BACKLOG, "peak_syn_recv": sampler.peak, "listen_drops": drops,
        "legit_client_connected": legit,
    })


def measure_port_scan(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    timeline = trace.timeline()
    with _fresh_pair() as (pair, guard), \
            targets.start_tcp_listener(pair, workdir, SCAN_OPEN_PORTS, SYN_BACKLOG, trace.family), \
            AnswerSniffer(pair) as sniffer:
        sent = send_stateless(pair, guard, timeline, bounds, family=trace.family)
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


_ACCESS_LINE = re.compile(r'^(\S+) (\d{3}) "(.*)" \d+ (\d+\.\d+)$')


def _access_log(nginx: targets.Target, client: object) -> list[tuple[str, float]]:
    """(status, completion time in epoch seconds) of each replayed request nginx logged from
    ``client`` (the legitimate probe's requests are left out)."""
    out = []
    for line in nginx.logs["access"].read_text(errors="replace").splitlines():
        match = _ACCESS_LINE.match(line)
        if match and match.group(1) == str(client) and LEGIT_HTTP_PATH not in match.group(3):
            out.append((match.group(2), float(match.group(4))))
    return out


def measure_http_bruteforce(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_nginx(pair, workdir, family=trace.family) as nginx:
        seconds = replay_sessions(pair, guard, sessions, nginx.ports[0], bounds, trace.family)
        time.sleep(SETTLE_S)
        statuses: Counter = Counter(status for status, _ in _access_log(nginx, pair.client(trace.family)))
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
    with _fresh_pair() as (pair, guard), targets.start_mosquitto(pair, workdir, family=trace.family) as broker:
        port = broker.ports[0]
        with PeakSampler(lambda: _established(broker.pid, port), interval_s=0.05) as sampler:
            seconds = replay_sessions(pair, guard, sessions, port, bounds, trace.family)
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


# -- UDP flood at a CoAP server ------------------------------------------------------------



def measure_udp_flood(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    """The flood's datagrams (spoofed sources, aimed at the CoAP port, looped at the capture's
    rate for the whole window) while a legitimate client asks GET /time every 20 ms."""
    family = trace.family
    timeline = trace.timeline()
    window_s = min(bounds.timeout_s, LEGIT_WINDOW_S)
    probe: dict[str, Any] = {}
    with _fresh_pair() as (pair, guard), targets.start_coap_server(pair, workdir, COAP_PORT, family) as coap:
        before = targets.udp_counters(coap.pid, family)
        legit = threading.Thread(target=lambda: probe.update(result=coap_probe(
            pair, guard, COAP_PORT, window_s, family)), daemon=True)
        legit.start()
        sent = send_stateless(pair, guard, timeline, replace(bounds, timeout_s=window_s), dport=COAP_PORT,
                              family=family, loop=True)
        legit.join(timeout=window_s + 10)
        after = targets.udp_counters(coap.pid, family)
    exchanges, _ = probe.get("result", ([], 0.0))
    results = coap_results(exchanges)
    delta = {k: after[k] - before.get(k, 0) for k in ("InDatagrams", "RcvbufErrors", "OutDatagrams")}
    return Effect(value=results.share_failed_or_slower(COAP_SLOW_S), figures={
        **results.figures("legit_coap"),
        "datagrams_sent": sent.sent, "datagrams_offered": sent.offered, "send_seconds": round(sent.seconds, 3),
        "server_datagrams_received": delta["InDatagrams"], "server_receive_buffer_drops": delta["RcvbufErrors"],
        "server_datagrams_answered": delta["OutDatagrams"],
    })


# -- nginx: slowloris and HTTP flood -------------------------------------------------------



def measure_slowloris(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    """Sessions held open at an nginx that can hold ``SLOWLORIS_WORKER_CONNECTIONS`` at once,
    while a legitimate client asks GET / every 200 ms."""
    family = trace.family
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), \
            targets.start_nginx(pair, workdir, family=family, worker_connections=SLOWLORIS_WORKER_CONNECTIONS) as nginx:
        port = nginx.ports[0]
        with PeakSampler(lambda: _established(nginx.pid, port), interval_s=0.05) as sampler, \
                HttpProbe(pair, guard, port, family, interval_s=0.2, timeout_s=1.0) as legit:
            seconds = replay_sessions(pair, guard, sessions, port, bounds, family)
        statuses = Counter(status for status, _ in _access_log(nginx, pair.client(family)))
    return Effect(value=min(sampler.peak / SLOWLORIS_WORKER_CONNECTIONS, 1.0), figures={
        "peak_connections_held": sampler.peak, "worker_connections": SLOWLORIS_WORKER_CONNECTIONS,
        "legit_refused_or_failed_share": round(legit.results.share_failed_or_slower(1.0), 3),
        **_session_figures(sessions, seconds), "requests_completed": sum(statuses.values()),
        "status_counts": dict(sorted(statuses.items())), **legit.results.figures("legit_http"),
    })


_SERVED = re.compile(rb"HTTP/1\.[01] [23]\d\d ")


def measure_http_flood(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    """Every flow's requests over its own connection at the capture's pace, while a legitimate
    client asks GET / every 50 ms. Served responses (2xx/3xx status lines) are counted and timed
    at the client (microseconds; nginx's own log ticks in milliseconds, too coarse for a burst)."""
    family = trace.family
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_nginx(pair, workdir, family=family) as nginx:
        port = nginx.ports[0]
        with HttpProbe(pair, guard, port, family, interval_s=0.05, timeout_s=1.0) as legit:
            seconds = replay_sessions(pair, guard, sessions, port, bounds, family)
        time.sleep(SETTLE_S)
        logged = _access_log(nginx, pair.client(family))
    served = [at for s in sessions for at in [s.answered_at] * len(_SERVED.findall(bytes(s.received)))]
    rate, span = bulk_rate(served)
    whole = max(max(served) - min(served), MIN_RATE_SPAN_S) if len(served) > 1 else 0.0
    return Effect(value=rate, figures={
        "responses_served": len(served), "served_span_s": round(span, 4),
        "served_per_s_first_to_last": round(len(served) / whole, 3) if whole else 0.0,
        **_session_figures(sessions, seconds),
        "requests_logged": len(logged), "status_counts": dict(sorted(Counter(s for s, _ in logged).items())),
        **legit.results.figures("legit_http"),
    })


# -- MQTT publish flood ----------------------------------------------------------------------

def measure_mqtt_publish_flood(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    """The flows' CONNECT + PUBLISH streams replayed at mosquitto while a subscriber to ``#``
    (subscribed before the replay) counts the messages delivered to it and when."""
    family = trace.family
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_mosquitto(pair, workdir, family=family) as broker:
        port = broker.ports[0]
        with MqttSubscriber(pair, guard, port, family, drain_s=1.0) as subscriber:
            started = time.perf_counter()
            seconds = replay_sessions(pair, guard, sessions, port, bounds, family)
            replay_end = time.perf_counter()
    published = sum(mqtt_packets(b"".join(m for _, m in s.messages[:s.next_message]))[0].count(3) for s in sessions)
    accepted = sum(1 for s in sessions if connack_codes(bytes(s.received))[:1] == [0])
    delivered = subscriber.delivered
    rate, span = bulk_rate(delivered)
    return Effect(value=rate, figures={
        "messages_delivered": len(delivered), "delivery_span_s": round(span, 3),
        "publish_packets_sent": published, "sessions_accepted": accepted,
        "subscriber_connack": subscriber.connack, **_session_figures(sessions, seconds),
        "messages_not_delivered": max(published - len(delivered), 0),
        "subscriber_lag_after_replay_s": round(max(delivered[-1] - replay_end, 0.0), 3) if delivered else None,
        "first_delivery_after_s": round(delivered[0] - started, 3) if delivered else None,
    })


# -- nmap version scan -----------------------------------------------------------------------

VERSION_SCAN_SERVICES = {80: "http", 1883: "mqtt"}  # the lab target's services, as the capture saw them


def identifies(service: str, answer: bytes) -> bool:
    """Does ``answer`` identify the service (what nmap -sV matches on): an HTTP status line, or
    an MQTT CONNACK?"""
    if service == "http":
        return answer.startswith(b"HTTP/1.")
    return len(answer) >= 4 and answer[0] == 0x20 and answer[1] == 2


def measure_nmap_version_scan(trace: Trace, bounds: Bounds, workdir: Path) -> Effect:
    """Each flow's probes over a real connection *to the port it probed*; nginx (80) and
    mosquitto (1883) answer as the lab's services did, other ports are closed."""
    family = trace.family
    sessions = plan_sessions(trace.flows, bounds)
    with _fresh_pair() as (pair, guard), targets.start_nginx(pair, workdir, 80, family), \
            targets.start_mosquitto(pair, workdir, 1883, family):
        seconds = replay_sessions(pair, guard, sessions, None, bounds, family)
    identified: Counter = Counter()
    answered: Counter = Counter()
    for s in sessions:
        if s.received:
            answered[s.port] += 1
        service = VERSION_SCAN_SERVICES.get(s.port)
        if service and identifies(service, bytes(s.received)):
            identified[s.port] += 1
    return Effect(value=len(identified) / len(VERSION_SCAN_SERVICES), figures={
        "services_identified": [VERSION_SCAN_SERVICES[p] for p in sorted(identified)],
        "services_at_target": list(VERSION_SCAN_SERVICES.values()),
        "probes_identifying_service": {VERSION_SCAN_SERVICES[p]: n for p, n in sorted(identified.items())},
        "ports_probed": sorted({s.port for s in sessions}), "probes_answered": sum(answered.values()),
        # which services the input's probes go to (a generated scan may leave one out)
        "probes_per_port": dict(sorted(Counter(s.port for s in sessions).items())),
        **_session_figures(sessions, seconds),
    })


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
    Scenario("udp_flood", "UDP flood at a CoAP server (libcoap coap-server) while a legitimate client asks GET /time",
             f"share of the legitimate client's requests lost or answered later than {COAP_SLOW_S * 1000:g} ms",
             0.5, True, measure_udp_flood, (("coap-server", targets.COAP_PACKAGE),), proto=UDP, at_least=True),
    Scenario("slowloris", f"slowloris at nginx holding at most {SLOWLORIS_WORKER_CONNECTIONS} connections",
             "connection occupancy (peak connections held open / worker_connections)", 0.25, False,
             measure_slowloris, (NGINX,)),
    Scenario("http_flood", "HTTP GET flood at nginx", "requests nginx served (2xx/3xx) per second", 0.5, True,
             measure_http_flood, (NGINX,), at_least=True),
    Scenario("mqtt_publish_flood", "MQTT PUBLISH flood at mosquitto with a subscriber to #",
             "messages delivered to the subscriber per second", 0.5, True, measure_mqtt_publish_flood, MOSQUITTO,
             at_least=True),
    Scenario("nmap_version_scan", "service version scan of a host running nginx (80) and mosquitto (1883)",
             "share of the target's services identified (HTTP status line, MQTT CONNACK)", 0.25, False,
             measure_nmap_version_scan, (NGINX, *MOSQUITTO)),
)}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ReplayError(f"unknown replay scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def measure(scenario: Scenario, trace: Trace, bounds: Bounds) -> Effect:
    """One input measured in a fresh namespace pair with a fresh target, in a temporary dir."""
    with tempfile.TemporaryDirectory(prefix=f"pytrafgen-replay-{scenario.name}-") as tmp:
        return scenario.measure(trace.of_proto(scenario.proto), bounds, Path(tmp))
