"""Expert compliance rules for TCP: header sanity, flag combinations, handshake and teardown
order, sequence/acknowledgement continuity, port/service agreement and the checksum.

Flow-order rules work per direction of a flow ("side"): packets grouped by (flow, direction)
in capture order, sequence numbers taken relative to the side's first segment (mod 2^32),
so they are vectorised with grouped cumulative maxima instead of a Python loop per flow.
"""

from __future__ import annotations

import numpy as np

from pytrafgen.protocols.rules_l3l4 import (
    Check,
    Indices,
    first_fragment,
    frame_end,
    l4_checksum_ok,
    left_to_offload,
    options_well_formed,
    result,
    service_agreement,
    unfragmented,
    whole_l4_captured,
)
from pytrafgen.rules.context import RuleContext
from pytrafgen.rules.packet_bytes import read_u8

FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32
_NEG = np.int64(-(1 << 39))  # below any relative seq, above the 2^40 group shift


def _tcp(ctx: RuleContext) -> np.ndarray:
    return (ctx.col("l3") != 0) & (ctx.col("proto") == 6) & first_fragment(ctx)


def _flags(ctx: RuleContext) -> np.ndarray:
    return ctx.col("tcp_flags").astype(np.int64)


def syn_fin(ctx: RuleContext) -> Indices:
    f = _flags(ctx)
    return result(_tcp(ctx), ((f & SYN) != 0) & ((f & FIN) != 0))


def syn_rst(ctx: RuleContext) -> Indices:
    f = _flags(ctx)
    return result(_tcp(ctx), ((f & SYN) != 0) & ((f & RST) != 0))


def null_flags(ctx: RuleContext) -> Indices:
    return result(_tcp(ctx), (_flags(ctx) & 0x1FF) == 0)


def ack_missing(ctx: RuleContext) -> Indices:
    f = _flags(ctx)
    exempt = ((f & (SYN | RST)) != 0) | ((f & 0x1FF) == 0)  # SYN/RST may lack ACK; null is TCP-003's
    return result(_tcp(ctx) & ~exempt, (f & ACK) == 0)


def urgent_pointer(ctx: RuleContext) -> Indices:
    f = _flags(ctx)
    return result(_tcp(ctx) & ((f & URG) != 0), ctx.col("urgent") == 0)


def header_length(ctx: RuleContext) -> Indices:
    start = ctx.col("frame_off").astype(np.int64) + ctx.col("l4_off").astype(np.int64)
    b, ok = read_u8(ctx.col("data"), start + 12, frame_end(ctx))
    offset = (b >> 4).astype(np.int64) * 4
    ip_payload = ctx.col("ip_total_len").astype(np.int64) - ctx.col("ip_hdr_len").astype(np.int64)
    return result(_tcp(ctx), ~ok | (offset < 20) | (offset > ip_payload))


def reserved_bits(ctx: RuleContext) -> Indices:
    start = ctx.col("frame_off").astype(np.int64) + ctx.col("l4_off").astype(np.int64)
    b, ok = read_u8(ctx.col("data"), start + 12, frame_end(ctx))
    return result(_tcp(ctx) & ok, (b & 0x0E) != 0)  # the bit below them is NS, a real flag


def zero_ports(ctx: RuleContext) -> Indices:
    return result(_tcp(ctx), (ctx.col("sport") == 0) | (ctx.col("dport") == 0))


def checksum(ctx: RuleContext) -> Indices:
    applicable = _tcp(ctx) & unfragmented(ctx) & whole_l4_captured(ctx)
    applicable &= ~left_to_offload(ctx, applicable, 6)
    ok = l4_checksum_ok(ctx, applicable, np.full(ctx.n_packets, 6))
    return result(applicable, ~ok)


def syn_window(ctx: RuleContext) -> Indices:
    return result(_tcp(ctx) & ((_flags(ctx) & SYN) != 0), ctx.col("window") == 0)


def tcp_options(ctx: RuleContext) -> Indices:
    start = ctx.col("frame_off").astype(np.int64) + ctx.col("l4_off").astype(np.int64)
    hdr = ctx.col("l4_hdr_len").astype(np.int64)
    applicable = _tcp(ctx) & (hdr > 20) & (start + hdr <= frame_end(ctx))
    bad = np.zeros(ctx.n_packets, bool)
    data = ctx.col("data")
    for i in np.flatnonzero(applicable):
        bad[i] = not options_well_formed(data, int(start[i]) + 20, int(start[i] + hdr[i]))
    return result(applicable, bad)


