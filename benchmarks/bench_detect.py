"""Detector benchmark (issue 16): how well `pytrafgen detect` models classify flows, across
recordings and with scarce real data, and how fast `detect run` is.

(a) within the shared lab captures (training = ../shared/data/captures): a flow-level,
    stratified 80/20 split; macro-F1 of each detector kind on the held-out flows (forest and
    transformer over --within-seeds split seeds; --jobs N trains up to N split seeds at once,
    each in its own one-thread process).
(b) across recordings: the same detectors on an independent lab recording (capture.sh,
    SEED=3; --cross): macro-F1 and the per-class F1 that drops.
(c) scarce real data: each detector trained on 10 % of the real training flows, alone and
    with markov-generated flows (`pytrafgen tokenize` → `train --generator markov` →
    `generate`, all on the training captures), evaluated on the SEED=3 recording (no flow of
    it was seen by the generator or the detector) and on the held-out shared flows; also at
    the generated flows' weights --generated-weights and with --ar-per-class flows of the
    bundled default AR model.
(d) `detect run` on one core: a ~1M-packet capture (the shared captures repeated, time-shifted,
    written with pytrafgen.write_pcap into /tmp), CPU time of read_pcap alone next to the whole
    run (streamed read, flows, features, forest predict) in one fresh process; then peak RSS
    and wall time of `pytrafgen detect run` on a ~1 GB capture in a fresh process.

Test sets are capped at --max-test-flows per class (seeded), so the transformer (about 100
flows/s on one core) is evaluated on the same flows as the others. Writes
benchmarks/results/detect.json and .md; --parts runs a subset and keeps the other parts'
figures from an earlier detect.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_detect.py --cross /work/rec/seed3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_model, write_results
from detect_report import markdown

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"
WORK = Path("/tmp/pytrafgen-bench/detect")
RESULTS = REPO / "benchmarks" / "results" / "detect"
KINDS = ("forest", "boosting", "transformer", "logreg", "knn", "mlp")
SEEDED_KINDS = ("forest", "transformer")  # part a: measured over --within-seeds split seeds
REPEATS = 3  # part d: runs of each step; the least CPU time counts


def _load(captures: Path, settings: Any) -> Any:
    from pytrafgen.detect.data import load_labeled
    from pytrafgen.evaluate.evalset import read_manifest

    return load_labeled(sorted(captures.glob("*.pcap")), read_manifest(captures / "manifest.csv"), settings)


def _confused(m: dict[str, Any], classes: list[str]) -> list[list[Any]]:
    """Off-diagonal cells of a confusion matrix: [true class, predicted class, flows], most first."""
    cells = [[classes[i], classes[j], int(v)] for i, row in enumerate(m["confusion"]) for j, v in enumerate(row)
             if i != j and v]
    return sorted(cells, key=lambda c: -c[2])


def _score(det: Any, flows: Any, select: np.ndarray | None, cap: int, seed: int) -> dict[str, Any]:
    """Metrics of ``det`` on ``flows`` (only ``select``, if given), at most ``cap`` per class."""
    from pytrafgen.detect.metrics import classification_metrics
    from pytrafgen.detect.train import cap_per_class

    index = {c: i for i, c in enumerate(det.header.classes)}
    y = np.array([index.get(c, -1) if c is not None else -1 for c in flows.labels()], np.int64)
    rows = np.flatnonzero(y >= 0) if select is None else np.asarray(select)
    rows = rows[cap_per_class(y[rows], cap, np.random.default_rng(seed))]
    x = np.concatenate([det.encode(c.packets, c.flows) for c in flows.captures])[rows]
    m = classification_metrics(y[rows], det.predict_proba(x).argmax(axis=1), det.header.classes)
    return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "flows": m["flows"],
            "confused": _confused(m, det.header.classes),
            "f1": {c: v["f1"] for c, v in m["per_class"].items() if v["support"]},
            "support": {c: v["support"] for c, v in m["per_class"].items() if v["support"]}}


def _train(kind: str, real: Any, generated: Any = None, **kw: Any) -> Any:
    from pytrafgen.detect.train import train_detector

    started = time.process_time()
    result = train_detector(kind, real, generated, **kw)
    result.detector.header.training["train_cpu_s"] = round(time.process_time() - started, 1)
    return result


def _within_f1(kind: str, real: Any, seed: int, max_test_flows: int) -> float:
    print(f"(a) {kind} split seed {seed} …", flush=True)
    result = _train(kind, real, seed=seed, max_val_flows_per_class=max_test_flows)
    print(f"    split seed {seed}: within {result.validation['macro_f1']:.4f}, confused "
          f"{_confused(result.validation, result.detector.header.classes)}", flush=True)
    return float(result.validation["macro_f1"])


def part_ab(args: argparse.Namespace, real: Any, cross: Any, previous: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(previous)
    for kind in args.kinds.split(","):
        # one held-out flow moves the macro-F1 by up to 0.02 here: the mean over split seeds says more
        more_seeds = list(range(args.seed + 1, args.seed + args.within_seeds)) if kind in SEEDED_KINDS else []
        pool = None
        if args.jobs > 1 and more_seeds:
            # the further split seeds train in forked workers (which inherit the loaded flows)
            # while this process trains the first
            pool = ProcessPoolExecutor(min(args.jobs - 1, len(more_seeds)), mp_context=mp.get_context("fork"))
            pending = [pool.submit(_within_f1, kind, real, seed, args.max_test_flows) for seed in more_seeds]
        print(f"(a/b) {kind} …", flush=True)
        result = _train(kind, real, seed=args.seed, max_val_flows_per_class=args.max_test_flows)
        det = result.detector
        if kind == "forest":
            det.save(WORK / "det-forest")
        within_seeds = None
        if more_seeds:
            scores = [result.validation["macro_f1"]]
            if pool is not None:
                scores += [job.result() for job in pending]
                pool.shutdown()
            else:
                scores += [_within_f1(kind, real, seed, args.max_test_flows) for seed in more_seeds]
            within_seeds = {"seeds": [args.seed, *more_seeds], "macro_f1": scores}
        per_class = result.validation["per_class"]
        entry = {"within": {"macro_f1": result.validation["macro_f1"], "flows": result.validation["flows"],
                            "confused": _confused(result.validation, det.header.classes),
                            "f1": {c: v["f1"] for c, v in per_class.items() if v["support"]},
                            "support": {c: v["support"] for c, v in per_class.items() if v["support"]}},
                 "train_cpu_s": det.header.training["train_cpu_s"],
                 "real_flows_train": det.header.training["real_flows_train"]}
        if cross is not None:
            entry["cross"] = _score(det, cross, None, args.max_test_flows, args.seed)
        if within_seeds is not None:
            entry["within_seeds"] = within_seeds
        out[kind] = entry
        print(f"    within {entry['within']['macro_f1']:.4f}"
              + (f", across {entry['cross']['macro_f1']:.4f}" if cross is not None else ""), flush=True)
    return out


def generate_markov(args: argparse.Namespace) -> Path:
    """Markov-generated flows, every class, from the training captures (README commands)."""
    pcap = WORK / "markov.pcap"
    if pcap.exists() and Path(str(pcap) + ".flows.csv").exists():
        return pcap
    from pytrafgen.evaluate.evalset import read_manifest

    classes = sorted({c for c, _ in read_manifest(SHARED / "manifest.csv").values()})
    cli = [sys.executable, "-m", "pytrafgen"]
    subprocess.run([*cli, "tokenize", str(SHARED), "--labels", str(SHARED / "manifest.csv"), "--out",
                    str(WORK / "ds"), "--max-flow-packets", "100", "--payload-cap", "16"], check=True)
    subprocess.run([*cli, "train", str(WORK / "ds"), "--generator", "markov", "--out", str(WORK / "markov")],
                   check=True)
    class_args = [a for c in classes for a in ("--class", f"{c}:{args.generated_per_class}")]
    subprocess.run([*cli, "generate", str(WORK / "markov"), *class_args, "--out", str(pcap), "--seed",
                    str(args.seed), "--quiet"], check=True)
    return pcap


def generate_ar(args: argparse.Namespace) -> Path:
    """Flows of every class from the bundled default AR model (`pytrafgen generate` with the
    model directory itself, as a user without a trained model runs it)."""
    pcap = WORK / f"ar{args.ar_per_class}.pcap"
    if pcap.exists() and Path(str(pcap) + ".flows.csv").exists():
        return pcap
    from pytrafgen.detect.transformer import DEFAULT_BACKBONE

    classes = json.loads((DEFAULT_BACKBONE / "config.json").read_text())["classes"]
    class_args = [a for c in classes for a in ("--class", f"{c}:{args.ar_per_class}")]
    subprocess.run([sys.executable, "-m", "pytrafgen", "generate", str(DEFAULT_BACKBONE), *class_args, "--out",
                    str(pcap), "--seed", str(args.seed), "--quiet"], check=True)
    return pcap


def _variants(args: argparse.Namespace, kind: str) -> list[tuple[str, str, float]]:
    """(row name, generated source, weight) of part c's augmented runs for ``kind``: markov at
    weight 1 (the headline), markov at the other --generated-weights (not knn: it has no
    sample weights), and the bundled AR model's flows (--ar-per-class) at weight 1."""
    rows = [("real_plus_generated", "markov", 1.0)]
    if kind != "knn":
        rows += [(f"markov_weight_{w:g}", "markov", w) for w in args.generated_weights if w != 1.0]
    return rows + ([("ar", "ar", 1.0)] if args.ar_per_class else [])


