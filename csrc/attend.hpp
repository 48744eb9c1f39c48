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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PYTRAFGEN_HAVE_AVX512 1
#define PYTRAFGEN_AVX512 __attribute__((target("avx512f,avx512dq,fma")))
#endif

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

#ifdef PYTRAFGEN_HAVE_AVX512
// exp(x) for 16 lanes of x <= 0 (scores minus their maximum): Cephes' expf polynomial after
// range reduction by ln 2 (within 2 ulp of std::exp); below float's range it flushes to 0.
// A scalar std::exp per score was most of the generic kernel's time once its data is cached.
PYTRAFGEN_AVX512 inline __m512 exp_nonpositive16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

constexpr size_t kAhead = 16;  // slots to prefetch ahead of the one read

// Every cache line of one slot (prefetching past the end of an array never faults).
template <typename Store>
PYTRAFGEN_AVX512 inline void prefetch_slot(const Store* slot, size_t dim, int hint) {
    const char* p = reinterpret_cast<const char*>(slot);
    for (size_t offset = 0; offset < dim * sizeof(Store); offset += 64) {
        if (hint == _MM_HINT_T0)
            _mm_prefetch(p + offset, _MM_HINT_T0);
        else
            _mm_prefetch(p + offset, _MM_HINT_T1);
    }
}
constexpr size_t kMaxVectors = 8;  // the AVX-512 path holds a head's query in registers: dim <= 128

// 16 keys' or values' elements as float32, from float32 or float16 (raw bits) storage.
PYTRAFGEN_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
PYTRAFGEN_AVX512 inline __m512 load16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// attend_rows_range for dim a multiple of 16 (<= 128) on a CPU with AVX-512: a score is
// dim / 16 fused 16-wide steps per key, the softmax's exps 16 at a time, the weighted sum of
// values with two sets of accumulators (independent chains of fused steps). Keys and values
// are float32 or float16 (`Store` uint16_t: half the bytes to read, and reading them is what
// this kernel waits on once the pool's cache outgrows the CPU's caches); sums are float32.
template <typename Store>
PYTRAFGEN_AVX512 inline void attend_rows_range_avx512(const float* q, const Store* k, const Store* v,
                                                      const int64_t* lengths, size_t row_begin, size_t row_end,
                                                      size_t heads, size_t slots, size_t dim, float scale,
                                                      float* out) {
    std::vector<float> scores(slots);
    const size_t vectors = dim / 16;
    for (size_t b = row_begin; b < row_end; ++b) {
        const size_t n = size_t(lengths[b]);
        for (size_t h = 0; h < heads; ++h) {
            const size_t qh = (b * heads + h) * dim;
            const Store* kb = k + (b * heads + h) * slots * dim;
            const Store* vb = v + (b * heads + h) * slots * dim;
            __m512 qr[kMaxVectors];
            for (size_t c = 0; c < vectors; ++c) qr[c] = _mm512_loadu_ps(q + qh + 16 * c);
            for (size_t j = 0; j < kAhead && j < n; ++j) {
                prefetch_slot(kb + j * dim, dim, _MM_HINT_T0);
                prefetch_slot(vb + j * dim, dim, _MM_HINT_T1);
            }
            float best = -INFINITY;
            for (size_t j = 0; j < n; ++j) {
                const Store* kj = kb + j * dim;
                // keys and values kAhead slots ahead: a head's prefix is a short stream, over
                // before the hardware prefetcher has ramped up, and reading waits on memory
                prefetch_slot(kj + kAhead * dim, dim, _MM_HINT_T0);
                prefetch_slot(vb + (j + kAhead) * dim, dim, _MM_HINT_T1);  // read after the softmax
                __m512 acc = _mm512_mul_ps(load16(kj), qr[0]);
                for (size_t c = 1; c < vectors; ++c) acc = _mm512_fmadd_ps(load16(kj + 16 * c), qr[c], acc);
                const float s = _mm512_reduce_add_ps(acc) * scale;
                scores[j] = s;
                best = s > best ? s : best;
            }
            const __m512 top = _mm512_set1_ps(best);
            __m512 sum = _mm512_setzero_ps();
            for (size_t j = 0; j < n; j += 16) {
                const __mmask16 live = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
                const __m512 p = _mm512_maskz_mov_ps(
                    live, exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, &scores[j]), top)));
                _mm512_mask_storeu_ps(&scores[j], live, p);
                sum = _mm512_add_ps(sum, p);
            }
            __m512 even[kMaxVectors], odd[kMaxVectors];
            for (size_t c = 0; c < vectors; ++c) even[c] = odd[c] = _mm512_setzero_ps();
            size_t j = 0;
            for (; j + 2 <= n; j += 2) {
                const __m512 p0 = _mm512_set1_ps(scores[j]), p1 = _mm512_set1_ps(scores[j + 1]);
                const Store* v0 = vb + j * dim;
                const Store* v1 = v0 + dim;
                for (size_t c = 0; c < vectors; ++c) {
                    even[c] = _mm512_fmadd_ps(p0, load16(v0 + 16 * c), even[c]);
                    odd[c] = _mm512_fmadd_ps(p1, load16(v1 + 16 * c), odd[c]);
                }
            }
            if (j < n) {
                const __m512 p0 = _mm512_set1_ps(scores[j]);
                for (size_t c = 0; c < vectors; ++c) even[c] = _mm512_fmadd_ps(p0, load16(vb + j * dim + 16 * c), even[c]);
            }
            const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
            for (size_t c = 0; c < vectors; ++c)
                _mm512_storeu_ps(out + qh + 16 * c, _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv));
        }
    }
}

