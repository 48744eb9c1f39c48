// L2–L4 dissector: one frame → one row of packet fields (docs/architecture.md §1).
//
// L2: Ethernet (802.1Q / 802.1ad / QinQ tags, PPPoE session), Linux cooked v1/v2, raw IP,
// BSD NULL / LOOP. L3: IPv4 (options), IPv6 (hop-by-hop, routing, fragment, destination
// options, AH). L4: TCP, UDP, ICMP, ICMPv6. Every read is bounds-checked against the
// captured length; a frame that ends inside a header gets a status, never a stray read.
// No Python here: a libFuzzer harness can include this header directly.
#pragma once

#include <cstdint>
#include <cstring>

#include "pcap.hpp"

namespace pytrafgen {

enum PacketStatus : uint8_t {
    kStatusOk = 0,               // dissected (L4 fields filled where the protocol is known)
    kStatusNonIp = 1,            // L2 understood, but it does not carry IPv4/IPv6 (ARP, LLC, …)
    kStatusTruncated = 2,        // the captured bytes end inside a header
    kStatusBadHeader = 3,        // a header contradicts itself (version, lengths, offsets)
    kStatusFragment = 4,         // a non-first IP fragment: L3 fields only
    kStatusUnsupportedLink = 5,  // link type this dissector does not know
    kStatusCount
};
inline const char* status_name(int s) {
    static const char* const names[kStatusCount] = {"ok",       "non_ip",   "truncated",
                                                    "bad_header", "fragment", "unsupported_linktype"};
    return (s >= 0 && s < kStatusCount) ? names[s] : "unknown";
}

// ip_flags bits
constexpr uint8_t kIpFlagMF = 1, kIpFlagDF = 2, kIpFlagReserved = 4, kIpFlagFragment = 8;

struct PacketFields {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t ip_id, flow_label, seq, ack, payload_off, payload_len, payload_wirelen;
    uint16_t l3_off, ip_hdr_len, ip_total_len, frag_offset, ip_csum, l4_off, l4_hdr_len;
    uint16_t sport, dport, tcp_flags, window, urgent, l4_csum;
    uint8_t status, l3, proto, ttl, tos, ip_flags, icmp_type, icmp_code;
};

namespace detail {

inline void map_ipv4(uint8_t out[16], const uint8_t* a) {
    std::memset(out, 0, 10);
    out[10] = 0xFF;
    out[11] = 0xFF;
    std::memcpy(out + 12, a, 4);
}

// L4 header at `l4` (frame offset). `cap_end`: end of the captured IP packet (frame length
// capped by the IP length); `ip_end`: end by the IP header's length; `wire_l4`: L4 bytes by
// the IP header.
inline void dissect_l4(const uint8_t* f, uint32_t caplen, uint32_t l4, uint32_t ip_end,
                       uint32_t wire_l4, PacketFields& o) {
    o.l4_off = uint16_t(l4);
    uint32_t cap_end = ip_end < caplen ? ip_end : caplen;
    uint32_t need;
    switch (o.proto) {
        case 6: need = 20; break;
        case 17: need = 8; break;
        case 1: case 58: need = 8; break;
        default: need = 0; break;
    }
    if (need) {
        if (uint64_t(l4) + need > ip_end) { o.status = kStatusBadHeader; return; }
        if (uint64_t(l4) + need > caplen) { o.status = kStatusTruncated; return; }
    }
    const uint8_t* h = f + l4;
    uint32_t hdr = need;
    if (o.proto == 6) {
        hdr = uint32_t(h[12] >> 4) * 4;
        if (hdr < 20 || uint64_t(l4) + hdr > ip_end) { o.status = kStatusBadHeader; return; }
        if (uint64_t(l4) + hdr > caplen) { o.status = kStatusTruncated; return; }
        o.sport = rd_be16(h);
        o.dport = rd_be16(h + 2);
        o.seq = rd_be32(h + 4);
        o.ack = rd_be32(h + 8);
        o.tcp_flags = uint16_t((h[12] & 1u) << 8 | h[13]);
        o.window = rd_be16(h + 14);
        o.l4_csum = rd_be16(h + 16);
        o.urgent = rd_be16(h + 18);
    } else if (o.proto == 17) {
        o.sport = rd_be16(h);
        o.dport = rd_be16(h + 2);
        o.l4_csum = rd_be16(h + 6);
    } else if (need) {  // ICMP / ICMPv6: type, code, checksum, 4 bytes rest-of-header
        o.icmp_type = h[0];
        o.icmp_code = h[1];
        o.l4_csum = rd_be16(h + 2);
    }
    o.l4_hdr_len = uint16_t(hdr);
    o.payload_off = l4 + hdr;
    o.payload_len = cap_end - (l4 + hdr);
    o.payload_wirelen = wire_l4 > hdr ? wire_l4 - hdr : 0;
}

inline void dissect_ipv4(const uint8_t* f, uint32_t caplen, uint32_t off, PacketFields& o) {
    o.l3_off = uint16_t(off);
    if (uint64_t(off) + 20 > caplen) { o.status = kStatusTruncated; return; }
    const uint8_t* h = f + off;
    uint32_t ihl = uint32_t(h[0] & 15u) * 4;
    if ((h[0] >> 4) != 4 || ihl < 20) { o.status = kStatusBadHeader; return; }
    if (uint64_t(off) + ihl > caplen) { o.status = kStatusTruncated; return; }
    o.l3 = 4;
    o.tos = h[1];
    uint32_t total = rd_be16(h + 2);
    o.ip_total_len = uint16_t(total);
    o.ip_id = rd_be16(h + 4);
    uint16_t frag = rd_be16(h + 6);
    o.ttl = h[8];
    o.proto = h[9];
    o.ip_csum = rd_be16(h + 10);
    map_ipv4(o.src, h + 12);
    map_ipv4(o.dst, h + 16);
    o.ip_hdr_len = uint16_t(ihl);
    o.frag_offset = frag & 0x1FFFu;
    bool mf = frag & 0x2000u;
    o.ip_flags = uint8_t((mf ? kIpFlagMF : 0) | ((frag & 0x4000u) ? kIpFlagDF : 0) |
                         ((frag & 0x8000u) ? kIpFlagReserved : 0) |
                         ((mf || o.frag_offset) ? kIpFlagFragment : 0));
    // A total length of 0 is what segmentation offload leaves in captures taken on the
    // sending host: the captured frame is then the only length there is.
    if (total == 0) total = caplen - off;
    if (total < ihl) { o.status = kStatusBadHeader; return; }
    uint32_t ip_end = off + total;
    uint32_t l4 = off + ihl;
    if (o.frag_offset) {
        o.status = kStatusFragment;
        o.l4_off = uint16_t(l4);
        o.payload_off = l4;
        o.payload_len = (ip_end < caplen ? ip_end : caplen) - l4;
        o.payload_wirelen = total - ihl;
        return;
    }
    dissect_l4(f, caplen, l4, ip_end, total - ihl, o);
}

inline void dissect_ipv6(const uint8_t* f, uint32_t caplen, uint32_t off, PacketFields& o) {
    o.l3_off = uint16_t(off);
    if (uint64_t(off) + 40 > caplen) { o.status = kStatusTruncated; return; }
    const uint8_t* h = f + off;
    if ((h[0] >> 4) != 6) { o.status = kStatusBadHeader; return; }
    o.l3 = 6;
    o.tos = uint8_t((h[0] & 15u) << 4 | h[1] >> 4);
    o.flow_label = uint32_t(h[1] & 15u) << 16 | uint32_t(h[2]) << 8 | h[3];
    uint32_t plen = rd_be16(h + 4);
    uint32_t total = 40 + plen;
    o.ip_total_len = uint16_t(total > 0xFFFFu ? 0xFFFFu : total);
    o.ttl = h[7];
    std::memcpy(o.src, h + 8, 16);
    std::memcpy(o.dst, h + 24, 16);
    if (plen == 0) total = caplen - off;  // jumbogram or offload: trust the capture
    uint32_t ip_end = off + total;
    uint32_t nh = h[6];
    uint32_t hdr = 40;
    bool non_first_fragment = false;
    // Extension headers; each iteration consumes ≥ 8 bytes, so the loop is bounded.
    for (;;) {
        if (nh != 0 && nh != 43 && nh != 44 && nh != 60 && nh != 51) break;
        uint32_t at = off + hdr;
        if (uint64_t(at) + 8 > ip_end) { o.proto = uint8_t(nh); o.ip_hdr_len = uint16_t(hdr); o.status = kStatusBadHeader; return; }
        if (uint64_t(at) + 8 > caplen) { o.proto = uint8_t(nh); o.ip_hdr_len = uint16_t(hdr); o.status = kStatusTruncated; return; }
        const uint8_t* e = f + at;
        uint32_t len;
        if (nh == 44) {
            uint16_t fo = rd_be16(e + 2);
            o.frag_offset = fo >> 3;
            o.ip_id = rd_be32(e + 4);
            bool mf = fo & 1u;
            if (mf) o.ip_flags |= kIpFlagMF;
            if (mf || o.frag_offset) o.ip_flags |= kIpFlagFragment;
            non_first_fragment = o.frag_offset != 0;
            len = 8;
        } else if (nh == 51) {
            len = (uint32_t(e[1]) + 2) * 4;
        } else {
            len = (uint32_t(e[1]) + 1) * 8;
        }
        // Hardening (issue 9, fuzz_reader invariant): l4_off and ip_hdr_len are 16-bit columns;
        // a chain past 64 KiB (possible with payload length 0 and a 256 KiB frame) wrapped them
        // and pointed the tokenizer at the wrong bytes.
        if (uint64_t(at) + len > 0xFFFFu) { o.proto = uint8_t(nh); o.ip_hdr_len = uint16_t(hdr); o.status = kStatusBadHeader; return; }
        if (uint64_t(at) + len > ip_end) { o.proto = uint8_t(nh); o.ip_hdr_len = uint16_t(hdr); o.status = kStatusBadHeader; return; }
        if (uint64_t(at) + len > caplen) { o.proto = uint8_t(nh); o.ip_hdr_len = uint16_t(hdr); o.status = kStatusTruncated; return; }
        nh = e[0];
        hdr += len;
        if (non_first_fragment) break;  // what follows is a fragment of the upper layer
    }
    o.proto = uint8_t(nh);
    o.ip_hdr_len = uint16_t(hdr);
    uint32_t l4 = off + hdr;
    if (non_first_fragment) {
        o.status = kStatusFragment;
        o.l4_off = uint16_t(l4);
        o.payload_off = l4;
        o.payload_len = (ip_end < caplen ? ip_end : caplen) - l4;
        o.payload_wirelen = total - hdr;
        return;
    }
    dissect_l4(f, caplen, l4, ip_end, total - hdr, o);
}

inline void dissect_ethertype(const uint8_t* f, uint32_t caplen, uint32_t off, uint16_t type,
                              PacketFields& o) {
    // VLAN tags (802.1Q, 802.1ad, the old QinQ 0x9100), at most a few deep.
    for (int tags = 0; tags < 8 && (type == 0x8100 || type == 0x88A8 || type == 0x9100); ++tags) {
        if (uint64_t(off) + 4 > caplen) { o.status = kStatusTruncated; return; }
        type = rd_be16(f + off + 2);
        off += 4;
    }
    if (type == 0x8864) {  // PPPoE session: 6-byte header, then the 2-byte PPP protocol
        if (uint64_t(off) + 8 > caplen) { o.status = kStatusTruncated; return; }
        uint16_t ppp = rd_be16(f + off + 6);
        off += 8;
        type = ppp == 0x0021 ? 0x0800 : ppp == 0x0057 ? 0x86DD : 0;
    }
    if (type == 0x0800) dissect_ipv4(f, caplen, off, o);
    else if (type == 0x86DD) dissect_ipv6(f, caplen, off, o);
    else o.status = kStatusNonIp;
}

inline void dissect_raw_ip(const uint8_t* f, uint32_t caplen, uint32_t off, PacketFields& o) {
    if (off >= caplen) { o.status = kStatusTruncated; return; }
    uint8_t v = f[off] >> 4;
    if (v == 4) dissect_ipv4(f, caplen, off, o);
    else if (v == 6) dissect_ipv6(f, caplen, off, o);
    else o.status = kStatusNonIp;
}

// BSD address families as NULL/LOOP headers carry them (IPv6 differs between the BSDs).
inline void dissect_af(const uint8_t* f, uint32_t caplen, uint32_t af, PacketFields& o) {
    if (af == 2) dissect_ipv4(f, caplen, 4, o);
    else if (af == 10 || af == 24 || af == 28 || af == 30) dissect_ipv6(f, caplen, 4, o);
    else o.status = kStatusNonIp;
}

}  // namespace detail

inline void dissect_frame(const uint8_t* f, uint32_t caplen, uint16_t linktype, PacketFields& o) {
    o = PacketFields{};
    switch (linktype) {
        case 1:  // Ethernet
            if (caplen < 14) { o.status = kStatusTruncated; return; }
            detail::dissect_ethertype(f, caplen, 14, rd_be16(f + 12), o);
            return;
        case 113:  // Linux cooked v1: protocol at 14; ARPHRD_NETLINK frames are not IP
            if (caplen < 16) { o.status = kStatusTruncated; return; }
            if (rd_be16(f + 2) == 824) { o.status = kStatusNonIp; return; }
            detail::dissect_ethertype(f, caplen, 16, rd_be16(f + 14), o);
            return;
        case 276:  // Linux cooked v2: protocol first, 20-byte header
            if (caplen < 20) { o.status = kStatusTruncated; return; }
            if (rd_be16(f + 8) == 824) { o.status = kStatusNonIp; return; }
            detail::dissect_ethertype(f, caplen, 20, rd_be16(f), o);
            return;
        case 0: {  // BSD NULL: address family in the capturing host's byte order
            if (caplen < 4) { o.status = kStatusTruncated; return; }
            uint32_t af = rd_le32(f);
            if (af > 0xFFFFu) af = rd_be32(f);
            detail::dissect_af(f, caplen, af, o);
            return;
        }
        case 108:  // OpenBSD LOOP: address family in network byte order
            if (caplen < 4) { o.status = kStatusTruncated; return; }
            detail::dissect_af(f, caplen, rd_be32(f), o);
            return;
        case 101: case 12: case 14:  // raw IP (12 and 14 are DLT_RAW on some systems)
            detail::dissect_raw_ip(f, caplen, 0, o);
            return;
        case 228: detail::dissect_ipv4(f, caplen, 0, o); return;
        case 229: detail::dissect_ipv6(f, caplen, 0, o); return;
        default: o.status = kStatusUnsupportedLink; return;
    }
}

}  // namespace pytrafgen
