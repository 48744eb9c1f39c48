// Bidirectional 5-tuple flow assembly over packet columns (docs/architecture.md §2).
//
// Key: (l3, proto, {address, port} of both ends, unordered); ICMP and other port-less
// protocols key on addresses + proto (their ports are 0). A packet opens a new flow when no
// flow holds its key, when the flow has been idle longer than the timeout, when the flow
// reached the maximum length, or when it is a TCP SYN without ACK and the flow already saw
// a FIN or RST (port reuse). The client is the sender of the flow's first packet, except
// when that packet is a SYN+ACK (the SYN was not captured): then its receiver; a flow that
// continues a connection cut by the length limit or the idle timeout keeps the roles of the
// flow before it; a TCP flow first seen mid-connection (no SYN) has the service port's side
// (well-known against non-well-known, registered against ephemeral) as its server.
#pragma once

#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "columns.hpp"

namespace pytrafgen {

struct FlowInput {
    size_t n = 0;
    const uint8_t* status = nullptr;
    const uint8_t* l3 = nullptr;
    const uint8_t* proto = nullptr;
    const uint8_t* src = nullptr;  // n × 16
    const uint8_t* dst = nullptr;  // n × 16
    const uint16_t* sport = nullptr;
    const uint16_t* dport = nullptr;
    const uint16_t* tcp_flags = nullptr;
    const int64_t* ts_ns = nullptr;
    const uint32_t* wirelen = nullptr;
};

// The FlowTable's columns (columns.hpp): per packet flow_id (-1: not in a flow) and
// direction (0 client→server, 1 server→client); per flow the rest (addresses F × 16).
struct FlowOutput {
    PYTRAFGEN_FLOW_PACKET_COLUMNS(PYTRAFGEN_COLUMN_VECTOR)
    PYTRAFGEN_FLOW_COLUMNS(PYTRAFGEN_COLUMN_VECTOR)
};

namespace detail {

struct FlowKey {
    uint8_t a[16], b[16];
    uint16_t pa, pb;
    uint8_t proto, l3;
    bool operator==(const FlowKey& o) const { return std::memcmp(this, &o, sizeof(FlowKey)) == 0; }
};
static_assert(sizeof(FlowKey) == 38, "FlowKey must have no padding: it is hashed and compared as bytes");

struct FlowKeyHash {
    size_t operator()(const FlowKey& k) const {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&k);
        uint64_t h = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i + 8 <= sizeof(FlowKey); i += 8) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
            h ^= h >> 31;
        }
        uint64_t tail = 0;
        std::memcpy(&tail, p + 32, 6);  // pa, pb, proto, l3
        h = (h ^ tail) * 0x94D049BB133111EBull;
        return size_t(h ^ (h >> 29));
    }
};

// (addr, port) ordering that makes the key independent of the packet's direction.
inline bool endpoint_less(const uint8_t* a, uint16_t pa, const uint8_t* b, uint16_t pb) {
    int c = std::memcmp(a, b, 16);
    return c < 0 || (c == 0 && pa < pb);
}

// Whether port a looks like a server's service port and b like a client's: a well-known
// port against one that is not, or a registered port against an ephemeral one.
inline bool service_port_first(uint16_t a, uint16_t b) {
    return (a < 1024 && b >= 1024) || (a < 32768 && b >= 32768);
}

struct FlowState {
    int64_t last_ns;
    uint64_t packets;
    bool closed;  // saw FIN or RST
};

}  // namespace detail

constexpr uint16_t kTcpFin = 1, kTcpSyn = 2, kTcpRst = 4, kTcpAck = 16;

