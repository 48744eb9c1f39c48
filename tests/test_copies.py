"""Near copies of training flows (pytrafgen/evaluate/copies.py) and the memorisation figures
that report them beside exact copies and the real-vs-real floor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pytrafgen.capture import PacketTable
from pytrafgen.evaluate.copies import (
    NearCopyIndex,
    bounded_levenshtein,
    edit_budget,
    flow_shapes,
    near_copies,
)
from pytrafgen.evaluate.diversity import memorisation
from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables

BODY = bytes(range(32, 232))  # 200 bytes; with a 2-byte answer, a budget of ceil(0.02 * 202) = 5 edits


def levenshtein_reference(a: bytes, b: bytes) -> int:
    """The textbook full dynamic programme (Wagner-Fischer), no band, no cut-off."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[len(a)][len(b)]


def test_bounded_levenshtein_matches_the_full_programme() -> None:
    assert bounded_levenshtein(b"kitten", b"sitting", 3) == 3
    assert bounded_levenshtein(b"kitten", b"sitting", 2) == 3  # over the budget: budget + 1
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = rng.integers(0, 4, rng.integers(0, 12)).astype(np.uint8).tobytes()
        b = rng.integers(0, 4, rng.integers(0, 12)).astype(np.uint8).tobytes()
        budget = int(rng.integers(0, 6))
        assert bounded_levenshtein(a, b, budget) == min(levenshtein_reference(a, b), budget + 1), (a, b, budget)


def test_edit_budget() -> None:
    assert edit_budget(0) == 0 and edit_budget(10) == 1 and edit_budget(200) == 4 and edit_budget(201) == 5


CLIENT_PORTS = itertools.count(40000)


def udp_flow(*payloads: bytes) -> list[Ether]:
    """Datagrams alternating client -> server, server -> client, from a client port of its own."""
    ends = (("10.0.0.1", next(CLIENT_PORTS)), ("10.0.0.2", 5683))
    out = []
    for k, payload in enumerate(payloads):
        (src, sp), (dst, dp) = ends[k % 2], ends[1 - k % 2]
        out.append(Ether() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(payload))
    return out


def flows_set(*flows: list[Ether], cls: str = "x") -> EvalSet:
    frames = [bytes(p) for flow in flows for p in flow]
    ts = 1_700_000_000_000_000_000 + np.arange(len(frames), dtype=np.int64) * 1_000_000_000
    return evalset_from_tables([(PacketTable.from_frames(frames, ts_ns=ts), cls)], "crafted")


def _substituted(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for i in positions:
        out[i] ^= 0xFF
    return bytes(out)


def test_near_copies_same_sizes_and_directions_small_edit_distance() -> None:
    train = flows_set(udp_flow(BODY, b"ok"))
    index = NearCopyIndex(flow_shapes(train))
    shifted = BODY[1:] + b"!"  # one deletion + one insertion: 2 edits, 199 Hamming
    cases = {
        "copy": (udp_flow(BODY, b"ok"), True),
        "5 substitutions": (udp_flow(_substituted(BODY, [0, 50, 100, 150, 199]), b"ok"), True),
        "6 substitutions": (udp_flow(_substituted(BODY, [0, 50, 100, 120, 150, 199]), b"ok"), False),
        "shifted by one byte": (udp_flow(shifted, b"ok"), True),
        "another size": (udp_flow(BODY + b"x", b"ok"), False),
        "other direction order": (udp_flow(b"ok", BODY), False),
        "one packet fewer": (udp_flow(BODY), False),
    }
    got = near_copies(index, flow_shapes(flows_set(*(flow for flow, _ in cases.values()))))
    assert dict(zip(cases, got.tolist(), strict=True)) == {name: want for name, (_, want) in cases.items()}


def test_memorisation_reports_near_copies_beside_exact_ones_and_the_real_floor() -> None:
    train = flows_set(udp_flow(BODY, b"ok"), udp_flow(b"q" * 50, b"r"))
    generated = flows_set(udp_flow(BODY, b"ok"), udp_flow(_substituted(BODY, [7]), b"ok"),
                          udp_flow(b"z" * 300, b"ok"), udp_flow(b"fresh", b"new"))
    real_test = flows_set(udp_flow(_substituted(b"q" * 50, [3]), b"r"), udp_flow(b"other", b"x"))
    m = memorisation(train, generated, real_test)
    assert m["exact_copy_share"] == pytest.approx(1 / 4)
    assert m["near_copy_share"] == pytest.approx(2 / 4)
    assert m["near_copy_share_per_class"] == {"x": pytest.approx(0.5)}
    assert m["exact_copy_share_real_test"] == 0.0
    assert m["near_copy_share_real_test"] == pytest.approx(1 / 2)
    assert m["near_copy_share_real_test_per_class"] == {"x": pytest.approx(0.5)}
    assert "edit_share" in m["settings"]


def test_flows_without_payload_of_the_same_shape_are_near_copies() -> None:
    from scapy.layers.inet import TCP

    def syn(sport: int) -> list[Ether]:
        return [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=80, flags="S")]

    train = flows_set(syn(1000))
    m = memorisation(train, flows_set(syn(2000), syn(3000)), flows_set(syn(4000)))
    assert m["exact_copy_share"] == 1.0 and m["near_copy_share"] == 1.0  # a SYN scan copies by nature
    assert m["exact_copy_share_real_test"] == 1.0  # and so does real traffic: the floor
