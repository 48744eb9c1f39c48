// Binds the checksum routines (checksum.hpp) and the packet builder (build.hpp).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "build.hpp"
#include "build_prep.hpp"
#include "checksum.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

// A numpy array over `n` items of `buf`, which it then owns (no copy).
template <class T>
py::array buffer_array(build::Buffer&& buf, size_t n) {
    const T* first = buf.as<T>();
    return owning_array(std::move(buf), first, {py::ssize_t(n)});
}

// Borrow a column: exact dtype, expected length (and row width), C-contiguous (copied if not).
// `keep` holds any contiguous copy alive until the build is done.
template <class T>
const T* borrow(const py::handle& obj, const std::string& name, size_t n, size_t width,
                std::vector<py::array>& keep) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error("build: column '" + name + "' is not a numpy array");
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (!py::isinstance<py::array_t<T>>(arr))  // equivalent dtype (an unpickled one is not the same object)
        throw py::type_error("build: column '" + name + "' has dtype " + std::string(py::str(arr.dtype())) +
                             ", expected " + std::string(py::str(py::dtype::of<T>())));
    const size_t expected_ndim = width ? 2 : 1;
    if (static_cast<size_t>(arr.ndim()) != expected_ndim || static_cast<size_t>(arr.shape(0)) != n ||
        (width && static_cast<size_t>(arr.shape(1)) != width))
        throw py::value_error("build: column '" + name + "' has the wrong shape (expected " + std::to_string(n) +
                              (width ? " x " + std::to_string(width) : std::string()) + ")");
    auto contiguous = py::array_t<T, py::array::c_style>::ensure(arr);
    keep.push_back(contiguous);
    return contiguous.data();
}

template <class T>
const T* packet_column(const py::dict& d, const char* name, size_t n, std::vector<py::array>& keep) {
    if (!d.contains(name)) throw py::key_error(std::string("build: missing packet column '") + name + "'");
    return borrow<T>(d[name], name, n, 0, keep);
}

template <class T>
const T* flow_column(const py::dict& d, const char* name, size_t n, std::vector<py::array>& keep) {
    if (!d.contains(name)) throw py::key_error(std::string("build: missing flow column '") + name + "'");
    return borrow<T>(d[name], name, n, 0, keep);
}

template <class T>
const T* optional_column(const py::dict& d, const char* name, size_t n, std::vector<py::array>& keep) {
    return d.contains(name) ? borrow<T>(d[name], std::string("raw_derived.") + name, n, 0, keep) : nullptr;
}

py::dict build_frames(const py::dict& packets, const py::dict& flows, const py::array& client_addr,
                      const py::array& server_addr, const py::array& client_mac, const py::array& server_mac,
                      const py::array& isn, const py::array& blob, int linktype, bool repair,
                      const py::dict& raw_derived, const py::object& order) {
    if (linktype != build::LINKTYPE_ETHERNET && linktype != build::LINKTYPE_RAW)
        throw py::value_error("build: linktype must be 1 (Ethernet) or 101 (raw IP), got " + std::to_string(linktype));
    std::vector<py::array> keep;
    if (!packets.contains("flow")) throw py::key_error("build: missing packet column 'flow'");
    const size_t n = static_cast<size_t>(py::len(packets["flow"]));

    build::PacketColumns p;
    p.n = n;
#define PYTRAFGEN_BORROW(name, type, width) p.name = packet_column<type>(packets, #name, n, keep);
    PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_BORROW)
#undef PYTRAFGEN_BORROW

    if (!flows.contains("ip_version")) throw py::key_error("build: missing flow column 'ip_version'");
    const size_t nf = static_cast<size_t>(py::len(flows["ip_version"]));
    build::FlowColumns f;
    f.n = nf;
#define PYTRAFGEN_BORROW(name, type, width) f.name = flow_column<type>(flows, #name, nf, keep);
    PYTRAFGEN_RECORD_FLOW_COLUMNS(PYTRAFGEN_BORROW)
