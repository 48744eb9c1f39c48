// What the structured fuzz harnesses share: stopping on a broken invariant, and reading
// fields from the fuzzer's bytes (zeros once they run out). tests/fuzz_inputs.py decodes
// regression inputs in exactly this order, so change both together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace pytrafgen::fuzz {

[[noreturn]] inline void broken(const char* what, size_t at) {
    std::fprintf(stderr, "invariant broken at %zu: %s\n", at, what);
    std::abort();
}

struct Bytes {
    const uint8_t* p;
    size_t n;
    uint8_t u8() { return n ? (--n, *p++) : 0; }
    // Reads are sequenced (operands of | are not): tests/fuzz_inputs.py replays this order.
    uint16_t u16() {
        const uint16_t lo = u8();
        return uint16_t(lo | u8() << 8);
    }
    uint32_t u32() {
        const uint32_t lo = u16();
        return lo | uint32_t(u16()) << 16;
    }
    uint64_t u64() {
        uint64_t v = 0;
        for (int k = 0; k < 8; ++k) v |= uint64_t(u8()) << (8 * k);
        return v;
    }
    // A blob offset/length: mostly small (inside a typical blob), sometimes anything.
    uint64_t span(uint8_t sel) {
        if ((sel & 0xF0) != 0xF0) return u8();
        const uint64_t hi = u32();
        return hi << 16 | u16();
    }
};

}  // namespace pytrafgen::fuzz