# -- flow order ---------------------------------------------------------------------------
class _Sides:
    """TCP packets of flows grouped per side, with relative sequence numbers."""

    def __init__(self, ctx: RuleContext) -> None:
        tcp = _tcp(ctx) & (ctx.flow_id >= 0)
        idx = np.flatnonzero(tcp)
        side = ctx.flow_id[idx] * 2 + ctx.direction[idx].astype(np.int64)
        order = np.argsort(side, kind="stable")
        self.idx = idx[order]  # packets grouped by side, capture order inside
        self.side = side[order]
        self.n_sides = 2 * ctx.n_flows
        self.group_start = np.r_[True, self.side[1:] != self.side[:-1]] if len(self.side) else np.zeros(0, bool)
        first_pos = np.flatnonzero(self.group_start)
        self.first_pos_of_side = np.full(self.n_sides, -1, np.int64)
        self.first_pos_of_side[self.side[first_pos]] = first_pos
        seq = ctx.col("seq").astype(np.int64)
        self.isn = np.zeros(self.n_sides, np.int64)
        self.isn[self.side[first_pos]] = seq[self.idx[first_pos]]
        self.rel = _signed32(seq[self.idx] - self.isn[self.side])
        flags = _flags(ctx)[self.idx]
        self.flags = flags
        self.seg_len = (ctx.col("payload_wirelen").astype(np.int64)[self.idx] + ((flags & SYN) != 0)
                        + ((flags & FIN) != 0))
        self.end = self.rel + self.seg_len

    def grouped_cummax(self, values: np.ndarray) -> np.ndarray:
        """Running maximum of ``values`` within each side (in the side's packet order)."""
        group_no = np.cumsum(self.group_start) - 1
        shift = group_no.astype(np.int64) * np.int64(1 << 40)
        return np.maximum.accumulate(values + shift) - shift


def _signed32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.int64) % (1 << 32)
    return np.where(x >= (1 << 31), x - (1 << 32), x)


def _first_in_flow(ctx: RuleContext, mask: np.ndarray) -> np.ndarray:
    """Per flow, the first packet (capture order) satisfying ``mask``; -1 if none."""
    cand = np.flatnonzero(mask & (ctx.flow_id >= 0))
    out = np.full(ctx.n_flows, -1, np.int64)
    flows, first = np.unique(ctx.flow_id[cand], return_index=True)
    out[flows] = cand[first]
    return out


