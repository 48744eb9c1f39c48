"""An independent reference for the packet table: the same fields extracted with scapy.

Used by the capture tests to compare every field of every packet. Offsets are computed from
scapy's own layer boundaries and header lengths, never from pytrafgen's.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import scapy.all  # noqa: F401  (registers every layer binding: PPPoE, SLL2, …)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Packet
from scapy.utils import rdpcap

from pytrafgen.capture import PacketTable

EXT_HEADERS = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)
L4_COLUMNS = ("sport", "dport", "tcp_flags", "seq", "ack", "window", "urgent", "icmp_type", "icmp_code",
              "l4_csum", "l4_hdr_len", "l4_off", "payload_off", "payload_len", "payload_wirelen")
L3_COLUMNS = ("l3", "l3_off", "ip_hdr_len", "ip_total_len", "src", "dst", "proto", "ttl", "tos", "ip_id",
              "ip_flags", "frag_offset", "flow_label", "ip_csum")


def mapped(addr: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    return ip.packed if ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{addr}").packed


def first_ip_layer(pkt: Packet) -> Packet | None:
    # the exact classes: IPerror/IPerror6 (quoted headers inside ICMP) are subclasses
    return next((layer for layer in pkt.iterpayloads() if type(layer) in (IP, IPv6)), None)


def reference_fields(pkt: Packet, frame: bytes) -> dict[str, Any]:
    """Fields of architecture.md §1 for one frame, from scapy's dissection (L3/L4 only)."""
    ip = first_ip_layer(pkt)
    if ip is None:
        return {"l3": 0}
    caplen = len(frame)
    l3_off = caplen - len(bytes(ip))
    out: dict[str, Any] = {"l3_off": l3_off, "ip_flags": 0, "frag_offset": 0, "flow_label": 0, "ip_id": 0}
    if isinstance(ip, IP):
        hdr = ip.ihl * 4
        total = ip.len
        flags = int(ip.flags)
        mf, df, evil = bool(flags & 1), bool(flags & 2), bool(flags & 4)
        out.update(l3=4, src=mapped(ip.src), dst=mapped(ip.dst), proto=ip.proto, ttl=ip.ttl, tos=ip.tos,
                   ip_id=ip.id, frag_offset=ip.frag, ip_csum=ip.chksum, ip_hdr_len=hdr, ip_total_len=total,
                   ip_flags=mf | df << 1 | evil << 2 | (8 if (mf or ip.frag) else 0))
        upper = ip.payload
        wire_total = total if total else caplen - l3_off
    else:
        hdr = 40
        nh = ip.nh
        upper = ip.payload
        while isinstance(upper, EXT_HEADERS):
            if isinstance(upper, IPv6ExtHdrFragment):
                out["ip_id"] = upper.id
                out["frag_offset"] = upper.offset
                out["ip_flags"] = int(upper.m) | (8 if (upper.m or upper.offset) else 0)
                hdr += 8
                nh = upper.nh
                if upper.offset:
                    break
            else:
                hdr += (upper.len + 1) * 8
                nh = upper.nh
            upper = upper.payload
        out.update(l3=6, src=mapped(ip.src), dst=mapped(ip.dst), proto=nh, ttl=ip.hlim, tos=ip.tc,
                   flow_label=ip.fl, ip_hdr_len=hdr, ip_total_len=min(40 + ip.plen, 65535), ip_csum=0)
        wire_total = 40 + ip.plen if ip.plen else caplen - l3_off
    ip_end = l3_off + wire_total
    cap_end = min(ip_end, caplen)
    l4_off = l3_off + hdr
    out.update({c: 0 for c in L4_COLUMNS})
    out["l4_off"] = l4_off
    if out["frag_offset"]:
        out.update(status=4, payload_off=l4_off, payload_len=cap_end - l4_off, payload_wirelen=wire_total - hdr)
        return out
    raw_l4 = frame[l4_off:cap_end]
    proto = out["proto"]
    if proto == 6 and isinstance(upper, TCP) and upper.dataofs >= 5:
        l4_hdr = upper.dataofs * 4
        out.update(sport=upper.sport, dport=upper.dport, seq=upper.seq, ack=upper.ack,
                   tcp_flags=int(upper.flags), window=upper.window, urgent=upper.urgptr, l4_csum=upper.chksum)
    elif proto == 17 and isinstance(upper, UDP):
        l4_hdr = 8
        out.update(sport=upper.sport, dport=upper.dport, l4_csum=upper.chksum)
    elif proto == 1 and isinstance(upper, ICMP):
        l4_hdr = 8
        out.update(icmp_type=upper.type, icmp_code=upper.code, l4_csum=upper.chksum)
    elif proto == 58 and len(raw_l4) >= 8:
        # scapy spreads ICMPv6 over many classes; type/code/checksum lead each of them
        l4_hdr = 8
        out.update(icmp_type=raw_l4[0], icmp_code=raw_l4[1], l4_csum=int.from_bytes(raw_l4[2:4], "big"))
    elif proto in (1, 6, 17, 58):
        # scapy could not decode the L4 header (truncated), or a TCP data offset < 5 (bad)
        out["status"] = "short"
        return out
    else:
        l4_hdr = 0
    out.update(l4_hdr_len=l4_hdr, payload_off=l4_off + l4_hdr, payload_len=cap_end - l4_off - l4_hdr,
               payload_wirelen=max(wire_total - hdr - l4_hdr, 0), payload=frame[l4_off + l4_hdr : cap_end])
    out["status"] = 0
    return out


