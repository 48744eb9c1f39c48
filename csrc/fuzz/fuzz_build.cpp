// libFuzzer harness: the packet builder with repair (csrc/build.hpp + csrc/checksum.hpp), fed
// structured random FieldRecords columns. Records come from generators and are untrusted:
// every (offset, length) into the blob, every flow index and length may be wrong.
//
// Layout of the input: a header (packet and flow counts, options), then per flow 8 bytes,
// per packet 48 bytes; whatever is left is the blob. Besides ASan/UBSan it checks the
// output's framing and, when repairing, that the dissector reads back what was built.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_input.hpp"
#include "build.hpp"
#include "dissect.hpp"

using namespace pytrafgen;
using fuzz::broken;
using fuzz::Bytes;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Bytes in{data, size};
    const uint8_t opts = in.u8();
    const size_t n = in.u8() % 33, nf = 1 + in.u8() % 4;
    // flows
    std::vector<uint8_t> version(nf), proto(nf), caddr(16 * nf), saddr(16 * nf), cmac(6 * nf, 0x02),
        smac(6 * nf, 0x04);
    std::vector<uint16_t> cport(nf), sport(nf);
    std::vector<uint32_t> isn(2 * nf);
    for (size_t f = 0; f < nf; ++f) {
        const uint8_t a = in.u8();
        version[f] = (a & 7) == 7 ? in.u8() : (a & 1) ? 6 : 4;
        const uint8_t protos[4] = {6, 17, 1, 58};
        proto[f] = (a & 0x80) ? in.u8() : protos[(a >> 1) & 3];
        if (version[f] == 4) caddr[16 * f + 10] = caddr[16 * f + 11] = saddr[16 * f + 10] = saddr[16 * f + 11] = 0xFF;
        caddr[16 * f + 15] = 1;
        saddr[16 * f + 15] = 2;
        cport[f] = in.u16();
        sport[f] = in.u16();
        isn[2 * f] = in.u32();
        isn[2 * f + 1] = 0;
    }
    // packets
    std::vector<int32_t> flow(n);
    std::vector<uint8_t> dir(n), ttl(n), tos(n), ipf(n), itype(n), icode(n);
    std::vector<uint32_t> ip_id(n), fl(n), ip_opt_len(n), seq(n), ack(n), rest(n), l4_opt_len(n), stored(n), plen(n);
    std::vector<uint16_t> frag(n), tflags(n), win(n), urg(n);
    std::vector<uint64_t> ip_opt_off(n), l4_opt_off(n), pay_off(n);
    std::vector<uint16_t> r_ihl(n), r_total(n), r_l4(n), r_udp(n), r_ipc(n), r_l4c(n);
    for (size_t i = 0; i < n; ++i) {
        const uint8_t sel = in.u8(), sel2 = in.u8();
        flow[i] = (sel & 0x0F) == 0x0F ? int32_t(in.u32()) : int32_t(sel % nf);
        dir[i] = (sel2 & 0x1F) == 0x1F ? in.u8() : (sel2 & 1);
        ttl[i] = in.u8();
        tos[i] = in.u8();
        ip_id[i] = in.u16();
        ipf[i] = (sel2 & 0x40) ? in.u8() : 0;
        frag[i] = (sel2 & 0x40) ? in.u16() : 0;
        fl[i] = in.u32();
        ip_opt_off[i] = in.span(sel);
        ip_opt_len[i] = (sel2 & 2) ? uint32_t(in.span(sel2)) : 0;
        tflags[i] = in.u16();
        seq[i] = in.u32();
        ack[i] = in.u32();
        win[i] = in.u16();
        urg[i] = in.u16();
        itype[i] = in.u8();
        icode[i] = in.u8();
        rest[i] = in.u32();
        l4_opt_off[i] = in.span(sel);
        l4_opt_len[i] = (sel2 & 4) ? uint32_t(in.span(sel2)) : 0;
        pay_off[i] = in.span(sel);
        plen[i] = (sel2 & 8) ? uint32_t(in.u16()) : in.u8();
        stored[i] = (sel2 & 0x80) ? uint32_t(in.span(sel)) : plen[i] / 2;
        r_ihl[i] = in.u8();
        r_total[i] = in.u16();
        r_l4[i] = in.u8();
        r_udp[i] = in.u16();
        r_ipc[i] = in.u16();
        r_l4c[i] = in.u16();
    }
    std::vector<uint8_t> blob(in.p, in.p + in.n);  // an exact-size copy: ASan sees any overrun
    std::vector<int64_t> order;
    if (opts & 4)
        for (size_t k = 0; k < n; ++k) order.push_back(int64_t((k * 7 + opts) % (n ? n : 1)));

    build::PacketColumns p;
    p.n = n;
    p.flow = flow.data(); p.direction = dir.data(); p.ttl = ttl.data(); p.tos = tos.data();
    p.ip_id = ip_id.data(); p.ip_flags = ipf.data(); p.frag_offset = frag.data(); p.flow_label = fl.data();
    p.ip_opt_off = ip_opt_off.data(); p.ip_opt_len = ip_opt_len.data(); p.tcp_flags = tflags.data();
    p.seq = seq.data(); p.ack = ack.data(); p.window = win.data(); p.urgent = urg.data();
    p.icmp_type = itype.data(); p.icmp_code = icode.data(); p.icmp_rest = rest.data();
    p.l4_opt_off = l4_opt_off.data(); p.l4_opt_len = l4_opt_len.data(); p.payload_off = pay_off.data();
    p.payload_stored = stored.data(); p.payload_len = plen.data();
    build::FlowColumns f;
    f.n = nf;
    f.ip_version = version.data(); f.proto = proto.data(); f.client_port = cport.data(); f.server_port = sport.data();
    f.client_addr = caddr.data(); f.server_addr = saddr.data(); f.client_mac = cmac.data(); f.server_mac = smac.data();
    f.isn = isn.data();
    build::RawDerived raw;
    if (opts & 8) {
        raw.ip_hdr_len = r_ihl.data(); raw.ip_total_len = r_total.data(); raw.l4_hdr_len = r_l4.data();
        raw.udp_len = r_udp.data(); raw.ip_csum = r_ipc.data(); raw.l4_csum = r_l4c.data();
    }
    build::Options o;
    o.linktype = (opts & 1) ? build::LINKTYPE_RAW : build::LINKTYPE_ETHERNET;
    o.repair = !(opts & 2);
    if (opts & 4) { o.order = order.data(); o.n_order = order.size(); }

    build::Result r = build::build(p, f, blob.data(), blob.size(), raw, o);

    const uint8_t* out = r.data.as<uint8_t>();
    const uint64_t* off = r.frame_off.as<uint64_t>();
    const uint32_t* len = r.frame_len.as<uint32_t>();
    const int64_t* pk = r.packet.as<int64_t>();
    const uint8_t* status = r.status.as<uint8_t>();
    uint64_t at = 0;
    for (size_t j = 0; j < r.n_frames; ++j) {
        if (off[j] != at) broken("frames not back to back", j);
        at += len[j];
        if (pk[j] < 0 || size_t(pk[j]) >= n || status[pk[j]] != build::BUILT) broken("frame of a record not built", j);
        // Read every built frame back (memory safety of both sides on builder output).
        PacketFields d;
        dissect_frame(out + off[j], len[j], o.linktype, d);
        const size_t i = size_t(pk[j]);
        const size_t fi = size_t(flow[i]);
        // With repair and no stored IP options/extension headers the builder owns every
        // length: the dissector must find a complete, consistent packet of the flow's kind.
        if (o.repair && ip_opt_len[i] == 0 && d.status != kStatusFragment) {
            if (d.status != kStatusOk) broken("repaired packet does not dissect ok", j);
            if (d.l3 != version[fi] || d.proto != proto[fi]) broken("dissected kind differs from the flow's", j);
            if (d.payload_len != plen[i]) broken("dissected payload length differs", j);
        }
    }
    if (at != r.data_len) broken("frame lengths do not add up to the data length", 0);
    for (size_t i = 0; i < n; ++i)
        if (status[i] >= build::N_STATUS) broken("status out of range", i);
    return 0;
}
