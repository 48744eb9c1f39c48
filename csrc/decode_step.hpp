// One decoding step of the sampling GPT (pytrafgen/generators/ar/model.py) for a batch of rows
// on a CPU with AVX512-BF16, in one call: embedding (token, position, class projection), per
// layer layer norm, fused query/key/value projection, attention over the row's own cache prefix
// (attend.hpp, the key and value stored on the way), output projection, layer norm, MLP with
// exact GELU, and the final layer norm. The torch path runs ~100 operators a step, each with
// its own dispatch and Python overhead, which is most of a step when few rows are left (the
// tail of long flows runs one row at a time); here a row costs its arithmetic only.
//
// The numerics follow the torch path with bfloat16 projections (bf16_linear_copy): a
// projection's input is rounded to bfloat16 (to nearest even), multiplied by bfloat16 weights
// with float32 sums, and its result rounded to bfloat16; everything else is float32. Sums run
// in another order than oneDNN's, so results may differ in the last bit before rounding.
// No Python here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "attend.hpp"

namespace pytrafgen {

// The model's weights as the step reads them (C = embd, heads * dim = C).
//   wte (vocab, C), wpe (block, C), class_proj (C, C) (out, in) or nullptr, float32;
//   norms ((2 * layers + 1), C) float32: ln_1 and ln_2 of each layer, then ln_f (no bias);
//   linears: per layer c_attn (3C, C), attn c_proj (C, C), c_fc (4C, C), mlp c_proj (C, 4C),
//   bfloat16 bits packed by pack_linear's layout (see below), one layer after another.
struct StepModel {
    size_t layers, embd, heads, vocab, block;
    int64_t bos;
    const float* wte;
    const float* wpe;
    const float* class_proj;
    const float* norms;
    const uint16_t* linears;
};

// Packed layout of an (out, in) bfloat16 weight: blocks of 16 outputs; within a block, for each
// pair of inputs (2p, 2p+1), 32 values: output o's two weights side by side, o = 0..15. That is
// what one VDPBF16PS multiplies against a broadcast pair of inputs (no horizontal sums).
inline size_t packed_index(size_t o, size_t i, size_t in) {
    return (o / 16) * (in / 2) * 32 + (i / 2) * 32 + (o % 16) * 2 + (i % 2);
}

// bfloat16 elements of one layer's packed linears.
inline size_t layer_linear_size(size_t embd) { return 12 * embd * embd; }

// Whether the step runs here: AVX512-BF16, heads the int8/float16 attention kernel reads, widths
// the packed layout needs.
inline bool decode_step_supported(size_t embd, size_t heads) {
#ifdef PYTRAFGEN_HAVE_AVX512
    static const bool bf16 = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
    return bf16 && heads > 0 && embd % heads == 0 && embd % 16 == 0 && avx512_path(embd / heads);
#else
    (void)embd, (void)heads;
    return false;
#endif
}

#ifdef PYTRAFGEN_HAVE_AVX512
#define PYTRAFGEN_BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma")))

namespace step_detail {

// float32 → bfloat16 bits, to nearest even (as torch's .to(torch.bfloat16) for finite values)
PYTRAFGEN_BF16 inline void to_bf16(const float* x, uint16_t* out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    for (; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, x + i, 4);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        out[i] = uint16_t(bits >> 16);
    }
}

// C (rows, out) = bf16(bf16(X) (rows, in) · W^T) for R rows and NB blocks of 16 outputs.
template <size_t R, size_t NB>
PYTRAFGEN_BF16 inline void linear_tile(const uint16_t* x, size_t in, const uint16_t* w, float* y, size_t out) {
    __m512 acc[R][NB];
    for (size_t r = 0; r < R; ++r)
        for (size_t b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_ps();
    const size_t block = (in / 2) * 32;
    for (size_t p = 0; p < in / 2; ++p) {
        __m512i wv[NB];
        for (size_t b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(w + b * block + p * 32);
        for (size_t r = 0; r < R; ++r) {
            uint32_t pair;
            std::memcpy(&pair, x + r * in + 2 * p, 4);
            const __m512i xv = _mm512_set1_epi32(int32_t(pair));
            for (size_t b = 0; b < NB; ++b) acc[r][b] = _mm512_dpbf16_ps(acc[r][b], (__m512bh)xv, (__m512bh)wv[b]);
        }
    }
    for (size_t r = 0; r < R; ++r)
        for (size_t b = 0; b < NB; ++b) {
            // the result rounded to bfloat16 and widened back, as the torch path's .float()
            const __m256i h = (__m256i)_mm512_cvtneps_pbh(acc[r][b]);
            _mm512_storeu_ps(y + r * out + 16 * b,
                             _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
}

template <size_t R>
PYTRAFGEN_BF16 inline void linear_rows(const uint16_t* x, size_t in, const uint16_t* w, float* y, size_t out) {
    const size_t blocks = out / 16, block = (in / 2) * 32;
    size_t b = 0;
    for (; b + 4 <= blocks; b += 4) linear_tile<R, 4>(x, in, w + b * block, y + 16 * b, out);
    for (; b < blocks; ++b) linear_tile<R, 1>(x, in, w + b * block, y + 16 * b, out);
}

// y (rows, out) = projection of x (rows, in, float32; rounded to bfloat16 here via xb scratch)
PYTRAFGEN_BF16 inline void linear(const float* x, size_t rows, size_t in, const uint16_t* w, float* y, size_t out,
                                  uint16_t* xb) {
    to_bf16(x, xb, rows * in);
    size_t r = 0;
    for (; r + 4 <= rows; r += 4) linear_rows<4>(xb + r * in, in, w, y + r * out, out);
    switch (rows - r) {
        case 3: linear_rows<3>(xb + r * in, in, w, y + r * out, out); break;
        case 2: linear_rows<2>(xb + r * in, in, w, y + r * out, out); break;
        case 1: linear_rows<1>(xb + r * in, in, w, y + r * out, out); break;
        default: break;
    }
}

// torch's layer norm without bias: (x - mean) / sqrt(var + 1e-5) * weight, biased variance
inline void layer_norm(const float* x, const float* weight, float* out, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        double sum = 0;
        for (size_t i = 0; i < n; ++i) sum += xr[i];
        const float mean = float(sum / double(n));
        double var = 0;
        for (size_t i = 0; i < n; ++i) var += double(xr[i] - mean) * double(xr[i] - mean);
        const float rstd = float(1.0 / std::sqrt(var / double(n) + 1e-5));
        for (size_t i = 0; i < n; ++i) out[r * n + i] = (xr[i] - mean) * rstd * weight[i];
    }
}

// exp(x) for x <= 0 (what erf needs): 2^(x log2 e) by a degree-6 polynomial of the fraction and
// an exponent scale; relative error ~2e-7
PYTRAFGEN_BF16 inline __m512 exp_neg(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945f));  // in ±ln2/2
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// exact GELU, x * (1 + erf(x / sqrt 2)) / 2, with erf by Abramowitz & Stegun 7.1.26 (absolute
// error < 1.5e-7; the result is rounded to bfloat16, 8 significant bits, by the next projection)
PYTRAFGEN_BF16 inline void gelu(float* x, size_t n) {
    size_t i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
        const __m512 a = _mm512_abs_ps(z);
        const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), one));
        __m512 p = _mm512_set1_ps(1.061405429f);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
        p = _mm512_mul_ps(p, t);
        __m512 erf_abs = _mm512_fnmadd_ps(p, exp_neg(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)), one);
        // erf is odd: the sign of z
        const __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
        erf_abs = _mm512_mask_sub_ps(erf_abs, negative, _mm512_setzero_ps(), erf_abs);
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, erf_abs)));
    }
    for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

}  // namespace step_detail

