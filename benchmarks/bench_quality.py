"""Generation quality side by side: ar vs gan vs diffusion vs markov on the shared captures,
through ``pytrafgen compare`` (same dataset, same split, same validators), against the seed
paper's figures (99.95 % compliance, EMD 0.0059, coverage > 50 %) and TrafficLLM's
generation F1 0.9483.

    python benchmarks/bench_quality.py [--captures DIR] [--generators ar,gan,diffusion,markov]
                                       [--max-per-class 12] [--quick]

Against a held-out lab recording instead (``--recording``, e.g. /work/rec/seed3: whole real
flows, never trained on): the AR checkpoint (default: the bundled one) and markov trained on
the captures (tokenized as the default was) each generate ``--per-class`` flows per class with
``pytrafgen generate``; ``pytrafgen evaluate`` judges both against the recording (training =
the captures); and per class the KS statistic of packets, bytes and duration per flow and the
zero-byte share of payloads are computed here. Writes quality_recording.{json,md}:

    python benchmarks/bench_quality.py --recording /work/rec/seed3 [--ar-checkpoint DIR]
                                       [--per-class 40] [--sample-max-flow-packets 1000]
                                       [--baselines gan,diffusion]

(``--baselines``: gan and diffusion also trained on the captures, with FIT_SETTINGS' budgets,
and judged in the same run.)

Writes benchmarks/results/quality.json and quality.md (plus the full report with its plots
under benchmarks/results/quality_report/). Training budgets are CPU-sized and stated in the
results; a generator that fails to train or load is reported as skipped, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_CAPTURES = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"

# CPU-sized training budgets (one 2-core machine shared with others), per generator.
FIT_SETTINGS: dict[str, list[str]] = {
    "ar": ["ar.size=small", "ar.steps=60"],
    "gan": ["gan.size=small", "gan.iterations=100"],
    "diffusion": ["diffusion.size=small", "diffusion.iterations=100"],
    "markov": [],
}
QUICK_FIT_SETTINGS: dict[str, list[str]] = {
    "ar": ["ar.size=tiny", "ar.steps=10"],
    "gan": ["gan.size=tiny"],
    "diffusion": ["diffusion.size=tiny"],
    "markov": [],
}
# (summary key, reference figure, who reported it, higher is better)
REFERENCES: tuple[tuple[str, float, str, bool], ...] = (
    ("compliance_packets_final", 0.9995, "seed paper: compliance 99.95 %", True),
    ("emd_mean", 0.0059, "seed paper: EMD 0.0059", False),
    ("coverage", 0.50, "seed paper: coverage > 50 %", True),
    ("class_fidelity_f1", 0.9483, "TrafficLLM: generation F1 0.9483", True),
)


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())}


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def comparison(summary: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    rows = []
    for key, ref, source, higher in REFERENCES:
        for gen, figures in summary.items():
            value = figures.get(key)
            meets = None if value is None else (value >= ref if higher else value <= ref)
            rows.append({"metric": key, "generator": gen, "value": value, "reference": ref, "source": source,
                         "meets_reference": meets, "ratio_to_reference": None if value is None else value / ref})
    return rows


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    names = list(summary)
    from pytrafgen.evaluate.report import SUMMARY_COLUMNS

    lines = ["# Generation quality: " + " vs ".join(names), "",
             f"- date: {doc['date']}", f"- machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu']}",
             f"- commands: `{doc['commands']['tokenize']}` then `{doc['commands']['compare']}`",
             f"- data: {doc['settings']['captures']} (all 13 captures"
             + (f", flows cut at {doc['settings']['max_flow_packets']} packets"
                if doc["settings"].get("max_flow_packets") else "")
             + "), dataset split 80/10/10 by flow, "
             f"stratified, seed {doc['settings']['seed']}; test flows capped at {doc['settings']['max_per_class']} "
             "per class; each generator generates the test split's count per class",
             f"- training budgets (CPU): {json.dumps(doc['settings']['fit_settings'])}"
             + (f"; loaded instead of trained (their budgets above do not apply): "
                f"{', '.join(doc['settings']['reused_checkpoints'])}" if doc['settings']['reused_checkpoints'] else ""),
             f"- wall time: tokenize {doc['seconds']['tokenize']:.0f} s, compare {doc['seconds']['compare']:.0f} s",
             "", "## Side by side", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in SUMMARY_COLUMNS:
        lines.append(f"| {label} | " + " | ".join(fmt(summary[n].get(key)) for n in names) + " |")
    skipped = {k: v["skipped"] for k, v in doc["generators"].items() if "skipped" in v}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    lines += ["", "## Against the published figures", "",
              "| metric | reference | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, _ref, source, _higher in REFERENCES:
        cells = []
        for n in names:
            row = next(r for r in doc["comparison"] if r["metric"] == key and r["generator"] == n)
            cells.append(f"{fmt(row['value'])} ({fmt(row['meets_reference'])})")
        lines.append(f"| {key} | {source} | " + " | ".join(cells) + " |")
    lines += ["", "(yes/no: meets the reference.) The references were measured on other data "
              "(the seed paper's and TrafficLLM's own datasets, GPU-trained models); here every model "
              "is trained for minutes on a shared 2-core CPU, so the table says where each stands, not "
              "who wins at full scale. Real test split under the same rules: packet compliance "
              f"{fmt(doc['real_reference'].get('packet_pass_rate'))}, tshark pass "
              f"{fmt(doc['real_reference'].get('tshark_pass'))}.",
              "", "Full report with plots: quality_report/report.md."]
    return "\n".join(lines) + "\n"


RECORDING_TARGETS = (  # (summary key, target, higher is better) from issue 15
    ("class_fidelity_f1", 0.95, True), ("coverage", 0.5, True), ("emd_mean", 0.01, False),
    ("utility_tstr", 0.9, True),
)


def per_flow(es: Any) -> dict[str, np.ndarray]:
    """Packets, wire bytes and duration (s) per flow of an EvalSet."""
    fid = np.asarray(es.flow_id)
    inside = fid >= 0
    n = es.n_flows
    packets = np.bincount(fid[inside], minlength=n)
    wire = np.bincount(fid[inside], weights=np.asarray(es.packets.wirelen)[inside].astype(np.float64), minlength=n)
    # in int64 ns: as float64, an absolute timestamp (~1.8e18 ns) keeps only 256 ns steps, which
    # blurred the µs durations of scans and floods
    ts = np.asarray(es.packets.ts_ns)[inside].astype(np.int64)
    first = np.full(n, np.iinfo(np.int64).max)
    last = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first, fid[inside], ts)
    np.maximum.at(last, fid[inside], ts)
    has = packets > 0
    span = np.zeros(n, np.int64)
    span[has] = last[has] - first[has]
    duration = span / 1e9
    return {"packets": packets.astype(np.float64), "bytes": wire, "duration": duration}


def zero_share(es: Any) -> dict[str, float]:
    """Per class: zero bytes / payload bytes over whole payloads."""
    fid = np.asarray(es.flow_id)
    lengths = np.asarray(es.packets.payload_len)
    acc: dict[str, list[int]] = {}
    for i in np.flatnonzero((fid >= 0) & (lengths > 0)).tolist():
        data = np.frombuffer(es.packets.payload(i), np.uint8)
        a = acc.setdefault(es.classes[int(es.labels[fid[i]])], [0, 0])
        a[0] += int(np.count_nonzero(data == 0))
        a[1] += len(data)
    return {c: z / t for c, (z, t) in acc.items() if t}


def recording_figures(real: Any, generated: dict[str, Any]) -> dict[str, Any]:
    """Per class: KS statistics (packets, bytes, duration per flow) and zero-byte shares."""
    from scipy.stats import ks_2samp

    real_flows = per_flow(real)
    real_zero = zero_share(real)
    out: dict[str, Any] = {"classes": {}}
    gen_flows = {name: per_flow(es) for name, es in generated.items()}
    gen_zero = {name: zero_share(es) for name, es in generated.items()}
    for k, cls in enumerate(real.classes):
        mine = real.labels == k
        row: dict[str, Any] = {"real_flows": int(mine.sum()),
                               "real_median": {m: float(np.median(v[mine])) if mine.any() else None
                                               for m, v in real_flows.items()},
                               "real_zero_share": real_zero.get(cls)}
        for name, es in generated.items():
            theirs = es.labels == es.classes.index(cls) if cls in es.classes else np.zeros(es.n_flows, bool)
            g = gen_flows[name]
            row[name] = {
                "flows": int(theirs.sum()),
                "median": {m: float(np.median(v[theirs])) if theirs.any() else None for m, v in g.items()},
                "max_packets": int(g["packets"][theirs].max()) if theirs.any() else None,
                "ks": {m: float(ks_2samp(real_flows[m][mine], g[m][theirs]).statistic)
                       if theirs.any() and mine.any() else None for m in real_flows},
                "zero_share": gen_zero[name].get(cls),
            }
        out["classes"][cls] = row
    return out


def run_recording(args: argparse.Namespace) -> None:
    from pytrafgen.demo.default import TOKENIZE_SETTINGS, default_checkpoint
    from pytrafgen.evaluate.evalset import load_evalset, read_manifest

    rec = args.recording
    if not (rec / "manifest.csv").is_file():
        sys.exit(f"{rec}: no manifest.csv (a lab recording is needed)")
    ar_ckpt = args.ar_checkpoint or default_checkpoint()
    exe = [sys.executable, "-m", "pytrafgen.cli.main"]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    mach = machine()
    manifest = read_manifest(rec / "manifest.csv")
    real_paths = sorted(rec / f for f in manifest)
    train_manifest = read_manifest(args.captures / "manifest.csv")
    train_paths = sorted(args.captures / f for f in train_manifest)
    classes = sorted({c for c, _ in manifest.values()})
    seconds: dict[str, float] = {}
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pytrafgen-quality-rec-") as tmp:
        work = Path(tmp)

        def timed(key: str, cmd: list[str]) -> None:
            commands[key] = " ".join(["pytrafgen", *cmd[3:]]).replace(tmp, "$TMP")
            seconds[key] = round(run(cmd), 1)

        timed("tokenize", [*exe, "tokenize", str(args.captures), "--labels", str(args.captures / "manifest.csv"),
                           "--out", str(work / "ds"), "--payload-cap", str(TOKENIZE_SETTINGS["payload_cap"]),
                           "--max-flow-packets", str(TOKENIZE_SETTINGS["max_flow_packets"]),
                           "--seed", str(TOKENIZE_SETTINGS["seed"]), "-j", "1", "-q"])
        trained = ["markov", *[b for b in args.baselines.split(",") if b]]
        for name in trained:  # the baselines on the same whole-flow dataset, CPU budgets of FIT_SETTINGS
            timed(f"train {name}", [*exe, "train", str(work / "ds"), "--generator", name, "--out",
                                    str(work / name), "--device", "cpu", "--quiet",
                                    *[x for s in FIT_SETTINGS.get(name, [])  # compare's "gan.size=..." is train's "size=..."
                                      for x in ("--set", s.removeprefix(f"{name}."))]])
        wanted = [a for c in classes for a in ("--class", f"{c}:{args.per_class}")]
        pcaps = {}
        for name, ckpt in (("ar", ar_ckpt), *((n, work / n) for n in trained)):
            pcaps[name] = work / f"{name}.pcap"
            extra = (["--max-flow-packets", str(args.sample_max_flow_packets)] if name == "ar" else []) + (
                ["--device", "cpu"] if name != "markov" else [])
            timed(f"generate {name}", [*exe, "generate", str(ckpt), *wanted, "--out", str(pcaps[name]),
                                       "--seed", str(args.seed), "--quiet", *extra])
        ev_cmd = [*exe, "evaluate", *[x for p in real_paths for x in ("--real", str(p))],
                  "--labels", str(rec / "manifest.csv"), *[x for p in train_paths for x in ("--train", str(p))],
                  *[x for p in pcaps.values() for x in ("-g", str(p))], "--out", str(work / "eval"),
                  "--no-plots", "--seed", str(args.seed), "-q", "--json"]
        timed("evaluate", ev_cmd)
        report = json.loads((work / "eval" / "report.json").read_text())
        real = load_evalset(real_paths, "real", manifest)
        generated = {name: load_evalset([p], name, None).relabel(real.classes) for name, p in pcaps.items()}
        figures = recording_figures(real, generated)
    summary = {Path(k).stem if k.endswith(".pcap") else k: v for k, v in report["summary"].items()}
    doc = {
        "benchmark": "quality against a held-out recording", "date": started, "machine": mach,
        "recording": f"{rec} (lab recording SEED=3, capture.sh, 2026-12-03)" if "seed3" in str(rec) else str(rec),
        "training": str(args.captures), "ar_checkpoint": str(ar_ckpt),
        "settings": {"per_class": args.per_class, "seed": args.seed,
                     "sample_max_flow_packets": args.sample_max_flow_packets, "tokenize": dict(TOKENIZE_SETTINGS),
                     "baseline_fit_settings": {n: FIT_SETTINGS.get(n, []) for n in trained}},
        "commands": {"benchmark": " ".join(["python", *sys.argv]), **commands}, "seconds": seconds,
        "summary": summary, "per_class": figures["classes"],
        "load_average_at_end": list(os.getloadavg()), "notes": args.note,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    from pytrafgen.atomic import atomic_file

    with atomic_file(args.results / "quality_recording.json", "w") as fh:
        json.dump(doc, fh, indent=1)
    with atomic_file(args.results / "quality_recording.md", "w") as fh:
        fh.write(recording_markdown(doc))
    print(recording_markdown(doc))


def recording_markdown(doc: dict[str, Any]) -> str:
    names = list(doc["summary"])
    lines = [
        "# Generation quality against a held-out recording: " + " vs ".join(names), "",
        f"- date: {doc['date']}; machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu']}, shared "
        f"(load average {doc['machine']['load_average_at_start'][0]:.1f} at the start, "
        f"{doc['load_average_at_end'][0]:.1f} at the end)",
        f"- real (test side): {doc['recording']}: whole flows, not cut, not padded",
        f"- training: {doc['training']} ({', '.join(n for n in names if n != 'ar')} trained on it here, budgets "
        f"{doc['settings'].get('baseline_fit_settings', {})}; ar: {doc['ar_checkpoint']})",
        f"- generated: {doc['settings']['per_class']} flows per class each, seed {doc['settings']['seed']}; "
        f"ar sampled with --max-flow-packets {doc['settings']['sample_max_flow_packets']}",
        f"- command: `{doc['commands']['benchmark']}`",
        *[f"  - {k} ({doc['seconds'][k]} s): `{v}`" for k, v in doc["commands"].items() if k != "benchmark"],
        "", "## Side by side (pytrafgen evaluate)", "",
        "| metric | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    targets = {k: (t, hi) for k, t, hi in RECORDING_TARGETS}
    keys = ["class_fidelity_f1", "coverage", "emd_mean", "utility_tstr", "exact_copy_share", "tshark_pass",
            "compliance_packets_final", "compliance_flows_final"]
    for key in keys:
        t = targets.get(key)
        target = "–" if t is None else (f"≥ {t[0]}" if t[1] else f"≤ {t[0]}")
        cells = []
        for n in names:
            v = doc["summary"][n].get(key)
            miss = ""
            if t is not None and v is not None:
                gap = (t[0] - v) if t[1] else (v - t[0])
                miss = " (met)" if gap <= 0 else f" (short by {gap:.3f})"
            cells.append("–" if v is None else f"{v:.4f}{miss}")
        lines.append(f"| {key} | {target} | " + " | ".join(cells) + " |")
    lines += ["", "## Per class: KS statistic per flow (target ≤ 0.1) and zero-byte share (target within 2× of real)",
              "", "| class | real flows | real median packets / bytes / s | "
              + " | ".join(f"{n}: KS packets / bytes / duration | {n}: median packets (max) | {n}: zero share"
                           for n in names) + " | real zero share |",
              "|---|---|---|" + "---|---|---|" * len(names) + "---|"]
    for cls, row in doc["per_class"].items():
        med = row["real_median"]
        cells = [cls, str(row["real_flows"]),
                 " / ".join("–" if med[m] is None else f"{med[m]:.3g}" for m in ("packets", "bytes", "duration"))]
        for n in names:
            g = row.get(n, {})
            ks = g.get("ks", {})
            cells.append(" / ".join("–" if ks.get(m) is None else f"{ks[m]:.2f}" for m in ("packets", "bytes",
                                                                                               "duration")))
            gm = g.get("median", {}).get("packets")
            cells.append("–" if gm is None else f"{gm:.3g} ({g.get('max_packets')})")
            z = g.get("zero_share")
            cells.append("–" if z is None else f"{100 * z:.1f} %")
        z = row.get("real_zero_share")
        cells.append("–" if z is None else f"{100 * z:.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    for n in names:
        ks_all = [row[n]["ks"][m] for row in doc["per_class"].values() if n in row
                  for m in ("packets", "bytes", "duration") if row[n]["ks"].get(m) is not None]
        met = sum(1 for v in ks_all if v <= 0.1)
        lines.append("")
        lines.append(f"{n}: {met} of {len(ks_all)} per-class KS statistics ≤ 0.1; mean KS "
                     f"{np.mean(ks_all):.3f}." if ks_all else f"{n}: no KS figures.")
    if doc.get("notes"):
        lines += ["", "## Notes: targets not met, by how much, and what limits them", ""]
        lines += [f"- {note}" for note in doc["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    ap.add_argument("--generators", default="ar,gan,diffusion,markov")
    ap.add_argument("--max-per-class", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny models: a smoke run of the pipeline")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="name=PATH: reuse a checkpoint trained on the same dataset (repeatable)")
    ap.add_argument("--payload-cap", type=int, default=None,
                    help="payload bytes kept as tokens (16 = the bundled default's data; default: the tokenizer's)")
    ap.add_argument("--max-flow-packets", type=int, default=0,
                    help="tokenize with flows cut after this many packets (16 = the bundled default's data)")
    ap.add_argument("--recording", type=Path, help="held-out lab recording (pcaps + manifest.csv): see the doc")
    ap.add_argument("--ar-checkpoint", type=Path, help="--recording: AR checkpoint (default: the bundled one)")
    ap.add_argument("--per-class", type=int, default=40, help="--recording: generated flows per class")
    ap.add_argument("--sample-max-flow-packets", type=int, default=1000,
                    help="--recording: AR flows closed after this many packets at the latest")
    ap.add_argument("--baselines", default="",
                    help="--recording: also train these on the captures and generate beside ar and markov, "
                         "e.g. gan,diffusion (budgets of FIT_SETTINGS)")
    ap.add_argument("--note", action="append", default=[],
                    help="--recording: a line for the results' notes (what limits a figure); repeatable")
    ap.add_argument("--rewrite-markdown", action="store_true",
                    help="--recording: only write quality_recording.md again from its .json (with --note lines)")
    args = ap.parse_args()
    if args.recording is not None and args.rewrite_markdown:
        from pytrafgen.atomic import atomic_file

        doc = json.loads((args.results / "quality_recording.json").read_text())
        doc["notes"] = args.note or doc.get("notes", [])
        with atomic_file(args.results / "quality_recording.json", "w") as fh:
            json.dump(doc, fh, indent=1)
        with atomic_file(args.results / "quality_recording.md", "w") as fh:
            fh.write(recording_markdown(doc))
        return
    if args.recording is not None:
        run_recording(args)
        return
    if not (args.captures / "manifest.csv").exists():
        sys.exit(f"no captures at {args.captures}")
    generators = [g for g in args.generators.split(",") if g]
    budgets = QUICK_FIT_SETTINGS if args.quick else FIT_SETTINGS
    exe = [sys.executable, "-m", "pytrafgen.cli.main"]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    mach = machine()
    with tempfile.TemporaryDirectory(prefix="pytrafgen-quality-") as tmp:
        dataset, out = Path(tmp) / "dataset", Path(tmp) / "compare"
        tok_cmd = [*exe, "tokenize", str(args.captures), "--labels", str(args.captures / "manifest.csv"),
                   "--out", str(dataset), "--seed", str(args.seed), "-j", "1", "-q"]
        if args.max_flow_packets:
            tok_cmd += ["--max-flow-packets", str(args.max_flow_packets)]
        if args.payload_cap is not None:
            tok_cmd += ["--payload-cap", str(args.payload_cap)]
        tok_s = run(tok_cmd)
        cmp_cmd = [*exe, "compare", str(dataset), "--out", str(out), "--max-per-class", str(args.max_per_class),
                   "--seed", str(args.seed), "--device", "cpu", "-q", "--json"]
        for g in generators:
            cmp_cmd += ["-g", g] + [x for s in budgets.get(g, []) for x in ("--set", s)]
        for c in args.checkpoint:
            cmp_cmd += ["--checkpoint", c]
        cmp_s = run(cmp_cmd)
        report = json.loads((out / "report.json").read_text())
        report_dir = args.results / "quality_report"
        shutil.rmtree(report_dir, ignore_errors=True)
        report_dir.mkdir(parents=True)
        for f in out.iterdir():
            if f.suffix in (".md", ".png"):
                shutil.copy(f, report_dir / f.name)
    ref = report.get("real_reference", {})
    doc = {
        "benchmark": "quality", "date": started, "machine": mach,
        "commands": {"benchmark": " ".join([sys.executable, *sys.argv]),
                     "tokenize": " ".join(["pytrafgen", *tok_cmd[3:]]).replace(tmp, "$TMP"),
                     "compare": " ".join(["pytrafgen", *cmp_cmd[3:]]).replace(tmp, "$TMP")},
        "seconds": {"tokenize": round(tok_s, 1), "compare": round(cmp_s, 1)},
        "settings": {"captures": str(args.captures), "generators": generators, "seed": args.seed,
                     "max_per_class": args.max_per_class, "quick": args.quick,
                     "max_flow_packets": args.max_flow_packets, "payload_cap": args.payload_cap,
                     "fit_settings": {g: budgets.get(g, []) for g in generators},
                     "reused_checkpoints": args.checkpoint,
                     "evaluation": report.get("settings", {})},
        "generators": report.get("generators", {}),
        "summary": report["summary"],
        "real_reference": {"packet_pass_rate": ref.get("final", {}).get("packet_pass_rate"),
                           "flow_pass_rate": ref.get("final", {}).get("flow_pass_rate"),
                           "tshark_pass": ref.get("tshark", {}).get("pass_rate")},
        "comparison": comparison(report["summary"]),
        "metrics": {name: g["metrics"] for name, g in report["generated"].items()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    from pytrafgen.atomic import atomic_file

    with atomic_file(args.results / "quality.json", "w") as fh:
        json.dump(doc, fh, indent=1)
    with atomic_file(args.results / "quality.md", "w") as fh:
        fh.write(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
