// Token layout shared by the encoder (tokenize_encode.hpp) and the decoder
// (tokenize_decode.hpp): the core ranges, special tokens, grammar constants, byte helpers.
//
// The token layout (which id starts which field's range) comes from Python
// (pytrafgen/tokenizer/vocab.py, CORE_FIELDS); `Range` below lists the same names in the same
// order (pytrafgen checks this at import). The grammar is docs/tokenizer.md;
// pytrafgen/tokenizer/grammar.py is the same grammar as a DFA. No Python here.
#pragma once

#include <cstdint>
#include <vector>

#include "columns.hpp"

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
    uint32_t payload_cap = 0;  // always set from pytrafgen.tokenizer.layout.CodecLayout
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

}  // namespace pytrafgen::tok
