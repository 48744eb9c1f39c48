// Binds the fused decoding step (csrc/decode_step.hpp): a DecodeStep holds the model's arrays
// (checked once) and runs a step over a pool's cache, every size read from Python checked here.
#include <pybind11/numpy.h>

#include <string>
#include <type_traits>

#include "bindings.hpp"
#include "decode_step.hpp"
#include "head_draw.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;
using I8 = py::array_t<int8_t, py::array::c_style>;

void check(bool ok, const std::string& what) {
    if (!ok) throw py::value_error("decode_step: " + what);
}

class DecodeStep {
public:
    DecodeStep(F32 wte, F32 wpe, py::object class_proj, F32 norms, U16 linears, size_t heads, int64_t bos)
        : wte_(std::move(wte)), wpe_(std::move(wpe)), norms_(std::move(norms)), linears_(std::move(linears)) {
        check(wte_.ndim() == 2 && wpe_.ndim() == 2 && norms_.ndim() == 2 && linears_.ndim() == 1,
              "wte (vocab, C), wpe (block, C), norms (2 * layers + 1, C), linears (packed,)");
        const size_t C = size_t(wte_.shape(1));
        check(size_t(wpe_.shape(1)) == C && size_t(norms_.shape(1)) == C, "widths differ");
        check(decode_step_supported(C, heads),
              "needs a CPU with AVX512-BF16 and heads of a size the attention kernel reads (see "
              "decode_step_supported)");
        check(norms_.shape(0) % 2 == 1, "norms: 2 per layer and the final one");
        const size_t layers = size_t(norms_.shape(0)) / 2;
        check(size_t(linears_.shape(0)) == layers * layer_linear_size(C), "linears: 12 C^2 per layer");
        check(bos >= 0 && bos < wte_.shape(0), "bos outside the vocabulary");
        const float* proj = nullptr;
        if (!class_proj.is_none()) {
            class_proj_ = class_proj.cast<F32>();
            check(class_proj_.ndim() == 2 && size_t(class_proj_.shape(0)) == C && size_t(class_proj_.shape(1)) == C,
                  "class_proj (C, C)");
            proj = class_proj_.data();
        }
        model_ = StepModel{layers, C, heads, size_t(wte_.shape(0)), size_t(wpe_.shape(0)), bos, wte_.data(),
                           wpe_.data(), proj, norms_.data(), linears_.data()};
    }

    template <typename Store>
    void run(const I64& tokens, const I64& positions, const py::object& classes_obj,
             py::array_t<Store, py::array::c_style>& k, py::array_t<Store, py::array::c_style>& v, F32& hidden,
             size_t threads) {
        const StepModel& m = model_;
        check(tokens.ndim() == 1 && positions.ndim() == 1 && tokens.shape(0) == positions.shape(0),
              "tokens and positions (rows,)");
        const size_t rows = size_t(tokens.shape(0));
        check(hidden.ndim() == 2 && size_t(hidden.shape(0)) == rows && size_t(hidden.shape(1)) == m.embd,
              "hidden (rows, C)");
        check(k.ndim() == 5 && v.ndim() == 5, "k/v (layers, pool rows, heads, slots, width)");
        for (int a = 0; a < 5; ++a) check(k.shape(a) == v.shape(a), "k and v differ in shape");
        const size_t dim = m.embd / m.heads;
        const size_t width = std::is_same_v<Store, int8_t> ? dim + sizeof(float) : dim;
        check(size_t(k.shape(0)) == m.layers && size_t(k.shape(2)) == m.heads && size_t(k.shape(4)) == width,
              "k/v do not match the model");
        const size_t pool_rows = size_t(k.shape(1)), slots = size_t(k.shape(3));
        check(rows <= pool_rows, "more rows than the cache holds");
        const int64_t* tok = tokens.data();
        const int64_t* pos = positions.data();
        for (size_t b = 0; b < rows; ++b) {
            check(tok[b] >= 0 && size_t(tok[b]) < m.vocab, "token outside the vocabulary");
            check(pos[b] >= 0 && size_t(pos[b]) < slots && size_t(pos[b]) < m.block, "position out of range");
        }
        const int64_t* cls = nullptr;
        I64 classes;
        if (m.class_proj != nullptr) {
            check(!classes_obj.is_none(), "a class-conditioned model needs each row's class token");
            classes = classes_obj.cast<I64>();
            check(classes.ndim() == 1 && size_t(classes.shape(0)) == rows, "classes (rows,)");
            cls = classes.data();
            for (size_t b = 0; b < rows; ++b)
                check(cls[b] >= 0 && size_t(cls[b]) < m.vocab, "class token outside the vocabulary");
        }
        Store* kd = k.mutable_data();
        Store* vd = v.mutable_data();
        float* out = hidden.mutable_data();
        py::gil_scoped_release nogil;
        decode_step<Store>(m, tok, pos, cls, kd, vd, rows, pool_rows, slots, width, out, threads ? threads : 1);
    }

private:
    F32 wte_, wpe_, norms_, class_proj_;
    U16 linears_;
    StepModel model_{};
};

