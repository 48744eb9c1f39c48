// The inverse of app_grammar.hpp: local token ids of one payload back to its bytes, for the
// token sequences the encoder writes (whole messages, every structure token where the grammar
// puts it). A sequence that strays from that (what a sampler may write) is refused here, and the
// plugin's Python decoder, the reference, decides what it becomes (it is lenient by design).
// So for every sequence this accepts, its bytes equal the Python decoder's
// (tests/test_app_detokenize.py checks both on every shared capture and on mutated sequences).
// Every read is bounds-checked: token sequences are untrusted input.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <unordered_map>
#include <vector>

#include "app_grammar.hpp"

namespace pytrafgen::app {

using Bytes = std::vector<uint8_t>;

namespace detok_detail {

struct Reader {
    const int32_t* t;
    size_t n, pos;
    bool more() const { return pos < n; }
    bool next(int32_t& v) {
        if (pos >= n) return false;
        v = t[pos++];
        return true;
    }
    // Byte tokens up to (and past) `end`; false on anything else or the end of the tokens.
    bool bytes_until(int32_t end, Bytes& out) {
        int32_t v;
        while (next(v)) {
            if (v == end) return true;
            if (v < 0 || v > 255) return false;
            out.push_back(uint8_t(v));
        }
        return false;
    }
    bool byte(uint8_t& b) {
        int32_t v;
        if (!next(v) || v < 0 || v > 255) return false;
        b = uint8_t(v);
        return true;
    }
};

inline void append(Bytes& out, const std::string& s) { out.insert(out.end(), s.begin(), s.end()); }

// id -> text of an enumeration table
inline std::unordered_map<int32_t, std::string> invert(const std::unordered_map<std::string, int32_t>& m) {
    std::unordered_map<int32_t, std::string> out;
    for (const auto& [text, id] : m) out[id] = text;
    return out;
}

}  // namespace detok_detail

// The text family's tables the other way round (built once per grammar).
struct TextDecoder {
    TextGrammar grammar;
    const TextGrammar* g = &grammar;
    std::unordered_map<int32_t, std::string> methods, versions, statuses, header_names;

    explicit TextDecoder(TextGrammar gr) : grammar(std::move(gr)) {
        using detok_detail::invert;
        methods = invert(grammar.methods);
        versions = invert(grammar.versions);
        statuses = invert(grammar.statuses);
        header_names = invert(grammar.header_names);
    }
    TextDecoder(const TextDecoder&) = delete;  // g points into this object
    TextDecoder& operator=(const TextDecoder&) = delete;

    // A table token (`table`) or `other` followed by text up to `end`.
    bool named(detok_detail::Reader& r, const std::unordered_map<int32_t, std::string>& table, int32_t other,
               Bytes& out) const {
        int32_t v;
        if (!r.next(v)) return false;
        if (v == other) return r.bytes_until(g->end, out);
        auto it = table.find(v);
        if (it == table.end()) return false;
        detok_detail::append(out, it->second);
        return true;
    }

    bool message(detok_detail::Reader& r, int32_t kind, Bytes& out) const {
        using detok_detail::append;
        Bytes code;  // a response's three status characters
        if (kind == g->request) {
            if (!named(r, methods, g->method_other, out)) return false;
            out.push_back(' ');
            if (!r.bytes_until(g->end, out)) return false;  // target
            out.push_back(' ');
            if (!named(r, versions, g->version_other, out)) return false;
        } else {
            if (!named(r, versions, g->version_other, out)) return false;
            out.push_back(' ');
            int32_t v;
            if (!r.next(v)) return false;
            if (v == g->status_other) {
                for (int i = 0; i < 3; ++i) {
                    uint8_t b;
                    if (!r.byte(b)) return false;
                    code.push_back(b);
                }
            } else {
                auto it = statuses.find(v);
                if (it == statuses.end() || it->second.size() != 3) return false;
                code.assign(it->second.begin(), it->second.end());
            }
            out.insert(out.end(), code.begin(), code.end());
            if (!r.next(v)) return false;
            if (v == g->reason_standard) {
                auto it = g->standard_reason.find(std::string(code.begin(), code.end()));
                if (it == g->standard_reason.end()) return false;
                out.push_back(' ');
                append(out, it->second);
            } else if (v != g->reason_none) {
                --r.pos;  // the reason's text
                out.push_back(' ');
                if (!r.bytes_until(g->end, out)) return false;
            }
        }
        out.push_back('\r');
        out.push_back('\n');
        std::vector<size_t> derived;  // where a derived length value goes
        int32_t v;
        while (true) {
            if (!r.next(v)) return false;
            if (v == g->headers_end) break;
            if (v == g->header_other) {
                if (!r.bytes_until(g->end, out)) return false;
            } else {
                auto it = header_names.find(v);
                if (it == header_names.end()) return false;
                append(out, it->second);
            }
            out.push_back(':');
            if (!r.next(v)) return false;
            if (v == g->value) {
                out.push_back(' ');
                if (!r.bytes_until(g->end, out)) return false;
            } else if (v == g->value_raw) {
                if (!r.bytes_until(g->end, out)) return false;
            } else if (v == g->value_length) {
                derived.push_back(out.size());
            } else {
                return false;
            }
            out.push_back('\r');
            out.push_back('\n');
        }
        out.push_back('\r');
        out.push_back('\n');
        const size_t body_start = out.size();
        if (!r.bytes_until(g->msg_end, out)) return false;
        if (!derived.empty()) {  // " <body length>" at each derived header, back to front
            const std::string value = " " + std::to_string(out.size() - body_start);
            for (size_t k = derived.size(); k-- > 0;) out.insert(out.begin() + long(derived[k]), value.begin(), value.end());
        }
        return true;
    }

