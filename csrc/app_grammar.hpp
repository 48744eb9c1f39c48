// Application-protocol tokenization driven by a grammar a plugin declares (pytrafgen/app_grammar.py).
//
// Two message families, each parameterised entirely by the plugin's data (token ids, tables,
// field lists); no protocol name appears here:
//  * TextGrammar — text messages: a start line (request: method SP target SP version, or
//    status: version SP code [SP reason]), "Name:value" header lines, an empty line, then a
//    body framed by a length header, chunked transfer coding, or the end of the data
//    (HTTP/1.x).
//  * BinaryGrammar — binary packets: a type/flags byte, a variable-length remaining length,
//    and a body that a per-type list of field operations describes (length-prefixed strings,
//    enumerations, conditional fields on earlier values, varint-prefixed blocks, the rest);
//    a body that does not fit its list is written as RAW bytes (MQTT 3.1.1 / 5.0).
// A payload encodes only when it is made of whole messages from its first byte to its last
// (the last may be cut short); otherwise encode returns false and the payload stays bytes.
// Every read is bounds-checked: payloads are untrusted input.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace pytrafgen::app {

using Tokens = std::vector<int32_t>;

// ---- text messages ------------------------------------------------------------------------

struct TextGrammar {
    // structural token ids
    int32_t request = -1, response = -1, end = -1, headers_end = -1, msg_end = -1, method_other = -1,
            version_other = -1, status_other = -1, reason_standard = -1, reason_none = -1, header_other = -1,
            value = -1, value_raw = -1, value_length = -1;
    std::unordered_map<std::string, int32_t> methods, versions, statuses, header_names;
    std::unordered_map<std::string, std::string> standard_reason;  // status code -> reason phrase
    std::string length_header = "content-length";                  // lower case
    std::string transfer_header = "transfer-encoding";
    std::string chunked = "chunked";
    std::string version_prefix = "HTTP/";  // versions look like PREFIX d.d
    std::vector<std::string> no_body_statuses;  // codes that never carry a body
    char no_body_status_class = '1';            // ... nor does any code starting with this digit
};

namespace text_detail {

inline bool is_tchar(uint8_t c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::strchr("!#$%&'*+.^_`|~-", c) != nullptr && c != 0;
}
inline bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
inline bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
inline uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? uint8_t(c + 32) : c; }

struct Span {
    size_t off = 0, len = 0;
};

struct Header {
    Span name, value;  // value: everything after the colon
};

struct Message {
    bool request = false;
    Span method, target, version, status, reason;
    bool has_reason = false;
    std::vector<Header> headers;
    Span body;
    bool body_complete = true;
};

