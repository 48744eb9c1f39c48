// Binds byte_counts.hpp: unigram and bigram counts of many byte samples per group.
#include <pybind11/numpy.h>

#include <vector>

#include "bind_numpy.hpp"
#include "bindings.hpp"
#include "byte_counts.hpp"

namespace py = pybind11;

namespace pytrafgen {

void bind_byte_counts(py::module_& m) {
    using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
    using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
    m.def(
        "count_bytes",
        [](const U8Array& data, const I64Array& offsets, const I64Array& group, int64_t first_group,
           int64_t n_groups) {
            if (offsets.ndim() != 1 || offsets.size() < 1 || group.ndim() != 1 || group.size() != offsets.size() - 1)
                throw py::value_error("count_bytes: offsets must hold one more entry than group");
            if (n_groups < 0 || n_groups > (int64_t(1) << 12))
                throw py::value_error("count_bytes: n_groups must lie in 0..4096 (count in blocks)");
            std::vector<int64_t> uni(size_t(n_groups) * 256), pair(size_t(n_groups) * 65536);
            bool ok;
            {
                py::gil_scoped_release nogil;
                ok = count_bytes(data.data(), size_t(data.size()), offsets.data(), size_t(group.size()),
                                 group.data(), first_group, n_groups, uni.data(), pair.data());
            }
            if (!ok) throw py::value_error("count_bytes: a sample's range lies outside data");
            return py::make_tuple(owned_array(std::move(uni), {py::ssize_t(n_groups), 256}),
                                  owned_array(std::move(pair), {py::ssize_t(n_groups), 256, 256}));
        },
        py::arg("data"), py::arg("offsets"), py::arg("group"), py::arg("first_group"), py::arg("n_groups"), R"pbdoc(
            Byte counts of the samples ``data[offsets[s]:offsets[s + 1]]`` whose ``group[s]`` lies in
            ``[first_group, first_group + n_groups)``: ``(unigram (n_groups, 256), bigram (n_groups,
            256, 256))`` int64, a bigram counting a byte and the next one of the same sample.
        )pbdoc");
}

}  // namespace pytrafgen
