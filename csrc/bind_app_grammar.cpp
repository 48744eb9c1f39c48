// Binds the declarative app-protocol tokenizer (app_grammar.hpp): a grammar as the plugin's data
// (pytrafgen/app_grammar.py, ``to_core()``) in, local token ids of many payloads out.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "app_detokenize.hpp"
#include "app_grammar.hpp"
#include "bind_app_grammar.hpp"
#include "bind_numpy.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

int32_t token(const py::dict& tokens, const char* name) {
    if (!tokens.contains(name)) throw py::value_error(std::string("app grammar: token '") + name + "' missing");
    return tokens[name].cast<int32_t>();
}

std::unordered_map<std::string, int32_t> bytes_table(const py::handle& obj) {
    std::unordered_map<std::string, int32_t> out;
    for (auto item : py::reinterpret_borrow<py::dict>(obj)) out[item.first.cast<std::string>()] = item.second.cast<int32_t>();
    return out;
}

app::TextGrammar text_grammar(const py::dict& g) {
    app::TextGrammar t;
    const py::dict tok = g["tokens"];
    t.request = token(tok, "request");
    t.response = token(tok, "response");
    t.end = token(tok, "end");
    t.headers_end = token(tok, "headers_end");
    t.msg_end = token(tok, "msg_end");
    t.method_other = token(tok, "method_other");
    t.version_other = token(tok, "version_other");
    t.status_other = token(tok, "status_other");
    t.reason_standard = token(tok, "reason_standard");
    t.reason_none = token(tok, "reason_none");
    t.header_other = token(tok, "header_other");
    t.value = token(tok, "value");
    t.value_raw = token(tok, "value_raw");
    t.value_length = token(tok, "value_length");
    t.methods = bytes_table(g["methods"]);
    t.versions = bytes_table(g["versions"]);
    t.statuses = bytes_table(g["statuses"]);
    t.header_names = bytes_table(g["header_names"]);
    for (auto item : py::reinterpret_borrow<py::dict>(g["standard_reasons"]))
        t.standard_reason[item.first.cast<std::string>()] = item.second.cast<std::string>();
    t.length_header = g["length_header"].cast<std::string>();
    t.transfer_header = g["transfer_header"].cast<std::string>();
    t.chunked = g["chunked"].cast<std::string>();
    t.version_prefix = g["version_prefix"].cast<std::string>();
    t.no_body_statuses = g["no_body_statuses"].cast<std::vector<std::string>>();
    const std::string cls = g["no_body_status_class"].cast<std::string>();
    if (cls.size() != 1) throw py::value_error("app grammar: no_body_status_class must be one character");
    t.no_body_status_class = cls[0];
    return t;
}

std::vector<app::Op> ops(const py::handle& list, int depth) {
    if (depth > 16) throw py::value_error("app grammar: field operations nested too deep");
    std::vector<app::Op> out;
    for (auto item : py::reinterpret_borrow<py::list>(list)) {
        const py::dict d = py::reinterpret_borrow<py::dict>(item);
        const std::string kind = d["op"].cast<std::string>();
        app::Op op;
        op.var = d.contains("var") ? d["var"].cast<int>() : -1;
        if (op.var >= app::N_VARS) throw py::value_error("app grammar: variable slot out of range");
        op.n = d.contains("n") ? d["n"].cast<uint32_t>() : 0;
        op.end = d.contains("end") ? d["end"].cast<int32_t>() : -1;
        op.other = d.contains("other") ? d["other"].cast<int32_t>() : -1;
        op.u8_table.fill(-1);
        if (kind == "u8") {
            op.kind = app::OpKind::U8;
        } else if (kind == "bytes") {
            op.kind = app::OpKind::BYTES;
        } else if (kind == "str16") {
            op.kind = app::OpKind::STR16;
        } else if (kind == "enum_str16") {
            op.kind = app::OpKind::ENUM_STR16;
            op.str_table = bytes_table(d["table"]);
        } else if (kind == "enum_u8") {
            op.kind = app::OpKind::ENUM_U8;
            for (auto e : py::reinterpret_borrow<py::dict>(d["table"])) {
                const int key = e.first.cast<int>();
                if (key < 0 || key > 255) throw py::value_error("app grammar: enum_u8 key outside 0..255");
                op.u8_table[key] = e.second.cast<int32_t>();
            }
        } else if (kind == "varbytes") {
            op.kind = app::OpKind::VARBYTES;
        } else if (kind == "rest") {
            op.kind = app::OpKind::REST;
        } else if (kind == "if_eq" || kind == "if_any" || kind == "if_header_any") {
            op.kind = kind == "if_eq" ? app::OpKind::IF_EQ : kind == "if_any" ? app::OpKind::IF_ANY : app::OpKind::IF_HDR_ANY;
            op.then = ops(d["then"], depth + 1);
        } else {
            throw py::value_error("app grammar: unknown field operation '" + kind + "'");
        }
        if ((op.kind == app::OpKind::IF_EQ || op.kind == app::OpKind::IF_ANY) && op.var < 0)
            throw py::value_error("app grammar: '" + kind + "' needs a variable slot");
        out.push_back(std::move(op));
    }
    return out;
}

