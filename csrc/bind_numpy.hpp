// Binding helper: hand C++-owned buffers to numpy without copying (a capsule owns them).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace pytrafgen {

// Moves `v` to the heap; the returned array views it and frees it with the last reference.
template <class T>
pybind11::array owned_array(std::vector<T>&& v, std::vector<pybind11::ssize_t> shape) {
    auto* heap = new std::vector<T>(std::move(v));
    pybind11::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return pybind11::array(pybind11::dtype::of<T>(), std::move(shape), heap->data(), owner);
}

}  // namespace pytrafgen
