// Binding helpers shared by the bind_*.cpp files: hand C++-owned buffers to numpy without a
// copy, export the column lists of columns.hpp, and borrow columns from a dict of arrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "columns.hpp"

namespace pytrafgen {

// The one way a C++ buffer reaches numpy: `owner` (a vector, a page mapping, a malloc'd
// block, …) moves to the heap and the array views `first`, which must point into storage that
// moving `owner` does not move; the array's capsule deletes the owner with its last reference.
template <class E, class Owner>
pybind11::array owning_array(Owner&& owner, const E* first, std::vector<pybind11::ssize_t> shape) {
    auto* heap = new Owner(std::forward<Owner>(owner));
    pybind11::capsule capsule(heap, [](void* p) { delete static_cast<Owner*>(p); });
    return pybind11::array(pybind11::dtype::of<E>(), std::move(shape), first, capsule);
}

// A vector as an array of `shape` (default: 1-D), without a copy.
template <class T>
pybind11::array owned_array(std::vector<T>&& v, std::vector<pybind11::ssize_t> shape = {}) {
    if (shape.empty()) shape = {pybind11::ssize_t(v.size())};
    const T* first = v.data();
    return owning_array(std::move(v), first, std::move(shape));
}

// Shape of a column of `rows` rows and row width `width`.
inline std::vector<pybind11::ssize_t> column_shape(size_t rows, int width) {
    if (width == 1) return {pybind11::ssize_t(rows)};
    return {pybind11::ssize_t(rows), pybind11::ssize_t(width)};
}

// A column list of columns.hpp as Python sees it: a tuple of (name, numpy dtype name, width).
template <size_t N>
pybind11::tuple column_list(const ColumnInfo (&columns)[N]) {
    pybind11::tuple out(N);
    for (size_t k = 0; k < N; ++k)
        out[k] = pybind11::make_tuple(columns[k].name, columns[k].dtype, columns[k].width);
    return out;
}

}  // namespace pytrafgen