app::BinaryGrammar binary_grammar(const py::dict& g) {
    app::BinaryGrammar b;
    const py::dict tok = g["tokens"];
    b.type0 = token(tok, "type0");
    b.flags0 = token(tok, "flags0");
    b.rl_derived = token(tok, "rl_derived");
    b.rl_explicit = token(tok, "rl_explicit");
    b.raw = token(tok, "raw");
    b.packet_end = token(tok, "packet_end");
    const py::list types = g["types"];
    if (py::len(types) != 16) throw py::value_error("app grammar: 'types' must describe the 16 packet types");
    for (size_t t = 0; t < 16; ++t) {
        const py::dict d = types[t];
        b.type_allowed[t] = d["allowed"].cast<bool>();
        b.flag_mask[t] = d["flag_mask"].cast<uint8_t>();
        b.flag_value[t] = d["flag_value"].cast<uint8_t>();
        b.flag_differ[t] = d["flag_differ"].cast<bool>();
        b.min_raw_body[t] = d["min_raw_body"].cast<uint32_t>();
        b.structured[t] = !d["body"].is_none();
        if (b.structured[t]) b.bodies[t] = ops(d["body"], 0);
    }
    return b;
}

py::tuple app_grammar_encode(const py::dict& grammar, const py::array_t<uint8_t, py::array::c_style>& data,
                             const py::array_t<uint64_t, py::array::c_style>& off,
                             const py::array_t<uint32_t, py::array::c_style>& len) {
    const std::string family = grammar["family"].cast<std::string>();
    std::variant<app::TextGrammar, app::BinaryGrammar> g;
    if (family == "text")
        g = text_grammar(grammar);
    else if (family == "binary")
        g = binary_grammar(grammar);
    else
        throw py::value_error("app grammar: unknown family '" + family + "'");
    if (off.ndim() != 1 || len.ndim() != 1 || off.shape(0) != len.shape(0))
        throw py::value_error("app grammar: off and len must be 1-D of one length");
    const size_t n = size_t(off.shape(0)), n_data = size_t(data.size());
    const uint8_t* d = data.data();
    const uint64_t* o = off.data();
    const uint32_t* l = len.data();
    std::vector<int8_t> status(n, 0);
    std::vector<int64_t> offsets(n + 1, 0);
    std::vector<int32_t> tokens;
    {
        py::gil_scoped_release release;
        app::Tokens local;
        for (size_t i = 0; i < n; ++i) {
            local.clear();
            int s = 0;
            if (o[i] <= n_data && l[i] <= n_data - o[i]) {  // a range outside the buffer stays unencoded
                if (std::holds_alternative<app::TextGrammar>(g))
                    s = app::encode_text(std::get<app::TextGrammar>(g), d + o[i], l[i], local) ? 1 : 0;
                else
                    s = app::encode_binary(std::get<app::BinaryGrammar>(g), d + o[i], l[i], local);
            }
            status[i] = int8_t(s);
            if (s == 1) tokens.insert(tokens.end(), local.begin(), local.end());
            offsets[i + 1] = int64_t(tokens.size());
        }
    }
    return py::make_tuple(owned_array(std::move(status)), owned_array(std::move(offsets)),
                          owned_array(std::move(tokens)));
}

