"""The packet builder: exact round trip on real captures, checksums and lengths that validate
under independent implementations (scapy, tshark), repair of broken packets, bad records."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PUBLIC_CAPTURES, SHARED_CAPTURES, needs_public, shared_ids
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import BuildError, build_frames, build_packets, write_records
from pytrafgen.capture import pcap_bytes, read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import isn_and_addresses, records_and_origin, records_from_packets

LINKTYPE_RAW = 101
CLIENT_CIDRS = ["192.168.50.0/24", "fd00:1::/64"]
SERVER_CIDRS = ["172.16.0.0/16", "fd00:2::/64"]


# ---- helpers ------------------------------------------------------------------------------------

def load(path: Path, classes: tuple[str, ...] = ("x",)):
    table = read_pcap(path)
    flows = assemble_flows(table)
    labels = np.zeros(len(flows), np.int16)
    records, origin = records_and_origin(table, flows, labels, list(classes))
    return table, flows, records, origin


def original_l3(table, row: int) -> bytes:
    """Captured bytes of the IP packet (without link header or Ethernet padding)."""
    start = int(table.frame_off[row]) + int(table.l3_off[row])
    captured = int(table.caplen[row]) - int(table.l3_off[row])
    total = int(table.ip_total_len[row])
    length = min(captured, total) if total else captured
    return table.data[start : start + length].tobytes()


def derived_positions(packet: bytes) -> tuple[set[int], set[int]]:
    """(checksum byte positions, length byte positions) of an IP packet, from its own headers."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        proto, csums, lengths = packet[9], {10, 11}, {0, 2, 3}
    else:
        ihl, proto, csums, lengths = 40, packet[6], set(), {4, 5}
        while proto in (0, 43, 60) and ihl + 2 <= len(packet):  # skip extension headers
            proto, ihl = packet[ihl], ihl + (packet[ihl + 1] + 1) * 8
    l4_csum = {6: 16, 17: 6, 1: 2, 58: 2}.get(proto)
    if l4_csum is not None:
        csums |= {ihl + l4_csum, ihl + l4_csum + 1}
    if proto == 6:
        lengths.add(ihl + 12)
    elif proto == 17:
        lengths |= {ihl + 4, ihl + 5}
    return csums, lengths


def compare_round_trip(table, records, origin, repair: bool = True) -> dict[str, list[int]]:
    """Build with the original addresses/ISNs (raw IP) and sort packets by how they compare."""
    built = build_frames(records, linktype=LINKTYPE_RAW, repair=repair, isn=origin.isn, addresses=origin)
    assert len(built) == records.n_packets, built.skipped
    kinds: dict[str, list[int]] = {"equal": [], "checksum_only": [], "derived_only": [], "other": []}
    for j in range(len(built)):
        want = original_l3(table, int(origin.rows[built.packet[j]]))
        got = built.frame(j)[: len(want)]
        if got == want:
            kinds["equal"].append(j)
            continue
        diff = {k for k in range(len(want)) if got[k] != want[k]}
        csums, lengths = derived_positions(want)
        kind = "checksum_only" if diff <= csums else "derived_only" if diff <= csums | lengths else "other"
        kinds[kind].append(j)
    return kinds


