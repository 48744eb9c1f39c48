// A capture held in memory for reading: an mmap of a regular file, or an owned copy of the
// bytes (a pipe or device is read whole; `from bytes` for in-memory captures). Resumable:
// each read continues where the last stopped. Thread-safe: every walk runs under the
// capture's lock, so two threads reading one capture, or a close() during a read, cannot
// race on the walker or the map. No Python here (csrc/bind_capture.cpp binds it and runs the
// walks without the GIL).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "packet_table.hpp"
#include "pcap.hpp"

namespace pytrafgen {

// File-level damage or an unreadable file: which file, where, why.
class CaptureFileError : public std::runtime_error {
public:
    CaptureFileError(std::string file, uint64_t at, const std::string& reason)
        : std::runtime_error(reason), path(std::move(file)), offset(at) {}
    std::string path;
    uint64_t offset;
};

// A call on a closed capture.
class CaptureClosed : public std::logic_error {
public:
    explicit CaptureClosed(const std::string& path) : std::logic_error(path + ": capture is closed") {}
};

class CaptureFile {
public:
    // Opens `path`. open() of a FIFO blocks until a writer opens it (issue 9): callers must not
    // hold a lock that writer needs (the binding releases the GIL).
    explicit CaptureFile(const std::string& path) : path_(path) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail_errno(0, "cannot open: ");
        struct stat st;
        if (::fstat(fd, &st) != 0) close_and_fail(fd, 0, "cannot stat: ");
        if (S_ISDIR(st.st_mode)) {
            ::close(fd);
            throw CaptureFileError(path_, 0, "is a directory, not a capture file");
        }
        if (S_ISREG(st.st_mode) && st.st_size > 0) {
            void* m = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) close_and_fail(fd, 0, "cannot map: ");
            ::madvise(m, size_t(st.st_size), MADV_SEQUENTIAL);
            map_ = m;
            base_ = static_cast<const uint8_t*>(m);
            size_ = size_t(st.st_size);
        } else if (!S_ISREG(st.st_mode)) {  // a pipe or device: read it whole
            char buf[1 << 16];
            ssize_t got;
            while ((got = ::read(fd, buf, sizeof(buf))) > 0) owned_.append(buf, size_t(got));
            if (got < 0) close_and_fail(fd, owned_.size(), "cannot read: ");
            base_ = reinterpret_cast<const uint8_t*>(owned_.data());
            size_ = owned_.size();
        }
        ::close(fd);
        start();
    }

    // A capture of `bytes`; `name` stands for the file in errors.
    CaptureFile(std::string bytes, std::string name) : path_(std::move(name)), owned_(std::move(bytes)) {
        base_ = reinterpret_cast<const uint8_t*>(owned_.data());
        size_ = owned_.size();
        start();
    }

    CaptureFile(const CaptureFile&) = delete;
    CaptureFile& operator=(const CaptureFile&) = delete;
    ~CaptureFile() { close(); }

    void close() {
        std::lock_guard<std::mutex> lock(mu_);
        walker_.reset();
        if (map_) ::munmap(map_, size_);
        map_ = nullptr;
        owned_.clear();
        owned_.shrink_to_fit();
    }

    // Reads and dissects up to `max_packets` records (0: all that remain) into `cols`;
    // `skipped` gets this call's skip counts by reason.
    void read(uint64_t max_packets, PacketColumns& cols, uint64_t skipped[kSkipCount]) {
        with_walker([&](RecordWalker& w) {
            read_packets(w, cols, max_packets, size_ - w.offset());
            take_skipped(w, skipped);
            release_consumed(w.offset());
        });
    }

    // Walks the remaining record headers only; returns the number of records.
    uint64_t walk(uint64_t& bytes, uint64_t skipped[kSkipCount]) {
        uint64_t count = 0;
        with_walker([&](RecordWalker& w) {
            count = walk_records(w, bytes);
            take_skipped(w, skipped);
        });
        return count;
    }

    // The remaining records' packet comments: `index` (record index from this call's start, for
    // records that carry one; row i of a read() from here) and the comments' bytes, copied
    // under the lock (a close() may unmap right after).
    void comments(std::vector<uint64_t>& index, std::vector<std::string>& texts) {
        with_walker([&](RecordWalker& w) {
            w.set_read_comments(true);
            RawRecord rec;
            for (uint64_t i = 0; w.next(rec); ++i)
                if (rec.comment != nullptr) {
                    index.push_back(i);
                    texts.emplace_back(reinterpret_cast<const char*>(rec.comment), rec.comment_len);
                }
            w.set_read_comments(false);
        });
    }

    uint64_t offset() { return with_walker([](RecordWalker& w) { return w.offset(); }); }
    bool done() { return with_walker([](RecordWalker& w) { return w.done(); }); }
    const char* format() {
        return with_walker([](RecordWalker& w) { return w.format() == CaptureFormat::kPcap ? "pcap" : "pcapng"; });
    }
    const std::string& path() const { return path_; }
    uint64_t size() const { return size_; }

private:
    [[noreturn]] void fail_errno(uint64_t at, const char* what) {
        throw CaptureFileError(path_, at, std::string(what) + std::strerror(errno));
    }
    [[noreturn]] void close_and_fail(int fd, uint64_t at, const char* what) {
        const int e = errno;
        ::close(fd);
        errno = e;
        fail_errno(at, what);
    }

    void start() {
        try {
            walker_ = std::make_unique<RecordWalker>(base_, size_);
        } catch (const CaptureFault& f) {
            close();
            throw CaptureFileError(path_, f.offset, f.what());
        }
    }

    // Runs fn(walker) under this capture's lock.
    template <class Fn>
    auto with_walker(Fn&& fn) -> decltype(fn(std::declval<RecordWalker&>())) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!walker_) throw CaptureClosed(path_);
        try {
            return fn(*walker_);
        } catch (const CaptureFault& f) {
            throw CaptureFileError(path_, f.offset, f.what());
        }
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

}  // namespace pytrafgen
