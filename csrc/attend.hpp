// Single-query attention for sampling: each row's one new query attends over that row's own
// cache prefix only. A batched kernel (SDPA) attends every row over the longest row's prefix
// under a mask; with rows at unrelated positions (a refilled pool, sample.py) that reads
// several times the keys and values needed, and reading them is what a CPU decoding step
// spends most of its time on. No Python here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
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

// What one call attends: row b's query, head h, is q[b * q_stride + h * dim ..] (q_stride is
// heads * dim for a (rows, heads, dim) array, 3 * heads * dim for the rows of a fused
// query/key/value projection); k, v: (rows, heads, slots, dim), C-contiguous; out (rows, heads,
// dim) float32. Row b attends over slots 0..lengths[b]-1 (1 <= lengths[b] <= slots). With
// k_new / v_new (same row stride as q), row b's new key and value are first stored into slot
// lengths[b]-1: the step's cache write in the same pass, not a separate scatter.
template <typename Store>
struct RowsView {
    const float* q;
    size_t q_stride;
    const float* k_new;  // nullptr: the cache already holds every slot read
    const float* v_new;
    Store* k;
    Store* v;
    const int64_t* lengths;
    size_t heads, slots, dim;
    float scale;
    float* out;
};

// The generic kernel stores float32 only (a float16 cache needs the AVX-512 kernel).
inline void store_slot(const float* src, float* dst, size_t dim) {
    for (size_t d = 0; d < dim; ++d) dst[d] = src[d];
}

PYTRAFGEN_CLONES inline void attend_rows_range(const RowsView<float>& a, size_t row_begin, size_t row_end) {
    const size_t heads = a.heads, slots = a.slots, dim = a.dim;
    const float scale = a.scale;
    float* out = a.out;
    std::vector<float> scores(slots);
    constexpr size_t kLanes = 8;  // independent partial sums: the compiler vectorizes them
    for (size_t b = row_begin; b < row_end; ++b) {
        const size_t n = size_t(a.lengths[b]);
        for (size_t h = 0; h < heads; ++h) {
            const size_t qh = (b * heads + h) * dim;
            const float* qv = a.q + b * a.q_stride + h * dim;
            float* kb = a.k + (b * heads + h) * slots * dim;
            float* vb = a.v + (b * heads + h) * slots * dim;
            if (a.k_new != nullptr) {
                store_slot(a.k_new + b * a.q_stride + h * dim, kb + (n - 1) * dim, dim);
                store_slot(a.v_new + b * a.q_stride + h * dim, vb + (n - 1) * dim, dim);
            }
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

constexpr size_t kAhead = 48;  // slots to prefetch ahead of the one read

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

// 16 keys' or values' elements from float32, or to float16 storage (round to nearest even,
// as torch's conversion).
PYTRAFGEN_AVX512 inline void store_slot(const float* src, uint16_t* dst, size_t dim) {
    for (size_t d = 0; d < dim; d += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// The 16 lane sums of a[0..15] as one vector (lane j: the sum of a[j]'s lanes): a transpose
// by unpacks and 128-bit shuffles interleaved with the adds, about 3 instructions per key
// instead of a horizontal reduction's 8 in one dependent chain.
PYTRAFGEN_AVX512 inline __m512 sum_lanes16(const __m512* a) {
    __m512 b[8], c[4], d[2];
    for (int i = 0; i < 8; ++i)  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; ++i) {  // per 128-bit lane: the four keys 4i..4i+3, partial sums
        const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(b[2 * i]), _mm512_castps_pd(b[2 * i + 1]));
        const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(b[2 * i]), _mm512_castps_pd(b[2 * i + 1]));
        c[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    for (int i = 0; i < 2; ++i)  // 128-bit lanes (0+1, 2+3) of c[2i], then of c[2i+1]
        d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xDD));
    // 128-bit lane k: keys 4k..4k+3, whole sums
    return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], 0x88), _mm512_shuffle_f32x4(d[0], d[1], 0xDD));
}

