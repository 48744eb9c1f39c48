// The output head over the tokens a row's grammar state allows and the draw of the next token,
// in one call per step (the Python path, SubVocabHead.logits then draw(), runs ~20 operators a
// step). Same distribution: row b's logits are hidden[b] · weight[t] for the allowed tokens t in
// ascending order, divided by the temperature; the token is the first whose cumulative
// probability exceeds uniforms[b] times the total (draw()'s CDF inversion), or at temperature 0
// the first largest logit (argmax). No Python here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attend.hpp"  // PYTRAFGEN_CLONES

namespace pytrafgen {

// The allowed sets: set s is tokens ids[offsets[s] .. offsets[s+1]) (ascending), with their head
// rows weight[offsets[s] ..] (embd float32 each); set_of_state[state] is a state's set. For
// advance(): next_state (states, vocab), the grammar's transition (-1: illegal), and eos_ok
// (states,), whether EOS is allowed in a state.
struct HeadSets {
    size_t embd, sets, states, vocab;
    const int64_t* offsets;
    const int64_t* ids;
    const float* weight;
    const int64_t* set_of_state;
    const int64_t* next_state;
    const uint8_t* eos_ok;
};

// One row: logits of its set into `logits` (scratch of the largest set's size), then the draw.
// The caller checks state < states and (temperature > 0) a uniform in [0, 1).
PYTRAFGEN_CLONES inline int64_t head_draw_row(const HeadSets& h, const float* hidden, int64_t state, float uniform,
                             float inv_temperature, std::vector<float>& logits) {
    const size_t s = size_t(h.set_of_state[state]);
    const size_t first = size_t(h.offsets[s]), count = size_t(h.offsets[s + 1]) - first;
    const size_t C = h.embd;
    float best = -INFINITY;
    size_t best_at = 0;
    for (size_t t = 0; t < count; ++t) {
        const float* w = h.weight + (first + t) * C;
        float acc[8] = {0};
        size_t i = 0;
        for (; i + 8 <= C; i += 8)
            for (size_t u = 0; u < 8; ++u) acc[u] += hidden[i + u] * w[i + u];
        float dot = 0;
        for (size_t u = 0; u < 8; ++u) dot += acc[u];
        for (; i < C; ++i) dot += hidden[i] * w[i];
        logits[t] = dot;
        if (dot > best) best = dot, best_at = t;  // the first largest, as argmax
    }
    if (inv_temperature <= 0 || count == 1) return h.ids[first + best_at];
    // softmax's CDF, unnormalized: exp((l - max) / T), summed in order
    const float top = best * inv_temperature;
    double total = 0;
    for (size_t t = 0; t < count; ++t) {
        logits[t] = std::exp(logits[t] * inv_temperature - top);
        total += logits[t];
    }
    const double goal = double(uniform) * total;
    double cumulative = 0;
    for (size_t t = 0; t < count; ++t) {
        cumulative += logits[t];
        if (cumulative > goal) return h.ids[first + t];
    }
    return h.ids[first + best_at];  // the uniform rounded up to the total: the likeliest
}

inline void head_draw(const HeadSets& h, const float* hidden, const int64_t* states, const float* uniforms,
                      float inv_temperature, int64_t* out, size_t rows) {
    size_t widest = 1;
    for (size_t s = 0; s < h.sets; ++s) {
        const size_t n = size_t(h.offsets[s + 1] - h.offsets[s]);
        if (n > widest) widest = n;
    }
    std::vector<float> logits(widest);
    for (size_t b = 0; b < rows; ++b)
        out[b] = head_draw_row(h, hidden + b * h.embd, states[b], uniforms != nullptr ? uniforms[b] : 0.0f,
                               inv_temperature, logits);
}

// A pool's rows after their tokens are drawn (token[b] for row b, b < rows): the bookkeeping of
// sample_stream's step. last_eos_ok[b] = pos[b] + 1 where EOS was allowed in the row's state;
// the token goes to out[b, pos[b] + 1] (out: pool rows x max_len); state[b] steps through the
// grammar; feed[b] = token, pos[b] += 1. Returns how many rows ended (EOS, or the last slot of
// max_len reached). The caller checks pos[b] + 1 < max_len and the states and tokens.
inline size_t advance_rows(const HeadSets& h, const int64_t* token, size_t rows, int64_t* state, int64_t* pos,
                           int64_t* feed, int64_t* last_eos_ok, int64_t* out, size_t max_len, int64_t eos) {
    size_t ended = 0;
    for (size_t b = 0; b < rows; ++b) {
        const int64_t target = pos[b] + 1;
        if (h.eos_ok[state[b]]) last_eos_ok[b] = target;
        out[b * max_len + size_t(target)] = token[b];
        state[b] = h.next_state[size_t(state[b]) * h.vocab + size_t(token[b])];
        feed[b] = token[b];
        pos[b] = target;
        ended += token[b] == eos || size_t(target) == max_len - 1;
    }
    return ended;
}

}  // namespace pytrafgen
