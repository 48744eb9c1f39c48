// The columns of every table that crosses the Python boundary, each written once.
//
// Each table is an X-macro list X(name, C++ type, width): `width` is the numpy row width
// (1: a 1-D column; 16: an (N, 16) uint8 address). The C++ structs that hold or borrow the
// columns, the bindings that hand them to numpy (or borrow them from it), and the Python
// lists (`_core.PACKET_COLUMNS`, …, used by capture.py, flows.py and records.py) all expand
// these lists, so a column added or retyped here changes every place at once. docs/architecture.md
// §1–§3 describe each column; tests/test_columns.py checks the docs against these lists.
// No Python here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pytrafgen {

struct Addr16 {
    uint8_t b[16];
};

// PacketTable (capture.py, §1): every per-packet column; the shared `data` buffer (uint8, all
// frames back to back) is not a row column and is listed by the bindings on its own.
#define PYTRAFGEN_PACKET_COLUMNS(X)        \
    X(frame_off, uint64_t, 1)              \
    X(caplen, uint32_t, 1)                 \
    X(wirelen, uint32_t, 1)                \
    X(ts_ns, int64_t, 1)                   \
    X(linktype, uint16_t, 1)               \
    X(iface, uint16_t, 1)                  \
    X(status, uint8_t, 1)                  \
    X(l3, uint8_t, 1)                      \
    X(l3_off, uint16_t, 1)                 \
    X(ip_hdr_len, uint16_t, 1)             \
    X(ip_total_len, uint16_t, 1)           \
    X(src, Addr16, 16)                     \
    X(dst, Addr16, 16)                     \
    X(proto, uint8_t, 1)                   \
    X(ttl, uint8_t, 1)                     \
    X(tos, uint8_t, 1)                     \
    X(ip_id, uint32_t, 1)                  \
    X(ip_flags, uint8_t, 1)                \
    X(frag_offset, uint16_t, 1)            \
    X(flow_label, uint32_t, 1)             \
    X(ip_csum, uint16_t, 1)                \
    X(l4_off, uint16_t, 1)                 \
    X(l4_hdr_len, uint16_t, 1)             \
    X(sport, uint16_t, 1)                  \
    X(dport, uint16_t, 1)                  \
    X(tcp_flags, uint16_t, 1)              \
    X(seq, uint32_t, 1)                    \
    X(ack, uint32_t, 1)                    \
    X(window, uint16_t, 1)                 \
    X(urgent, uint16_t, 1)                 \
    X(icmp_type, uint8_t, 1)               \
    X(icmp_code, uint8_t, 1)               \
    X(l4_csum, uint16_t, 1)                \
    X(payload_off, uint32_t, 1)            \
    X(payload_len, uint32_t, 1)            \
    X(payload_wirelen, uint32_t, 1)

// FlowTable (flows.py, §2): per packet, which flow and which way.
#define PYTRAFGEN_FLOW_PACKET_COLUMNS(X) \
    X(flow_id, int64_t, 1)               \
    X(direction, uint8_t, 1)

// FlowTable per flow; addresses are F x 16 bytes (IPv4 as IPv4-mapped IPv6).
#define PYTRAFGEN_FLOW_COLUMNS(X) \
    X(proto, uint8_t, 1)          \
    X(l3, uint8_t, 1)             \
    X(client_addr, uint8_t, 16)   \
    X(server_addr, uint8_t, 16)   \
    X(client_port, uint16_t, 1)   \
    X(server_port, uint16_t, 1)   \
    X(start_ns, int64_t, 1)       \
    X(end_ns, int64_t, 1)         \
    X(packets_c2s, uint64_t, 1)   \
    X(packets_s2c, uint64_t, 1)   \
    X(bytes_c2s, uint64_t, 1)     \
    X(bytes_s2c, uint64_t, 1)     \
    X(first_packet, int64_t, 1)

// FieldRecords (records.py, §3) per packet: the decoder writes them, the builder reads them.
#define PYTRAFGEN_RECORD_PACKET_COLUMNS(X) \
    X(flow, int32_t, 1)                    \
    X(direction, uint8_t, 1)               \
    X(ts_ns, int64_t, 1)                   \
    X(ttl, uint8_t, 1)                     \
    X(tos, uint8_t, 1)                     \
    X(ip_id, uint32_t, 1)                  \
    X(ip_flags, uint8_t, 1)                \
    X(frag_offset, uint16_t, 1)            \
    X(flow_label, uint32_t, 1)             \
    X(ip_opt_off, uint64_t, 1)             \
    X(ip_opt_len, uint32_t, 1)             \
    X(tcp_flags, uint16_t, 1)              \
    X(seq, uint32_t, 1)                    \
    X(ack, uint32_t, 1)                    \
    X(window, uint16_t, 1)                 \
    X(urgent, uint16_t, 1)                 \
    X(icmp_type, uint8_t, 1)               \
    X(icmp_code, uint8_t, 1)               \
    X(icmp_rest, uint32_t, 1)              \
    X(l4_opt_off, uint64_t, 1)             \
    X(l4_opt_len, uint32_t, 1)             \
    X(payload_off, uint64_t, 1)            \
    X(payload_stored, uint32_t, 1)         \
    X(payload_len, uint32_t, 1)