// idle_ns <= 0 disables the idle timeout; max_packets == 0 disables the length limit.
inline void assemble_flows(const FlowInput& in, int64_t idle_ns, uint64_t max_packets, FlowOutput& out) {
    using detail::FlowKey;
    out.flow_id.assign(in.n, -1);
    out.direction.assign(in.n, 0);
    std::unordered_map<FlowKey, int64_t, detail::FlowKeyHash> active;
    std::vector<detail::FlowState> state;
    for (size_t i = 0; i < in.n; ++i) {
        if (in.status[i] != 0 || in.l3[i] == 0) continue;
        const uint8_t* s = in.src + 16 * i;
        const uint8_t* d = in.dst + 16 * i;
        uint16_t sp = in.sport[i], dp = in.dport[i];
        bool tcp = in.proto[i] == 6;
        uint16_t fl = tcp ? in.tcp_flags[i] : 0;
        FlowKey key;
        std::memset(&key, 0, sizeof(key));
        bool src_first = !detail::endpoint_less(d, dp, s, sp);
        std::memcpy(key.a, src_first ? s : d, 16);
        std::memcpy(key.b, src_first ? d : s, 16);
        key.pa = src_first ? sp : dp;
        key.pb = src_first ? dp : sp;
        key.proto = in.proto[i];
        key.l3 = in.l3[i];
        int64_t ts = in.ts_ns[i];
        auto it = active.find(key);
        int64_t fid = -1;
        if (it != active.end()) {
            const detail::FlowState& st = state[size_t(it->second)];
            // Hardening (issue 9, fuzz_flows): `ts - last_ns` overflowed int64 (UB) for far-apart
            // timestamps; the gap is taken unsigned, and only when time moved forward.
            bool idle = idle_ns > 0 && ts > st.last_ns && uint64_t(ts) - uint64_t(st.last_ns) > uint64_t(idle_ns);
            bool full = max_packets != 0 && st.packets >= max_packets;
            bool reopened = tcp && st.closed && (fl & (kTcpSyn | kTcpAck)) == kTcpSyn;
            if (!idle && !full && !reopened) fid = it->second;
        }
        if (fid < 0) {
            // Who is the client: a SYN's sender; a SYN+ACK's receiver (the SYN was missed);
            // for a later chunk of the same connection (cut by max_packets or the idle
            // timeout, no new SYN), whoever was the client of the chunk before; for a TCP
            // flow first seen mid-connection, the side not holding the service port.
            bool syn = tcp && (fl & kTcpSyn);
            bool reverse;
            if (syn) {
                reverse = (fl & kTcpAck) != 0;
            } else if (it != active.end()) {
                size_t prev = size_t(it->second);
                reverse = !(std::memcmp(s, &out.client_addr[16 * prev], 16) == 0 && sp == out.client_port[prev]);
            } else {
                reverse = tcp && detail::service_port_first(sp, dp);
            }
            fid = int64_t(state.size());
            state.push_back({ts, 0, false});
            const uint8_t* ca = reverse ? d : s;
            const uint8_t* sa = reverse ? s : d;
            out.proto.push_back(in.proto[i]);
            out.l3.push_back(in.l3[i]);
            out.client_addr.insert(out.client_addr.end(), ca, ca + 16);
            out.server_addr.insert(out.server_addr.end(), sa, sa + 16);
            out.client_port.push_back(reverse ? dp : sp);
            out.server_port.push_back(reverse ? sp : dp);
            out.start_ns.push_back(ts);
            out.end_ns.push_back(ts);
            out.packets_c2s.push_back(0);
            out.packets_s2c.push_back(0);
            out.bytes_c2s.push_back(0);
            out.bytes_s2c.push_back(0);
            out.first_packet.push_back(int64_t(i));
            if (it != active.end()) it->second = fid;
            else active.emplace(key, fid);
        }
        size_t f = size_t(fid);
        detail::FlowState& st = state[f];
        // Sent by the client's endpoint (so in a flow from an endpoint to itself, every packet
        // counts as client→server).
        bool c2s = std::memcmp(s, &out.client_addr[16 * f], 16) == 0 && sp == out.client_port[f];
        out.flow_id[i] = fid;
        out.direction[i] = c2s ? 0 : 1;
        if (c2s) {
            ++out.packets_c2s[f];
            out.bytes_c2s[f] += in.wirelen[i];
        } else {
            ++out.packets_s2c[f];
            out.bytes_s2c[f] += in.wirelen[i];
        }
        if (ts > out.end_ns[f]) out.end_ns[f] = ts;
        if (ts > st.last_ns) st.last_ns = ts;
        ++st.packets;
        if (fl & (kTcpFin | kTcpRst)) st.closed = true;
    }
}

}  // namespace pytrafgen