def _opens_with_syn(ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
    """TCP flows whose first packet is a client SYN without ACK, and that packet."""
    f = _flags(ctx)
    first = _first_in_flow(ctx, np.ones(ctx.n_packets, bool))
    is_tcp = ctx.flow_col("proto") == 6
    ok_first = first >= 0
    syn_first = np.zeros(ctx.n_flows, bool)
    syn_first[ok_first] = (f[first[ok_first]] & (SYN | ACK)) == SYN
    return is_tcp & syn_first, first


def flow_starts_with_syn(ctx: RuleContext) -> Indices:
    """A flow opens with its client's SYN, or, seen from mid-connection (a flow cut from a
    longer connection, a capture started mid-connection), with a segment of an established
    connection: one carrying ACK, or a RST. What is flagged is a first segment that could open
    nothing (a FIN, a bare PSH, a null segment without ACK)."""
    opens, first = _opens_with_syn(ctx)
    f = _flags(ctx)
    has = first >= 0
    established = np.zeros(ctx.n_flows, bool)
    established[has] = (f[first[has]] & (ACK | RST)) != 0
    return result(ctx.flow_col("proto") == 6, ~opens & ~established)


def _synack(ctx: RuleContext) -> np.ndarray:
    f = _flags(ctx)
    return _first_in_flow(ctx, _tcp(ctx) & (ctx.direction == 1) & ((f & (SYN | ACK)) == (SYN | ACK)))


def handshake_order(ctx: RuleContext) -> Indices:
    opens, _ = _opens_with_syn(ctx)
    f = _flags(ctx)
    first_reply = _first_in_flow(ctx, _tcp(ctx) & (ctx.direction == 1))
    has_reply = first_reply >= 0
    reply_flags = np.where(has_reply, f[np.maximum(first_reply, 0)], 0)
    good = ((reply_flags & (SYN | ACK)) == (SYN | ACK)) | ((reply_flags & RST) != 0)
    return result(opens & has_reply, ~good)


def data_before_handshake(ctx: RuleContext) -> Indices:
    opens, _ = _opens_with_syn(ctx)
    synack = _synack(ctx)
    first_data = _first_in_flow(ctx, _tcp(ctx) & (ctx.col("payload_wirelen") > 0))
    pos = ctx.index_in_flow
    has_data = first_data >= 0
    data_pos = np.where(has_data, pos[np.maximum(first_data, 0)], 0)
    synack_pos = np.where(synack >= 0, pos[np.maximum(synack, 0)], np.iinfo(np.int64).max)
    return result(opens & has_data, data_pos < synack_pos)


def synack_acknowledges_isn(ctx: RuleContext) -> Indices:
    opens, first = _opens_with_syn(ctx)
    synack = _synack(ctx)
    flows = np.flatnonzero(opens & (synack >= 0))
    applicable = np.zeros(ctx.n_packets, bool)
    bad = np.zeros(ctx.n_packets, bool)
    seq, ack = ctx.col("seq").astype(np.int64), ctx.col("ack").astype(np.int64)
    applicable[synack[flows]] = True
    bad[synack[flows]] = ack[synack[flows]] != (seq[first[flows]] + 1) % (1 << 32)
    return result(applicable, bad)


def seq_continuity(ctx: RuleContext) -> Indices:
    s = _Sides(ctx)
    applicable = np.zeros(ctx.n_packets, bool)
    bad = np.zeros(ctx.n_packets, bool)
    if len(s.idx) == 0:
        return result(applicable, bad)
    running_end = s.grouped_cummax(s.end)
    prev_end = np.where(s.group_start, 0, np.r_[0, running_end[:-1]])
    # A RST may carry any in-window sequence number; it is judged by the teardown rules.
    judged = (s.flags & RST) == 0
    applicable[s.idx] = judged
    bad[s.idx] = judged & (s.rel > prev_end)
    return result(applicable, bad)


def ack_continuity(ctx: RuleContext) -> Indices:
    """An ACK never acknowledges bytes its peer has not sent yet (in capture order)."""
    s = _Sides(ctx)
    applicable = np.zeros(ctx.n_packets, bool)
    bad = np.zeros(ctx.n_packets, bool)
    if len(s.idx) == 0:
        return result(applicable, bad)
    # Highest end sent so far by each side, evaluated at every packet of the flow in capture
    # order: walk the flow order and carry per-side maxima with grouped running maxima.
    end_by_packet = np.full(ctx.n_packets, _NEG, np.int64)
    end_by_packet[s.idx] = s.end
    order = ctx.flow_order
    flow_of = ctx.flow_id[order]
    new_flow = np.r_[True, flow_of[1:] != flow_of[:-1]] if len(order) else np.zeros(0, bool)
    shift = (np.cumsum(new_flow) - 1).astype(np.int64) * np.int64(1 << 40)
    peer_max = {}
    for d in (0, 1):
        vals = np.where(ctx.direction[order] == d, end_by_packet[order], _NEG)
        peer_max[d] = np.maximum.accumulate(vals + shift) - shift
    pos = np.empty(ctx.n_packets, np.int64)
    pos[order] = np.arange(len(order))
    f = _flags(ctx)
    acking = _tcp(ctx) & (ctx.flow_id >= 0) & ((f & ACK) != 0) & ((f & RST) == 0)
    idx = np.flatnonzero(acking)
    peer = 1 - ctx.direction[idx].astype(np.int64)
    peer_side = ctx.flow_id[idx] * 2 + peer
    has_peer = s.first_pos_of_side[peer_side] >= 0
    bound = np.where(peer == 0, peer_max[0][pos[idx]], peer_max[1][pos[idx]])
    seen_peer = has_peer & (bound > _NEG // 2)
    rel_ack = _signed32(ctx.col("ack").astype(np.int64)[idx] - s.isn[peer_side])
    applicable[idx] = seen_peer
    bad[idx] = seen_peer & (rel_ack > bound)
    return result(applicable, bad)


def _after_flag(ctx: RuleContext, flag: int) -> tuple[_Sides, np.ndarray, np.ndarray]:
    """For each side-grouped packet: whether its side sent ``flag`` earlier, and where that
    side's first such segment ended (relative sequence number after it)."""
    s = _Sides(ctx)
    has = (s.flags & flag) != 0
    marker = np.where(has, 1, 0).astype(np.int64)
    seen_incl = s.grouped_cummax(marker)
    seen_before = np.where(s.group_start, 0, np.r_[0, seen_incl[:-1]]) > 0
    # end of the first flagged segment, carried forward inside the side
    first_end = np.where(has, -s.end, _NEG)  # running max of -end = the smallest end seen
    carried = -s.grouped_cummax(first_end)
    carried_before = np.where(s.group_start, 0, np.r_[0, carried[:-1]])
    return s, seen_before, carried_before


def no_data_after_fin(ctx: RuleContext) -> Indices:
    s, after, fin_end = _after_flag(ctx, FIN)
    applicable = np.zeros(ctx.n_packets, bool)
    bad = np.zeros(ctx.n_packets, bool)
    applicable[s.idx] = after
    bad[s.idx] = after & (s.end > fin_end)
    return result(applicable, bad)


def silent_after_rst(ctx: RuleContext) -> Indices:
    s, after, _ = _after_flag(ctx, RST)
    applicable = np.zeros(ctx.n_packets, bool)
    bad = np.zeros(ctx.n_packets, bool)
    payload = ctx.col("payload_wirelen").astype(np.int64)[s.idx]
    applicable[s.idx] = after
    bad[s.idx] = after & ((payload > 0) | ((s.flags & SYN) != 0))
    return result(applicable, bad)


def service_agreement_tcp(ctx: RuleContext) -> Indices:
    """TCP-020 on flows whose client stream is in view from its start (the flow opens with the
    client's SYN); a flow seen from mid-connection may begin in the middle of a message."""
    applicable, bad = service_agreement(ctx, 6)
    opens, _ = _opens_with_syn(ctx)
    return applicable[opens[applicable]], bad[opens[bad]]


TCP_RULES: list[tuple[str, str, str, Check]] = [
    ("TCP-001", "packet", "SYN and FIN are not set together", syn_fin),
    ("TCP-002", "packet", "SYN and RST are not set together", syn_rst),
    ("TCP-003", "packet", "at least one flag is set (no null segment)", null_flags),
    ("TCP-004", "packet", "every segment except SYN and RST carries ACK (no FIN/Xmas probes)", ack_missing),
    ("TCP-005", "packet", "URG is set only with a non-zero urgent pointer", urgent_pointer),
    ("TCP-006", "packet", "data offset is at least 5 words and fits the IP payload", header_length),
    ("TCP-007", "packet", "the three reserved header bits are clear", reserved_bits),
    ("TCP-008", "packet", "source and destination ports are not 0", zero_ports),
    ("TCP-009", "packet", "checksum verifies (pseudo-header included; a field left to checksum offload is "
                        "not judged)", checksum),
    ("TCP-010", "packet", "SYN and SYN-ACK segments advertise a non-zero window", syn_window),
    ("TCP-011", "packet", "TCP options are well-formed kind-length-values", tcp_options),
    ("TCP-012", "flow", "the flow opens with a client SYN, or mid-connection with an ACK or RST segment "
                        "(no FIN/PSH/null opener)", flow_starts_with_syn),
    ("TCP-013", "flow", "the server's first reply to a SYN is SYN-ACK or RST", handshake_order),
    ("TCP-014", "flow", "no payload before the server's SYN-ACK", data_before_handshake),
    ("TCP-015", "packet", "the SYN-ACK acknowledges the client's ISN + 1", synack_acknowledges_isn),
    ("TCP-016", "packet", "sequence numbers never skip past bytes the side has sent", seq_continuity),
    ("TCP-017", "packet", "acknowledgement numbers never exceed what the peer has sent", ack_continuity),
    ("TCP-018", "packet", "a side sends no new data after its FIN", no_data_after_fin),
    ("TCP-019", "packet", "a side sends no data or SYN after its RST", silent_after_rst),
    ("TCP-020", "flow", "well-known service port agrees with the first client bytes (HTTP 80/8080, "
                        "MQTT 1883) of a flow that opens with the client's SYN", service_agreement_tcp),
]

__all__ = ["TCP_RULES"]
