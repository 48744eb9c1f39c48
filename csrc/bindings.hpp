// Declarations of the per-area binding functions. Each bind_*.cpp only binds:
// the logic it exposes lives in a header that does not include Python.h.
#pragma once
#include <pybind11/pybind11.h>

namespace pytrafgen {
void bind_version(pybind11::module_& m);
void bind_capture(pybind11::module_& m);
void bind_flows(pybind11::module_& m);
void bind_build(pybind11::module_& m);
void bind_tokens(pybind11::module_& m);
void bind_attend(pybind11::module_& m);
void bind_decode_step(pybind11::module_& m);
void bind_app_grammar(pybind11::module_& m);
void bind_byte_counts(pybind11::module_& m);
}  // namespace pytrafgen
