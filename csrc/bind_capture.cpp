// Binds the capture reader (csrc/capture_file.hpp, csrc/pcap.hpp, csrc/dissect.hpp,
// csrc/packet_table.hpp).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "capture_file.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;
using U8Array = CArray<uint8_t>;
using U32Array = CArray<uint32_t>;
using U64Array = CArray<uint64_t>;
using I64Array = CArray<int64_t>;

size_t check_rows(const char* fn, const U64Array& offs, const U32Array& lens) {
    if (offs.size() != lens.size()) throw py::value_error(std::string(fn) + ": columns differ in length");
    return size_t(offs.size());
}

// A numpy array over a column's mapping, which the array then owns.
template <class T>
py::array page_array(PageBuffer<T>& buf, size_t rows, int width) {
    using E = typename ColumnElem<T>::type;
    const E* first = reinterpret_cast<const E*>(buf.p);
    return owning_array(buf.release(), first, column_shape(rows, width));
}

py::dict skipped_dict(const uint64_t counts[kSkipCount]) {
    py::dict out;
    for (int r = 0; r < kSkipCount; ++r)
        if (counts[r]) out[skip_reason_name(r)] = counts[r];
    return out;
}

std::unique_ptr<CaptureFile> open_capture(const std::string& path) {
    py::gil_scoped_release nogil;  // open() of a FIFO waits for its writer, maybe a Python thread
    return std::make_unique<CaptureFile>(path);
}

py::tuple read(CaptureFile& capture, uint64_t max_packets) {
    PacketColumns cols;
    uint64_t skipped[kSkipCount];
    {
        py::gil_scoped_release nogil;
        capture.read(max_packets, cols, skipped);
    }
    py::dict columns;
    columns["data"] = page_array(cols.data, cols.data_len, 1);
#define PYTRAFGEN_EXPORT(name, type, width) columns[#name] = page_array(cols.name, cols.rows, width);
    PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_EXPORT)
#undef PYTRAFGEN_EXPORT
    return py::make_tuple(columns, skipped_dict(skipped));
}

py::tuple walk(CaptureFile& capture) {
    uint64_t count, bytes = 0;
    uint64_t skipped[kSkipCount];
    {
        py::gil_scoped_release nogil;
        count = capture.walk(bytes, skipped);
    }
    return py::make_tuple(count, bytes, skipped_dict(skipped));
}

py::tuple comments(CaptureFile& capture) {
    std::vector<uint64_t> index;
    std::vector<std::string> found;
    {
        py::gil_scoped_release nogil;
        capture.comments(index, found);
    }
    py::list texts;
    for (const auto& text : found) texts.append(py::bytes(text));
    return py::make_tuple(owned_array(std::move(index)), texts);
}

}  // namespace