// attend_rows_range for dim a multiple of 16 (<= 128) on a CPU with AVX-512: the scores of 16
// keys at a time (dim / 16 fused 16-wide steps per key, then one transposing sum), the
// softmax's exps 16 at a time, the weighted sum of values with two sets of accumulators
// (independent chains of fused steps). Keys and values are float32 or float16 (`Store`
// uint16_t: half the bytes to read, and reading them is what this kernel waits on once the
// pool's cache outgrows the CPU's caches); sums are float32.
// `Vectors` (dim / 16) is a template argument: with it fixed, a block's 16 partial sums and
// the head's query stay in registers.
template <size_t Vectors, typename Store>
PYTRAFGEN_AVX512 inline void attend_rows_range_avx512(const RowsView<Store>& a, size_t row_begin, size_t row_end) {
    const size_t heads = a.heads, slots = a.slots;
    constexpr size_t dim = 16 * Vectors, vectors = Vectors;
    std::vector<float> scores(slots + 16);
    const __m512 scale = _mm512_set1_ps(a.scale);
    for (size_t b = row_begin; b < row_end; ++b) {
        const size_t n = size_t(a.lengths[b]);
        for (size_t h = 0; h < heads; ++h) {
            const size_t qh = (b * heads + h) * dim;
            const float* qv = a.q + b * a.q_stride + h * dim;
            Store* kb = a.k + (b * heads + h) * slots * dim;
            Store* vb = a.v + (b * heads + h) * slots * dim;
            if (a.k_new != nullptr) {
                store_slot(a.k_new + b * a.q_stride + h * dim, kb + (n - 1) * dim, dim);
                store_slot(a.v_new + b * a.q_stride + h * dim, vb + (n - 1) * dim, dim);
            }
            __m512 qr[kMaxVectors];
            for (size_t c = 0; c < vectors; ++c) qr[c] = _mm512_loadu_ps(qv + 16 * c);
            for (size_t j = 0; j < kAhead && j < n; ++j) {
                prefetch_slot(kb + j * dim, dim, _MM_HINT_T0);
                prefetch_slot(vb + j * dim, dim, _MM_HINT_T1);
            }
            __m512 top = _mm512_set1_ps(-INFINITY);
            for (size_t j = 0; j < n; j += 16) {
                const size_t count = n - j >= 16 ? 16 : n - j;
                __m512 acc[16];
                for (size_t u = 0; u < 16; ++u) {
                    // past the prefix: a slot that was never written (or another flow's) is
                    // read into a lane masked off below, never into a sum
                    const Store* kj = kb + (j + (u < count ? u : 0)) * dim;
                    // keys and values kAhead slots ahead: a head's prefix is a short stream, over
                    // before the hardware prefetcher has ramped up, and reading waits on memory
                    prefetch_slot(kj + kAhead * dim, dim, _MM_HINT_T0);
                    prefetch_slot(vb + (j + u + kAhead) * dim, dim, _MM_HINT_T1);  // read after the softmax
                    acc[u] = _mm512_mul_ps(load16(kj), qr[0]);
                    for (size_t c = 1; c < vectors; ++c) acc[u] = _mm512_fmadd_ps(load16(kj + 16 * c), qr[c], acc[u]);
                }
                const __mmask16 live = count == 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
                const __m512 s = _mm512_mul_ps(sum_lanes16(acc), scale);
                _mm512_storeu_ps(&scores[j], s);
                top = _mm512_mask_max_ps(top, live, top, s);
            }
            const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(top));
            __m512 sum = _mm512_setzero_ps();
            for (size_t j = 0; j < n; j += 16) {
                const __mmask16 live = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
                const __m512 p = _mm512_maskz_mov_ps(
                    live, exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, &scores[j]), best)));
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
                _mm512_storeu_ps(a.out + qh + 16 * c, _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv));
        }
    }
}

// The kernel for this head size (avx512_path(dim) holds).
template <typename Store>
inline void attend_rows_avx512(const RowsView<Store>& a, size_t row_begin, size_t row_end) {
    switch (a.dim / 16) {
        case 1: return attend_rows_range_avx512<1>(a, row_begin, row_end);
        case 2: return attend_rows_range_avx512<2>(a, row_begin, row_end);
        case 3: return attend_rows_range_avx512<3>(a, row_begin, row_end);
        case 4: return attend_rows_range_avx512<4>(a, row_begin, row_end);
        case 5: return attend_rows_range_avx512<5>(a, row_begin, row_end);
        case 6: return attend_rows_range_avx512<6>(a, row_begin, row_end);
        case 7: return attend_rows_range_avx512<7>(a, row_begin, row_end);
        default: return attend_rows_range_avx512<8>(a, row_begin, row_end);
    }
}

// An int8 cache: a slot is one head's dim keys (or values) as int8 and, after them, their scale
// (float32, 4 bytes): element d is int8[d] * scale, scale = max |x| / 127 over the slot, values
// rounded to nearest (even). dim + 4 bytes instead of float16's 2 * dim: for 48-wide heads 52
// bytes instead of 96, and this kernel's time with a full pool is reading them.
constexpr size_t kScaleBytes = sizeof(float);

inline float slot_scale(const int8_t* slot, size_t dim) {
    float s;
    std::memcpy(&s, slot + dim, sizeof s);
    return s;
}

