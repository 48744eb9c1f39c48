"""End-to-end throughput as a user gets it: the CLI and the public API, each in a fresh process,
wall time (and the CPU time the process used, which other jobs on a shared machine cannot
inflate), with the bare C++ call beside each API figure and dpkt / scapy in the same run.

Input: every shared capture interleaved by time into one capture (HTTP, MQTT, CoAP, floods,
scans), repeated ``--copies`` times, each copy an hour after the last (so flows stay apart);
and, for ``-j``, the 13 captures as separate files.

    python benchmarks/bench_e2e.py --out benchmarks/results/e2e
    python benchmarks/bench_e2e.py --previous /tmp/prev --previous-label "main 5e59e02"   # side by side

``--previous FOLDER`` times the pytrafgen in FOLDER (see ``previous_code.py``) with the same
commands and calls in the same run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_model, write_results
from previous_code import ENV as PREVIOUS_ENV

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURES = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"
CHILD = Path(__file__).with_name("e2e_child.py")
PREVIOUS_CLI = Path(__file__).with_name("previous_code.py")
HOUR_NS = 3600 * 10**9


def make_mixed(captures: list[Path], copies: int, out: Path) -> int:
    """All captures interleaved by time into ``out``, repeated ``copies`` times; returns packets."""
    from pytrafgen.capture import PacketTable, read_pcap, write_pcap

    table = PacketTable.concat([read_pcap(p) for p in captures])
    order = np.argsort(table.ts_ns, kind="stable")
    frames = [table.frame(int(i)) for i in order]
    ts = np.asarray(table.ts_ns)[order]
    ts = ts - ts.min()
    span = int(ts.max()) + HOUR_NS
    write_pcap(out, frames * copies, np.concatenate([ts + k * span for k in range(copies)]))
    return len(frames) * copies


CHILD_ENV: dict[str, str] = {}  # set in main: how every timed process runs


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process: wall seconds, CPU seconds (user + system), its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env={**CHILD_ENV, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout}


def best(cmd: list[str], cwd: Path, repeats: int, before_each: Any = None,
         env: dict[str, str] | None = None) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        runs.append(timed(cmd, cwd, env))
    out = min(runs, key=lambda r: r["wall_s"])
    out["all_wall_s"] = [r["wall_s"] for r in runs]
    out["min_cpu_s"] = min(r["cpu_s"] for r in runs)
    return out


def child(mode: str, capture: Path, cwd: Path, repeats: int, limit: int = 0, code: Path | None = None) -> dict[str, Any]:
    """An API measurement in fresh processes (best of ``repeats`` by the API call's CPU time),
    of this checkout or of the pytrafgen in ``code``."""
    runs = []
    for _ in range(repeats):
        r = timed([sys.executable, str(CHILD), mode, str(capture), str(limit)], cwd,
                  {PREVIOUS_ENV: str(code)} if code else None)
        runs.append({**json.loads(r["stdout"].strip().splitlines()[-1]), "process_wall_s": r["wall_s"]})
    out = min(runs, key=lambda r: r["api_cpu_s"])  # the run least disturbed by other processes
    out["all_api_s"] = [r["api_s"] for r in runs]
    out["all_api_cpu_s"] = [r["api_cpu_s"] for r in runs]
    return out


def rate(packets: int, seconds: float) -> float:
    return packets / seconds if seconds > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-files", type=int, default=2, help="copies of the mixed capture for the -j runs (0: none)")
    ap.add_argument("--peer-packets", type=int, default=20000, help="packets dpkt and scapy read")
    ap.add_argument("--previous", type=Path, help="a folder with the previous code's pytrafgen (previous_code.py), "
                                                   "timed side by side")
    ap.add_argument("--previous-label", default="previous code")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "e2e")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite OUT.md from OUT.json, measure nothing")
    args = ap.parse_args()
    if args.markdown_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        saved_args = argparse.Namespace(**saved["args"])
        saved_args.captures = Path(saved_args.captures)
        caps = [Path(c) for c in saved["data"]["capture_files"]]
        write_results(args.out, saved, _markdown(saved, saved_args, caps, saved["runs"],
                                                 {int(k): v for k, v in saved["cli_tokenize_files"].items()},
                                                 {int(k): v for k, v in saved["cli_tokenize_big_files"].items()},
                                                 saved["peers"]), indent=1)
        return

    with (args.captures / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    captures = [args.captures / r["file"] for r in rows]
    exe = shutil.which("pytrafgen") or "pytrafgen"
    with tempfile.TemporaryDirectory(prefix="pytrafgen-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        # as an installed package runs: its modules' bytecode cached (a developer shell may forbid it)
        CHILD_ENV.update({k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        mixed = tmp / "mixed.pcap"
        n_mixed = make_mixed(captures, args.copies, mixed)
        (tmp / "mixed.csv").write_text("file,class,label\nmixed.pcap,mixed,benign\n")
        files = tmp / "files"
        files.mkdir()
        for r in rows:
            os.symlink(args.captures / r["file"], files / r["file"])
        shutil.copy(args.captures / "manifest.csv", files / "manifest.csv")
        n_files = sum(int(r["packets"]) for r in rows) if all(r.get("packets") for r in rows) else None
        # for -j on files that take longer than a worker's start: copies of the mixed capture
        big = tmp / "big"
        big.mkdir()
        for k in range(args.big_files):  # hard links: the tokenizer takes a resolved path once
            os.link(mixed, big / f"mixed{k}.pcap")
        (big / "manifest.csv").write_text("file,class,label\n" + "".join(
            f"mixed{k}.pcap,mixed,benign\n" for k in range(args.big_files)))

        def clear(path: Path) -> Any:
            return lambda: shutil.rmtree(path, ignore_errors=True)

        codes: dict[str, Path | None] = {"this": None}
        if args.previous:
            codes["previous"] = args.previous.resolve()
        runs: dict[str, dict[str, Any]] = {}
        for name, code in codes.items():
            cli = [exe] if code is None else [sys.executable, str(PREVIOUS_CLI), str(code)]
            timed([*cli, "--help"], tmp)  # writes the bytecode cache
            startup = best([*cli, "--help"], tmp, args.repeats)
            cli_mixed = best([*cli, "tokenize", str(mixed), "--labels", str(tmp / "mixed.csv"), "--out",
                              str(tmp / "ds"), "-j", "1", "-q"], tmp, args.repeats, clear(tmp / "ds"))
            # the same without the CoAP plugin (Python encode: no declared grammar), HTTP and MQTT in C++
            cli_no_coap = best([*cli, "tokenize", str(mixed), "--labels", str(tmp / "mixed.csv"), "--out",
                                str(tmp / "ds"), "-j", "1", "-q"], tmp, args.repeats, clear(tmp / "ds"),
                               {"PYTRAFGEN_BLOCK_PLUGINS": "coap"})
            api = {mode: child(mode, mixed, tmp, args.repeats, code=code)
                   for mode in ("tokenize", "decode", "decode_l4", "build", "write", "write_conform")}
            runs[name] = {"startup": startup, "cli_tokenize_mixed": cli_mixed, "cli_tokenize_mixed_no_coap": cli_no_coap,
                          "api": api}
        cli_j = {j: best([exe, "tokenize", str(files), "--labels", str(files / "manifest.csv"), "--out",
                          str(tmp / f"ds{j}"), "-j", str(j), "-q"], tmp, args.repeats, clear(tmp / f"ds{j}"))
                 for j in (1, 2)}
        cli_big = {j: best([exe, "tokenize", str(big), "--labels", str(big / "manifest.csv"), "--out",
                            str(tmp / f"big{j}"), "-j", str(j), "-q"], tmp, 1, clear(tmp / f"big{j}"))
                   for j in (1, 2)} if args.big_files else {}
        peers = {mode: child(mode, mixed, tmp, 1, args.peer_packets) for mode in ("dpkt", "scapy")}

    result: dict[str, Any] = {
        "benchmark": "end to end: CLI and public API in fresh processes, wall time",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
        "load_average_after": list(os.getloadavg()),
        "data": {"captures": str(args.captures), "mixed_packets": n_mixed, "copies": args.copies,
                 "files": len(captures), "files_packets": n_files, "capture_files": [str(c) for c in captures]},
        "args": {"captures": str(args.captures), "copies": args.copies, "repeats": args.repeats,
                 "big_files": args.big_files, "previous_label": args.previous_label},
        "previous": {"label": args.previous_label, "folder": str(args.previous)} if args.previous else None,
        "runs": runs, "cli_tokenize_files": cli_j, "cli_tokenize_big_files": cli_big, "peers": peers,
    }
    for r in (*(v for run in runs.values() for v in (run["startup"], run["cli_tokenize_mixed"],
                                                      run["cli_tokenize_mixed_no_coap"])), *cli_j.values(),
              *cli_big.values()):
        r.pop("stdout", None)
    result_md = _markdown(result, args, captures, runs, cli_j, cli_big, peers)
    write_results(args.out, result, result_md, indent=1)


def _markdown(result: dict[str, Any], args: Any, captures: list[Path], runs: dict[str, dict[str, Any]],
              cli_j: dict[int, Any], cli_big: dict[int, Any], peers: dict[str, Any]) -> str:
    n_mixed = result["data"]["mixed_packets"]
    prev = runs.get("previous")
    label = args.previous_label
    md = [
        "# End-to-end throughput (fresh processes, wall time)",
        "",
        f"`{result['command']}` — {result['date']} — {result['machine']['cpu']}, nproc "
        f"{result['machine']['nproc']}; load average after the run "
        f"{', '.join(f'{x:.1f}' for x in result['load_average_after'])} (a shared machine: wall times drift, "
        "the CPU columns are what the process itself used, user + system).",
        "",
        f"Input: the {len(captures)} shared captures ({args.captures}) interleaved into one capture with HTTP, "
        f"MQTT, CoAP, floods and scans, repeated {args.copies}× = {n_mixed:,} packets. Best of {args.repeats}"
        + (f"; beside each figure the same command or call with the {label} in the same run." if prev else "."),
        "",
        "| what a user runs | packets | wall s | CPU s | packets/s (CPU) | "
        + (f"{label}: CPU s | {label}: packets/s (CPU) | × faster (CPU) | " if prev else "")
        + "C++ core alone (CPU / wall) |",
        "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if prev else "") + "---:|",
    ]

    def line(name: str, packets: int, wall: float, cpu: float, old_cpu: float | None = None, core: str = "") -> None:
        cells = f"| {name} | {packets:,} | {wall:.3f} | {cpu:.3f} | {rate(packets, cpu):,.0f} |"
        if prev:
            cells += (f" {old_cpu:.3f} | {rate(packets, old_cpu):,.0f} | {old_cpu / cpu:.2f}× |" if old_cpu is not None
                      else " | | |")
        md.append(cells + f" {core} |")

    def core(r: dict[str, Any], what: str = "") -> str:
        return f"{rate(r['packets'], r['core_cpu_s']):,.0f} / {rate(r['packets'], r['core_s']):,.0f}{what}"

    this = runs["this"]
    cli, start = this["cli_tokenize_mixed"], this["startup"]
    old_cli = prev["cli_tokenize_mixed"]["min_cpu_s"] if prev else None
    old_start = prev["startup"]["min_cpu_s"] if prev else None
    api = this["api"]
    tok = api["tokenize"]
    line("`pytrafgen tokenize mixed.pcap -j 1` (whole command)", n_mixed, cli["wall_s"], cli["min_cpu_s"], old_cli,
         core(tok, " (L3/L4 encoder)"))
    line("… less interpreter start and imports (`pytrafgen --help`)", n_mixed, cli["wall_s"] - start["wall_s"],
         cli["min_cpu_s"] - start["min_cpu_s"],
         None if old_cli is None or old_start is None else old_cli - old_start)
    nc = this["cli_tokenize_mixed_no_coap"]
    line("same, CoAP plugin not loaded (`PYTRAFGEN_BLOCK_PLUGINS=coap`: HTTP and MQTT only, both in C++)", n_mixed,
         nc["wall_s"], nc["min_cpu_s"], prev["cli_tokenize_mixed_no_coap"]["min_cpu_s"] if prev else None)
    line("… less interpreter start and imports", n_mixed, nc["wall_s"] - start["wall_s"],
         nc["min_cpu_s"] - start["min_cpu_s"],
         None if not prev or old_start is None else prev["cli_tokenize_mixed_no_coap"]["min_cpu_s"] - old_start)
    rows = (("tokenize", "API: read_pcap + assemble_flows + encode_flows (HTTP, MQTT, CoAP plugins)", ""),
            ("decode", "API: decode (vocabulary with HTTP, MQTT, CoAP)", " (no app spans)"),
            ("decode_l4", "API: decode (vocabulary without app protocols)", " (no app spans)"),
            ("build", "API: build_frames (addresses, ISNs, lengths, checksums)", ""),
            ("write", "API: write_records(conform=False) (build, flow labels, pcap file)", None),
            ("write_conform", "API: write_records() (default: conform first)", None))
    for mode, name, what in rows:
        r = api[mode]
        line(name, r["packets"], r["api_s"], r["api_cpu_s"], prev["api"][mode]["api_cpu_s"] if prev else None,
             core(r, what) if what is not None else "")
    for mode, name in (("dpkt", "dpkt: read + dissect (+ HTTP on port 80)"), ("scapy", "scapy: read + dissect")):
        p = peers[mode]
        line(name, p["packets"], p["api_s"], p["api_cpu_s"])
    md += ["", f"Many files: `pytrafgen tokenize` on the {len(captures)} captures as separate files:", "",
           "| -j | wall s | CPU s | speed-up (wall) |", "|---:|---:|---:|---:|"]
    for j, r in cli_j.items():
        md.append(f"| {j} | {r['wall_s']:.3f} | {r['min_cpu_s']:.3f} | {cli_j[1]['wall_s'] / r['wall_s']:.2f}× |")
    if cli_big:
        md += ["", f"Many large files: {args.big_files} copies of the mixed capture "
               f"({args.big_files * n_mixed:,} packets), one run each:", "",
               "| -j | wall s | CPU s | packets/s (wall) | packets/s (CPU) | speed-up (wall) |",
               "|---:|---:|---:|---:|---:|---:|"]
        for j, r in cli_big.items():
            md.append(f"| {j} | {r['wall_s']:.3f} | {r['min_cpu_s']:.3f} | "
                      f"{rate(args.big_files * n_mixed, r['wall_s']):,.0f} | "
                      f"{rate(args.big_files * n_mixed, r['min_cpu_s']):,.0f} | {cli_big[1]['wall_s'] / r['wall_s']:.2f}× |")
    md += ["", f"Interpreter start and imports (`pytrafgen --help`): {start['wall_s']:.3f} s wall, "
           f"{start['min_cpu_s']:.3f} s CPU"
           + (f" ({label}: {prev['startup']['min_cpu_s']:.3f} s CPU)" if prev else "") + ". "
           "Every process runs with its bytecode cached, as an installed package does. "
           "API rows time the call inside a fresh process (the process's own start not included), "
           "wall and this process's CPU time (the C++ loops run in the calling thread); "
           "peers run once on the first packets of the same capture."]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
