// Tokenizer encoder: packets + flows -> one token sequence per flow (docs/tokenizer.md).
//
// Every read of packet bytes is bounds-checked against the captured length and against the
// column values' consistency: a packet that cannot be encoded is a counted skip, never a
// stray read. No Python here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "tokenize_common.hpp"

namespace pytrafgen::tok {

// The PacketTable's columns and each packet's flow and direction (columns.hpp), borrowed.
struct Packets : PacketTableView, FlowPacketView {
    size_t n = 0;
    const uint8_t* data = nullptr;
    size_t data_len = 0;
};

// The FlowTable's columns, borrowed, and each flow's class.
struct Flows : FlowTableView {
    size_t n = 0;
    const int32_t* label = nullptr;  // index into the class range; < 0: do not encode the flow
};

// Token spans from application protocols, replacing the payload tokens of some packets.
struct AppOverride {
    size_t n = 0;
    const int64_t* packet = nullptr;   // sorted packet indices
    const int64_t* offsets = nullptr;  // n + 1
    const uint16_t* tokens = nullptr;
    size_t n_tokens = 0;
};

enum EncodeSkip : int {
    SKIP_UNSUPPORTED_FLOW,    // flow is not IPv4/IPv6 TCP/UDP/ICMP(v6), or has no label (a flow count)
    SKIP_NOT_DISSECTED,       // packet in a flow but its status is not "ok"
    SKIP_KIND_MISMATCH,       // packet's IP version / protocol differ from its flow's
    SKIP_HEADER_OUT_OF_CAPTURE,  // a header byte the tokenizer needs lies past the capture
    SKIP_IP6_EXT,             // IPv6 extension headers longer than 64 bytes or malformed
    SKIP_IP_HEADER,           // IPv4 header length inconsistent (< 20, > 60 or not a multiple of 4)
    SKIP_TCP_HEADER,          // TCP data offset inconsistent (< 20 or > 60 bytes)
    SKIP_PAYLOAD_TOO_LONG,    // payload length > 65535 (jumbogram)
    SKIP_EMPTY_FLOW,          // a flow none of whose packets could be encoded (not a packet count)
    SKIP_COUNT
};
inline const char* encode_skip_name(int s) {
    static const char* const names[SKIP_COUNT] = {"unsupported_flow", "not_dissected", "kind_mismatch",
                                                  "header_out_of_capture", "ip6_ext_headers",
                                                  "ip_header", "tcp_header", "payload_too_long", "empty_flow"};
    return names[s];
}

// A growable token buffer that is not zero-filled (std::vector would write every token twice).
struct TokenBuffer {
    uint16_t* data = nullptr;
    size_t size = 0, capacity = 0;
    TokenBuffer() = default;
    TokenBuffer(const TokenBuffer&) = delete;
    TokenBuffer& operator=(const TokenBuffer&) = delete;
    ~TokenBuffer() { std::free(data); }
    void reserve(size_t n) {
        if (n <= capacity) return;
        void* grown = std::realloc(data, n * sizeof(uint16_t));
        if (!grown) throw std::bad_alloc();
        data = static_cast<uint16_t*>(grown);
        capacity = n;
    }
    // Hand the storage to the caller (to be released with std::free).
    uint16_t* release() {
        uint16_t* d = data;
        data = nullptr;
        size = capacity = 0;
        return d;
    }
};

struct EncodeResult {
    TokenBuffer tokens;
    std::vector<int64_t> offsets;  // F + 1; an empty span: the flow was not encoded
    int64_t packets_encoded = 0;
    int64_t skipped[SKIP_COUNT] = {};
};

namespace detail {

inline int flow_kind_proto_value(uint8_t l3, uint8_t proto) {
    if (proto == 6) return 0;
    if (proto == 17) return 1;
    if (l3 == 4 && proto == 1) return 2;
    if (l3 == 6 && proto == 58) return 3;
    return -1;
}

struct Writer {
    TokenBuffer& buf;
    size_t w;
    const Layout& lay;
    uint16_t* v = buf.data;
    void ensure(size_t extra) {
        if (w + extra > buf.capacity) {
            buf.reserve(std::max(buf.capacity + buf.capacity / 2, w + extra));
            v = buf.data;
        }
    }
    void tok(int range, uint32_t value) { v[w++] = uint16_t(lay.start[range] + int32_t(value)); }
    void raw(uint16_t t) { v[w++] = t; }
    // n bytes of `src`, then `zeros` zero bytes, as tokens of `range` (a loop compilers vectorize)
    void bytes(int range, const uint8_t* src, uint32_t n, uint32_t zeros) {
        const uint16_t base = uint16_t(lay.start[range]);
        uint16_t* o = v + w;
        for (uint32_t b = 0; b < n; ++b) o[b] = uint16_t(base + src[b]);
        for (uint32_t b = 0; b < zeros; ++b) o[n + b] = base;
        w += n + zeros;
    }
    // `n` digits of `bits` bits each, most significant first, ranges first_range .. +n-1
    void digits(int first_range, uint32_t value, int n, int bits) {
        for (int k = 0; k < n; ++k) {
            const int shift = (n - 1 - k) * bits;
            tok(first_range + k, (value >> shift) & ((1u << bits) - 1));
        }
    }
};

}  // namespace detail

// Encode every flow. Packets of a flow are taken in table order.
inline void encode(const Packets& p, const Flows& f, const Layout& lay, const AppOverride& app,
                   EncodeResult& out) {
    using namespace detail;
    const size_t F = f.n;
    // group packets by flow (counting sort, stable)
    std::vector<int64_t> first(F + 1, 0);
    for (size_t i = 0; i < p.n; ++i) {
        const int64_t fid = p.flow_id[i];
        if (fid >= 0 && size_t(fid) < F) ++first[size_t(fid) + 1];
    }
    for (size_t k = 0; k < F; ++k) first[k + 1] += first[k];
    // static_cast, not size_t(...): clang parses `order(size_t(first[F]))` as a function
    // declaration (vexing parse) and the header did not compile there (issue 9, fuzz build).
    std::vector<int64_t> order(static_cast<size_t>(first[F]));
    // Initial sequence numbers, per flow side, in the same pass (packets of a flow come in
    // table order): the first seq each side sends; a silent side's is the first ack it
    // received minus 1 (as if its SYN had been seen), else 0 — as records_from_packets
    // defines them. isn_state bit 0: seq seen, bit 1: ack seen.
    std::vector<uint32_t> first_seq(2 * F), first_ack(2 * F);
    std::vector<uint8_t> isn_state(2 * F, 0);
    {
        std::vector<int64_t> fill(first.begin(), first.end() - 1);
        for (size_t i = 0; i < p.n; ++i) {
            const int64_t fid = p.flow_id[i];
            if (fid < 0 || size_t(fid) >= F) continue;
            order[size_t(fill[size_t(fid)]++)] = int64_t(i);
            if (p.proto[i] != 6 || p.status[i] != 0 || f.proto[fid] != 6 || p.l3[i] != f.l3[fid]) continue;
            const size_t own = size_t(fid) * 2 + (p.direction[i] & 1), peer = own ^ 1;
            if (!(isn_state[own] & 1)) { first_seq[own] = p.seq[i]; isn_state[own] |= 1; }
            if (!(isn_state[peer] & 2) && (p.tcp_flags[i] & kTcpAck)) {
                first_ack[peer] = p.ack[i] - 1;
                isn_state[peer] |= 2;
            }
        }
    }
    const uint32_t cap = lay.payload_cap;
    // typical size: ~28 header tokens per packet plus its stored payload bytes
    size_t estimate = F * 12 + 64;
    for (size_t i = 0; i < p.n; ++i) estimate += 28 + std::min(p.payload_wirelen[i], cap);
    out.tokens.reserve(estimate);
    out.offsets.assign(F + 1, 0);
    Writer wr{out.tokens, 0, lay};

    for (size_t fi = 0; fi < F; ++fi) {
        out.offsets[fi] = int64_t(wr.w);
        const uint8_t l3 = f.l3[fi], proto = f.proto[fi];
        const int pv = flow_kind_proto_value(l3, proto);
        const int32_t label = f.label[fi];
        if ((l3 != 4 && l3 != 6) || pv < 0 || label < 0 || label >= lay.n_classes) {
            ++out.skipped[SKIP_UNSUPPORTED_FLOW];
            continue;
        }
        const bool tcp = proto == 6, ports = proto == 6 || proto == 17;
        wr.ensure(16);
        wr.tok(R_SPECIAL, T_BOS);
        wr.raw(uint16_t(lay.class_start + label));
        wr.tok(R_IP_VERSION, l3 == 4 ? 0 : 1);
        wr.tok(R_PROTO, uint32_t(pv));
        if (ports) {
            wr.digits(R_CPORT1, f.client_port[fi], 2, 8);
            wr.digits(R_SPORT1, f.server_port[fi], 2, 8);
        }
        uint32_t isn[2] = {0, 0};
        for (int d = 0; d < 2; ++d) {
            const size_t side = fi * 2 + size_t(d);
            isn[d] = (isn_state[side] & 1) ? first_seq[side] : (isn_state[side] & 2) ? first_ack[side] : 0;
        }
        uint32_t prev_id[2] = {0, 0}, prev_fl[2] = {0, 0}, next_seq[2] = {0, 0}, prev_ack[2] = {0, 0};
        const int64_t encoded_before = out.packets_encoded;
        bool have_ts = false;
        int64_t prev_ts = 0;
        for (int64_t k = first[fi]; k < first[fi + 1]; ++k) {
            const size_t i = size_t(order[size_t(k)]);
            if (p.status[i] != 0) { ++out.skipped[SKIP_NOT_DISSECTED]; continue; }
            if (p.l3[i] != l3 || p.proto[i] != proto) { ++out.skipped[SKIP_KIND_MISMATCH]; continue; }
            const uint64_t foff = p.frame_off[i];
            const uint32_t caplen = p.caplen[i];
            if (foff > p.data_len || caplen > p.data_len - foff) { ++out.skipped[SKIP_HEADER_OUT_OF_CAPTURE]; continue; }
            const uint8_t* frame = p.data + foff;
            const uint32_t l3o = p.l3_off[i], iphl = p.ip_hdr_len[i], l4o = p.l4_off[i], l4hl = p.l4_hdr_len[i];
            const uint32_t plen = p.payload_wirelen[i];
            if (plen > 65535) { ++out.skipped[SKIP_PAYLOAD_TOO_LONG]; continue; }
            // every header byte read below must lie inside the capture
            const uint32_t l4_need = tcp ? 20u : 8u;
            if (uint64_t(l3o) + iphl > caplen || uint64_t(l4o) + std::max(l4hl, l4_need) > caplen ||
                l4o != l3o + iphl) {
                ++out.skipped[SKIP_HEADER_OUT_OF_CAPTURE];
                continue;
            }
            if (l3 == 4 && (iphl < 20 || iphl > 20 + 4 * kMaxIp4OptWords || (iphl & 3))) {
                ++out.skipped[SKIP_IP_HEADER];
                continue;
            }
            if (tcp && (l4hl < 20 || l4hl > 20 + 4 * kMaxTcpOptWords || (l4hl & 3))) {
                ++out.skipped[SKIP_TCP_HEADER];
                continue;
            }
            // IPv6 extension headers: each one's next-header byte replaced by its own type
            uint8_t ext[4 * kMaxIp6ExtWords];
            uint32_t ext_bytes = 0;
            if (l3 == 6) {
                ext_bytes = iphl >= 40 ? iphl - 40 : 0xffffffffu;
                if (ext_bytes > sizeof(ext) || (ext_bytes & 3)) { ++out.skipped[SKIP_IP6_EXT]; continue; }
                const uint8_t* src = frame + l3o + 40;
                uint8_t type = frame[l3o + 6];
                uint32_t off = 0;
                bool ok = true;
                while (off < ext_bytes) {
                    if (ext_bytes - off < 2) { ok = false; break; }
                    const uint32_t hl = ext_len(type, src[off + 1]);
                    if (hl > ext_bytes - off) { ok = false; break; }
                    std::memcpy(ext + off, src + off, hl);
                    ext[off] = type;
                    type = src[off];
                    off += hl;
                }
                if (!ok || type != proto) { ++out.skipped[SKIP_IP6_EXT]; continue; }
            }

            const int d = p.direction[i] & 1;
            const int64_t* app_pos = app.n ? std::lower_bound(app.packet, app.packet + app.n, int64_t(i)) : nullptr;
            const bool use_app = app_pos && app_pos != app.packet + app.n && *app_pos == int64_t(i);
            size_t app_lo = 0, app_hi = 0;
            if (use_app) {
                const size_t a = size_t(app_pos - app.packet);
                app_lo = size_t(app.offsets[a]);
                app_hi = size_t(app.offsets[a + 1]);
                if (app_lo > app_hi || app_hi > app.n_tokens) app_lo = app_hi = 0;
            }
            wr.ensure(256 + cap + (app_hi - app_lo));
            wr.tok(R_SPECIAL, T_PKT);
            wr.tok(R_SPECIAL, d ? T_S2C : T_C2S);
            const int64_t ts = p.ts_ns[i];
            const int64_t gap = have_ts && ts > prev_ts ? ts - prev_ts : 0;
            prev_ts = have_ts ? std::max(prev_ts, ts) : ts;
            have_ts = true;
            // Hardening (issue 9, fuzz_encode): `iat_edges + kIatBuckets - 1` first formed a pointer
            // two past the end of the 63-edge array (UB); parenthesised it is one past the end.
            wr.tok(R_IAT, uint32_t(std::upper_bound(lay.iat_edges, lay.iat_edges + (kIatBuckets - 1), gap) - lay.iat_edges));
            wr.tok(R_TTL, p.ttl[i]);
            wr.tok(R_TOS, p.tos[i]);
            if (l3 == 4) {
                const uint32_t id = p.ip_id[i] & 0xffff;
                const uint32_t delta = (id - prev_id[d]) & 0xffff;
                if (delta < uint32_t(kIpIdDelta)) wr.tok(R_IPID_DELTA, delta);
                else wr.digits(R_IPID3, id, 4, 4);
                prev_id[d] = id;
                const uint32_t frag = p.frag_offset[i] & 0x1fff;
                const uint32_t opt_words = iphl > 20 ? (iphl - 20) / 4 : 0;
                wr.tok(R_IP_FLAGS, (p.ip_flags[i] & 7u) | (frag ? 8u : 0u) | (opt_words ? 16u : 0u));
                if (frag) wr.digits(R_FRAG3, frag, 4, 4);
                if (opt_words) {
                    wr.tok(R_IPOPT_WORDS, opt_words - 1);
                    wr.bytes(R_IPOPT_BYTE, frame + l3o + 20, opt_words * 4, 0);
                }
            } else {
                const uint32_t fl = p.flow_label[i] & 0xfffff;
                if (fl == prev_fl[d]) wr.tok(R_FL_SAME, 0);
                else wr.digits(R_FL4, fl, 5, 4);
                prev_fl[d] = fl;
                wr.tok(R_IP6EXT_WORDS, ext_bytes / 4);
                wr.bytes(R_IPOPT_BYTE, ext, ext_bytes, 0);
            }
            const uint8_t* l4 = frame + l4o;
            if (tcp) {
                const uint16_t flags = uint16_t(l4[13] | (uint16_t(l4[12] & 0x0f) << 8));
                const uint32_t hi = flags >> 8, words = (l4hl - 20) / 4;
                const uint32_t urg = p.urgent[i];
                wr.tok(R_TCP_FLAGS, flags & 0xff);
                wr.tok(R_TCP_MISC, words + 11 * ((urg ? 1u : 0u) + (hi ? 2u : 0u)));
                if (hi) wr.tok(R_TCP_HI, hi - 1);
                if (urg) wr.digits(R_URG3, urg, 4, 4);
                wr.bytes(R_TCPOPT_BYTE, l4 + 20, words * 4, 0);
                const uint32_t seq_rel = p.seq[i] - isn[d];
                if (seq_rel == next_seq[d]) wr.tok(R_SEQ_NEXT, 0);
                else wr.digits(R_SEQ3, seq_rel, 4, 8);
                next_seq[d] = seq_rel + plen + ((flags & kTcpSyn) ? 1 : 0) + ((flags & kTcpFin) ? 1 : 0);
                const uint32_t ack = (flags & kTcpAck) ? p.ack[i] - isn[1 - d] : p.ack[i];
                if ((flags & kTcpAck) && ack == next_seq[1 - d]) wr.tok(R_ACK_NEXT, 0);
                else if (ack == prev_ack[d]) wr.tok(R_ACK_SAME, 0);
                else wr.digits(R_ACK3, ack, 4, 8);
                prev_ack[d] = ack;
                wr.digits(R_WIN1, p.window[i], 2, 8);
            } else if (proto == 1 || proto == 58) {
                wr.tok(R_ICMP_TYPE, l4[0]);
                wr.digits(R_ICMP_CODE1, l4[1], 2, 4);
                wr.digits(R_REST7, be32(l4 + 4), 8, 4);
            }
            if (use_app) {
                for (size_t t = app_lo; t < app_hi; ++t) wr.raw(app.tokens[t]);
            } else {
                wr.digits(R_PLEN1, plen, 2, 8);
                const uint32_t stored = std::min(plen, cap);
                const uint32_t pay_off = p.payload_off[i];
                const uint32_t avail = pay_off <= caplen ? std::min(p.payload_len[i], caplen - pay_off) : 0;
                const uint32_t have = std::min(avail, stored);
                wr.bytes(R_PAYLOAD_BYTE, frame + pay_off, have, stored - have);
            }
            ++out.packets_encoded;
        }
        if (encoded_before == out.packets_encoded) {  // nothing to learn from: drop the flow
            wr.w = size_t(out.offsets[fi]);
            ++out.skipped[SKIP_EMPTY_FLOW];
            continue;
        }
        wr.ensure(1);
        wr.tok(R_SPECIAL, T_EOS);
    }
    out.offsets[F] = int64_t(wr.w);
    out.tokens.size = wr.w;
}

}  // namespace pytrafgen::tok
