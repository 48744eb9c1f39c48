"""Labels that cannot drift: the labels CSV names the flows in the order a reader finds them in
the written capture (whatever order the records were in and however the builder placed flows
in time), pcapng packets carry their class and flow as comments (checked with tshark), and a
generator that replays training flows scores class fidelity 1.0 through ``evaluate`` and
``compare`` alike."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_endpoints import corpus_files

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import write_records
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.hookspecs import hookimpl
from pytrafgen.interfaces import Generator
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords
from pytrafgen.testing import registry_with

CLASSES = ["alpha", "beta", "gamma"]
PORT_OF = {"alpha": 81, "beta": 82, "gamma": 83}  # each class served on its own port


def interleaved_records(n_per_class: int = 30) -> FieldRecords:
    """Flows of three classes in record order alpha, beta, gamma, alpha, ...; each flow a SYN,
    SYN-ACK and ACK whose record times all start at 0 (so the builder re-times them)."""
    n = 3 * n_per_class
    labels = np.arange(n) % 3
    packets = {k: np.zeros(3 * n, d) for k, d in PACKET_COLUMNS.items()}
    packets["flow"] = np.repeat(np.arange(n, dtype=np.int32), 3)
    packets["direction"] = np.tile(np.array([0, 1, 0], np.uint8), n)
    packets["ts_ns"] = np.tile(np.array([0, 1000, 2000], np.int64), n)
    packets["ttl"][:] = 64
    packets["tcp_flags"] = np.tile(np.array([0x02, 0x12, 0x10], np.uint16), n)
    packets["seq"] = np.tile(np.array([0, 0, 1], np.uint32), n)
    packets["ack"] = np.tile(np.array([0, 1, 1], np.uint32), n)
    packets["window"][:] = 1024
    flows = {k: np.zeros(n, d) for k, d in FLOW_COLUMNS.items()}
    flows["label"] = labels.astype(np.int16)
    flows["ip_version"][:] = 4
    flows["proto"][:] = 6
    flows["client_port"] = (40000 + np.arange(n)).astype(np.uint16)
    flows["server_port"] = np.array([PORT_OF[CLASSES[k]] for k in labels], np.uint16)
    return FieldRecords(packets, flows, np.zeros(0, np.uint8), list(CLASSES))


def rate_plan() -> AddressPlan:
    plan = AddressPlan.from_cidrs(["10.1.0.0/16"], ["10.2.0.0/24"])
    for k, name in enumerate(CLASSES):
        entry = AddressPlan.from_cidrs(["10.1.0.0/16"], ["10.2.0.0/24"]).classes["*"]
        entry.flow_interval_s = 0.01 * (k + 1)  # arrival order differs from record order
        plan.classes[name] = entry
    return plan


def read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("file_format", ["pcap", "pcapng"])
def test_labels_follow_the_capture_order(tmp_path: Path, file_format: str) -> None:
    out = tmp_path / f"gen.{file_format}"
    summary = write_records(out, interleaved_records(), rate_plan(), seed=3, file_format=file_format)
    rows = read_labels(Path(summary["flow_labels"]))
    flows = assemble_flows(read_pcap(out))
    assert len(rows) == len(flows.proto) == 90
    assert [int(r["flow_index"]) for r in rows] == list(range(90))
    # independent truth: a flow's class is the one served on its server port
    assert [PORT_OF[r["class"]] for r in rows] == flows.server_port.tolist()
    assert [r["class"] for r in rows] == summary["flow_classes"]
    assert [r["class"] for r in rows] != [CLASSES[k % 3] for k in range(90)]  # arrival order is not record order


def test_write_records_can_leave_labels_out(tmp_path: Path) -> None:
    summary = write_records(tmp_path / "x.pcap", interleaved_records(2), rate_plan(), labels=False)
    assert summary["flow_labels"] is None and not (tmp_path / "x.pcap.flows.csv").exists()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)")
def test_pcapng_packet_comments_show_in_tshark(tmp_path: Path) -> None:
    out = tmp_path / "gen.pcapng"
    summary = write_records(out, interleaved_records(), rate_plan(), seed=3, file_format="pcapng")
    rows = read_labels(Path(summary["flow_labels"]))
    fields = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.comment", "-e", "tcp.srcport",
                             "-e", "tcp.dstport"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(fields) == 270
    flows = assemble_flows(read_pcap(out))
    for j, line in enumerate(fields):
        comment, sport, dport = line.split("\t")
        cls, flow = comment.split(" ")
        f = int(flow.removeprefix("flow="))
        assert f == int(flows.flow_id[j])
        assert cls == f"class={rows[f]['class']}"
        assert PORT_OF[rows[f]["class"]] in (int(sport), int(dport))


# -- a generator that replays its training flows --------------------------------------------
class ReplayGenerator(Generator):
    """Samples each class's training flows in turn: a perfect model of its training split."""

    name = "replay-training"

    def __init__(self) -> None:
        self.train: FieldRecords | None = None
        self.dataset_path: Path | None = None

    def fit(self, dataset: Any, settings: Mapping[str, Any] | None = None) -> None:
        self.train = dataset.records("train")
        self.dataset_path = Path(dataset.path)

    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        assert self.train is not None
        labels = self.train.flows["label"]
        chosen = []
        for name, n in counts.items():
            mine = np.flatnonzero(labels == self.train.classes.index(name))
            chosen.append(mine[np.arange(n) % len(mine)])
        return self.train.take_flows(np.concatenate(chosen))

    def save(self, path: Path) -> None:
        import json

        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"generator": self.name, "dataset": str(self.dataset_path)}))

    @classmethod
    def load(cls, path: Path) -> ReplayGenerator:
        import json

        from pytrafgen.dataset import TrafficDataset

        gen = cls()
        gen.fit(TrafficDataset(Path(json.loads((path / "config.json").read_text())["dataset"])))
        return gen