// FieldRecords per flow.
#define PYTRAFGEN_RECORD_FLOW_COLUMNS(X) \
    X(label, int16_t, 1)                 \
    X(ip_version, uint8_t, 1)            \
    X(proto, uint8_t, 1)                 \
    X(client_port, uint16_t, 1)          \
    X(server_port, uint16_t, 1)

// Struct members generated from a list: a borrowed pointer per column, or an owned vector.
#define PYTRAFGEN_COLUMN_POINTER(name, type, width) const type* name = nullptr;
#define PYTRAFGEN_COLUMN_VECTOR(name, type, width) std::vector<type> name;

// The element type numpy sees (an address is 16 uint8 in a row) and its numpy name.
template <class T> struct ColumnElem { using type = T; };
template <> struct ColumnElem<Addr16> { using type = uint8_t; };

template <class T> constexpr const char* dtype_name();
template <> constexpr const char* dtype_name<uint8_t>() { return "uint8"; }
template <> constexpr const char* dtype_name<uint16_t>() { return "uint16"; }
template <> constexpr const char* dtype_name<uint32_t>() { return "uint32"; }
template <> constexpr const char* dtype_name<uint64_t>() { return "uint64"; }
template <> constexpr const char* dtype_name<int16_t>() { return "int16"; }
template <> constexpr const char* dtype_name<int32_t>() { return "int32"; }
template <> constexpr const char* dtype_name<int64_t>() { return "int64"; }

struct ColumnInfo {
    const char* name;
    const char* dtype;  // numpy dtype name
    int width;          // 1: 1-D; k: (N, k)
};

#define PYTRAFGEN_COLUMN_INFO(name, ctype, width) \
    ColumnInfo{#name, dtype_name<typename ColumnElem<ctype>::type>(), width},

inline constexpr ColumnInfo kPacketColumns[] = {PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_COLUMN_INFO)};
inline constexpr ColumnInfo kFlowPacketColumns[] = {PYTRAFGEN_FLOW_PACKET_COLUMNS(PYTRAFGEN_COLUMN_INFO)};
inline constexpr ColumnInfo kFlowColumns[] = {PYTRAFGEN_FLOW_COLUMNS(PYTRAFGEN_COLUMN_INFO)};
inline constexpr ColumnInfo kRecordPacketColumns[] = {PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_COLUMN_INFO)};
inline constexpr ColumnInfo kRecordFlowColumns[] = {PYTRAFGEN_RECORD_FLOW_COLUMNS(PYTRAFGEN_COLUMN_INFO)};

// PacketTable columns borrowed from numpy (the tokenizer's input).
struct PacketTableView {
    PYTRAFGEN_PACKET_COLUMNS(PYTRAFGEN_COLUMN_POINTER)
};

// FlowTable columns borrowed from numpy (the tokenizer's input).
struct FlowPacketView {
    PYTRAFGEN_FLOW_PACKET_COLUMNS(PYTRAFGEN_COLUMN_POINTER)
};
struct FlowTableView {
    PYTRAFGEN_FLOW_COLUMNS(PYTRAFGEN_COLUMN_POINTER)
};

// FieldRecords per-packet columns: borrowed (the builder) or owned (the decoder).
struct RecordPacketView {
    PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_COLUMN_POINTER)
};
struct RecordPacketVectors {
    PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_COLUMN_VECTOR)
    size_t size() const { return flow.size(); }
    void truncate(size_t n) {
#define PYTRAFGEN_TRUNCATE(name, type, width) name.resize(n);
        PYTRAFGEN_RECORD_PACKET_COLUMNS(PYTRAFGEN_TRUNCATE)
#undef PYTRAFGEN_TRUNCATE
    }
};
struct RecordFlowView {
    PYTRAFGEN_RECORD_FLOW_COLUMNS(PYTRAFGEN_COLUMN_POINTER)
};
struct RecordFlowVectors {
    PYTRAFGEN_RECORD_FLOW_COLUMNS(PYTRAFGEN_COLUMN_VECTOR)
};

}  // namespace pytrafgen