PYTRAFGEN_AVX512 inline __m512 load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// One slot from float32: the scale from the largest magnitude, then each element times 127 / it.
PYTRAFGEN_AVX512 inline void store_slot_int8(const float* src, int8_t* dst, size_t dim) {
    __m512 top = _mm512_setzero_ps();
    for (size_t d = 0; d < dim; d += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(src + d)));
    const float absmax = _mm512_reduce_max_ps(top);
    const float scale = absmax / 127.0f;
    const __m512 inv = _mm512_set1_ps(absmax > 0 ? 127.0f / absmax : 0.0f);
    for (size_t d = 0; d < dim; d += 16) {
        const __m512i n = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + d), inv),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + d), _mm512_cvtepi32_epi8(n));
    }
    std::memcpy(dst + dim, &scale, sizeof scale);
}

// Both cache lines a slot may straddle.
PYTRAFGEN_AVX512 inline void prefetch_bytes(const int8_t* p, size_t bytes, int hint) {
    const char* c = reinterpret_cast<const char*>(p);
    if (hint == _MM_HINT_T0) {
        _mm_prefetch(c, _MM_HINT_T0);
        _mm_prefetch(c + bytes - 1, _MM_HINT_T0);
    } else {
        _mm_prefetch(c, _MM_HINT_T1);
        _mm_prefetch(c + bytes - 1, _MM_HINT_T1);
    }
}

// attend_rows_range_avx512 over an int8 cache (slots dim + kScaleBytes apart): a key's score is
// its int8 dot product with the query times the slot's scale, a value's weight its softmax
// probability times the value slot's scale; sums in float32 as there.
template <size_t Vectors>
PYTRAFGEN_AVX512 inline void attend_rows_range_int8(const RowsView<int8_t>& a, size_t row_begin, size_t row_end) {
    const size_t heads = a.heads, slots = a.slots;
    constexpr size_t dim = 16 * Vectors, vectors = Vectors, stride = dim + kScaleBytes;
    std::vector<float> scores(slots + 16);
    const __m512 scale = _mm512_set1_ps(a.scale);
    for (size_t b = row_begin; b < row_end; ++b) {
        const size_t n = size_t(a.lengths[b]);
        for (size_t h = 0; h < heads; ++h) {
            const size_t qh = (b * heads + h) * dim;
            const float* qv = a.q + b * a.q_stride + h * dim;
            int8_t* kb = a.k + (b * heads + h) * slots * stride;
            int8_t* vb = a.v + (b * heads + h) * slots * stride;
            if (a.k_new != nullptr) {
                store_slot_int8(a.k_new + b * a.q_stride + h * dim, kb + (n - 1) * stride, dim);
                store_slot_int8(a.v_new + b * a.q_stride + h * dim, vb + (n - 1) * stride, dim);
            }
            __m512 qr[kMaxVectors];
            for (size_t c = 0; c < vectors; ++c) qr[c] = _mm512_loadu_ps(qv + 16 * c);
            for (size_t j = 0; j < kAhead && j < n; ++j) {
                prefetch_bytes(kb + j * stride, stride, _MM_HINT_T0);
                prefetch_bytes(vb + j * stride, stride, _MM_HINT_T1);
            }
            __m512 top = _mm512_set1_ps(-INFINITY);
            alignas(64) float key_scales[16];
            for (size_t j = 0; j < n; j += 16) {
                const size_t count = n - j >= 16 ? 16 : n - j;
                __m512 acc[16];
                for (size_t u = 0; u < 16; ++u) {
                    // past the prefix: lane u repeats slot j, masked off below (an unwritten
                    // slot's scale may be anything, NaN included)
                    const int8_t* kj = kb + (j + (u < count ? u : 0)) * stride;
                    prefetch_bytes(kj + kAhead * stride, stride, _MM_HINT_T0);
                    prefetch_bytes(vb + (j + u + kAhead) * stride, stride, _MM_HINT_T1);
                    key_scales[u] = slot_scale(kj, dim);
                    acc[u] = _mm512_mul_ps(load16(kj), qr[0]);
                    for (size_t c = 1; c < vectors; ++c) acc[u] = _mm512_fmadd_ps(load16(kj + 16 * c), qr[c], acc[u]);
                }
                const __mmask16 live = count == 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
                const __m512 s = _mm512_mul_ps(_mm512_mul_ps(sum_lanes16(acc), _mm512_load_ps(key_scales)), scale);
                _mm512_storeu_ps(&scores[j], s);
                top = _mm512_mask_max_ps(top, live, top, s);
            }
            const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(top));
            __m512 sum = _mm512_setzero_ps();
            for (size_t j = 0; j < n; j += 16) {
                const __mmask16 live = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
                const __m512 p = _mm512_maskz_mov_ps(
                    live, exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, &scores[j]), best)));
                _mm512_mask_storeu_ps(&scores[j], live, p);
                sum = _mm512_add_ps(sum, p);
            }
            __m512 even[kMaxVectors], odd[kMaxVectors];
            for (size_t c = 0; c < vectors; ++c) even[c] = odd[c] = _mm512_setzero_ps();
            size_t j = 0;
            for (; j + 2 <= n; j += 2) {
                const int8_t* v0 = vb + j * stride;
                const int8_t* v1 = v0 + stride;
                const __m512 p0 = _mm512_set1_ps(scores[j] * slot_scale(v0, dim));
                const __m512 p1 = _mm512_set1_ps(scores[j + 1] * slot_scale(v1, dim));
                for (size_t c = 0; c < vectors; ++c) {
                    even[c] = _mm512_fmadd_ps(p0, load16(v0 + 16 * c), even[c]);
                    odd[c] = _mm512_fmadd_ps(p1, load16(v1 + 16 * c), odd[c]);
                }
            }
            if (j < n) {
                const int8_t* v0 = vb + j * stride;
                const __m512 p0 = _mm512_set1_ps(scores[j] * slot_scale(v0, dim));
                for (size_t c = 0; c < vectors; ++c) even[c] = _mm512_fmadd_ps(p0, load16(v0 + 16 * c), even[c]);
            }
            const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
            for (size_t c = 0; c < vectors; ++c)
                _mm512_storeu_ps(a.out + qh + 16 * c, _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv));
        }
    }
}

