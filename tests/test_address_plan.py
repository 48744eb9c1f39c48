"""Address plans: learned per class, from CIDRs, moved into CIDRs, seeded, saved as JSON."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import SHARED_CAPTURES

from pytrafgen.address_plan import (
    ALL_CLASSES,
    AddressPlan,
    AddressPlanError,
    _unique_rows,
    addr_to_bytes,
    bytes_to_addr,
)
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.records import FieldRecords


def addrs(*texts: str) -> np.ndarray:
    return np.stack([np.frombuffer(addr_to_bytes(t), np.uint8) for t in texts])


def fake_capture(labels: list[int], clients: list[str], servers: list[str]):
    """A minimal PacketTable + FlowTable pair: one Ethernet packet per flow."""
    n = len(labels)
    frame = bytes.fromhex("0000000000bb0000000000aa0800")  # dst ..bb, src ..aa
    table = SimpleNamespace(linktype=np.ones(n, np.uint16), l3_off=np.full(n, 14, np.uint16),
                            frame_off=np.arange(n, dtype=np.uint64) * 14,
                            data=np.frombuffer(frame * n, np.uint8))
    flows = SimpleNamespace(l3=np.array([6 if ":" in c else 4 for c in clients], np.uint8),
                            client_addr=addrs(*clients), server_addr=addrs(*servers),
                            first_packet=np.arange(n), direction=np.zeros(n, np.uint8))
    return table, flows, np.array(labels)


def records_for(labels: list[int], versions: list[int], classes: list[str]) -> FieldRecords:
    rec = FieldRecords.empty(classes)
    n = len(labels)
    rec.flows = {"label": np.array(labels, np.int16), "ip_version": np.array(versions, np.uint8),
                 "proto": np.full(n, 6, np.uint8), "client_port": np.zeros(n, np.uint16),
                 "server_port": np.full(n, 80, np.uint16)}
    rec.validate()
    return rec


def test_learns_one_client_versus_many_spoofed_sources() -> None:
    spoofed = [f"{a}.{b}.7.9" for a, b in zip(range(1, 201), range(200), strict=True)]
    labels = [0] * 50 + [1] * 200
    clients = ["10.99.0.2"] * 50 + spoofed
    table, flows, labels_arr = fake_capture(labels, clients, ["10.99.0.1"] * 250)
    plan = AddressPlan.learn(table, flows, labels_arr, ["benign", "flood"])
    benign, flood = plan.classes["benign"], plan.classes["flood"]
    assert benign.pool("client", 4).listed == ["10.99.0.2"] and benign.pool("client", 4).fresh_count == 0
    assert flood.pool("client", 4).listed == [] and flood.pool("client", 4).fresh_count == 200
    assert flood.pool("client", 4).fresh_cidrs == ["0.0.0.0/0"]
    assert benign.client_mac == "00:00:00:00:00:aa" and benign.server_mac == "00:00:00:00:00:bb"

    rec = records_for([0] * 100 + [1] * 100, [4] * 200, ["benign", "flood"])
    out = plan.assign(rec, np.random.default_rng(0))
    assert len({bytes(a) for a in out["client_addr"][:100]}) == 1
    assert len({bytes(a) for a in out["client_addr"][100:]}) > 90
    assert {bytes_to_addr(a) for a in out["server_addr"]} == {"10.99.0.1"}


def test_assignment_is_deterministic_and_follows_counts() -> None:
    table, flows, labels = fake_capture([0] * 4, ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"],
                                        ["10.1.0.1"] * 4)
    plan = AddressPlan.learn(table, flows, labels, ["a"])
    assert plan.classes["a"].pool("client", 4).counts == [3, 1]
    rec = records_for([0] * 4000, [4] * 4000, ["a"])
    first = plan.assign(rec, np.random.default_rng(7))["client_addr"]
    second = plan.assign(rec, np.random.default_rng(7))["client_addr"]
    assert np.array_equal(first, second)
    share = np.mean([bytes_to_addr(a) == "10.0.0.1" for a in first])
    assert 0.7 < share < 0.8


def test_from_cidrs_and_unknown_class_and_missing_version() -> None:
    plan = AddressPlan.from_cidrs(["192.0.2.0/28"], ["198.51.100.0/30", "2001:db8::/120"])
    rec = records_for([0, 0, 1], [4, 4, 4], ["never_seen", "other"])
    out = plan.assign(rec, np.random.default_rng(1))
    for a in out["client_addr"]:
        host = ipaddress.ip_address(bytes_to_addr(a))
        assert host in ipaddress.ip_network("192.0.2.0/28") and host not in (
            ipaddress.ip_address("192.0.2.0"), ipaddress.ip_address("192.0.2.15"))
    with pytest.raises(AddressPlanError, match="no IPv6 client"):
        plan.assign(records_for([0], [6], ["x"]), np.random.default_rng(1))
    with pytest.raises(AddressPlanError, match="bad CIDR"):
        AddressPlan.from_cidrs(["10.0.0.0/33"], ["10.0.0.0/8"])


def test_within_keeps_structure_and_drops_other_versions() -> None:
    table, flows, labels = fake_capture([0, 0, 0], ["10.0.0.1", "10.0.0.1", "2001:db8::5"],
                                        ["10.1.0.1", "10.1.0.1", "2001:db8::6"])
    plan = AddressPlan.learn(table, flows, labels, ["a"]).within(["172.16.0.0/24"], ["172.17.0.0/24"], seed=3)
    pool = plan.classes["a"].pool("client", 4)
    assert pool.counts == [2] and ipaddress.ip_address(pool.listed[0]) in ipaddress.ip_network("172.16.0.0/24")
    assert plan.classes["a"].pool("client", 6) is None  # no user IPv6 CIDR: real IPv6 addresses must not leak
    # a CIDR with fewer hosts than the plan lists: hosts are shared, never an endless search
    table, flows, labels = fake_capture([0] * 6, [f"10.0.0.{k}" for k in range(1, 4)] * 2, ["10.1.0.1"] * 6)
    small = AddressPlan.learn(table, flows, labels, ["a"]).within(["172.16.0.0/30"], ["172.17.0.0/30"])
    pool = small.classes["a"].pool("client", 4)
    assert len(pool.listed) == 3 and set(pool.listed) == {"172.16.0.1", "172.16.0.2"}


def test_json_round_trip(tmp_path: Path) -> None:
    table, flows, labels = fake_capture([0, 1], ["10.0.0.1", "2001:db8::1"], ["10.0.0.2", "2001:db8::2"])
    plan = AddressPlan.learn(table, flows, labels, ["a", "b"])
    path = tmp_path / "address_plan.json"
    plan.save(path)
    again = AddressPlan.load(path)
    assert again.to_json() == plan.to_json()
    assert set(again.classes) == {"a", "b", ALL_CLASSES}
    broken = plan.to_json()
    broken["classes"]["a"]["client"]["4"]["listed"] = ["10.0.0.300"]
    path.write_text(json.dumps(broken))
    with pytest.raises(AddressPlanError, match="bad address"):
        AddressPlan.load(path)
    path.write_text('{"format": 99}')
    with pytest.raises(AddressPlanError, match="format"):
        AddressPlan.load(path)


def test_learned_from_a_real_capture() -> None:
    path = next(p for p in SHARED_CAPTURES if p.name == "nmap_syn_scan.pcap")
    table = read_pcap(path)
    flows = assemble_flows(table)
    plan = AddressPlan.learn(table, flows, np.zeros(len(flows), np.int16), ["nmap_syn_scan"])
    entry = plan.classes["nmap_syn_scan"]
    # one scanner, one target, thousands of flows
    assert len(entry.pool("client", 4).listed) == 1 and len(entry.pool("server", 4).listed) == 1
    assert sum(entry.pool("client", 4).counts) == len(flows)


@pytest.mark.parametrize("width", [6, 12, 16])
def test_unique_rows_matches_numpy(width: int) -> None:
    rows = np.random.default_rng(width).integers(0, 3, (3000, width), dtype=np.uint8)
    uniq, counts = _unique_rows(rows)
    want_uniq, want_counts = np.unique(rows, axis=0, return_counts=True)
    assert np.array_equal(uniq, want_uniq) and np.array_equal(counts, want_counts)