// Position of "\r\n\r\n" at or after `from`, or npos.
inline size_t find_crlfcrlf(const uint8_t* d, size_t n, size_t from) {
    for (size_t i = from; i + 3 < n; ++i)
        if (d[i] == '\r' && d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n') return i;
    return SIZE_MAX;
}
inline size_t find_crlf(const uint8_t* d, size_t n, size_t from) {
    for (size_t i = from; i + 1 < n; ++i)
        if (d[i] == '\r' && d[i + 1] == '\n') return i;
    return SIZE_MAX;
}

inline bool no_cr_lf(const uint8_t* d, size_t off, size_t len) {
    for (size_t i = off; i < off + len; ++i)
        if (d[i] == '\r' || d[i] == '\n') return false;
    return true;
}

// "PREFIXd.d" at d[off..off+len)
inline bool is_version(const TextGrammar& g, const uint8_t* d, size_t off, size_t len) {
    const size_t p = g.version_prefix.size();
    if (len != p + 3) return false;
    if (std::memcmp(d + off, g.version_prefix.data(), p) != 0) return false;
    return is_digit(d[off + p]) && d[off + p + 1] == '.' && is_digit(d[off + p + 2]);
}

// Start line in d[off..off+len) (no CRLF inside it: the caller split on CRLF).
inline bool parse_start(const TextGrammar& g, const uint8_t* d, size_t off, size_t len, Message& m) {
    const size_t vlen = g.version_prefix.size() + 3;
    // status line: VERSION SP ddd [SP reason]
    if (len >= vlen + 4 && is_version(g, d, off, vlen) && d[off + vlen] == ' ' && is_digit(d[off + vlen + 1]) &&
        is_digit(d[off + vlen + 2]) && is_digit(d[off + vlen + 3])) {
        const size_t after = off + vlen + 4, rest = off + len - after;
        bool ok = rest == 0 || (d[after] == ' ' && no_cr_lf(d, after + 1, rest - 1));
        if (ok) {
            m.request = false;
            m.version = {off, vlen};
            m.status = {off + vlen + 1, 3};
            m.has_reason = rest > 0;
            if (m.has_reason) m.reason = {after + 1, rest - 1};
            return true;
        }
    }
    // request line: tchar+ SP target(any but CR/LF, non-empty) SP VERSION, at the end
    size_t sp = off;
    while (sp < off + len && is_tchar(d[sp])) ++sp;
    if (sp == off || sp >= off + len || d[sp] != ' ') return false;
    if (len < (sp - off) + 1 + 1 + 1 + vlen) return false;
    const size_t ver = off + len - vlen;
    if (d[ver - 1] != ' ' || !is_version(g, d, ver, vlen)) return false;
    const size_t tgt = sp + 1, tlen = (ver - 1) - tgt;
    if (tlen == 0 || !no_cr_lf(d, tgt, tlen)) return false;
    m.request = true;
    m.method = {off, sp - off};
    m.target = {tgt, tlen};
    m.version = {ver, vlen};
    return true;
}

// Head = start line and header lines, d[off..end) without the empty line.
inline bool parse_head(const TextGrammar& g, const uint8_t* d, size_t off, size_t end, Message& m) {
    size_t line_end = find_crlf(d, end, off);
    if (line_end == SIZE_MAX) line_end = end;
    if (!parse_start(g, d, off, line_end - off, m)) return false;
    size_t pos = line_end;
    while (pos < end) {
        pos += 2;  // past CRLF
        size_t le = find_crlf(d, end, pos);
        if (le == SIZE_MAX) le = end;
        size_t colon = pos;
        while (colon < le && d[colon] != ':') ++colon;
        if (colon == le || colon == pos) return false;
        for (size_t i = pos; i < colon; ++i)
            if (!is_tchar(d[i])) return false;
        if (!no_cr_lf(d, colon + 1, le - colon - 1)) return false;
        m.headers.push_back({{pos, colon - pos}, {colon + 1, le - colon - 1}});
        pos = le;
    }
    return true;
}

inline bool name_is(const uint8_t* d, Span s, const std::string& lower_name) {
    if (s.len != lower_name.size()) return false;
    for (size_t i = 0; i < s.len; ++i)
        if (lower(d[s.off + i]) != uint8_t(lower_name[i])) return false;
    return true;
}

// The first header named `lower_name`, its value stripped of spaces and tabs.
inline bool header_value(const uint8_t* d, const Message& m, const std::string& lower_name, Span& out) {
    for (const auto& h : m.headers) {
        if (!name_is(d, h.name, lower_name)) continue;
        size_t a = h.value.off, b = h.value.off + h.value.len;
        while (a < b && (d[a] == ' ' || d[a] == '\t')) ++a;
        while (b > a && (d[b - 1] == ' ' || d[b - 1] == '\t')) --b;
        out = {a, b - a};
        return true;
    }
    return false;
}

constexpr uint64_t HUGE_LENGTH = uint64_t(1) << 62;  // any length past the data is as good as this

// Decimal digits (non-empty, digits only) as a number saturating at HUGE_LENGTH.
inline bool digits_value(const uint8_t* d, Span s, uint64_t& v) {
    if (s.len == 0) return false;
    v = 0;
    for (size_t i = 0; i < s.len; ++i) {
        if (!is_digit(d[s.off + i])) return false;
        v = v >= HUGE_LENGTH / 10 ? HUGE_LENGTH : v * 10 + (d[s.off + i] - '0');
    }
    return true;
}

inline bool is_chunked(const TextGrammar& g, const uint8_t* d, const Message& m) {
    Span v;
    if (!header_value(d, m, g.transfer_header, v)) return false;
    const std::string& c = g.chunked;
    if (c.size() > v.len) return false;
    for (size_t i = 0; i + c.size() <= v.len; ++i) {
        size_t k = 0;
        while (k < c.size() && lower(d[v.off + i + k]) == uint8_t(c[k])) ++k;
        if (k == c.size()) return true;
    }
    return false;
}

// Offset just past a chunked body starting at `pos`, or SIZE_MAX when it is incomplete.
inline size_t chunked_end(const uint8_t* d, size_t n, size_t pos) {
    while (true) {
        size_t h = pos;
        uint64_t size = 0;
        while (h < n && is_hex(d[h])) {
            const uint8_t c = d[h];
            const uint64_t digit = is_digit(c) ? c - '0' : (lower(c) - 'a' + 10);
            size = size >= HUGE_LENGTH / 16 ? HUGE_LENGTH : size * 16 + digit;
            ++h;
        }
        if (h == pos) return SIZE_MAX;
        size_t e = h;
        while (e < n && d[e] != '\r' && d[e] != '\n') ++e;
        if (e + 1 >= n || d[e] != '\r' || d[e + 1] != '\n') return SIZE_MAX;
        pos = e + 2;
        if (size == 0) break;
        if (size > n) return SIZE_MAX;
        pos += size_t(size) + 2;
        if (pos > n) return SIZE_MAX;
    }
    while (true) {  // trailer fields, then the empty line
        const size_t eol = find_crlf(d, n, pos);
        if (eol == SIZE_MAX) return SIZE_MAX;
        if (eol == pos) return pos + 2;
        pos = eol + 2;
    }
}

inline bool starts_with(const uint8_t* d, size_t n, size_t at, const std::string& s) {
    return at + s.size() <= n && std::memcmp(d + at, s.data(), s.size()) == 0;
}

// Whole messages from the first byte to the last (the last body may be cut short).
inline bool split(const TextGrammar& g, const uint8_t* d, size_t n, std::vector<Message>& out) {
    size_t pos = 0;
    while (pos < n) {
        const size_t eoh = find_crlfcrlf(d, n, pos);
        if (eoh == SIZE_MAX) return false;
        Message m;
        if (!parse_head(g, d, pos, eoh, m)) return false;
        const size_t body_start = eoh + 4;
        size_t body_end = body_start;
        Span cl;
        uint64_t length = 0;
        bool has_length = header_value(d, m, g.length_header, cl) && digits_value(d, cl, length);
        if (!m.request) {
            const bool looks_head = has_length && length != 0 && starts_with(d, n, body_start, g.version_prefix);
            bool no_body = d[m.status.off] == uint8_t(g.no_body_status_class);
            for (const auto& s : g.no_body_statuses)
                no_body = no_body || (s.size() == 3 && std::memcmp(d + m.status.off, s.data(), 3) == 0);
            if (looks_head || no_body) {
                has_length = true;
                length = 0;
            }
        }
        if (is_chunked(g, d, m) && !(has_length && length == 0)) {
            const size_t ce = chunked_end(d, n, body_start);
            body_end = ce == SIZE_MAX ? n : ce;
            m.body_complete = ce != SIZE_MAX;
        } else if (has_length) {
            const uint64_t want = uint64_t(body_start) + length;
            body_end = want < n ? size_t(want) : n;
            m.body_complete = want <= n;
        } else if (!m.request) {
            body_end = n;  // delimited by the connection closing
        }
        m.body = {body_start, body_end - body_start};
        out.push_back(std::move(m));
        pos = body_end;
    }
    return !out.empty();
}

inline void text_tokens(Tokens& out, const uint8_t* d, Span s, int32_t end) {
    for (size_t i = 0; i < s.len; ++i) out.push_back(d[s.off + i]);
    out.push_back(end);
}

template <class Map>
inline const int32_t* lookup(const Map& map, const uint8_t* d, Span s) {
    auto it = map.find(std::string(reinterpret_cast<const char*>(d + s.off), s.len));
    return it == map.end() ? nullptr : &it->second;
}

}  // namespace text_detail