    bool decode(const int32_t* t, size_t n, Bytes& out) const {
        detok_detail::Reader r{t, n, 0};
        if (n == 0) return false;
        while (r.more()) {
            int32_t kind;
            r.next(kind);
            if (kind != g->request && kind != g->response) return false;
            if (!message(r, kind, out)) return false;
        }
        return true;
    }
};

// The binary family: packets of a type token, a flags token, the length mode and the body.
struct BinaryDecoder {
    BinaryGrammar grammar;
    const BinaryGrammar* g = &grammar;
    // per op: table token -> its string (ENUM_STR16) or byte (ENUM_U8), built once
    std::unordered_map<const Op*, std::unordered_map<int32_t, std::string>> str_of;
    std::unordered_map<const Op*, std::unordered_map<int32_t, uint8_t>> u8_of;

    explicit BinaryDecoder(BinaryGrammar gr) : grammar(std::move(gr)) {
        for (const auto& body : grammar.bodies) index(body);
    }
    BinaryDecoder(const BinaryDecoder&) = delete;  // the tables point into this grammar's ops
    BinaryDecoder& operator=(const BinaryDecoder&) = delete;

    void index(const std::vector<Op>& ops) {
        for (const Op& op : ops) {
            if (op.kind == OpKind::ENUM_STR16) str_of[&op] = detok_detail::invert(op.str_table);
            if (op.kind == OpKind::ENUM_U8) {
                auto& m = u8_of[&op];
                for (int b = 0; b < 256; ++b)
                    if (op.u8_table[size_t(b)] >= 0) m[op.u8_table[size_t(b)]] = uint8_t(b);
            }
            index(op.then);
        }
    }

    static void varint(uint32_t v, Bytes& out) {
        do {
            uint8_t b = v & 0x7F;
            v >>= 7;
            out.push_back(v ? uint8_t(b | 0x80) : b);
        } while (v);
    }

    static bool u16_string(const Bytes& s, Bytes& out) {
        if (s.size() > 0xFFFF) return false;
        out.push_back(uint8_t(s.size() >> 8));
        out.push_back(uint8_t(s.size() & 0xFF));
        out.insert(out.end(), s.begin(), s.end());
        return true;
    }