inline bool avx512_path(size_t dim) {
    static const bool cpu_has_it = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    return cpu_has_it && dim % 16 == 0 && dim / 16 <= kMaxVectors;
}
#else
inline bool avx512_path(size_t) { return false; }
#endif

// Whether float16 keys and values can be read (by the AVX-512 kernel) for heads of `dim`.
inline bool half_cache_supported(size_t dim) { return avx512_path(dim); }

// One range of rows through the fastest kernel this CPU and head size allow.
inline void attend_rows_part(const float* q, const float* k, const float* v, const int64_t* lengths,
                             size_t row_begin, size_t row_end, size_t heads, size_t slots, size_t dim, float scale,
                             float* out) {
#ifdef PYTRAFGEN_HAVE_AVX512
    if (avx512_path(dim)) {
        attend_rows_range_avx512(q, k, v, lengths, row_begin, row_end, heads, slots, dim, scale, out);
        return;
    }
#endif
    attend_rows_range(q, k, v, lengths, row_begin, row_end, heads, slots, dim, scale, out);
}

// float16 keys and values: only where half_cache_supported(dim) (the caller checks).
inline void attend_rows_part(const float* q, const uint16_t* k, const uint16_t* v, const int64_t* lengths,
                             size_t row_begin, size_t row_end, size_t heads, size_t slots, size_t dim, float scale,
                             float* out) {
#ifdef PYTRAFGEN_HAVE_AVX512
    attend_rows_range_avx512(q, k, v, lengths, row_begin, row_end, heads, slots, dim, scale, out);
#else
    (void)q, (void)k, (void)v, (void)lengths, (void)row_begin, (void)row_end, (void)heads, (void)slots, (void)dim,
        (void)scale, (void)out;
#endif
}

// The same over all rows, split across `threads` threads (rows are independent).
template <typename Store>
void attend_rows(const float* q, const Store* k, const Store* v, const int64_t* lengths, size_t rows,
                 size_t heads, size_t slots, size_t dim, float scale, float* out, size_t threads) {
    void (*part)(const float*, const Store*, const Store*, const int64_t*, size_t, size_t, size_t, size_t, size_t,
                 float, float*) = attend_rows_part;
    if (threads <= 1 || rows < 2 * threads) {
        part(q, k, v, lengths, 0, rows, heads, slots, dim, scale, out);
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
        pool.emplace_back(part, q, k, v, lengths, parts[i].first, parts[i].second, heads, slots, dim, scale, out);
    part(q, k, v, lengths, parts[0].first, parts[0].second, heads, slots, dim, scale, out);
    for (auto& th : pool) th.join();
}

}  // namespace pytrafgen
