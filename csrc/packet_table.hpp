// Columnar packet table filled in one pass: walk records, dissect each frame straight into
// preallocated column arrays (no per-packet allocation). The columns are listed in
// columns.hpp (PYTRAFGEN_PACKET_COLUMNS). The binding hands the buffers to numpy without a
// copy (a capsule owns each one's PageMapping).
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "columns.hpp"
#include "dissect.hpp"
#include "pcap.hpp"

namespace pytrafgen {

// Column buffers are anonymous mappings advised to use transparent huge pages: with 4 KiB
// pages, first-touch page faults cost more than the dissection itself. They grow and shrink
// with mremap (no copy; Linux) and are released with munmap (see PageBuffer::release).
inline size_t page_round(size_t bytes) {
    const size_t page = 4096;
    return bytes == 0 ? page : (bytes + page - 1) / page * page;
}

#if defined(PYTRAFGEN_SANITIZED)
// Sanitizer builds use heap blocks instead: AddressSanitizer checks those, not mappings.
inline void* page_resize(void* p, size_t, size_t new_bytes) {
    void* q = std::realloc(p, new_bytes ? new_bytes : 1);
    if (!q) throw std::bad_alloc();
    return q;
}

inline void page_free(void* p, size_t) { std::free(p); }
#else
inline void* page_resize(void* p, size_t old_bytes, size_t new_bytes) {
    size_t old_r = p ? page_round(old_bytes) : 0, new_r = page_round(new_bytes);
    void* q;
    if (!p) q = ::mmap(nullptr, new_r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    else if (old_r == new_r) return p;
    else q = ::mremap(p, old_r, new_r, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) throw std::bad_alloc();
    if (new_r >= (size_t(2) << 20)) ::madvise(q, new_r, MADV_HUGEPAGE);
    return q;
}

inline void page_free(void* p, size_t bytes) {
    if (p) ::munmap(p, page_round(bytes));
}
#endif

// Owns one mapping of a released PageBuffer; unmaps it when destroyed (movable, not copyable).
class PageMapping {
public:
    PageMapping(void* base, size_t bytes) : base_(base), bytes_(bytes) {}
    PageMapping(PageMapping&& o) noexcept : base_(o.base_), bytes_(o.bytes_) { o.base_ = nullptr; }
    PageMapping(const PageMapping&) = delete;
    PageMapping& operator=(const PageMapping&) = delete;
    PageMapping& operator=(PageMapping&&) = delete;
    ~PageMapping() { page_free(base_, bytes_); }

private:
    void* base_;
    size_t bytes_;
};

template <class T>
struct PageBuffer {
    T* p = nullptr;      // base + shift
    size_t cap = 0;      // elements
    size_t shift = 0;    // bytes between the mapping's start and p
    void* base = nullptr;
    PageBuffer() = default;
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;
    ~PageBuffer() { page_free(base, bytes()); }
    size_t bytes() const { return shift + cap * sizeof(T); }
    T& operator[](size_t i) { return p[i]; }
    void resize(size_t n) {
        base = page_resize(base, bytes(), shift + n * sizeof(T));
        p = reinterpret_cast<T*>(static_cast<uint8_t*>(base) + shift);
        cap = n;
    }
    // Hands the mapping over to the returned owner (p then points into it).
    PageMapping release() {
        PageMapping m(base, bytes());
        base = nullptr;
        p = nullptr;
        cap = 0;
        return m;
    }
};

class PacketColumns {
public:
#define PYTRAFGEN_DECLARE(name, type, width) PageBuffer<type> name;
    PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_DECLARE)
#undef PYTRAFGEN_DECLARE
    PageBuffer<uint8_t> data;
    size_t rows = 0, row_cap = 0;
    size_t data_len = 0, data_cap = 0;

    // Page-aligned columns indexed alike would put row i of every column of one width in the
    // same L1 cache set, and ~37 write streams then evict each other (measured: a third of
    // the read time). Starting column k one cache line further than column k-1 spreads them.
    PacketColumns() {
        size_t k = 0;
#define PYTRAFGEN_SHIFT(name, type, width) name.shift = (k++) * 64;
        PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_SHIFT)
#undef PYTRAFGEN_SHIFT
        data.shift = k * 64;
    }
    PacketColumns(const PacketColumns&) = delete;
    PacketColumns& operator=(const PacketColumns&) = delete;