#undef PYTRAFGEN_BORROW
    f.client_addr = borrow<uint8_t>(client_addr, "client_addr", nf, 16, keep);
    f.server_addr = borrow<uint8_t>(server_addr, "server_addr", nf, 16, keep);
    f.client_mac = borrow<uint8_t>(client_mac, "client_mac", nf, 6, keep);
    f.server_mac = borrow<uint8_t>(server_mac, "server_mac", nf, 6, keep);
    f.isn = borrow<uint32_t>(isn, "isn", nf, 2, keep);

    if (!py::isinstance<py::array>(blob)) throw py::type_error("build: blob is not a numpy array");
    const uint8_t* blob_ptr = borrow<uint8_t>(blob, "blob", static_cast<size_t>(py::len(blob)), 0, keep);
    const size_t blob_len = static_cast<size_t>(py::len(blob));

    build::RawDerived raw;
    raw.ip_hdr_len = optional_column<uint16_t>(raw_derived, "ip_hdr_len", n, keep);
    raw.ip_total_len = optional_column<uint16_t>(raw_derived, "ip_total_len", n, keep);
    raw.l4_hdr_len = optional_column<uint16_t>(raw_derived, "l4_hdr_len", n, keep);
    raw.udp_len = optional_column<uint16_t>(raw_derived, "udp_len", n, keep);
    raw.ip_csum = optional_column<uint16_t>(raw_derived, "ip_csum", n, keep);
    raw.l4_csum = optional_column<uint16_t>(raw_derived, "l4_csum", n, keep);

    build::Options opt;
    opt.linktype = static_cast<uint16_t>(linktype);
    opt.repair = repair;
    if (!order.is_none()) {
        const size_t n_order = static_cast<size_t>(py::len(order));
        opt.order = borrow<int64_t>(order, "order", n_order, 0, keep);
        opt.n_order = n_order;
        for (size_t k = 0; k < n_order; ++k)
            if (opt.order[k] < 0 || static_cast<size_t>(opt.order[k]) >= n)
                throw py::index_error("build: order[" + std::to_string(k) + "] = " + std::to_string(opt.order[k]) +
                                      " is not a packet index");
    }

    build::Result r;
    {
        py::gil_scoped_release release;
        r = build::build(p, f, blob_ptr, blob_len, raw, opt);
    }
    py::dict out;
    out["data"] = buffer_array<uint8_t>(std::move(r.data), r.data_len);
    out["frame_off"] = buffer_array<uint64_t>(std::move(r.frame_off), r.n_frames);
    out["frame_len"] = buffer_array<uint32_t>(std::move(r.frame_len), r.n_frames);
    out["packet"] = buffer_array<int64_t>(std::move(r.packet), r.n_frames);
    out["status"] = buffer_array<uint8_t>(std::move(r.status), n);
    return out;
}