// Rows [begin, end) of one step (each row independent of the others: a thread's share).
// tokens, positions, classes: per row (classes nullptr for a model without class conditioning);
// k, v: the pool's whole cache (layers, pool_rows, heads, slots, width), rows 0.. the step's;
// hidden: (rows, C) out, the final layer norm's output.
template <typename Store>
PYTRAFGEN_BF16 void decode_step_range(const StepModel& m, const int64_t* tokens, const int64_t* positions,
                                      const int64_t* classes, Store* k, Store* v, size_t pool_rows, size_t slots,
                                      size_t width, float* hidden, size_t begin, size_t end) {
    using namespace step_detail;
    const size_t rows = end - begin, C = m.embd, dim = C / m.heads;
    if (rows == 0) return;
    std::vector<float> x(rows * C), h(rows * C), qkv(rows * 3 * C), y(rows * C), ff(rows * 4 * C);
    std::vector<uint16_t> xb(rows * 4 * C);
    std::vector<int64_t> lengths(rows);
    for (size_t r = 0; r < rows; ++r) {
        const size_t b = begin + r;
        const size_t tok = size_t(tokens[b]), pos = size_t(positions[b]);
        lengths[r] = int64_t(pos) + 1;
        float* xr = x.data() + r * C;
        for (size_t i = 0; i < C; ++i) xr[i] = m.wte[tok * C + i] + m.wpe[pos * C + i];
        if (m.class_proj != nullptr) {
            // position 0 (BOS) has no flow yet: its class is BOS itself, as in training
            const float* e = m.wte + (pos == 0 ? size_t(m.bos) : size_t(classes[b])) * C;
            for (size_t o = 0; o < C; ++o) {
                const float* wo = m.class_proj + o * C;
                float acc[8] = {0};
                for (size_t i = 0; i + 8 <= C; i += 8)
                    for (size_t u = 0; u < 8; ++u) acc[u] += wo[i + u] * e[i + u];
                float s = 0;
                for (size_t u = 0; u < 8; ++u) s += acc[u];
                xr[o] += s;
            }
        }
    }
    const float scale = 1.0f / std::sqrt(float(dim));
    const size_t layer_cache = pool_rows * m.heads * slots * width;
    for (size_t l = 0; l < m.layers; ++l) {
        const uint16_t* w = m.linears + l * layer_linear_size(C);
        const uint16_t *w_attn = w, *w_proj = w + 3 * C * C, *w_fc = w_proj + C * C, *w_out = w_fc + 4 * C * C;
        layer_norm(x.data(), m.norms + (2 * l) * C, h.data(), rows, C);
        linear(h.data(), rows, C, w_attn, qkv.data(), 3 * C, xb.data());
        const size_t row_cache = m.heads * slots * width;
        RowsView<Store> view{qkv.data(), 3 * C, qkv.data() + C, qkv.data() + 2 * C,
                             k + l * layer_cache + begin * row_cache, v + l * layer_cache + begin * row_cache,
                             lengths.data(), m.heads, slots, dim, scale, y.data()};
        attend_rows_part(view, 0, rows);
        linear(y.data(), rows, C, w_proj, h.data(), C, xb.data());
        for (size_t i = 0; i < rows * C; ++i) x[i] += h[i];
        layer_norm(x.data(), m.norms + (2 * l + 1) * C, h.data(), rows, C);
        linear(h.data(), rows, C, w_fc, ff.data(), 4 * C, xb.data());
        gelu(ff.data(), rows * 4 * C);
        linear(ff.data(), rows, 4 * C, w_out, h.data(), C, xb.data());
        for (size_t i = 0; i < rows * C; ++i) x[i] += h[i];
    }
    layer_norm(x.data(), m.norms + 2 * m.layers * C, hidden + begin * C, rows, C);
}

