"""Formats and link types on small files the tests build themselves, checked against scapy."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from capture_files import ng_block, ng_epb, ng_idb, ng_opb, ng_shb, ng_spb, pcap_file
from capture_reference import compare_table
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Packet, Raw, fuzz

import pytrafgen
from pytrafgen.capture import STATUS_NAMES, PacketTable

STATUS = {name: code for code, name in enumerate(STATUS_NAMES)}
BASE_TS = 1_700_000_000_000_000_000


def eth() -> Ether:
    # explicit addresses: without them scapy resolves a destination MAC over the network
    return Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")


def ip_packets() -> list[Packet]:
    """L3 packets covering options, extension headers, fragments and every L4 type."""
    tcp_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)]
    v4 = IP(src="10.0.0.1", dst="10.0.0.2", id=77, tos=0x28, ttl=9, flags="DF")
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x12, fl=0xABCDE, hlim=33)
    frags = fragment(IP(src="10.0.0.1", dst="10.0.0.3", id=5) / UDP(sport=1, dport=2) / (b"x" * 60), fragsize=24)
    return [
        v4 / TCP(sport=1234, dport=80, seq=100, ack=200, flags="SAE", window=999, urgptr=3, options=tcp_opts),
        v4 / TCP(sport=1234, dport=80, flags=0x1FF) / b"GET / HTTP/1.0\r\n\r\n",
        IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR(), IPOption_NOP()]) / UDP(sport=53, dport=5353) / b"q",
        IP(src="1.2.3.4", dst="5.6.7.8") / ICMP(type=8, code=0, id=1, seq=2) / b"ping",
        IP(src="1.2.3.4", dst="5.6.7.8", proto=47) / Raw(b"\x00\x00\x08\x00greish"),
        *frags,
        v6 / TCP(sport=443, dport=5555, seq=1, flags="A") / b"tls",
        v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::9"]) / IPv6ExtHdrDestOpt()
        / UDP(sport=7, dport=8) / b"ext",
        v6 / IPv6ExtHdrFragment(id=0x1234567, m=1, offset=0) / UDP(sport=9, dport=10) / b"first",
        v6 / IPv6ExtHdrFragment(id=0x1234567, m=0, offset=3, nh=17) / b"rest-of-datagram",
        v6 / ICMPv6EchoRequest(id=3, seq=4, data=b"hi"),
    ]


def write(tmp_path: Path, name: str, blob: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def reference(pkts: list[Packet], ts: list[int], decode: Callable[[bytes], Packet] | None = None,
              ) -> list[tuple[Packet, bytes, int, int]]:
    """scapy's dissection of each frame's bytes (``decode``: default the packet's own top layer)."""
    frames = [bytes(p) for p in pkts]
    return [((decode or type(p))(f), f, t, len(f)) for p, f, t in zip(pkts, frames, ts, strict=True)]


def check_against_scapy(path: Path, pkts: list[Packet], ts: list[int],
                        decode: Callable[[bytes], Packet] | None = None) -> pytrafgen.PacketTable:
    table = pytrafgen.read_pcap(path)
    assert len(table) == len(pkts)
    problems = compare_table(table, reference(pkts, ts, decode))
    assert not problems, "\n".join(problems)
    return table


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path: Path, big: bool, nano: bool) -> None:
    pkts = [eth() / p for p in ip_packets()]
    pkts.append(eth() / ARP())
    ts = [BASE_TS + i * (1_234_567 if nano else 1_234_000) for i in range(len(pkts))]
    path = write(tmp_path, "x.pcap", pcap_file([bytes(p) for p in pkts], ts_ns=ts, big=big, nano=nano))
    table = check_against_scapy(path, pkts, ts)
    assert table.status[-1] == STATUS["non_ip"]
    assert set(table.status[:-1].tolist()) == {STATUS["ok"], STATUS["fragment"]}
    assert (table.linktype == 1).all()


def test_fields_of_hand_checked_packets(tmp_path: Path) -> None:
    """A few values written out by hand, not via the reference."""
    pkts = [eth() / p for p in ip_packets()]
    table = pytrafgen.read_pcap(write(tmp_path, "x.pcap", pcap_file([bytes(p) for p in pkts])))
    assert bytes(table.src[0]) == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    assert table.tcp_flags[0] == 2 | 16 | 64 and table.tcp_flags[1] == 0x1FF
    assert table.ip_flags[0] == 2 and table.tos[0] == 0x28 and table.ttl[0] == 9 and table.ip_id[0] == 77
    assert table.l4_hdr_len[0] == 20 + 20 and table.payload_len[0] == 0
    assert table.payload(1) == b"GET / HTTP/1.0\r\n\r\n"
    assert table.ip_hdr_len[2] == 24  # RR option (3 bytes, no slots) + NOP
    assert (table.icmp_type[3], table.l4_hdr_len[3], table.payload(3)) == (8, 8, b"ping")
    assert (table.proto[4], table.l4_hdr_len[4], table.payload(4)) == (47, 0, b"\x00\x00\x08\x00greish")
    frag_rows = np.flatnonzero(table.ip_id == 5)
    assert table.status[frag_rows[0]] == STATUS["ok"] and table.ip_flags[frag_rows[0]] == 1 | 8
    assert (table.status[frag_rows[1:]] == STATUS["fragment"]).all()
    assert table.frag_offset[frag_rows[1]] == 3
    v6_ext, v6_first, v6_rest = (len(pkts) - 4, len(pkts) - 3, len(pkts) - 2)
    assert table.ip_hdr_len[v6_ext] == 40 + 8 + 24 + 8 and table.proto[v6_ext] == 17
    assert (table.ip_id[v6_first], table.ip_flags[v6_first], table.dport[v6_first]) == (0x1234567, 1 | 8, 10)
    assert table.status[v6_rest] == STATUS["fragment"] and table.frag_offset[v6_rest] == 3
    assert table.payload(v6_rest) == b"rest-of-datagram"
    assert table.flow_label[v6_first] == 0xABCDE and table.tos[v6_first] == 0x12


