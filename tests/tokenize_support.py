"""Synthetic captures for the tokenizer tests: every header feature the tokenizer must keep."""

from __future__ import annotations

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

C4, S4 = "10.0.0.1", "10.0.0.2"
C6, S6 = "2001:db8::1", "2001:db8::2"
TCP_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (12345, 0)), ("NOP", None), ("WScale", 7)]


def _eth(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / pkt)


def synthetic_frames() -> tuple[list[bytes], np.ndarray]:
    """Frames of several flows (TCP/IPv4 with options, IPv6 UDP/TCP with extension headers,
    ICMP, ICMPv6, an unsupported protocol) and their timestamps."""
    isn_c, isn_s = 1_000_000, 4_000_000_000  # the server's wraps around 2^32
    big = bytes(range(256)) * 2  # longer than any default payload cap
    frames = [
        IP(src=C4, dst=S4, id=100, flags="DF", ttl=64) / TCP(sport=40000, dport=80, flags="S", seq=isn_c,
                                                             window=64240, options=TCP_OPTS),
        IP(src=S4, dst=C4, id=0, flags="DF", ttl=63, tos=0x10) / TCP(sport=80, dport=40000, flags="SA",
                                                                      seq=isn_s, ack=isn_c + 1, options=TCP_OPTS),
        IP(src=C4, dst=S4, id=101, flags="DF") / TCP(sport=40000, dport=80, flags="A", seq=isn_c + 1,
                                                     ack=isn_s + 1),
        IP(src=C4, dst=S4, id=102, flags="DF", options=[IPOption_Router_Alert()])
        / TCP(sport=40000, dport=80, flags="PA", seq=isn_c + 1, ack=isn_s + 1) / Raw(b"GET / HTTP/1.0\r\n\r\n"),
        IP(src=S4, dst=C4, id=1, flags="DF") / TCP(sport=80, dport=40000, flags="PA", seq=isn_s + 1,
                                                   ack=isn_c + 19) / Raw(big[:300]),
        # urgent pointer, NS + a reserved bit, an IP id jump, an odd payload length
        IP(src=C4, dst=S4, id=40000, flags=0) / TCP(sport=40000, dport=80, flags="PAU", seq=isn_c + 19,
                                                   ack=isn_s + 301, urgptr=3, reserved=5) / Raw(b"odd"),
        IP(src=S4, dst=C4, id=2, flags="DF") / TCP(sport=80, dport=40000, flags="FA", seq=isn_s + 301,
                                                   ack=isn_c + 22),
        # a retransmission: seq not the sender's next
        IP(src=C4, dst=S4, id=40001) / TCP(sport=40000, dport=80, flags="PA", seq=isn_c + 19,
                                           ack=isn_s + 302) / Raw(b"odd"),
        # IPv6 UDP with hop-by-hop and destination options, flow label changing
        IPv6(src=C6, dst=S6, fl=0x12345, hlim=5, tc=0xB8) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / UDP(sport=5353, dport=53) / Raw(b"\x00\x01query"),
        IPv6(src=S6, dst=C6, fl=0xABCDE, hlim=64) / UDP(sport=53, dport=5353) / Raw(big[:64]),
        IPv6(src=C6, dst=S6, fl=0x12345, hlim=5, tc=0xB8) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / UDP(sport=5353, dport=53) / Raw(b""),
        # IPv6 TCP, first fragment (offset 0, M set)
        IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(id=0xDEADBEEF, m=1, offset=0)
        / TCP(sport=50000, dport=443, flags="S", seq=7),
        # ICMP echo request / reply with payloads
        IP(src=C4, dst=S4, id=7) / ICMP(type=8, code=0, id=0x1234, seq=1) / Raw(b"ping" * 5),
        IP(src=S4, dst=C4, id=8) / ICMP(type=0, code=0, id=0x1234, seq=1) / Raw(b"ping" * 5),
        # ICMPv6 echo
        IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=9, seq=2, data=b"v6ping"),
        # GRE: not a protocol the tokenizer encodes
        IP(src=C4, dst=S4, proto=47) / Raw(b"\x00\x00\x08\x00" + bytes(20)),
    ]
    ts = np.cumsum(np.array([0, 1_000, 30_000, 2_000_000, 5_000, 10, 1_000_000_000, 3, 0, 500_000,
                             7_000, 0, 0, 250, 0, 0], dtype=np.int64)) + 1_700_000_000_000_000_000
    return [_eth(f) for f in frames], ts