inline bool encode_text(const TextGrammar& g, const uint8_t* d, size_t n, Tokens& out) {
    using namespace text_detail;
    std::vector<Message> msgs;
    if (!split(g, d, n, msgs)) return false;
    for (const Message& m : msgs) {
        if (m.request) {
            out.push_back(g.request);
            if (const int32_t* id = lookup(g.methods, d, m.method)) {
                out.push_back(*id);
            } else {
                out.push_back(g.method_other);
                text_tokens(out, d, m.method, g.end);
            }
            text_tokens(out, d, m.target, g.end);
        } else {
            out.push_back(g.response);
        }
        if (const int32_t* id = lookup(g.versions, d, m.version)) {
            out.push_back(*id);
        } else {
            out.push_back(g.version_other);
            text_tokens(out, d, m.version, g.end);
        }
        if (!m.request) {
            const int32_t* sid = lookup(g.statuses, d, m.status);
            if (sid) {
                out.push_back(*sid);
            } else {
                out.push_back(g.status_other);
                for (size_t i = 0; i < 3; ++i) out.push_back(d[m.status.off + i]);
            }
            if (!m.has_reason) {
                out.push_back(g.reason_none);
            } else {
                const std::string code(reinterpret_cast<const char*>(d + m.status.off), 3);
                auto std_reason = g.standard_reason.find(code);
                const bool standard = sid && std_reason != g.standard_reason.end() &&
                                      std_reason->second.size() == m.reason.len &&
                                      std::memcmp(std_reason->second.data(), d + m.reason.off, m.reason.len) == 0;
                if (standard)
                    out.push_back(g.reason_standard);
                else
                    text_tokens(out, d, m.reason, g.end);
            }
        }
        const bool chunked = is_chunked(g, d, m);
        const std::string body_len = " " + std::to_string(m.body.len);
        for (const Header& h : m.headers) {
            if (const int32_t* id = lookup(g.header_names, d, h.name)) {
                out.push_back(*id);
            } else {
                out.push_back(g.header_other);
                text_tokens(out, d, h.name, g.end);
            }
            if (name_is(d, h.name, g.length_header) && m.body_complete && !chunked &&
                h.value.len == body_len.size() && std::memcmp(d + h.value.off, body_len.data(), body_len.size()) == 0) {
                out.push_back(g.value_length);
            } else if (h.value.len && d[h.value.off] == ' ') {
                out.push_back(g.value);
                text_tokens(out, d, {h.value.off + 1, h.value.len - 1}, g.end);
            } else {
                out.push_back(g.value_raw);
                text_tokens(out, d, h.value, g.end);
            }
        }
        out.push_back(g.headers_end);
        for (size_t i = 0; i < m.body.len; ++i) out.push_back(d[m.body.off + i]);
        out.push_back(g.msg_end);
    }
    return true;
}

