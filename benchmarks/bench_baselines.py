"""Baseline generators side by side: training time and sampling speed of ``markov``, ``gan`` and
``diffusion`` at a realistic size on all shared captures, in one run, with ratios to markov.

* data: every capture of ``--captures`` (manifest.csv gives the class), read with the C++
  reader, flows assembled, field records via ``records_from_packets``;
* training: markov fits completely; gan and diffusion (``--size``, default ``small``) run
  ``--gan-iterations`` / ``--diffusion-iterations`` optimizer steps, and the time of the size's
  full schedule is extrapolated from the measured seconds per step;
* sampling: flows per second and packets per second of ``sample`` (field records), and of the
  builder writing them to pcap;
* fidelity (an indicator, not the evaluation): ``pytrafgen.evaluate.fidelity`` EMD / JSD of the
  generated flows against the real flows of the same classes (the data they trained on), after
  the measured steps.

No GPU was available when the committed results were taken; on one, pass ``--threads`` as you
like and the generators pick ``cuda`` themselves (``device: auto``).

    python benchmarks/bench_baselines.py --gan-iterations 2000 --diffusion-iterations 300 \
        --per-class 150 --diffusion-per-class 1
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import cpu_model, write_results

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames, write_records
from pytrafgen.capture import read_pcap
from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables
from pytrafgen.evaluate.fidelity import fidelity
from pytrafgen.flows import assemble_flows
from pytrafgen.plugins import get_generator
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import records_from_packets

REPO = Path(__file__).resolve().parents[1]


class RecordsDataset:
    """The TrafficDataset interface over in-memory records (all flows are the train split)."""

    def __init__(self, records: FieldRecords, classes: list[str], kinds: list[str]) -> None:
        self._records, self.classes, self.class_kinds = records, classes, kinds

    def records(self, split: str) -> FieldRecords:
        return self._records


def load_captures(folder: Path) -> tuple[RecordsDataset, EvalSet, AddressPlan, int]:
    with (folder / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = [r["class"] for r in rows]
    parts, tables, plan = [], [], AddressPlan()
    for k, row in enumerate(rows):
        table = read_pcap(folder / row["file"])
        flows = assemble_flows(table)
        labels = np.full(len(flows.proto), k, np.int16)
        parts.append(records_from_packets(table, flows, labels, classes))
        plan.classes.update(AddressPlan.learn(table, flows, labels, classes).classes)
        tables.append((table, row["class"]))
    records = _concat(parts, classes)
    real = evalset_from_tables(tables, "real", {r["class"]: r["label"] for r in rows}).relabel(classes)
    return RecordsDataset(records, classes, [r["label"] for r in rows]), real, plan, sum(len(t) for t, _ in tables)


def _concat(parts: list[FieldRecords], classes: list[str]) -> FieldRecords:
    blob_at, flow_at = 0, 0
    packets: dict[str, list[np.ndarray]] = {k: [] for k in parts[0].packets}
    for r in parts:
        for k, v in r.packets.items():
            shift = blob_at if k.endswith("_off") else flow_at if k == "flow" else 0
            packets[k].append((v + shift).astype(v.dtype) if shift else v)
        blob_at += len(r.blob)
        flow_at += r.n_flows
    return FieldRecords({k: np.concatenate(v) for k, v in packets.items()},
                        {k: np.concatenate([r.flows[k] for r in parts]) for k in parts[0].flows},
                        np.concatenate([r.blob for r in parts]), classes)


def generated_evalset(records: FieldRecords, plan: AddressPlan, kinds: dict[str, str]) -> EvalSet:
    """Build the records and label each re-assembled flow by its packets' generated class."""
    frames = build_frames(records, plan, seed=0)
    table = frames.to_table()
    flows = assemble_flows(table)
    record_class = records.flows["label"][records.packets["flow"][frames.packet]]
    n = len(np.asarray(flows.proto))
    votes = np.zeros((n, len(records.classes)), np.int64)
    inside = flows.flow_id >= 0
    np.add.at(votes, (flows.flow_id[inside], record_class[inside]), 1)
    labels = [records.classes[int(c)] for c in votes.argmax(1)]
    return evalset_from_tables([(table, labels)], "generated", kinds).relabel(records.classes)


