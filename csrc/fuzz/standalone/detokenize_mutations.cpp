// Standalone driver for fuzz_app_detokenize.cpp where clang's libFuzzer and sanitizer runtimes
// are missing: token sequences the encoder writes for seed payloads, mutated (a token replaced,
// dropped, inserted, the sequence doubled), fed to the harness. Build and run (docs/hardening.md):
//   g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Icsrc -Icsrc/fuzz \
//     csrc/fuzz/fuzz_app_detokenize.cpp csrc/fuzz/standalone/detokenize_mutations.cpp -o /tmp/detok && /tmp/detok 300000
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>
#include "app_grammar.hpp"
#include "fuzz_app_grammars.hpp"
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
using namespace pytrafgen;
int main(int argc, char** argv) {
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    std::mt19937_64 rng(1);
    const std::vector<std::string> text = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 404 Not Found\r\nX:y\r\n\r\nbody",
        "HTTP/1.1 299 Odd\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "FOO /a HTTP/2.0\r\n\r\n"};
    const std::vector<std::string> bin = {
        std::string("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 14), std::string("\x30\x07\x00\x03" "a/b" "hi", 9),
        std::string("\x32\x09\x00\x03" "a/b" "\x00\x01" "hi", 11), std::string("\x20\x02\x00\x00", 4),
        std::string("\xc0\x00", 2), std::string("\x10\x10\x00\x04MQTT\x05\xc2\x00\x3c\x00\x00\x00\x00\x00\x00", 18)};
    const auto tg = fuzz::text_grammar();
    const auto bg = fuzz::binary_grammar();
    std::vector<std::vector<int32_t>> seeds[2];
    for (int fam = 0; fam < 2; ++fam)
        for (const auto& s : fam ? bin : text) {
            app::Tokens t;
            const auto* d = reinterpret_cast<const uint8_t*>(s.data());
            int st = fam ? app::encode_binary(bg, d, s.size(), t) : (app::encode_text(tg, d, s.size(), t) ? 1 : 0);
            if (st == 1) seeds[fam].push_back(t);
        }
    printf("seeds: %zu text, %zu binary\n", seeds[0].size(), seeds[1].size());
    for (long i = 0; i < iters; ++i) {
        int fam = int(rng() & 1);
        auto t = seeds[fam][rng() % seeds[fam].size()];
        int muts = int(rng() % 4);
        for (int m = 0; m < muts; ++m) {
            size_t at = t.empty() ? 0 : rng() % (t.size() + 1);
            int32_t v = (rng() % 2) ? int32_t(256 + rng() % 45) : int32_t(rng() % 408);
            switch (rng() % 4) {
                case 0: if (at < t.size()) t[at] = v; break;
                case 1: if (at < t.size()) t.erase(t.begin() + long(at)); break;
                case 2: t.insert(t.begin() + long(at), v); break;
                default: if (rng() % 2 && !t.empty()) { auto copy = t; t.insert(t.end(), copy.begin(), copy.end()); } break;
            }
        }
        std::vector<uint8_t> buf{uint8_t(fam)};
        for (int32_t v : t) { buf.push_back(uint8_t(v & 0xFF)); buf.push_back(uint8_t(v >> 8)); }
        LLVMFuzzerTestOneInput(buf.data(), buf.size());
    }
    printf("%ld inputs ok\n", iters);
}
