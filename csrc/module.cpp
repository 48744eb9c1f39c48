// pytrafgen._core: creates the module and calls each area's binder. Nothing else.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = R"pbdoc(
        pytrafgen._core — the C++ core: pcap/pcapng reading, L2–L4 dissection,
        flow assembly, protocol-field tokenization, and packet building with
        length and checksum repair. Byte loops run without the GIL.
    )pbdoc";
    pytrafgen::bind_version(m);
    pytrafgen::bind_capture(m);
    pytrafgen::bind_flows(m);
    pytrafgen::bind_build(m);
    pytrafgen::bind_tokens(m);
    pytrafgen::bind_attend(m);
    pytrafgen::bind_decode_step(m);
    pytrafgen::bind_app_grammar(m);
    pytrafgen::bind_byte_counts(m);
}