def read_reference(path: Path, count: int) -> list[tuple[Packet, bytes, int, int]]:
    """(scapy packet, frame bytes, ts_ns, wirelen) for the first ``count`` records (-1: all)."""
    packets = rdpcap(str(path), count=count)
    out = []
    for pkt in packets:
        frame = bytes(pkt.original) if getattr(pkt, "original", None) is not None else bytes(pkt)
        ts = pkt.time
        out.append((pkt, frame, int(ts * 1_000_000_000), int(pkt.wirelen or len(frame))))
    return out


def compare_table(table: PacketTable, reference: list[tuple[Packet, bytes, int, int]]) -> list[str]:
    """Every disagreement between the table and scapy, as readable lines (empty: none)."""
    problems: list[str] = []
    if len(table) < len(reference):
        return [f"table has {len(table)} rows, reference {len(reference)}"]
    for i, (pkt, frame, ts_ns, wirelen) in enumerate(reference):
        got_frame = table.frame(i)
        if got_frame != frame:
            problems.append(f"row {i}: frame bytes differ")
            continue
        if int(table.ts_ns[i]) != ts_ns:
            problems.append(f"row {i}: ts_ns {int(table.ts_ns[i])} != {ts_ns}")
        if int(table.wirelen[i]) != wirelen:
            problems.append(f"row {i}: wirelen {int(table.wirelen[i])} != {wirelen}")
        ref = reference_fields(pkt, frame)
        status = int(table.status[i])
        if ref["l3"] == 0:
            if int(table.l3[i]) != 0:
                problems.append(f"row {i}: l3 {int(table.l3[i])} but scapy finds no IP layer")
            continue
        if status in (1, 5):
            problems.append(f"row {i}: status {status} but scapy finds IPv{ref['l3']}")
            continue
        columns = L3_COLUMNS
        if ref["status"] == "short":
            if status not in (2, 3):
                problems.append(f"row {i}: scapy cannot decode L4 but status is {status}")
        else:
            if status != ref["status"]:
                problems.append(f"row {i}: status {status} != {ref['status']}")
                continue
            columns = L3_COLUMNS + L4_COLUMNS
            if "payload" in ref and table.payload(i) != ref["payload"]:
                problems.append(f"row {i}: payload bytes differ")
        for col in columns:
            got = getattr(table, col)[i]
            got = bytes(got) if col in ("src", "dst") else int(got)
            if got != ref[col]:
                problems.append(f"row {i}: {col} {got!r} != {ref[col]!r}")
    return problems