// Client ports with repeated connections moved to free ports (build_prep.hpp); None when no
// flow repeats another's connection. `draw(rows)` gives (rows, k) int64 candidate ports.
py::object distinct_client_ports(const py::array& proto, const py::array& client_addr, const py::array& client_port,
                                 const py::array& server_addr, const py::array& server_port,
                                 const py::function& draw) {
    std::vector<py::array> keep;
    build_prep::FlowEnds f;
    f.n = static_cast<size_t>(py::len(proto));
    f.proto = borrow<uint8_t>(proto, "proto", f.n, 0, keep);
    f.client_addr = borrow<uint8_t>(client_addr, "client_addr", f.n, 16, keep);
    f.client_port = borrow<uint16_t>(client_port, "client_port", f.n, 0, keep);
    f.server_addr = borrow<uint8_t>(server_addr, "server_addr", f.n, 16, keep);
    f.server_port = borrow<uint16_t>(server_port, "server_port", f.n, 0, keep);
    build_prep::TakenKeys taken;
    std::vector<int64_t> again;
    {
        py::gil_scoped_release release;
        again = build_prep::repeated_connections(f, taken);
    }
    if (again.empty()) return py::none();
    py::array_t<uint16_t> out(static_cast<py::ssize_t>(f.n));
    std::memcpy(out.mutable_data(), f.client_port, f.n * sizeof(uint16_t));
    // candidates are asked for in chunks (a draw in bulk gives the same ports as one per row)
    constexpr size_t CHUNK_ROWS = 4096;
    py::array_t<int64_t, py::array::c_style> chunk;
    size_t used = 0, chunk_rows = 0, asked = 0, per_row = 0;
    auto next_draws = [&]() -> const int64_t* {
        if (used == chunk_rows) {
            const size_t rows = std::min(CHUNK_ROWS, again.size() - asked);
            chunk = py::array_t<int64_t, py::array::c_style>::ensure(draw(rows));
            if (!chunk || chunk.ndim() != 2 || static_cast<size_t>(chunk.shape(0)) != rows ||
                (per_row && static_cast<size_t>(chunk.shape(1)) != per_row) || chunk.shape(1) == 0)
                throw py::value_error("build: draw(rows) must give a (rows, k) int64 array");
            per_row = static_cast<size_t>(chunk.shape(1));
            asked += rows;
            chunk_rows = rows;
            used = 0;
        }
        return chunk.data() + per_row * used++;
    };
    next_draws();  // the first chunk fixes the candidates per row
    used = 0;
    build_prep::resolve_ports(f, again, taken, per_row, next_draws, out.mutable_data());
    return out;
}

// (first timestamp per flow, whether flows of one class pile up at one instant) or None when a
// flow index is out of range.
py::object flow_first_ts(const py::array& flow, const py::array& ts, const py::array& label, bool want_piled) {
    std::vector<py::array> keep;
    const size_t n = static_cast<size_t>(py::len(flow));
    const size_t nf = static_cast<size_t>(py::len(label));
    const int32_t* fl = borrow<int32_t>(flow, "flow", n, 0, keep);
    const int64_t* t = borrow<int64_t>(ts, "ts_ns", n, 0, keep);
    const int16_t* lab = borrow<int16_t>(label, "label", nf, 0, keep);
    py::array_t<int64_t> first(static_cast<py::ssize_t>(nf));
    std::vector<uint8_t> present(nf);
    bool ok, piled = false;
    {
        int64_t* fp = first.mutable_data();
        py::gil_scoped_release release;
        ok = build_prep::flow_first_ts(fl, t, n, nf, fp, present.data());
        if (ok && want_piled) piled = build_prep::piled_up(fp, present.data(), lab, nf);
    }
    if (!ok) return py::none();
    return py::make_tuple(first, piled);
}

py::buffer_info contiguous_bytes(const py::buffer& b, const char* what) {
    py::buffer_info info = b.request();
    if (info.itemsize != 1 || (info.ndim != 1 && info.ndim != 0) ||
        (info.ndim == 1 && info.strides[0] != 1))
        throw py::type_error(std::string(what) + " must be a contiguous byte buffer");
    return info;
}

}  // namespace

