// libFuzzer harness: bidirectional flow assembly (csrc/flows.hpp) over packet columns built
// from the input bytes. Columns come from a small alphabet of addresses and ports so that
// packets collide into flows, reverse directions and reuse ports; timestamps, flags, the idle
// timeout and the length limit are arbitrary (assemble_flows is bound to Python, which passes
// whatever columns a user hands it).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_input.hpp"
#include "flows.hpp"

using namespace pytrafgen;
using fuzz::broken;
using fuzz::Bytes;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Bytes in{data, size};
    const uint8_t mode = in.u8();
    const int64_t idle_ns = (mode & 1) ? int64_t(in.u64()) : int64_t(in.u16()) * 1000;
    const uint64_t max_packets = (mode & 2) ? in.u8() : 0;
    const size_t n = in.n / 8;
    std::vector<uint8_t> status(n), l3(n), proto(n), src(16 * n), dst(16 * n);
    std::vector<uint16_t> sport(n), dport(n), flags(n);
    std::vector<int64_t> ts(n);
    std::vector<uint32_t> wirelen(n);
    int64_t t = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t a = in.u8(), b = in.u8(), c = in.u8();
        status[i] = (a & 0xF0) == 0xF0 ? a & 3 : 0;
        l3[i] = (a & 3) == 0 ? 0 : (a & 3) == 1 ? 4 : 6;
        const uint8_t protos[4] = {6, 17, 1, 58};
        proto[i] = protos[(a >> 2) & 3];
        src[16 * i + 15] = b & 3;   // four hosts
        dst[16 * i + 15] = (b >> 2) & 3;
        sport[i] = uint16_t((b >> 4) & 3);  // four ports
        dport[i] = uint16_t((b >> 6) & 3);
        flags[i] = c;
        // Mostly forward steps; the top bit of `a` asks for an arbitrary (possibly extreme) time.
        if (a & 0x80) t = int64_t(in.u64());
        else t = int64_t(uint64_t(t) + uint64_t(in.u16()) * 1000000);  // wraps, as int64 time never should
        ts[i] = t;
        wirelen[i] = uint32_t(in.u16()) << (c & 8 ? 16 : 0);
    }
    FlowInput fi;
    fi.n = n;
    fi.status = status.data();
    fi.l3 = l3.data();
    fi.proto = proto.data();
    fi.src = src.data();
    fi.dst = dst.data();
    fi.sport = sport.data();
    fi.dport = dport.data();
    fi.tcp_flags = flags.data();
    fi.ts_ns = ts.data();
    fi.wirelen = wirelen.data();
    FlowOutput out;
    assemble_flows(fi, idle_ns, max_packets, out);

    const size_t F = out.proto.size();
    if (out.flow_id.size() != n || out.direction.size() != n) broken("per-packet columns have the wrong length", 0);
    std::vector<uint64_t> seen(F, 0);
    for (size_t i = 0; i < n; ++i) {
        const int64_t f = out.flow_id[i];
        if (f < -1 || f >= int64_t(F)) broken("flow id out of range", i);
        if (f < 0) {
            if (status[i] == 0 && l3[i] != 0) broken("an ok IP packet left out of every flow", i);
            continue;
        }
        if (out.direction[i] > 1) broken("direction neither 0 nor 1", i);
        ++seen[size_t(f)];
    }
    for (size_t f = 0; f < F; ++f) {
        if (seen[f] != out.packets_c2s[f] + out.packets_s2c[f]) broken("packet counts disagree", f);
        if (max_packets && seen[f] > max_packets) broken("flow longer than max_packets", f);
        if (out.end_ns[f] < out.start_ns[f]) broken("flow ends before it starts", f);
        const int64_t first = out.first_packet[f];
        if (first < 0 || size_t(first) >= n || out.flow_id[size_t(first)] != int64_t(f))
            broken("first_packet not in its flow", f);
    }
    return 0;
}
