"""The built-in statistical baseline ``markov``: trains on real flows of the shared captures,
samples per class, saves/loads, and writes pcaps the reader reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from baseline_support import small_dataset
from conftest import CAPTURES

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import write_records
from pytrafgen.capture import read_pcap
from pytrafgen.errors import CheckpointError, PytrafgenError
from pytrafgen.generators import load_generator
from pytrafgen.generators.baseline_data import FlowSet
from pytrafgen.generators.markov import MarkovGenerator
from pytrafgen.plugins import get_generator

CLASSES = ["benign_mqtt", "syn_flood", "udp_flood", "http_bruteforce"]
COUNTS = {"benign_mqtt": 12, "syn_flood": 15, "udp_flood": 9, "http_bruteforce": 6}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return small_dataset(CAPTURES, CLASSES, tmp_path_factory.mktemp("markov-data"))


@pytest.fixture(scope="module")
def fitted(dataset) -> MarkovGenerator:
    gen = MarkovGenerator()
    gen.fit(dataset)
    return gen


def test_registered_as_builtin() -> None:
    assert get_generator("markov") is MarkovGenerator


def test_sample_counts_and_flow_attributes_come_from_the_class(dataset, fitted) -> None:
    records = fitted.sample(COUNTS, seed=1)
    labels = records.flows["label"]
    assert {CLASSES[k]: int(n) for k, n in enumerate(np.bincount(labels, minlength=4))} == COUNTS
    real = dataset.train.flows
    for k in range(len(CLASSES)):
        seen = set(zip(real["proto"][real["label"] == k].tolist(), real["server_port"][real["label"] == k].tolist(),
                       strict=True))
        mine = labels == k
        got = set(zip(records.flows["proto"][mine].tolist(), records.flows["server_port"][mine].tolist(), strict=True))
        assert got <= seen, CLASSES[k]
    assert set(records.flows["proto"][labels == CLASSES.index("udp_flood")].tolist()) <= {17, 1}


def test_first_packets_and_transitions_follow_training_chain(dataset, fitted) -> None:
    real = FlowSet.from_records(dataset.train)
    gen = FlowSet.from_records(fitted.sample(COUNTS, seed=2))

    def first_states(fs: FlowSet, k: int) -> set[tuple[int, int]]:
        firsts = fs.offsets[:-1][fs.label == k]
        return set(zip(fs.packets["direction"][firsts].tolist(), fs.packets["tcp_flags"][firsts].tolist(), strict=True))

    for k in range(len(CLASSES)):
        assert first_states(gen, k) <= first_states(real, k), CLASSES[k]
    # every SYN-flood flow opens with a client SYN (hping3 -S)
    syn = gen.offsets[:-1][gen.label == CLASSES.index("syn_flood")]
    assert np.all(gen.packets["tcp_flags"][syn] == 2) and np.all(gen.packets["direction"][syn] == 0)


def test_tcp_seq_ack_continuous(fitted) -> None:
    records = fitted.sample({"benign_mqtt": 6, "http_bruteforce": 4}, seed=3)
    fs = FlowSet.from_records(records)
    pk = records.packets
    for f in range(fs.n_flows):
        nxt = [0, 0]
        for i in fs.packets["row"][fs.offsets[f]:fs.offsets[f + 1]]:
            d, flags = int(pk["direction"][i]), int(pk["tcp_flags"][i])
            assert pk["seq"][i] == nxt[d]
            if flags & 16:
                assert pk["ack"][i] == nxt[1 - d]
            nxt[d] += int(pk["payload_len"][i]) + bool(flags & 2) + bool(flags & 1)


def test_payload_bytes_are_real_prefixes_of_the_class(dataset, fitted) -> None:
    real = dataset.train
    real_payloads: set[tuple[int, int, bytes]] = set()
    for i in np.flatnonzero(real.packets["payload_stored"] > 0):
        off, n = int(real.packets["payload_off"][i]), int(real.packets["payload_stored"][i])
        label = int(real.flows["label"][real.packets["flow"][i]])
        real_payloads.add((label, int(real.packets["direction"][i]), real.blob[off:off + n].tobytes()))
    records = fitted.sample({"benign_mqtt": 8, "http_bruteforce": 5}, seed=4)
    pk = records.packets
    checked = 0
    for i in np.flatnonzero(pk["payload_stored"] > 0):
        off, n = int(pk["payload_off"][i]), int(pk["payload_stored"][i])
        got = records.blob[off:off + n].tobytes()
        label, direction = int(records.flows["label"][pk["flow"][i]]), int(pk["direction"][i])
        assert any(lab == label and d == direction and p.startswith(got) for lab, d, p in real_payloads)
        checked += 1
    assert checked > 10


def test_save_load_reproducible_and_pickle_free(fitted, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    fitted.save(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == [".pytrafgen-output", "address_plan.json", "config.json",
                                                       "weights.safetensors"]
    assert json.loads((ckpt / "config.json").read_text())["generator"] == "markov"
    loaded = load_generator(ckpt)
    assert isinstance(loaded, MarkovGenerator)
    a, b = fitted.sample(COUNTS, seed=7), loaded.sample(COUNTS, seed=7)
    for name in a.packets:
        np.testing.assert_array_equal(a.packets[name], b.packets[name], err_msg=name)
    np.testing.assert_array_equal(a.blob, b.blob)
    c = loaded.sample(COUNTS, seed=8)
    assert not np.array_equal(a.packets["ts_ns"], c.packets["ts_ns"])
    with pytest.raises(CheckpointError):
        get_generator("markov").load(tmp_path / "missing")


def test_checkpoint_of_before_the_setting_rename_loads(fitted, tmp_path: Path) -> None:
    """``payload_prefix_bytes`` was ``payload_cap`` before issue 17: an old config.json still
    loads, with the same samples; the old name is refused for new training, naming the new one."""
    ckpt = tmp_path / "old"
    fitted.save(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["settings"]["payload_cap"] = config["settings"].pop("payload_prefix_bytes")
    (ckpt / "config.json").write_text(json.dumps(config))
    loaded = load_generator(ckpt)
    assert loaded.settings["payload_prefix_bytes"] == 512 and "payload_cap" not in loaded.settings
    np.testing.assert_array_equal(loaded.sample(COUNTS, seed=7).blob, fitted.sample(COUNTS, seed=7).blob)
    with pytest.raises(PytrafgenError, match=r"no setting payload_cap; accepted: .*payload_prefix_bytes"):
        MarkovGenerator.check_settings({"payload_cap": 64})


def test_unknown_class_is_a_user_error(fitted) -> None:
    with pytest.raises(PytrafgenError, match="unknown class"):
        fitted.sample({"no_such_class": 3})


def test_writes_pcap_that_reads_back(dataset, fitted, tmp_path: Path) -> None:
    records = fitted.sample(COUNTS, seed=5)
    plan = AddressPlan.load(dataset.path / "address_plan.json")
    summary = write_records(tmp_path / "gen.pcap", records, plan, seed=5)
    assert summary["skipped"] == {} and summary["packets"] == records.n_packets
    table = read_pcap(tmp_path / "gen.pcap")
    assert len(table) == records.n_packets and np.all(table.status == 0)
    # per class, the packets read back carry the class's transport and server port
    order = np.argsort(records.packets["ts_ns"], kind="stable")
    flow = records.packets["flow"][order]
    c2s = records.packets["direction"][order] == 0
    np.testing.assert_array_equal(table.proto, records.flows["proto"][flow])
    np.testing.assert_array_equal(table.dport[c2s], records.flows["server_port"][flow][c2s])


def test_cli_tokenize_train_generate_and_plugins_listing(tmp_path: Path) -> None:
    """The swap is one option: ``pytrafgen train --generator markov`` on a tokenized dataset,
    ``pytrafgen generate`` from its checkpoint; ``pytrafgen plugins`` lists all baselines."""
    from typer.testing import CliRunner

    from pytrafgen.cli.main import build_app

    app, runner = build_app(), CliRunner()
    caps = tmp_path / "caps"
    caps.mkdir()
    for name in ("mqtt_bruteforce.pcap", "benign_coap.pcap"):
        (caps / name).symlink_to(CAPTURES / name)
    ds, ckpt, out = tmp_path / "ds", tmp_path / "ckpt", tmp_path / "gen.pcap"
    for args in (["tokenize", str(caps), "--labels", str(CAPTURES / "manifest.csv"), "--out", str(ds), "-j", "1", "-q"],
                 ["train", str(ds), "--generator", "markov", "--out", str(ckpt), "-q"],
                 ["generate", str(ckpt), "--class", "mqtt_bruteforce:7", "--class", "benign_coap:4", "--out", str(out),
                  "--json", "-q"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output, result.exception)
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["flows"] == {"mqtt_bruteforce": 7, "benign_coap": 4}
    table = read_pcap(out)
    assert len(table) == sum(summary["packets"].values()) and set(np.unique(table.proto)) <= {6, 17, 1}
    assert json.loads((ckpt / "config.json").read_text())["generator"] == "markov"
    listing = json.loads(runner.invoke(app, ["plugins", "--json"]).output)
    registered = {g for p in listing["plugins"] for g in p["registered"].get("generator", [])}
    assert {"markov", "ar"} <= registered
