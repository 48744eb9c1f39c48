// Single-query attention for sampling: each row's one new query attends over that row's own
// cache prefix only. A batched kernel (SDPA) attends every row over the longest row's prefix
// under a mask; with rows at unrelated positions (a refilled pool, sample.py) that reads
// several times the keys and values needed, and reading them is what a CPU decoding step
// spends most of its time on. No Python here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

namespace pytrafgen {

// The build targets the baseline x86-64 (SSE2); an AVX2+FMA clone, picked at load time where
// the CPU has it, does the dot products and sums in 8-wide fused steps.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(PYTRAFGEN_SANITIZED)
#define PYTRAFGEN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PYTRAFGEN_CLONES
#endif

// q, out: (rows, heads, dim); k, v: (rows, heads, slots, dim), all C-contiguous float32.
// Row b attends over slots 0..lengths[b]-1 (1 <= lengths[b] <= slots).
PYTRAFGEN_CLONES inline void attend_rows_range(const float* q, const float* k, const float* v, const int64_t* lengths,
                              size_t row_begin, size_t row_end, size_t heads, size_t slots, size_t dim,
                              float scale, float* out) {
    std::vector<float> scores(slots);
    constexpr size_t kLanes = 8;  // independent partial sums: the compiler vectorizes them
    for (size_t b = row_begin; b < row_end; ++b) {
        const size_t n = size_t(lengths[b]);
        for (size_t h = 0; h < heads; ++h) {
            const size_t qh = (b * heads + h) * dim;
            const float* qv = q + qh;
            const float* kb = k + (b * heads + h) * slots * dim;
            const float* vb = v + (b * heads + h) * slots * dim;
            float best = -INFINITY;
            for (size_t j = 0; j < n; ++j) {
                const float* kj = kb + j * dim;
                float acc[kLanes] = {0};
                size_t d = 0;
                for (; d + kLanes <= dim; d += kLanes)
                    for (size_t u = 0; u < kLanes; ++u) acc[u] += qv[d + u] * kj[d + u];
                float s = 0;
                for (size_t u = 0; u < kLanes; ++u) s += acc[u];
                for (; d < dim; ++d) s += qv[d] * kj[d];
                s *= scale;
                scores[j] = s;
                if (s > best) best = s;
            }
            float* o = out + qh;
            for (size_t d = 0; d < dim; ++d) o[d] = 0;
            float total = 0;
            for (size_t j = 0; j < n; ++j) {
                const float p = std::exp(scores[j] - best);
                total += p;
                const float* vj = vb + j * dim;
                for (size_t d = 0; d < dim; ++d) o[d] += p * vj[d];
            }
            const float inv = 1.0f / total;
            for (size_t d = 0; d < dim; ++d) o[d] *= inv;
        }
    }
}

// The same over all rows, split across `threads` threads (rows are independent).
inline void attend_rows(const float* q, const float* k, const float* v, const int64_t* lengths, size_t rows,
                        size_t heads, size_t slots, size_t dim, float scale, float* out, size_t threads) {
    if (threads <= 1 || rows < 2 * threads) {
        attend_rows_range(q, k, v, lengths, 0, rows, heads, slots, dim, scale, out);
        return;
    }
    // split by work (the sum of lengths), not by row count
    uint64_t total = 0;
    for (size_t b = 0; b < rows; ++b) total += uint64_t(lengths[b]);
    std::vector<std::pair<size_t, size_t>> parts;
    size_t begin = 0;
    uint64_t acc = 0;
    for (size_t t = 0; t < threads; ++t) {
        const uint64_t goal = total * (t + 1) / threads;
        size_t end = begin;
        while (end < rows && acc < goal) acc += uint64_t(lengths[end++]);
        if (t + 1 == threads) end = rows;
        if (end > begin) parts.emplace_back(begin, end);
        begin = end;
    }
    std::vector<std::thread> pool;
    for (size_t i = 1; i < parts.size(); ++i)
        pool.emplace_back(attend_rows_range, q, k, v, lengths, parts[i].first, parts[i].second, heads, slots, dim,
                          scale, out);
    attend_rows_range(q, k, v, lengths, parts[0].first, parts[0].second, heads, slots, dim, scale, out);
    for (auto& th : pool) th.join();
}

}  // namespace pytrafgen