    void reserve_rows(size_t cap) {
#define PYTRAFGEN_GROW(name, type, width) name.resize(cap);
        PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_GROW)
#undef PYTRAFGEN_GROW
        row_cap = cap;
    }
    void reserve_data(size_t cap) {
        data.resize(cap);
        data_cap = cap;
    }
    // Gives back the unused tail of every buffer (mremap shrinks in place).
    void shrink_to_fit() {
        reserve_rows(rows);
        reserve_data(data_len);
    }

    void append(const RawRecord& rec) {
        if (rows == row_cap) reserve_rows(row_cap < 1024 ? 1024 : row_cap * 2);
        if (data_cap - data_len < rec.caplen) {
            size_t want = data_cap * 2;
            if (want < data_len + rec.caplen) want = data_len + rec.caplen;
            reserve_data(want < 65536 ? 65536 : want);
        }
        PacketFields f;
        dissect_frame(rec.frame, rec.caplen, rec.linktype, f);
        size_t i = rows++;
        std::memcpy(data.p + data_len, rec.frame, rec.caplen);
        frame_off[i] = data_len;
        data_len += rec.caplen;
        caplen[i] = rec.caplen;
        wirelen[i] = rec.wirelen;
        ts_ns[i] = rec.ts_ns;
        linktype[i] = rec.linktype;
        iface[i] = rec.iface;
        status[i] = f.status;
        l3[i] = f.l3;
        l3_off[i] = f.l3_off;
        ip_hdr_len[i] = f.ip_hdr_len;
        ip_total_len[i] = f.ip_total_len;
        std::memcpy(src.p[i].b, f.src, 16);
        std::memcpy(dst.p[i].b, f.dst, 16);
        proto[i] = f.proto;
        ttl[i] = f.ttl;
        tos[i] = f.tos;
        ip_id[i] = f.ip_id;
        ip_flags[i] = f.ip_flags;
        frag_offset[i] = f.frag_offset;
        flow_label[i] = f.flow_label;
        ip_csum[i] = f.ip_csum;
        l4_off[i] = f.l4_off;
        l4_hdr_len[i] = f.l4_hdr_len;
        sport[i] = f.sport;
        dport[i] = f.dport;
        tcp_flags[i] = f.tcp_flags;
        seq[i] = f.seq;
        ack[i] = f.ack;
        window[i] = f.window;
        urgent[i] = f.urgent;
        icmp_type[i] = f.icmp_type;
        icmp_code[i] = f.icmp_code;
        l4_csum[i] = f.l4_csum;
        payload_off[i] = f.payload_off;
        payload_len[i] = f.payload_len;
        payload_wirelen[i] = f.payload_wirelen;
    }
};

// Reads up to `max_packets` records (0: all) from `walker` into `out`. `size_hint`: bytes
// left in the input, used to size the first allocation.
inline void read_packets(RecordWalker& walker, PacketColumns& out, uint64_t max_packets,
                         uint64_t size_hint) {
    uint64_t rows_hint = size_hint / 64 + 16;
    if (max_packets && rows_hint > max_packets) rows_hint = max_packets;
    uint64_t data_hint = size_hint;
    if (max_packets && data_hint > max_packets * 2048) data_hint = max_packets * 2048;
    out.reserve_rows(size_t(rows_hint));
    out.reserve_data(size_t(data_hint));
    RawRecord rec;
    while ((max_packets == 0 || out.rows < max_packets) && walker.next(rec)) out.append(rec);
    out.shrink_to_fit();
}

// Walks record headers only (the benchmark's floor): returns the number of records and
// adds their captured bytes to `bytes`.
inline uint64_t walk_records(RecordWalker& walker, uint64_t& bytes) {
    RawRecord rec;
    uint64_t n = 0;
    while (walker.next(rec)) {
        ++n;
        bytes += rec.caplen;
    }
    return n;
}

// Copies data[offs[i] : offs[i] + lens[i]] for each i, back to back, into `out` (which
// holds the sum of lens); writes each row's new offset to new_offs. Returns false if a
// range lies outside `data` (nothing is read out of bounds).
inline bool gather_frames(const uint8_t* data, size_t data_len, const uint64_t* offs, const uint32_t* lens,
                          size_t n, uint8_t* out, uint64_t* new_offs) {
    uint64_t at = 0;
    for (size_t i = 0; i < n; ++i) {
        if (offs[i] > data_len || lens[i] > data_len - offs[i]) return false;
        std::memcpy(out + at, data + offs[i], lens[i]);
        new_offs[i] = at;
        at += lens[i];
    }
    return true;
}

// Classic pcap records (16-byte little-endian header + frame) for rows 0..n-1 into `out`,
// which holds 16 * n + sum(caplen) bytes. Frames are read as in gather_frames.
inline bool pack_pcap_records(const uint8_t* data, size_t data_len, const uint64_t* offs, const uint32_t* caplen,
                              const uint32_t* wirelen, const int64_t* ts_ns, size_t n, bool nanosecond,
                              uint8_t* out) {
    uint64_t at = 0;
    for (size_t i = 0; i < n; ++i) {
        if (offs[i] > data_len || caplen[i] > data_len - offs[i]) return false;
        int64_t ts = ts_ns[i] < 0 ? 0 : ts_ns[i];
        uint32_t hdr[4] = {uint32_t(ts / 1000000000),
                           uint32_t(nanosecond ? ts % 1000000000 : (ts % 1000000000) / 1000), caplen[i],
                           wirelen[i] > caplen[i] ? wirelen[i] : caplen[i]};
        for (int k = 0; k < 4; ++k) {
            out[at + 4 * k] = uint8_t(hdr[k]);
            out[at + 4 * k + 1] = uint8_t(hdr[k] >> 8);
            out[at + 4 * k + 2] = uint8_t(hdr[k] >> 16);
            out[at + 4 * k + 3] = uint8_t(hdr[k] >> 24);
        }
        std::memcpy(out + at + 16, data + offs[i], caplen[i]);
        at += 16 + uint64_t(caplen[i]);
    }
    return true;
}

}  // namespace pytrafgen