// The whole step over `rows` rows on up to `threads` threads (rows split by attention work).
// The caller checks shapes and ranges (bind_decode_step.cpp): tokens and classes < vocab,
// positions < min(block, slots), rows <= pool_rows.
template <typename Store>
void decode_step(const StepModel& m, const int64_t* tokens, const int64_t* positions, const int64_t* classes,
                 Store* k, Store* v, size_t rows, size_t pool_rows, size_t slots, size_t width, float* hidden,
                 size_t threads) {
    auto part = [&](size_t begin, size_t end) {
        decode_step_range<Store>(m, tokens, positions, classes, k, v, pool_rows, slots, width, hidden, begin, end);
    };
    // below ~8 rows a thread's start costs more than its share of the arithmetic
    if (threads > rows / 8) threads = rows / 8;
    if (threads <= 1) {
        part(0, rows);
        return;
    }
    // a row's cost: its projections (a constant) plus its attention (its prefix)
    const uint64_t fixed = 64;
    uint64_t total = 0;
    for (size_t b = 0; b < rows; ++b) total += fixed + uint64_t(positions[b]);
    std::vector<std::pair<size_t, size_t>> parts;
    size_t begin = 0;
    uint64_t acc = 0;
    for (size_t t = 0; t < threads; ++t) {
        const uint64_t goal = total * (t + 1) / threads;
        size_t end = begin;
        while (end < rows && acc < goal) acc += fixed + uint64_t(positions[end++]);
        if (t + 1 == threads) end = rows;
        if (end > begin) parts.emplace_back(begin, end);
        begin = end;
    }
    std::vector<std::thread> pool;
    for (size_t i = 1; i < parts.size(); ++i) pool.emplace_back(part, parts[i].first, parts[i].second);
    part(parts[0].first, parts[0].second);
    for (auto& th : pool) th.join();
}
#else
// never called: decode_step_supported is false without AVX-512 (the binding checks it)
template <typename Store>
void decode_step(const StepModel&, const int64_t*, const int64_t*, const int64_t*, Store*, Store*, size_t, size_t,
                 size_t, size_t, float*, size_t) {}
#endif

}  // namespace pytrafgen