void bind_build(py::module_& m) {
    m.attr("RECORD_PACKET_COLUMNS") = column_list(kRecordPacketColumns);
    m.attr("RECORD_FLOW_COLUMNS") = column_list(kRecordFlowColumns);
    m.def(
        "internet_checksum",
        [](const py::buffer& data) {
            py::buffer_info info = contiguous_bytes(data, "data");
            uint64_t s;
            {
                py::gil_scoped_release release;
                s = csum::partial(static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size));
            }
            return csum::as_be(s);
        },
        py::arg("data"),
        R"pbdoc(
            RFC 1071 Internet checksum of ``data`` (odd lengths padded with a zero byte), as the
            big-endian integer a header holds. Over data that includes a correct checksum field
            the result is 0.
        )pbdoc");
    m.def(
        "l4_checksum",
        [](const py::bytes& src, const py::bytes& dst, int proto, const py::buffer& segment) {
            const std::string s = src, d = dst;
            if (!((s.size() == 4 && d.size() == 4) || (s.size() == 16 && d.size() == 16)))
                throw py::value_error("l4_checksum: src and dst must both be 4 (IPv4) or 16 (IPv6) bytes");
            if (proto < 0 || proto > 255) throw py::value_error("l4_checksum: proto must be 0..255");
            py::buffer_info info = contiguous_bytes(segment, "segment");
            uint64_t sum;
            {
                py::gil_scoped_release release;
                sum = csum::l4_sum(s.size() == 16 ? 6 : 4, reinterpret_cast<const uint8_t*>(s.data()),
                                   reinterpret_cast<const uint8_t*>(d.data()), static_cast<uint8_t>(proto),
                                   static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size));
            }
            return csum::as_be(sum);
        },
        py::arg("src"), py::arg("dst"), py::arg("proto"), py::arg("segment"),
        R"pbdoc(
            Checksum of an L4 ``segment`` (header + payload) for protocol ``proto`` between
            ``src`` and ``dst`` (4-byte IPv4 or 16-byte IPv6 addresses): TCP, UDP and ICMPv6
            include the pseudo-header, ICMP (1) does not. Zero the segment's checksum field to
            compute it; leave it in to verify (a correct one gives 0). No UDP 0 -> 0xffff mapping.
        )pbdoc");
    m.def("build_frames", &build_frames, py::arg("packets"), py::arg("flows"), py::arg("client_addr"),
          py::arg("server_addr"), py::arg("client_mac"), py::arg("server_mac"), py::arg("isn"),
          py::arg("blob"), py::arg("linktype"), py::arg("repair"), py::arg("raw_derived"),
          py::arg("order") = py::none(),
          R"pbdoc(
            Build packet frames from field-record columns (see pytrafgen/records.py) into one
            buffer, without the GIL. ``packets``/``flows``: the FieldRecords column dicts;
            ``client_addr``/``server_addr``: (F,16) uint8 (IPv4 as IPv4-mapped IPv6);
            ``client_mac``/``server_mac``: (F,6) uint8; ``isn``: (F,2) uint32 client/server
            initial sequence numbers; ``blob``: uint8; ``linktype``: 1 Ethernet or 101 raw IP.
            ``repair``: recompute IP total length, IHL, UDP length, TCP data offset and all
            checksums; if False, the columns present in ``raw_derived`` (ip_hdr_len,
            ip_total_len, l4_hdr_len, udp_len, ip_csum, l4_csum; uint16) are written instead.
            ``order``: int64 packet indices to emit, in that order (default: all, in order).
            Returns a dict: ``data`` uint8, ``frame_off`` uint64 and ``frame_len`` uint32 per
            emitted frame, ``packet`` int64 (record index of each frame), ``status`` uint8 per
            record packet (0 built; see ``BUILD_STATUS_NAMES``). Bad records are skipped with a
            status, never a crash.
          )pbdoc");
    m.def("distinct_client_ports", &distinct_client_ports, py::arg("proto"), py::arg("client_addr"),
          py::arg("client_port"), py::arg("server_addr"), py::arg("server_port"), py::arg("draw"),
          R"pbdoc(
            Client ports (uint16) where each flow whose connection (protocol and both endpoints,
            either way round) repeats an earlier flow's takes the first free port of its row of
            ``draw(rows)`` ((rows, k) int64 candidates, one row per repeated flow that still
            looks for one, in order); None when no connection repeats. Used by build_frames.
          )pbdoc");
    m.def("flow_first_ts", &flow_first_ts, py::arg("flow"), py::arg("ts_ns"), py::arg("label"),
          py::arg("want_piled"),
          R"pbdoc(
            ``(first, piled)``: each flow's smallest packet timestamp (int64 max for a flow
            without packets) and, if ``want_piled``, whether two flows with packets of one
            label start at the same instant; None when a flow index is out of range.
          )pbdoc");
    py::list names;
    for (int s = 0; s < build::N_STATUS; ++s) names.append(build::status_name(s));
    m.attr("BUILD_STATUS_NAMES") = names;
}

}  // namespace pytrafgen
