// Binds the protocol-field tokenizer (tokenize.hpp): encode_flows, decode_tokens.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "bind_app_grammar.hpp"
#include "bindings.hpp"
#include "tokenize.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

template <class T>
py::array_t<T> owned(std::vector<T>&& v) {
    auto* heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void* ptr) { delete static_cast<std::vector<T>*>(ptr); });
    return py::array_t<T>({heap->size()}, {sizeof(T)}, heap->data(), owner);
}

using Keep = std::vector<py::array>;

// A 1-D column converted to T (copied only when its dtype or layout differs), length-checked.
template <class T>
const T* column(const py::object& obj, const std::string& name, py::ssize_t n, Keep& keep) {
    auto arr = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!arr) throw py::type_error("tokenize: column '" + name + "' is not array-like");
    if (arr.ndim() != 1 || (n >= 0 && arr.shape(0) != n))
        throw py::value_error("tokenize: column '" + name + "' must be 1-D of length " + std::to_string(n));
    keep.push_back(arr);
    return arr.data();
}

template <class T>
const T* dict_column(const py::dict& d, const char* name, py::ssize_t n, Keep& keep) {
    if (!d.contains(name)) throw py::key_error(std::string("tokenize: missing column '") + name + "'");
    return column<T>(d[name], name, n, keep);
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
    p.frame_off = dict_column<uint64_t>(packets, "frame_off", n, keep);
    p.caplen = dict_column<uint32_t>(packets, "caplen", n, keep);
    p.ts_ns = dict_column<int64_t>(packets, "ts_ns", n, keep);
    p.status = dict_column<uint8_t>(packets, "status", n, keep);
    p.l3 = dict_column<uint8_t>(packets, "l3", n, keep);
    p.proto = dict_column<uint8_t>(packets, "proto", n, keep);
    p.ttl = dict_column<uint8_t>(packets, "ttl", n, keep);
    p.tos = dict_column<uint8_t>(packets, "tos", n, keep);
    p.ip_flags = dict_column<uint8_t>(packets, "ip_flags", n, keep);
    p.icmp_type = dict_column<uint8_t>(packets, "icmp_type", n, keep);
    p.icmp_code = dict_column<uint8_t>(packets, "icmp_code", n, keep);
    p.l3_off = dict_column<uint16_t>(packets, "l3_off", n, keep);
    p.ip_hdr_len = dict_column<uint16_t>(packets, "ip_hdr_len", n, keep);
    p.frag_offset = dict_column<uint16_t>(packets, "frag_offset", n, keep);
    p.l4_off = dict_column<uint16_t>(packets, "l4_off", n, keep);
    p.l4_hdr_len = dict_column<uint16_t>(packets, "l4_hdr_len", n, keep);
    p.tcp_flags = dict_column<uint16_t>(packets, "tcp_flags", n, keep);
    p.window = dict_column<uint16_t>(packets, "window", n, keep);
    p.urgent = dict_column<uint16_t>(packets, "urgent", n, keep);
    p.ip_id = dict_column<uint32_t>(packets, "ip_id", n, keep);
    p.flow_label = dict_column<uint32_t>(packets, "flow_label", n, keep);
    p.seq = dict_column<uint32_t>(packets, "seq", n, keep);
    p.ack = dict_column<uint32_t>(packets, "ack", n, keep);
    p.payload_off = dict_column<uint32_t>(packets, "payload_off", n, keep);
    p.payload_len = dict_column<uint32_t>(packets, "payload_len", n, keep);
    p.payload_wirelen = dict_column<uint32_t>(packets, "payload_wirelen", n, keep);
    p.flow_id = dict_column<int64_t>(packets, "flow_id", n, keep);
    p.direction = dict_column<uint8_t>(packets, "direction", n, keep);

    tok::Flows f;
    const py::ssize_t nf = py::len(flows["proto"]);
    f.n = size_t(nf);
    f.l3 = dict_column<uint8_t>(flows, "l3", nf, keep);
    f.proto = dict_column<uint8_t>(flows, "proto", nf, keep);
    f.client_port = dict_column<uint16_t>(flows, "client_port", nf, keep);
    f.server_port = dict_column<uint16_t>(flows, "server_port", nf, keep);
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
    py::capsule token_owner(token_data, [](void* ptr) { std::free(ptr); });
    py::array_t<uint16_t> tokens({n_tokens}, {sizeof(uint16_t)}, token_data, token_owner);
    return py::make_tuple(tokens, owned(std::move(out.offsets)), out.packets_encoded, skipped);
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
    auto& pk = out.pk;
    py::dict packets;
    packets["flow"] = owned(std::move(pk.flow));
    packets["direction"] = owned(std::move(pk.direction));
    packets["ts_ns"] = owned(std::move(pk.ts_ns));
    packets["ttl"] = owned(std::move(pk.ttl));
    packets["tos"] = owned(std::move(pk.tos));
    packets["ip_id"] = owned(std::move(pk.ip_id));
    packets["ip_flags"] = owned(std::move(pk.ip_flags));
    packets["frag_offset"] = owned(std::move(pk.frag_offset));
    packets["flow_label"] = owned(std::move(pk.flow_label));
    packets["ip_opt_off"] = owned(std::move(pk.ip_opt_off));
    packets["ip_opt_len"] = owned(std::move(pk.ip_opt_len));
    packets["tcp_flags"] = owned(std::move(pk.tcp_flags));
    packets["seq"] = owned(std::move(pk.seq));
    packets["ack"] = owned(std::move(pk.ack));
    packets["window"] = owned(std::move(pk.window));
    packets["urgent"] = owned(std::move(pk.urgent));
    packets["icmp_type"] = owned(std::move(pk.icmp_type));
    packets["icmp_code"] = owned(std::move(pk.icmp_code));
    packets["icmp_rest"] = owned(std::move(pk.icmp_rest));
    packets["l4_opt_off"] = owned(std::move(pk.l4_opt_off));
    packets["l4_opt_len"] = owned(std::move(pk.l4_opt_len));
    packets["payload_off"] = owned(std::move(pk.payload_off));
    packets["payload_stored"] = owned(std::move(pk.payload_stored));
    packets["payload_len"] = owned(std::move(pk.payload_len));
    py::dict flows;
    flows["label"] = owned(std::move(out.label));
    flows["ip_version"] = owned(std::move(out.ip_version));
    flows["proto"] = owned(std::move(out.proto));
    flows["client_port"] = owned(std::move(out.client_port));
    flows["server_port"] = owned(std::move(out.server_port));
    py::dict errors;
    for (int e = 1; e < tok::DEC_COUNT; ++e) errors[tok::decode_error_name(e)] = out.errors[e];
    py::dict res;
    res["packets"] = packets;
    res["flows"] = flows;
    res["blob"] = owned(std::move(out.blob));
    res["source_flow"] = owned(std::move(out.source_flow));
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

        packets: dict of PacketTable columns plus 'flow_id' (int64) and 'direction' (uint8);
        data: the shared frame buffer; flows: dict with l3, proto, client_port, server_port;
        labels: int32 class index per flow (< 0: skip the flow); spec: the vocabulary layout
        (pytrafgen.tokenizer.encode.codec_spec); app_*: sorted packet indices whose payload
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