// ---- binary packets -----------------------------------------------------------------------

enum class OpKind : uint8_t {
    U8,          // one byte, as a byte token; kept in var
    BYTES,       // n bytes
    STR16,       // u16 big-endian length, that many bytes, then `end`
    ENUM_STR16,  // u16 length + bytes: a table token when listed, else `other` + bytes + `end`
    ENUM_U8,     // one byte: a table token when listed, else `other` + the byte; kept in var
    VARBYTES,    // minimally encoded varint length, that many bytes, then `end`
    REST,        // every byte left
    IF_EQ,       // the ops in `then` when var == value
    IF_ANY,      // the ops in `then` when var & mask != 0
    IF_HDR_ANY,  // the ops in `then` when the fixed header's flags & mask != 0
};

struct Op {
    OpKind kind = OpKind::U8;
    int var = -1;  // variable slot to keep the value in (U8, ENUM_U8) or test (IF_*)
    uint32_t n = 0;       // BYTES: count; IF_EQ: value; IF_ANY / IF_HDR_ANY: mask
    int32_t end = -1;     // STR16, ENUM_STR16, VARBYTES: closing token
    int32_t other = -1;   // ENUM_*: token before an unlisted value
    std::unordered_map<std::string, int32_t> str_table;
    std::array<int32_t, 256> u8_table{};  // -1: unlisted
    std::vector<Op> then;
};