inline void attend_rows_int8(const RowsView<int8_t>& a, size_t row_begin, size_t row_end) {
    switch (a.dim / 16) {
        case 1: return attend_rows_range_int8<1>(a, row_begin, row_end);
        case 2: return attend_rows_range_int8<2>(a, row_begin, row_end);
        case 3: return attend_rows_range_int8<3>(a, row_begin, row_end);
        case 4: return attend_rows_range_int8<4>(a, row_begin, row_end);
        case 5: return attend_rows_range_int8<5>(a, row_begin, row_end);
        case 6: return attend_rows_range_int8<6>(a, row_begin, row_end);
        case 7: return attend_rows_range_int8<7>(a, row_begin, row_end);
        default: return attend_rows_range_int8<8>(a, row_begin, row_end);
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

// An int8 cache (dim + 4 bytes a slot) likewise: only where avx512_path(dim) holds.
inline bool int8_cache_supported(size_t dim) { return avx512_path(dim); }

// One range of rows through the fastest kernel this CPU and head size allow.
inline void attend_rows_part(const RowsView<float>& a, size_t row_begin, size_t row_end) {
#ifdef PYTRAFGEN_HAVE_AVX512
    if (avx512_path(a.dim)) {
        attend_rows_avx512(a, row_begin, row_end);
        return;
    }
#endif
    attend_rows_range(a, row_begin, row_end);
}

// float16 keys and values: only where half_cache_supported(dim) (the caller checks).
inline void attend_rows_part(const RowsView<uint16_t>& a, size_t row_begin, size_t row_end) {
#ifdef PYTRAFGEN_HAVE_AVX512
    attend_rows_avx512(a, row_begin, row_end);
#else
    (void)a, (void)row_begin, (void)row_end;
#endif
}

// int8 keys and values: only where int8_cache_supported(dim) (the caller checks).
inline void attend_rows_part(const RowsView<int8_t>& a, size_t row_begin, size_t row_end) {
#ifdef PYTRAFGEN_HAVE_AVX512
    attend_rows_int8(a, row_begin, row_end);
#else
    (void)a, (void)row_begin, (void)row_end;
#endif
}

// The same over `rows` rows, split across `threads` threads (rows are independent).
template <typename Store>
void attend_rows(const RowsView<Store>& a, size_t rows, size_t threads) {
    void (*part)(const RowsView<Store>&, size_t, size_t) = attend_rows_part;
    if (threads <= 1 || rows < 2 * threads) {
        part(a, 0, rows);
        return;
    }
    // split by work (the sum of lengths), not by row count
    uint64_t total = 0;
    for (size_t b = 0; b < rows; ++b) total += uint64_t(a.lengths[b]);
    std::vector<std::pair<size_t, size_t>> parts;
    size_t begin = 0;
    uint64_t acc = 0;
    for (size_t t = 0; t < threads; ++t) {
        const uint64_t goal = total * (t + 1) / threads;
        size_t end = begin;
        while (end < rows && acc < goal) acc += uint64_t(a.lengths[end++]);
        if (t + 1 == threads) end = rows;
        if (end > begin) parts.emplace_back(begin, end);
        begin = end;
    }
    std::vector<std::thread> pool;
    for (size_t i = 1; i < parts.size(); ++i) pool.emplace_back(part, std::cref(a), parts[i].first, parts[i].second);
    part(a, parts[0].first, parts[0].second);
    for (auto& th : pool) th.join();
}

}  // namespace pytrafgen
