// Binds the sampling attention kernel (csrc/attend.hpp).
#include <pybind11/numpy.h>

#include <string>

#include "attend.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace pytrafgen {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;

void check(bool ok, const char* what) {
    if (!ok) throw py::value_error(std::string("attend_rows: ") + what);
}

template <typename Store>
void run(const F32& q, const py::array_t<Store, py::array::c_style>& k,
         const py::array_t<Store, py::array::c_style>& v, const I64& lengths, float scale, F32& out,
         size_t threads) {
    // no forcecast: a copy of a cache would defeat the point, so arrays must fit as given
    check(q.ndim() == 3 && k.ndim() == 4 && v.ndim() == 4 && out.ndim() == 3 && lengths.ndim() == 1,
          "q/out (rows, heads, dim), k/v (rows, heads, slots, dim), lengths (rows,)");
    const size_t rows = size_t(q.shape(0)), heads = size_t(q.shape(1)), dim = size_t(q.shape(2));
    const size_t slots = size_t(k.shape(2));
    for (int a = 0; a < 4; ++a) check(k.shape(a) == v.shape(a), "k and v differ in shape");
    check(size_t(k.shape(0)) == rows && size_t(k.shape(1)) == heads && size_t(k.shape(3)) == dim,
          "k does not match q");
    check(size_t(lengths.shape(0)) == rows, "one length per row");
    for (int a = 0; a < 3; ++a) check(out.shape(a) == q.shape(a), "out does not match q");
    const int64_t* len = lengths.data();
    for (size_t b = 0; b < rows; ++b) check(len[b] >= 1 && size_t(len[b]) <= slots, "length out of range");
    float* o = out.mutable_data();
    py::gil_scoped_release nogil;
    attend_rows(q.data(), k.data(), v.data(), len, rows, heads, slots, dim, scale, o, threads ? threads : 1);
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
            check(q.ndim() == 3 && half_cache_supported(size_t(q.shape(2))),
                  "float16 keys/values need a CPU with AVX-512 and a head size that is a multiple of 16 "
                  "(see half_cache_supported)");
            run<uint16_t>(q, k, v, lengths, scale, out, threads);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lengths"), py::arg("scale"), py::arg("out"),
        py::arg("threads") = 1,
        "attend_rows with float16 keys/values, passed as their raw bits (uint16 arrays).");
    m.def("half_cache_supported", [](size_t dim) { return half_cache_supported(dim); }, py::arg("dim"),
          "Whether attend_rows_half runs here for heads of size dim (AVX-512, dim a multiple of 16 up to 128).");
}

}  // namespace pytrafgen