void bind_capture(py::module_& m) {
    py::register_local_exception_translator([](std::exception_ptr thrown) {
        try {
            if (thrown) std::rethrow_exception(thrown);
        } catch (const CaptureFileError& e) {
            py::object cls = py::module_::import("pytrafgen.errors").attr("CaptureError");
            py::object exc = cls(e.path, e.offset, e.what());
            PyErr_SetObject(cls.ptr(), exc.ptr());
        } catch (const CaptureClosed& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
    m.attr("PACKET_COLUMNS") = column_list(kPacketColumns);
    py::list status_names;
    for (int s = 0; s < kStatusCount; ++s) status_names.append(status_name(s));
    m.attr("STATUS_NAMES") = status_names;

    py::class_<CaptureFile>(m, "CaptureFile", R"pbdoc(
        A pcap or pcapng capture opened for reading (memory-mapped). ``read`` returns the next
        packets as numpy columns; calling it again resumes where the last call stopped.
        Raises pytrafgen.errors.CaptureError (file and byte offset) on file-level damage.
    )pbdoc")
        .def(py::init(&open_capture), py::arg("path"), R"pbdoc(Open and map ``path``.)pbdoc")
        .def_static(
            "from_bytes",
            [](py::bytes data, const std::string& name) {
                return std::make_unique<CaptureFile>(std::string(data), name);  // no file to wait for
            },
            py::arg("data"), py::arg("name") = "<bytes>",
            R"pbdoc(A capture held in memory (a copy of ``data``); ``name`` appears in errors.)pbdoc")
        .def("read", &read, py::arg("max_packets") = 0, R"pbdoc(
            Read and dissect up to ``max_packets`` records (0: all that remain), without the GIL.
            Returns ``(columns, skipped)``: a dict of numpy arrays (docs/architecture.md §1) and
            the records skipped by reason during this call.
        )pbdoc")
        .def("walk", &walk, R"pbdoc(
            Walk the remaining record headers without dissecting or copying (benchmark floor).
            Returns ``(records, captured_bytes, skipped)``.
        )pbdoc")
        .def("comments", &comments, R"pbdoc(
            Walk the remaining records and return their pcapng packet comments (the first
            opt_comment of each Enhanced/obsolete Packet Block) as ``(index, texts)``: a uint64
            array of record indexes counted from here (row i of a ``read`` from here) and a
            list of the comments' bytes. Classic pcap has no comments: empty.
        )pbdoc")
        .def("close", &CaptureFile::close, R"pbdoc(Unmap the file; later reads raise ValueError.)pbdoc")
        .def_property_readonly("offset", &CaptureFile::offset, "Byte offset of the next record.")
        .def_property_readonly("done", &CaptureFile::done, "True when every record has been read.")
        .def_property_readonly("format", &CaptureFile::format, "'pcap' or 'pcapng'.")
        .def_property_readonly("path", &CaptureFile::path, "The file name used in errors.")
        .def_property_readonly("size", &CaptureFile::size, "Size of the capture in bytes.");

    m.def(
        "gather_frames",
        [](const U8Array& data, const U64Array& offs, const U32Array& lens) {
            size_t n = check_rows("gather_frames", offs, lens);
            uint64_t total = 0;
            for (size_t i = 0; i < n; ++i) total += lens.data()[i];
            std::vector<uint8_t> out(total);
            std::vector<uint64_t> new_offs(n);
            bool ok;
            {
                py::gil_scoped_release nogil;
                ok = gather_frames(data.data(), size_t(data.size()), offs.data(), lens.data(), n, out.data(),
                                   new_offs.data());
            }
            if (!ok) throw py::value_error("gather_frames: a frame range lies outside data");
            return py::make_tuple(owned_array(std::move(out)), owned_array(std::move(new_offs)));
        },
        py::arg("data"), py::arg("frame_off"), py::arg("caplen"), R"pbdoc(
            Concatenate ``data[frame_off[i] : frame_off[i] + caplen[i]]`` for every row.
            Returns ``(data, frame_off)`` of the compact copy.
        )pbdoc");

    m.def(
        "pack_pcap_records",
        [](const U8Array& data, const U64Array& offs, const U32Array& caplen, const U32Array& wirelen,
           const I64Array& ts_ns, bool nanosecond) {
            size_t n = check_rows("pack_pcap_records", offs, caplen);
            if (size_t(wirelen.size()) != n || size_t(ts_ns.size()) != n)
                throw py::value_error("pack_pcap_records: columns differ in length");
            uint64_t total = 16 * uint64_t(n);
            for (size_t i = 0; i < n; ++i) total += caplen.data()[i];
            py::bytes out(nullptr, py::ssize_t(total));
            auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AsString(out.ptr()));
            bool ok;
            {
                py::gil_scoped_release nogil;
                ok = pack_pcap_records(data.data(), size_t(data.size()), offs.data(), caplen.data(),
                                       wirelen.data(), ts_ns.data(), n, nanosecond, dst);
            }
            if (!ok) throw py::value_error("pack_pcap_records: a frame range lies outside data");
            return out;
        },
        py::arg("data"), py::arg("frame_off"), py::arg("caplen"), py::arg("wirelen"), py::arg("ts_ns"),
        py::arg("nanosecond"), R"pbdoc(
            Classic pcap records (little-endian 16-byte headers + frames) as bytes, without the
            file header. Wire lengths below the captured length are raised to it.
        )pbdoc");

    m.def(
        "walk_records",
        [](const std::string& path) { return walk(*open_capture(path)); },
        py::arg("path"), R"pbdoc(
            Bare walk over the record headers of ``path`` (no dissection, no copy), for the
            read benchmark. Returns ``(records, captured_bytes, skipped)``.
        )pbdoc");
}

}  // namespace pytrafgen
