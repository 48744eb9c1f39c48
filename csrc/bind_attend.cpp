// Binds the sampling attention kernel (csrc/attend.hpp).
#include <pybind11/numpy.h>

#include <string>
#include <type_traits>

#include "attend.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;
using I8 = py::array_t<int8_t, py::array::c_style>;

void check(bool ok, const char* what) {
    if (!ok) throw py::value_error(std::string("attend_rows: ") + what);
}

// Shapes common to both calls: k/v (rows, heads, slots, dim; dim + 4 for an int8 cache: the
// slot's scale as the float32 bytes after its values), out (rows, heads, dim), lengths (rows,).
template <typename Store>
RowsView<Store> cache_view(py::array_t<Store, py::array::c_style>& k, py::array_t<Store, py::array::c_style>& v,
                           const I64& lengths, float scale, F32& out) {
    // no forcecast: a copy of a cache would defeat the point, so arrays must fit as given
    check(k.ndim() == 4 && v.ndim() == 4 && out.ndim() == 3 && lengths.ndim() == 1,
          "out (rows, heads, dim), k/v (rows, heads, slots, dim), lengths (rows,)");
    for (int a = 0; a < 4; ++a) check(k.shape(a) == v.shape(a), "k and v differ in shape");
    const size_t rows = size_t(out.shape(0)), heads = size_t(out.shape(1)), dim = size_t(out.shape(2));
    const size_t slots = size_t(k.shape(2));
    const size_t width = std::is_same_v<Store, int8_t> ? dim + sizeof(float) : dim;
    check(size_t(k.shape(0)) == rows && size_t(k.shape(1)) == heads && size_t(k.shape(3)) == width,
          "k does not match the query");
    check(size_t(lengths.shape(0)) == rows, "one length per row");
    const int64_t* len = lengths.data();
    for (size_t b = 0; b < rows; ++b) check(len[b] >= 1 && size_t(len[b]) <= slots, "length out of range");
    return RowsView<Store>{nullptr, heads * dim, nullptr, nullptr, k.mutable_data(), v.mutable_data(), len,
                           heads, slots, dim, scale, out.mutable_data()};
}

template <typename Store>
void run(const F32& q, py::array_t<Store, py::array::c_style>& k, py::array_t<Store, py::array::c_style>& v,
         const I64& lengths, float scale, F32& out, size_t threads) {
    check(q.ndim() == 3 && out.ndim() == 3, "q/out (rows, heads, dim)");
    for (int a = 0; a < 3; ++a) check(out.shape(a) == q.shape(a), "out does not match q");
    RowsView<Store> view = cache_view(k, v, lengths, scale, out);
    view.q = q.data();
    py::gil_scoped_release nogil;
    attend_rows(view, size_t(q.shape(0)), threads ? threads : 1);
}

// qkv (rows, 3 * heads * dim): a row's query, key and value side by side (the fused projection's
// output); the key and value go into slot lengths[b]-1 of the cache before the query attends.
template <typename Store>
void run_qkv(const F32& qkv, py::array_t<Store, py::array::c_style>& k, py::array_t<Store, py::array::c_style>& v,
             const I64& lengths, float scale, F32& out, size_t threads) {
    RowsView<Store> view = cache_view(k, v, lengths, scale, out);
    const size_t width = view.heads * view.dim;
    check(qkv.ndim() == 2 && qkv.shape(0) == out.shape(0) && size_t(qkv.shape(1)) == 3 * width,
          "qkv (rows, 3 * heads * dim)");
    view.q = qkv.data();
    view.q_stride = 3 * width;
    view.k_new = view.q + width;
    view.v_new = view.q + 2 * width;
    py::gil_scoped_release nogil;
    attend_rows(view, size_t(qkv.shape(0)), threads ? threads : 1);
}

void check_half(size_t dim) {
    check(half_cache_supported(dim),
          "float16 keys/values need a CPU with AVX-512 and a head size that is a multiple of 16 "
          "(see half_cache_supported)");
}

void check_int8(size_t dim) {
    check(int8_cache_supported(dim),
          "int8 keys/values need a CPU with AVX-512 and a head size that is a multiple of 16 "
          "(see int8_cache_supported)");
}

}  // namespace

void bind_attend(py::module_& m) {
    m.def(
        "attend_rows",
        [](F32 q, F32 k, F32 v, I64 lengths, float scale, F32 out, size_t threads) {
            run<float>(q, k, v, lengths, scale, out, threads);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "Row b's query attends over slots 0..lengths[b]-1 of its keys/values; writes out (float32).");
    m.def(
        "attend_rows_half",
        [](F32 q, U16 k, U16 v, I64 lengths, float scale, F32 out, size_t threads) {
            check(q.ndim() == 3, "q/out (rows, heads, dim)");
            check_half(size_t(q.shape(2)));
            run<uint16_t>(q, k, v, lengths, scale, out, threads);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "attend_rows with float16 keys/values, passed as their raw bits (uint16 arrays).");
    m.def(
        "attend_qkv",
        [](F32 qkv, F32 k, F32 v, I64 lengths, float scale, F32 out, size_t threads) {
            run_qkv<float>(qkv, k, v, lengths, scale, out, threads);
        },
        py::arg("qkv"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "qkv (rows, 3 * heads * dim): stores row b's key and value (the middle and last thirds) into "
        "slot lengths[b]-1 of k/v, then attends its query (the first third) as attend_rows does.");
    m.def(
        "attend_qkv_half",
        [](F32 qkv, U16 k, U16 v, I64 lengths, float scale, F32 out, size_t threads) {
            check(out.ndim() == 3, "out (rows, heads, dim)");
            check_half(size_t(out.shape(2)));
            run_qkv<uint16_t>(qkv, k, v, lengths, scale, out, threads);
        },
        py::arg("qkv"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "attend_qkv with a float16 cache (raw bits, uint16 arrays): keys and values are rounded to "
        "float16 (to nearest even) as they are stored.");
    m.def(
        "attend_rows_int8",
        [](F32 q, I8 k, I8 v, I64 lengths, float scale, F32 out, size_t threads) {
            check(q.ndim() == 3, "q/out (rows, heads, dim)");
            check_int8(size_t(q.shape(2)));
            run<int8_t>(q, k, v, lengths, scale, out, threads);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "attend_rows with an int8 cache: k/v (rows, heads, slots, dim + 4) int8, a slot's dim values "
        "then its scale (float32 bytes); element d is value[d] * scale.");
    m.def(
        "attend_qkv_int8",
        [](F32 qkv, I8 k, I8 v, I64 lengths, float scale, F32 out, size_t threads) {
            check(out.ndim() == 3, "out (rows, heads, dim)");
            check_int8(size_t(out.shape(2)));
            run_qkv<int8_t>(qkv, k, v, lengths, scale, out, threads);
        },
        py::arg("qkv"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "attend_qkv with an int8 cache (see attend_rows_int8): the new key and value are quantized "
        "as they are stored, scale = max |x| / 127, values rounded to nearest even.");
    m.def("int8_cache_supported", [](size_t dim) { return int8_cache_supported(dim); }, py::arg("dim"),
          "Whether attend_rows_int8 runs here for heads of size dim (AVX-512, dim a multiple of 16 up to 128).");
    m.def("half_cache_supported", [](size_t dim) { return half_cache_supported(dim); }, py::arg("dim"),
          "Whether attend_rows_half runs here for heads of size dim (AVX-512, dim a multiple of 16 up to 128).");
}

}  // namespace pytrafgen
