"""Streaming memory benchmark: peak RSS and packets/s of ``pytrafgen.iter_pcap`` over a
capture of ≥ 1 GB, side by side with ``read_pcap`` of a smaller prefix (whose memory grows
with the file), in one run.

The capture is built in /tmp by repeating the records of the shared CC0 captures (never
committed). Each measurement runs in a fresh subprocess, so its peak is its own: peak RSS is
VmHWM from /proc/self/status (also resource.getrusage's ru_maxrss), split by sampling RssAnon
(heap, numpy columns) and RssFile (pages of the memory-mapped capture) after every chunk.
Writes benchmarks/results/stream_memory.json and .md.

    python benchmarks/bench_stream_memory.py [--gb 1.0] [--prefix-mb 128]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"
WORK = Path("/tmp/pytrafgen-bench")
RESULTS = REPO / "benchmarks" / "results"
MB = 1 << 20


def build_capture(min_bytes: int) -> Path:
    """A classic pcap of at least ``min_bytes``: the CC0 captures' records, repeated."""
    path = WORK / f"stream_{min_bytes // MB}MB.pcap"
    if path.exists() and path.stat().st_size >= min_bytes:
        return path
    files = sorted(SHARED.glob("*.pcap"))
    if not files:
        sys.exit(f"no shared captures under {SHARED} (set PYTRAFGEN_SHARED_DATA)")
    header, bodies = b"", []
    for f in files:
        blob = f.read_bytes()
        # same magic (µs, little-endian) and link type as the first file, else left out
        if header and blob[:4] + blob[20:24] != header[:4] + header[20:24]:
            continue
        header = header or blob[:24]
        bodies.append(blob[24:])
    body = b"".join(bodies)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(header[:16] + struct.pack("<I", 262144) + header[20:24])
        written = 24
        while written < min_bytes:
            fh.write(body)
            written += len(body)
    tmp.replace(path)
    return path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(mode: str, path: str, chunk: int) -> dict[str, Any]:
    """Runs inside the subprocess: stream or read, and report throughput and memory."""
    import resource

    import pytrafgen

    base_kb = _status_kb("VmRSS")
    peak_anon = peak_file = 0
    packets = captured = 0
    start = time.perf_counter()
    if mode == "stream":
        for table in pytrafgen.iter_pcap(path, chunk_packets=chunk):
            packets += len(table)
            captured += int(table.caplen.sum())
            peak_anon = max(peak_anon, _status_kb("RssAnon"))
            peak_file = max(peak_file, _status_kb("RssFile"))
    else:
        table = pytrafgen.read_pcap(path)
        packets, captured = len(table), int(table.caplen.sum())
        peak_anon, peak_file = _status_kb("RssAnon"), _status_kb("RssFile")
    seconds = time.perf_counter() - start
    return {
        "mode": mode, "chunk_packets": chunk if mode == "stream" else None,
        "file_mb": round(os.path.getsize(path) / MB, 1), "packets": packets, "captured_mb": round(captured / MB, 1),
        "seconds": round(seconds, 2), "packets_per_s": round(packets / seconds),
        "mb_per_s": round(os.path.getsize(path) / MB / seconds, 1),
        "rss_before_mb": round(base_kb / 1024, 1),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_anon_mb": round(peak_anon / 1024, 1), "peak_rss_file_mb": round(peak_file / 1024, 1),
    }


def run_child(mode: str, path: Path, chunk: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, str(path), str(chunk)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def prefix_capture(source: Path, prefix_mb: int) -> Path:
    """The first ``prefix_mb`` MB of ``source``, cut at a record boundary."""
    out = WORK / f"stream_prefix_{prefix_mb}MB.pcap"
    if out.exists():
        return out
    limit = prefix_mb * MB
    with source.open("rb") as src:
        data = src.read(limit + 300_000)
    at = 24
    while at + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        if at + 16 + caplen > limit:
            break
        at += 16 + caplen
    out.write_bytes(data[:at])
    return out


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1),
            "load_average": os.getloadavg()}


def render(doc: dict[str, Any]) -> str:
    rows = doc["runs"]
    lines = [
        "# Streaming memory (iter_pcap over a ≥ 1 GB capture)", "",
        f"`{doc['command']}` — {doc['date']}, {doc['machine']['nproc']} cores ({doc['machine']['cpu']}), "
        f"load average {', '.join(f'{x:.1f}' for x in doc['machine']['load_average'])}.", "",
        "| run | file MB | packets | s | packets/s | peak RSS MB | anon peak MB | file-backed peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"iter_pcap chunk {r['chunk_packets']:,}" if r["mode"] == "stream" else "read_pcap (whole)"
        lines.append(f"| {name} | {r['file_mb']} | {r['packets']:,} | {r['seconds']} | {r['packets_per_s']:,} | "
                     f"{r['peak_rss_mb']} | {r['peak_rss_anon_mb']} | {r['peak_rss_file_mb']} |")
    lines += ["", "Ratios:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["ratios"].items()]
    lines += ["", doc["note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the streamed capture")
    parser.add_argument("--prefix-mb", type=int, default=128, help="size of the read_pcap comparison")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path, chunk = args.child
        print(json.dumps(measure(mode, path, int(chunk))))
        return
    big = build_capture(int(args.gb * (1 << 30)))
    small = prefix_capture(big, args.prefix_mb)
    runs = [run_child("stream", big, 100_000), run_child("stream", big, 1_000_000),
            run_child("read", small, 0), run_child("stream", small, 100_000)]
    s100k, s1m, whole, small_stream = runs
    ratios = {
        "peak RSS / file size, iter_pcap 100k chunks on the big file":
            round(s100k["peak_rss_mb"] / s100k["file_mb"], 3),
        "peak anon RSS, iter_pcap 1M vs 100k chunks": round(s1m["peak_rss_anon_mb"] / s100k["peak_rss_anon_mb"], 2),
        "peak anon RSS, big file vs prefix (iter_pcap 100k chunks)":
            round(s100k["peak_rss_anon_mb"] / small_stream["peak_rss_anon_mb"], 2),
        "peak anon RSS, read_pcap of the prefix vs iter_pcap of the big file":
            round(whole["peak_rss_anon_mb"] / s100k["peak_rss_anon_mb"], 2),
        "packets/s, iter_pcap 100k vs read_pcap": round(s100k["packets_per_s"] / whole["packets_per_s"], 2),
    }
    doc = {
        "command": "python " + shlex.join(["benchmarks/bench_stream_memory.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "runs": runs, "ratios": ratios,
        "note": ("Anonymous memory is the numpy columns of the chunks alive at once (the consumer's "
                 "previous chunk and the one being read) plus the interpreter: it depends on the "
                 "chunk size, not on the file size. File-backed RSS is the memory-mapped capture: the "
                 "reader gives back the pages of records it has consumed (madvise DONTNEED), so it "
                 "stays flat too. Peak RSS is VmHWM, which also catches peaks between samples."),
    }
    from pytrafgen.atomic import atomic_file

    with atomic_file(RESULTS / "stream_memory.json", "w") as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")
    with atomic_file(RESULTS / "stream_memory.md", "w") as fh:
        fh.write(render(doc))
    print(render(doc))


if __name__ == "__main__":
    main()
