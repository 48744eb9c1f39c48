"""Flow durations with and without the learned gap table (iat_fill.json), against a held-out recording.

Before the table, an IAT bucket token decodes to one fixed gap (the bucket's geometric middle); with
it, to a gap drawn from the class's real gaps in that bucket (pytrafgen/iat_fill.py). In one run:
the captures are tokenized as the bundled default was (which learns the table), markov is trained
on that dataset, the AR checkpoint (default: the bundled one) samples ``--per-class`` flows per
class once, and the same sampled flows are written twice: as decoded (before) and with their gaps
drawn from the table (after; what ``ARGenerator.sample`` gives when the checkpoint has the table,
tests/test_iat_fill.py). markov likewise: it is trained on the dataset's decoded records, so its
gaps are bucket values too; sampled once without the table, then the same records through it (what
its ``sample`` gives when its checkpoint has the table). Every set
is written as a pcap and read back like a recording (flows assembled from the pcap, as
bench_quality.py does); per class: the KS statistic and median of duration per flow against the
recording, and the KS of packets and bytes per flow (unchanged by construction). The floor: the
training captures' own flows against the recording (two lab recordings of the same classes).

    OMP_NUM_THREADS=1 python benchmarks/bench_timing_fill.py --recording /work/rec/seed3 \\
        [--captures ../shared/data/captures] [--ar-checkpoint DIR] [--per-class 40] \\
        [--sample-max-flow-packets 200]

Writes benchmarks/results/timing_fill.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_model
from bench_quality import per_flow

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_CAPTURES = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"
METRICS = ("packets", "bytes", "duration")


def evalset_of(records: Any, plan: Any, seed: int, name: str, path: Path, real_classes: list[str]) -> Any:
    """``records`` written as a pcap and read back like a recording."""
    from pytrafgen.build import write_records
    from pytrafgen.evaluate.evalset import load_evalset
    from pytrafgen.plugins import get_registry

    write_records(path, records, plan, seed, protocols=get_registry().protocols)
    return load_evalset([path], name, None).relabel(real_classes)


def figures(real: Any, sets: dict[str, Any]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    real_flows = per_flow(real)
    flows = {name: per_flow(es) for name, es in sets.items()}
    out: dict[str, Any] = {}
    for k, cls in enumerate(real.classes):
        mine = real.labels == k
        row: dict[str, Any] = {"real_flows": int(mine.sum()),
                               "real_median_duration_s": float(np.median(real_flows["duration"][mine]))}
        for name, es in sets.items():
            theirs = es.labels == es.classes.index(cls) if cls in es.classes else np.zeros(es.n_flows, bool)
            g = flows[name]
            row[name] = {"flows": int(theirs.sum()),
                         "median_duration_s": float(np.median(g["duration"][theirs])) if theirs.any() else None,
                         "ks": {m: float(ks_2samp(real_flows[m][mine], g[m][theirs]).statistic)
                                if theirs.any() and mine.any() else None for m in METRICS}}
        out[cls] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recording", type=Path, required=True, help="held-out lab recording (pcaps + manifest.csv)")
    ap.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    ap.add_argument("--ar-checkpoint", type=Path, help="AR checkpoint (default: the bundled one)")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--sample-max-flow-packets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    ap.add_argument("--rewrite-markdown", action="store_true",
                    help="only rewrite timing_fill.md from timing_fill.json, with --note lines added to its notes")
    args = ap.parse_args()
    if args.rewrite_markdown:
        doc = json.loads((args.results / "timing_fill.json").read_text())
        doc["notes"] = [*doc.get("notes", []), *args.note]
        (args.results / "timing_fill.json").write_text(json.dumps(doc, indent=1) + "\n")
        (args.results / "timing_fill.md").write_text(markdown(doc))
        return

    import torch

    from pytrafgen.address_plan import AddressPlan
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.demo.default import TOKENIZE_SETTINGS, default_checkpoint
    from pytrafgen.evaluate.evalset import load_evalset, read_manifest
    from pytrafgen.generators import load_generator
    from pytrafgen.generators.markov import MarkovGenerator
    from pytrafgen.iat_fill import FILE_NAME, IatFill
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    torch.set_num_threads(1)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = list(os.getloadavg())
    rec = args.recording
    manifest = read_manifest(rec / "manifest.csv")
    real = load_evalset(sorted(rec / f for f in manifest), "real", manifest)
    train_manifest = read_manifest(args.captures / "manifest.csv")
    training = load_evalset(sorted(args.captures / f for f in train_manifest), "training", train_manifest)
    classes = list(real.classes)
    ar_ckpt = args.ar_checkpoint or default_checkpoint()
    seconds: dict[str, float] = {}
    drawn: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pytrafgen-timing-fill-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        tokenize_captures([args.captures], args.captures / "manifest.csv", work / "ds", workers=1,
                          **TOKENIZE_SETTINGS)
        seconds["tokenize (learns the table)"] = round(time.perf_counter() - t0, 1)
        table = IatFill.load(work / "ds" / FILE_NAME)
        assert table is not None
        t0 = time.perf_counter()
        markov = MarkovGenerator()
        markov.fit(TrafficDataset(work / "ds", get_registry().protocols))
        seconds["train markov"] = round(time.perf_counter() - t0, 1)
        markov.iat_fill = None  # before: each bucket's fixed value

        ar = load_generator(ar_ckpt, None, get_registry())
        own = getattr(ar, "iat_fill", None)
        ar.iat_fill = None  # type: ignore[attr-defined]  # before: each bucket's fixed value
        ar.set_sampling(device="cpu", show_progress=False, max_flow_packets=args.sample_max_flow_packets)
        counts = {c: args.per_class for c in classes}
        t0 = time.perf_counter()
        ar_before = ar.sample(counts, seed=args.seed)
        seconds["sample ar"] = round(time.perf_counter() - t0, 1)
        ar_after, drawn["ar"] = (own or table).fill(ar_before, args.seed)
        t0 = time.perf_counter()
        markov_before = markov.sample(counts, seed=args.seed)
        seconds["sample markov"] = round(time.perf_counter() - t0, 1)
        markov_after, drawn["markov"] = table.fill(markov_before, args.seed)
        plans = {"ar": AddressPlan.load(ar_ckpt / "address_plan.json"),
                 "markov": AddressPlan.load(work / "ds" / "address_plan.json")}
        sets = {"training (floor)": training}
        for name, before, after in (("ar", ar_before, ar_after), ("markov", markov_before, markov_after)):
            sets[f"{name} before"] = evalset_of(before, plans[name], args.seed, f"{name}-before",
                                                work / f"{name}-before.pcap", classes)
            sets[f"{name} after"] = evalset_of(after, plans[name], args.seed, f"{name}-after",
                                               work / f"{name}-after.pcap", classes)
        gaps = {name: int(np.count_nonzero(np.diff(r.packets["flow"]) == 0))
                for name, r in (("ar", ar_before), ("markov", markov_before))}
    per_class = figures(real, sets)
    doc = {
        "benchmark": "flow durations with and without the learned gap table (iat_fill.json)",
        "date": started, "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "load_average_at_start": load_start,
                                     "load_average_at_end": list(os.getloadavg())},
        "recording": f"{rec} (lab recording SEED=3, capture.sh, 2026-12-03)" if "seed3" in str(rec) else str(rec),
        "training": str(args.captures), "ar_checkpoint": str(ar_ckpt),
        "ar_checkpoint_had_table": own is not None,
        "settings": {"per_class": args.per_class, "seed": args.seed,
                     "sample_max_flow_packets": args.sample_max_flow_packets, "tokenize": dict(TOKENIZE_SETTINGS)},
        "command": " ".join(["python", *sys.argv]), "seconds": seconds,
        "gaps_drawn": drawn, "gaps_total": gaps, "per_class": per_class, "notes": args.note,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "timing_fill.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    (args.results / "timing_fill.md").write_text(text)
    print(text)


def markdown(doc: dict[str, Any]) -> str:
    sets = ["ar before", "ar after", "markov before", "markov after"]
    lines = [
        "# Flow durations: IAT buckets decoded to a fixed value (before) or drawn from the learned gaps (after)", "",
        f"- date: {doc['date']}; machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu']}, shared (load "
        f"average {doc['machine']['load_average_at_start'][0]:.1f} at the start, "
        f"{doc['machine']['load_average_at_end'][0]:.1f} at the end)",
        f"- real (test side): {doc['recording']}: whole flows",
        f"- training: {doc['training']} (tokenized with {json.dumps(doc['settings']['tokenize'])}: the table is "
        f"learned from its training split; markov trained on it); ar: {doc['ar_checkpoint']}"
        + (" (its own iat_fill.json)" if doc["ar_checkpoint_had_table"] else " (no table of its own: the one "
           "learned here, what `pytrafgen learn-gaps` adds)"),
        f"- generated: {doc['settings']['per_class']} flows per class, seed {doc['settings']['seed']}; ar sampled "
        f"once with --max-flow-packets {doc['settings']['sample_max_flow_packets']}, the same flows written "
        "before and after; every set written as a pcap and its flows read back",
        f"- gaps drawn from the table: ar {doc['gaps_drawn']['ar']} of {doc['gaps_total']['ar']}, markov "
        f"{doc['gaps_drawn']['markov']} of {doc['gaps_total']['markov']} (only a gap equal to its bucket's fixed "
        "value, what a token decodes to, is drawn)",
        f"- command: `{doc['command']}`; seconds: {json.dumps(doc['seconds'])}", "",
        "## Duration per flow: KS statistic against the recording (median in µs)", "",
        "| class | real flows | real median | floor: training captures vs recording | "
        + " | ".join(sets) + " |", "|---|---|---|---|" + "---|" * len(sets)]

    def cell(row: dict[str, Any], name: str) -> str:
        g = row[name]
        ks, med = g["ks"]["duration"], g["median_duration_s"]
        return "–" if ks is None else f"{ks:.2f} ({med * 1e6:.4g})"

    for cls, row in doc["per_class"].items():
        lines.append(f"| {cls} | {row['real_flows']} | {row['real_median_duration_s'] * 1e6:.4g} | "
                     f"{cell(row, 'training (floor)')} | " + " | ".join(cell(row, s) for s in sets) + " |")
    for s in ["training (floor)", *sets]:
        ks = [row[s]["ks"]["duration"] for row in doc["per_class"].values() if row[s]["ks"]["duration"] is not None]
        lines.append("")
        lines.append(f"{s}: mean duration KS {np.mean(ks):.3f}; {sum(v <= 0.1 for v in ks)} of {len(ks)} classes "
                     "≤ 0.1.")
    lines += ["", "## Packets and bytes per flow: KS before / after (the table moves timestamps only)", "",
              "| class | ar packets | ar bytes | markov packets | markov bytes |", "|---|---|---|---|---|"]
    for cls, row in doc["per_class"].items():
        cells = [f"{row[f'{n} before']['ks'][m]:.2f} / {row[f'{n} after']['ks'][m]:.2f}"
                 for n in ("ar", "markov") for m in ("packets", "bytes")]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    if doc.get("notes"):
        lines += ["", "## Notes", "", *[f"- {note}" for note in doc["notes"]]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
