"""`pytrafgen detect` on the bundled corpus: train/run/eval round trip through the CLI,
streaming equals in-memory, detector files refuse unknown types and mismatched inputs, and bad
input is one line with exit code 2."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from capture_files import ng_block, ng_epb, ng_idb, ng_option, ng_shb
from typer.testing import CliRunner

import pytrafgen
from pytrafgen.cli.main import build_app
from pytrafgen.demo.default import corpus_dir
from pytrafgen.detect.data import FlowSettings, load_labeled
from pytrafgen.detect.model import HEADER_FILE, DetectorError, load_detector
from pytrafgen.detect.run import VERDICT_COLUMNS, run_detector
from pytrafgen.evaluate.evalset import read_manifest

CORPUS = corpus_dir()
MANIFEST = CORPUS / "manifest.csv"
CAPTURES = sorted(CORPUS.glob("*.pcap"))


def _cli(*args: str) -> object:
    return CliRunner().invoke(build_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("det") / "forest"
    result = _cli("detect", "train", *CAPTURES, "--labels", MANIFEST, "--model", "forest", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["validation"]["flows"] > 100 and body["training"]["real_flows_train"] > 500
    return out


def _flow_count(path: Path, settings: FlowSettings) -> int:
    return len(settings.assemble(pytrafgen.read_pcap(path)))


def test_train_run_eval_round_trip(forest: Path, tmp_path: Path) -> None:
    det = load_detector(forest)
    assert det.header.kind == "forest" and len(det.header.classes) == 13
    assert det.header.class_kinds["syn_flood"] == "malicious" and det.header.class_kinds["benign_http"] == "benign"

    verdicts = tmp_path / "v.csv"
    files = [CORPUS / "syn_flood.pcap", CORPUS / "benign_mqtt.pcap"]
    result = _cli("detect", "run", forest, *files, "--out", verdicts, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    with verdicts.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == VERDICT_COLUMNS
    expected = sum(_flow_count(f, det.header.settings) for f in files)
    assert len(rows) == summary["flows"] == expected
    syn = [r for r in rows if r["file"].endswith("syn_flood.pcap")]
    assert sum(r["predicted_class"] == "syn_flood" for r in syn) >= 0.9 * len(syn)
    assert all(r["verdict"] == det.header.class_kinds[r["predicted_class"]] for r in rows)
    assert sum(int(r["packets"]) for r in rows) == sum(len(pytrafgen.read_pcap(f)) for f in files)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)

    report = tmp_path / "report"
    result = _cli("detect", "eval", forest, *CAPTURES, "--labels", MANIFEST, "--out", report, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads((report / "report.json").read_text())
    metrics = next(iter(figures["detectors"].values()))
    assert metrics["flows"] == sum(_flow_count(f, det.header.settings) for f in CAPTURES)
    assert metrics["macro_f1"] > 0.9  # most of these flows were training flows
    assert np.asarray(metrics["confusion"]).sum() == metrics["flows"]
    assert "macro-F1" in (report / "report.md").read_text()
    pytest.importorskip("matplotlib")
    assert (report / "confusion_1.png").stat().st_size > 1000


def test_forest_probabilities_equal_scikit_learn(forest: Path) -> None:
    """The forest's own prediction path gives scikit-learn's probabilities bit for bit,
    across row-block boundaries and for a single row."""
    from pytrafgen.detect.model import PREDICT_BLOCK_ROWS

    det = load_detector(forest)
    rows = []
    for name in ("http_flood", "benign_coap", "nmap_syn_scan", "slowloris"):
        table = pytrafgen.read_pcap(CORPUS / f"{name}.pcap")
        rows.append(det.encode(table, det.header.settings.assemble(table)))
    x = np.concatenate(rows)
    x = np.concatenate([x] * (PREDICT_BLOCK_ROWS // len(x) + 2))  # more than one block
    assert len(x) > PREDICT_BLOCK_ROWS
    columns = np.asarray(det.model.classes_, np.int64)
    assert np.array_equal(det.predict_proba(x)[:, columns], det.model.predict_proba(x))
    assert np.array_equal(det.predict_proba(x[:1])[:, columns], det.model.predict_proba(x[:1]))
    assert det.predict_proba(x[:0]).shape == (0, len(det.header.classes))
    missing = x[:3].copy()
    missing[1, 0] = np.nan  # left to scikit-learn, which routes missing values itself
    assert np.array_equal(det.predict_proba(missing)[:, columns], det.model.predict_proba(missing))


def test_selected_flows_encode_as_in_the_whole_table(forest: Path) -> None:
    det = load_detector(forest)
    table = pytrafgen.read_pcap(CORPUS / "benign_mqtt.pcap")
    flows = det.header.settings.assemble(table)
    whole = det.encode(table, flows)
    for select in (np.arange(len(flows))[::3], np.array([len(flows) - 1, 0]), np.zeros(0, np.int64)):
        assert np.array_equal(det.encode_selected(table, flows, select), whole[select])


def test_streamed_host_context_equals_the_whole_capture(tmp_path: Path) -> None:
    """Several clients' flows interleaved in time: the host context a streamed run keeps in its
    sliding window, chunk by chunk, is the whole capture's (the window after a flow included:
    each flow is released once its context is final)."""
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap, wrpcap

    from pytrafgen.detect.context import whole_capture_context
    from pytrafgen.detect.run import iter_finished_flows

    # the lab has one client address per class: give the flood its own so the window holds
    # several clients (IP and L4 checksums recomputed by scapy)
    flood = rdpcap(str(CORPUS / "http_flood.pcap"))
    for packet in flood:
        if IP in packet:
            for field in ("src", "dst"):
                if getattr(packet[IP], field) == "10.99.0.2":
                    setattr(packet[IP], field, "10.99.0.3")
            del packet[IP].chksum
            if packet[IP].payload.haslayer("TCP"):
                del packet[IP].payload.chksum
    wrpcap(str(tmp_path / "flood.pcap"), flood)
    parts = [pytrafgen.read_pcap(CORPUS / f"{n}.pcap") for n in ("nmap_version_scan", "benign_http")]
    parts.append(pytrafgen.read_pcap(tmp_path / "flood.pcap"))
    step = 0
    for part in parts:  # bring the captures into one time span so their flows interleave
        part.ts_ns[:] = part.ts_ns - part.ts_ns.min() + step
        step += 7_000_000
    # and a SYN flood 45 s later: the first flows' windows close while it is read
    again = pytrafgen.read_pcap(CORPUS / "syn_flood.pcap")
    again.ts_ns[:] = again.ts_ns - again.ts_ns.min() + 45_000_000_000
    parts.append(again)
    table = pytrafgen.PacketTable.concat(parts)
    path = tmp_path / "mixed.pcap"
    pytrafgen.write_pcap(path, table.take(np.argsort(table.ts_ns, kind="stable")))
    settings = FlowSettings(max_flow_packets=10)
    table = pytrafgen.read_pcap(path)
    flows = settings.assemble(table)
    whole = whole_capture_context(table, flows)
    assert whole[:, 0].max() > 4 and len(np.unique(np.asarray(flows.client_addr), axis=0)) > 1
    expected = {int(flows.first_packet[f]): whole[f].tolist() for f in range(len(flows))}
    for chunk in (23, 500):
        streamed = {}
        released = []
        for first_row, context, columns in iter_finished_flows(path, settings, lambda b, d: {"first": b.first_row[d]},
                                                               chunk_packets=chunk):
            assert np.array_equal(columns["first"], first_row)
            streamed.update(zip(first_row.tolist(), context.tolist(), strict=True))
            released.append(first_row)
        assert streamed == expected, chunk
        assert sum(len(r) for r in released) == len(expected)
        assert len(released) > 1, (chunk, [len(r) for r in released])  # released while still reading


def test_distinct_rows_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytrafgen.detect import model

    rng = np.random.default_rng(0)
    base = rng.normal(size=(7, 5)).astype(np.float32)
    x = base[rng.integers(0, 7, size=200)]
    x[3, 2] = np.nan
    rows, inverse = model.distinct_rows(x)
    assert len(rows) == 8 and np.array_equal(x[rows][inverse].view(np.uint32), x.view(np.uint32))
    # every hash colliding: unequal rows still stand for themselves
    monkeypatch.setattr(model, "_ROW_HASH_WEIGHTS", np.zeros(512, np.uint64))
    rows, inverse = model.distinct_rows(x)
    assert np.array_equal(x[rows][inverse].view(np.uint32), x.view(np.uint32))


def test_streaming_equals_in_memory(forest: Path) -> None:
    det = load_detector(forest)
    for name in ("benign_mqtt", "http_flood", "benign_coap"):
        path = CORPUS / f"{name}.pcap"
        table = pytrafgen.read_pcap(path)
        flows = det.header.settings.assemble(table)
        proba = det.predict_proba(det.encode(table, flows))
        whole = {int(flows.first_packet[f]): (int(flows.packets[f]), int(proba[f].argmax()), float(proba[f].max()))
                 for f in range(len(flows))}
        from pytrafgen.detect.run import iter_verdicts

        streamed = {}
        for v in iter_verdicts(det, path, chunk_packets=37):
            for i in range(len(v)):
                streamed[int(v.first_row[i])] = (int(v.packets[i]), int(v.predicted[i]), float(v.probability[i]))
        assert streamed.keys() == whole.keys(), name
        for k, (packets, cls, p) in whole.items():
            assert streamed[k][:2] == (packets, cls) and abs(streamed[k][2] - p) < 1e-9, (name, k)


def test_generated_flows_take_their_companion_labels(tmp_path: Path) -> None:
    gen = tmp_path / "gen.pcap"
    shutil.copy(CORPUS / "benign_mqtt.pcap", gen)
    whole = pytrafgen.assemble_flows(pytrafgen.read_pcap(gen))
    with Path(str(gen) + ".flows.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["flow_index", "class"])
        for f in range(len(whole)):
            w.writerow([f, "benign_mqtt" if f % 2 == 0 else "mqtt_publish_flood"])
    settings = FlowSettings(max_flow_packets=10)
    flows = load_labeled([gen], None, settings, generated=True)
    cap = flows.captures[0]
    assert len(cap.flows) > len(whole)  # long flows were cut into segments
    # each segment carries the class of the whole flow its first packet belongs to
    for seg, cls in enumerate(cap.classes):
        owner = int(whole.flow_id[int(cap.flows.first_packet[seg])])
        assert cls == ("benign_mqtt" if owner % 2 == 0 else "mqtt_publish_flood")


def test_train_with_generated_flows(tmp_path: Path) -> None:
    gen = tmp_path / "gen.pcap"
    shutil.copy(CORPUS / "udp_flood.pcap", gen)
    n = len(pytrafgen.assemble_flows(pytrafgen.read_pcap(gen)))
    Path(str(gen) + ".flows.csv").write_text("flow_index,class\n" + "".join(f"{f},udp_flood\n" for f in range(n)))
    out = tmp_path / "det"
    files = [CORPUS / "udp_flood.pcap", CORPUS / "benign_coap.pcap", CORPUS / "syn_flood.pcap"]
    result = _cli("detect", "train", *files, "--labels", MANIFEST, "--generated", gen, "--model", "boosting",
                  "--out", out, "--json")
    assert result.exit_code == 0, result.output
    header = json.loads((out / HEADER_FILE).read_text())
    assert header["training"]["generated_flows"] == n and header["kind"] == "boosting"
    assert load_detector(out).header.classes == ["udp_flood", "benign_coap", "syn_flood"]


def test_generated_pcapng_flows_take_their_packet_comments(tmp_path: Path) -> None:
    from test_flow_labels import interleaved_records, rate_plan

    from pytrafgen.build import write_records

    gen = tmp_path / "gen.pcapng"
    summary = write_records(gen, interleaved_records(), rate_plan(), seed=3, file_format="pcapng")
    settings = FlowSettings(max_flow_packets=2)  # every 3-packet flow is cut into two segments
    from_csv = load_labeled([gen], None, settings, generated=True).captures[0].classes
    Path(summary["flow_labels"]).unlink()
    from_comments = load_labeled([gen], None, settings, generated=True).captures[0].classes
    assert len(from_comments) == 180 and from_comments == from_csv
    assert set(from_comments) == {"alpha", "beta", "gamma"}


def _pcapng_with_comments(src: Path, out: Path, comment: str | None) -> None:
    """``src``'s frames as a pcapng, each packet with ``comment`` (None: no options)."""
    table = pytrafgen.read_pcap(src)
    options = b"" if comment is None else ng_option("<", 1, comment.encode()) + ng_option("<", 0, b"")
    blocks = [ng_shb("<"), ng_idb("<", 1, tsresol=9)]
    for i in range(len(table)):
        frame = table.data[int(table.frame_off[i]) : int(table.frame_off[i]) + int(table.caplen[i])].tobytes()
        ts = int(table.ts_ns[i])
        head = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
        blocks.append(ng_block("<", 6, head + frame + bytes(-len(frame) % 4) + options))
    out.write_bytes(b"".join(blocks))


