"""The ``diffusion`` plugin (plugins/pytrafgen-diffusion): nPrint-like bit rows round trip on
real flows, raw vs repaired decoding, a tiny class-conditioned DDPM on CPU, checkpoints, and
pcaps (repaired and raw) that the reader reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from baseline_support import assert_syn_and_udp_floods_apart, small_dataset
from conftest import CAPTURES

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames, write_records
from pytrafgen.capture import read_pcap
from pytrafgen.generators import load_generator
from pytrafgen.generators.baseline_data import EmpiricalParts, FlowSet, assemble_records
from pytrafgen.plugins import get_generator, get_registry

torch = pytest.importorskip("torch")
pytrafgen_diffusion = pytest.importorskip("pytrafgen_diffusion", reason="plugins/pytrafgen-diffusion is not installed")
from pytrafgen_diffusion.bits import COLUMNS, WIDTH, encode_rows, flow_images  # noqa: E402
from pytrafgen_diffusion.fields import decode_to_columns  # noqa: E402
from pytrafgen_diffusion.model import cosine_alpha_bar  # noqa: E402

CLASSES = ["benign_mqtt", "syn_flood", "udp_flood", "http_bruteforce"]
COUNTS = {"benign_mqtt": 6, "syn_flood": 8, "udp_flood": 5, "http_bruteforce": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return small_dataset(CAPTURES, CLASSES, tmp_path_factory.mktemp("diffusion-data"), max_packets=16)


@pytest.fixture(scope="module")
def fitted(dataset):
    torch.set_num_threads(1)
    gen = pytrafgen_diffusion.DiffusionGenerator({"size": "tiny", "iterations": 40, "n_steps": 20})
    gen.fit(dataset)
    return gen


def test_registered_through_entry_point() -> None:
    assert get_generator("diffusion") is pytrafgen_diffusion.DiffusionGenerator
    owner = [p for p in get_registry().plugins if "diffusion" in p.registered.get("generator", [])]
    assert [(p.distribution, p.builtin) for p in owner] == [("pytrafgen-diffusion", False)]


def test_bit_rows_round_trip_real_fields_and_lengths(dataset) -> None:
    records = dataset.train
    flows = FlowSet.from_records(records)
    rows = encode_rows(records, flows)
    assert rows.shape == (records.n_packets, WIDTH) and set(np.unique(rows)) <= {-1, 0, 1}
    images = flow_images(rows, flows, max_len=16)
    cols = decode_to_columns(flows.label, images.astype(np.float32), repair=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(cols["flows"]["proto"], flows.proto)
    np.testing.assert_array_equal(cols["flows"]["server_port"], flows.server_port)
    np.testing.assert_array_equal(cols["flows"]["client_port"], flows.client_port)
    keep = flows.position_in_flow() < 16
    real_rows = flows.packets["row"][keep]
    pk = cols["packets"]
    for name in ("direction", "tcp_flags", "payload_len", "ttl", "window"):
        np.testing.assert_array_equal(pk[name].astype(np.int64), flows.packets[name][keep].astype(np.int64),
                                      err_msg=name)
    for name in ("seq", "ack", "ip_id"):
        np.testing.assert_array_equal(cols["overrides"][name], records.packets[name][real_rows], err_msg=name)
    # the raw derived lengths decode to what the capture carried (records_from_packets keeps them)
    for name in ("ip_total_len", "ip_hdr_len"):
        np.testing.assert_array_equal(cols["raw_derived"][name], records.raw_derived[name][real_rows], err_msg=name)


def test_repair_makes_seq_continuous_raw_keeps_decoded(dataset) -> None:
    records = dataset.train
    flows = FlowSet.from_records(records)
    images = flow_images(encode_rows(records, flows), flows, max_len=16).astype(np.float32)
    tcp_flow = int(np.flatnonzero(flows.proto == 6)[0])
    images[tcp_flow, 1, COLUMNS[("tcp", "seq")]] = 1.0  # packet 2's seq bits all set: garbage
    parts = EmpiricalParts.fit(records, flows, seed=0)
    out = {}
    for repair in (False, True):
        cols = decode_to_columns(flows.label, images, repair, np.random.default_rng(0))
        out[repair] = assemble_records(CLASSES, cols["flows"], cols["packets"], parts, np.random.default_rng(0),
                                       overrides=cols["overrides"], options_mask=cols["options_mask"],
                                       raw_derived=cols["raw_derived"])
    raw_seq = out[False].packets["seq"][out[False].packets["flow"] == tcp_flow]
    fixed_seq = out[True].packets["seq"][out[True].packets["flow"] == tcp_flow]
    assert raw_seq[1] == 2**32 - 1
    assert fixed_seq[1] < 2**20 and fixed_seq[0] == 0


def test_cosine_schedule_decreases_to_near_zero() -> None:
    a = cosine_alpha_bar(50).numpy()
    assert np.all(np.diff(a) < 0) and a[0] > 0.99 and a[-1] < 1e-3


def test_sample_per_class_and_save_load(fitted, tmp_path: Path) -> None:
    records = fitted.sample(COUNTS, seed=1)
    assert {CLASSES[k]: int(n) for k, n in enumerate(np.bincount(records.flows["label"], minlength=4))} == COUNTS
    assert set(records.raw_derived) == {"ip_hdr_len", "ip_total_len", "l4_hdr_len", "udp_len"}
    fitted.save(tmp_path / "ckpt")
    loaded = load_generator(tmp_path / "ckpt")
    again = loaded.sample(COUNTS, seed=1)
    for name in records.packets:
        np.testing.assert_array_equal(records.packets[name], again.packets[name], err_msg=name)


def test_writes_repaired_and_raw_pcaps_that_read_back(dataset, fitted, tmp_path: Path) -> None:
    plan = AddressPlan.load(dataset.path / "address_plan.json")
    repaired = fitted.sample(COUNTS, seed=2, repair=True)
    write_records(tmp_path / "gen.pcap", repaired, plan, seed=2)
    table = read_pcap(tmp_path / "gen.pcap")
    assert len(table) == repaired.n_packets and np.all(table.status == 0)
    raw = fitted.sample(COUNTS, seed=2, repair=False)
    summary = write_records(tmp_path / "raw.pcap", raw, plan, seed=2, repair=False)
    assert len(read_pcap(tmp_path / "raw.pcap")) == summary["packets"] > 0


def test_raw_output_writes_decoded_lengths(dataset) -> None:
    """Perfect bit rows of real flows, decoded raw and built with repair=False, carry the
    capture's own IP total lengths: the raw path writes what was decoded."""
    records = dataset.train
    flows = FlowSet.from_records(records)
    images = flow_images(encode_rows(records, flows), flows, max_len=16).astype(np.float32)
    cols = decode_to_columns(flows.label, images, False, np.random.default_rng(0))
    parts = EmpiricalParts.fit(records, flows, seed=0)
    raw = assemble_records(CLASSES, cols["flows"], cols["packets"], parts, np.random.default_rng(0),
                           overrides=cols["overrides"], options_mask=cols["options_mask"],
                           raw_derived=cols["raw_derived"])
    plan = AddressPlan.load(dataset.path / "address_plan.json")
    frames = build_frames(raw, plan, seed=0, repair=False)
    table = frames.to_table()
    assert len(table) == raw.n_packets
    np.testing.assert_array_equal(table.ip_total_len, raw.raw_derived["ip_total_len"][frames.packet])
    real_rows = flows.packets["row"][flows.position_in_flow() < 16]
    np.testing.assert_array_equal(np.sort(table.ip_total_len), np.sort(records.raw_derived["ip_total_len"][real_rows]))


def test_learns_class_conditional_protocol_port_and_first_flags(tmp_path: Path) -> None:
    """A few CPU seconds of training already separate the classes: SYN-flood flows are TCP to
    port 80 opening with a SYN, UDP-flood flows are UDP to port 40000 (an untrained or
    unconditioned model mixes them)."""
    torch.set_num_threads(1)
    data = small_dataset(CAPTURES, ["syn_flood", "udp_flood"], tmp_path, max_flows=20, max_packets=4)
    gen = pytrafgen_diffusion.DiffusionGenerator({"size": "tiny", "iterations": 300, "n_steps": 20, "max_len": 4})
    gen.fit(data)
    assert_syn_and_udp_floods_apart(gen.sample({"syn_flood": 20, "udp_flood": 20}, seed=1))
