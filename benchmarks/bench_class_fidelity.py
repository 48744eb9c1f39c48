"""Class fidelity of the AR generator: do generated flows look like the class they were asked for?

1. Tokenize the labeled captures (payload cap 16) into a dataset.
2. Pre-train on benign flows, fine-tune on malicious flows (with benign replay), time and
   steps as given.
3. Generate ``-n`` flows per class, one pcap per class, through the builder (repair on), and
   read them back with ``pytrafgen.read_pcap`` + ``assemble_flows``.
4. A random forest trained on *real* flows (per-flow features below) labels each generated flow;
   the figure per class is the share of its generated flows assigned to it, plus macro-F1
   against the requested classes. The same forest's accuracy on held-out real flows is shown
   beside it as the ceiling.

Features per flow (from the packets the reader dissects): protocol, server port, packets and
wire bytes per direction, duration, mean payload per direction, SYN / SYN-ACK / FIN / RST / PSH
counts, mean TTL and mean TCP window of the client. Generated flows are at most one context
window long, so every figure is computed twice: over whole flows, and over the first
``--first-packets`` packets of every flow (real and generated alike).

    python benchmarks/bench_class_fidelity.py --work /tmp/fidelity --size small \
        --pretrain-steps 60 --finetune-steps 120 -n 50 --out benchmarks/results/ar_class_fidelity
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from bench_common import cpu_model, write_results
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

import pytrafgen
from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames, write_records
from pytrafgen.dataset import TrafficDataset
from pytrafgen.generators.ar.generator import ARGenerator
from pytrafgen.records import FieldRecords
from pytrafgen.tokenizer.pipeline import tokenize_captures

FEATURES = ("proto", "server_port", "packets_c2s", "packets_s2c", "log_bytes_c2s", "log_bytes_s2c",
            "log_duration_us", "mean_payload_c2s", "mean_payload_s2c", "syn", "synack", "fin", "rst", "psh",
            "mean_ttl_c2s", "mean_window_c2s")
MAX_REAL_FLOWS_PER_CLASS = 1000


def flow_features(table: pytrafgen.PacketTable, flows: pytrafgen.FlowTable, first_packets: int = 0) -> np.ndarray:
    """(F, len(FEATURES)) float features; with ``first_packets`` only each flow's first packets count."""
    n_flows = len(flows.proto)
    fid = flows.flow_id
    keep = fid >= 0
    if first_packets:
        order = np.argsort(fid, kind="stable")
        sorted_fid = fid[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_fid)) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, len(fid)]))
        rank = np.empty(len(fid), np.int64)
        rank[order] = np.arange(len(fid)) - run_start
        keep &= rank < first_packets
    c2s, s2c = keep & (flows.direction == 0), keep & (flows.direction == 1)

    def total(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(fid[mask], weights=values[mask].astype(np.float64), minlength=n_flows)

    ones = np.ones(len(fid))
    n_c2s, n_s2c = total(ones, c2s), total(ones, s2c)
    flags = table.tcp_flags.astype(np.int64)
    first = np.full(n_flows, np.inf)
    last = np.full(n_flows, -np.inf)
    np.minimum.at(first, fid[keep], table.ts_ns[keep].astype(np.float64))
    np.maximum.at(last, fid[keep], table.ts_ns[keep].astype(np.float64))
    duration_us = np.where(np.isfinite(first), (last - first) / 1e3, 0.0)
    is_tcp = table.proto == 6
    columns = [
        flows.proto.astype(np.float64), flows.server_port.astype(np.float64), n_c2s, n_s2c,
        np.log1p(total(table.wirelen, c2s)), np.log1p(total(table.wirelen, s2c)), np.log1p(duration_us),
        total(table.payload_wirelen, c2s) / np.maximum(n_c2s, 1),
        total(table.payload_wirelen, s2c) / np.maximum(n_s2c, 1),
        total(ones, keep & is_tcp & ((flags & 0x12) == 0x02)), total(ones, keep & is_tcp & ((flags & 0x12) == 0x12)),
        total(ones, keep & is_tcp & ((flags & 0x01) != 0)), total(ones, keep & is_tcp & ((flags & 0x04) != 0)),
        total(ones, keep & is_tcp & ((flags & 0x08) != 0)),
        total(table.ttl, c2s) / np.maximum(n_c2s, 1), total(table.window, c2s) / np.maximum(n_c2s, 1),
    ]
    return np.stack(columns, axis=1)


def generated_flows(records: FieldRecords, plan: AddressPlan, seed: int, pcap: Path, first_packets: int
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Features of each generated flow (packets as the builder wrote them, grouped by the flow
    they were generated for) and how many flows reading the pcap back finds (a generated flow
    that reopens its connection reads back as two); grouping by generated flow measures what
    the generator made."""
    write_records(pcap, records, plan, seed)
    read_back = len(pytrafgen.assemble_flows(pytrafgen.read_pcap(pcap)))
    built = build_frames(records, plan, seed)
    table = built.to_table()
    if len(table) != len(built.packet):
        raise RuntimeError(f"{pcap}: {len(built.packet) - len(table)} built frames did not dissect")
    flows = SimpleNamespace(flow_id=records.packets["flow"][built.packet].astype(np.int64),
                            direction=records.packets["direction"][built.packet],
                            proto=records.flows["proto"], server_port=records.flows["server_port"])
    return flow_features(table, flows), flow_features(table, flows, first_packets), read_back


def read_flows(path: Path, first_packets: int, max_flow_packets: int) -> tuple[np.ndarray, np.ndarray]:
    table = pytrafgen.read_pcap(path)
    flows = pytrafgen.assemble_flows(table, max_flow_packets=max_flow_packets)
    return flow_features(table, flows), flow_features(table, flows, first_packets)


def real_flows(captures: Path, first_packets: int, max_flow_packets: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes: list[str] = []
    whole, first, labels = [], [], []
    with (captures / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        name = row["class"]
        if name not in classes:
            classes.append(name)
        w, f = read_flows(captures / row["file"], first_packets, max_flow_packets)
        if len(w) > MAX_REAL_FLOWS_PER_CLASS:
            pick = rng.choice(len(w), MAX_REAL_FLOWS_PER_CLASS, replace=False)
            w, f = w[pick], f[pick]
        whole.append(w)
        first.append(f)
        labels.append(np.full(len(w), classes.index(name)))
    return classes, np.concatenate(whole), np.concatenate(first), np.concatenate(labels)


def forest(x: np.ndarray, y: np.ndarray) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=0, n_jobs=1).fit(x, y)


def evaluate(classes: list[str], real_x: np.ndarray, real_y: np.ndarray, gen_x: np.ndarray, gen_y: np.ndarray
             ) -> dict[str, object]:
    """Held-out real accuracy per class, then share of generated flows assigned to their class."""
    # a class with a single flow (one long capture) can only be in the training part
    alone = np.bincount(real_y)[real_y] < 2
    idx_train, idx_test = train_test_split(np.flatnonzero(~alone), test_size=0.3, random_state=0,
                                           stratify=real_y[~alone])
    idx_train = np.concatenate([idx_train, np.flatnonzero(alone)])
    train_x, test_x, train_y, test_y = real_x[idx_train], real_x[idx_test], real_y[idx_train], real_y[idx_test]
    held_out = forest(train_x, train_y).predict(test_x)
    model = forest(real_x, real_y)
    predicted = model.predict(gen_x)
    per_class = {}
    for k, name in enumerate(classes):
        mine = gen_y == k
        if not mine.any():
            continue
        counts = np.bincount(predicted[mine], minlength=len(classes))
        confused = [(classes[j], int(counts[j])) for j in np.argsort(-counts) if j != k and counts[j]][:2]
        real_mine = test_y == k
        per_class[name] = {
            "generated": int(mine.sum()), "assigned_to_class": float(counts[k] / mine.sum()),
            "most_confused_with": confused,
            "real_held_out_accuracy": float((held_out[real_mine] == k).mean()) if real_mine.any() else None,
        }
    return {
        "per_class": per_class,
        "generated_macro_f1": float(f1_score(gen_y, predicted, average="macro", labels=np.unique(gen_y))),
        "generated_accuracy": float((predicted == gen_y).mean()),
        "real_held_out_macro_f1": float(f1_score(test_y, held_out, average="macro")),
    }


def machine() -> str:
    return (f"{subprocess.check_output(['nproc']).decode().strip()} cores, {cpu_model()}, shared with other jobs "
            f"(load average {os.getloadavg()[0]:.1f} at the end)")


def to_markdown(report: dict) -> str:
    t = report["training"]
    lines = [
        "# AR generator: class fidelity", "",
        f"Date: {report['date']}  ", f"Machine: {report['machine']}  ", f"Command: `{report['command']}`", "",
        f"Model: `{t['size']}` with {t['overrides']}: {t['params'] / 1e6:.2f}M parameters, context {t['block_size']}; "
        + ", ".join(f"{st['stage']} {st['steps']} steps (best validation loss "
                    + (f"{st['best_val_loss']:.3f})" if st["best_val_loss"] is not None else "n/a)")
                    for st in t["stages"])
        + (f", {t['seconds']:.0f} s on the CPU in all" if t["seconds"] is not None else "")
        + f". Trained on: {report['dataset']}. Real reference for the classifier: "
        f"{report['real_reference']}.", "",
        f"Generated {report['flows_per_class']} flows per class (seed {report['seed']}, temperature "
        f"{report['temperature']}), built with repair, read back with `pytrafgen.read_pcap`; "
        f"{report['sampling']['redrawn']} flows were redrawn (an application message that did not decode, or no packet). "
        "Features are computed per generated flow; reading the pcaps back with `assemble_flows` finds "
        + ", ".join(f"{c} {n}" for c, n in report["read_back_flows_per_class"].items())
        + f" flows (of {report['flows_per_class']} each; the builder gives every generated flow its own "
        "5-tuple, and a generated flow that reopens its connection reads back as two).",
        "", "Random forest (200 trees, balanced) trained on real flows; figure = share of the generated flows "
        "of each class that it assigns to that class.", "",
    ]
    for variant, title in (("whole_flows", "whole flows"), ("first_packets", f"first {report['first_packets_n']} "
                                                                               "packets of each flow")):
        r = report[variant]
        lines += [f"## Features over {title}", "",
                  f"Generated: macro-F1 {r['generated_macro_f1']:.3f}, accuracy {r['generated_accuracy']:.3f}. "
                  f"Real held-out (ceiling): macro-F1 {r['real_held_out_macro_f1']:.3f}.", "",
                  "| class | generated | assigned to its class | most confused with | real held-out accuracy |",
                  "|---|---|---|---|---|"]
        for name, c in r["per_class"].items():
            confused = ", ".join(f"{n} ({k})" for n, k in c["most_confused_with"]) or "-"
            real = f"{c['real_held_out_accuracy']:.2f}" if c["real_held_out_accuracy"] is not None else "n/a"
            lines.append(f"| {name} | {c['generated']} | {c['assigned_to_class']:.2f} | {confused} | {real} |")
        lines.append("")
    return "\n".join(lines)


def dataset_description(args: argparse.Namespace, dataset: TrafficDataset) -> str:
    return (f"{args.captures} (payload cap {args.payload_cap}, flows cut at {args.max_flow_packets} packets), "
            f"{dataset.n_flows('train')} training flows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/captures")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (dataset, checkpoint, pcaps)")
    parser.add_argument("--size", default="small")
    parser.add_argument("--set", action="append", default=[], help="model/training override key=value")
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--payload-cap", type=int, default=16)
    parser.add_argument("--max-flow-packets", type=int, default=16,
                        help="cut flows after this many packets, in the dataset and in the real reference alike "
                             "(0: never; the default matches `pytrafgen demo`)")
    parser.add_argument("-n", type=int, default=50, help="generated flows per class")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--first-packets", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-checkpoint", action="store_true",
                        help="evaluate the checkpoint an earlier run left in --work instead of training")
    parser.add_argument("--checkpoint", type=Path,
                        help="evaluate this AR checkpoint (e.g. pytrafgen/data/default_model) instead of training; "
                             "its vocabulary must match the dataset's")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 wins on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ar_class_fidelity"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}

    dataset_dir = args.work / "dataset"
    if not args.checkpoint and not (dataset_dir / "manifest.json").exists():
        tokenize_captures(sorted(args.captures.glob("*.pcap")), args.captures / "manifest.csv", dataset_dir,
                          payload_cap=args.payload_cap, max_flow_packets=args.max_flow_packets, seed=args.seed,
                          workers=1)
    checkpoint = args.work / "checkpoint"
    timing = args.work / "train_seconds.json"
    if args.checkpoint:
        gen = ARGenerator.load(args.checkpoint)
        train_seconds = None  # trained elsewhere: see the checkpoint's own notes
        trained_on = f"checkpoint {args.checkpoint}, trained elsewhere"
    elif args.reuse_checkpoint and timing.exists():  # evaluate the model trained by an earlier run
        gen = ARGenerator.load(checkpoint)
        train_seconds = json.loads(timing.read_text())["seconds"]
        trained_on = dataset_description(args, TrafficDataset(dataset_dir))
    else:
        start = time.perf_counter()
        dataset = TrafficDataset(dataset_dir)
        trained_on = dataset_description(args, dataset)
        gen = ARGenerator(args.size)
        for stage, steps in (("pretrain", args.pretrain_steps), ("finetune", args.finetune_steps)):
            gen.fit(dataset, {**overrides, "stage": stage, "steps": steps, "device": "cpu", "seed": args.seed,
                              "checkpoint_dir": checkpoint})
        train_seconds = time.perf_counter() - start
        gen.save(checkpoint)
        timing.write_text(json.dumps({"seconds": train_seconds}))
    assert gen.model_config is not None and gen.weights is not None

    plan = AddressPlan.from_json(gen.address_plan_json)
    gen.set_sampling(temperature=args.temperature, batch_size=64, device="cpu")
    classes, real_whole, real_first, real_y = real_flows(args.captures, args.first_packets, args.max_flow_packets,
                                                           args.seed)
    gen_whole, gen_first, gen_y = [], [], []
    redrawn = 0
    read_back: dict[str, int] = {}
    for k, name in enumerate(classes):
        records = gen.sample({name: args.n}, seed=args.seed + k)
        redrawn += gen.last_sample_stats["redrawn"]
        w, f, read_back[name] = generated_flows(records, plan, args.seed + k, args.work / f"generated_{name}.pcap",
                                                args.first_packets)
        gen_whole.append(w)
        gen_first.append(f)
        gen_y.append(np.full(len(w), k))
    gen_y_all = np.concatenate(gen_y)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "command": " ".join(["python", *sys.argv]),
        "dataset": trained_on,
        "real_reference": f"{args.captures}, flows cut at {args.max_flow_packets} packets (0: never)",
        "training": {"size": "as saved" if args.checkpoint else args.size,
                     "overrides": gen.model_config.to_dict() if args.checkpoint else overrides,
                     "params": sum(t.numel() for t in gen.weights.values()),
                     "block_size": gen.model_config.block_size, "seconds": train_seconds, "stages": gen.completed},
        "flows_per_class": args.n, "seed": args.seed, "temperature": args.temperature,
        "first_packets_n": args.first_packets, "sampling": {"redrawn": redrawn},
        "read_back_flows_per_class": read_back,
        "whole_flows": evaluate(classes, real_whole, real_y, np.concatenate(gen_whole), gen_y_all),
        "first_packets": evaluate(classes, real_first, real_y, np.concatenate(gen_first), gen_y_all),
        "torch_threads": torch.get_num_threads(),
    }
    write_results(args.out, report, to_markdown(report))


if __name__ == "__main__":
    main()
