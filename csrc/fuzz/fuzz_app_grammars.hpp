// HTTP/1.x- and MQTT-shaped app grammars for the fuzz harnesses of app_grammar.hpp and
// app_detokenize.hpp (the plugins' own are data built in Python; what is fuzzed is the engine).
#pragma once

#include <cstdint>

#include "app_grammar.hpp"

namespace pytrafgen::fuzz {

constexpr int32_t kMaxToken = 400;  // every id of both grammars is below this

inline app::TextGrammar text_grammar() {
    app::TextGrammar g;
    int32_t id = 256;
    for (int32_t* t : {&g.request, &g.response, &g.end, &g.headers_end, &g.msg_end, &g.method_other,
                       &g.version_other, &g.status_other, &g.reason_standard, &g.reason_none, &g.header_other,
                       &g.value, &g.value_raw, &g.value_length})
        *t = id++;
    g.methods = {{"GET", id++}, {"POST", id++}, {"HEAD", id++}};
    g.versions = {{"HTTP/1.0", id++}, {"HTTP/1.1", id++}};
    g.statuses = {{"200", id++}, {"404", id++}};
    g.standard_reason = {{"200", "OK"}, {"404", "Not Found"}};
    g.header_names = {{"Host", id++}, {"Content-Length", id++}, {"Transfer-Encoding", id++}};
    g.no_body_statuses = {"204", "304"};
    return g;
}

inline app::BinaryGrammar binary_grammar() {
    app::BinaryGrammar g;
    g.type0 = 256;
    g.flags0 = 272;
    g.rl_derived = 288;
    g.rl_explicit = 289;
    g.raw = 290;
    g.packet_end = 291;
    const int32_t str_end = 292, props_end = 293, pname_other = 294, level_other = 295;
    for (int t = 0; t < 16; ++t) {
        g.type_allowed[t] = t != 0;
        g.flag_mask[t] = t == 3 ? 0x06 : 0x0F;
        g.flag_value[t] = t == 3 ? 0x06 : (t == 6 || t == 8 || t == 10) ? 2 : 0;
        g.flag_differ[t] = t == 3;
        g.min_raw_body[t] = (t == 2 || t == 4) ? 2 : 0;
    }
    auto op = [](app::OpKind k) {
        app::Op o;
        o.kind = k;
        o.u8_table.fill(-1);
        return o;
    };
    app::Op text = op(app::OpKind::STR16);
    text.end = str_end;
    app::Op props = op(app::OpKind::VARBYTES);
    props.end = props_end;
    app::Op props_if_v5 = op(app::OpKind::IF_EQ);
    props_if_v5.var = 0;
    props_if_v5.n = 5;
    props_if_v5.then = {props};
    app::Op pname = op(app::OpKind::ENUM_STR16);
    pname.str_table = {{"MQTT", 296}};
    pname.other = pname_other;
    pname.end = str_end;
    app::Op level = op(app::OpKind::ENUM_U8);
    level.var = 0;
    level.u8_table[4] = 297;
    level.u8_table[5] = 298;
    level.other = level_other;
    app::Op flags = op(app::OpKind::U8);
    flags.var = 1;
    app::Op keep_alive = op(app::OpKind::BYTES);
    keep_alive.n = 2;
    app::Op will = op(app::OpKind::IF_ANY);
    will.var = 1;
    will.n = 0x04;
    will.then = {props_if_v5, text, text};
    app::Op user = op(app::OpKind::IF_ANY);
    user.var = 1;
    user.n = 0x80;
    user.then = {text};
    g.structured[1] = true;
    g.bodies[1] = {pname, level, flags, keep_alive, props_if_v5, text, will, user};
    app::Op packet_id = op(app::OpKind::IF_HDR_ANY);
    packet_id.n = 0x06;
    packet_id.then = {keep_alive};
    g.structured[3] = true;
    g.bodies[3] = {text, packet_id, op(app::OpKind::REST)};
    return g;
}

}  // namespace pytrafgen::fuzz
