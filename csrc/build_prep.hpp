// Per-flow preparation of a build in bulk (pytrafgen/build.py calls these before build.hpp):
// distinct 5-tuples for drawn endpoints and each flow's first timestamp. They replace loops
// that ran once per flow in Python and give the same results, draw for draw.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace pytrafgen::build_prep {

// A connection named the same either way round: protocol, then the lower and the higher
// (address high 64 bits, address low 64 bits, port) endpoint. The full-endpoint set reuses
// the type with the last word 0.
using Key = std::array<uint64_t, 7>;
using Endpoint = std::array<uint64_t, 3>;

struct KeyHash {
    size_t operator()(const Key& k) const noexcept {
        uint64_t h = 0x9E3779B97F4A7C15ull;
        for (uint64_t w : k) {
            h ^= w + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
            h *= 0xFF51AFD7ED558CCDull;
        }
        return static_cast<size_t>(h ^ (h >> 33));
    }
};
using KeySet = std::unordered_set<Key, KeyHash>;

inline uint64_t be64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

inline Endpoint endpoint(const uint8_t* addr16, uint16_t port) { return {be64(addr16), be64(addr16 + 8), port}; }

inline Key connection_key(uint8_t proto, const Endpoint& a, const Endpoint& b) {
    const Endpoint& low = (a <= b) ? a : b;  // tuple order, as Python's min((..), (..))
    const Endpoint& high = (a <= b) ? b : a;
    return {proto, low[0], low[1], low[2], high[0], high[1], high[2]};
}

struct FlowEnds {
    size_t n = 0;
    const uint8_t* proto = nullptr;
    const uint8_t* client_addr = nullptr;  // n x 16
    const uint16_t* client_port = nullptr;
    const uint8_t* server_addr = nullptr;  // n x 16
    const uint16_t* server_port = nullptr;
};

// The connection keys in use: the flows' own keys as one sorted array (built in one sort, no
// allocation per flow), plus the few keys resolve_ports adds.
struct TakenKeys {
    std::vector<Key> sorted;
    KeySet added;
    // Inserts k; false when it was already taken.
    bool insert(const Key& k) {
        if (std::binary_search(sorted.begin(), sorted.end(), k)) return false;
        return added.insert(k).second;
    }
};

// Rows whose connection key is already an earlier row's (the first of a key keeps its port),
// in row order. `taken` receives every distinct key.
inline std::vector<int64_t> repeated_connections(const FlowEnds& f, TakenKeys& taken) {
    std::vector<Key> keys(f.n);
    for (size_t i = 0; i < f.n; ++i)
        keys[i] = connection_key(f.proto[i], endpoint(f.client_addr + 16 * i, f.client_port[i]),
                                 endpoint(f.server_addr + 16 * i, f.server_port[i]));
    std::vector<uint32_t> order(f.n);
    for (size_t i = 0; i < f.n; ++i) order[i] = static_cast<uint32_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
    std::vector<int64_t> again;
    taken.sorted.clear();
    taken.sorted.reserve(f.n);
    for (size_t k = 0; k < f.n; ++k) {
        const Key& key = keys[order[k]];
        if (k > 0 && key == keys[order[k - 1]])
            again.push_back(static_cast<int64_t>(order[k]));  // the first row of a key sorts first
        else
            taken.sorted.push_back(key);
    }
    std::sort(again.begin(), again.end());
    return again;
}

// New client ports for the repeated rows, in row order: each row not yet known to have no free
// port takes the next row of candidates from `next_draws()` (`per_row` ports) and keeps the
// first candidate whose key is free; rows of endpoints that ran out keep their port. `new_port`
// starts as a copy of the client ports.
inline void resolve_ports(const FlowEnds& f, const std::vector<int64_t>& again, TakenKeys& taken, size_t per_row,
                          const std::function<const int64_t*()>& next_draws, uint16_t* new_port) {
    KeySet full;
    for (int64_t row : again) {
        const size_t i = static_cast<size_t>(row);
        const Endpoint server = endpoint(f.server_addr + 16 * i, f.server_port[i]);
        const Endpoint client0 = endpoint(f.client_addr + 16 * i, 0);
        const Key full_key{f.proto[i], client0[0], client0[1], server[0], server[1], server[2], 0};
        if (full.count(full_key)) continue;
        const int64_t* cand = next_draws();
        bool found = false;
        for (size_t c = 0; c < per_row; ++c) {
            const uint16_t port = static_cast<uint16_t>(cand[c]);
            Key k = connection_key(f.proto[i], Endpoint{client0[0], client0[1], port}, server);
            if (taken.insert(k)) {
                new_port[i] = port;
                found = true;
                break;
            }
        }
        if (!found) full.insert(full_key);
    }
}

// First (smallest) timestamp of each flow; `present[f]` whether flow f has a packet. Returns
// false (and leaves the outputs partly written) when a flow index is out of range.
inline bool flow_first_ts(const int32_t* flow, const int64_t* ts, size_t n, size_t n_flows, int64_t* first,
                          uint8_t* present) {
    for (size_t f = 0; f < n_flows; ++f) {
        first[f] = std::numeric_limits<int64_t>::max();
        present[f] = 0;
    }
    for (size_t i = 0; i < n; ++i) {
        const int32_t f = flow[i];
        if (f < 0 || static_cast<size_t>(f) >= n_flows) return false;
        if (ts[i] < first[f]) first[f] = ts[i];
        present[f] = 1;
    }
    return true;
}

// Whether two present flows of one class start at the same instant (one sort of the present
// flows' (label, first time) pairs).
inline bool piled_up(const int64_t* first, const uint8_t* present, const int16_t* label, size_t n_flows) {
    std::vector<std::pair<int16_t, int64_t>> starts;
    starts.reserve(n_flows);
    for (size_t f = 0; f < n_flows; ++f)
        if (present[f]) starts.emplace_back(label[f], first[f]);
    std::sort(starts.begin(), starts.end());
    return std::adjacent_find(starts.begin(), starts.end()) != starts.end();
}

}  // namespace pytrafgen::build_prep