@pytest.mark.parametrize("wrap", ["dot1q", "qinq", "dot1ad", "pppoe"])
def test_vlan_and_pppoe(tmp_path: Path, wrap: str) -> None:
    def l2(p: Packet) -> Packet:
        if wrap == "dot1q":
            return eth() / Dot1Q(vlan=10) / p
        if wrap == "qinq":
            return eth() / Dot1Q(vlan=10) / Dot1Q(vlan=20) / p
        if wrap == "dot1ad":
            return eth() / Dot1AD(vlan=100) / Dot1Q(vlan=20) / p
        return eth() / PPPoE(sessionid=7) / PPP(proto=0x21 if p.version == 4 else 0x57) / p

    pkts = [l2(p) for p in ip_packets()]
    ts = [BASE_TS] * len(pkts)
    table = check_against_scapy(write(tmp_path, "v.pcap", pcap_file([bytes(p) for p in pkts], ts_ns=ts)), pkts, ts)
    assert table.l3_off[0] == {"dot1q": 18, "qinq": 22, "dot1ad": 22, "pppoe": 22}[wrap]


@pytest.mark.parametrize("linktype", [113, 276], ids=["sll", "sll2"])
def test_linux_cooked(tmp_path: Path, linktype: int) -> None:
    def l2(p: Packet) -> Packet:
        proto = 0x0800 if p.version == 4 else 0x86DD
        return CookedLinux(proto=proto) / p if linktype == 113 else CookedLinuxV2(proto=proto) / p

    pkts = [l2(p) for p in ip_packets()]
    ts = [BASE_TS] * len(pkts)
    path = write(tmp_path, "c.pcap", pcap_file([bytes(p) for p in pkts], linktype, ts_ns=ts))
    table = check_against_scapy(path, pkts, ts)
    assert table.l3_off[0] == (16 if linktype == 113 else 20)


@pytest.mark.parametrize("linktype", [101, 12, 14, 228, 229])
def test_raw_ip(tmp_path: Path, linktype: int) -> None:
    pkts = [p for p in ip_packets() if linktype not in (228, 229) or p.version == (4 if linktype == 228 else 6)]
    ts = [BASE_TS] * len(pkts)
    path = write(tmp_path, "r.pcap", pcap_file([bytes(p) for p in pkts], linktype, ts_ns=ts))
    table = check_against_scapy(path, pkts, ts)
    assert (table.l3_off == 0).all() and (table.linktype == linktype).all()


@pytest.mark.parametrize(("linktype", "order"), [(0, "<"), (0, ">"), (108, ">")], ids=["null-le", "null-be", "loop"])
def test_bsd_loopback(tmp_path: Path, linktype: int, order: str) -> None:
    pkts = [Raw(struct.pack(order + "I", 2 if p.version == 4 else 30)) / p for p in ip_packets()]
    ts = [BASE_TS] * len(pkts)
    path = write(tmp_path, "n.pcap", pcap_file([bytes(p) for p in pkts], linktype, ts_ns=ts))
    table = check_against_scapy(path, pkts, ts, lambda f: Raw(f[:4]) / (IP if f[4] >> 4 == 4 else IPv6)(f[4:]))
    assert (table.l3_off == 4).all()


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
def test_pcapng_interfaces_resolutions_and_block_types(tmp_path: Path, order: str) -> None:
    frame = eth() / IP(src="10.1.1.1", dst="10.1.1.2") / TCP(sport=1, dport=2)
    raw6 = IPv6(src="::1", dst="::2") / UDP(sport=3, dport=4) / b"six"
    blob = b"".join([
        ng_shb(order),
        ng_idb(order, 1),  # iface 0: Ethernet, default µs
        ng_idb(order, 101, tsresol=9),  # iface 1: raw IP, ns
        ng_idb(order, 1, tsresol=0x80 | 10, tsoffset_s=100),  # iface 2: 2^-10 s, +100 s
        ng_epb(order, 0, 1_700_000_000_123_456, bytes(frame)),
        ng_block(order, 4, b"\x00\x00\x00\x00"),  # name resolution block: skipped
        ng_epb(order, 1, 1_700_000_000_123_456_789, bytes(raw6)),
        ng_epb(order, 2, 3 * 1024 + 512, bytes(frame)),
        ng_spb(order, bytes(frame)),
        ng_opb(order, 1, 42, bytes(raw6)),
        ng_block(order, 0x40000BAD, b"custom"),
    ])
    table = pytrafgen.read_pcap(write(tmp_path, "x.pcapng", blob))
    assert table.iface.tolist() == [0, 1, 2, 0, 1]
    assert table.linktype.tolist() == [1, 101, 1, 1, 101]
    assert table.ts_ns.tolist() == [1_700_000_000_123_456_000, 1_700_000_000_123_456_789,
                                     103_500_000_000, 0, 42]
    assert (table.status == 0).all()
    assert table.dport.tolist() == [2, 4, 2, 2, 4]
    assert table.payload(1) == b"six" and table.l3_off[1] == 0 and table.l3_off[0] == 14


