// Binds the capture reader (csrc/pcap.hpp, csrc/dissect.hpp, csrc/packet_table.hpp).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "packet_table.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

[[noreturn]] void raise_capture_error(const std::string& path, uint64_t offset, const std::string& reason) {
    py::object cls = py::module_::import("pytrafgen.errors").attr("CaptureError");
    py::object exc = cls(path, offset, reason);
    PyErr_SetObject(cls.ptr(), exc.ptr());
    throw py::error_already_set();
}

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

template <class T> struct NumpyElem { using type = T; };
template <> struct NumpyElem<Addr16> { using type = uint8_t; };

// A numpy array over a column's mapping; the array's capsule unmaps it.
template <class T>
py::array page_array(PageBuffer<T>& buf, std::vector<py::ssize_t> shape) {
    using E = typename NumpyElem<T>::type;
    struct Mapping {
        void* base;
        size_t bytes;
    };
    E* first = reinterpret_cast<E*>(buf.p);
    auto* m = new Mapping{nullptr, 0};
    buf.release(m->base, m->bytes);
    py::capsule owner(m, [](void* q) {
        auto* mapping = static_cast<Mapping*>(q);
        page_free(mapping->base, mapping->bytes);
        delete mapping;
    });
    return py::array(py::dtype::of<E>(), std::move(shape), first, owner);
}

// A capture held in memory: an mmap of a regular file, or an owned copy of bytes.
class CaptureFile {
public:
    explicit CaptureFile(const std::string& path) : path_(path) {
        // Hardening (issue 9): open() of a FIFO blocks until a writer opens it; holding the GIL
        // there deadlocked a Python thread that was about to open it for writing (seen under
        // the sanitizer build, where test_read_from_a_pipe hung).
        int fd, open_errno;
        {
            py::gil_scoped_release nogil;
            fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            open_errno = errno;
        }
        if (fd < 0) raise_capture_error(path, 0, std::string("cannot open: ") + std::strerror(open_errno));
        struct stat st;
        if (::fstat(fd, &st) != 0) {
            int e = errno;
            ::close(fd);
            raise_capture_error(path, 0, std::string("cannot stat: ") + std::strerror(e));
        }
        if (S_ISDIR(st.st_mode)) {
            ::close(fd);
            raise_capture_error(path, 0, "is a directory, not a capture file");
        }
        if (S_ISREG(st.st_mode) && st.st_size > 0) {
            void* m = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) {
                int e = errno;
                ::close(fd);
                raise_capture_error(path, 0, std::string("cannot map: ") + std::strerror(e));
            }
            ::madvise(m, size_t(st.st_size), MADV_SEQUENTIAL);
            map_ = m;
            base_ = static_cast<const uint8_t*>(m);
            size_ = size_t(st.st_size);
        } else if (!S_ISREG(st.st_mode)) {  // a pipe or device: read it whole, without the GIL
            int read_errno = 0;
            {
                py::gil_scoped_release nogil;
                char buf[1 << 16];
                ssize_t got;
                while ((got = ::read(fd, buf, sizeof(buf))) > 0) owned_.append(buf, size_t(got));
                if (got < 0) read_errno = errno;
            }
            if (read_errno) {
                ::close(fd);
                raise_capture_error(path, owned_.size(), std::string("cannot read: ") + std::strerror(read_errno));
            }
            base_ = reinterpret_cast<const uint8_t*>(owned_.data());
            size_ = owned_.size();
        }
        ::close(fd);
        start();
    }

    CaptureFile(std::string bytes, std::string name) : path_(std::move(name)), owned_(std::move(bytes)) {
        base_ = reinterpret_cast<const uint8_t*>(owned_.data());
        size_ = owned_.size();
        start();
    }

    ~CaptureFile() { close(); }

    void close() {
        std::lock_guard<std::mutex> lock(mu_);
        walker_.reset();
        if (map_) ::munmap(map_, size_);
        map_ = nullptr;
        owned_.clear();
        owned_.shrink_to_fit();
    }

    py::tuple read(uint64_t max_packets) {
        PacketColumns cols;
        uint64_t skipped[kSkipCount];
        with_walker([&](RecordWalker& w) {
            read_packets(w, cols, max_packets, size_ - w.offset());
            take_skipped(w, skipped);
            release_consumed(w.offset());
        });
        py::dict columns;
        const auto n = py::ssize_t(cols.rows);
        columns["data"] = page_array(cols.data, {py::ssize_t(cols.data_len)});
#define PYTRAFGEN_EXPORT(name, ctype, width) \
    columns[#name] = width == 1 ? page_array(cols.name, {n}) : page_array(cols.name, {n, width});
        PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_EXPORT)
#undef PYTRAFGEN_EXPORT
        return py::make_tuple(columns, skipped_dict(skipped));
    }

    py::tuple walk() {
        uint64_t count = 0, bytes = 0;
        uint64_t skipped[kSkipCount];
        with_walker([&](RecordWalker& w) {
            count = walk_records(w, bytes);
            take_skipped(w, skipped);
        });
        return py::make_tuple(count, bytes, skipped_dict(skipped));
    }

    // The remaining records' packet comments: (record index from this call's start, for
    // records that carry one; the comments' bytes). Index i is row i of a read() from here.
    py::tuple comments() {
        std::vector<uint64_t> index;
        std::vector<std::string> found;  // copied under the lock: a close() may unmap right after
        with_walker([&](RecordWalker& w) {
            w.set_read_comments(true);
            RawRecord rec;
            for (uint64_t i = 0; w.next(rec); ++i)
                if (rec.comment != nullptr) {
                    index.push_back(i);
                    found.emplace_back(reinterpret_cast<const char*>(rec.comment), rec.comment_len);
                }
            w.set_read_comments(false);
        });
        py::list texts;
        for (const auto& text : found) texts.append(py::bytes(text));
        const auto n = py::ssize_t(index.size());
        return py::make_tuple(owned_array(std::move(index), {n}), texts);
    }

    uint64_t offset() { return locked_walker([](RecordWalker& w) { return w.offset(); }); }
    bool done() { return locked_walker([](RecordWalker& w) { return w.done(); }); }
    std::string format() {
        return locked_walker([](RecordWalker& w) { return w.format() == CaptureFormat::kPcap ? "pcap" : "pcapng"; });
    }
    const std::string& path() const { return path_; }
    uint64_t size() const { return size_; }

