"""Generated flows (all starting at t=0) are placed in time at each class's real flow rate."""

from __future__ import annotations

import numpy as np

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords


def _records(n_flows: int, labels: list[int]) -> FieldRecords:
    packets = {n: np.zeros(2 * n_flows, d) for n, d in PACKET_COLUMNS.items()}
    packets["flow"] = np.repeat(np.arange(n_flows, dtype=np.int32), 2)
    packets["direction"][1::2] = 1
    packets["ts_ns"][1::2] = 1_000  # second packet 1 µs after the first, in every flow
    packets["ttl"][:] = 64
    packets["tcp_flags"][0::2] = 2
    packets["tcp_flags"][1::2] = 18
    packets["window"][:] = 1024
    flows = {n: np.zeros(n_flows, d) for n, d in FLOW_COLUMNS.items()}
    flows["label"] = np.array(labels, np.int16)
    flows["ip_version"][:] = 4
    flows["proto"][:] = 6
    flows["client_port"][:] = 40000
    flows["server_port"][:] = 80
    return FieldRecords(packets, flows, np.zeros(0, np.uint8), ["flood", "slow"])


def _plan(intervals: dict[str, float | None]) -> AddressPlan:
    plan = AddressPlan.from_cidrs(["10.0.0.0/24"], ["10.0.1.0/24"])
    star = plan.classes["*"]
    for name, interval in intervals.items():
        entry = AddressPlan.from_cidrs(["10.0.0.0/24"], ["10.0.1.0/24"]).classes["*"]
        entry.flow_interval_s = interval
        plan.classes[name] = entry
    plan.classes["*"] = star
    return plan


def test_flows_arrive_at_each_class_rate() -> None:
    n = 400
    labels = [0] * (n // 2) + [1] * (n // 2)
    records = _records(n, labels)
    plan = _plan({"flood": 0.0001, "slow": 0.5})
    built = build_frames(records, plan, seed=3, time_order=True)
    ts = built.to_table().ts_ns
    order_labels = np.asarray(labels)
    # starts per class, from the unsorted per-flow first packets
    unsorted = build_frames(records, plan, seed=3)
    starts = unsorted.to_table().ts_ns[::2]
    for k, interval in ((0, 0.0001), (1, 0.5)):
        gaps = np.diff(np.sort(starts[order_labels == k])) / 1e9
        assert 0.7 * interval < np.mean(gaps) < 1.3 * interval
    assert np.all(np.diff(ts) >= 0)  # time-ordered output
    # within a flow, the 1 µs gap survives
    assert np.all(unsorted.to_table().ts_ns[1::2] - starts == 1_000)


def test_without_a_learned_rate_flows_keep_their_times() -> None:
    records = _records(4, [0, 0, 1, 1])
    built = build_frames(records, _plan({"flood": None, "slow": None}), seed=0)
    assert set(built.to_table().ts_ns[::2].tolist()) == {0}


def test_learned_plan_records_the_median_flow_gap(tmp_path) -> None:
    from types import SimpleNamespace

    from pytrafgen.capture import PacketTable

    frames = [bytes(54)] * 4
    table = PacketTable.from_frames(frames, ts_ns=np.array([0, 2_000_000_000, 3_000_000_000, 7_000_000_000]))
    flows = SimpleNamespace(
        l3=np.array([4, 4, 4, 4], np.uint8),
        client_addr=np.zeros((4, 16), np.uint8),
        server_addr=np.zeros((4, 16), np.uint8),
        direction=np.zeros(4, np.uint8),
        first_packet=np.arange(4),
    )
    plan = AddressPlan.learn(table, flows, np.array([0, 0, 0, 0]), ["a"])
    assert plan.entry("a").flow_interval_s == 2.0  # gaps 2, 1, 4 s → median 2
    plan.save(tmp_path / "plan.json")
    assert AddressPlan.load(tmp_path / "plan.json").entry("a").flow_interval_s == 2.0
