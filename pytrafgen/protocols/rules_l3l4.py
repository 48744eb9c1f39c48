"""Expert compliance rules for IPv4, IPv6, UDP and ICMP (TCP's are in ``rules_tcp``).

``L3L4_RULES`` holds the rules of ``"ipv4"``, ``"ipv6"``, ``"udp"`` and ``"icmp"``;
``pytrafgen.protocols.rules.rules_for(name)`` joins them with ``rules_tcp``, and the built-in
protocol specs return them from ``ProtocolSpec.rules()``. Each rule reads header bytes from the capture buffer itself where it judges an on-the-wire field, so a
dissector that normalised a value cannot hide a violation. docs/rules.md lists every rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pytrafgen.rules.context import RuleContext
from pytrafgen.rules.packet_bytes import address_words_sum, fold, ones_sum, read_u8, read_u16

Indices = tuple[np.ndarray, np.ndarray]


def result(applicable: np.ndarray, bad: np.ndarray) -> Indices:
    """Index arrays from boolean masks; ``violating`` is always a subset of ``applicable``."""
    applicable = np.asarray(applicable, bool)
    return np.flatnonzero(applicable), np.flatnonzero(applicable & np.asarray(bad, bool))


def l3_start(ctx: RuleContext) -> np.ndarray:
    return ctx.col("frame_off").astype(np.int64) + ctx.col("l3_off").astype(np.int64)


def frame_end(ctx: RuleContext) -> np.ndarray:
    return ctx.col("frame_off").astype(np.int64) + ctx.col("caplen").astype(np.int64)


def first_fragment(ctx: RuleContext) -> np.ndarray:
    return ctx.col("frag_offset") == 0


def unfragmented(ctx: RuleContext) -> np.ndarray:
    return (ctx.col("ip_flags") & 0x08) == 0


def whole_l4_captured(ctx: RuleContext) -> np.ndarray:
    """The IP datagram (per its length field) lies fully inside the captured frame."""
    return ctx.col("l3_off").astype(np.int64) + ctx.col("ip_total_len").astype(np.int64) <= ctx.col(
        "caplen"
    ).astype(np.int64)


def l4_checksum_ok(ctx: RuleContext, mask: np.ndarray, proto_number: np.ndarray) -> np.ndarray:
    """Whether the TCP/UDP/ICMPv6 checksum (with pseudo-header) or ICMPv4 checksum verifies."""
    ok = np.ones(ctx.n_packets, bool)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return ok
    data = ctx.col("data")
    l3 = l3_start(ctx)[idx]
    l4_start = ctx.col("frame_off")[idx].astype(np.int64) + ctx.col("l4_off")[idx].astype(np.int64)
    l4_len = ctx.col("ip_total_len")[idx].astype(np.int64) - (l4_start - l3)
    l4_len = np.maximum(l4_len, 0)
    sums = ones_sum(data, l4_start, l4_len)
    ipv4 = ctx.col("l3")[idx] == 4
    proto = np.asarray(proto_number, np.int64)[idx]
    pseudo = (address_words_sum(ctx.col("src")[idx], ipv4) + address_words_sum(ctx.col("dst")[idx], ipv4)
              + proto.astype(np.uint64) + l4_len.astype(np.uint64))
    with_pseudo = proto != 1  # ICMPv4 has no pseudo-header
    sums = sums + np.where(with_pseudo, pseudo, np.uint64(0))
    ok[idx] = fold(sums) == 0xFFFF
    return ok


def left_to_offload(ctx: RuleContext, mask: np.ndarray, proto_number: int) -> np.ndarray:
    """Packets of ``mask`` whose TCP/UDP checksum field holds only the pseudo-header sum: the
    sending host's stack left the rest to the NIC (checksum offload) and the capture was taken
    on that host before the NIC filled it in. The packet on the wire was checksummed; the
    capture cannot show it, so such a field is not judged (Wireshark's default likewise)."""
    out = np.zeros(ctx.n_packets, bool)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    l3 = l3_start(ctx)[idx]
    l4_start = ctx.col("frame_off")[idx].astype(np.int64) + ctx.col("l4_off")[idx].astype(np.int64)
    l4_len = np.maximum(ctx.col("ip_total_len")[idx].astype(np.int64) - (l4_start - l3), 0)
    ipv4 = ctx.col("l3")[idx] == 4
    pseudo = fold(address_words_sum(ctx.col("src")[idx], ipv4) + address_words_sum(ctx.col("dst")[idx], ipv4)
                  + np.uint64(proto_number) + l4_len.astype(np.uint64))
    out[idx] = ctx.col("l4_csum")[idx].astype(np.int64) == pseudo.astype(np.int64)
    return out


def on_loopback(ctx: RuleContext) -> np.ndarray:
    """Packets from a loopback address to a loopback address (127/8, ::1): a host talking to
    itself over its loopback interface, where loopback and equal endpoints are the norm."""
    src, dst = np.asarray(ctx.col("src")), np.asarray(ctx.col("dst"))
    v4 = ctx.col("l3") == 4
    v4_loop = v4 & (src[:, 12] == 127) & (dst[:, 12] == 127)
    v6_loop = ~v4 & (src == _V6_LOOPBACK).all(axis=1) & (dst == _V6_LOOPBACK).all(axis=1)
    return v4_loop | v6_loop


# -- dissection --------------------------------------------------------------------------
def dissects(ctx: RuleContext) -> Indices:
    """Packets the reader could not dissect because a header is bad or cut short would
    otherwise escape every other rule (their fields are unknown)."""
    from pytrafgen.capture import STATUS_NAMES

    status = ctx.col("status")
    judged = [STATUS_NAMES.index(n) for n in ("ok", "truncated", "bad_header", "fragment") if n in STATUS_NAMES]
    bad = [STATUS_NAMES.index(n) for n in ("truncated", "bad_header") if n in STATUS_NAMES]
    return result(np.isin(status, judged), np.isin(status, bad))


# -- IPv4 ---------------------------------------------------------------------------------
def _ip4(ctx: RuleContext) -> np.ndarray:
    return ctx.col("l3") == 4


def ip4_version_ihl(ctx: RuleContext) -> Indices:
    b, ok = read_u8(ctx.col("data"), l3_start(ctx), frame_end(ctx))
    return result(_ip4(ctx), ~ok | (b >> 4 != 4) | ((b & 0x0F) < 5))


def ip4_total_length(ctx: RuleContext) -> Indices:
    total = ctx.col("ip_total_len").astype(np.int64)
    available = ctx.col("wirelen").astype(np.int64) - ctx.col("l3_off").astype(np.int64)
    hdr = ctx.col("ip_hdr_len").astype(np.int64)
    return result(_ip4(ctx), (total < hdr) | (total > available))


def ip4_ttl(ctx: RuleContext) -> Indices:
    return result(_ip4(ctx), ctx.col("ttl") == 0)


def ip4_reserved_flag(ctx: RuleContext) -> Indices:
    return result(_ip4(ctx), (ctx.col("ip_flags") & 0x04) != 0)


def ip4_fragment(ctx: RuleContext) -> Indices:
    flags = ctx.col("ip_flags")
    df, mf = (flags & 0x02) != 0, (flags & 0x01) != 0
    offset = ctx.col("frag_offset").astype(np.int64)
    payload = ctx.col("ip_total_len").astype(np.int64) - ctx.col("ip_hdr_len").astype(np.int64)
    bad = (df & (mf | (offset > 0))) | (offset * 8 + payload > 65535) | (mf & (payload % 8 != 0))
    return result(_ip4(ctx), bad)


def _v4_octets(addr: np.ndarray) -> np.ndarray:
    return np.asarray(addr)[:, 12:16]


def ip4_source(ctx: RuleContext) -> Indices:
    a = _v4_octets(ctx.col("src"))
    unspecified = (a == 0).all(axis=1)
    dhcp = unspecified & (ctx.col("proto") == 17) & (ctx.col("sport") == 68) & (ctx.col("dport") == 67)
    bad = (a[:, 0] >= 224) | (a[:, 0] == 127) | ((a[:, 0] == 0) & ~dhcp)
    return result(_ip4(ctx) & ~on_loopback(ctx), bad)


def ip4_destination(ctx: RuleContext) -> Indices:
    a = _v4_octets(ctx.col("dst"))
    return result(_ip4(ctx) & ~on_loopback(ctx), (a[:, 0] == 0) | (a[:, 0] == 127))


def ip4_header_checksum(ctx: RuleContext) -> Indices:
    hdr = ctx.col("ip_hdr_len").astype(np.int64)
    start = l3_start(ctx)
    fits = _ip4(ctx) & (hdr >= 20) & (start + hdr <= frame_end(ctx))
    ok = np.ones(ctx.n_packets, bool)
    idx = np.flatnonzero(fits)
    ok[idx] = fold(ones_sum(ctx.col("data"), start[idx], hdr[idx])) == 0xFFFF
    return result(fits, ~ok)


def ip4_distinct_endpoints(ctx: RuleContext) -> Indices:
    same = (ctx.col("src") == ctx.col("dst")).all(axis=1)
    return result(_ip4(ctx) & ~on_loopback(ctx), same)


def options_well_formed(data: np.ndarray, start: int, end: int) -> bool:
    """Type-length-value options between start and end: kinds 0 (end) and 1 (no-op) are one
    byte; every other option's length byte is ≥ 2 and stays inside the header."""
    i = start
    while i < end:
        kind = int(data[i])
        if kind == 0:
            return True
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or int(data[i + 1]) < 2 or i + int(data[i + 1]) > end:
            return False
        i += int(data[i + 1])
    return True


def ip4_options(ctx: RuleContext) -> Indices:
    hdr = ctx.col("ip_hdr_len").astype(np.int64)
    start = l3_start(ctx)
    applicable = _ip4(ctx) & (hdr > 20) & (start + hdr <= frame_end(ctx))
    bad = np.zeros(ctx.n_packets, bool)
    data = ctx.col("data")
    for i in np.flatnonzero(applicable):
        bad[i] = not options_well_formed(data, int(start[i]) + 20, int(start[i] + hdr[i]))
    return result(applicable, bad)


# -- IPv6 ---------------------------------------------------------------------------------
def _ip6(ctx: RuleContext) -> np.ndarray:
    return ctx.col("l3") == 6


def ip6_version(ctx: RuleContext) -> Indices:
    b, ok = read_u8(ctx.col("data"), l3_start(ctx), frame_end(ctx))
    return result(_ip6(ctx), ~ok | (b >> 4 != 6))


def ip6_payload_length(ctx: RuleContext) -> Indices:
    payload, ok = read_u16(ctx.col("data"), l3_start(ctx) + 4, frame_end(ctx))
    available = ctx.col("wirelen").astype(np.int64) - ctx.col("l3_off").astype(np.int64) - 40
    return result(_ip6(ctx), ~ok | (payload.astype(np.int64) > available))


def ip6_hop_limit(ctx: RuleContext) -> Indices:
    return result(_ip6(ctx), ctx.col("ttl") == 0)


_V6_LOOPBACK = np.array([0] * 15 + [1], np.uint8)


def ip6_source(ctx: RuleContext) -> Indices:
    a = np.asarray(ctx.col("src"))
    return result(_ip6(ctx) & ~on_loopback(ctx), (a[:, 0] == 0xFF) | (a == _V6_LOOPBACK).all(axis=1))


def ip6_destination(ctx: RuleContext) -> Indices:
    a = np.asarray(ctx.col("dst"))
    return result(_ip6(ctx) & ~on_loopback(ctx), (a == 0).all(axis=1) | (a == _V6_LOOPBACK).all(axis=1))


# -- UDP ----------------------------------------------------------------------------------
def _udp(ctx: RuleContext) -> np.ndarray:
    return (ctx.col("l3") != 0) & (ctx.col("proto") == 17) & first_fragment(ctx)


def _udp_length(ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
    start = ctx.col("frame_off").astype(np.int64) + ctx.col("l4_off").astype(np.int64)
    return read_u16(ctx.col("data"), start + 4, frame_end(ctx))


def udp_length_matches_ip(ctx: RuleContext) -> Indices:
    length, ok = _udp_length(ctx)
    ip_payload = ctx.col("ip_total_len").astype(np.int64) - ctx.col("ip_hdr_len").astype(np.int64)
    applicable = _udp(ctx) & unfragmented(ctx)
    return result(applicable, ~ok | (length.astype(np.int64) != ip_payload))


def udp_length_minimum(ctx: RuleContext) -> Indices:
    length, ok = _udp_length(ctx)
    return result(_udp(ctx), ~ok | (length < 8))


def udp_destination_port(ctx: RuleContext) -> Indices:
    return result(_udp(ctx), ctx.col("dport") == 0)


def udp_checksum(ctx: RuleContext) -> Indices:
    applicable = _udp(ctx) & unfragmented(ctx) & whole_l4_captured(ctx)
    zero_v4 = (ctx.col("l4_csum") == 0) & (ctx.col("l3") == 4)  # "no checksum" is legal on IPv4
    applicable &= ~left_to_offload(ctx, applicable & ~zero_v4, 17)
    ok = l4_checksum_ok(ctx, applicable & ~zero_v4, np.full(ctx.n_packets, 17))
    return result(applicable, ~ok)


def _first_client_payload(ctx: RuleContext, proto: int) -> tuple[np.ndarray, list[bytes]]:
    """Flows of ``proto`` with client payload, and each one's first client payload bytes."""
    pl = ctx.col("payload_len")
    cand = np.flatnonzero((ctx.flow_id >= 0) & (ctx.direction == 0) & (pl > 0))
    cand = cand[ctx.flow_col("proto")[ctx.flow_id[cand]] == proto]
    # first such packet per flow (capture order: packet indices are in capture order)
    flows, first = np.unique(ctx.flow_id[cand], return_index=True)
    return flows, [ctx.payload(int(cand[k]))[:16] for k in first]


_HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ",
                 b"TRACE ")


def _service_matches(port: int, head: bytes, proto: int) -> bool | None:
    """Whether the first client bytes look like the well-known service; None: no opinion."""
    if proto == 6 and port in (80, 8080):
        return head.startswith(_HTTP_METHODS)
    if proto == 6 and port == 1883:
        return head[:1] == b"\x10"  # an MQTT session opens with CONNECT
    if proto == 17 and port == 53:
        return len(head) >= 12 and (head[2] & 0x80) == 0  # a DNS query, QR bit clear
    if proto == 17 and port == 5683:
        return len(head) >= 4 and head[0] >> 6 == 1  # CoAP version 1
    return None


def service_agreement(ctx: RuleContext, proto: int) -> Indices:
    flows, heads = _first_client_payload(ctx, proto)
    server_port = ctx.flow_col("server_port")
    applicable = np.zeros(ctx.n_flows, bool)
    bad = np.zeros(ctx.n_flows, bool)
    for f, head in zip(flows, heads, strict=True):
        verdict = _service_matches(int(server_port[f]), head, proto)
        if verdict is not None:
            applicable[f] = True
            bad[f] = not verdict
    return result(applicable, bad)


# -- ICMP ---------------------------------------------------------------------------------
_ICMP4_CODES: dict[int, set[int]] = {
    0: {0}, 3: set(range(16)), 4: {0}, 5: {0, 1, 2, 3}, 8: {0}, 9: {0, 16}, 10: {0},
    11: {0, 1}, 12: {0, 1, 2}, 13: {0}, 14: {0}, 40: set(range(6)), 42: {0}, 43: set(range(5)),
}
_ICMP6_CODES: dict[int, set[int]] = {
    1: set(range(8)), 2: {0}, 3: {0, 1}, 4: set(range(4)), 128: {0}, 129: {0}, 130: {0},
    131: {0}, 132: {0}, 133: {0}, 134: {0}, 135: {0}, 136: {0}, 137: {0}, 138: {0, 1, 255},
    139: {0, 1, 2}, 140: {0, 1, 2}, 141: {0}, 142: {0}, 143: {0},
}


def _icmp(ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
    proto = ctx.col("proto")
    v4 = (ctx.col("l3") == 4) & (proto == 1) & first_fragment(ctx)
    v6 = (ctx.col("l3") == 6) & (proto == 58) & first_fragment(ctx)
    return v4, v6


def _valid_pairs(types: np.ndarray, codes: np.ndarray, table: dict[int, set[int]]) -> np.ndarray:
    key = types.astype(np.int64) * 256 + codes.astype(np.int64)
    allowed = np.array(sorted(t * 256 + c for t, cs in table.items() for c in cs), np.int64)
    return np.isin(key, allowed)


def icmp_type_code(ctx: RuleContext) -> Indices:
    v4, v6 = _icmp(ctx)
    t, c = ctx.col("icmp_type"), ctx.col("icmp_code")
    bad = (v4 & ~_valid_pairs(t, c, _ICMP4_CODES)) | (v6 & ~_valid_pairs(t, c, _ICMP6_CODES))
    return result(v4 | v6, bad)


def icmp_checksum(ctx: RuleContext) -> Indices:
    v4, v6 = _icmp(ctx)
    applicable = (v4 | v6) & unfragmented(ctx) & whole_l4_captured(ctx)
    ok = l4_checksum_ok(ctx, applicable, np.where(v4, 1, 58))
    return result(applicable, ~ok)


def icmp_error_quotes_header(ctx: RuleContext) -> Indices:
    v4, v6 = _icmp(ctx)
    t = ctx.col("icmp_type")
    err4 = v4 & np.isin(t, [3, 4, 5, 11, 12])
    err6 = v6 & np.isin(t, [1, 2, 3, 4])
    quoted = ctx.col("frame_off").astype(np.int64) + ctx.col("l4_off").astype(np.int64) + 8
    b, ok = read_u8(ctx.col("data"), quoted, frame_end(ctx))
    available = frame_end(ctx) - quoted
    bad = ~ok | (err4 & ((b >> 4 != 4) | (available < 28))) | (err6 & ((b >> 4 != 6) | (available < 48)))
    return result(err4 | err6, bad)


def icmp_echo_reply_answers(ctx: RuleContext) -> Indices:
    v4, v6 = _icmp(ctx)
    t = ctx.col("icmp_type")
    request = (v4 & (t == 8)) | (v6 & (t == 128))
    reply = (v4 & (t == 0)) | (v6 & (t == 129))
    ident, _ = read_u16(ctx.col("data"), ctx.col("frame_off").astype(np.int64)
                        + ctx.col("l4_off").astype(np.int64) + 4, frame_end(ctx))
    seqn, _ = read_u16(ctx.col("data"), ctx.col("frame_off").astype(np.int64)
                       + ctx.col("l4_off").astype(np.int64) + 6, frame_end(ctx))
    seen: set[tuple[int, int, int]] = set()
    bad = np.zeros(ctx.n_packets, bool)
    for i in np.flatnonzero(request | reply):  # capture order
        key = (int(ctx.flow_id[i]), int(ident[i]), int(seqn[i]))
        if request[i]:
            seen.add(key)
        else:
            bad[i] = key not in seen
    return result(reply & (ctx.flow_id >= 0), bad)


Check = Callable[[RuleContext], Indices]

# rules by protocol name (TCP's are in rules_tcp.TCP_RULES)
L3L4_RULES: dict[str, list[tuple[str, str, str, Check]]] = {
    "ipv4": [
        ("IP-001", "packet", "the frame dissects: no bad or cut-short IPv4/IPv6/L4 header "
                             "(non-IP frames are not judged)", dissects),
        ("IP4-001", "packet", "version field is 4 and IHL is at least 5", ip4_version_ihl),
        ("IP4-002", "packet", "total length covers the header and fits the frame", ip4_total_length),
        ("IP4-003", "packet", "TTL is greater than 0", ip4_ttl),
        ("IP4-004", "packet", "the reserved (evil) flag bit is clear", ip4_reserved_flag),
        ("IP4-005", "packet", "fragment sanity: DF excludes MF/offset, offset+length ≤ 65535, "
                              "non-last fragments carry multiples of 8 bytes", ip4_fragment),
        ("IP4-006", "packet", "source is not multicast, broadcast, reserved, loopback or 0/8 "
                              "(0.0.0.0 allowed for DHCP; loopback to loopback allowed)", ip4_source),
        ("IP4-007", "packet", "destination is not 0/8 or loopback (loopback to loopback allowed)",
         ip4_destination),
        ("IP4-008", "packet", "header checksum verifies", ip4_header_checksum),
        ("IP4-009", "packet", "source and destination addresses differ (no LAND packet; loopback excepted)",
         ip4_distinct_endpoints),
        ("IP4-010", "packet", "IPv4 options are well-formed type-length-values", ip4_options),
    ],
    "ipv6": [
        ("IP6-001", "packet", "version field is 6", ip6_version),
        ("IP6-002", "packet", "payload length fits the frame", ip6_payload_length),
        ("IP6-003", "packet", "hop limit is greater than 0", ip6_hop_limit),
        ("IP6-004", "packet", "source is not multicast or loopback (::1 to ::1 allowed)", ip6_source),
        ("IP6-005", "packet", "destination is not unspecified (::) or loopback (::1 to ::1 allowed)",
         ip6_destination),
    ],
    "udp": [
        ("UDP-001", "packet", "UDP length equals the IP payload length", udp_length_matches_ip),
        ("UDP-002", "packet", "UDP length is at least 8", udp_length_minimum),
        ("UDP-003", "packet", "destination port is not 0", udp_destination_port),
        ("UDP-004", "packet", "checksum verifies (0 = none is legal on IPv4; a field left to checksum "
                              "offload is not judged)", udp_checksum),
        ("UDP-005", "flow", "well-known service port agrees with the first client datagram "
                            "(DNS 53, CoAP 5683)", lambda ctx: service_agreement(ctx, 17)),
    ],
    "icmp": [
        ("ICMP-001", "packet", "type/code pair is defined (ICMPv4 or ICMPv6)", icmp_type_code),
        ("ICMP-002", "packet", "checksum verifies (ICMPv6 with pseudo-header)", icmp_checksum),
        ("ICMP-003", "packet", "error messages quote the offending IP header", icmp_error_quotes_header),
        ("ICMP-004", "packet", "an echo reply answers an earlier request (same id and sequence)",
         icmp_echo_reply_answers),
    ],
}


__all__ = ["L3L4_RULES", "Check", "Indices", "l4_checksum_ok", "options_well_formed", "result", "service_agreement"]
