// What bind_tokens.cpp needs of bind_app_grammar.cpp: a declared grammar (``to_core()``'s dict)
// as a C++ detokenizer, so the token decoder can detokenize app spans without Python.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "app_detokenize.hpp"

namespace pytrafgen {
app::Detokenizer make_detokenizer(const pybind11::dict& grammar, int32_t n_local);
}  // namespace pytrafgen