py::tuple app_grammar_decode(const py::dict& grammar, int32_t n_local,
                             const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& tokens,
                             const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& offsets) {
    const app::Detokenizer detok = make_detokenizer(grammar, n_local);
    if (offsets.ndim() != 1 || offsets.size() < 1 || tokens.ndim() != 1)
        throw py::value_error("app grammar: tokens must be 1-D and offsets 1-D with at least one entry");
    const size_t n = size_t(offsets.size() - 1), n_tokens = size_t(tokens.size());
    const int64_t* o = offsets.data();
    for (size_t i = 0; i < n; ++i)
        if (o[i] < 0 || o[i] > o[i + 1] || uint64_t(o[i + 1]) > n_tokens)
            throw py::value_error("app grammar: offsets must be non-decreasing positions within tokens");
    std::vector<uint8_t> ok(n, 0), data;
    std::vector<int64_t> data_off(n + 1, 0);
    {
        py::gil_scoped_release release;
        app::Bytes one;
        for (size_t i = 0; i < n; ++i) {
            ok[i] = detok.decode(tokens.data() + o[i], size_t(o[i + 1] - o[i]), one) ? 1 : 0;
            data.insert(data.end(), one.begin(), one.end());
            data_off[i + 1] = int64_t(data.size());
        }
    }
    return py::make_tuple(owned_array(std::move(ok)), owned_array(std::move(data_off)), owned_array(std::move(data)));
}

py::array_t<uint64_t> payload_digests(const py::array_t<uint8_t, py::array::c_style>& data,
                                      const py::array_t<int64_t, py::array::c_style>& off,
                                      const py::array_t<int64_t, py::array::c_style>& len) {
    if (off.ndim() != 1 || len.ndim() != 1 || off.shape(0) != len.shape(0))
        throw py::value_error("payload_digests: off and len must be 1-D of one length");
    const size_t n = size_t(off.shape(0)), n_data = size_t(data.size());
    py::array_t<uint64_t> out({py::ssize_t(n), py::ssize_t(2)});
    uint64_t* o = out.mutable_data();
    const uint8_t* d = data.data();
    const int64_t* offs = off.data();
    const int64_t* lens = len.data();
    {
        py::gil_scoped_release release;
        for (size_t i = 0; i < n; ++i) {
            const bool inside = offs[i] >= 0 && lens[i] >= 0 && uint64_t(offs[i]) <= n_data &&
                                uint64_t(lens[i]) <= n_data - uint64_t(offs[i]);
            const auto h = inside ? app::digest(d + offs[i], size_t(lens[i])) : std::array<uint64_t, 2>{0, 0};
            o[2 * i] = h[0];
            o[2 * i + 1] = h[1];
        }
    }
    return out;
}

}  // namespace

app::Detokenizer make_detokenizer(const py::dict& grammar, int32_t n_local) {
    const std::string family = grammar["family"].cast<std::string>();
    if (n_local < 0) throw py::value_error("app grammar: n_local must be >= 0");
    if (family == "text") return app::Detokenizer(text_grammar(grammar), n_local);
    if (family == "binary") return app::Detokenizer(binary_grammar(grammar), n_local);
    throw py::value_error("app grammar: unknown family '" + family + "'");
}

void bind_app_grammar(py::module_& m) {
    m.def("app_grammar_encode", &app_grammar_encode, py::arg("grammar"), py::arg("data"), py::arg("off"),
          py::arg("len"),
          R"pbdoc(
            Tokenize payloads ``data[off[i]:off[i]+len[i]]`` with a declared app-protocol grammar
            (``pytrafgen.app_grammar``: ``TextGrammar.to_core()`` / ``BinaryGrammar.to_core()``),
            without the GIL. Returns ``(status, offsets, tokens)``: status int8 per payload (1
            encoded, 0 kept as bytes, -1 kept as bytes because a length in it is malformed),
            payload i's local token ids are ``tokens[offsets[i]:offsets[i+1]]`` (int32).
          )pbdoc");
    m.def("app_grammar_decode", &app_grammar_decode, py::arg("grammar"), py::arg("n_local"), py::arg("tokens"),
          py::arg("offsets"),
          R"pbdoc(
            Detokenize with a declared app-protocol grammar: span i = ``tokens[offsets[i]:offsets[i+1]]``
            (local ids < ``n_local``) back to bytes, without the GIL. Returns ``(ok, data_offsets, data)``:
            ok uint8 per span (1: a sequence the encoder writes, its bytes are
            ``data[data_offsets[i]:data_offsets[i+1]]``; 0: refused, the plugin's Python decoder decides).
          )pbdoc");
    m.def("payload_digests", &payload_digests, py::arg("data"), py::arg("off"), py::arg("len"),
          R"pbdoc(
            (n, 2) uint64: two independent 64-bit digests of each ``data[off[i]:off[i]+len[i]]``
            (0, 0 for a range outside ``data``), to group payloads by content in bulk.
          )pbdoc");
}

}  // namespace pytrafgen