def _delta(base: list[dict[str, Any]], aug: list[dict[str, Any]], where: str) -> dict[str, Any] | None:
    """Mean macro-F1 of the real-only and augmented runs and the delta, per seed too."""
    if not all(where in r for r in [*base, *aug]):
        return None
    deltas = [a[where] - b[where] for a, b in zip(aug, base, strict=True)]
    return {"real_only": float(np.mean([r[where] for r in base])),
            "real_plus_generated": float(np.mean([r[where] for r in aug])),
            "delta": float(np.mean(deltas)), "deltas": deltas}


def _without_class(flows: Any, name: str) -> Any:
    """``flows`` with the flows of class ``name`` unlabeled (training leaves them out)."""
    from dataclasses import replace

    return replace(flows, captures=[replace(c, classes=[None if k == name else k for k in c.classes])
                                    for c in flows.captures])


def leave_one_class_out(args: argparse.Namespace, real: Any, cross: Any, generated: Any) -> dict[str, Any]:
    """The forest on 10 % of the real flows plus the markov flows of every class but one: which
    generated class costs the forest on the SEED=3 recording."""
    out: dict[str, Any] = {}
    for name in sorted({c for c in generated.labels() if c is not None}):
        print(f"(c) forest without the generated {name} flows …", flush=True)
        scores = [_score(_train("forest", real, _without_class(generated, name), seed=seed,
                                train_fraction=args.fraction, max_val_flows_per_class=args.max_test_flows).detector,
                         cross, None, args.max_test_flows, seed)["macro_f1"]
                  for seed in range(args.seed, args.seed + args.scarce_seeds)]
        out[name] = {"cross": float(np.mean(scores)), "runs": scores}
    return out


