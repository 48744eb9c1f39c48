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
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "checksum.hpp"
#include "columns.hpp"

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

// Per-packet columns of FieldRecords (pytrafgen/records.py, columns.hpp), borrowed.
struct PacketColumns : RecordPacketView {
    size_t n = 0;
};

// Per-flow columns plus what the address plan and ISN draw decided, borrowed.
struct FlowColumns : RecordFlowView {  // `label` is not read
    size_t n = 0;
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

// Uninitialised memory for a large output. Big buffers are anonymous mappings advised to use
// transparent huge pages: first-touch page faults, which dominate the build on virtual
// machines when they come 4 KiB at a time, then come 2 MiB at a time.
class Buffer {
public:
    Buffer() = default;
    explicit Buffer(size_t bytes) {
#if defined(__linux__)
        constexpr size_t huge = size_t{1} << 21;
        if (bytes >= huge) {
            const size_t len = bytes + huge;  // room to align the start to a huge page
            void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (base != MAP_FAILED) {
                const uintptr_t aligned = (reinterpret_cast<uintptr_t>(base) + huge - 1) & ~(uintptr_t{huge} - 1);
                madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);
                base_ = base;
                mapped_ = len;
                ptr_ = reinterpret_cast<uint8_t*>(aligned);
                return;
            }
        }
#endif
        base_ = std::malloc(bytes ? bytes : 1);
        if (!base_) throw std::bad_alloc();
        ptr_ = static_cast<uint8_t*>(base_);
    }
    Buffer(Buffer&& o) noexcept { swap(o); }
    Buffer& operator=(Buffer&& o) noexcept {
        Buffer tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() {
        if (!base_) return;
#if defined(__linux__)
        if (mapped_) {
            munmap(base_, mapped_);
            return;
        }
#endif
        std::free(base_);
    }
    template <class T>
    T* as() const { return reinterpret_cast<T*>(ptr_); }

private:
    void swap(Buffer& o) noexcept {
        std::swap(base_, o.base_);
        std::swap(ptr_, o.ptr_);
        std::swap(mapped_, o.mapped_);
    }
    void* base_ = nullptr;
    uint8_t* ptr_ = nullptr;
    size_t mapped_ = 0;
};

struct Result {
    Buffer data;         // uint8, data_len bytes: the frames, back to back
    size_t data_len = 0;
    size_t n_frames = 0;
    Buffer frame_off;    // uint64 per emitted frame
    Buffer frame_len;    // uint32 per emitted frame
    Buffer packet;       // int64 per emitted frame: its record packet
    Buffer status;       // uint8 per record packet (0 also for packets not in `order`)
};

namespace detail {

// Big-endian stores as single moves (byte-by-byte stores get merged by the compiler into wide
// stack temporaries whose reload then stalls on store forwarding).
inline uint16_t to_big16(uint16_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}
inline uint32_t to_big32(uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}
inline uint64_t to_big64(uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}
inline void put16(uint8_t* p, uint32_t v) {
    const uint16_t b = to_big16(static_cast<uint16_t>(v));
    std::memcpy(p, &b, 2);
}
inline void put32(uint8_t* p, uint32_t v) {
    const uint32_t b = to_big32(v);
    std::memcpy(p, &b, 4);
}
inline void put64(uint8_t* p, uint64_t v) {
    const uint64_t b = to_big64(v);
    std::memcpy(p, &b, 8);
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

// Write packet i (already planned) at `w`; cannot fail. Checksums are summed from the values
// written (header fields as big-endian integers) and from the blob bytes copied (natively).
inline void write_packet(const PacketColumns& p, const FlowColumns& f, const RawDerived& raw,
                         const uint8_t* blob, const Options& opt, size_t i, const Layout& lay,
                         uint8_t* w) {
    const int32_t fi = p.flow[i];
    const bool c2s = p.direction[i] == 0;
    const uint8_t version = f.ip_version[fi];
    const uint8_t proto = f.proto[fi];
    const uint8_t* src = (c2s ? f.client_addr : f.server_addr) + size_t(fi) * 16;
    const uint8_t* dst = (c2s ? f.server_addr : f.client_addr) + size_t(fi) * 16;
    const bool keep = !opt.repair;

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
    uint64_t addr_sum;  // native sum of both addresses, for the IPv4 header and pseudo-headers
    if (version == 4) {
        const uint32_t ihl_bytes = keep && raw.ip_hdr_len ? raw.ip_hdr_len[i] : lay.ip_hdr;
        const uint32_t w0 = 0x4000u | (((ihl_bytes / 4) & 0x0f) << 8) | p.tos[i];
        const uint32_t total = keep && raw.ip_total_len ? raw.ip_total_len[i] : ip_len;
        const uint32_t id = p.ip_id[i] & 0xffff;
        const uint32_t frag = ((uint32_t{p.ip_flags[i]} & 7) << 13) | (p.frag_offset[i] & 0x1fff);
        const uint32_t ttl_proto = (uint32_t{p.ttl[i]} << 8) | proto;
        put64(ip, (uint64_t{w0} << 48) | (uint64_t{total & 0xffff} << 32) | (id << 16) | frag);
        put32(ip + 8, ttl_proto << 16);  // TTL, protocol; checksum written below
        std::memcpy(ip + 12, src + 12, 4);
        std::memcpy(ip + 16, dst + 12, 4);
        std::memcpy(ip + 20, ip_opt, ip_opt_len);
        std::memset(ip + 20 + ip_opt_len, 0, lay.ip_hdr - 20 - ip_opt_len);  // EOL padding
        addr_sum = csum::partial(dst + 12, 4, csum::partial(src + 12, 4));
        if (keep && raw.ip_csum) {
            put16(ip + 10, raw.ip_csum[i]);
        } else {
            const uint64_t be = uint64_t{w0} + (total & 0xffff) + id + frag + ttl_proto +
                                csum::native_to_be(csum::partial(ip_opt, ip_opt_len, addr_sum));
            put16(ip + 10, csum::finish_be(be));
        }
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
        addr_sum = csum::partial(dst, 16, csum::partial(src, 16));
    }

    uint8_t* l4 = ip + lay.ip_hdr;
    const uint32_t sport = c2s ? f.client_port[fi] : f.server_port[fi];
    const uint32_t dport = c2s ? f.server_port[fi] : f.client_port[fi];
    const uint32_t l4_len = lay.l4_hdr + p.payload_len[i];
    uint64_t be;           // header fields as big-endian 16-bit integers
    uint64_t native = 0;   // bytes copied from the blob
    if (proto == 6) {
        const uint32_t* isn = f.isn + size_t(fi) * 2;
        const uint32_t flags = p.tcp_flags[i];
        const uint32_t seq = p.seq[i] + isn[c2s ? 0 : 1];
        // Without ACK the field is not an acknowledgement: records keep it as it was.
        const uint32_t ack = (flags & TCP_ACK) ? p.ack[i] + isn[c2s ? 1 : 0] : p.ack[i];
        const uint32_t doff_bytes = keep && raw.l4_hdr_len ? raw.l4_hdr_len[i] : lay.l4_hdr;
        const uint32_t word12 = (((doff_bytes / 4) & 0x0f) << 12) | (flags & 0x0fff);
        const uint32_t window = p.window[i], urgent = p.urgent[i];
        put64(l4, (uint64_t{sport} << 48) | (uint64_t{dport} << 32) | seq);
        put64(l4 + 8, (uint64_t{ack} << 32) | (word12 << 16) | window);
        put32(l4 + 16, urgent);  // checksum (written last) and urgent pointer
        const uint32_t opt_len = p.l4_opt_len[i];
        const uint8_t* opt_src = blob + p.l4_opt_off[i];
        std::memcpy(l4 + 20, opt_src, opt_len);
        std::memset(l4 + 20 + opt_len, 0, lay.l4_hdr - 20 - opt_len);
        be = uint64_t{sport} + dport + (seq >> 16) + (seq & 0xffff) + (ack >> 16) + (ack & 0xffff) + word12 +
             window + urgent;
        native = csum::partial(opt_src, opt_len);
    } else if (proto == 17) {
        const uint32_t ulen = keep && raw.udp_len ? raw.udp_len[i] : l4_len;
        put16(l4, sport);
        put16(l4 + 2, dport);
        put16(l4 + 4, ulen);
        be = uint64_t{sport} + dport + (ulen & 0xffff);
    } else {  // ICMP, ICMPv6
        const uint32_t type_code = (uint32_t{p.icmp_type[i]} << 8) | p.icmp_code[i];
        const uint32_t rest = p.icmp_rest[i];
        put16(l4, type_code);
        put32(l4 + 4, rest);
        be = uint64_t{type_code} + (rest >> 16) + (rest & 0xffff);
    }
    uint8_t* pay = l4 + lay.l4_hdr;
    const uint32_t stored = p.payload_stored[i];
    const uint8_t* pay_src = blob + p.payload_off[i];
    std::memcpy(pay, pay_src, stored);
    std::memset(pay + stored, 0, p.payload_len[i] - stored);

    uint8_t* csum_at = l4 + csum::l4_checksum_offset(proto);
    if (keep && raw.l4_csum) {
        put16(csum_at, raw.l4_csum[i]);
        return;
    }
    // Options and payload start at even offsets of the segment, and an odd-length one is
    // followed by zero padding on the wire, which is what partial() assumes for the odd byte.
    native = csum::partial(pay_src, stored, native);
    if (csum::uses_pseudo_header(proto)) {
        be += uint64_t{proto} + (l4_len >> 16) + (l4_len & 0xffff);
        native += addr_sum;
    }
    uint16_t c = csum::finish_be(be + csum::native_to_be(native));
    if (proto == 17 && c == 0) c = 0xffff;  // RFC 768: zero means "no checksum"
    put16(csum_at, c);
}

}  // namespace detail

// Build every packet (in `opt.order` if given) into one buffer. Bad records get a status and
// no frame. Call without the GIL: touches only the borrowed arrays and its own result.
inline Result build(const PacketColumns& p, const FlowColumns& f, const uint8_t* blob, size_t blob_len,
                    const RawDerived& raw, const Options& opt) {
    Result r;
    // Hardening (issue 9, fuzz_build): an empty blob may come as a null pointer, and
    // memcpy(dst, nullptr, 0) is undefined behaviour; point it at an empty array instead.
    static const uint8_t no_bytes[1] = {0};
    if (!blob) blob = no_bytes;
    const uint32_t link_len = opt.linktype == LINKTYPE_ETHERNET ? 14 : 0;
    const size_t n_emit = opt.order ? opt.n_order : p.n;
    r.status = Buffer(p.n);
    uint8_t* status = r.status.as<uint8_t>();
    if (opt.order) std::memset(status, BUILT, p.n);
    // pass 1: check every record and size the output
    size_t total = 0, n_ok = 0;
    for (size_t k = 0; k < n_emit; ++k) {
        const size_t i = opt.order ? static_cast<size_t>(opt.order[k]) : k;
        detail::Layout lay;
        const uint8_t s = detail::plan_packet(p, f, blob, blob_len, link_len, i, lay);
        status[i] = s;
        if (s == BUILT) {
            total += lay.frame;
            ++n_ok;
        }
    }
    r.data = Buffer(total);
    r.data_len = total;
    r.n_frames = n_ok;
    r.frame_off = Buffer(n_ok * sizeof(uint64_t));
    r.frame_len = Buffer(n_ok * sizeof(uint32_t));
    r.packet = Buffer(n_ok * sizeof(int64_t));
    uint8_t* data = r.data.as<uint8_t>();
    uint64_t* frame_off = r.frame_off.as<uint64_t>();
    uint32_t* frame_len = r.frame_len.as<uint32_t>();
    int64_t* packet = r.packet.as<int64_t>();
    // pass 2: lay out again (cheaper than storing layouts) and write
    size_t pos = 0, j = 0;
    for (size_t k = 0; k < n_emit; ++k) {
        const size_t i = opt.order ? static_cast<size_t>(opt.order[k]) : k;
        if (status[i] != BUILT) continue;
        detail::Layout lay;
        detail::plan_packet(p, f, blob, blob_len, link_len, i, lay);
        detail::write_packet(p, f, raw, blob, opt, i, lay, data + pos);
        frame_off[j] = pos;
        frame_len[j] = lay.frame;
        packet[j] = static_cast<int64_t>(i);
        pos += lay.frame;
        ++j;
    }
    return r;
}

}  // namespace pytrafgen::build
