"""The detector benchmark's report (``bench_detect.py``): detect.md from the results dict —
tables per part, which targets are met, and why the figures are what they are."""

from __future__ import annotations

from typing import Any

import numpy as np

CROSS_NOTE = "lab recording SEED=3, capture.sh, 2026-12-03"


def _runs(d: dict[str, Any], step: str) -> str:
    return ", ".join(f"{v:.2f}" for v in d.get(f"{step}_cpu_s_all", []))


def markdown(report: dict[str, Any]) -> str:
    lines = ["# pytrafgen detect", "",
             f"Measured {report['date']} (last part) on {report['cpu']} (2 cores shared with other sessions; "
             "one thread, `OMP_NUM_THREADS=1`). Commands, one per part: "
             + "; ".join(f"({p}) " + " + ".join(f"`{c}`" for c in (cs if isinstance(cs, list) else [cs]))
                         for p, cs in sorted(report.get("commands", {}).items()))
             + ". Each part writes its own section of this file.", "",
             f"Training data: `{report['train_captures']}` (13 lab classes). Independent test recording: "
             f"`{report.get('cross_captures')}` ({CROSS_NOTE}). Test sets hold at most "
             f"{report['max_test_flows']} flows per class (seeded choice). Flows: idle timeout 120 s, cut at "
             "100 packets.", ""]
    ab = report.get("ab")
    if ab:
        lines += ["## (a) within the shared captures, (b) across recordings", "",
                  "(a): flow-level stratified 80/20 split of the shared captures, held-out flows. "
                  "(b): the same detectors on the SEED=3 recording.", "",
                  "| detector | (a) macro-F1, held-out shared flows | (b) macro-F1, SEED=3 recording | training CPU s |",
                  "|---|---:|---:|---:|"]
        for kind, e in ab.items():
            cross = e.get("cross", {}).get("macro_f1")
            lines.append(f"| {kind} | {e['within']['macro_f1']:.4f} | "
                         f"{'' if cross is None else f'{cross:.4f}'} | {e['train_cpu_s']} |")
        for kind, e in ab.items():
            seeds = e.get("within_seeds")
            if seeds:
                lines += ["", f"(a) {kind} over split seeds {seeds['seeds']}: macro-F1 "
                          f"{np.mean(seeds['macro_f1']):.4f} ± {np.std(seeds['macro_f1'], ddof=1):.4f} (mean ± sd; "
                          f"min {min(seeds['macro_f1']):.4f}, max {max(seeds['macro_f1']):.4f}; each: "
                          + ", ".join(f"{v:.4f}" for v in seeds['macro_f1']) + ")."]
        lines += ["", "Confusions (true class → predicted class: flows; the off-diagonal cells of each "
                  "confusion matrix, (a) split seed "
                  f"{ab.get('forest', {}).get('within_seeds', {}).get('seeds', [0])[0]}):", "",
                  "| detector | (a) held-out shared flows | (b) SEED=3 recording |", "|---|---|---|"]
        for kind, e in ab.items():
            cells = ["; ".join(f"{t} → {p}: {n}" for t, p, n in part.get("confused", [])) or "none"
                     if "confused" in part else "not recorded" for part in (e["within"], e.get("cross", {}))]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        classes = list(next(iter(ab.values()))["within"]["f1"])
        first = next(iter(ab.values()))
        lines += ["", "Per-class F1 (a → b), with the number of test flows of each class (a / b):", "",
                  "| class | flows | " + " | ".join(ab) + " |", "|---|---|" + "---|" * len(ab)]
        for c in classes:
            cells = [f"{first['within'].get('support', {}).get(c, '?')} / "
                     f"{first.get('cross', {}).get('support', {}).get(c, '?')}"]
            for e in ab.values():
                w = e["within"]["f1"].get(c)
                x = e.get("cross", {}).get("f1", {}).get(c)
                cells.append(f"{'' if w is None else f'{w:.3f}'} → {'' if x is None else f'{x:.3f}'}")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    c = report.get("c")
    if c:
        lines += ["## (c) scarce real data: real only vs real + generated", "",
                  f"Each detector trained on {c['train_fraction']:.0%} of the real training flows per class "
                  f"(at least one), alone and with {c['generated']['flows']} markov-generated flows "
                  f"({c['generated']['per_class']} per class; `pytrafgen tokenize` → `train --generator markov` "
                  "→ `generate` on the shared captures), each generated flow weighing as much as a real one. "
                  "The markov model was trained on the tokenized shared captures' train split, which overlaps "
                  "the held-out shared flows: the SEED=3 column is the clean comparison. Delta: real + generated "
                  "minus real only, mean over the split seeds, and each seed's.", "",
                  "| detector | split seeds | SEED=3: real only | real + generated | delta | delta per seed | "
                  "held-out shared: real only | real + generated | delta |", "|---|---|---:|---:|---:|---|---:|---:|---:|"]
        for kind, e in c["detectors"].items():
            cells = [", ".join(map(str, e["seeds"]))]
            for where in ("cross", "within"):
                m = e.get(where)
                cells += (["", "", ""] if m is None else
                          [f"{m['real_only']:.4f}", f"{m['real_plus_generated']:.4f}", f"**{m['delta']:+.4f}**"])
                if where == "cross":
                    cells.append(", ".join(f"{v:+.3f}" for v in (m or {}).get("deltas", [])))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        per_class = {kind: e for kind, e in c["detectors"].items()
                     if all("cross_f1" in r for r in e["runs"]["real_only"] + e["runs"]["real_plus_generated"])}
        if per_class:
            classes = sorted({k for e in per_class.values() for k in e["runs"]["real_only"][0]["cross_f1"]})
            lines += ["", "Per-class F1 on the SEED=3 recording, real only → real + markov-generated (mean over the "
                      "split seeds; classes whose F1 moves by more than 0.01 in bold):", "",
                      "| class | " + " | ".join(per_class) + " |", "|---|" + "---|" * len(per_class)]
            for cls in classes:
                cells = []
                for e in per_class.values():
                    base = float(np.mean([r["cross_f1"].get(cls, 0.0) for r in e["runs"]["real_only"]]))
                    aug = float(np.mean([r["cross_f1"].get(cls, 0.0) for r in e["runs"]["real_plus_generated"]]))
                    cell = f"{base:.3f} → {aug:.3f}"
                    cells.append(f"**{cell}**" if abs(aug - base) > 0.01 else cell)
                lines.append(f"| {cls} | " + " | ".join(cells) + " |")
        loo = c.get("forest_leave_one_class_out")
        forest_c = c["detectors"].get("forest", {}).get("cross")
        if loo and forest_c:
            lines += ["", "The forest with the markov-generated flows of one class left out (all other classes' "
                      f"generated flows kept; SEED=3, mean over the same split seeds; with every class: "
                      f"{forest_c['real_plus_generated']:.4f}, real only: {forest_c['real_only']:.4f}):", "",
                      "| generated class left out | SEED=3 macro-F1 | vs all generated | vs real only |",
                      "|---|---:|---:|---:|"]
            for name, v in sorted(loo.items(), key=lambda kv: -kv[1]["cross"]):
                lines.append(f"| {name} | {v['cross']:.4f} | {v['cross'] - forest_c['real_plus_generated']:+.4f} | "
                             f"{v['cross'] - forest_c['real_only']:+.4f} |")
        variants = [(kind, name, v) for kind, e in c["detectors"].items() for name, v in e.get("variants", {}).items()]
        if variants:
            lines += ["", "Other generated sets and weights (`--generated-weight W`: a generated flow's training "
                      "weight next to a real flow's 1), against the same real-only runs:", "",
                      "| detector | generated flows | SEED=3: real + generated | delta | delta per seed | "
                      "held-out shared: delta |", "|---|---|---:|---:|---|---:|"]
            sources = c.get("sources", {})
            for kind, name, v in variants:
                what = (f"markov, weight {name.rsplit('_', 1)[1]}" if name.startswith("markov_weight_") else
                        f"bundled default AR model, {sources.get(name, {}).get('flows', '?')} flows")
                x, w = v.get("cross"), v.get("within")
                lines.append(f"| {kind} | {what} | "
                             + (f"{x['real_plus_generated']:.4f} | {x['delta']:+.4f} | "
                                + ", ".join(f"{d:+.3f}" for d in x["deltas"]) if x else " | | ")
                             + f" | {'' if w is None else format(w['delta'], '+.4f')} |")
        lines.append("")
    d = report.get("d")
    if d:
        lines += ["## (d) `detect run` throughput and memory (forest from (a))", "",
                  f"Capture: {d['capture']['path']} ({d['packets']:,} packets, {d['flows']:,} flows, "
                  f"{d['capture']['bytes'] / 1e6:.0f} MB; the shared captures repeated with shifted time). "
                  f"One fresh process, CPU time of the measuring thread, the least of {d.get('repeats', 1)} runs "
                  "of each step (reader and streamed runs alternating):", "",
                  "| step | CPU s (least) | packets per CPU-s | every run, CPU s |", "|---|---:|---:|---|",
                  f"| read_pcap alone | {d['read_cpu_s']:.2f} | {d['read_packets_per_cpu_s'] / 1e6:.2f}M | "
                  f"{_runs(d, 'read')} |",
                  f"| assemble_flows | {d['assemble_cpu_s']:.2f} | | {_runs(d, 'assemble')} |",
                  f"| features | {d['features_cpu_s']:.2f} | | {_runs(d, 'features')} |",
                  f"| forest predict | {d['predict_cpu_s']:.2f} | | {_runs(d, 'predict')} |",
                  f"| whole streamed run (read + flows + features + predict), 65,536-packet chunks (default) | "
                  f"{d['run_cpu_s']:.2f} | **{d['run_packets_per_cpu_s'] / 1e6:.2f}M** "
                  f"(wall {d['run_packets_per_wall_s'] / 1e6:.2f}M) | {_runs(d, 'run')} |"]
        if "run_large_chunks_cpu_s" in d:
            lines.append(f"| the same, 262,144-packet chunks | {d['run_large_chunks_cpu_s']:.2f} | "
                         f"{d['packets'] / d['run_large_chunks_cpu_s'] / 1e6:.2f}M | {_runs(d, 'run_large_chunks')} |")
        lines += [""]
        if d.get("memory"):
            lines += ["`pytrafgen detect run DET CAPTURE --out verdicts.csv` in a fresh process (CLI, forest, "
                      "default 65,536-packet chunks):", "",
                      "| capture | size | flows | peak RSS | wall | verdicts CSV |", "|---|---:|---:|---:|---:|---:|"]
            for g in d["memory"]:
                lines.append(f"| {g['path']} | {g['bytes'] / 1e9:.2f} GB | {g['flows']:,} | "
                             f"**{g['peak_rss_mb']:.0f} MB** | {g['wall_s']:.0f} s | {g['verdicts_csv_mb']:.0f} MB |")
            lines.append("")
    lines += targets(report)
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets next to what was measured."""
    rows = []
    ab = report.get("ab", {})
    for kind in ("forest", "transformer"):
        if kind in ab:
            v = ab[kind]["within"]["macro_f1"]
            seeds = ab[kind].get("within_seeds")
            if seeds:  # one held-out flow moves a split's figure by up to 0.02: judged on the mean
                mean = float(np.mean(seeds["macro_f1"]))
                rows.append(f"| (a) {kind} macro-F1 within the shared captures, mean of {len(seeds['seeds'])} split "
                            f"seeds | ≥ 0.99 | {mean:.4f} (split seed {seeds['seeds'][0]}: {v:.4f}) | "
                            f"{'met' if mean >= 0.99 else f'missed by {0.99 - mean:.4f}'} |")
                continue
            rows.append(f"| (a) {kind} macro-F1 within the shared captures | ≥ 0.99 | {v:.4f} | "
                        f"{'met' if v >= 0.99 else f'missed by {0.99 - v:.4f}'} |")
    for kind, e in ab.items():
        if "cross" in e:
            v = e["cross"]["macro_f1"]
            rows.append(f"| (b) {kind} macro-F1 on the SEED=3 recording | aim ≥ 0.95 | {v:.4f} | "
                        f"{'met' if v >= 0.95 else f'missed by {0.95 - v:.4f}'} |")
    c = report.get("c", {}).get("detectors", {})
    if c:
        better = [k for k, e in c.items() if e.get("cross", {}).get("delta", 0) > 0]
        rows.append(f"| (c) real + generated beats real only (SEED=3), detectors | ≥ 3 | {len(better)} of {len(c)} "
                    f"({', '.join(better) or 'none'}) | {'met' if len(better) >= 3 else 'missed'} |")
    d = report.get("d")
    if d:
        v = d["run_packets_per_cpu_s"]
        rows.append(f"| (d) `detect run` packets per CPU-s (forest) | ≥ 1M | {v / 1e6:.2f}M | "
                    f"{'met' if v >= 1e6 else f'missed: {v / 1e6:.2f}× of the target'} |")
    if not rows:
        return []
    return ["## Targets", "", "| target | wanted | measured | |", "|---|---|---|---|", *rows, "",
            *[line for why in WHY for line in (why, "")]]


# Why the figures fall where they do (read with the tables above).
WHY = [
    "Why (a) and (b): the within-shared macro-F1 averages 13 classes, some with very few "
    "held-out flows (nmap_version_scan: 18 flows in all, 4 held out; mqtt_publish_flood: one "
    "1,996-packet flow cut into 20 segments, 4 held out), so one flow moves a class's F1 by up "
    "to 0.3 and the macro-F1 by 0.01–0.02. The split is by flow and stratified per class "
    "(`stratified_split`: every class on both sides). Before this round nearly every miss was "
    "nmap_version_scan: 8 of its 18 flows are nmap's raw SYN probes, packet for packet those of "
    "nmap_syn_scan, sent when both scans had opened the same handful of flows, so a context "
    "that looks back only (flows the client opened in the last 30 s) cannot separate them; "
    "its HTTP/MQTT probes were taken for benign_http or mqtt_connect_flood. Two context "
    "columns now also count the client's flows (and those to the flow's port) within 30 s "
    "after the flow starts: the port scan goes on to 5,000 flows, the version scan stops at 18 "
    "(docs/detect.md says what the context may carry and the caveat: each lab class was "
    "recorded in its own file with one client). The transformer gets the same four columns as "
    "learned embeddings added to its pooled state, and 700 fine-tuning steps instead of 400. "
    "Before → now, (a) split seed 0 / (b) SEED=3: forest 0.987 / 0.958 → 0.998 / 0.996 "
    "(five split seeds: 0.953 mean, min 0.919 → 0.997 ± 0.005, min 0.989); boosting 0.982 / "
    "0.964 → 0.979 / 0.997; transformer 0.912 / 0.969 → 0.987 / 0.994 (previous round). Still "
    "missed: the transformer within, now measured over three split seeds like the forest: "
    "0.980, 0.991, 0.991, mean 0.988 ± 0.006, so the target (judged on the mean) is missed by "
    "0.002. Its misses are single flows of the smallest classes: split seed 0 took one of the 4 "
    "held-out nmap_version_scan flows for nmap_syn_scan and one udp_flood flow for "
    "mqtt_publish_flood (4 held-out flows: its F1 0.889); the previous round's run of the same "
    "seed gave 0.987 with one other flow wrong (fine-tuning on CPU is not bit-reproducible "
    "across processes here). Its recipe (700 steps of 16 class-balanced flows, learning rates "
    "3e-4 / 3e-3 one-cycle, mean pooling over 128 tokens plus the 4 context embeddings) is "
    "unchanged: one fine-tuning costs 237–267 CPU s, 15–40 minutes of wall time on this shared "
    "machine. One change was measured and not adopted: five more embedded columns, the whole "
    "flow's packets and bytes each way and its duration as ⌊log2(1 + value)⌋ (the first 128 "
    "tokens do not show how long a flow goes on), added to the pooled state like the context. "
    "Split seeds 0, 1, 2 gave 0.9785, 0.9914, 1.0000 (mean 0.98997, still under 0.99) and "
    "SEED=3 0.9947 (against 0.9956): seed 2 lost its one miss, seed 0 gained one (benign_coap → "
    "nmap_syn_scan), seed 1 swapped its miss for another, and the SEED=3 recording had two more "
    "wrong flows — single flows either way, no gain (run with `--parts ab --kinds transformer "
    "--within-seeds 3 --jobs 3`, 2026-12-03 17:11 UTC; the inner-validation comparison meant to "
    "choose it was cut short for CPU time). Boosting within is 0.979 on seed 0 (0.998 and 1.000 on "
    "seeds 1 and 2 in a separate run; no target is set for it). logreg, knn and mlp (new in "
    "this round, split seed 0): within 0.961 / 0.941 / 0.958, across 0.995 / 0.965 / 0.986 — "
    "below the trees within the shared captures; no target is set for them. The remaining "
    "misses across recordings are single flows (table above). The transformer's training CPU "
    "time rose from 143 s to 267 s with the steps (237 s in this round's seed-0 run).",
    "Why (c): six detectors, each trained on 10 % of the real training flows (three split seeds; "
    "the transformer one seed, not re-measured in this round: 267 CPU s per training), alone and "
    "with 2,683 markov-generated flows. Four gain on the SEED=3 recording — kNN +0.091, boosting "
    "+0.084, transformer +0.040, MLP +0.031 — and two lose: the forest −0.020 (every seed: −0.016, "
    "−0.041, −0.003) and logistic regression −0.010 (−0.031, −0.005, +0.005). The gains go to the "
    "detectors that are weakest on scarce real data (kNN 0.820 and boosting 0.849 real only: "
    "classes with 1–3 real training flows), the losses to the two that already generalise from "
    "10 % (logistic regression 0.937, forest 0.916). The per-class table shows where the forest "
    "loses: benign_http 0.936 → 0.696 (its flows taken for nmap_version_scan and http_flood) and "
    "http_flood 0.989 → 0.948 (taken for nmap_version_scan). The markov model's HTTP-family flows "
    "(version-scan probes, floods, benign requests, slowloris) overlap one another where the real "
    "ones do not, and its 200 nmap_version_scan flows (against one real training flow) carry a "
    "host context unlike the real scan's (median ⌊log2⌋ of the client's flows in the past window "
    "10 vs 3). Leaving out the generated flows of one class at a time (`--leave-one-class-out`, "
    "table above) raises the forest by at most 0.012 (http_flood, mqtt_publish_flood, benign_http, "
    "slowloris, nmap_version_scan: +0.007 to +0.012 each), and leaving out others lowers it "
    "(http_bruteforce −0.022, nmap_syn_scan −0.010, benign_mqtt −0.009: those generated flows "
    "help): no single class is to "
    "blame. Dropping the generated flows a real-only forest gives under 0.5 probability of their "
    "class did not help either (a separate exploration, not in this benchmark: 0.890 against "
    "0.896). Choosing per class whether to use its generated flows, on held-out real flows, is "
    "the next thing to try; not done here. Giving the generated flows less weight (`--generated-weight`, new "
    "in this round) does not turn the forest's loss into a gain: weight 0.1 −0.027, 0.01 −0.003 "
    "(about as good as leaving them out). Logistic regression gains at weight 0.1 (+0.010) and "
    "0.01 (+0.007), so the weight is worth choosing on held-out real flows; kNN has no sample "
    "weights. Flows of the bundled default AR model (50 per class, 652 flows, `--ar-per-class "
    "50`) give the same picture with fewer flows: forest −0.022, boosting +0.074, logistic "
    "regression +0.013, kNN +0.073, MLP +0.023. So generated flows help 4 of the 6 classifiers "
    "at the default weight (5 with logistic regression at weight 0.1 or with the AR flows), never "
    "the random forest; making the generators' HTTP-family flows and per-client flow rates match "
    "the real ones is the fix, not done here. The held-out shared columns are not clean: the "
    "markov model was trained on the tokenized shared captures' train split, which overlaps the "
    "held-out flows.",
    "The `detect run` figures are CPU time on a shared 2-core machine (other sessions running); "
    "each step ran three times and the least counts, the other runs are in the last column. "
    "read_pcap alone moves most (0.1–0.5 s): its cost is mostly first-touch page faults of "
    "the 1M-row table, which depend on what the allocator kept from the previous step, so a "
    "ratio of the run to the reader says little; the streamed run (which allocates per "
    "65,536-packet chunk) is steadier. 0.87M before this round's changes (same capture and "
    "forest size); 1.33M (every run above 1.1M) after the speed-ups and before the context "
    "features, which cost about a tenth more; this run, with the window after each flow (a "
    "finished flow waits until the clock is 30 s past its start, its feature row kept): 1.14M, "
    "every run at least 1.01M, peak RSS as before (556 / 579 MB). "
    "The speed-ups: features only for the flows that finished in a batch (a third of a "
    "batch's flows are still open), sums as bincounts and one column-major assembly (the "
    "features 3× faster, the same values), each distinct feature row predicted once (about "
    "6 flows per distinct row in a batch of this capture) and the forest's probabilities "
    "summed from its leaves without scikit-learn's per-call overhead, bit for bit the same. "
    "The whole-capture feature and predict rows are one call on all 382,672 flows at once, "
    "slower per flow than the streamed batches (fresh memory for every temporary).",
    "Peak RSS hardly grows from the 0.15 GB to the 1.06 GB capture: about 340 MB of it is "
    "the interpreter, scikit-learn and the model (a run on a 450-packet capture peaks there), "
    "the rest one chunk, the open flows' packets and one batch of verdict text.",
]