constexpr int N_VARS = 8;

struct BinaryGrammar {
    int32_t type0 = -1, flags0 = -1, rl_derived = -1, rl_explicit = -1, raw = -1, packet_end = -1;
    // plausible packets: (flags & mask) == value (or != value when `differ`) per type
    std::array<uint8_t, 16> flag_mask{}, flag_value{};
    std::array<bool, 16> flag_differ{}, type_allowed{};
    std::array<uint32_t, 16> min_raw_body{};  // a RAW body shorter than this does not round-trip
    std::array<std::vector<Op>, 16> bodies;    // empty: RAW
    std::array<bool, 16> structured{};
};

namespace bin_detail {

// Remaining length at d[pos..]: 1 = value/end set, 0 = data ends first, -1 = over 4 bytes.
inline int varint(const uint8_t* d, size_t n, size_t pos, uint32_t& value, size_t& end) {
    value = 0;
    for (int i = 0; i < 4; ++i) {
        if (pos + i >= n) return 0;
        const uint8_t b = d[pos + i];
        value |= uint32_t(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            end = pos + i + 1;
            return 1;
        }
    }
    return -1;
}

inline size_t varint_size(uint32_t v) { return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4; }

struct Cursor {
    const uint8_t* d;
    size_t pos, end;
    bool take(size_t k, size_t& at) {
        if (k > end - pos) return false;
        at = pos;
        pos += k;
        return true;
    }
    bool u16(uint32_t& v) {
        size_t at;
        if (!take(2, at)) return false;
        v = (uint32_t(d[at]) << 8) | d[at + 1];
        return true;
    }
};

inline void bytes_to(Tokens& out, const uint8_t* d, size_t at, size_t k) {
    for (size_t i = 0; i < k; ++i) out.push_back(d[at + i]);
}

// 1: the ops fit, 0: they do not (the body goes RAW), -1: a malformed length (no encoding at all)
inline int run(const std::vector<Op>& ops, Cursor& c, uint8_t hdr_flags, std::array<uint32_t, N_VARS>& vars,
                Tokens& out) {
    for (const Op& op : ops) {
        size_t at;
        uint32_t len;
        switch (op.kind) {
            case OpKind::U8:
                if (!c.take(1, at)) return 0;
                out.push_back(c.d[at]);
                if (op.var >= 0) vars[op.var] = c.d[at];
                break;
            case OpKind::BYTES:
                if (!c.take(op.n, at)) return 0;
                bytes_to(out, c.d, at, op.n);
                break;
            case OpKind::STR16:
                if (!c.u16(len) || !c.take(len, at)) return 0;
                bytes_to(out, c.d, at, len);
                out.push_back(op.end);
                break;
            case OpKind::ENUM_STR16: {
                if (!c.u16(len) || !c.take(len, at)) return 0;
                auto it = op.str_table.find(std::string(reinterpret_cast<const char*>(c.d + at), len));
                if (it != op.str_table.end()) {
                    out.push_back(it->second);
                } else {
                    out.push_back(op.other);
                    bytes_to(out, c.d, at, len);
                    out.push_back(op.end);
                }
                break;
            }
            case OpKind::ENUM_U8:
                if (!c.take(1, at)) return 0;
                if (op.u8_table[c.d[at]] >= 0) {
                    out.push_back(op.u8_table[c.d[at]]);
                } else {
                    out.push_back(op.other);
                    out.push_back(c.d[at]);
                }
                if (op.var >= 0) vars[op.var] = c.d[at];
                break;
            case OpKind::VARBYTES: {
                size_t after;
                const int got = varint(c.d, c.end, c.pos, len, after);
                if (got < 0) return -1;
                if (got == 0 || after - c.pos != varint_size(len)) return 0;
                c.pos = after;
                if (!c.take(len, at)) return 0;
                bytes_to(out, c.d, at, len);
                out.push_back(op.end);
                break;
            }
            case OpKind::REST:
                bytes_to(out, c.d, c.pos, c.end - c.pos);
                c.pos = c.end;
                break;
            case OpKind::IF_EQ:
                if (vars[op.var] == op.n) {
                    const int r = run(op.then, c, hdr_flags, vars, out);
                    if (r != 1) return r;
                }
                break;
            case OpKind::IF_ANY:
                if (vars[op.var] & op.n) {
                    const int r = run(op.then, c, hdr_flags, vars, out);
                    if (r != 1) return r;
                }
                break;
            case OpKind::IF_HDR_ANY:
                if (hdr_flags & op.n) {
                    const int r = run(op.then, c, hdr_flags, vars, out);
                    if (r != 1) return r;
                }
                break;
        }
    }
    return 1;
}

}  // namespace bin_detail

