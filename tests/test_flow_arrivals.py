"""Generated flows (piling up at t=0) are placed in time at each class's real flow rate."""

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


def test_without_a_learned_rate_flows_arrive_at_the_fallback_rate() -> None:
    """A class whose plan knows no rate (one training flow) still spreads its flows: at the
    plan's rate over all classes, else one second apart on average."""
    records = _records(200, [0] * 100 + [1] * 100)
    starts = build_frames(records, _plan({"flood": None, "slow": None}), seed=0).to_table().ts_ns[::2]
    for k in (0, 1):
        mine = np.sort(starts[k * 100:(k + 1) * 100])
        assert len(np.unique(mine)) == 100
        assert 0.7 < np.mean(np.diff(mine)) / 1e9 < 1.3
    plan = _plan({"flood": None, "slow": 0.5})
    plan.classes["*"].flow_interval_s = 0.01
    starts = build_frames(records, plan, seed=0).to_table().ts_ns[::2]
    assert 0.007 < np.mean(np.diff(np.sort(starts[:100]))) / 1e9 < 0.013


def test_a_partial_pile_up_is_spread_too() -> None:
    """Flows that start at the same instant only in part (a generator that draws a first
    time offset for some flows) arrive at the class rate all the same: no t = 0 pile-up."""
    records = _records(100, [0] * 100)
    records.packets["ts_ns"][0:20:2] += np.arange(1, 11) * 5_000_000  # 10 flows start later, 90 at 0
    records.packets["ts_ns"][1:20:2] += np.arange(1, 11) * 5_000_000
    starts = build_frames(records, _plan({"flood": 0.01}), seed=1).to_table().ts_ns[::2]
    assert len(np.unique(starts)) == 100
    assert 0.007 < np.mean(np.diff(np.sort(starts))) / 1e9 < 0.013


def test_real_flows_with_distinct_starts_keep_their_times() -> None:
    records = _records(4, [0, 0, 1, 1])
    offsets = np.array([0, 7, 3, 9], np.int64) * 1_000_000_000
    records.packets["ts_ns"] += np.repeat(offsets, 2)
    starts = build_frames(records, _plan({"flood": 0.001, "slow": 0.001}), seed=0).to_table().ts_ns[::2]
    assert starts.tolist() == offsets.tolist()


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
