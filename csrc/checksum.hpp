// Internet checksum (RFC 1071) for IPv4 headers and TCP/UDP/ICMP/ICMPv6 segments.
//
// Speed comes from two facts of RFC 1071: the one's-complement sum is independent of byte
// order (sum 16-bit words as loaded natively, store the result natively), and carries can be
// deferred (sum 32-bit halves of 64-bit loads into 64-bit accumulators, fold once at the end).
// Every routine here works on any alignment (loads go through memcpy) and any length (an odd
// final byte is padded with a zero on its right, as the RFC says).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pytrafgen::csum {

// Unfolded one's-complement sum of `n` bytes starting at `p`, added to `acc`. A region must
// start at an even offset of the checksummed stream for its words to line up; callers sum
// the pseudo-header (even-sized pieces) and then the whole segment in one call.
inline uint64_t partial(const uint8_t* p, size_t n, uint64_t acc = 0) {
    uint64_t a0 = acc, a1 = 0, a2 = 0, a3 = 0;
    while (n >= 32) {
        uint64_t w0, w1, w2, w3;
        std::memcpy(&w0, p, 8);
        std::memcpy(&w1, p + 8, 8);
        std::memcpy(&w2, p + 16, 8);
        std::memcpy(&w3, p + 24, 8);
        a0 += (w0 & 0xffffffffu) + (w0 >> 32);
        a1 += (w1 & 0xffffffffu) + (w1 >> 32);
        a2 += (w2 & 0xffffffffu) + (w2 >> 32);
        a3 += (w3 & 0xffffffffu) + (w3 >> 32);
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        a0 += (w & 0xffffffffu) + (w >> 32);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t w;
        std::memcpy(&w, p, 4);
        a1 += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        a2 += w;
        p += 2;
        n -= 2;
    }
    if (n == 1) {
        // The odd byte is the first (network-order high) byte of a word whose second byte
        // is zero; loading those two bytes natively gives the matching native word.
        uint8_t last[2] = {p[0], 0};
        uint16_t w;
        std::memcpy(&w, last, 2);
        a3 += w;
    }
    // Each accumulator holds < 2^33 per 8 bytes summed, so adding four cannot overflow for
    // any length a packet can have; fold the total down to 16 bits.
    uint64_t s = (a0 & 0xffffffffu) + (a0 >> 32) + (a1 & 0xffffffffu) + (a1 >> 32) +
                 (a2 & 0xffffffffu) + (a2 >> 32) + (a3 & 0xffffffffu) + (a3 >> 32);
    return s;
}

// Fold an unfolded sum to 16 bits (still in native word order).
inline uint16_t fold(uint64_t s) {
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return static_cast<uint16_t>(s);
}

// The checksum field value for a finished sum, in native order: store it with memcpy.
inline uint16_t finish(uint64_t s) { return static_cast<uint16_t>(~fold(s)); }

// Write the checksum of sum `s` at `dst` (two bytes, any alignment). UDP transmits a
// computed zero as 0xffff because zero means "no checksum" there (RFC 768).
inline void store(uint8_t* dst, uint64_t s, bool zero_as_ffff = false) {
    uint16_t c = finish(s);
    if (zero_as_ffff && c == 0) c = 0xffff;
    std::memcpy(dst, &c, 2);
}

// Checksum as the integer a reader sees in the header (big-endian), e.g. for tests.
inline uint16_t as_be(uint64_t s, bool zero_as_ffff = false) {
    uint8_t b[2];
    store(b, s, zero_as_ffff);
    return static_cast<uint16_t>((b[0] << 8) | b[1]);
}

// Headers are summed from the field values as big-endian 16-bit integers (reloading bytes
// just written one at a time would stall on store forwarding); these join the two forms.

// Fold a native-order sum to 16 bits and read it as the big-endian integer it stands for.
inline uint32_t native_to_be(uint64_t s) {
    const uint16_t v = fold(s);
    uint8_t b[2];
    std::memcpy(b, &v, 2);
    return (uint32_t{b[0]} << 8) | b[1];
}

// The checksum field value (big-endian integer) for a sum of big-endian 16-bit integers.
inline uint16_t finish_be(uint64_t be_sum) { return static_cast<uint16_t>(~fold(be_sum)); }

// Pseudo-header sum for TCP/UDP/ICMPv6 over IPv4 (RFC 793/768): addresses, zero, protocol,
// upper-layer length.
inline uint64_t pseudo_v4(const uint8_t* src4, const uint8_t* dst4, uint8_t proto, uint32_t l4_len) {
    uint8_t tail[4] = {0, proto, static_cast<uint8_t>(l4_len >> 8), static_cast<uint8_t>(l4_len)};
    uint64_t s = partial(src4, 4);
    s = partial(dst4, 4, s);
    return partial(tail, 4, s);
}

// Pseudo-header sum over IPv6 (RFC 8200 §8.1): addresses, 32-bit upper-layer length, three
// zero bytes, next header.
inline uint64_t pseudo_v6(const uint8_t* src16, const uint8_t* dst16, uint8_t next_header, uint32_t l4_len) {
    uint8_t tail[8] = {static_cast<uint8_t>(l4_len >> 24), static_cast<uint8_t>(l4_len >> 16),
                       static_cast<uint8_t>(l4_len >> 8),  static_cast<uint8_t>(l4_len),
                       0, 0, 0, next_header};
    uint64_t s = partial(src16, 16);
    s = partial(dst16, 16, s);
    return partial(tail, 8, s);
}

// Whether an upper-layer protocol's checksum covers a pseudo-header. ICMP over IPv4 does not;
// TCP, UDP and ICMPv6 do (ICMPv6 always, whatever the IP version carrying it).
inline bool uses_pseudo_header(uint8_t proto) { return proto != 1; }

// Byte offset of the checksum field inside the L4 header, or -1 if the builder does not
// know the protocol.
inline int l4_checksum_offset(uint8_t proto) {
    switch (proto) {
        case 6: return 16;   // TCP
        case 17: return 6;   // UDP
        case 1: return 2;    // ICMP
        case 58: return 2;   // ICMPv6
        default: return -1;
    }
}

// Checksum of an L4 segment (whose checksum field the caller has zeroed or wants included)
// given the IP version's addresses: `src`/`dst` are 4 bytes for IPv4, 16 for IPv6.
inline uint64_t l4_sum(int ip_version, const uint8_t* src, const uint8_t* dst, uint8_t proto,
                       const uint8_t* seg, size_t len) {
    uint64_t s = 0;
    if (uses_pseudo_header(proto)) {
        s = ip_version == 6 ? pseudo_v6(src, dst, proto, static_cast<uint32_t>(len))
                            : pseudo_v4(src, dst, proto, static_cast<uint32_t>(len));
    }
    return partial(seg, len, s);
}

}  // namespace pytrafgen::csum
