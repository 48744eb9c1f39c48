// Tokenizer decoder: token sequences -> field-record columns (docs/tokenizer.md).
//
// Every token is range-checked: a malformed flow (truncated, out of range, class token mid
// flow, wrong order, trailing tokens, app tokens its protocol cannot decode) gives an error
// code and is rolled back, never a crash. No Python here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "tokenize_common.hpp"

namespace pytrafgen::tok {

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

// FieldRecords per-packet columns (columns.hpp), owned.
using DecodedPackets = RecordPacketVectors;

// Per decoded flow: the FieldRecords flow columns (inherited) and source_flow.
struct DecodeResult : RecordFlowVectors {
    DecodedPackets pk;
    std::vector<uint8_t> blob;
    // per decoded flow
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