class HeadDraw {
public:
    HeadDraw(I64 offsets, I64 ids, F32 weight, I64 set_of_state, I64 next_state, py::array_t<bool> eos_ok)
        : offsets_(std::move(offsets)), ids_(std::move(ids)), weight_(std::move(weight)),
          set_of_state_(std::move(set_of_state)), next_state_(std::move(next_state)), eos_ok_(std::move(eos_ok)) {
        check(offsets_.ndim() == 1 && offsets_.shape(0) >= 2 && ids_.ndim() == 1 && weight_.ndim() == 2 &&
                  set_of_state_.ndim() == 1 && next_state_.ndim() == 2 && eos_ok_.ndim() == 1,
              "head: offsets (sets + 1,), ids (tokens,), weight (tokens, C), set_of_state (states,), next_state "
              "(states, vocab), eos_ok (states,)");
        check(weight_.shape(0) == ids_.shape(0), "head: one weight row per token");
        const size_t sets = size_t(offsets_.shape(0)) - 1, states = size_t(set_of_state_.shape(0));
        const size_t vocab = size_t(next_state_.shape(1));
        check(size_t(next_state_.shape(0)) == states && size_t(eos_ok_.shape(0)) == states,
              "head: next_state and eos_ok have a row per state");
        const int64_t* off = offsets_.data();
        check(off[0] == 0 && off[sets] == ids_.shape(0), "head: offsets span the tokens");
        for (size_t s = 0; s < sets; ++s) check(off[s] < off[s + 1], "head: an empty or unordered set");
        for (py::ssize_t i = 0; i < ids_.shape(0); ++i)
            check(ids_.data()[i] >= 0 && size_t(ids_.data()[i]) < vocab, "head: a token outside the vocabulary");
        const int64_t* set = set_of_state_.data();
        for (size_t i = 0; i < states; ++i)
            check(set[i] >= 0 && size_t(set[i]) < sets, "head: a state's set out of range");
        const int64_t* next = next_state_.data();
        for (size_t i = 0; i < states * vocab; ++i)
            check(next[i] >= -1 && next[i] < int64_t(states), "head: a transition to no state");
        head_ = HeadSets{size_t(weight_.shape(1)), sets, states, vocab, off, ids_.data(), weight_.data(), set,
                         next, reinterpret_cast<const uint8_t*>(eos_ok_.data())};
    }

    void draw(const F32& hidden, const I64& states, const py::object& uniforms, float temperature, I64& out) {
        check(hidden.ndim() == 2, "head: hidden (rows, C)");
        const size_t rows = size_t(hidden.shape(0));
        check(states.ndim() == 1 && size_t(states.shape(0)) == rows && out.ndim() == 1 &&
                  size_t(out.shape(0)) == rows,
              "head: states and out (rows,)");
        F32 kept;
        const float* u = checked(hidden, rows, states.data(), uniforms, temperature, kept);
        const float* x = hidden.data();
        const int64_t* st = states.data();
        int64_t* o = out.mutable_data();
        py::gil_scoped_release nogil;
        head_draw(head_, x, st, u, temperature > 0 ? 1.0f / temperature : 0.0f, o, rows);
    }

    // rows 0..rows-1 of a pool: draw (as draw()) then advance_rows; every array a whole pool
    // buffer, out (pool rows, max_len). Returns how many rows ended.
    size_t draw_advance(const F32& hidden, size_t rows, const py::object& uniforms, float temperature, I64& state,
                        I64& pos, I64& feed, I64& last_eos_ok, I64& out, int64_t eos) {
        check(hidden.ndim() == 2 && state.ndim() == 1 && pos.ndim() == 1 && feed.ndim() == 1 &&
                  last_eos_ok.ndim() == 1 && out.ndim() == 2,
              "advance: hidden (rows, C), state, pos, feed, last_eos_ok (pool rows,), out (pool rows, max_len)");
        const size_t pool = size_t(out.shape(0)), max_len = size_t(out.shape(1));
        check(size_t(state.shape(0)) == pool && size_t(pos.shape(0)) == pool && size_t(feed.shape(0)) == pool &&
                  size_t(last_eos_ok.shape(0)) == pool && rows <= pool && size_t(hidden.shape(0)) >= rows,
              "advance: one entry per pool row, rows <= pool rows");
        int64_t* p = pos.mutable_data();
        for (size_t b = 0; b < rows; ++b)
            check(p[b] >= 0 && size_t(p[b]) + 1 < max_len, "advance: a row at or past max_len");
        F32 kept;
        const float* u = checked(hidden, rows, state.data(), uniforms, temperature, kept);
        std::vector<int64_t> token(rows);
        const float* x = hidden.data();
        int64_t* st = state.mutable_data();
        py::gil_scoped_release nogil;
        head_draw(head_, x, st, u, temperature > 0 ? 1.0f / temperature : 0.0f, token.data(), rows);
        return advance_rows(head_, token.data(), rows, st, p, feed.mutable_data(), last_eos_ok.mutable_data(),
                            out.mutable_data(), max_len, eos);
    }

private:
    // What draw and draw_advance check alike: hidden's width, each row's state, and (temperature
    // > 0) one uniform in [0, 1) per row, kept alive in `kept`; returns the uniforms or nullptr.
    const float* checked(const F32& hidden, size_t rows, const int64_t* st, const py::object& uniforms,
                         float temperature, F32& kept) const {
        check(size_t(hidden.shape(1)) == head_.embd, "head: hidden (rows, C)");
        for (size_t b = 0; b < rows; ++b)
            check(st[b] >= 0 && size_t(st[b]) < head_.states, "head: a state out of range");
        if (!(temperature > 0)) return nullptr;
        check(!uniforms.is_none(), "head: a draw at temperature > 0 needs one uniform per row");
        kept = uniforms.cast<F32>();
        check(kept.ndim() == 1 && size_t(kept.shape(0)) == rows, "head: uniforms (rows,)");
        const float* u = kept.data();
        for (size_t b = 0; b < rows; ++b) check(u[b] >= 0 && u[b] < 1, "head: a uniform outside [0, 1)");
        return u;
    }

