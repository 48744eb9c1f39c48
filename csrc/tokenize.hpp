// Protocol-field tokenizer: packets + flows -> one token sequence per flow, and back.
//
// The token layout (which id starts which field's range) comes from Python
// (pytrafgen/tokenizer/vocab.py, CORE_FIELDS); `Range` below lists the same names in the same
// order (pytrafgen checks this at import). The grammar the encoder writes and the decoder
// reads is docs/tokenizer.md; pytrafgen/tokenizer/grammar.py is the same grammar as a DFA.
// Every read of packet bytes is bounds-checked against the captured length and every token
// is range-checked: bad input gives a counted skip or an error code, never a crash.
// No Python here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <functional>
#include <vector>

namespace pytrafgen::tok {

enum Range : int {
    R_SPECIAL, R_IP_VERSION, R_PROTO, R_CPORT1, R_CPORT0, R_SPORT1, R_SPORT0, R_IAT, R_TTL, R_TOS,
    R_IPID_DELTA, R_IPID3, R_IPID2, R_IPID1, R_IPID0, R_IP_FLAGS, R_FRAG3, R_FRAG2, R_FRAG1, R_FRAG0,
    R_IPOPT_WORDS, R_IP6EXT_WORDS, R_IPOPT_BYTE, R_FL_SAME, R_FL4, R_FL3, R_FL2, R_FL1, R_FL0,
    R_TCP_FLAGS, R_TCP_MISC, R_TCP_HI, R_URG3, R_URG2, R_URG1, R_URG0, R_TCPOPT_BYTE, R_SEQ_NEXT,
    R_SEQ3, R_SEQ2, R_SEQ1, R_SEQ0, R_ACK_NEXT, R_ACK_SAME, R_ACK3, R_ACK2, R_ACK1, R_ACK0, R_WIN1,
    R_WIN0, R_ICMP_TYPE, R_ICMP_CODE1, R_ICMP_CODE0, R_REST7, R_REST6, R_REST5, R_REST4, R_REST3,
    R_REST2, R_REST1, R_REST0, R_PLEN1, R_PLEN0, R_PAYLOAD_BYTE, R_COUNT
};

inline const char* const* range_names() {
    static const char* const names[R_COUNT] = {
        "special", "ip_version", "proto", "client_port.b1", "client_port.b0", "server_port.b1",
        "server_port.b0", "iat", "ttl", "tos", "ip_id.delta", "ip_id.n3", "ip_id.n2", "ip_id.n1",
        "ip_id.n0", "ip_flags", "frag_offset.n3", "frag_offset.n2", "frag_offset.n1", "frag_offset.n0",
        "ip_opt.words", "ip6_ext.words", "ip_opt.byte", "flow_label.same", "flow_label.n4",
        "flow_label.n3", "flow_label.n2", "flow_label.n1", "flow_label.n0", "tcp_flags", "tcp_misc",
        "tcp_flags.hi", "urgent.n3", "urgent.n2", "urgent.n1", "urgent.n0", "tcp_opt.byte", "seq.next",
        "seq.b3", "seq.b2", "seq.b1", "seq.b0", "ack.next", "ack.same", "ack.b3", "ack.b2", "ack.b1",
        "ack.b0", "window.b1", "window.b0", "icmp_type", "icmp_code.n1", "icmp_code.n0", "icmp_rest.n7",
        "icmp_rest.n6", "icmp_rest.n5", "icmp_rest.n4", "icmp_rest.n3", "icmp_rest.n2", "icmp_rest.n1",
        "icmp_rest.n0", "payload_len.b1", "payload_len.b0", "payload.byte"};
    return names;
}

// Sizes of the ranges whose size the grammar fixes (the others are 256 or set by Python).
enum Special : int { T_PAD, T_BOS, T_EOS, T_PKT, T_C2S, T_S2C, T_APP_END };
constexpr int kProtoNumbers[4] = {6, 17, 1, 58};
constexpr int kMaxIp4OptWords = 10, kMaxIp6ExtWords = 16, kMaxTcpOptWords = 10, kIpIdDelta = 128;
constexpr int kIatBuckets = 64;
constexpr uint16_t kTcpSyn = 2, kTcpFin = 1, kTcpAck = 16;

struct Layout {
    int32_t start[R_COUNT];
    int32_t class_start = 0, n_classes = 0;
    int32_t vocab_size = 0;
    uint32_t payload_cap = 64;
    int64_t iat_edges[kIatBuckets - 1];   // bucket k: edges[k-1] <= gap < edges[k]
    int64_t iat_values[kIatBuckets];      // the gap a decoded bucket stands for
    // application protocols: begin token id, number of local tokens, transport (0/6/17)
    std::vector<int32_t> app_begin, app_size, app_transport;
};

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// Length of one IPv6 extension header from its type and length byte (as in build.hpp).
inline uint32_t ext_len(uint8_t type, uint8_t len_byte) {
    if (type == 44) return 8;
    if (type == 51) return (uint32_t(len_byte) + 2) * 4;
    return (uint32_t(len_byte) + 1) * 8;
}

// ------------------------------------------------------------------------------------------
// Encoder
// ------------------------------------------------------------------------------------------

// PacketTable columns (docs/architecture.md §1), borrowed.
struct Packets {
    size_t n = 0;
    const uint8_t* data = nullptr;
    size_t data_len = 0;
    const uint64_t* frame_off = nullptr;
    const uint32_t* caplen = nullptr;
    const int64_t* ts_ns = nullptr;
    const uint8_t *status = nullptr, *l3 = nullptr, *proto = nullptr, *ttl = nullptr, *tos = nullptr;
    const uint8_t *ip_flags = nullptr, *icmp_type = nullptr, *icmp_code = nullptr;
    const uint16_t *l3_off = nullptr, *ip_hdr_len = nullptr, *frag_offset = nullptr;
    const uint16_t *l4_off = nullptr, *l4_hdr_len = nullptr, *tcp_flags = nullptr;
    const uint16_t *window = nullptr, *urgent = nullptr;
    const uint32_t *ip_id = nullptr, *flow_label = nullptr, *seq = nullptr, *ack = nullptr;
    const uint32_t *payload_off = nullptr, *payload_len = nullptr, *payload_wirelen = nullptr;
    const int64_t* flow_id = nullptr;
    const uint8_t* direction = nullptr;
};

struct Flows {
    size_t n = 0;
    const uint8_t *l3 = nullptr, *proto = nullptr;
    const uint16_t *client_port = nullptr, *server_port = nullptr;
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
            wr.tok(R_IAT, uint32_t(std::upper_bound(lay.iat_edges, lay.iat_edges + kIatBuckets - 1, gap) - lay.iat_edges));
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

// ------------------------------------------------------------------------------------------
// Decoder
// ------------------------------------------------------------------------------------------

enum DecodeError : int {
    DEC_OK = 0,
    DEC_TRUNCATED,       // the tokens end before EOS
    DEC_OUT_OF_RANGE,    // a token id outside the vocabulary
    DEC_CLASS_MID_FLOW,  // a class token anywhere but right after BOS
    DEC_WRONG_ORDER,     // a token of a field that is not legal at its position
    DEC_AFTER_EOS,       // tokens other than PAD after EOS
    DEC_APP_FAILED,      // an application protocol could not decode its tokens
    DEC_COUNT
};
inline const char* decode_error_name(int e) {
    static const char* const names[DEC_COUNT] = {"ok", "truncated", "out_of_range",
                                                 "class_mid_flow", "wrong_order", "after_eos",
                                                 "app_decode_failed"};
    return names[e];
}

struct DecodedPackets {
    std::vector<int32_t> flow;
    std::vector<uint8_t> direction, ttl, tos, ip_flags, icmp_type, icmp_code;
    std::vector<int64_t> ts_ns;
    std::vector<uint32_t> ip_id, flow_label, seq, ack, icmp_rest, ip_opt_len, l4_opt_len, payload_stored,
        payload_len;
    std::vector<uint16_t> frag_offset, tcp_flags, window, urgent;
    std::vector<uint64_t> ip_opt_off, l4_opt_off, payload_off;
    size_t size() const { return flow.size(); }
    void truncate(size_t n) {
        flow.resize(n); direction.resize(n); ttl.resize(n); tos.resize(n); ip_flags.resize(n);
        icmp_type.resize(n); icmp_code.resize(n); ts_ns.resize(n); ip_id.resize(n); flow_label.resize(n);
        seq.resize(n); ack.resize(n); icmp_rest.resize(n); ip_opt_len.resize(n); l4_opt_len.resize(n);
        payload_stored.resize(n); payload_len.resize(n); frag_offset.resize(n); tcp_flags.resize(n);
        window.resize(n); urgent.resize(n); ip_opt_off.resize(n); l4_opt_off.resize(n); payload_off.resize(n);
    }
};

struct DecodeResult {
    DecodedPackets pk;
    std::vector<uint8_t> blob;
    // per decoded flow
    std::vector<int16_t> label;
    std::vector<uint8_t> ip_version, proto;
    std::vector<uint16_t> client_port, server_port;
    std::vector<int64_t> source_flow;  // index of the input span each decoded flow came from
    int64_t errors[DEC_COUNT] = {};
    // strict mode: the first error
    int first_error = DEC_OK;
    int64_t error_flow = -1, error_pos = -1;
};

// app_decode(app index, local token ids, count, direction, out bytes) -> success
using AppDecodeFn = std::function<bool(int, const int32_t*, size_t, int, std::vector<uint8_t>&)>;

namespace detail {

struct Reader {
    const uint16_t* t;
    int64_t pos, end;
    const Layout& lay;
    int err = DEC_OK;