def part_c(args: argparse.Namespace, real: Any, cross: Any, previous: dict[str, Any]) -> dict[str, Any]:
    from pytrafgen.detect.data import load_labeled

    pcaps = {"markov": generate_markov(args)}
    if args.ar_per_class:
        pcaps["ar"] = generate_ar(args)
    sources = {name: load_labeled([p], None, real.settings, generated=True) for name, p in pcaps.items()}
    out: dict[str, Any] = {"generated": {"pcap": str(pcaps["markov"]), "flows": sources["markov"].n_flows,
                                         "per_class": args.generated_per_class},
                           "sources": {**previous.get("sources", {}),
                                       **{n: {"pcap": str(p), "flows": sources[n].n_flows} for n, p in pcaps.items()}},
                           "train_fraction": args.fraction, "detectors": dict(previous.get("detectors", {}))}
    for kind in args.kinds.split(","):
        seeds = [args.seed] if kind == "transformer" else [args.seed + i for i in range(args.scarce_seeds)]
        variants = _variants(args, kind)
        rows: dict[str, list[dict[str, Any]]] = {"real_only": [], **{name: [] for name, _, _ in variants}}
        for seed in seeds:
            for name, source, weight in [("real_only", "", 1.0), *variants]:
                print(f"(c) {kind} seed {seed} {name} …", flush=True)
                result = _train(kind, real, sources[source] if source else None, seed=seed,
                                train_fraction=args.fraction, max_val_flows_per_class=args.max_test_flows,
                                generated_weight=weight)
                entry = {"within": result.validation["macro_f1"],
                         "real_flows_train": result.detector.header.training["real_flows_train"],
                         "generated_flows": result.detector.header.training["generated_flows"]}
                if cross is not None:
                    score = _score(result.detector, cross, None, args.max_test_flows, seed)
                    entry["cross"], entry["cross_f1"] = score["macro_f1"], score["f1"]
                rows[name].append(entry)
        summary: dict[str, Any] = {"seeds": seeds, "runs": rows}
        for where in ("cross", "within"):
            headline = _delta(rows["real_only"], rows["real_plus_generated"], where)
            if headline is not None:
                summary[where] = headline
        summary["variants"] = {name: {where: d for where in ("cross", "within")
                                      if (d := _delta(rows["real_only"], rows[name], where)) is not None}
                               for name, _, _ in variants if name != "real_plus_generated"}
        out["detectors"][kind] = summary
        print(f"    {kind}: {summary.get('cross') or summary.get('within')}", flush=True)
    if previous.get("forest_leave_one_class_out"):
        out["forest_leave_one_class_out"] = previous["forest_leave_one_class_out"]
    if args.leave_one_class_out and cross is not None:
        out["forest_leave_one_class_out"] = leave_one_class_out(args, real, cross, sources["markov"])
    return out


