"""Memorisation of the bundled default AR model and the markov baseline, beside the real floor.

Generates 40 flows per class with ``pytrafgen generate`` from the bundled default AR checkpoint
and from a markov baseline trained on the same data (the bundled corpus, tokenized as the
default was: ``pytrafgen.demo.default.TOKENIZE_SETTINGS``), then measures exact and near copies
(``pytrafgen.evaluate.copies``) of the training recording (../shared/data/captures) for

* each generated set, and
* the floor: the flows of a second, independent recording of the same 13 classes (default
  /work/rec/seed3: capture.sh with SEED=3) against the training recording — the rate at which
  real traffic that no model saw "copies" the training traffic (floods and scans repeat).

Both sides are taken whole and cut into 16-packet flows (what the default model was trained
on and generates). Writes benchmarks/results/memorisation.{json,md}.

    python benchmarks/bench_memorisation.py [--train ../shared/data/captures] [--second /work/rec/seed3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import cpu_model, write_results

from pytrafgen.evaluate.diversity import memorisation
from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables, load_evalset, read_manifest

REPO = Path(__file__).resolve().parents[1]
FLOWS_PER_CLASS = 40
CUT = 16


def _run(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "pytrafgen", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def generate_sets(work: Path, classes: list[str]) -> dict[str, tuple[Path, float]]:
    """ar and markov pcaps of FLOWS_PER_CLASS flows per class, with the wall time of each generate."""
    from pytrafgen.demo.default import TOKENIZE_SETTINGS, corpus_dir, default_checkpoint

    corpus = corpus_dir()
    dataset = work / "dataset"
    _run("tokenize", str(corpus), "--labels", str(corpus / "manifest.csv"), "--out", str(dataset),
         "--max-flow-packets", str(TOKENIZE_SETTINGS["max_flow_packets"]),
         "--payload-cap", str(TOKENIZE_SETTINGS["payload_cap"]), "--seed", str(TOKENIZE_SETTINGS["seed"]))
    _run("train", str(dataset), "--generator", "markov", "--out", str(work / "markov-ckpt"), "--quiet")
    wanted = [arg for c in classes for arg in ("--class", f"{c}:{FLOWS_PER_CLASS}")]
    out = {}
    for name, ckpt in (("ar", default_checkpoint()), ("markov", work / "markov-ckpt")):
        pcap = work / f"{name}.pcap"
        started = time.perf_counter()
        _run("generate", str(ckpt), *wanted, "--out", str(pcap), "--seed", "0", "--quiet")
        out[name] = (pcap, time.perf_counter() - started)
    return out


def cut(es: EvalSet, paths: list[Path], manifest: dict[str, tuple[str, str]], name: str) -> EvalSet:
    """The same captures as ``es`` with flows cut into CUT-packet chunks."""
    import pytrafgen

    parts = [(pytrafgen.read_pcap(p), manifest[p.name][0]) for p in paths]
    return evalset_from_tables(parts, name, max_flow_packets=CUT).relabel(es.classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "captures")
    parser.add_argument("--second", type=Path, default=Path("/work/rec/seed3"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memorisation")
    parser.add_argument("--rewrite-markdown", action="store_true",
                        help="only write OUT.md again from OUT.json (after a change to the table layout)")
    args = parser.parse_args()
    if args.rewrite_markdown:
        rewrite_markdown(args.out)
        return
    for folder in (args.train, args.second):
        if not (folder / "manifest.csv").is_file():
            sys.exit(f"{folder}: no manifest.csv (a lab recording is needed)")
    train_manifest, second_manifest = read_manifest(args.train / "manifest.csv"), read_manifest(args.second / "manifest.csv")
    train_paths = sorted(args.train / f for f in train_manifest)
    second_paths = sorted(args.second / f for f in second_manifest)
    train_whole = load_evalset(train_paths, "train", train_manifest)
    classes = list(train_whole.classes)
    with tempfile.TemporaryDirectory(prefix="pytrafgen-bench-mem-") as tmp:
        generated = generate_sets(Path(tmp), classes)
        gen_sets = {name: load_evalset([pcap], name).relabel(classes) for name, (pcap, _) in generated.items()}
    sides = {
        "whole": (train_whole, load_evalset(second_paths, "second", second_manifest).relabel(classes)),
        f"cut{CUT}": (cut(train_whole, train_paths, train_manifest, "train-cut"),
                      cut(train_whole, second_paths, second_manifest, "second-cut")),
    }
    figures: dict[str, Any] = {}
    for side, (train, second) in sides.items():
        started = time.perf_counter()
        per_gen = {name: memorisation(train, gen, second) for name, gen in gen_sets.items()}
        floor = next(iter(per_gen.values()))
        figures[side] = {
            "floor": {k: floor[k] for k in ("exact_copy_share_real_test", "near_copy_share_real_test",
                                            "exact_copy_share_real_test_per_class",
                                            "near_copy_share_real_test_per_class")},
            "generated": {name: {k: m[k] for k in ("exact_copy_share", "near_copy_share", "exact_copy_share_per_class",
                                                   "near_copy_share_per_class")} for name, m in per_gen.items()},
            "train_flows": train.n_flows, "second_flows": second.n_flows, "metric_wall_s": time.perf_counter() - started,
            "settings": floor["settings"],
        }
    report = {
        "what": "exact and near copies of the training recording's flows: ar (bundled default) and markov, "
                f"{FLOWS_PER_CLASS} flows per class, beside the rate at which a second recording copies the first",
        "training_recording": str(args.train),
        "second_recording": f"{args.second} (lab recording SEED=3, capture.sh, 2026-12-03)",
        "generate_wall_s": {name: t for name, (_, t) in generated.items()},
        "cpu": cpu_model(), "figures": figures,
        "command": "python benchmarks/bench_memorisation.py",
    }
    write_results(args.out, report, markdown(report, classes))


def rewrite_markdown(out: Path) -> None:
    """The Markdown again from the JSON a run wrote (no generation, no measuring)."""
    import json

    report = json.loads(out.with_suffix(".json").read_text())
    classes = list(next(iter(report["figures"].values()))["floor"]["exact_copy_share_real_test_per_class"])
    write_results(out, report, markdown(report, classes))


def _mean(per_class: dict[str, float]) -> float | None:
    return sum(per_class.values()) / len(per_class) if per_class else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def markdown(report: dict[str, Any], classes: list[str]) -> str:
    lines = ["# Memorisation: exact and near copies of the training flows", "",
             f"Training recording: `{report['training_recording']}`. Floor: the flows of "
             f"`{report['second_recording']}` against the training recording. Generated: "
             f"{FLOWS_PER_CLASS} flows per class with `pytrafgen generate --seed 0` from the bundled default AR "
             "checkpoint and from a markov baseline trained on the bundled corpus "
             f"(generate wall time: {', '.join(f'{k} {v:.0f} s' for k, v in report['generate_wall_s'].items())}; "
             f"CPU {report['cpu']}). Command: `{report['command']}`.", "",
             "A near copy has a training flow's protocol, server port and per-packet directions and payload "
             "lengths, and its payloads are within max(1, ceil(2 % of their bytes)) edits (Levenshtein) of that "
             "flow's; every exact copy (same direction, TCP flags, lengths and payload bytes per packet) is a "
             "near copy. Lower is better, down to the floor, not to zero. The generated sets hold the same number "
             "of flows per class, the recordings do not (syn_flood and udp_flood hold most of their flows), so "
             "compare the per-class rows and their mean over classes, not the all-flows row. Generated payload "
             "bytes past the 16th come from each checkpoint's payload fill (`payload_fill.json`): where a class's "
             "real payload is one repeated byte (udp_flood: 64 x 'X'), generated flows that reproduce it are exact "
             "copies, as the real flood's flows are (floor 100 %).", ""]
    for side, fig in report["figures"].items():
        floor, gens = fig["floor"], fig["generated"]
        names = list(gens)
        lines += [f"## Flows {'whole' if side == 'whole' else 'cut into ' + side[3:] + '-packet flows'}", "",
                  f"{fig['train_flows']} training flows, {fig['second_flows']} flows of the second recording.", "",
                  "| class | " + " | ".join(f"{n} exact | {n} near" for n in names) + " | floor exact | floor near |",
                  "|---|" + "---:|" * (2 * len(names) + 2)]
        rows = [("all flows", {n: (gens[n]["exact_copy_share"], gens[n]["near_copy_share"]) for n in names},
                 floor["exact_copy_share_real_test"], floor["near_copy_share_real_test"]),
                ("mean over classes", {n: (_mean(gens[n]["exact_copy_share_per_class"]),
                                           _mean(gens[n]["near_copy_share_per_class"])) for n in names},
                 _mean(floor["exact_copy_share_real_test_per_class"]),
                 _mean(floor["near_copy_share_real_test_per_class"]))]
        for c in classes:
            rows.append((c, {n: (gens[n]["exact_copy_share_per_class"].get(c), gens[n]["near_copy_share_per_class"].get(c))
                             for n in names},
                         floor["exact_copy_share_real_test_per_class"].get(c),
                         floor["near_copy_share_real_test_per_class"].get(c)))
        for c, per, fe, fn in rows:
            lines.append(f"| {c} | " + " | ".join(f"{_pct(per[n][0])} | {_pct(per[n][1])}" for n in names)
                         + f" | {_pct(fe)} | {_pct(fn)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