def synthetic_capture(tmp_path: Path) -> Path:
    """A capture with what the shared data lacks: IPv4 options, IPv6 extension headers, ICMPv6,
    odd payload lengths, TCP reserved bits, and a packet truncated by the snap length."""
    c4, s4, c6, s6 = "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"
    eth = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
    back = Ether(src="02:00:00:00:00:0b", dst="02:00:00:00:00:0a")
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    pkts = [
        eth / IP(src=c4, dst=s4, options=[IPOption_RR(routers=["1.2.3.4"])]) /
        TCP(sport=40000, dport=80, flags="S", seq=1000, options=opts),
        back / IP(src=s4, dst=c4) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001, options=opts),
        eth / IP(src=c4, dst=s4) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / Raw(b"GET / HTTP/1.0"),
        back / IP(src=s4, dst=c4) / TCP(sport=80, dport=40000, flags="A", seq=5001, ack=1015, reserved=5),
        eth / IP(src=c4, dst=s4) / UDP(sport=5683, dport=5683) / Raw(b"odd-len"),
        back / IP(src=s4, dst=c4) / UDP(sport=5683, dport=5683),
        eth / IP(src=c4, dst=s4, flags="DF") / ICMP(type=8, id=77, seq=3) / Raw(bytes(range(33))),
        back / IP(src=s4, dst=c4) / ICMP(type=0, id=77, seq=3) / Raw(bytes(range(33))),
        eth / IPv6(src=c6, dst=s6, tc=0x20, fl=12345) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
        TCP(sport=50000, dport=1883, flags="S", seq=7, options=opts),
        back / IPv6(src=s6, dst=c6) / TCP(sport=1883, dport=50000, flags="SA", seq=9, ack=8),
        eth / IPv6(src=c6, dst=s6) / TCP(sport=50000, dport=1883, flags="PA", seq=8, ack=10) / Raw(b"\x10\x0c\x00"),
        eth / IPv6(src=c6, dst=s6) / IPv6ExtHdrFragment(id=0xABCDEF, m=0) / UDP(sport=53, dport=5353) / Raw(b"12345"),
        eth / IPv6(src=c6, dst=s6) / ICMPv6EchoRequest(id=1, seq=2, data=b"x" * 17),
        back / IPv6(src=s6, dst=c6) / ICMPv6EchoReply(id=1, seq=2, data=b"x" * 17),
        eth / IP(src=c4, dst=s4) / UDP(sport=9999, dport=7) / Raw(bytes(range(200))),  # truncated below
    ]
    frames = [bytes(p) for p in pkts]
    wirelen = [len(f) for f in frames]
    frames[-1] = frames[-1][:60]  # snap length 60: the capture holds 18 of 200 payload bytes
    path = tmp_path / "synthetic.pcap"
    path.write_bytes(pcap_bytes(frames, ts_ns=np.arange(len(frames)) * 1000 + 10**18, wirelen=wirelen))
    return path