def test_pcapng_second_section_changes_byte_order(tmp_path: Path) -> None:
    frame = bytes(eth() / IP() / UDP(sport=5, dport=6))
    blob = (ng_shb("<") + ng_idb("<", 1) + ng_epb("<", 0, 1, frame)
            + ng_shb(">") + ng_idb(">", 101) + ng_epb(">", 0, 2, frame[14:]))
    table = pytrafgen.read_pcap(write(tmp_path, "two.pcapng", blob))
    assert table.linktype.tolist() == [1, 101]
    assert table.ts_ns.tolist() == [1000, 2000]
    assert table.dport.tolist() == [6, 6]


def test_truncated_padded_and_offloaded_frames(tmp_path: Path) -> None:
    syn = bytes(eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2, options=[("MSS", 1460)]))
    padded = bytes(eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2)) + b"\0" * 6
    tso = bytearray(bytes(eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2) / (b"d" * 100)))
    tso[16:18] = b"\0\0"  # IPv4 total length 0, as segmentation offload leaves it
    frames = [syn[:40], syn[:20], syn[:10], padded, bytes(tso)]
    table = pytrafgen.read_pcap(write(tmp_path, "t.pcap", pcap_file(frames, wirelen=[len(syn)] * 3 + [60, 154])))
    assert table.status.tolist() == [STATUS["truncated"]] * 3 + [STATUS["ok"]] * 2
    assert table.l3.tolist() == [4, 0, 0, 4, 4]
    assert bytes(table.dst[0])[12:] == bytes([2, 2, 2, 2])  # L3 parsed before the cut
    assert (table.caplen[0], table.wirelen[0]) == (40, len(syn))
    assert (table.payload_len[3], table.payload_wirelen[3]) == (0, 0)  # padding is not payload
    assert (table.ip_total_len[4], table.payload_len[4], table.payload(4)) == (0, 100, b"d" * 100)


def test_bad_headers_and_unknown_linktype(tmp_path: Path) -> None:
    good = bytearray(bytes(eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2)))
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x43
    bad_doff = bytearray(good)
    bad_doff[14 + 20 + 12] = 0x20
    short_total = bytearray(good)
    short_total[16:18] = (30).to_bytes(2, "big")  # TCP header does not fit the IP length
    wrong_version = bytearray(good)
    wrong_version[14] = 0x65
    frames = [bytes(b) for b in (bad_ihl, bad_doff, short_total, wrong_version)]
    table = pytrafgen.read_pcap(write(tmp_path, "b.pcap", pcap_file(frames)))
    assert table.status.tolist() == [STATUS["bad_header"]] * 4
    other = pytrafgen.read_pcap(write(tmp_path, "u.pcap", pcap_file([bytes(good)], linktype=147)))
    assert other.status.tolist() == [STATUS["unsupported_linktype"]] and other.l3[0] == 0


def test_fuzzed_headers_match_scapy() -> None:
    """Random field values (scapy's fuzz) in IPv4/IPv6/TCP/UDP/ICMP headers, seeded."""
    random.seed(7)
    layers = [
        lambda: fuzz(IP(version=4) / TCP()),
        lambda: fuzz(IP(version=4) / UDP()) / Raw(b"x" * random.randint(0, 20)),
        lambda: IPv6(src="::1", dst="::2") / fuzz(IPv6ExtHdrHopByHop()) / TCP(options=[("MSS", 5)]) / b"abc",
        lambda: fuzz(IPv6(version=6, nh=6)) / fuzz(TCP()),
        lambda: fuzz(IP(version=4, ihl=random.choice([5, 6, 7]), proto=1)) / fuzz(ICMP()),
    ]
    frames = [bytes(eth() / layers[i % len(layers)]()) for i in range(500)]
    table = PacketTable.from_frames(frames)
    problems = compare_table(table, [(Ether(f), f, 0, len(f)) for f in frames])
    assert not problems, "\n".join(problems[:20])