def build_capture(target_packets: int, path: Path) -> dict[str, Any]:
    """The shared captures in time order, repeated with each copy shifted past the last one
    (plus 200 s, more than the idle timeout) until ``target_packets``; written piecewise."""
    from pytrafgen import PacketTable, read_pcap
    from pytrafgen.capture import pcap_bytes

    if path.exists():
        return {"path": str(path), "bytes": path.stat().st_size}
    parts = [read_pcap(p) for p in sorted(SHARED.glob("*.pcap"))]
    base = PacketTable.concat(parts)
    base = base.take(np.argsort(base.ts_ns, kind="stable"))
    span = int(base.ts_ns.max() - base.ts_ns.min()) + 200_000_000_000
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tmp.open("wb") as fh:
        rep = 0
        while written < target_packets:
            blob = pcap_bytes(base, ts_ns=base.ts_ns + rep * span)
            fh.write(blob if rep == 0 else blob[24:])
            written += len(base)
            rep += 1
    tmp.replace(path)
    return {"path": str(path), "bytes": path.stat().st_size}


# Every step runs REPEATS times, the reader and the streamed runs alternating, and the least CPU
# time of each counts: on the shared machine one measurement moves by up to 2x with the load.
THROUGHPUT_CHILD = r"""
import json, sys, time
import numpy as np
import pytrafgen
from pytrafgen.detect.model import load_detector
from pytrafgen.detect.run import run_detector
from pytrafgen.detect.features import detect_features
path, det_dir, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
det = load_detector(det_dir)
times = {}
def measure(key, fn):
    t = time.process_time(); w = time.perf_counter()
    result = fn()
    times.setdefault(key, []).append((time.process_time() - t, time.perf_counter() - w))
    return result
for _ in range(repeats):
    table = measure("read", lambda: pytrafgen.read_pcap(path))
    flows = measure("assemble", lambda: det.header.settings.assemble(table))
    x = measure("features", lambda: detect_features(table, flows))
    measure("predict", lambda: det.predict_proba(x))
    packets, n_flows = len(table), len(flows)
    del table, flows, x
    for chunk, key in ((262144, "run_large_chunks"), (65536, "run")):
        summary = measure(key, lambda: run_detector(det, [path], None, chunk_packets=chunk))
out = {"packets": packets, "flows": n_flows, "run_flows": int(summary.flows.sum()), "repeats": repeats}
for key, values in times.items():
    out[key + "_cpu_s"] = min(v[0] for v in values)
    out[key + "_wall_s"] = min(v[1] for v in values)
    out[key + "_cpu_s_all"] = [round(v[0], 3) for v in values]
print(json.dumps(out))
"""


