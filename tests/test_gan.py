"""The ``gan`` plugin (plugins/pytrafgen-gan): feature encoding round trip on real flows, a tiny
WGAN-GP training on CPU, sampling per class, checkpoints, and pcaps the reader reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from baseline_support import assert_syn_and_udp_floods_apart, small_dataset
from conftest import CAPTURES

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import write_records
from pytrafgen.capture import read_pcap
from pytrafgen.errors import PytrafgenError
from pytrafgen.generators import load_generator
from pytrafgen.generators.baseline_data import FlowSet
from pytrafgen.plugins import get_generator, get_registry

torch = pytest.importorskip("torch")
pytrafgen_gan = pytest.importorskip("pytrafgen_gan", reason="plugins/pytrafgen-gan is not installed")
from pytrafgen_gan.features import FlowEncoding  # noqa: E402

CLASSES = ["benign_mqtt", "syn_flood", "udp_flood", "http_bruteforce"]
COUNTS = {"benign_mqtt": 7, "syn_flood": 9, "udp_flood": 5, "http_bruteforce": 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return small_dataset(CAPTURES, CLASSES, tmp_path_factory.mktemp("gan-data"), max_packets=16)


@pytest.fixture(scope="module")
def fitted(dataset):
    torch.set_num_threads(1)
    gen = pytrafgen_gan.GanGenerator({"size": "tiny", "iterations": 40})
    gen.fit(dataset)
    return gen


def test_registered_through_entry_point() -> None:
    assert get_generator("gan") is pytrafgen_gan.GanGenerator
    owner = [p for p in get_registry().plugins if "gan" in p.registered.get("generator", [])]
    assert [(p.distribution, p.builtin) for p in owner] == [("pytrafgen-gan", False)]


def test_encoding_round_trip_on_real_flows(dataset) -> None:
    flows = FlowSet.from_records(dataset.train)
    enc = FlowEncoding.fit(flows, max_len=16, n_ports=4)
    attrs, feats = enc.encode(flows)
    assert attrs.shape == (flows.n_flows, enc.attr_dim) and feats.min() >= 0 and feats.max() <= 1
    flow_cols, pk = enc.decode(flows.label, attrs, feats, np.random.default_rng(0))
    np.testing.assert_array_equal(flow_cols["proto"], flows.proto)
    np.testing.assert_array_equal(flow_cols["ip_version"], flows.ip_version)
    known = np.isin(flows.server_port, enc.ports)
    np.testing.assert_array_equal(flow_cols["server_port"][known], flows.server_port[known])
    np.testing.assert_array_equal(np.bincount(pk["flow"]), np.minimum(flows.lengths, 16))
    keep = flows.position_in_flow() < 16
    for name in ("direction", "tcp_flags", "payload_len", "ttl", "window"):
        np.testing.assert_array_equal(pk[name].astype(np.int64), flows.packets[name][keep].astype(np.int64),
                                      err_msg=name)
    iat = flows.packets["iat_ns"][keep]
    assert np.all(np.abs(pk["iat_ns"] - iat) <= 1e-3 * iat + 2_000)  # float32 log scale, ~µs resolution


def test_sample_per_class_from_learned_vocabularies(fitted) -> None:
    records = fitted.sample(COUNTS, seed=1)
    labels = records.flows["label"]
    assert {CLASSES[k]: int(n) for k, n in enumerate(np.bincount(labels, minlength=4))} == COUNTS
    enc = fitted.encoding
    assert set(zip(records.flows["ip_version"].tolist(), records.flows["proto"].tolist(), strict=True)) <= {
        tuple(c) for c in enc.combos.tolist()}
    assert np.bincount(records.packets["flow"]).max() <= 16
    with pytest.raises(PytrafgenError, match="sampling options"):
        fitted.set_sampling(temperature=0.5)
    with pytest.raises(PytrafgenError, match="unknown size"):
        pytrafgen_gan.GanGenerator({"size": "huge"})


def test_save_load_reproducible(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "ckpt")
    loaded = load_generator(tmp_path / "ckpt")
    a, b = fitted.sample(COUNTS, seed=3), loaded.sample(COUNTS, seed=3)
    for name in a.packets:
        np.testing.assert_array_equal(a.packets[name], b.packets[name], err_msg=name)
    for name in a.flows:
        np.testing.assert_array_equal(a.flows[name], b.flows[name], err_msg=name)


def test_writes_pcap_that_reads_back(dataset, fitted, tmp_path: Path) -> None:
    records = fitted.sample(COUNTS, seed=2)
    plan = AddressPlan.load(dataset.path / "address_plan.json")
    summary = write_records(tmp_path / "gen.pcap", records, plan, seed=2)
    table = read_pcap(tmp_path / "gen.pcap")
    assert summary["packets"] == records.n_packets == len(table)
    order = np.argsort(records.packets["ts_ns"], kind="stable")
    np.testing.assert_array_equal(table.proto, records.flows["proto"][records.packets["flow"][order]])
    np.testing.assert_array_equal(table.ttl, records.packets["ttl"][order])


def test_learns_class_conditional_protocol_port_and_first_flags(tmp_path: Path) -> None:
    """A few CPU seconds of training already separate the classes: SYN-flood flows are TCP to
    port 80 opening with a SYN, UDP-flood flows are UDP to port 40000 (an untrained or
    unconditioned model mixes them)."""
    torch.set_num_threads(1)
    data = small_dataset(CAPTURES, ["syn_flood", "udp_flood"], tmp_path, max_flows=20, max_packets=4)
    gen = pytrafgen_gan.GanGenerator({"size": "tiny", "iterations": 300, "max_len": 4})
    gen.fit(data)
    assert_syn_and_udp_floods_apart(gen.sample({"syn_flood": 20, "udp_flood": 20}, seed=1))
