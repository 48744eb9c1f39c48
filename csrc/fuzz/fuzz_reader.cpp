// libFuzzer harness: pcap / pcapng record walker (with and without packet comments) + L2–L4
// dissector + columnar packet table,
// on an in-memory buffer (the same code path as pytrafgen.read_pcap / CaptureFile.from_bytes).
//
// Besides ASan/UBSan findings it aborts when a dissected row breaks an invariant that the
// Python side relies on when it slices `data` with these offsets.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "dissect.hpp"
#include "packet_table.hpp"
#include "pcap.hpp"

using namespace pytrafgen;

namespace {

[[noreturn]] void broken(const char* what, size_t row) {
    std::fprintf(stderr, "invariant broken at row %zu: %s\n", row, what);
    std::abort();
}

void check_row(const PacketColumns& c, size_t i) {
    const uint32_t cap = c.caplen.p[i];
    if (c.frame_off.p[i] + cap > c.data_len) broken("frame outside data", i);
    const uint8_t st = c.status.p[i];
    if (st >= kStatusCount) broken("status out of range", i);
    if (st == kStatusOk || st == kStatusFragment) {
        if (uint64_t(c.payload_off.p[i]) + c.payload_len.p[i] > cap) broken("payload outside frame", i);
        // l4_off and l4_hdr_len are 16-bit columns: a wrapped value would point the
        // tokenizer at the wrong header bytes.
        if (uint32_t(c.l4_off.p[i]) + c.l4_hdr_len.p[i] != c.payload_off.p[i]) broken("l4_off + l4_hdr_len != payload_off", i);
    }
    if (c.l3.p[i] != 0 && c.l3.p[i] != 4 && c.l3.p[i] != 6) broken("l3 neither 0, 4 nor 6", i);
}

// Reads the whole capture in chunks of `chunk` rows (as iter_pcap does).
void read_all(const uint8_t* data, size_t size, uint64_t chunk) {
    RecordWalker walker(data, size);
    uint64_t total_skipped = 0;
    for (int guard = 0; !walker.done(); ++guard) {
        PacketColumns cols;
        const uint64_t before = walker.offset();
        read_packets(walker, cols, chunk, size - walker.offset());
        for (size_t i = 0; i < cols.rows; ++i) check_row(cols, i);
        // Every call either returns rows, or ends the walk: a chunk that returns nothing and
        // leaves the walker where it was would make iter_pcap loop forever.
        if (cols.rows == 0 && !walker.done() && walker.offset() == before) broken("walk made no progress", 0);
        if (guard > int(size) + 2) broken("more chunks than bytes", 0);
    }
    for (int r = 0; r < kSkipCount; ++r) total_skipped += walker.skipped()[r];
    if (total_skipped > size) broken("more skipped records than bytes", 0);
}

// Walks with packet comments on: each comment must lie inside the input, and the walk must
// find the same records as without comments (options never change framing).
void comments_all(const uint8_t* data, size_t size) {
    RecordWalker plain(data, size), commented(data, size);
    commented.set_read_comments(true);
    RawRecord a, b;
    for (size_t i = 0;; ++i) {
        const bool more_a = plain.next(a), more_b = commented.next(b);
        if (more_a != more_b) broken("comments changed the number of records", i);
        if (!more_a) break;
        if (a.file_offset != b.file_offset || a.caplen != b.caplen) broken("comments changed a record", i);
        if (b.comment != nullptr &&
            (b.comment < data || b.comment + b.comment_len > data + size || b.comment < b.frame + b.caplen))
            broken("comment outside the input or inside the frame", i);
        if (b.comment == nullptr && b.comment_len != 0) broken("comment length without a comment", i);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        read_all(data, size, 0);
    } catch (const CaptureFault& f) {
        if (f.offset > size) broken("fault offset past the end of the input", 0);
    }
    try {
        comments_all(data, size);
    } catch (const CaptureFault&) {
    }
    // The chunked walk must neither crash nor spin (the first byte picks the chunk size).
    if (size > 0) {
        try {
            read_all(data, size, 1 + (data[0] & 7));
        } catch (const CaptureFault&) {
        }
    }
    // The dissector alone, on the raw bytes as a frame of every supported link type.
    const uint16_t linktypes[] = {0, 1, 12, 14, 101, 108, 113, 228, 229, 276};
    if (size > 1) {
        const uint16_t lt = linktypes[data[0] % (sizeof(linktypes) / sizeof(linktypes[0]))];
        PacketFields f;
        dissect_frame(data + 1, uint32_t(size - 1), lt, f);
        if ((f.status == kStatusOk || f.status == kStatusFragment) &&
            uint64_t(f.payload_off) + f.payload_len > size - 1)
            broken("payload outside frame (dissect_frame)", 0);
    }
    return 0;
}