def tshark_checksum_status(pcap: Path, extra: list[str] | None = None) -> list[list[str]]:
    """Per packet, the first occurrence of each checksum status field (1 good, 0 bad, 2 not
    verified, "" absent), then the ``extra`` fields."""
    fields = ["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status",
              "icmpv6.checksum.status", *(extra or [])]
    cmd = ["tshark", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=f"]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_expert_errors(pcap: Path) -> str:
    cmd = ["tshark", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-o", "ip.check_checksum:TRUE", "-q", "-z", "expert,error"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


# ---- round trip on real captures --------------------------------------------------------------------

@pytest.mark.parametrize("path", SHARED_CAPTURES, ids=shared_ids(SHARED_CAPTURES))
def test_round_trip_shared_captures_is_exact(path: Path) -> None:
    table, _, records, origin = load(path)
    kinds = compare_round_trip(table, records, origin)
    rate = len(kinds["equal"]) / records.n_packets
    print(f"{path.name}: {len(kinds['equal'])}/{records.n_packets} equal ({rate:.4%}), "
          f"not in records: {origin.skipped}")
    assert not kinds["other"] and not kinds["derived_only"]
    # The one documented exception: a UDP checksum that computes to 0 is sent as 0xffff
    # (RFC 768); a sender that wrote 0x0000 ("no checksum") differs there only.
    for j in kinds["checksum_only"]:
        want = original_l3(table, int(origin.rows[j]))
        assert want[9] == 17 and want[26:28] == b"\0\0", j
        assert build_frames(records, linktype=LINKTYPE_RAW, isn=origin.isn, addresses=origin).frame(j)[26:28] == \
            b"\xff\xff"
    assert rate >= 0.9999
    # and with the captured derived values written back, every byte matches
    assert compare_round_trip(table, records, origin, repair=False)["equal"] == list(range(records.n_packets))


@needs_public
@pytest.mark.parametrize("path", PUBLIC_CAPTURES, ids=shared_ids(PUBLIC_CAPTURES))
def test_round_trip_public_captures_differs_only_in_checksums(path: Path) -> None:
    table, _, records, origin = load(path)
    kinds = compare_round_trip(table, records, origin)
    print(f"{path.name}: {len(kinds['equal'])}/{records.n_packets} equal, "
          f"{len(kinds['checksum_only'])} differ only in checksums (offload / capture host)")
    assert not kinds["other"] and not kinds["derived_only"]
    assert compare_round_trip(table, records, origin, repair=False)["equal"] == list(range(records.n_packets))


@needs_public
@needs_tshark
@pytest.mark.parametrize("name", ["http_espn.pcapng", "coap_mqtt.pcap", "WebattackSQLinj.pcap", "nb6-http.pcap"])
def test_checksum_only_differences_are_what_tshark_flags(name: str) -> None:
    """The packets whose rebuilt bytes differ (only in checksums) are exactly those tshark finds a
    bad checksum in, plus UDP packets sent without a checksum (0x0000), which the builder fills."""
    path = next(p for p in PUBLIC_CAPTURES if p.name == name)
    table, _, records, origin = load(path)
    kinds = compare_round_trip(table, records, origin)
    assert not kinds["other"] and not kinds["derived_only"] and not table.skipped
    differing = {int(origin.rows[j]) for j in kinds["checksum_only"]}
    # the outermost IP and L4 layers only: a tunnel's or ICMP error's inner packet is payload
    rows = tshark_checksum_status(path, extra=["udp.checksum", "frame.protocols"])
    flagged = set()
    for i, row in enumerate(rows):
        protos = row[6].split(":")
        outer = next((p for p in protos[protos.index("ip") if "ip" in protos else 0:]
                      if p in ("tcp", "udp", "icmp", "icmpv6")), None)
        l4_status = row[("tcp", "udp", "icmp", "icmpv6").index(outer) + 1] if outer else ""
        if row[0] == "0" or l4_status == "0" or (outer == "udp" and row[5] == "0x0000"):
            flagged.add(i)
    assert differing == flagged & set(origin.rows.tolist())


@needs_public
def test_public_offload_capture_is_counted() -> None:
    """ftp-crack.pcap was captured on the sending host: every TCP checksum there is wrong."""
    path = next(p for p in PUBLIC_CAPTURES if p.name == "ftp-crack.pcap")
    table, _, records, origin = load(path)
    kinds = compare_round_trip(table, records, origin)
    assert len(kinds["checksum_only"]) > 0.9 * records.n_packets


# ---- synthetic packets: round trip and independent checksum validation ---------------------------------

def test_synthetic_round_trip(tmp_path: Path) -> None:
    table, _, records, origin = load(synthetic_capture(tmp_path))
    assert records.n_packets == len(table) == 15
    kinds = compare_round_trip(table, records, origin)
    # everything but the truncated packet (whose uncaptured payload is rebuilt as zeros)
    assert kinds["equal"] == list(range(14)) and kinds["checksum_only"] == [14]
    assert records.packets["payload_len"][14] == 200 and records.packets["payload_stored"][14] == 18
    # TCP reserved bits survive; seq/ack are relative to each side's first packet
    assert records.packets["tcp_flags"][3] == (5 << 9) | 16
    assert records.packets["seq"][:4].tolist() == [0, 0, 1, 1]
    assert records.packets["ack"][:4].tolist() == [0, 1, 1, 15]


DERIVED_SCAPY_FIELDS = ("chksum", "cksum", "len", "plen", "ihl", "dataofs")


def _scapy_recomputed(pkt) -> bytes:
    """scapy's bytes for a dissected packet with every checksum and length recomputed by scapy
    (``delattr`` also drops scapy's cache of the dissected bytes)."""
    layer = pkt
    while layer:
        for name in DERIVED_SCAPY_FIELDS:
            if name in layer.fields:
                delattr(layer, name)
        layer = layer.payload if layer.payload else None
    return bytes(pkt.__class__(bytes(pkt)))


def _scapy_rebuilt(frame: bytes) -> bytes:
    return _scapy_recomputed(Ether(frame))


def test_built_packets_validate_under_scapy(tmp_path: Path) -> None:
    _, _, records, _ = load(synthetic_capture(tmp_path))
    plan = AddressPlan.from_cidrs(CLIENT_CIDRS, SERVER_CIDRS)
    built = build_frames(records, plan, seed=3)
    assert len(built) == records.n_packets
    for j in range(len(built)):
        assert _scapy_rebuilt(built.frame(j)) == built.frame(j), j
    # negative control: scapy does notice a wrong checksum
    broken = bytearray(built.frame(0))
    broken[-1] ^= 1
    assert _scapy_rebuilt(bytes(broken)) != bytes(broken)


@needs_tshark
def test_built_packets_validate_under_tshark(tmp_path: Path) -> None:
    _, _, records, _ = load(synthetic_capture(tmp_path))
    plan = AddressPlan.from_cidrs(CLIENT_CIDRS, SERVER_CIDRS)
    out = tmp_path / "built.pcap"
    write_records(out, records, plan, seed=5)
    rows = tshark_checksum_status(out)
    assert len(rows) == records.n_packets
    for row in rows:
        present = [s for s in row if s]
        assert present and all(s == "1" for s in present), row  # 1 = good, 0 = bad, 2 = unverified
    ipv6_l4 = [r for r in rows if not r[0]]
    assert len(ipv6_l4) == 6  # IPv6 TCP/UDP/ICMPv6 checksums validated too
    assert "Bad checksum" not in tshark_expert_errors(out)


@needs_tshark
def test_rebuilt_real_traffic_validates_under_tshark(tmp_path: Path) -> None:
    paths = [p for p in SHARED_CAPTURES if p.name in ("benign_coap.pcap", "mqtt_bruteforce.pcap")]
    for path in paths:
        table, flows, records, _ = load(path, (path.stem,))
        plan = AddressPlan.learn(table, flows, np.zeros(len(flows), np.int16), [path.stem])
        out = tmp_path / path.name
        write_records(out, records, plan, seed=11)
        statuses = {s for row in tshark_checksum_status(out) for s in row if s}
        assert statuses == {"1"}, (path.name, statuses)


# ---- repair ------------------------------------------------------------------------------------------

def _scapy_agrees(frame: bytes) -> bool:
    """Whether scapy, recomputing every checksum and length of an IP packet, gets ``frame``."""
    return _scapy_recomputed(IP(frame) if frame[0] >> 4 == 4 else IPv6(frame)) == frame


def test_broken_checksums_in_a_capture_come_out_repaired(tmp_path: Path) -> None:
    pkts = [
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", chksum=0x1234) /
        TCP(sport=1, dport=2, flags="S", chksum=0xBEEF) / Raw(b"abc"),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", chksum=0) / UDP(sport=3, dport=4, len=3, chksum=1) / Raw(b"hello"),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(chksum=5) / Raw(b"ping!"),
        Ether() / IPv6(src="::1", dst="::2") / UDP(sport=3, dport=4, len=77, chksum=7) / Raw(b"hey"),
    ]
    path = tmp_path / "broken.pcap"
    path.write_bytes(pcap_bytes([bytes(p) for p in pkts]))
    _, _, records, origin = load(path)
    raw = build_frames(records, linktype=LINKTYPE_RAW, repair=False, isn=origin.isn, addresses=origin)
    fixed = build_frames(records, linktype=LINKTYPE_RAW, isn=origin.isn, addresses=origin)
    assert len(raw) == len(fixed) == records.n_packets == 4
    assert raw.frame(0)[10:12] == b"\x12\x34" and raw.frame(1)[24:26] == b"\x00\x03"  # as captured
    for j in range(len(fixed)):
        assert not _scapy_agrees(raw.frame(j)) and _scapy_agrees(fixed.frame(j)), j
    assert fixed.frame(1)[24:26] == (8 + 5).to_bytes(2, "big")  # UDP length repaired


def test_broken_derived_fields_in_records_come_out_repaired(tmp_path: Path) -> None:
    _, _, records, origin = load(synthetic_capture(tmp_path))
    n = records.n_packets
    records.raw_derived = {name: np.full(n, value, np.uint16) for name, value in (
        ("ip_hdr_len", 60), ("ip_total_len", 999), ("l4_hdr_len", 8), ("udp_len", 3), ("ip_csum", 0xABCD),
        ("l4_csum", 0x1111))}
    raw = build_frames(records, linktype=LINKTYPE_RAW, repair=False, isn=origin.isn, addresses=origin)
    fixed = build_frames(records, linktype=LINKTYPE_RAW, isn=origin.isn, addresses=origin)
    assert raw.frame(0)[:4] == bytes([0x4F, 0, 0x03, 0xE7]) and raw.frame(0)[10:12] == b"\xab\xcd"
    for j in range(n - 1):  # the last one is the truncated packet: no scapy reference for its zeros
        assert not _scapy_agrees(raw.frame(j)) and _scapy_agrees(fixed.frame(j)), j


def test_raw_derived_values_are_written_without_repair(tmp_path: Path) -> None:
    _, _, records, origin = load(synthetic_capture(tmp_path))
    records.raw_derived = {"ip_csum": np.full(records.n_packets, 0xABCD, np.uint16)}
    built = build_frames(records, linktype=LINKTYPE_RAW, repair=False, isn=origin.isn, addresses=origin)
    v4 = [j for j in range(len(built)) if built.frame(j)[0] >> 4 == 4]
    assert all(built.frame(j)[10:12] == b"\xab\xcd" for j in v4)
    # a derived field absent from raw_derived is still computed: the TCP checksum of packet 0 is valid
    fixed = build_frames(records, linktype=LINKTYPE_RAW, isn=origin.isn, addresses=origin)
    assert built.frame(0)[20 + 4 + 16 :] == fixed.frame(0)[20 + 4 + 16 :]


# ---- bad records ------------------------------------------------------------------------------------

def test_bad_records_are_skipped_and_counted(tmp_path: Path) -> None:
    _, _, records, origin = load(synthetic_capture(tmp_path))
    p, f = records.packets, records.flows
    v6_ext = int(np.flatnonzero((p["ip_opt_len"] > 0) & (f["ip_version"][p["flow"]] == 6))[0])
    p["payload_off"][2] = len(records.blob) + 5            # blob_range
    p["payload_len"][4] = 70000                           # too_long
    p["payload_stored"][6] = p["payload_len"][6] + 1      # bad_payload (and past payload_len)
    p["direction"][7] = 2                                 # bad_direction
    p["l4_opt_len"][1] = 44                               # TCP options > 40
    p["flow"][5] = 1000                                   # bad_flow
    udp6 = int(np.flatnonzero((f["proto"] == 17) & (f["ip_version"] == 6))[0])
    f["proto"][udp6] = 47                                 # unknown_proto (GRE)
    records.blob[int(p["ip_opt_off"][v6_ext]) + 1] = 200  # IPv6 extension chain overruns
    built = build_frames(records, linktype=LINKTYPE_RAW, isn=origin.isn, addresses=origin)
    assert built.skipped == {"blob_range": 1, "too_long": 1, "bad_payload": 1, "bad_direction": 1,
                             "bad_l4_options": 1, "bad_flow": 1, "unknown_proto": 1, "bad_ip_options": 1}
    assert len(built) == records.n_packets - 8
    table = build_packets(records, isn=origin.isn, addresses=origin)
    assert len(table) == len(built) and table.skipped["build_too_long"] == 1


def test_bad_columns_raise_build_error(tmp_path: Path) -> None:
    _, _, records, origin = load(synthetic_capture(tmp_path))
    with pytest.raises(BuildError, match="isn must be"):
        build_frames(records, isn=np.zeros((1, 2), np.uint32), addresses=origin)
    with pytest.raises(BuildError, match="no addresses"):
        build_frames(records)
    records.packets["seq"] = records.packets["seq"].astype(np.int64)
    with pytest.raises(BuildError, match="'seq' has dtype"):
        build_frames(records, addresses=origin)


def test_empty_records_build_nothing() -> None:
    built = build_frames(FieldRecords.empty(["x"]), AddressPlan.from_cidrs(["10.0.0.0/8"], ["10.1.0.0/16"]))
    assert len(built) == 0 and len(built.data) == 0


# ---- seeds, pcap output, public helpers --------------------------------------------------------------

def test_seed_decides_isns_and_addresses(tmp_path: Path) -> None:
    _, _, records, _ = load(synthetic_capture(tmp_path))
    plan = AddressPlan.from_cidrs(CLIENT_CIDRS, SERVER_CIDRS)
    a, b, c = (build_frames(records, plan, seed=s) for s in (1, 1, 2))
    assert a.data.tobytes() == b.data.tobytes()
    assert a.frame(0) != c.frame(0)


def test_write_records_is_time_ordered_and_readable(tmp_path: Path) -> None:
    _, _, records, _ = load(synthetic_capture(tmp_path))
    records.packets["ts_ns"] = records.packets["ts_ns"][::-1].copy()
    out = tmp_path / "out.pcap"
    summary = write_records(out, records, AddressPlan.from_cidrs(CLIENT_CIDRS, SERVER_CIDRS), seed=0,
                            start_ns=5 * 10**9)
    assert summary["packets"] == records.n_packets and not summary["skipped"]
    back = read_pcap(out)
    assert back.ts_ns.tolist() == sorted(back.ts_ns.tolist()) and int(back.ts_ns[0]) == 5 * 10**9
    assert (back.status == 0).all()
    assert not list(tmp_path.glob(".out.pcap.*"))  # no temporary left behind


def test_flow_spread_draws_flow_starts_and_keeps_gaps(tmp_path: Path) -> None:
    _, _, records, _ = load(synthetic_capture(tmp_path))
    records.packets["ts_ns"] = records.packets["ts_ns"] - records.packets["ts_ns"].min()  # as if generated
    plan = AddressPlan.from_cidrs(CLIENT_CIDRS, SERVER_CIDRS)
    a, b, c = (build_frames(records, plan, seed=s, flow_spread_s=10.0, start_ns=10**18) for s in (4, 4, 5))
    assert np.array_equal(a.ts_ns, b.ts_ns) and not np.array_equal(a.ts_ns, c.ts_ns)
    assert int(a.ts_ns.min()) == 10**18 and int(a.ts_ns.max()) < 10**18 + 11 * 10**9
    flow = records.packets["flow"][a.packet]
    for f in np.unique(flow):  # gaps inside a flow are the records'
        mine = a.packet[flow == f]
        assert np.array_equal(np.diff(a.ts_ns[flow == f]), np.diff(records.packets["ts_ns"][mine]))


def test_records_from_packets_and_isn_helpers_agree(tmp_path: Path) -> None:
    table, flows, records, origin = load(synthetic_capture(tmp_path))
    labels = np.zeros(len(flows), np.int16)
    again = records_from_packets(table, flows, labels, ["x"])
    assert again.blob.tobytes() == records.blob.tobytes()
    assert np.array_equal(isn_and_addresses(table, flows, labels, ["x"]).isn, origin.isn)
    # client ISN of the first TCP flow is the SYN's seq, the server's the SYN-ACK's
    assert origin.isn[0].tolist() == [1000, 5000]


# ---- generated flows keep their own connections -----------------------------------------------

def _thirty_tcp_flows(tmp_path: Path):
    from scapy.utils import wrpcap

    pkts = []
    for i in range(30):
        c, s = IP(src="10.0.0.1", dst="10.0.0.2"), IP(src="10.0.0.2", dst="10.0.0.1")
        pkts += [Ether() / c / TCP(sport=1000 + i, dport=80, flags="S", seq=1),
                 Ether() / s / TCP(sport=80, dport=1000 + i, flags="SA", seq=7, ack=2),
                 Ether() / c / TCP(sport=1000 + i, dport=80, flags="A", seq=2, ack=8)]
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k * 0.001
    wrpcap(str(tmp_path / "thirty.pcap"), pkts)
    return load(tmp_path / "thirty.pcap")[2]


def test_generated_flows_sharing_a_five_tuple_read_back_as_separate_connections(tmp_path: Path) -> None:
    records = _thirty_tcp_flows(tmp_path)
    records.flows["client_port"][:] = 50000  # as a model that repeats one client port would
    plan = AddressPlan.from_cidrs(["10.9.0.1/32", "fd00:9::1/128"], ["10.9.0.2/32", "fd00:9::2/128"])
    out = tmp_path / "gen.pcap"
    write_records(out, records, plan, seed=1)
    table = read_pcap(out)
    flows = assemble_flows(table)
    assert len(flows) == 30 and len(set(flows.client_port.tolist())) == 30
    assert 50000 in flows.client_port.tolist()  # the first flow keeps its port
    # given endpoints (an exact round trip) are never rewritten
    again = build_frames(records, addresses={"client_addr": np.tile(np.frombuffer(bytes(16), np.uint8), (30, 1)),
                                             "server_addr": np.tile(np.frombuffer(bytes(15) + b"\x01", np.uint8),
                                                                    (30, 1))})
    assert len(assemble_flows(again.to_table())) == 1


def test_port_reassignment_stops_when_the_ephemeral_range_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytrafgen import build

    monkeypatch.setattr(build, "EPHEMERAL_PORTS", (40000, 40004))  # four free ports
    n = 10
    flows = {"proto": np.full(n, 6, np.uint8), "client_port": np.full(n, 50000, np.uint16),
             "server_port": np.full(n, 80, np.uint16)}
    ends = {"client_addr": np.zeros((n, 16), np.uint8), "server_addr": np.ones((n, 16), np.uint8)}
    ports = build._distinct_five_tuples(flows, ends, seed=0)["client_port"]
    assert sorted(set(ports.tolist())) == [40000, 40001, 40002, 40003, 50000]
    assert (ports == 50000).sum() == n - 4
