// libFuzzer harness: the whole tokenize pipeline on a hostile capture — pcap/pcapng reader and
// dissector → flow assembly → token encoder → token decoder — as pytrafgen tokenize runs it.
// The encoder trusts the dissector's offsets to read header bytes out of the frames; this is
// where a wrong offset would turn into an out-of-bounds read.
//
// Besides ASan/UBSan: every token is inside the vocabulary, spans do not decrease, and every
// flow the encoder wrote decodes without error (encoder and decoder agree on the grammar).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fuzz_input.hpp"
#include "flows.hpp"
#include "fuzz_layout.hpp"
#include "packet_table.hpp"
#include "pcap.hpp"
#include "tokenize.hpp"

using namespace pytrafgen;
using fuzz::broken;

namespace {

bool stand_in_app(int, const int32_t*, size_t, int, std::vector<uint8_t>& out) {
    out.clear();
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const tok::Layout lay = fuzz::fuzz_layout();
    PacketColumns c;
    try {
        RecordWalker walker(data, size);
        read_packets(walker, c, 0, size);
    } catch (const CaptureFault&) {
        return 0;
    }
    const size_t n = c.rows;
    if (n == 0) return 0;
    FlowInput fi;
    fi.n = n;
    fi.status = c.status.p; fi.l3 = c.l3.p; fi.proto = c.proto.p;
    fi.src = c.src.p[0].b; fi.dst = c.dst.p[0].b;
    fi.sport = c.sport.p; fi.dport = c.dport.p; fi.tcp_flags = c.tcp_flags.p;
    fi.ts_ns = c.ts_ns.p; fi.wirelen = c.wirelen.p;
    FlowOutput flows;
    assemble_flows(fi, 120'000'000'000, 0, flows);
    const size_t F = flows.proto.size();
    std::vector<int32_t> labels(F);
    for (size_t f = 0; f < F; ++f) labels[f] = int32_t(f % (fuzz::kFuzzClasses + 1)) - 1;  // some left out

    tok::Packets p;
    p.n = n;
    p.data = c.data.p; p.data_len = c.data_len;
    p.frame_off = c.frame_off.p; p.caplen = c.caplen.p; p.ts_ns = c.ts_ns.p;
    p.status = c.status.p; p.l3 = c.l3.p; p.proto = c.proto.p; p.ttl = c.ttl.p; p.tos = c.tos.p;
    p.ip_flags = c.ip_flags.p; p.icmp_type = c.icmp_type.p; p.icmp_code = c.icmp_code.p;
    p.l3_off = c.l3_off.p; p.ip_hdr_len = c.ip_hdr_len.p; p.frag_offset = c.frag_offset.p;
    p.l4_off = c.l4_off.p; p.l4_hdr_len = c.l4_hdr_len.p; p.tcp_flags = c.tcp_flags.p;
    p.window = c.window.p; p.urgent = c.urgent.p; p.ip_id = c.ip_id.p; p.flow_label = c.flow_label.p;
    p.seq = c.seq.p; p.ack = c.ack.p; p.payload_off = c.payload_off.p; p.payload_len = c.payload_len.p;
    p.payload_wirelen = c.payload_wirelen.p;
    p.flow_id = flows.flow_id.data();
    p.direction = flows.direction.data();
    tok::Flows tf;
    tf.n = F;
    tf.l3 = flows.l3.data(); tf.proto = flows.proto.data();
    tf.client_port = flows.client_port.data(); tf.server_port = flows.server_port.data();
    tf.label = labels.data();
    tok::AppOverride app;
    const int64_t no_app_offsets[1] = {0};
    app.offsets = no_app_offsets;
    tok::EncodeResult enc;
    tok::encode(p, tf, lay, app, enc);

    if (enc.offsets.size() != F + 1) broken("offsets are not F + 1", enc.offsets.size());
    for (size_t f = 0; f < F; ++f)
        if (enc.offsets[f] > enc.offsets[f + 1]) broken("offsets decrease", f);
    if (size_t(enc.offsets[F]) != enc.tokens.size) broken("last offset != token count", 0);
    for (size_t k = 0; k < enc.tokens.size; ++k)
        if (enc.tokens.data[k] >= lay.vocab_size) broken("token outside the vocabulary", k);

    tok::DecodeResult dec;
    tok::decode(enc.tokens.data, enc.tokens.size, enc.offsets.data(), F, lay, false, stand_in_app, dec);
    for (int e = 1; e < tok::DEC_COUNT; ++e)
        if (dec.errors[e]) {
            std::fprintf(stderr, "decoder rejected %lld encoded flow(s): %s\n", (long long)dec.errors[e],
                         tok::decode_error_name(e));
            broken("an encoded flow does not decode", size_t(e));
        }
    return 0;
}