// 1: encoded, 0: the payload stays bytes, -1: stays bytes, a length in it is malformed (the
// Python reference codec raised there; counted as an error).
inline int encode_binary(const BinaryGrammar& g, const uint8_t* d, size_t n, Tokens& out) {
    using namespace bin_detail;
    struct Packet {
        uint8_t first;
        size_t len_off, body_off, body_len;
        uint32_t remaining;
    };
    std::vector<Packet> packets;
    size_t pos = 0;
    while (pos < n) {
        uint32_t value;
        size_t body;
        if (varint(d, n, pos + 1, value, body) != 1) return 0;
        const uint64_t want = uint64_t(body) + value;
        const size_t end = want < n ? size_t(want) : n;
        packets.push_back({d[pos], pos + 1, body, end - body, value});
        pos = end;
    }
    if (packets.empty()) return 0;
    for (const Packet& p : packets) {
        const uint8_t type = p.first >> 4, flags = p.first & 0x0F;
        if (!g.type_allowed[type]) return 0;
        const bool equal = (flags & g.flag_mask[type]) == g.flag_value[type];
        if (equal == g.flag_differ[type]) return 0;
    }
    Tokens body;
    bool padded = false;  // a body the reference decoder would pad: no exact round trip
    for (const Packet& p : packets) {
        const uint8_t type = p.first >> 4, flags = p.first & 0x0F;
        out.push_back(g.type0 + type);
        out.push_back(g.flags0 + flags);
        const bool complete = p.body_len == p.remaining;
        const bool minimal = p.body_off - p.len_off == varint_size(p.remaining);
        if (!(complete && minimal)) {
            out.push_back(g.rl_explicit);
            bytes_to(out, d, p.len_off, p.body_off - p.len_off);
            bytes_to(out, d, p.body_off, p.body_len);
            out.push_back(g.packet_end);
            continue;
        }
        out.push_back(g.rl_derived);
        bool fits = false;
        if (g.structured[type]) {
            body.clear();
            Cursor c{d, p.body_off, p.body_off + p.body_len};
            std::array<uint32_t, N_VARS> vars{};
            const int r = run(g.bodies[type], c, flags, vars, body);
            if (r < 0) return -1;
            fits = r == 1 && c.pos == c.end;
            if (fits) out.insert(out.end(), body.begin(), body.end());
        }
        if (!fits) {
            padded = padded || p.body_len < g.min_raw_body[type];
            out.push_back(g.raw);
            bytes_to(out, d, p.body_off, p.body_len);
        }
        out.push_back(g.packet_end);
    }
    return padded ? 0 : 1;
}

// Two independent 64-bit digests of a byte range (FNV-1a and a multiply-xorshift mix), so that
// payloads can be grouped by content in bulk; 128 bits make a collision practically impossible.
inline std::array<uint64_t, 2> digest(const uint8_t* d, size_t n) {
    uint64_t a = 0xCBF29CE484222325ull, b = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; ++i) {
        a = (a ^ d[i]) * 0x100000001B3ull;
        b = (b + d[i] + 1) * 0xFF51AFD7ED558CCDull;
        b ^= b >> 29;
    }
    return {a, b};
}

}  // namespace pytrafgen::app
