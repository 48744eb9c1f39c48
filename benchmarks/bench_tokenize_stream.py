"""`pytrafgen tokenize` on a capture larger than it should hold in memory: peak RSS and packets/s
of the streamed path (the default, captures read in chunks) on a multi-GB capture, side by side
with the in-memory path (``--chunk-packets 0``) and the streamed one on a smaller capture, each
in a fresh process (the whole command, as a user runs it, one worker).

The captures are the shared lab captures in time order, repeated with each copy shifted past
the last (the `detect run` benchmark's builder, ``bench_detect.build_capture``), written to
/tmp and deleted afterwards. Peak RSS is the child's ru_maxrss (RUSAGE_CHILDREN of a wrapper
process that runs only it). Writes benchmarks/results/tokenize_stream.md and .json.
``--previous FOLDER`` also runs the big capture with the previous code (``previous_code.py``).

    OMP_NUM_THREADS=1 python benchmarks/bench_tokenize_stream.py [--big-gb 2] [--small-mb 256]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_common import cpu_model
from bench_detect import build_capture

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/pytrafgen-bench/tokenize-stream")
RESULTS = REPO / "benchmarks" / "results"
PACKET_BYTES = 145  # about what one record of the shared captures takes in a pcap, header included

RSS_CHILD = r"""
import json, resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode:
    sys.exit(proc.stderr[-2000:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
manifest = json.loads(proc.stdout)
print(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024,
                  "packets": sum(s["packets"] for s in manifest["sources"]),
                  "flows": sum(c["flows"] for c in manifest["counts"].values()),
                  "tokens": sum(c["tokens"] for c in manifest["counts"].values())}))