    I64 offsets_, ids_;
    F32 weight_;
    I64 set_of_state_, next_state_;
    py::array_t<bool> eos_ok_;
    HeadSets head_{};
};

}  // namespace

void bind_decode_step(py::module_& m) {
    m.def("decode_step_supported", [](size_t embd, size_t heads) { return decode_step_supported(embd, heads); },
          py::arg("embd"), py::arg("heads"),
          "Whether DecodeStep runs here (AVX512-BF16; heads of a size the attention kernel reads).");
    m.def(
        "pack_index", [](size_t o, size_t i, size_t in) { return packed_index(o, i, in); }, py::arg("o"),
        py::arg("i"), py::arg("in_features"),
        "Where weight[o, i] of an (out, in) projection goes in DecodeStep's packed layout (for tests).");
    py::class_<DecodeStep>(m, "DecodeStep",
                           "One fused decoding step of the sampling GPT (bfloat16 projections), see decode_step.hpp.")
        .def(py::init<F32, F32, py::object, F32, U16, size_t, int64_t>(), py::arg("wte"), py::arg("wpe"),
             py::arg("class_proj"), py::arg("norms"), py::arg("linears"), py::arg("heads"), py::arg("bos"))
        .def("run", &DecodeStep::run<int8_t>, py::arg("tokens"), py::arg("positions"), py::arg("classes"),
             py::arg("k"), py::arg("v"), py::arg("hidden"), py::arg("threads") = 1,
             "Feed tokens (rows,) at positions (rows,) into rows 0..rows-1 of an int8 cache (layers, pool "
             "rows, heads, slots, dim + 4); writes the final hidden states (rows, C).")
        .def("run", &DecodeStep::run<uint16_t>, py::arg("tokens"), py::arg("positions"), py::arg("classes"),
             py::arg("k"), py::arg("v"), py::arg("hidden"), py::arg("threads") = 1,
             "The same with a float16 cache (raw bits).")
        .def("run", &DecodeStep::run<float>, py::arg("tokens"), py::arg("positions"), py::arg("classes"),
             py::arg("k"), py::arg("v"), py::arg("hidden"), py::arg("threads") = 1,
             "The same with a float32 cache.");
    py::class_<HeadDraw>(m, "HeadDraw",
                         "The output head over each row's allowed tokens and the draw of its next token (head_draw.hpp).")
        .def(py::init<I64, I64, F32, I64, I64, py::array_t<bool>>(), py::arg("offsets"), py::arg("ids"),
             py::arg("weight"), py::arg("set_of_state"), py::arg("next_state"), py::arg("eos_ok"))
        .def("draw", &HeadDraw::draw, py::arg("hidden"), py::arg("states"), py::arg("uniforms"),
             py::arg("temperature"), py::arg("out"),
             "out[b]: the token drawn for row b from softmax(hidden[b] . weight / temperature) over its state's "
             "set, by CDF inversion at uniforms[b]; at temperature <= 0 the first largest logit.")
        .def("draw_advance", &HeadDraw::draw_advance, py::arg("hidden"), py::arg("rows"), py::arg("uniforms"),
             py::arg("temperature"), py::arg("state"), py::arg("pos"), py::arg("feed"), py::arg("last_eos_ok"),
             py::arg("out"), py::arg("eos"),
             "draw for rows 0..rows-1 of a pool, then its bookkeeping (head_draw.hpp, advance_rows) on the pool's "
             "buffers in place; returns how many rows ended.");
}

}  // namespace pytrafgen
