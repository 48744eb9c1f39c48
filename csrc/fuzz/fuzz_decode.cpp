// libFuzzer harness: the token decoder (tok::decode in csrc/tokenize.hpp), which turns a
// generator's output (untrusted: a model may emit anything) back into field records.
//
// Input: byte 0 = options (bit 0 strict, bit 1 one span for everything), then little-endian
// uint16 token ids, used as they come (ids past the vocabulary included). Spans start at
// every BOS, as a batch of generated rows would. A stand-in app decoder turns local tokens into
// bytes and fails on local token 15, so both of its outcomes are exercised.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fuzz_input.hpp"
#include "fuzz_layout.hpp"
#include "tokenize.hpp"

using namespace pytrafgen;
using fuzz::broken;

namespace {

bool stand_in_app(int app, const int32_t* local, size_t n, int direction, std::vector<uint8_t>& out) {
    if (app != 0) broken("app index out of range", size_t(app));
    if (direction != 0 && direction != 1) broken("direction neither 0 nor 1", 0);
    for (size_t k = 0; k < n; ++k) {
        if (local[k] < 0 || local[k] >= fuzz::kFuzzAppTokens) broken("local token out of range", k);
        if (local[k] == 15) return false;
        out.insert(out.end(), size_t(local[k]) * 7 + 1, uint8_t(local[k]));
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const tok::Layout lay = fuzz::fuzz_layout();
    if (size < 1) return 0;
    const bool strict = data[0] & 1, one_span = data[0] & 2;
    std::vector<uint16_t> tokens((size - 1) / 2);
    for (size_t k = 0; k < tokens.size(); ++k) tokens[k] = uint16_t(data[1 + 2 * k] | data[2 + 2 * k] << 8);
    const uint16_t bos = uint16_t(lay.start[tok::R_SPECIAL] + tok::T_BOS);
    std::vector<int64_t> offsets{0};
    if (!one_span)
        for (size_t k = 1; k < tokens.size(); ++k)
            if (tokens[k] == bos) offsets.push_back(int64_t(k));
    offsets.push_back(int64_t(tokens.size()));
    tok::DecodeResult out;
    tok::decode(tokens.data(), tokens.size(), offsets.data(), offsets.size() - 1, lay, strict, stand_in_app, out);

    const tok::DecodedPackets& pk = out.pk;
    const size_t blob = out.blob.size(), flows = out.label.size();
    for (size_t i = 0; i < pk.size(); ++i) {
        if (pk.flow[i] < 0 || size_t(pk.flow[i]) >= flows) broken("packet of an unknown flow", i);
        if (pk.ip_opt_off[i] + pk.ip_opt_len[i] > blob) broken("ip options outside the blob", i);
        if (pk.l4_opt_off[i] + pk.l4_opt_len[i] > blob) broken("l4 options outside the blob", i);
        if (pk.payload_off[i] + pk.payload_stored[i] > blob) broken("payload outside the blob", i);
        if (pk.payload_stored[i] > pk.payload_len[i]) broken("more payload stored than its length", i);
        if (pk.direction[i] > 1) broken("direction neither 0 nor 1", i);
    }
    for (size_t f = 0; f < flows; ++f) {
        if (out.label[f] < 0 || out.label[f] >= fuzz::kFuzzClasses) broken("label out of range", f);
        if (out.ip_version[f] != 4 && out.ip_version[f] != 6) broken("ip version neither 4 nor 6", f);
    }
    int64_t spans = 0, counted = 0;
    for (size_t k = 0; k + 1 < offsets.size(); ++k) spans += offsets[k + 1] > offsets[k];
    for (int e = 0; e < tok::DEC_COUNT; ++e) counted += out.errors[e];
    if (!strict && counted != spans) broken("errors + decoded flows != non-empty spans", 0);
    if (out.errors[tok::DEC_OK] != int64_t(flows)) broken("ok count != decoded flows", 0);
    return 0;
}