    bool run(const std::vector<Op>& ops, detok_detail::Reader& r, uint8_t hdr_flags,
             std::array<uint32_t, N_VARS>& vars, Bytes& out) const {
        Bytes s;
        for (const Op& op : ops) {
            uint8_t b;
            int32_t v;
            switch (op.kind) {
                case OpKind::U8:
                    if (!r.byte(b)) return false;
                    out.push_back(b);
                    if (op.var >= 0) vars[size_t(op.var)] = b;
                    break;
                case OpKind::BYTES:
                    for (uint32_t i = 0; i < op.n; ++i) {
                        if (!r.byte(b)) return false;
                        out.push_back(b);
                    }
                    break;
                case OpKind::STR16:
                    s.clear();
                    if (!r.bytes_until(op.end, s) || !u16_string(s, out)) return false;
                    break;
                case OpKind::ENUM_STR16: {
                    if (!r.next(v)) return false;
                    s.clear();
                    if (v == op.other) {
                        if (!r.bytes_until(op.end, s)) return false;
                    } else {
                        const auto& table = str_of.at(&op);
                        auto it = table.find(v);
                        if (it == table.end()) return false;
                        s.assign(it->second.begin(), it->second.end());
                    }
                    if (!u16_string(s, out)) return false;
                    break;
                }
                case OpKind::ENUM_U8: {
                    if (!r.next(v)) return false;
                    if (v == op.other) {
                        if (!r.byte(b)) return false;
                    } else {
                        const auto& table = u8_of.at(&op);
                        auto it = table.find(v);
                        if (it == table.end()) return false;
                        b = it->second;
                    }
                    out.push_back(b);
                    if (op.var >= 0) vars[size_t(op.var)] = b;
                    break;
                }
                case OpKind::VARBYTES:
                    s.clear();
                    if (!r.bytes_until(op.end, s) || s.size() >= (size_t(1) << 28)) return false;
                    varint(uint32_t(s.size()), out);
                    out.insert(out.end(), s.begin(), s.end());
                    break;
                case OpKind::REST:  // byte tokens up to the packet's end token (left for the caller)
                    while (r.more() && r.t[r.pos] != g->packet_end) {
                        if (!r.byte(b)) return false;
                        out.push_back(b);
                    }
                    break;
                case OpKind::IF_EQ:
                    if (vars[size_t(op.var)] == op.n && !run(op.then, r, hdr_flags, vars, out)) return false;
                    break;
                case OpKind::IF_ANY:
                    if ((vars[size_t(op.var)] & op.n) && !run(op.then, r, hdr_flags, vars, out)) return false;
                    break;
                case OpKind::IF_HDR_ANY:
                    if ((hdr_flags & op.n) && !run(op.then, r, hdr_flags, vars, out)) return false;
                    break;
            }
        }
        return true;
    }

    bool packet(detok_detail::Reader& r, int32_t type_token, Bytes& out) const {
        const int32_t type = type_token - g->type0;
        int32_t v;
        if (!r.next(v) || v < g->flags0 || v >= g->flags0 + 16) return false;
        const uint8_t flags = uint8_t(v - g->flags0);
        out.push_back(uint8_t((type << 4) | flags));
        if (!r.next(v)) return false;
        Bytes body;
        if (v == g->rl_explicit) {  // the length's bytes as they were, then the body
            if (!r.bytes_until(g->packet_end, body)) return false;
            bool complete = false;
            for (size_t i = 0; i < 4 && i < body.size(); ++i)
                if (!(body[i] & 0x80)) {
                    complete = true;
                    break;
                }
            if (!complete) return false;
            out.insert(out.end(), body.begin(), body.end());
            return true;
        }
        if (v != g->rl_derived) return false;
        if (r.more() && r.t[r.pos] == g->raw) {
            ++r.pos;
            if (!r.bytes_until(g->packet_end, body)) return false;
        } else {
            if (!g->structured[size_t(type)]) return false;
            std::array<uint32_t, N_VARS> vars{};
            if (!run(g->bodies[size_t(type)], r, flags, vars, body)) return false;
            if (!r.next(v) || v != g->packet_end) return false;
        }
        // a body shorter than the type's shortest (the reference pads it) or too long to frame
        if (body.size() < g->min_raw_body[size_t(type)] || body.size() >= (size_t(1) << 28)) return false;
        varint(uint32_t(body.size()), out);
        out.insert(out.end(), body.begin(), body.end());
        return true;
    }

    bool decode(const int32_t* t, size_t n, Bytes& out) const {
        detok_detail::Reader r{t, n, 0};
        if (n == 0) return false;
        while (r.more()) {
            int32_t v;
            r.next(v);
            if (v < g->type0 || v >= g->type0 + 16) return false;
            if (!packet(r, v, out)) return false;
        }
        return true;
    }
};

// A grammar of either family with its decoder's tables; `n_local` bounds the token ids. Shared
// read-only between threads once built.
struct Detokenizer {
    int32_t n_local = 0;
    std::shared_ptr<const TextDecoder> text;
    std::shared_ptr<const BinaryDecoder> binary;

    Detokenizer(TextGrammar g, int32_t n) : n_local(n), text(std::make_shared<const TextDecoder>(std::move(g))) {}
    Detokenizer(BinaryGrammar g, int32_t n) : n_local(n), binary(std::make_shared<const BinaryDecoder>(std::move(g))) {}

    // The bytes of one payload's local ids, or false (out left empty) where the ids are not a
    // sequence the encoder writes: the plugin's Python decoder then decides.
    bool decode(const int32_t* t, size_t n, Bytes& out) const {
        out.clear();
        for (size_t i = 0; i < n; ++i)
            if (t[i] < 0 || t[i] >= n_local) return false;
        const bool ok = text ? text->decode(t, n, out) : binary->decode(t, n, out);
        if (!ok) out.clear();
        return ok;
    }
};

}  // namespace pytrafgen::app