def part_d(args: argparse.Namespace) -> dict[str, Any]:
    det_dir = WORK / "det-forest"
    if not (det_dir / "detector.json").exists():
        sys.exit("part d needs the forest from part a (run --parts a first)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    small = build_capture(args.packets, WORK / "detect_1M.pcap")
    print(f"(d) throughput on {small['path']} …", flush=True)
    proc = subprocess.run([sys.executable, "-c", THROUGHPUT_CHILD, small["path"], str(det_dir), str(REPEATS)],
                          check=True, capture_output=True, text=True, env=env)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    n = figures["packets"]
    out: dict[str, Any] = {"capture": small, **figures,
                           "read_packets_per_cpu_s": n / figures["read_cpu_s"],
                           "run_packets_per_cpu_s": n / figures["run_cpu_s"],
                           "run_packets_per_wall_s": n / figures["run_wall_s"]}
    if args.gb > 0:
        big = build_capture(int(args.gb * 7_300_000), WORK / "detect_1G.pcap")
        # the small capture first: peak RSS that does not grow with the capture is the claim
        out["memory"] = [_peak_rss(det_dir, small, env), _peak_rss(det_dir, big, env)]
    return out


RSS_CHILD = r"""
import resource, subprocess, sys, json, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True)
print(json.dumps({"wall_s": time.perf_counter() - started, "flows": json.loads(proc.stdout)["flows"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _peak_rss(det_dir: Path, capture: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """`pytrafgen detect run` on ``capture`` in a fresh process (its own RUSAGE_CHILDREN)."""
    print(f"(d) peak RSS of detect run on {capture['path']} ({capture['bytes'] / 1e9:.2f} GB) …", flush=True)
    verdicts = WORK / "verdicts.csv"
    command = [sys.executable, "-m", "pytrafgen", "detect", "run", str(det_dir), capture["path"], "--out",
               str(verdicts), "--json"]
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, *command], check=True, capture_output=True, text=True,
                          env=env)
    figures = json.loads(proc.stdout)
    figures.update(capture, verdicts_csv_mb=verdicts.stat().st_size / 1e6)
    verdicts.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cross", type=Path, default=None, help="independent recording (SEED=3) with manifest.csv")
    parser.add_argument("--parts", default="abcd")
    parser.add_argument("--max-test-flows", type=int, default=500)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--generated-per-class", type=int, default=200)
    parser.add_argument("--scarce-seeds", type=int, default=3)
    parser.add_argument("--generated-weights", type=lambda v: [float(w) for w in v.split(",")], default=[1.0],
                        help="part c: the generated flows' training weights to measure (comma-separated; 1 always)")
    parser.add_argument("--leave-one-class-out", action="store_true",
                        help="part c: the forest with the markov flows of one class left out, each class in turn")
    parser.add_argument("--ar-per-class", type=int, default=0,
                        help="part c: also add this many flows per class from the bundled default AR model (0: not)")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--within-seeds", type=int, default=5,
                        help="part a: split seeds for forest and transformer (from --seed on)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="part a: processes training the split seeds at once (each one thread)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="detectors to measure (comma-separated)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from pytrafgen.detect.data import FlowSettings

    WORK.mkdir(parents=True, exist_ok=True)
    previous = RESULTS.with_suffix(".json")
    report: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    report.update({"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
                   "command": "OMP_NUM_THREADS=1 python benchmarks/bench_detect.py " + " ".join(sys.argv[1:]),
                   "train_captures": str(SHARED), "max_test_flows": args.max_test_flows})
    if args.cross is not None:
        report["cross_captures"] = str(args.cross)
    settings = FlowSettings()
    need_data = bool(set(args.parts) & set("abc"))
    real = _load(SHARED, settings) if need_data else None
    cross = _load(args.cross, settings) if need_data and args.cross is not None else None
    done: list[str] = ["date", "cpu", "command", "train_captures", "max_test_flows", "cross_captures"]

    def save() -> None:
        # parts measured by other runs since this one started stay as they are now on disk
        merged = json.loads(previous.read_text()) if previous.exists() else {}
        merged.update({k: report[k] for k in done if k in report})
        # a part measured by several runs (--kinds subsets) lists every run's command
        commands = {p: c if isinstance(c, list) else [c] for p, c in merged.get("commands", {}).items()}
        for part in ("ab", "c", "d"):
            if part in done:
                runs = commands.get(part, []) if args.kinds != ",".join(KINDS) else []
                commands[part] = [c for c in runs if c != report["command"]] + [report["command"]]
        merged["commands"] = commands
        write_results(RESULTS, merged, markdown(merged))

    if "a" in args.parts or "b" in args.parts:
        report["ab"] = part_ab(args, real, cross, report.get("ab", {}))
        done.append("ab")
        save()
    if "c" in args.parts:
        report["c"] = part_c(args, real, cross, report.get("c", {}))
        done.append("c")
        save()
    if "d" in args.parts:
        report["d"] = part_d(args)
        done.append("d")
        save()


if __name__ == "__main__":
    main()
