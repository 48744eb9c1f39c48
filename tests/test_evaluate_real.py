"""The evaluation suite on real captures: held-out real flows evaluated as if generated score
near-perfect compliance and high coverage; a corrupted copy (shuffled header fields, broken
handshakes, shuffled timing) scores clearly worse. Plus the ``evaluate`` command end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CAPTURES

from pytrafgen.build import build_frames
from pytrafgen.evaluate.compliance import run_rules
from pytrafgen.evaluate.diversity import diversity
from pytrafgen.evaluate.evalset import (
    EvalSet,
    evalset_from_tables,
    load_evalset,
    read_manifest,
    stratified_split,
)
from pytrafgen.evaluate.fidelity import fidelity
from pytrafgen.flow_labels import label_built_flows
from pytrafgen.protocols.l3l4 import L3L4_PROTOCOLS
from pytrafgen.records_from_packets import records_and_origin

FILES = ("benign_mqtt.pcap", "mqtt_bruteforce.pcap", "http_bruteforce.pcap", "slowloris.pcap",
         "nmap_version_scan.pcap")
BUILTIN = {spec.name: spec for spec in L3L4_PROTOCOLS}


@pytest.fixture(scope="module")
def splits() -> tuple[EvalSet, EvalSet]:
    """(real test split with its train split attached, held-out real flows as 'generated')."""
    manifest = read_manifest(CAPTURES / "manifest.csv")
    real = load_evalset([CAPTURES / f for f in FILES], "real", manifest)
    rest_idx, test_idx = stratified_split(real.labels, 0.3, seed=0)
    test, rest = real.take_flows(test_idx, "test"), real.take_flows(rest_idx, "rest")
    train_idx, held_idx = stratified_split(rest.labels, 0.5, seed=1)
    test.train = rest.take_flows(train_idx, "train")
    return test, rest.take_flows(held_idx, "held-out")


def corrupt(es: EvalSet, seed: int = 0) -> EvalSet:
    """Per class: TCP flags, TTLs and windows shuffled across packets, every SYN-ACK turned
    into a bare ACK (broken handshakes), timestamps shuffled. Built back through the builder,
    so lengths and checksums are repaired and only the semantics are wrong."""
    rng = np.random.default_rng(seed)
    flows = SimpleNamespace(**es.flows.columns, flow_id=es.flow_id, direction=es.direction)
    records, origin = records_and_origin(es.packets, flows, es.labels, es.classes)
    p = records.packets
    cls = records.flows["label"][p["flow"]]
    for c in np.unique(cls):
        mine = np.flatnonzero(cls == c)
        tcp = mine[records.flows["proto"][p["flow"][mine]] == 6]
        for name in ("tcp_flags", "window"):
            p[name][tcp] = rng.permutation(p[name][tcp])
        p["ttl"][mine] = rng.permutation(p["ttl"][mine])
        p["ts_ns"][mine] = rng.permutation(p["ts_ns"][mine])
    synack = (p["tcp_flags"] & 0x12) == 0x12
    p["tcp_flags"][synack] = 0x10
    built = build_frames(records, isn=origin.isn, addresses=origin, order=np.argsort(p["ts_ns"], kind="stable"))
    table = built.to_table()
    classes = label_built_flows(built, records).classes
    return evalset_from_tables([(table, classes)], f"{es.name}-corrupted")


@pytest.fixture(scope="module")
def corrupted(splits: tuple[EvalSet, EvalSet]) -> EvalSet:
    return corrupt(splits[1]).relabel(splits[0].classes)


def test_held_out_real_flows_are_near_perfectly_compliant(splits: tuple[EvalSet, EvalSet]) -> None:
    r = run_rules(splits[1], protocols=BUILTIN)
    assert r["packet_pass_rate"] >= 0.999
    assert r["flow_pass_rate"] >= 0.99


def test_corrupted_copy_is_clearly_less_compliant(splits: tuple[EvalSet, EvalSet], corrupted: EvalSet) -> None:
    clean = run_rules(splits[1], protocols=BUILTIN)
    bad = run_rules(corrupted, protocols=BUILTIN)
    assert bad["packet_pass_rate"] < clean["packet_pass_rate"] - 0.1
    assert bad["flow_pass_rate"] < 0.5
    # what breaks is the semantics (checksums were recomputed)
    assert bad["per_rule"]["TCP-009"]["violating"] == 0
    assert bad["per_rule"]["TCP-013"]["violating"] > 0  # handshakes without SYN-ACK
    assert bad["per_rule"]["TCP-018"]["violating"] > 0  # shuffled flags: data after FIN


def test_held_out_real_flows_cover_the_test_split(splits: tuple[EvalSet, EvalSet], corrupted: EvalSet) -> None:
    test, held = splits
    clean = diversity(test, held)
    bad = diversity(test, corrupted)
    assert clean["coverage_mean"] >= 0.6
    assert bad["coverage_mean"] < clean["coverage_mean"] - 0.2


def test_fidelity_is_worse_for_the_corrupted_copy(splits: tuple[EvalSet, EvalSet], corrupted: EvalSet) -> None:
    test, held = splits
    clean, bad = fidelity(test, held), fidelity(test, corrupted)
    # classes with ~100+ flows a side (nmap_version_scan's 5 test flows give a tiny real range)
    for name in ("mqtt_bruteforce", "http_bruteforce", "slowloris"):
        assert clean["per_class"][name]["emd_mean"] < 0.05
    assert bad["jsd_mean"] > clean["jsd_mean"]
    assert bad["per_class"]["slowloris"]["emd"]["log_iat_us"] > clean["per_class"]["slowloris"]["emd"]["log_iat_us"]


def test_evaluate_command_writes_report(tmp_path) -> None:
    from typer.testing import CliRunner

    from pytrafgen.cli.main import app, build_app

    build_app()
    args = ["evaluate", "--labels", str(CAPTURES / "manifest.csv"), "--out", str(tmp_path / "rep"), "--json",
            "-q", "--no-plots", "-V", "compliance", "-V", "fidelity", "-V", "diversity", "-V", "class_fidelity"]
    for f in ("benign_mqtt.pcap", "mqtt_bruteforce.pcap", "nmap_version_scan.pcap"):
        args += ["--real", str(CAPTURES / f)]
    args += ["--generated", str(CAPTURES / "mqtt_bruteforce.pcap")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])["summary"]["mqtt_bruteforce"]
    assert summary["compliance_packets_final"] >= 0.999
    assert summary["class_fidelity_f1"] >= 0.9
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["generated"]["mqtt_bruteforce"]["metrics"]["diversity"]["settings"]["k"] == 5
    assert (tmp_path / "rep" / "report.md").read_text().count("mqtt_bruteforce") >= 2


def test_without_matplotlib_the_report_says_so_and_keeps_every_figure(tmp_path, monkeypatch) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from pytrafgen.cli.main import app, build_app
    from pytrafgen.evaluate import report as report_module

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(report_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    build_app()
    args = ["evaluate", "--labels", str(CAPTURES / "manifest.csv"), "--out", str(tmp_path / "rep"), "--json",
            "-q", "-V", "compliance", "--real", str(CAPTURES / "mqtt_bruteforce.pcap"),
            "--generated", str(CAPTURES / "mqtt_bruteforce.pcap")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "matplotlib is not installed" in report["plots_not_drawn"]
    assert report["summary"]["mqtt_bruteforce"]["compliance_packets_final"] >= 0.999
    assert "matplotlib is not installed" in (tmp_path / "rep" / "report.md").read_text()
    assert not list((tmp_path / "rep").glob("*.png"))


def test_iat_cdf_plot(splits: tuple[EvalSet, EvalSet], tmp_path) -> None:
    from pytrafgen.evaluate.report import plot_iat_cdfs

    test, held = splits
    plot_iat_cdfs(test, {"held-out": held}, [test.classes.index("slowloris")], tmp_path / "iat.png")
    assert (tmp_path / "iat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_fidelity_of_real_and_corrupted(splits: tuple[EvalSet, EvalSet], corrupted: EvalSet) -> None:
    from pytrafgen.evaluate.class_fidelity import class_fidelity

    test, held = splits
    clean = class_fidelity(test, held)
    assert clean["macro_f1"] >= 0.9
    assert clean["confusion"]["rows"] == "requested class"
    assert class_fidelity(test, corrupted)["macro_f1"] < clean["macro_f1"]


@pytest.mark.slow
def test_utility_with_real_held_out_flows_as_generated(splits: tuple[EvalSet, EvalSet]) -> None:
    from pytrafgen.evaluate.utility import utility

    test, held = splits
    r = utility(test, held)
    assert set(r["macro_f1"]) == {"random_forest", "gradient_boosting", "mlp", "knn", "logistic_regression"}
    assert r["macro_f1"]["random_forest"]["generated"] >= 0.8  # real flows train as well as real flows
    assert r["settings"]["train_flows"]["scarce"] < r["settings"]["train_flows"]["real"]


def test_compare_command_trains_generates_and_reports(tmp_path) -> None:
    from typer.testing import CliRunner

    from pytrafgen.cli.main import app, build_app

    build_app()
    runner = CliRunner()
    dataset = tmp_path / "ds"
    args = ["tokenize", *(str(CAPTURES / f) for f in ("benign_mqtt.pcap", "mqtt_bruteforce.pcap")),
            "--labels", str(CAPTURES / "manifest.csv"), "--out", str(dataset), "-j", "1", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    out = tmp_path / "cmp"
    args = ["compare", str(dataset), "-g", "markov", "-g", "no-such-generator", "--out", str(out),
            "--max-per-class", "20", "-V", "compliance", "-V", "fidelity", "--no-tshark", "--no-plots", "-q", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert "skipped" in doc["generators"]["no-such-generator"]
    assert doc["summary"]["markov"]["compliance_packets_final"] > 0.5
    report = json.loads((out / "report.json").read_text())
    counts = report["generated"]["markov"]["class_counts"]
    assert counts == report["real"]["class_counts"]  # the test split's size per class
    labels = (out / "markov.pcap.flows.csv").read_text().splitlines()
    assert labels[0] == "flow_index,class,proto,client_port,server_port,record_flow"
    comp = report["generated"]["markov"]["metrics"]["compliance"]
    assert comp["raw"]["packet_pass_rate"] is not None  # as sampled, before repair
    assert isinstance(comp["repairs"], dict) and all(v > 0 for v in comp["repairs"].values())
    assert "As sampled, before repair (raw)" in (out / "report.md").read_text()