def machine() -> dict[str, Any]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"nproc": nproc, "cpu": cpu_model(), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}


def sample_counts(real_labels: np.ndarray, classes: list[str], per_class: int) -> dict[str, int]:
    present = np.bincount(real_labels, minlength=len(classes))
    return {c: int(min(present[k], per_class)) for k, c in enumerate(classes) if present[k]}


def timed(fn: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_one(name: str, dataset: RecordsDataset, settings: dict[str, Any], full_iterations: int | None,
            counts: dict[str, int], plan: AddressPlan, real: EvalSet, out_dir: Path) -> dict[str, Any]:
    gen = get_generator(name)(settings)
    _, fit_s, fit_cpu = timed(lambda: gen.fit(dataset, settings))
    result: dict[str, Any] = {"generator": name, "settings": {k: v for k, v in gen.settings.items()
                                                               if not isinstance(v, dict)},
                              "fit_seconds": fit_s, "fit_cpu_seconds": fit_cpu}
    if full_iterations is not None:
        steps = int(gen.settings["iterations"])
        per_step = gen.history["cpu_seconds"] / steps
        result.update(measured_iterations=steps, cpu_seconds_per_iteration=per_step,
                      size_iterations=full_iterations,
                      extrapolated_full_training_cpu_seconds=per_step * full_iterations
                      + (fit_cpu - gen.history["cpu_seconds"]))
    records, sample_s, sample_cpu = timed(lambda: gen.sample(counts, seed=1))
    summary, write_s, _ = timed(lambda: write_records(out_dir / f"{name}.pcap", records, plan, seed=1))
    result.update(sampled_flows=records.n_flows, sampled_packets=records.n_packets, sample_seconds=sample_s,
                  sample_cpu_seconds=sample_cpu, flows_per_cpu_second=records.n_flows / sample_cpu,
                  packets_per_cpu_second=records.n_packets / sample_cpu, pcap_write_seconds=write_s,
                  pcap_packets=summary["packets"], build_skipped=summary["skipped"])
    fid = fidelity(real, generated_evalset(records, plan, real.class_kinds))
    per_class = [v["emd_mean"] for v in fid["per_class"].values() if v["emd_mean"] is not None]
    # a class with a single real flow has constant flow-level fields, whose EMD is unscaled (bytes):
    # the median over classes is not dominated by such a class
    result["fidelity"] = {"emd_mean": fid.get("emd_mean"), "jsd_mean": fid.get("jsd_mean"),
                          "emd_median_over_classes": float(np.median(per_class)) if per_class else None,
                          "per_class_emd": {c: v["emd_mean"] for c, v in fid["per_class"].items()}}
    print(f"{name}: fit {fit_cpu:.1f} CPU s, sample {records.n_flows} flows in {sample_cpu:.2f} CPU s, "
          f"EMD median {result['fidelity']['emd_median_over_classes']}", file=sys.stderr)
    return result


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Baseline generators: training time and sampling speed ({report['date']})", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {m['nproc']} CPU cores ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} thread(s); "
             f"GPU: {m['gpu'] or 'none in this session — CPU figures only'}.", "",
             f"Data: {report['data']['captures']} — {report['data']['packets']:,} packets, "
             f"{report['data']['flows']:,} flows, {report['data']['classes']} classes.", "",
             "Times are CPU seconds of the benchmark process (torch single-threaded): the machine is shared "
             f"(load average {report['load_average']}), so wall-clock times are in the JSON only.", "",
             "| generator | size | training (measured) | CPU s / step | full schedule (extrapolated) | "
             "sample flows / CPU s | sample packets / CPU s | × markov (packets) | EMD mean | EMD median (classes) "
             "| JSD mean |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = next(r for r in report["results"] if r["generator"] == "markov")["packets_per_cpu_second"]
    for r in report["results"]:
        steps = r.get("measured_iterations")
        lines.append(
            f"| {r['generator']} | {r['settings'].get('size', '-')} | {r['fit_cpu_seconds']:.1f} s"
            + (f" ({steps} steps)" if steps else " (complete)")
            + f" | {r.get('cpu_seconds_per_iteration', 0):.3f} | "
            + (f"{r['extrapolated_full_training_cpu_seconds'] / 60:.0f} min ({r['size_iterations']} steps)"
               if steps else "-")
            + f" | {r['flows_per_cpu_second']:,.1f} | {r['packets_per_cpu_second']:,.0f} | "
            f"{r['packets_per_cpu_second'] / base:.4f} | {r['fidelity']['emd_mean']:.4f} | "
            f"{r['fidelity']['emd_median_over_classes']:.4f} | {r['fidelity']['jsd_mean']:.4f} |")
    ar = report.get("ar_reference")
    if ar:
        lines += ["", f"Next to the AR model ({ar['source']}, {ar['date']}, its own run on this machine, wall-clock "
                  "under the same kind of load):"]
        lines += [f"* AR `{s['size']}` samples {s['packets_per_s']:,.1f} packets/s "
                  f"({s['packets_per_s'] / base:.5f} × markov)" for s in ar["sampling"]]
    partial = [r["generator"] for r in report["results"]
               if r.get("measured_iterations", 0) < r.get("size_iterations", 0)]
    lines += ["", "Fidelity (``pytrafgen.evaluate.fidelity``: EMD of min-max scaled fields, JSD of categorical ones) "
              "is against the flows the generators trained on"
              + (f"; {', '.join(partial)} after only the measured steps, far from trained" if partial else "")
              + ": an indicator, not the evaluation (``pytrafgen evaluate``). Flows sampled: "
              + ", ".join(f"{r['generator']} {r['sampled_flows']}" for r in report["results"])
              + " (diffusion sampling is slow on a CPU, so few flows: its figures are noisy).",
              "Sampling speed is ``Generator.sample`` (field records, payload/option filling and seq/ack "
              "reconstruction included); building and writing the pcap is timed separately in the JSON.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=Path, default=REPO.parent / "shared" / "data" / "captures")
    ap.add_argument("--size", default="small")
    ap.add_argument("--gan-iterations", type=int, default=200)
    ap.add_argument("--diffusion-iterations", type=int, default=60)
    ap.add_argument("--per-class", type=int, default=150, help="flows sampled per class (markov, gan)")
    ap.add_argument("--diffusion-per-class", type=int, default=4, help="flows per class for diffusion (slow on CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "baselines")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work_dir = tempfile.TemporaryDirectory(prefix="bench-baselines-")  # generated pcaps: not results
    work = Path(work_dir.name)
    started = time.perf_counter()
    dataset, real, plan, n_packets = load_captures(args.captures)
    load_s = time.perf_counter() - started
    records = dataset.records("train")
    labels = records.flows["label"].astype(np.int64)
    counts = sample_counts(labels, dataset.classes, args.per_class)
    from pytrafgen_diffusion.generator import SIZES as DIFFUSION_SIZES
    from pytrafgen_gan.generator import SIZES as GAN_SIZES

    results = [
        run_one("markov", dataset, {}, None, counts, plan, real, work),
        run_one("gan", dataset, {"size": args.size, "iterations": args.gan_iterations},
                GAN_SIZES[args.size]["iterations"], counts, plan, real, work),
        run_one("diffusion", dataset, {"size": args.size, "iterations": args.diffusion_iterations},
                DIFFUSION_SIZES[args.size]["iterations"],
                sample_counts(labels, dataset.classes, args.diffusion_per_class), plan, real, work),
    ]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": machine(), "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
              "data": {"captures": str(args.captures), "packets": n_packets, "flows": records.n_flows,
                       "record_packets": records.n_packets, "classes": len(dataset.classes), "load_seconds": load_s},
              "results": results}
    ar_path = REPO / "benchmarks" / "results" / "ar_cpu.json"
    if ar_path.is_file():
        ar = json.loads(ar_path.read_text())
        report["ar_reference"] = {"source": str(ar_path.relative_to(REPO)), "date": ar.get("date"),
                                  "sampling": [{"size": x["size"], "packets_per_s": x["packets_per_s"]}
                                               for x in ar.get("sampling", [])]}
    write_results(args.out, report, markdown(report))
    work_dir.cleanup()


if __name__ == "__main__":
    main()