class ReplayPlugin:
    @staticmethod
    @hookimpl
    def register_generators(register: Callable[[Any], None]) -> None:
        register(ReplayGenerator)


REPLAY_CLASSES = ["benign_http", "mqtt_bruteforce", "syn_flood", "udp_flood"]


def test_a_replaying_generator_scores_class_fidelity_one_in_evaluate_and_compare(tmp_path: Path) -> None:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.evaluate.compare import run_comparison
    from pytrafgen.evaluate.evalset import load_evalset
    from pytrafgen.evaluate.run import prepare_real, run_validators
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    src = tmp_path / "captures"
    src.mkdir()
    rows = [(c, p) for c, p in corpus_files() if c in REPLAY_CLASSES]
    with (src / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", "label"])
        for c, p in rows:
            shutil.copy(p, src / p.name)
            w.writerow([p.name, c, "benign" if c.startswith("benign") else "malicious"])
    ds_dir = tmp_path / "ds"
    tokenize_captures([src], src / "manifest.csv", ds_dir, max_flow_packets=16, payload_cap=16)
    with registry_with(ReplayPlugin, entry_points=True):
        cmp = run_comparison(ds_dir, ["replay-training"], tmp_path / "cmp", validators=["class_fidelity"],
                             tshark=False, plots=False, quiet=True)
        compare_f1 = cmp["generated"]["replay-training"]["metrics"]["class_fidelity"]["macro_f1"]
        # evaluate: the compared pcap and its labels CSV, against the training flows as written
        ds = TrafficDataset(ds_dir)
        write_records(tmp_path / "train.pcap", ds.records("train"), ds.address_plan, seed=0)
        real, _ = prepare_real([tmp_path / "train.pcap"], None, [tmp_path / "train.pcap"], seed=0)
        generated = load_evalset([tmp_path / "cmp" / "replay-training.pcap"], "replay")
        reg = get_registry()
        results = run_validators(real, {"replay": generated}, {"seed": 0, "tshark": False}, ["class_fidelity"],
                                 validators=reg.validators, protocols=reg.protocols)
        evaluate_f1 = results["generated"]["replay"]["metrics"]["class_fidelity"]["macro_f1"]
    assert compare_f1 == 1.0
    assert evaluate_f1 == 1.0
