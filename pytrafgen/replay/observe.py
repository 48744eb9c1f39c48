"""Target-side observation: what the target itself sent (a packet socket on its veth) and how
its socket table evolves (``/proc/PID/net/tcp`` sampled in the background)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pytrafgen.replay.netns import NamespacePair, inside

# Outgoing frames reach only ETH_P_ALL taps; IPv4 and IPv6 are picked out below.
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_PACKET_OUTGOING = 4
_SYN, _RST, _ACK = 0x02, 0x04, 0x10


@dataclass
class TargetAnswers:
    """TCP packets the target sent, by its source port: SYN-ACKs (port open) and RSTs."""

    syn_ack_ports: Counter = field(default_factory=Counter)
    rst_ports: Counter = field(default_factory=Counter)

    @property
    def open_ports(self) -> list[int]:
        return sorted(self.syn_ack_ports)

    @property
    def answered_ports(self) -> set[int]:
        return set(self.syn_ack_ports) | set(self.rst_ports)


class AnswerSniffer:
    """Records the target's outgoing TCP answers on the server veth while the block runs."""

    def __init__(self, pair: NamespacePair) -> None:
        with inside(pair.server_ns):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.bind((pair.server_if, _ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.answers = TargetAnswers()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            if addr[2] != _PACKET_OUTGOING or addr[1] not in (_ETH_P_IP, _ETH_P_IPV6):
                continue
            ip = frame[14:]
            if addr[1] == _ETH_P_IP and len(ip) >= 20 and ip[0] >> 4 == 4 and ip[9] == 6:
                l4 = (ip[0] & 0x0F) * 4
            elif addr[1] == _ETH_P_IPV6 and len(ip) >= 40 and ip[0] >> 4 == 6 and ip[6] == 6:
                l4 = 40  # the target's own answers carry no extension headers
            else:
                continue
            if len(ip) < l4 + 14:
                continue
            sport = int.from_bytes(ip[l4:l4 + 2], "big")
            flags = ip[l4 + 13]
            if flags & _SYN and flags & _ACK:
                self.answers.syn_ack_ports[sport] += 1
            elif flags & _RST:
                self.answers.rst_ports[sport] += 1

    def __enter__(self) -> AnswerSniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


class PeakSampler:
    """Calls ``probe()`` every ``interval_s`` in the background and keeps the largest value."""

    def __init__(self, probe: Callable[[], int], interval_s: float = 0.02) -> None:
        self._probe = probe
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self._probe())
            except OSError:
                return  # the target process is gone; its peak so far stands
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak = max(self.peak, _safe(self._probe))


def _safe(probe: Callable[[], int]) -> int:
    try:
        return probe()
    except OSError:
        return 0
