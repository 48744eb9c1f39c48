// The token layout the token harnesses use: Vocabulary(classes=3 names,
// app_protocols=[AppProtocol("fuzz", "", 16 token names)], payload_cap=16) in
// pytrafgen/tokenizer/vocab.py, rebuilt here so the harness needs no Python. make_seeds.py
// encodes its token seeds with that same vocabulary.
#pragma once

#include "tokenize.hpp"

namespace pytrafgen::fuzz {

constexpr int32_t kFuzzAppTokens = 16, kFuzzClasses = 3;
constexpr uint32_t kFuzzPayloadCap = 16;

inline tok::Layout fuzz_layout() {
    // Sizes of the core ranges, in tok::Range order (CORE_FIELDS in vocab.py).
    static const int32_t sizes[tok::R_COUNT] = {
        7, 2, 4, 256, 256, 256, 256, 64, 256, 256, 128, 16, 16, 16, 16, 32, 2, 16, 16, 16,
        10, 17, 256, 1, 16, 16, 16, 16, 16, 256, 44, 15, 16, 16, 16, 16, 256, 1, 256, 256, 256, 256,
        1, 1, 256, 256, 256, 256, 256, 256, 256, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 256, 256, 256};
    tok::Layout lay;
    int32_t at = 0;
    for (int r = 0; r < tok::R_COUNT; ++r) {
        lay.start[r] = at;
        at += sizes[r];
    }
    lay.app_begin.push_back(at);
    lay.app_size.push_back(kFuzzAppTokens);
    lay.app_transport.push_back(0);
    at += 1 + kFuzzAppTokens;
    lay.class_start = at;
    lay.n_classes = kFuzzClasses;
    lay.vocab_size = at + kFuzzClasses;
    lay.payload_cap = kFuzzPayloadCap;
    // Bucket k stands for 10^(k/8) µs, roughly what vocab.py's log spacing gives.
    int64_t v = 1000;
    for (int k = 0; k < tok::kIatBuckets; ++k) {
        lay.iat_values[k] = v;
        if (k < tok::kIatBuckets - 1) lay.iat_edges[k] = v;
        v = v + v / 3 + 1;
    }
    return lay;
}

}  // namespace pytrafgen::fuzz