private:
    void start() {
        try {
            walker_ = std::make_unique<RecordWalker>(base_, size_);
        } catch (const CaptureFault& f) {
            close();
            raise_capture_error(path_, f.offset, f.what());
        }
    }

    // Runs fn(walker) without the GIL, under this capture's lock: two threads reading one
    // capture, or a close() during a read, would otherwise race on the walker and the map.
    // The lock is released before the GIL is taken back, so holding the GIL while locking
    // (close, offset, …) cannot deadlock.
    template <class Fn>
    void with_walker(Fn&& fn) {
        bool closed = false;
        std::optional<CaptureFault> fault;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mu_);
            if (!walker_) {
                closed = true;
            } else {
                try {
                    fn(*walker_);
                } catch (const CaptureFault& f) {
                    fault = f;
                }
            }
        }
        if (closed) throw py::value_error(path_ + ": capture is closed");
        if (fault) raise_capture_error(path_, fault->offset, fault->what());
    }

    template <class Fn>
    auto locked_walker(Fn&& fn) -> decltype(fn(std::declval<RecordWalker&>())) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!walker_) throw py::value_error(path_ + ": capture is closed");
        return fn(*walker_);
    }

    // Hardening (issue 9, benchmarks/bench_stream_memory.py): pages of the mapping stayed
    // resident after their records were copied out, so streaming a 1 GB capture peaked at
    // 1.1 GB RSS. The walk never goes back, so whole pages before `offset` are dropped from
    // this process (they stay in the page cache; a later touch would fault them back in).
    void release_consumed(uint64_t offset) {
        if (!map_) return;
        const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
        const uint64_t upto = offset / page * page;
        if (upto <= released_) return;
        ::madvise(static_cast<uint8_t*>(map_) + released_, size_t(upto - released_), MADV_DONTNEED);
        released_ = upto;
    }

    // Skip counts since the previous call (each chunk reports its own).
    void take_skipped(const RecordWalker& w, uint64_t out[kSkipCount]) {
        const uint64_t* now = w.skipped();
        for (int r = 0; r < kSkipCount; ++r) {
            out[r] = now[r] - reported_[r];
            reported_[r] = now[r];
        }
    }
    static py::dict skipped_dict(const uint64_t counts[kSkipCount]) {
        py::dict out;
        for (int r = 0; r < kSkipCount; ++r)
            if (counts[r]) out[skip_reason_name(r)] = counts[r];
        return out;
    }

    std::string path_;
    std::string owned_;
    void* map_ = nullptr;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    uint64_t released_ = 0;  // bytes at the start of map_ already given back (release_consumed)
    std::unique_ptr<RecordWalker> walker_;
    uint64_t reported_[kSkipCount] = {};
    std::mutex mu_;
};

}  // namespace

void bind_capture(py::module_& m) {
    py::list status_names;
    for (int s = 0; s < kStatusCount; ++s) status_names.append(status_name(s));
    m.attr("STATUS_NAMES") = status_names;

    py::class_<CaptureFile>(m, "CaptureFile", R"pbdoc(
        A pcap or pcapng capture opened for reading (memory-mapped). ``read`` returns the next
        packets as numpy columns; calling it again resumes where the last call stopped.
        Raises pytrafgen.errors.CaptureError (file and byte offset) on file-level damage.
    )pbdoc")
        .def(py::init<const std::string&>(), py::arg("path"), R"pbdoc(Open and map ``path``.)pbdoc")
        .def_static(
            "from_bytes",
            [](py::bytes data, const std::string& name) {
                return std::make_unique<CaptureFile>(std::string(data), name);
            },
            py::arg("data"), py::arg("name") = "<bytes>",
            R"pbdoc(A capture held in memory (a copy of ``data``); ``name`` appears in errors.)pbdoc")
        .def("read", &CaptureFile::read, py::arg("max_packets") = 0, R"pbdoc(
            Read and dissect up to ``max_packets`` records (0: all that remain), without the GIL.
            Returns ``(columns, skipped)``: a dict of numpy arrays (docs/architecture.md §1) and
            the records skipped by reason during this call.
        )pbdoc")
        .def("walk", &CaptureFile::walk, R"pbdoc(
            Walk the remaining record headers without dissecting or copying (benchmark floor).
            Returns ``(records, captured_bytes, skipped)``.
        )pbdoc")
        .def("comments", &CaptureFile::comments, R"pbdoc(
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
            return py::make_tuple(owned_array(std::move(out), {py::ssize_t(total)}),
                                  owned_array(std::move(new_offs), {py::ssize_t(n)}));
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
        [](const std::string& path) { return CaptureFile(path).walk(); },
        py::arg("path"), R"pbdoc(
            Bare walk over the record headers of ``path`` (no dissection, no copy), for the
            read benchmark. Returns ``(records, captured_bytes, skipped)``.
        )pbdoc");
}

}  // namespace pytrafgen
