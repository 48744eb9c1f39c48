// Field records -> packet bytes, with lengths and checksums repaired.
//
// Two passes over the packets, both without allocation per packet: the first checks each
// record and computes its frame length, the second writes every frame into one buffer sized
// from the first pass's prefix sum. Records are untrusted (a generator may emit anything):
// every blob range is bounds-checked and a bad record gets a status code and no frame,
// never a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "checksum.hpp"

namespace pytrafgen::build {

enum Status : uint8_t {
    BUILT = 0,
    BAD_FLOW = 1,           // flow index out of range
    BAD_IP_VERSION = 2,     // flow ip_version is neither 4 nor 6
    UNKNOWN_PROTO = 3,      // flow proto is not TCP/UDP/ICMP/ICMPv6
    BLOB_RANGE = 4,         // an (offset, length) pair reaches past the blob
    TOO_LONG = 5,           // IP total length / IPv6 payload length would exceed 65535
    BAD_IP_OPTIONS = 6,     // IPv4 options > 40 bytes, or IPv6 extension chain malformed
    BAD_L4_OPTIONS = 7,     // TCP options > 40 bytes, or options on UDP/ICMP
    BAD_PAYLOAD = 8,        // payload_stored > payload_len
    BAD_DIRECTION = 9,      // direction neither 0 nor 1
    N_STATUS = 10,
};

inline const char* status_name(int s) {
    static const char* names[N_STATUS] = {
        "built", "bad_flow", "bad_ip_version", "unknown_proto", "blob_range", "too_long",
        "bad_ip_options", "bad_l4_options", "bad_payload", "bad_direction"};
    return s >= 0 && s < N_STATUS ? names[s] : "unknown";
}

constexpr uint16_t LINKTYPE_ETHERNET = 1;
constexpr uint16_t LINKTYPE_RAW = 101;
constexpr uint16_t TCP_ACK = 16;

// Per-packet columns of FieldRecords (pytrafgen/records.py), borrowed.
struct PacketColumns {
    size_t n = 0;
    const int32_t* flow = nullptr;
    const uint8_t* direction = nullptr;
    const uint8_t* ttl = nullptr;
    const uint8_t* tos = nullptr;
    const uint32_t* ip_id = nullptr;
    const uint8_t* ip_flags = nullptr;
    const uint16_t* frag_offset = nullptr;
    const uint32_t* flow_label = nullptr;
    const uint64_t* ip_opt_off = nullptr;
    const uint32_t* ip_opt_len = nullptr;
    const uint16_t* tcp_flags = nullptr;
    const uint32_t* seq = nullptr;
    const uint32_t* ack = nullptr;
    const uint16_t* window = nullptr;
    const uint16_t* urgent = nullptr;
    const uint8_t* icmp_type = nullptr;
    const uint8_t* icmp_code = nullptr;
    const uint32_t* icmp_rest = nullptr;
    const uint64_t* l4_opt_off = nullptr;
    const uint32_t* l4_opt_len = nullptr;
    const uint64_t* payload_off = nullptr;
    const uint32_t* payload_stored = nullptr;
    const uint32_t* payload_len = nullptr;
};

// Per-flow columns plus what the address plan and ISN draw decided, borrowed.
struct FlowColumns {
    size_t n = 0;
    const uint8_t* ip_version = nullptr;
    const uint8_t* proto = nullptr;
    const uint16_t* client_port = nullptr;
    const uint16_t* server_port = nullptr;
    const uint8_t* client_addr = nullptr;  // (n,16), IPv4 as IPv4-mapped IPv6
    const uint8_t* server_addr = nullptr;
    const uint8_t* client_mac = nullptr;   // (n,6); only read for Ethernet
    const uint8_t* server_mac = nullptr;
    const uint32_t* isn = nullptr;         // (n,2): client, server initial sequence numbers
};

// Derived values as a generator emitted them; a null column is recomputed even without repair.
struct RawDerived {
    const uint16_t* ip_hdr_len = nullptr;    // bytes; written as IHL = value / 4 (IPv4)
    const uint16_t* ip_total_len = nullptr;  // IPv4 total length; IPv6 40 + payload length
    const uint16_t* l4_hdr_len = nullptr;    // TCP header bytes; written as data offset = value / 4
    const uint16_t* udp_len = nullptr;
    const uint16_t* ip_csum = nullptr;       // as read big-endian from the header
    const uint16_t* l4_csum = nullptr;
};

struct Options {
    uint16_t linktype = LINKTYPE_ETHERNET;
    bool repair = true;
    const int64_t* order = nullptr;    // emit packets in this order (indices); null: 0..n-1
    size_t n_order = 0;
};

struct Result {
    std::unique_ptr<uint8_t[]> data;
    size_t data_len = 0;
    std::vector<uint64_t> frame_off;   // per emitted frame
    std::vector<uint32_t> frame_len;
    std::vector<int64_t> packet;       // record index of each emitted frame
    std::vector<uint8_t> status;       // per record packet (not per emitted frame)
};

namespace detail {

inline void put16(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

inline bool in_blob(uint64_t off, uint64_t len, size_t blob_len) {
    return off <= blob_len && len <= blob_len - off;
}

// Length of one IPv6 extension header from its first two bytes (its type, stored in the
// record in place of its next-header byte, and its length byte).
inline size_t ext_header_len(uint8_t type, uint8_t len_byte) {
    if (type == 44) return 8;                                    // fragment
    if (type == 51) return (static_cast<size_t>(len_byte) + 2) * 4;  // authentication header
    return (static_cast<size_t>(len_byte) + 1) * 8;             // hop-by-hop, routing, dest opts, ...
}

// Whether `len` bytes of stored extension headers walk to exactly their end.
inline bool ext_chain_ok(const uint8_t* p, size_t len) {
    size_t off = 0;
    while (off < len) {
        if (len - off < 2) return false;
        off += ext_header_len(p[off], p[off + 1]);
    }
    return off == len;
}

struct Layout {
    uint32_t ip_hdr = 0;   // IP header incl. options / extension headers
    uint32_t l4_hdr = 0;
    uint32_t frame = 0;    // link header + IP packet
};

// Check packet i and compute its layout; returns a Status.
inline uint8_t plan_packet(const PacketColumns& p, const FlowColumns& f, const uint8_t* blob,
                           size_t blob_len, uint32_t link_len, size_t i, Layout& out) {
    const int32_t fi = p.flow[i];
    if (fi < 0 || static_cast<size_t>(fi) >= f.n) return BAD_FLOW;
    if (p.direction[i] > 1) return BAD_DIRECTION;
    const uint8_t version = f.ip_version[fi];
    if (version != 4 && version != 6) return BAD_IP_VERSION;
    const uint8_t proto = f.proto[fi];
    if (csum::l4_checksum_offset(proto) < 0) return UNKNOWN_PROTO;
    const uint64_t ip_opt_len = p.ip_opt_len[i], l4_opt_len = p.l4_opt_len[i];
    if (!in_blob(p.ip_opt_off[i], ip_opt_len, blob_len) || !in_blob(p.l4_opt_off[i], l4_opt_len, blob_len) ||
        !in_blob(p.payload_off[i], p.payload_stored[i], blob_len))
        return BLOB_RANGE;
    if (p.payload_stored[i] > p.payload_len[i]) return BAD_PAYLOAD;
    if (version == 4) {
        if (ip_opt_len > 40) return BAD_IP_OPTIONS;
        out.ip_hdr = 20 + static_cast<uint32_t>((ip_opt_len + 3) & ~uint64_t{3});
    } else {
        if (ip_opt_len > 65535 || !ext_chain_ok(blob + p.ip_opt_off[i], ip_opt_len)) return BAD_IP_OPTIONS;
        out.ip_hdr = 40 + static_cast<uint32_t>(ip_opt_len);
    }
    if (proto == 6) {
        if (l4_opt_len > 40) return BAD_L4_OPTIONS;
        out.l4_hdr = 20 + static_cast<uint32_t>((l4_opt_len + 3) & ~uint64_t{3});
    } else {
        if (l4_opt_len != 0) return BAD_L4_OPTIONS;
        out.l4_hdr = 8;
    }
    const uint64_t ip_len = uint64_t{out.ip_hdr} + out.l4_hdr + p.payload_len[i];
    // IPv4 total length and IPv6 payload length (which excludes the fixed 40 bytes) are 16-bit.
    if ((version == 4 && ip_len > 65535) || (version == 6 && ip_len - 40 > 65535)) return TOO_LONG;
    out.frame = link_len + static_cast<uint32_t>(ip_len);
    return BUILT;
}

// Write packet i (already planned) at `w`; returns nothing, cannot fail.
inline void write_packet(const PacketColumns& p, const FlowColumns& f, const RawDerived& raw,
                         const uint8_t* blob, const Options& opt, size_t i, const Layout& lay,
                         uint8_t* w) {
    const int32_t fi = p.flow[i];
    const bool c2s = p.direction[i] == 0;
    const uint8_t version = f.ip_version[fi];
    const uint8_t proto = f.proto[fi];
    const uint8_t* src = (c2s ? f.client_addr : f.server_addr) + size_t(fi) * 16;
    const uint8_t* dst = (c2s ? f.server_addr : f.client_addr) + size_t(fi) * 16;

    if (opt.linktype == LINKTYPE_ETHERNET) {
        const uint8_t* smac = (c2s ? f.client_mac : f.server_mac) + size_t(fi) * 6;
        const uint8_t* dmac = (c2s ? f.server_mac : f.client_mac) + size_t(fi) * 6;
        std::memcpy(w, dmac, 6);
        std::memcpy(w + 6, smac, 6);
        put16(w + 12, version == 4 ? 0x0800 : 0x86DD);
        w += 14;
    }

    uint8_t* ip = w;
    const uint32_t ip_opt_len = p.ip_opt_len[i];
    const uint8_t* ip_opt = blob + p.ip_opt_off[i];
    const uint32_t ip_len = lay.ip_hdr + lay.l4_hdr + p.payload_len[i];
    const bool keep = !opt.repair;
    const uint8_t* src_ip;
    const uint8_t* dst_ip;
    if (version == 4) {
        const uint32_t ihl_bytes = keep && raw.ip_hdr_len ? raw.ip_hdr_len[i] : lay.ip_hdr;
        ip[0] = static_cast<uint8_t>(0x40 | ((ihl_bytes / 4) & 0x0f));
        ip[1] = p.tos[i];
        put16(ip + 2, keep && raw.ip_total_len ? raw.ip_total_len[i] : ip_len);
        put16(ip + 4, p.ip_id[i] & 0xffff);
        put16(ip + 6, ((uint32_t{p.ip_flags[i]} & 7) << 13) | (p.frag_offset[i] & 0x1fff));
        ip[8] = p.ttl[i];
        ip[9] = proto;
        ip[10] = ip[11] = 0;
        std::memcpy(ip + 12, src + 12, 4);
        std::memcpy(ip + 16, dst + 12, 4);
        std::memcpy(ip + 20, ip_opt, ip_opt_len);
        std::memset(ip + 20 + ip_opt_len, 0, lay.ip_hdr - 20 - ip_opt_len);  // EOL padding
        if (keep && raw.ip_csum) put16(ip + 10, raw.ip_csum[i]);
        else csum::store(ip + 10, csum::partial(ip, lay.ip_hdr));
        src_ip = ip + 12;
        dst_ip = ip + 16;
    } else {
        const uint32_t vtf = (6u << 28) | (uint32_t{p.tos[i]} << 20) | (p.flow_label[i] & 0xfffff);
        put32(ip, vtf);
        put16(ip + 4, keep && raw.ip_total_len ? uint32_t(raw.ip_total_len[i] - 40u) : ip_len - 40);
        ip[6] = ip_opt_len ? ip_opt[0] : proto;
        ip[7] = p.ttl[i];
        std::memcpy(ip + 8, src, 16);
        std::memcpy(ip + 24, dst, 16);
        // Stored extension headers carry their own type in their next-header byte; shift the
        // chain so each header names the one after it and the last names the L4 protocol.
        uint8_t* ext = ip + 40;
        std::memcpy(ext, ip_opt, ip_opt_len);
        size_t off = 0;
        while (off < ip_opt_len) {
            const size_t hl = ext_header_len(ip_opt[off], ip_opt[off + 1]);
            ext[off] = off + hl < ip_opt_len ? ip_opt[off + hl] : proto;
            off += hl;
        }
        src_ip = ip + 8;
        dst_ip = ip + 24;
    }

    uint8_t* l4 = ip + lay.ip_hdr;
    const uint16_t sport = c2s ? f.client_port[fi] : f.server_port[fi];
    const uint16_t dport = c2s ? f.server_port[fi] : f.client_port[fi];
    const uint32_t l4_len = lay.l4_hdr + p.payload_len[i];
    if (proto == 6) {
        const uint32_t* isn = f.isn + size_t(fi) * 2;
        const uint32_t own_isn = isn[c2s ? 0 : 1], peer_isn = isn[c2s ? 1 : 0];
        const uint16_t flags = p.tcp_flags[i];
        put16(l4, sport);
        put16(l4 + 2, dport);
        put32(l4 + 4, p.seq[i] + own_isn);
        // Without ACK the field is not an acknowledgement: records keep it as it was.
        put32(l4 + 8, (flags & TCP_ACK) ? p.ack[i] + peer_isn : p.ack[i]);
        const uint32_t doff_bytes = keep && raw.l4_hdr_len ? raw.l4_hdr_len[i] : lay.l4_hdr;
        l4[12] = static_cast<uint8_t>((((doff_bytes / 4) & 0x0f) << 4) | ((flags >> 8) & 0x0f));
        l4[13] = static_cast<uint8_t>(flags);
        put16(l4 + 14, p.window[i]);
        l4[16] = l4[17] = 0;
        put16(l4 + 18, p.urgent[i]);
        const uint32_t opt_len = p.l4_opt_len[i];
        std::memcpy(l4 + 20, blob + p.l4_opt_off[i], opt_len);
        std::memset(l4 + 20 + opt_len, 0, lay.l4_hdr - 20 - opt_len);
    } else if (proto == 17) {
        put16(l4, sport);
        put16(l4 + 2, dport);
        put16(l4 + 4, keep && raw.udp_len ? raw.udp_len[i] : l4_len);
        l4[6] = l4[7] = 0;
    } else {  // ICMP, ICMPv6
        l4[0] = p.icmp_type[i];
        l4[1] = p.icmp_code[i];
        l4[2] = l4[3] = 0;
        put32(l4 + 4, p.icmp_rest[i]);
    }
    uint8_t* pay = l4 + lay.l4_hdr;
    const uint32_t stored = p.payload_stored[i];
    std::memcpy(pay, blob + p.payload_off[i], stored);
    std::memset(pay + stored, 0, p.payload_len[i] - stored);

    uint8_t* csum_at = l4 + csum::l4_checksum_offset(proto);
    if (keep && raw.l4_csum) {
        put16(csum_at, raw.l4_csum[i]);
    } else {
        const uint64_t s = csum::l4_sum(version, src_ip, dst_ip, proto, l4, l4_len);
        csum::store(csum_at, s, proto == 17);
    }
}

}  // namespace detail

// Build every packet (in `opt.order` if given) into one buffer. Bad records get a status and
// no frame. Call without the GIL: touches only the borrowed arrays and its own result.
inline Result build(const PacketColumns& p, const FlowColumns& f, const uint8_t* blob, size_t blob_len,
                    const RawDerived& raw, const Options& opt) {
    Result r;
    const uint32_t link_len = opt.linktype == LINKTYPE_ETHERNET ? 14 : 0;
    const size_t n_emit = opt.order ? opt.n_order : p.n;
    r.status.assign(p.n, BUILT);
    std::vector<detail::Layout> layout(n_emit);
    std::vector<uint8_t> planned(n_emit);
    size_t total = 0, n_ok = 0;
    for (size_t k = 0; k < n_emit; ++k) {
        const size_t i = opt.order ? static_cast<size_t>(opt.order[k]) : k;
        const uint8_t s = detail::plan_packet(p, f, blob, blob_len, link_len, i, layout[k]);
        r.status[i] = s;
        planned[k] = s == BUILT;
        if (s == BUILT) {
            total += layout[k].frame;
            ++n_ok;
        }
    }
    r.data.reset(new uint8_t[total ? total : 1]);
    r.data_len = total;
    r.frame_off.resize(n_ok);
    r.frame_len.resize(n_ok);
    r.packet.resize(n_ok);
    size_t pos = 0, j = 0;
    for (size_t k = 0; k < n_emit; ++k) {
        if (!planned[k]) continue;
        const size_t i = opt.order ? static_cast<size_t>(opt.order[k]) : k;
        const uint32_t flen = layout[k].frame;
        detail::write_packet(p, f, raw, blob, opt, i, layout[k], r.data.get() + pos);
        r.frame_off[j] = pos;
        r.frame_len[j] = flen;
        r.packet[j] = static_cast<int64_t>(i);
        pos += flen;
        ++j;
    }
    return r;
}

}  // namespace pytrafgen::build
