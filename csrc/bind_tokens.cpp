// Binds the protocol-field tokenizer (tokenize.hpp): encode_flows, decode_tokens.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bind_app_grammar.hpp"
#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "tokenize.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

using Keep = std::vector<py::array>;

// A column converted to T (copied only when its dtype or layout differs), length-checked:
// 1-D, or (n, width) when width > 1.
template <class T>
const T* column(const py::object& obj, const std::string& name, py::ssize_t n, Keep& keep, int width = 1) {
    auto arr = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!arr) throw py::type_error("tokenize: column '" + name + "' is not array-like");
    const bool shape_ok = width == 1 ? arr.ndim() == 1 : arr.ndim() == 2 && arr.shape(1) == width;
    if (!shape_ok || (n >= 0 && arr.shape(0) != n))
        throw py::value_error("tokenize: column '" + name + "' must be " +
                              (width == 1 ? std::string("1-D") : "(n, " + std::to_string(width) + ")") +
                              " of length " + std::to_string(n));
    keep.push_back(arr);
    return arr.data();
}

// Column `name` of a dict, as the C++ column type T (an address: (n, 16) uint8).
template <class T>
const T* dict_column(const py::dict& d, const char* name, py::ssize_t n, Keep& keep, int width = 1) {
    if (!d.contains(name)) throw py::key_error(std::string("tokenize: missing column '") + name + "'");
    using E = typename ColumnElem<T>::type;
    return reinterpret_cast<const T*>(column<E>(d[name], name, n, keep, width));
}

tok::Layout make_layout(const py::dict& spec, Keep& keep) {
    tok::Layout lay;
    const int32_t* starts = dict_column<int32_t>(spec, "layout", tok::R_COUNT, keep);
    std::copy(starts, starts + tok::R_COUNT, lay.start);
    lay.class_start = spec["class_start"].cast<int32_t>();
    lay.n_classes = spec["n_classes"].cast<int32_t>();
    lay.vocab_size = spec["vocab_size"].cast<int32_t>();
    lay.payload_cap = spec["payload_cap"].cast<uint32_t>();
    const int64_t* edges = dict_column<int64_t>(spec, "iat_edges", tok::kIatBuckets - 1, keep);
    // parenthesised: `edges + kIatBuckets - 1` formed a pointer two past the array's end (UB)
    std::copy(edges, edges + (tok::kIatBuckets - 1), lay.iat_edges);
    const int64_t* values = dict_column<int64_t>(spec, "iat_values", tok::kIatBuckets, keep);
    std::copy(values, values + tok::kIatBuckets, lay.iat_values);
    auto apps = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(spec["apps"]);
    if (!apps || apps.ndim() != 2 || apps.shape(1) != 4) throw py::value_error("tokenize: 'apps' must be (A, 4) int32");
    for (py::ssize_t a = 0; a < apps.shape(0); ++a) {
        lay.app_begin.push_back(apps.at(a, 0));
        lay.app_size.push_back(apps.at(a, 1));
        lay.app_transport.push_back(apps.at(a, 2));
    }
    return lay;
}

py::tuple encode_flows(const py::dict& packets, const py::array& data, const py::dict& flows,
                       const py::array& labels, const py::dict& spec, const py::array& app_packet,
                       const py::array& app_offsets, const py::array& app_tokens) {
    Keep keep;
    tok::Layout lay = make_layout(spec, keep);
    tok::Packets p;
    const py::ssize_t n = py::len(packets["ts_ns"]);
    p.n = size_t(n);
    auto data_arr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(data);
    if (!data_arr || data_arr.ndim() != 1) throw py::value_error("tokenize: data must be a 1-D uint8 buffer");
    keep.push_back(data_arr);
    p.data = data_arr.data();
    p.data_len = size_t(data_arr.shape(0));
#define PYTRAFGEN_BORROW(name, type, width) p.name = dict_column<type>(packets, #name, n, keep, width);
    PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_BORROW)
    PYTRAFGEN_FLOW_PACKET_COLUMNS(PYTRAFGEN_BORROW)
#undef PYTRAFGEN_BORROW

    tok::Flows f;
    const py::ssize_t nf = py::len(flows["proto"]);
    f.n = size_t(nf);
#define PYTRAFGEN_BORROW(name, type, width) f.name = dict_column<type>(flows, #name, nf, keep, width);
    PYTRAFGEN_FLOW_COLUMNS(PYTRAFGEN_BORROW)
#undef PYTRAFGEN_BORROW
    f.label = column<int32_t>(labels, "labels", nf, keep);

    tok::AppOverride app;
    app.packet = column<int64_t>(app_packet, "app_packet", -1, keep);
    app.n = size_t(py::len(app_packet));
    app.offsets = column<int64_t>(app_offsets, "app_offsets", py::ssize_t(app.n + 1), keep);
    app.tokens = column<uint16_t>(app_tokens, "app_tokens", -1, keep);
    app.n_tokens = size_t(py::len(app_tokens));

    tok::EncodeResult out;
    {
        py::gil_scoped_release release;
        tok::encode(p, f, lay, app, out);
    }
    py::dict skipped;
    for (int s = 0; s < tok::SKIP_COUNT; ++s) skipped[tok::encode_skip_name(s)] = out.skipped[s];
    const size_t n_tokens = out.tokens.size;
    uint16_t* token_data = out.tokens.release();
    std::unique_ptr<uint16_t, void (*)(void*)> token_block(token_data, std::free);
    py::array tokens = owning_array(std::move(token_block), token_data, {py::ssize_t(n_tokens)});
    return py::make_tuple(tokens, owned_array(std::move(out.offsets)), out.packets_encoded, skipped);
}

