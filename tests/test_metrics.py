"""Evaluation metrics on hand-computable cases, and every L3/L4 rule family firing on a
crafted bad packet (and staying silent on a well-formed flow)."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pytrafgen.capture import PacketTable
from pytrafgen.evaluate.compliance import all_rules, run_rules
from pytrafgen.evaluate.diversity import coverage_density, memorisation
from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables
from pytrafgen.evaluate.fidelity import jsd, scaled_emd
from pytrafgen.plugins import get_registry
from pytrafgen.protocols.l3l4 import L3L4_PROTOCOLS
from pytrafgen.protocols.rules import rules_for

C, S = "10.0.0.1", "10.0.0.2"
CP, SP = 40000, 80
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _eth(pkt):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt


def c2s(flags: str, seq: int, ack: int = 0, payload: bytes = b"", **tcp) -> Ether:
    p = IP(src=C, dst=S, ttl=64) / TCP(sport=CP, dport=SP, flags=flags, seq=seq, ack=ack, window=64240, **tcp)
    return _eth(p / Raw(payload) if payload else p)


def s2c(flags: str, seq: int, ack: int = 0, payload: bytes = b"", **tcp) -> Ether:
    p = IP(src=S, dst=C, ttl=64) / TCP(sport=SP, dport=CP, flags=flags, seq=seq, ack=ack, window=65160, **tcp)
    return _eth(p / Raw(payload) if payload else p)


def good_flow() -> list[Ether]:
    """A clean HTTP exchange: handshake, request, ACK, FIN/FIN teardown."""
    n = len(REQUEST)
    return [
        c2s("S", 1000), s2c("SA", 5000, 1001), c2s("A", 1001, 5001), c2s("PA", 1001, 5001, REQUEST),
        s2c("A", 5001, 1001 + n), c2s("FA", 1001 + n, 5001), s2c("FA", 5001, 1002 + n), c2s("A", 1002 + n, 5002),
    ]


def evalset(packets: list, cls: str = "x") -> EvalSet:
    frames = [bytes(p) for p in packets]
    ts = 1_700_000_000_000_000_000 + np.arange(len(frames), dtype=np.int64) * 1_000_000
    return evalset_from_tables([(PacketTable.from_frames(frames, ts_ns=ts), cls)], "crafted")


# Only the built-in L3/L4 protocols: these tests must not depend on app plugins' state.
BUILTIN = {spec.name: spec for spec in L3L4_PROTOCOLS}


def violations(packets: list) -> dict[str, np.ndarray]:
    es = evalset(packets)
    ctx = es.context(BUILTIN)
    out = {}
    for rule in all_rules(BUILTIN):
        applicable, violating = rule.check(ctx)
        assert set(np.asarray(violating).tolist()) <= set(np.asarray(applicable).tolist()), rule.id
        if len(violating):
            out[rule.id] = np.asarray(violating)
    return out


def test_well_formed_flow_violates_nothing() -> None:
    assert violations(good_flow()) == {}


def test_l3l4_rule_inventory() -> None:
    rules = [r for name in ("ipv4", "ipv6", "tcp", "udp", "icmp") for r in rules_for(name)]
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids)) >= 25
    assert {r.scope for r in rules} == {"packet", "flow"}


# Each case: a bad packet replacing/added to the good flow, the rule that must fire, and the
# index (packet for packet-scope rules, flow 0 for flow-scope ones) it must flag.
def _replace(i: int, pkt) -> list:
    flow = good_flow()
    flow[i] = pkt
    return flow


N = len(REQUEST)
BAD_CASES = {
    "IP-001 undissectable header": ([_eth(IP(src=C, dst=S, ihl=3) / UDP(sport=5, dport=6))], "IP-001", [0]),
    "IP4-003 ttl zero": (_replace(2, _eth(IP(src=C, dst=S, ttl=0) / TCP(sport=CP, dport=SP, flags="A", seq=1001,
                                                                           ack=5001, window=64240))), "IP4-003", [2]),
    "IP4-004 reserved flag": (_replace(2, _eth(IP(src=C, dst=S, flags="evil") / TCP(
        sport=CP, dport=SP, flags="A", seq=1001, ack=5001, window=64240))), "IP4-004", [2]),
    "IP4-005 DF with MF": (_replace(2, _eth(IP(src=C, dst=S, flags="DF+MF") / TCP(
        sport=CP, dport=SP, flags="A", seq=1001, ack=5001, window=64240))), "IP4-005", [2]),
    "IP4-006 multicast source": ([_eth(IP(src="224.0.0.5", dst=S) / UDP(sport=5, dport=6))], "IP4-006", [0]),
    "IP4-008 header checksum": (_replace(2, _eth(IP(src=C, dst=S, chksum=0x1234) / TCP(
        sport=CP, dport=SP, flags="A", seq=1001, ack=5001, window=64240))), "IP4-008", [2]),
    "IP4-009 LAND": ([_eth(IP(src=C, dst=C) / UDP(sport=5, dport=6))], "IP4-009", [0]),
    "IP6-003 hop limit zero": ([_eth(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=0) / UDP(sport=5, dport=6))],
                               "IP6-003", [0]),
    "IP6-004 multicast source": ([_eth(IPv6(src="ff02::1", dst="2001:db8::2") / UDP(sport=5, dport=6))],
                                 "IP6-004", [0]),
    "TCP-001 SYN+FIN": (_replace(0, c2s("SF", 1000)), "TCP-001", [0]),
    "TCP-002 SYN+RST": (_replace(0, c2s("SR", 1000)), "TCP-002", [0]),
    "TCP-003 null": (_replace(2, c2s("", 1001, 5001)), "TCP-003", [2]),
    "TCP-004 FIN without ACK": (_replace(5, c2s("F", 1001 + N, 5001)), "TCP-004", [5]),
    "TCP-005 URG without pointer": (_replace(2, c2s("AU", 1001, 5001, urgptr=0)), "TCP-005", [2]),
    "TCP-009 bad checksum": (_replace(2, c2s("A", 1001, 5001, chksum=0xBEEF)), "TCP-009", [2]),
    "TCP-010 zero window SYN": (_replace(0, _eth(IP(src=C, dst=S) / TCP(sport=CP, dport=SP, flags="S", seq=1000,
                                                                       window=0))), "TCP-010", [0]),
    "TCP-012 FIN opener": ([c2s("F", 1000), *good_flow()[2:]], "TCP-012", [0]),
    "TCP-013 reply to SYN is a bare ACK": (_replace(1, s2c("A", 5000, 1001)), "TCP-013", [0]),
    "TCP-014 data before SYN-ACK": ([c2s("S", 1000), c2s("PA", 1001, 0, REQUEST), *good_flow()[1:3]],
                                    "TCP-014", [0]),
    "TCP-015 SYN-ACK acks the wrong number": (_replace(1, s2c("SA", 5000, 7777)), "TCP-015", [1]),
    "TCP-016 sequence gap": (_replace(3, c2s("PA", 1501, 5001, REQUEST)), "TCP-016", [3]),
    "TCP-017 ack beyond sent": (_replace(4, s2c("A", 5001, 1001 + N + 500)), "TCP-017", [4]),
    "TCP-018 data after FIN": ([*good_flow()[:6], c2s("PA", 1002 + N, 5001, b"more")], "TCP-018", [6]),
    "TCP-019 data after RST": ([*good_flow()[:4], c2s("RA", 1001 + N, 5001), c2s("PA", 1001 + N, 5001, b"x")],
                               "TCP-019", [5]),
    "TCP-020 port 80 without HTTP": ([c2s("S", 1000), s2c("SA", 5000, 1001), c2s("A", 1001, 5001),
                                      c2s("PA", 1001, 5001, b"\x16\x03\x01hello")], "TCP-020", [0]),
    "UDP-001 length mismatch": ([_eth(IP(src=C, dst=S) / UDP(sport=5, dport=6, len=20) / Raw(b"abcd"))],
                                "UDP-001", [0]),
    "UDP-004 bad checksum": ([_eth(IP(src=C, dst=S) / UDP(sport=5, dport=6, chksum=0x1111) / Raw(b"abcd"))],
                             "UDP-004", [0]),
    "ICMP-001 undefined type": ([_eth(IP(src=C, dst=S) / ICMP(type=3, code=42))], "ICMP-001", [0]),
    "ICMP-002 bad checksum": ([_eth(IP(src=C, dst=S) / ICMP(type=8, chksum=0x4242))], "ICMP-002", [0]),
    "ICMP-004 unanswered echo reply": ([_eth(IP(src=S, dst=C) / ICMP(type=0, id=7, seq=1))], "ICMP-004", [0]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_rule_fires_on_crafted_bad_packet(case: str) -> None:
    packets, rule_id, expected = BAD_CASES[case]
    found = violations(packets)
    assert rule_id in found, f"{rule_id} did not fire; fired: {sorted(found)}"
    assert found[rule_id].tolist() == expected


def _pseudo_header_sum(src: str, dst: str, proto: int, length: int) -> int:
    """The one's-complement sum of an IPv4 pseudo-header, folded (what a stack that leaves the
    checksum to the NIC writes into the field)."""
    words = [int.from_bytes(bytes(map(int, a.split("."))), "big") for a in (src, dst)]
    total = sum((w >> 16) + (w & 0xFFFF) for w in words) + proto + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# What real traffic does that rules must not flag (docs/rules.md, "Real traffic").
FAIR_CASES = {
    "a flow cut from a longer connection (no handshake in view)": good_flow()[2:],
    "a flow cut before its teardown": good_flow()[:4],
    "loopback to loopback, source = destination": [
        _eth(IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=5, dport=6)),
        _eth(IPv6(src="::1", dst="::1") / UDP(sport=5, dport=6))],
    "TCP checksum left to offload (captured on the sender)": _replace(
        2, c2s("A", 1001, 5001, chksum=_pseudo_header_sum(C, S, 6, 20))),
}


@pytest.mark.parametrize("case", list(FAIR_CASES))
def test_valid_real_traffic_violates_nothing(case: str) -> None:
    assert violations(FAIR_CASES[case]) == {}


def test_echo_reply_after_request_passes() -> None:
    pair = [_eth(IP(src=C, dst=S) / ICMP(type=8, id=7, seq=1)), _eth(IP(src=S, dst=C) / ICMP(type=0, id=7, seq=1))]
    assert "ICMP-004" not in violations(pair)


def test_pass_rates_count_packets_and_flows() -> None:
    flow = good_flow()
    flow[2] = c2s("A", 1001, 5001, chksum=0xBEEF)  # one bad packet out of 8
    r = run_rules(evalset(flow), protocols=BUILTIN)
    assert r["packet_pass_rate"] == pytest.approx(7 / 8)
    assert r["flow_pass_rate"] == 0.0
    assert r["per_rule"]["TCP-009"]["applicable"] == 8
    assert r["per_rule"]["TCP-009"]["violating"] == 1


# -- fidelity -----------------------------------------------------------------------------
def test_emd_of_shifted_distribution_is_the_scaled_shift() -> None:
    real = np.arange(11, dtype=float)  # range 10
    assert scaled_emd(real, real + 1.0) == pytest.approx(0.1)
    assert scaled_emd(real, real) == 0.0
    assert scaled_emd(real, np.zeros(0)) is None


def test_emd_scales_by_the_real_range_only() -> None:
    real = np.array([100.0, 200.0])
    gen = np.array([100.0, 300.0])  # half the mass moves by 100 = one real range
    assert scaled_emd(real, gen) == pytest.approx(0.5)


def test_emd_scale_is_given_by_the_whole_real_set() -> None:
    real = np.arange(11, dtype=float)
    assert scaled_emd(real, real + 1.0, (0.0, 20.0)) == pytest.approx(0.05)
    # a constant real field is scaled by its magnitude: 5 → 10 is one "value" away
    assert scaled_emd(np.array([5.0, 5.0]), np.array([10.0, 10.0])) == pytest.approx(1.0)


def test_jsd_hand_computed() -> None:
    assert jsd(np.array([1, 1, 2, 2]), np.array([2, 1, 2, 1])) == pytest.approx(0.0)
    assert jsd(np.array([1, 1]), np.array([2, 2])) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): 0.5·log2(4/3) + 0.25·log2(2/3) + 0.25·log2(2) = 0.31128
    assert jsd(np.array([0, 0]), np.array([0, 1])) == pytest.approx(0.311278, abs=1e-5)


# -- diversity ----------------------------------------------------------------------------
def test_coverage_of_identical_sets_is_one() -> None:
    x = np.random.default_rng(0).normal(size=(200, 4))
    coverage, density = coverage_density(x, x.copy(), k=5)
    assert coverage == 1.0
    assert density > 0.5


def test_coverage_of_far_apart_sets_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(200, 4))
    coverage, density = coverage_density(x, x + 100.0, k=5)
    assert coverage == 0.0
    assert density == 0.0


def test_coverage_and_density_hand_computed() -> None:
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every radius is 1
    coverage, density = coverage_density(real, np.array([[0.5]]), k=1)
    assert coverage == pytest.approx(0.5)  # balls of 0 and 1 hold the point
    assert density == pytest.approx(2.0)  # (1 / (k·M)) · 2 balls


def test_memorisation_counts_exact_copies() -> None:
    train = evalset(good_flow())
    copy = evalset(good_flow())
    changed_flow = good_flow()
    changed_flow[3] = c2s("PA", 1001, 5001, REQUEST.replace(b"/", b"/a"))
    changed = evalset(changed_flow)
    assert memorisation(train, copy)["exact_copy_share"] == 1.0
    assert memorisation(train, changed)["exact_copy_share"] == 0.0


def test_docs_rules_lists_every_registered_rule() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text()
    listed = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ") and "-" in line}
    missing = sorted(r.id for r in all_rules(get_registry().protocols) if r.id not in listed)
    assert not missing, f"docs/rules.md lacks {missing}: regenerate with `pytrafgen rules --markdown`"


def test_scarce_subset_keeps_benign_and_a_tenth_of_each_malicious_class() -> None:
    from pytrafgen.evaluate.utility import scarce_subset

    labels = np.array([0] * 50 + [1] * 40 + [2] * 3)
    keep = scarce_subset(labels, [1, 2], 0.1, np.random.default_rng(0))
    assert np.bincount(labels[keep]).tolist() == [50, 4, 1]


def test_a_detector_that_cannot_train_is_marked_and_the_others_still_score() -> None:
    """A class with a single training flow in a set of over 10,000 flows stops gradient
    boosting (its stratified early-stopping split); it is marked, not a blank for all."""
    from pytrafgen.evaluate.utility import _score, detectors

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(6000, np.int64), np.ones(5000, np.int64), [2]]
    x = rng.normal(size=(len(y), 3)) + y[:, None] * 3.0
    tx, ty = x[::50], y[::50]
    made = detectors(0)
    score, why = _score(made["gradient_boosting"], x, y, tx, ty, [0, 1, 2])
    assert score is None and "smallest class: 1 flow" in why
    score, why = _score(made["random_forest"], x, y, tx, ty, [0, 1, 2])
    assert why is None and score is not None and score > 0.6
