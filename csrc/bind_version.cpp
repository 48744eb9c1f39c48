#include "bindings.hpp"

namespace pytrafgen {
void bind_version(pybind11::module_& m) {
#ifdef PYTRAFGEN_SANITIZED
    m.attr("sanitized") = true;
#else
    m.attr("sanitized") = false;
#endif
    m.attr("abi_version") = 1;
}
}  // namespace pytrafgen
