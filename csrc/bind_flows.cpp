// Binds flow assembly (csrc/flows.hpp).
#include <pybind11/numpy.h>

#include <string>

#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "flows.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <class T>
const T* column(const CArray<T>& a, size_t n, size_t width, const char* name) {
    if (size_t(a.size()) != n * width)
        throw py::value_error(std::string("assemble_flows: column '") + name + "' has the wrong length");
    return a.data();
}

}  // namespace

void bind_flows(py::module_& m) {
    m.attr("FLOW_PACKET_COLUMNS") = column_list(kFlowPacketColumns);
    m.attr("FLOW_COLUMNS") = column_list(kFlowColumns);
    m.def(
        "assemble_flows",
        [](const CArray<uint8_t>& status, const CArray<uint8_t>& l3, const CArray<uint8_t>& proto,
           const CArray<uint8_t>& src, const CArray<uint8_t>& dst, const CArray<uint16_t>& sport,
           const CArray<uint16_t>& dport, const CArray<uint16_t>& tcp_flags, const CArray<int64_t>& ts_ns,
           const CArray<uint32_t>& wirelen, int64_t idle_timeout_ns, uint64_t max_flow_packets) {
            FlowInput in;
            in.n = size_t(status.size());
            in.status = status.data();
            in.l3 = column(l3, in.n, 1, "l3");
            in.proto = column(proto, in.n, 1, "proto");
            in.src = column(src, in.n, 16, "src");
            in.dst = column(dst, in.n, 16, "dst");
            in.sport = column(sport, in.n, 1, "sport");
            in.dport = column(dport, in.n, 1, "dport");
            in.tcp_flags = column(tcp_flags, in.n, 1, "tcp_flags");
            in.ts_ns = column(ts_ns, in.n, 1, "ts_ns");
            in.wirelen = column(wirelen, in.n, 1, "wirelen");
            FlowOutput out;
            {
                py::gil_scoped_release nogil;
                assemble_flows(in, idle_timeout_ns, max_flow_packets, out);
            }
            const size_t f = out.proto.size();
            py::dict d;
#define PYTRAFGEN_EXPORT_PACKET(name, type, width) d[#name] = owned_array(std::move(out.name), column_shape(in.n, width));
#define PYTRAFGEN_EXPORT_FLOW(name, type, width) d[#name] = owned_array(std::move(out.name), column_shape(f, width));
            PYTRAFGEN_FLOW_PACKET_COLUMNS(PYTRAFGEN_EXPORT_PACKET)
            PYTRAFGEN_FLOW_COLUMNS(PYTRAFGEN_EXPORT_FLOW)
#undef PYTRAFGEN_EXPORT_PACKET
#undef PYTRAFGEN_EXPORT_FLOW
            return d;
        },
        py::arg("status"), py::arg("l3"), py::arg("proto"), py::arg("src"), py::arg("dst"), py::arg("sport"),
        py::arg("dport"), py::arg("tcp_flags"), py::arg("ts_ns"), py::arg("wirelen"),
        py::arg("idle_timeout_ns"), py::arg("max_flow_packets"), R"pbdoc(
            Assemble bidirectional 5-tuple flows over packet columns (without the GIL).
            ``idle_timeout_ns <= 0`` disables the idle timeout, ``max_flow_packets == 0`` the
            length limit. Returns a dict: per packet ``flow_id`` (int64, -1 outside flows) and
            ``direction`` (uint8), per flow the columns of docs/architecture.md §2.
        )pbdoc");
}

}  // namespace pytrafgen
