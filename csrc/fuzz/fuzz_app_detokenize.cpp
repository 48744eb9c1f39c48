// libFuzzer harness: the app-grammar detokenizer (csrc/app_detokenize.hpp), which reads local
// token ids a sampler wrote (untrusted input) back into message bytes.
//
// Input: byte 0 picks the family (bit 0: binary, else text), then each 2 bytes are one token id
// (little endian, modulo a little more than the grammar's ids, so out-of-range ids occur too).
// A refused sequence must leave no bytes; an accepted one is bounded by what its tokens can
// stand for; an accepted sequence's bytes, encoded again, must decode to the same bytes.
#include <cstdint>
#include <vector>

#include "app_detokenize.hpp"
#include "app_grammar.hpp"
#include "fuzz_app_grammars.hpp"
#include "fuzz_input.hpp"

using namespace pytrafgen;
using fuzz::broken;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const app::Detokenizer text(fuzz::text_grammar(), fuzz::kMaxToken);
    static const app::Detokenizer binary(fuzz::binary_grammar(), fuzz::kMaxToken);
    static const app::TextGrammar text_g = fuzz::text_grammar();
    static const app::BinaryGrammar binary_g = fuzz::binary_grammar();
    if (size < 1) return 0;
    const bool is_binary = data[0] & 1;
    std::vector<int32_t> tokens;  // exactly sized, so AddressSanitizer sees any overrun
    for (size_t i = 1; i + 1 < size; i += 2)
        tokens.push_back(int32_t((data[i] | (data[i + 1] << 8)) % (fuzz::kMaxToken + 8)));
    app::Bytes out;
    const bool ok = (is_binary ? binary : text).decode(tokens.data(), tokens.size(), out);
    if (!ok && !out.empty()) broken("a refused sequence left bytes", out.size());
    // a token stands for at most its longest table text (< 32 bytes) plus framing, and each
    // derived length for at most 20 digits
    if (out.size() > 64 * tokens.size() + 64) broken("more bytes than the tokens can stand for", out.size());
    if (!ok) return 0;
    app::Tokens again;
    const int status = is_binary ? app::encode_binary(binary_g, out.data(), out.size(), again)
                                 : (app::encode_text(text_g, out.data(), out.size(), again) ? 1 : 0);
    if (status != 1) return 0;  // the bytes need not frame the same way; when they encode ...
    app::Bytes twice;
    if (!(is_binary ? binary : text).decode(again.data(), again.size(), twice))
        broken("the encoder's own tokens were refused", again.size());
    if (twice != out) broken("decode(encode(bytes)) differs from the bytes", twice.size());
    return 0;
}