    bool in(int range, int size, uint16_t tok) const {
        return tok >= lay.start[range] && tok < lay.start[range] + size;
    }
    // Why the token at pos cannot be what was asked for.
    int why() const {
        if (pos >= end) return DEC_TRUNCATED;
        const int32_t tok = t[pos];
        if (tok == lay.start[R_SPECIAL] + T_PAD) return DEC_TRUNCATED;  // padding: the sequence stopped
        if (tok >= lay.vocab_size) return DEC_OUT_OF_RANGE;
        if (tok >= lay.class_start && tok < lay.class_start + lay.n_classes) return DEC_CLASS_MID_FLOW;
        return DEC_WRONG_ORDER;
    }
    bool peek_in(int range, int size) const { return pos < end && in(range, size, t[pos]); }
    // Read one token of `range` (of `size` values) into value; sets err on failure.
    bool take(int range, int size, uint32_t& value) {
        if (err) return false;
        if (!peek_in(range, size)) { err = why(); return false; }
        value = uint32_t(t[pos++] - lay.start[range]);
        return true;
    }
    bool take_special(int which) {
        if (err) return false;
        if (pos < end && t[pos] == lay.start[R_SPECIAL] + which) { ++pos; return true; }
        err = why();
        return false;
    }
    bool digits(int first_range, int n, int bits, uint32_t& value) {
        value = 0;
        for (int k = 0; k < n; ++k) {
            uint32_t v;
            if (!take(first_range + k, 1 << bits, v)) return false;
            value = (value << bits) | v;
        }
        return true;
    }
};

}  // namespace detail

// Decode spans [offsets[k], offsets[k+1]) of `tokens`, one flow each. strict: stop at the
// first malformed flow and report it; otherwise skip malformed flows and count why.
inline void decode(const uint16_t* tokens, size_t n_tokens, const int64_t* offsets, size_t n_flows,
                   const Layout& lay, bool strict, const AppDecodeFn& app_decode, DecodeResult& out) {
    using namespace detail;
    const uint32_t cap = lay.payload_cap;
    DecodedPackets& pk = out.pk;
    std::vector<int32_t> local;
    std::vector<uint8_t> app_bytes;
    for (size_t fi = 0; fi < n_flows; ++fi) {
        int64_t lo = offsets[fi], hi = offsets[fi + 1];
        if (lo < 0) lo = 0;
        if (hi > int64_t(n_tokens)) hi = int64_t(n_tokens);
        if (lo >= hi) continue;  // an empty span: a flow the encoder left out, not an error
        const size_t pk_mark = pk.size(), blob_mark = out.blob.size();
        Reader r{tokens, lo, hi, lay};
        const int32_t flow_index = int32_t(out.label.size());
        uint32_t v = 0, cls = 0, ver = 0, pv = 0, cport = 0, sport = 0;
        r.take_special(T_BOS);
        if (!r.err) {
            if (r.pos < r.end && r.t[r.pos] >= lay.class_start && r.t[r.pos] < lay.class_start + lay.n_classes)
                cls = uint32_t(r.t[r.pos++] - lay.class_start);
            else r.err = r.pos >= r.end ? DEC_TRUNCATED : (r.t[r.pos] >= lay.vocab_size ? DEC_OUT_OF_RANGE : DEC_WRONG_ORDER);
        }
        r.take(R_IP_VERSION, 2, ver);
        r.take(R_PROTO, 4, pv);
        const uint8_t l3 = ver ? 6 : 4;
        const uint8_t proto = uint8_t(kProtoNumbers[pv & 3]);
        if (!r.err && ((l3 == 4 && pv == 3) || (l3 == 6 && pv == 2))) { --r.pos; r.err = DEC_WRONG_ORDER; }
        const bool tcp = proto == 6, ports = proto == 6 || proto == 17, icmp = proto == 1 || proto == 58;
        if (ports) {
            r.digits(R_CPORT1, 2, 8, cport);
            r.digits(R_SPORT1, 2, 8, sport);
        }
        uint32_t prev_id[2] = {0, 0}, prev_fl[2] = {0, 0}, next_seq[2] = {0, 0}, prev_ack[2] = {0, 0};
        int64_t ts = 0;
        while (!r.err) {
            if (r.pos < r.end && r.t[r.pos] == lay.start[R_SPECIAL] + T_EOS) { ++r.pos; break; }
            if (!r.take_special(T_PKT)) break;
            uint32_t d = 0;
            if (r.pos < r.end && r.t[r.pos] == lay.start[R_SPECIAL] + T_C2S) { d = 0; ++r.pos; }
            else if (r.pos < r.end && r.t[r.pos] == lay.start[R_SPECIAL] + T_S2C) { d = 1; ++r.pos; }
            else { r.err = r.why(); break; }
            uint32_t iat = 0, ttl = 0, tos = 0, id = 0, ipf = 0, frag = 0, fl = 0;
            r.take(R_IAT, kIatBuckets, iat);
            r.take(R_TTL, 256, ttl);
            r.take(R_TOS, 256, tos);
            const uint64_t ip_opt_off = out.blob.size();
            uint32_t ip_opt_len = 0;
            if (l3 == 4) {
                if (r.peek_in(R_IPID_DELTA, kIpIdDelta)) { r.take(R_IPID_DELTA, kIpIdDelta, v); id = (prev_id[d] + v) & 0xffff; }
                else r.digits(R_IPID3, 4, 4, id);
                prev_id[d] = id;
                r.take(R_IP_FLAGS, 32, ipf);
                if (ipf & 8) {
                    r.take(R_FRAG3, 2, v); frag = v;
                    for (int k = 1; k < 4; ++k) { uint32_t nib = 0; r.take(R_FRAG3 + k, 16, nib); frag = (frag << 4) | nib; }
                }
                if (ipf & 16) {
                    uint32_t words = 0;
                    r.take(R_IPOPT_WORDS, kMaxIp4OptWords, words);
                    ip_opt_len = (words + 1) * 4;
                    for (uint32_t b = 0; b < ip_opt_len && !r.err; ++b) { r.take(R_IPOPT_BYTE, 256, v); out.blob.push_back(uint8_t(v)); }
                }
                ipf &= 7;
            } else {
                if (r.peek_in(R_FL_SAME, 1)) { ++r.pos; fl = prev_fl[d]; }
                else r.digits(R_FL4, 5, 4, fl);
                prev_fl[d] = fl;
                uint32_t words = 0;
                r.take(R_IP6EXT_WORDS, kMaxIp6ExtWords + 1, words);
                ip_opt_len = words * 4;
                for (uint32_t b = 0; b < ip_opt_len && !r.err; ++b) { r.take(R_IPOPT_BYTE, 256, v); out.blob.push_back(uint8_t(v)); }
                // fragment header, if any: id, MF, offset (as the reader reports them)
                const uint8_t* e = out.blob.data() + ip_opt_off;
                for (uint32_t off = 0; !r.err && off + 2 <= ip_opt_len;) {
                    if (e[off] == 44 && off + 8 <= ip_opt_len) {
                        const uint16_t fo = be16(e + off + 2);
                        frag = fo >> 3;
                        ipf = fo & 1;
                        id = be32(e + off + 4);
                    }
                    off += ext_len(e[off], e[off + 1]);
                }
            }
            const uint64_t l4_opt_off = out.blob.size();
            uint32_t flags = 0, urg = 0, words = 0, seq = 0, ack = 0, win = 0, itype = 0, icode = 0, rest = 0;
            if (tcp) {
                uint32_t misc = 0;
                r.take(R_TCP_FLAGS, 256, flags);
                r.take(R_TCP_MISC, (kMaxTcpOptWords + 1) * 4, misc);
                words = misc % 11;
                if ((misc / 11) & 2) { r.take(R_TCP_HI, 15, v); flags |= (v + 1) << 8; }
                if ((misc / 11) & 1) r.digits(R_URG3, 4, 4, urg);
                for (uint32_t b = 0; b < words * 4 && !r.err; ++b) { r.take(R_TCPOPT_BYTE, 256, v); out.blob.push_back(uint8_t(v)); }
                if (r.peek_in(R_SEQ_NEXT, 1)) { ++r.pos; seq = next_seq[d]; }
                else r.digits(R_SEQ3, 4, 8, seq);
                if (r.peek_in(R_ACK_NEXT, 1)) { ++r.pos; ack = next_seq[1 - d]; }
                else if (r.peek_in(R_ACK_SAME, 1)) { ++r.pos; ack = prev_ack[d]; }
                else r.digits(R_ACK3, 4, 8, ack);
                prev_ack[d] = ack;
                r.digits(R_WIN1, 2, 8, win);
            } else if (icmp) {
                r.take(R_ICMP_TYPE, 256, itype);
                r.digits(R_ICMP_CODE1, 2, 4, icode);
                r.digits(R_REST7, 8, 4, rest);
            }
            const uint64_t payload_off = out.blob.size();
            uint32_t plen = 0, stored = 0;
            int app_index = -1;
            if (!r.err && ports && r.pos < r.end) {
                for (size_t a = 0; a < lay.app_begin.size(); ++a)
                    if (r.t[r.pos] == lay.app_begin[a] && (lay.app_transport[a] == 0 || lay.app_transport[a] == proto))
                        app_index = int(a);
            }
            if (app_index >= 0) {
                ++r.pos;
                const int32_t first_local = lay.app_begin[size_t(app_index)] + 1;
                const int32_t n_local = lay.app_size[size_t(app_index)];
                local.clear();
                while (!r.err) {
                    if (r.pos >= r.end) { r.err = DEC_TRUNCATED; break; }
                    const int32_t tk = r.t[r.pos];
                    if (tk == lay.start[R_SPECIAL] + T_APP_END) { ++r.pos; break; }
                    if (tk < first_local || tk >= first_local + n_local) { r.err = r.why(); break; }
                    local.push_back(tk - first_local);
                    ++r.pos;
                }
                if (!r.err) {
                    app_bytes.clear();
                    if (!app_decode || !app_decode(app_index, local.data(), local.size(), int(d), app_bytes) ||
                        app_bytes.size() > 65535) {
                        r.err = DEC_APP_FAILED;
                    } else {
                        out.blob.insert(out.blob.end(), app_bytes.begin(), app_bytes.end());
                        plen = stored = uint32_t(app_bytes.size());
                    }
                }
            } else {
                r.digits(R_PLEN1, 2, 8, plen);
                stored = std::min(plen, cap);
                for (uint32_t b = 0; b < stored && !r.err; ++b) { r.take(R_PAYLOAD_BYTE, 256, v); out.blob.push_back(uint8_t(v)); }
            }
            if (r.err) break;
            if (tcp) next_seq[d] = seq + plen + ((flags & kTcpSyn) ? 1 : 0) + ((flags & kTcpFin) ? 1 : 0);
            ts += lay.iat_values[iat];
            pk.flow.push_back(flow_index);
            pk.direction.push_back(uint8_t(d));
            pk.ts_ns.push_back(ts);
            pk.ttl.push_back(uint8_t(ttl));
            pk.tos.push_back(uint8_t(tos));
            pk.ip_id.push_back(id);
            pk.ip_flags.push_back(uint8_t(ipf));
            pk.frag_offset.push_back(uint16_t(frag));
            pk.flow_label.push_back(fl);
            pk.ip_opt_off.push_back(ip_opt_off);
            pk.ip_opt_len.push_back(ip_opt_len);
            pk.tcp_flags.push_back(uint16_t(flags));
            pk.seq.push_back(seq);
            pk.ack.push_back(ack);
            pk.window.push_back(uint16_t(win));
            pk.urgent.push_back(uint16_t(urg));
            pk.icmp_type.push_back(uint8_t(itype));
            pk.icmp_code.push_back(uint8_t(icode));
            pk.icmp_rest.push_back(rest);
            pk.l4_opt_off.push_back(l4_opt_off);
            pk.l4_opt_len.push_back(words * 4);
            pk.payload_off.push_back(payload_off);
            pk.payload_stored.push_back(stored);
            pk.payload_len.push_back(plen);
        }
        // after EOS only PAD may follow
        while (!r.err && r.pos < r.end) {
            if (r.t[r.pos] != lay.start[R_SPECIAL] + T_PAD) r.err = DEC_AFTER_EOS;
            else ++r.pos;
        }
        if (r.err) {
            ++out.errors[r.err];
            pk.truncate(pk_mark);
            out.blob.resize(blob_mark);
            if (strict) {
                out.first_error = r.err;
                out.error_flow = int64_t(fi);
                out.error_pos = r.pos - lo;
                return;
            }
            continue;
        }
        ++out.errors[DEC_OK];
        out.label.push_back(int16_t(cls));
        out.ip_version.push_back(l3);
        out.proto.push_back(proto);
        out.client_port.push_back(uint16_t(cport));
        out.server_port.push_back(uint16_t(sport));
        out.source_flow.push_back(int64_t(fi));
    }
}

}  // namespace pytrafgen::tok