def test_train_with_generated_pcapng_labeled_by_comments(tmp_path: Path, fails: object) -> None:
    gen = tmp_path / "gen.pcapng"
    _pcapng_with_comments(CORPUS / "udp_flood.pcap", gen, "class=udp_flood flow=0")
    n = _flow_count(gen, FlowSettings())
    out = tmp_path / "det"
    files = [CORPUS / "udp_flood.pcap", CORPUS / "benign_coap.pcap", CORPUS / "syn_flood.pcap"]
    result = _cli("detect", "train", *files, "--labels", MANIFEST, "--generated", gen, "--model", "forest",
                  "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((out / HEADER_FILE).read_text())["training"]["generated_flows"] == n

    bare = tmp_path / "bare.pcapng"
    _pcapng_with_comments(CORPUS / "udp_flood.pcap", bare, None)
    fails(["detect", "train", *files, "--labels", MANIFEST, "--generated", bare, "--model", "forest",
           "--out", tmp_path / "det2"], "no flow labels", "class=NAME")


@pytest.mark.slow
def test_transformer_detector_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "tr"
    files = [CORPUS / "syn_flood.pcap", CORPUS / "benign_coap.pcap", CORPUS / "http_bruteforce.pcap"]
    result = _cli("detect", "train", *files, "--labels", MANIFEST, "--model", "transformer", "--steps", "30",
                  "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["validation"]["macro_f1"] > 0.8
    det = load_detector(out)
    real = load_labeled(files, read_manifest(MANIFEST), det.header.settings)
    cap = real.captures[0]
    p1 = det.predict_proba(det.encode(cap.packets, cap.flows))
    p2 = load_detector(out).predict_proba(det.encode(cap.packets, cap.flows))
    assert np.allclose(p1, p2)
    summary = run_detector(det, [files[0]], None, chunk_packets=50)
    assert int(summary.flows.sum()) == len(cap.flows)


def _transformer_stub(tmp_path: Path) -> Path:
    """A transformer detector trained for 2 steps on two small classes (file checks only)."""
    out = tmp_path / "tr"
    files = [CORPUS / "nmap_version_scan.pcap", CORPUS / "benign_mqtt.pcap"]
    result = _cli("detect", "train", *files, "--labels", MANIFEST, "--model", "transformer", "--steps", "2",
                  "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_transformer_file_checks(tmp_path: Path) -> None:
    out = _transformer_stub(tmp_path)
    assert load_detector(out).header.kind == "transformer"
    vocab = json.loads((out / "vocab.json").read_text())
    vocab["hash"] = "0000000000000000"
    (out / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DetectorError, match="not the vocabulary"):
        load_detector(out)
    out = _transformer_stub(tmp_path / "b")
    header = json.loads((out / HEADER_FILE).read_text())
    header["classes"].append("extra_class")
    (out / HEADER_FILE).write_text(json.dumps(header))
    with pytest.raises(DetectorError, match="tensors disagree"):
        load_detector(out)


# --- detector files: refusals ----------------------------------------------------------------


def _copy(det: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(det, out)
    return out


class Untrusted:
    """A type no detector file may contain."""

    def __init__(self) -> None:
        self.payload = "anything"


def test_loading_refuses_unknown_types(forest: Path, tmp_path: Path) -> None:
    import skops.io

    out = _copy(forest, tmp_path)
    skops.io.dump({"model": Untrusted()}, out / "model.skops")
    with pytest.raises(DetectorError, match="refusing to load types"):
        load_detector(out)
    # a boosting model under a forest header names a type a forest never holds
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.random.default_rng(0).random((40, 3))
    skops.io.dump(HistGradientBoostingClassifier(max_iter=2).fit(x, np.arange(40) % 2), out / "model.skops")
    with pytest.raises(DetectorError, match="refusing to load types"):
        load_detector(out)


def test_loading_refuses_mismatches(forest: Path, tmp_path: Path) -> None:
    out = _copy(forest, tmp_path)
    header = json.loads((out / HEADER_FILE).read_text())
    (out / HEADER_FILE).write_text(json.dumps({**header, "features": header["features"][:-1]}))
    with pytest.raises(DetectorError, match="other flow features"):
        load_detector(out)
    (out / HEADER_FILE).write_text(json.dumps({**header, "classes": header["classes"][:3]}))
    with pytest.raises(DetectorError, match="disagree"):
        load_detector(out)
    (out / HEADER_FILE).write_text(json.dumps({**header, "kind": "svm"}))
    with pytest.raises(DetectorError, match="unknown detector kind"):
        load_detector(out)
    (out / HEADER_FILE).write_text(json.dumps({**header, "format": 99}))
    with pytest.raises(DetectorError, match="not a pytrafgen detector"):
        load_detector(out)
    (out / HEADER_FILE).write_text(json.dumps(header))
    (out / "model.skops").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DetectorError, match="not a readable skops file"):
        load_detector(out)


@pytest.fixture
def fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> object:
    """Run the CLI entry point (which turns user mistakes into one line, exit 2) and check that
    it failed that way, with ``needles`` in the line."""
    from pytrafgen.cli.main import run

    monkeypatch.setenv("COLUMNS", "1000")

    def check(args: list[object], *needles: str) -> None:
        monkeypatch.setattr(sys, "argv", ["pytrafgen", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            run()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])

    return check


def test_bad_input_is_one_line_exit_2(forest: Path, tmp_path: Path, fails: object) -> None:
    # not a detector / corrupt detector
    fails(["detect", "run", tmp_path, CAPTURES[0], "--out", tmp_path / "v.csv"], "not a detector")
    broken = _copy(forest, tmp_path)
    (broken / HEADER_FILE).write_text("{ not json")
    fails(["detect", "run", broken, CAPTURES[0], "--out", tmp_path / "v.csv"], "unreadable")
    # a capture with no IP traffic (ARP only)
    arp = bytes.fromhex("ffffffffffff02000000000108060001080006040001020000000001c0a80001000000000000c0a80002")
    no_ip = tmp_path / "arp.pcap"
    pytrafgen.write_pcap(no_ip, [arp] * 3)
    fails(["detect", "run", forest, no_ip, "--out", tmp_path / "v.csv"], "no IP traffic")
    assert not (tmp_path / "v.csv").exists()
    fails(["detect", "train", no_ip, CAPTURES[0], "--labels", MANIFEST, "--out", tmp_path / "d"], "no IP traffic")
    # classes missing from the labels: a capture the manifest does not list, and eval labels
    # that name a class the detector does not know
    stray = tmp_path / "stray.pcap"
    shutil.copy(CAPTURES[0], stray)
    fails(["detect", "train", stray, "--labels", MANIFEST, "--out", tmp_path / "d"], "not listed")
    other = tmp_path / "other.csv"
    other.write_text(f"file,class,label\n{CAPTURES[0].name},unseen_attack,malicious\n")
    fails(["detect", "eval", forest, CAPTURES[0], "--labels", other, "--out", tmp_path / "r"], "unseen_attack")
    fails(["detect", "train", *CAPTURES[:2], "--labels", MANIFEST, "--model", "svm", "--out",
                         tmp_path / "d"], "unknown --model")
    # a directory that is not ours is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    fails(["detect", "train", *CAPTURES[:2], "--labels", MANIFEST, "--out", mine], "refusing")
    assert (mine / "notes.txt").read_text() == "keep"


def test_pcapng_gives_the_same_verdicts(forest: Path, tmp_path: Path) -> None:
    source = CORPUS / "benign_mqtt.pcap"
    table = pytrafgen.read_pcap(source)
    blocks = [ng_shb("<"), ng_idb("<", 1, tsresol=9)]
    blocks += [ng_epb("<", 0, int(table.ts_ns[i]), table.frame(i), int(table.wirelen[i])) for i in range(len(table))]
    ng = tmp_path / "benign_mqtt.pcapng"
    ng.write_bytes(b"".join(blocks))
    det = load_detector(forest)
    rows = {}
    for path in (source, ng):
        out = tmp_path / f"{path.suffix[1:]}.csv"
        with out.open("w", newline="") as fh:
            run_detector(det, [path], fh, chunk_packets=100)
        with out.open() as fh:
            rows[path.suffix] = [{k: v for k, v in r.items() if k != "file"} for r in csv.DictReader(fh)]
    assert rows[".pcap"] == rows[".pcapng"] and len(rows[".pcap"]) > 5


def test_companion_rows_in_another_order_match_by_ports(tmp_path: Path) -> None:
    """A labels CSV whose flow_index numbering disagrees with the pcap's own flow order (its
    proto/ports say so) is matched by (proto, client port, server port) instead."""
    gen = tmp_path / "gen.pcap"
    shutil.copy(CORPUS / "http_bruteforce.pcap", gen)
    whole = pytrafgen.assemble_flows(pytrafgen.read_pcap(gen))
    classes = ["http_bruteforce" if f % 3 else "benign_http" for f in range(len(whole))]
    with Path(str(gen) + ".flows.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["flow_index", "class", "proto", "client_port", "server_port"])
        for new_index, f in enumerate(reversed(range(len(whole)))):  # numbered in reverse order
            w.writerow([new_index, classes[f], int(whole.proto[f]), int(whole.client_port[f]),
                        int(whole.server_port[f])])
    flows = load_labeled([gen], None, FlowSettings(max_flow_packets=0), generated=True)
    assert flows.captures[0].classes == classes


def test_eval_puts_two_detectors_side_by_side(forest: Path, tmp_path: Path) -> None:
    second = _copy(forest, tmp_path)
    files = [CORPUS / "syn_flood.pcap", CORPUS / "udp_flood.pcap", CORPUS / "benign_coap.pcap"]
    report = tmp_path / "report"
    result = _cli("detect", "eval", forest, second, *files, "--labels", MANIFEST, "--out", report, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads((report / "report.json").read_text())
    first, other = figures["detectors"].values()
    assert len(figures["detectors"]) == 2 and first["macro_f1"] == other["macro_f1"]
    assert set(next(iter(figures["detectors"].values()))["per_class"]) == set(load_detector(forest).header.classes)
    assert "second minus the first: +0.0000" in (report / "report.md").read_text()
