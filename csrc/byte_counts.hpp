// Byte statistics of many samples at once (what pytrafgen/payload_fill.py learns from): per
// group, how often each byte occurs and how often each byte follows each other byte within one
// sample. No Python here: bound in bind_byte_counts.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pytrafgen {

// Sample s is data[offsets[s] : offsets[s + 1]] and counts in group group[s] when that group
// lies in [first_group, first_group + n_groups); the others are skipped. uni is (n_groups, 256)
// and pair (n_groups, 256, 256), both zeroed by the caller. Returns false when a sample's range
// lies outside data or is reversed.
inline bool count_bytes(const uint8_t* data, size_t n_data, const int64_t* offsets, size_t n_samples,
                        const int64_t* group, int64_t first_group, int64_t n_groups, int64_t* uni,
                        int64_t* pair) {
    for (size_t s = 0; s < n_samples; ++s) {
        int64_t lo = offsets[s], hi = offsets[s + 1];
        if (lo < 0 || hi < lo || uint64_t(hi) > n_data) return false;
        int64_t g = group[s] - first_group;
        if (g < 0 || g >= n_groups || lo == hi) continue;
        int64_t* u = uni + g * 256;
        int64_t* p = pair + g * 65536;
        uint32_t prev = data[lo];
        ++u[prev];
        for (int64_t i = lo + 1; i < hi; ++i) {
            uint32_t b = data[i];
            ++u[b];
            ++p[prev * 256 + b];
            prev = b;
        }
    }
    return true;
}

}  // namespace pytrafgen