"""


def run_tokenize(capture: Path, labels: Path, chunk_packets: int | None, timeout_s: int,
                 code: Path | None = None) -> dict[str, Any]:
    """One run in a fresh process; ``code``: the previous code's folder (``previous_code.py``)."""
    out = WORK / "dataset"
    pytrafgen = [sys.executable, "-m", "pytrafgen"] if code is None else [
        sys.executable, str(Path(__file__).with_name("previous_code.py")), str(code)]
    command = [*pytrafgen, "tokenize", str(capture), "--labels", str(labels), "--out", str(out),
               "--force", "-j", "1", "--json"]
    if chunk_packets is not None:
        command += ["--chunk-packets", str(chunk_packets)]
    print("running", " ".join(command[1:]), flush=True)
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, *command], capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode:
        sys.exit(f"tokenize failed: {proc.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout)
    figures["dataset_mb"] = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    shutil.rmtree(out)
    figures.update(file_mb=capture.stat().st_size / 1e6, chunk_packets=chunk_packets,
                   packets_per_s_wall=figures["packets"] / figures["wall_s"],
                   packets_per_s_cpu=figures["packets"] / figures["cpu_s"])
    print(json.dumps(figures), flush=True)
    return figures


def markdown(report: dict[str, Any]) -> str:
    rows = report["runs"]
    lines = ["", "## Captures larger than memory: `pytrafgen tokenize` streamed", "",
             f"`{report['command']}` — {report['date']} — {report['cpu']}, nproc {report['nproc']}; load average "
             f"before {report['load_before']}, after {report['load_after']} (a shared machine: wall times drift, "
             "the CPU column is what the process used, user + system).", "",
             "Input: the 13 shared captures (/work/shared/data/captures) in time order, repeated with each copy "
             "shifted 200 s past the last one (the `detect run` benchmark's builder), written to /tmp and deleted "
             "after the run. Each row is the whole command (`pytrafgen tokenize CAPTURE --labels … -j 1 --json`) "
             "in a fresh process; peak RSS is its ru_maxrss.", "",
             "| run | capture MB | packets | flows | wall s | CPU s | packets/s (CPU) | packets/s (wall) | peak RSS MB "
             "| dataset MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        how = "in memory (`--chunk-packets 0`)" if r["chunk_packets"] == 0 else (
            f"streamed, {r['chunk_packets']:,}-record chunks" if r["chunk_packets"] else "streamed (default chunks)")
        lines.append(f"| {r['label']}: {how} | {r['file_mb']:,.0f} | {r['packets']:,} | {r['flows']:,} | "
                     f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['packets_per_s_cpu']:,.0f} | "
                     f"{r['packets_per_s_wall']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['dataset_mb']:,.0f} |")
    lines += ["", *report["notes"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--small-mb", type=float, default=256.0)
    parser.add_argument("--timeout-s", type=int, default=900, help="per tokenize run")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results files")
    parser.add_argument("--previous", type=Path, help="also run the big capture with the previous code in FOLDER "
                        "(previous_code.py), in the same run")
    parser.add_argument("--previous-label", default="previous code")
    args = parser.parse_args()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    WORK.mkdir(parents=True, exist_ok=True)
    labels = WORK / "labels.csv"
    runs: list[dict[str, Any]] = []
    try:
        small = build_capture(int(args.small_mb * 1e6 / PACKET_BYTES), WORK / "small.pcap")
        big = build_capture(int(args.big_gb * 1e9 / PACKET_BYTES), WORK / "big.pcap")
        labels.write_text("file,class,label\nsmall.pcap,lab_mix,benign\nbig.pcap,lab_mix,benign\n")
        cases: list[tuple[str, Any, int | None, Path | None]] = [
            ("small", small, 0, None), ("small", small, None, None), ("big", big, None, None)]
        if args.previous:
            cases.append((f"big, {args.previous_label}", big, None, args.previous))
        for label, capture, chunk, code in cases:
            figures = run_tokenize(Path(capture["path"]), labels, chunk, args.timeout_s, code)
            runs.append({"label": label, **figures, "load_1min_after": round(os.getloadavg()[0], 2)})
    finally:
        shutil.rmtree(WORK, ignore_errors=True)  # the multi-GB captures are never kept
    small_mem, small_stream, big_stream = runs[:3]
    notes = [
        f"- peak RSS, streamed, {big_stream['file_mb'] / 1e3:.1f} GB vs {small_stream['file_mb']:.0f} MB capture: "
        f"{big_stream['peak_rss_mb'] / small_stream['peak_rss_mb']:.2f}× for "
        f"{big_stream['file_mb'] / small_stream['file_mb']:.1f}× the capture",
        f"- peak RSS on the {small_stream['file_mb']:.0f} MB capture, streamed vs in memory: "
        f"{small_stream['peak_rss_mb'] / small_mem['peak_rss_mb']:.2f}×",
        f"- packets/s (CPU), streamed vs in memory ({small_stream['file_mb']:.0f} MB): "
        f"{small_stream['packets_per_s_cpu'] / small_mem['packets_per_s_cpu']:.2f}×; streamed "
        f"{big_stream['file_mb'] / 1e3:.1f} GB vs {small_stream['file_mb']:.0f} MB: "
        f"{big_stream['packets_per_s_cpu'] / small_stream['packets_per_s_cpu']:.2f}×",
        "- what still grows with the capture is per flow of the dataset, not per packet: each flow's token "
        "offset and length, addresses and first-frame bytes (for the address plan), about 100 B, held until the "
        "flows are split; the packets are read in chunks, and the tokens and the payload samples (for the payload "
        "fill: at most 2 × 2 × 2 KiB per flow) are spilled to scratch files beside the output and read back a "
        "block at a time (docs/tokenizer.md, \"Captures larger than memory\"): "
        f"{(big_stream['peak_rss_mb'] - small_stream['peak_rss_mb']) / (big_stream['flows'] - small_stream['flows']) * 1e6 / 1e3:.2f} GB "
        "of peak RSS per million more flows between the two streamed runs, allocator slack included.",
    ]
    for prev in runs[3:]:
        notes.append(f"- {prev['label']} on the same {prev['file_mb'] / 1e3:.1f} GB capture in the same run: peak RSS "
                     f"{prev['peak_rss_mb']:,.0f} MB vs {big_stream['peak_rss_mb']:,.0f} MB "
                     f"({prev['peak_rss_mb'] / big_stream['peak_rss_mb']:.2f}×), CPU {prev['cpu_s']:.1f} s vs "
                     f"{big_stream['cpu_s']:.1f} s ({prev['cpu_s'] / big_stream['cpu_s']:.2f}×)")
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "nproc": os.cpu_count(), "load_before": load_before,
              "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
              "command": "OMP_NUM_THREADS=1 python benchmarks/bench_tokenize_stream.py " + " ".join(sys.argv[1:]),
              "runs": runs, "notes": notes}
    text = markdown(report)
    print(text)
    if not args.no_write:
        (RESULTS / "tokenize_stream.json").write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / "tokenize_stream.md").write_text(text.lstrip("\n"))


if __name__ == "__main__":
    main()
