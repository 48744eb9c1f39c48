// libFuzzer harness: the declarative app-protocol tokenizer (csrc/app_grammar.hpp), which reads
// captured payloads (untrusted input) with a plugin's grammar.
//
// Input: byte 0 picks the family (bit 0: binary, else text), the rest is one payload. The
// grammars are HTTP/1.x- and MQTT-shaped (the plugins' own are data built in Python; what is
// fuzzed here is the engine that walks the bytes). Every token must be a byte (0-255) or one of
// the grammar's own ids, and a payload that is not encoded must leave no tokens behind.
#include <cstdint>
#include <vector>

#include "app_grammar.hpp"
#include "fuzz_app_grammars.hpp"
#include "fuzz_input.hpp"

using namespace pytrafgen;
using fuzz::broken;

using fuzz::kMaxToken;
using fuzz::binary_grammar;
using fuzz::text_grammar;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const app::TextGrammar text = text_grammar();
    static const app::BinaryGrammar binary = binary_grammar();
    if (size < 1) return 0;
    const uint8_t* payload = data + 1;
    const size_t n = size - 1;
    // a copy of exactly n bytes, so AddressSanitizer sees any read past the payload
    std::vector<uint8_t> exact(payload, payload + n);
    app::Tokens out;
    int status;
    if (data[0] & 1)
        status = app::encode_binary(binary, exact.data(), exact.size(), out);
    else
        status = app::encode_text(text, exact.data(), exact.size(), out) ? 1 : 0;
    if (status < -1 || status > 1) broken("status outside -1..1", 0);
    if (status == 1 && n == 0) broken("an empty payload encoded", 0);
    size_t bytes = 0;
    for (size_t k = 0; k < out.size(); ++k) {
        if (out[k] < 0 || out[k] >= kMaxToken) broken("token outside the grammar's ids", k);
        bytes += out[k] < 256;
    }
    // every payload byte lands in at most one byte token, plus the structure it was read from
    if (status == 1 && bytes > n) broken("more byte tokens than payload bytes", bytes);
    return 0;
}