py::dict decode_tokens(const py::array& tokens, const py::array& offsets, const py::dict& spec, bool strict,
                       const py::object& app_decode, const py::object& app_grammars) {
    Keep keep;
    tok::Layout lay = make_layout(spec, keep);
    const uint16_t* t = column<uint16_t>(tokens, "tokens", -1, keep);
    const size_t n_tokens = size_t(py::len(tokens));
    const int64_t* off = column<int64_t>(offsets, "offsets", -1, keep);
    const size_t n_off = size_t(py::len(offsets));
    if (n_off < 1) throw py::value_error("decode: offsets must hold at least one entry");
    for (size_t k = 0; k + 1 < n_off; ++k)
        if (off[k] > off[k + 1]) throw py::value_error("decode: offsets must not decrease");

    // per app: its declared grammar's C++ detokenizer (None: the plugin's Python decode only)
    std::vector<std::shared_ptr<const app::Detokenizer>> detok;
    if (!app_grammars.is_none()) {
        for (auto item : py::reinterpret_borrow<py::list>(app_grammars)) {
            if (item.is_none()) {
                detok.push_back(nullptr);
            } else {
                auto pair = item.cast<py::tuple>();
                detok.push_back(std::make_shared<const app::Detokenizer>(
                    make_detokenizer(pair[0].cast<py::dict>(), pair[1].cast<int32_t>())));
            }
        }
    }
    tok::AppDecodeFn fn;
    if (!app_decode.is_none() || !detok.empty()) {
        py::object py_fn = app_decode;
        fn = [py_fn, detok](int app, const int32_t* local, size_t n, int direction, std::vector<uint8_t>& bytes) {
            // a sequence the encoder writes: C++, no GIL; anything else: the plugin decides
            if (size_t(app) < detok.size() && detok[size_t(app)] && detok[size_t(app)]->decode(local, n, bytes))
                return true;
            if (py_fn.is_none()) return false;
            py::gil_scoped_acquire gil;
            try {
                py::list ids(n);
                for (size_t k = 0; k < n; ++k) ids[k] = local[k];
                py::object res = py_fn(app, ids, direction);
                if (res.is_none()) return false;
                std::string s = res.cast<py::bytes>();
                bytes.assign(s.begin(), s.end());
                return true;
            } catch (py::error_already_set&) {
                return false;
            } catch (py::cast_error&) {
                return false;
            }
        };
    }
    tok::DecodeResult out;
    {
        py::gil_scoped_release release;
        tok::decode(t, n_tokens, off, n_off - 1, lay, strict, fn, out);
    }
    py::dict packets, flows;
#define PYTRAFGEN_EXPORT(name, type, width) packets[#name] = owned_array(std::move(out.pk.name));
    PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_EXPORT)
#undef PYTRAFGEN_EXPORT
#define PYTRAFGEN_EXPORT(name, type, width) flows[#name] = owned_array(std::move(out.name));
    PYTRAFGEN_RECORD_FLOW_COLUMNS(PYTRAFGEN_EXPORT)
#undef PYTRAFGEN_EXPORT
    py::dict errors;
    for (int e = 1; e < tok::DEC_COUNT; ++e) errors[tok::decode_error_name(e)] = out.errors[e];
    py::dict res;
    res["packets"] = packets;
    res["flows"] = flows;
    res["blob"] = owned_array(std::move(out.blob));
    res["source_flow"] = owned_array(std::move(out.source_flow));
    res["errors"] = errors;
    res["decoded"] = out.errors[tok::DEC_OK];
    res["first_error"] = out.first_error ? py::object(py::str(tok::decode_error_name(out.first_error))) : py::none();
    res["error_flow"] = out.error_flow;
    res["error_pos"] = out.error_pos;
    return res;
}

}  // namespace

void bind_tokens(py::module_& m) {
    m.def("tokenizer_range_names", [] {
        std::vector<std::string> names(tok::range_names(), tok::range_names() + tok::R_COUNT);
        return names;
    }, R"pbdoc(Names of the core token ranges in the order the C++ codec expects their start ids.)pbdoc");
    m.def("encode_flows", &encode_flows, py::arg("packets"), py::arg("data"), py::arg("flows"),
          py::arg("labels"), py::arg("spec"), py::arg("app_packet"), py::arg("app_offsets"),
          py::arg("app_tokens"),
          R"pbdoc(
        Encode flows into one token sequence each (GIL released).

        packets: dict of every PacketTable row column plus 'flow_id' (int64) and 'direction'
        (uint8); data: the shared frame buffer; flows: dict of the FlowTable's per-flow columns
        (pytrafgen.tokenizer.encode.core_columns builds both); labels: int32 class index per
        flow (< 0: skip the flow); spec: the token layout (CodecLayout.to_core(),
        pytrafgen/tokenizer/layout.py); app_*: sorted packet indices whose payload
        tokens are replaced by the given spans. Returns (tokens uint16, offsets int64 [F+1],
        packets_encoded, skipped counts by reason). A flow that is not encoded has an empty span.
    )pbdoc");
    m.def("decode_tokens", &decode_tokens, py::arg("tokens"), py::arg("offsets"), py::arg("spec"),
          py::arg("strict"), py::arg("app_decode"), py::arg("app_grammars") = py::none(),
          R"pbdoc(
        Decode token spans (one flow each) into field-record columns (GIL released).

        app_decode(app_index, local_ids, direction) -> bytes | None is called for application
        protocol spans (None: no application protocols); app_grammars (optional): per app index
        None or (grammar dict, local token count): a declared grammar's C++ detokenizer decodes
        the spans it accepts without Python, the others go to app_decode. Returns a dict: packets, flows, blob,
        source_flow, errors (counts by reason), decoded, and first_error / error_flow /
        error_pos (strict mode stops at the first malformed flow).
    )pbdoc");
}

}  // namespace pytrafgen
