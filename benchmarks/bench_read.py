"""Read benchmark: pcap → dissected columns, side by side in one run.

Builds a ≥ 1M-packet pcap in /tmp by repeating the shared captures (never committed), then
measures packets/s, pinned to one core with a warm page cache, of:

* pytrafgen ``read_pcap`` (C++ read + L2–L4 dissection into numpy columns),
* pytrafgen ``iter_pcap`` (the same, streamed in chunks),
* a bare C++ mmap walk over the record headers (``_core.walk_records``: the floor),
* dpkt (Ethernet + IP + TCP/UDP parsing, fields read) on a 200k-packet subset,
* scapy (full dissection) on a 20k-packet subset,
* and, beside them, pytrafgen ``assemble_flows`` on the read table.

Each figure is the best of ``--repeats`` runs, timed twice: wall clock, and the CPU time of
the measuring thread (the C++ loops run in that thread with the GIL released). On a shared
machine the wall clock includes time the thread waited for a core; the CPU time does not,
so ratios are reported on both. Writes benchmarks/results/read.json and read.md.

    python benchmarks/bench_read.py [--packets 1000000] [--repeats 3]

``--fresh K`` adds what a user's first call gets: ``read_pcap`` of a ``--fresh-packets``
(300k) capture as the first call in each of K fresh processes (import untimed; median), the
same process's second (warm) call, and dpkt on the same capture, in the same run.
``--fresh-only`` measures just that and keeps the other figures of the last read.json:

    python benchmarks/bench_read.py --fresh 7 --fresh-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_common import cpu_model

import pytrafgen
from pytrafgen import _core
from pytrafgen.atomic import atomic_file
from pytrafgen.capture import pcap_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"
WORK = Path("/tmp/pytrafgen-bench")


def build_inputs(min_packets: int, subsets: dict[str, int]) -> dict[str, tuple[Path, int]]:
    """The big capture and its leading subsets: name → (path, packets)."""
    files = sorted(SHARED.glob("*.pcap"))
    if not files:
        sys.exit(f"no shared captures under {SHARED} (set PYTRAFGEN_SHARED_DATA)")
    tables = [pytrafgen.read_pcap(f) for f in files]
    base = pytrafgen.PacketTable.concat(tables)
    header_len = 24
    records = pcap_bytes(base, nanosecond=False, linktype=1)[header_len:]
    header = pcap_bytes([], nanosecond=False, linktype=1)
    repeats = -(-min_packets // len(base))
    WORK.mkdir(parents=True, exist_ok=True)
    out = {"full": (WORK / f"read_{repeats * len(base)}.pcap", repeats * len(base))}
    if not out["full"][0].exists():
        with atomic_file(out["full"][0]) as fh:
            fh.write(header)
            for _ in range(repeats):
                fh.write(records)
    rec_end = np.concatenate([[0], np.cumsum(16 + base.caplen.astype(np.int64))])
    for name, count in subsets.items():
        count = min(count, out["full"][1])
        whole, rest = divmod(count, len(base))  # the first `count` records of the big capture
        path = WORK / f"read_{name}_{count}.pcap"
        if not path.exists():
            with atomic_file(path) as fh:
                fh.write(header + records * whole + records[: int(rec_end[rest])])
        out[name] = (path, count)
    return out


def measure(fn: Callable[[], int], repeats: int, before: Callable[[], None] | None = None) -> dict[str, float]:
    """Best-of-``repeats`` wall and thread-CPU seconds of ``fn`` (returns packets handled);
    ``before`` runs untimed ahead of each repeat."""
    best_wall = best_cpu = float("inf")
    packets = 0
    for _ in range(repeats):
        if before is not None:
            before()
        w0, c0 = time.perf_counter(), time.thread_time()
        packets = fn()
        c1, w1 = time.thread_time(), time.perf_counter()
        best_wall, best_cpu = min(best_wall, w1 - w0), min(best_cpu, c1 - c0)
    return {"packets": packets, "wall_s": best_wall, "cpu_s": best_cpu,
            "pps_wall": packets / best_wall, "pps_cpu": packets / best_cpu}


FRESH_CHILD = """
import os, sys, time, json
os.sched_setaffinity(0, {int(sys.argv[2])})
import pytrafgen
out = {}
for call in ("first", "warm"):
    w0, c0 = time.perf_counter(), time.thread_time()
    table = pytrafgen.read_pcap(sys.argv[1])
    out[call] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.thread_time() - c0, "packets": len(table)}
    del table
print(json.dumps(out))
"""


def fresh_first_calls(path: Path, processes: int, cpu: int) -> dict[str, object]:
    """Median over ``processes`` fresh interpreters of their first and second read_pcap."""
    runs = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, "-c", FRESH_CHILD, str(path), str(cpu)], check=True,
                              capture_output=True, text=True)
        runs.append(json.loads(done.stdout))
    out: dict[str, object] = {"processes": processes}
    for call in ("first", "warm"):
        wall = float(np.median([r[call]["wall_s"] for r in runs]))
        cpu_s = float(np.median([r[call]["cpu_s"] for r in runs]))
        packets = runs[0][call]["packets"]
        out[call] = {"packets": packets, "wall_s": wall, "cpu_s": cpu_s, "pps_wall": packets / wall,
                     "pps_cpu": packets / cpu_s,
                     "pps_wall_all": sorted(round(packets / r[call]["wall_s"]) for r in runs),
                     "pps_cpu_all": sorted(round(packets / r[call]["cpu_s"]) for r in runs)}
    return out


def dpkt_reader(path: Path) -> int:
    import dpkt

    n = 0
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                l4 = ip.data
                if isinstance(l4, dpkt.tcp.TCP):
                    _ = (l4.sport, l4.dport, l4.seq, l4.ack, l4.flags, l4.win, len(l4.data))
                elif isinstance(l4, dpkt.udp.UDP):
                    _ = (l4.sport, l4.dport, len(l4.data))
            n += 1
    return n


def scapy_reader(path: Path) -> int:
    from scapy.all import rdpcap  # scapy.all registers the link-layer bindings (Ethernet, …)

    return len(rdpcap(str(path)))


def machine() -> dict[str, object]:
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


def write_results(out_dir: Path, result: dict) -> None:
    with atomic_file(out_dir / "read.json", "w") as fh:
        json.dump(result, fh, indent=2)
    r = result["readers"]
    lines = [
        "# Read benchmark: pcap → dissected columns",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {result['machine']['nproc']} CPUs ({result['machine']['cpu_model']}), "
        f"load average {result['machine']['loadavg_at_start'][0]:.1f} at start, "
        f"{result['machine']['loadavg_at_end'][0]:.1f} at end; pinned to one core, warm page cache.  ",
        f"Input: {result['input_packets']:,} packets ({result['input_bytes'] / 1e6:.0f} MB), the shared captures "
        "repeated; dpkt and scapy read leading subsets of it.",
        "",
        "| reader | packets | wall s | packets/s (wall) | CPU s | packets/s (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in r.items():
        lines.append(f"| {name} | {m['packets']:,} | {m['wall_s']:.3f} | {m['pps_wall']:,.0f} | "
                     f"{m['cpu_s']:.3f} | {m['pps_cpu']:,.0f} |")
    lines += ["", "| ratio | wall | CPU |", "|---|---:|---:|"]
    for name, ratio in result["ratios"].items():
        lines.append(f"| {name} | {ratio['wall']:.2f} | {ratio['cpu']:.2f} |")
    lines += ["", "CPU = CPU time of the measuring thread (the C++ loops run in it without the GIL); on this "
              "shared machine the wall clock also counts time spent waiting for a core.", ""]
    fresh = result.get("fresh")
    if fresh:
        lines += ["## First call in a fresh process", "",
                  f"Command: `{fresh['command']}`  ", f"Date: {fresh['date']}  ",
                  f"Load average {fresh['loadavg_at_start'][0]:.1f} at start, {fresh['loadavg_at_end'][0]:.1f} "
                  f"at end; pinned to one core, warm page cache. Input: {fresh['input_packets']:,} packets "
                  f"({fresh['input_bytes'] / 1e6:.0f} MB). read_pcap: median of {fresh['processes']} fresh "
                  "processes (import not timed), each timing its first call, then a second (warm) one; dpkt "
                  "reads the same capture in this run.", "",
                  "| reader | packets | wall s | packets/s (wall) | CPU s | packets/s (CPU) | per process (CPU) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, m in fresh["readers"].items():
            each = ", ".join(f"{v / 1e6:.1f}M" for v in m.get("pps_cpu_all", []))
            lines.append(f"| {name} | {m['packets']:,} | {m['wall_s']:.3f} | {m['pps_wall']:,.0f} | "
                         f"{m['cpu_s']:.3f} | {m['pps_cpu']:,.0f} | {each} |")
        first, dpkt = fresh["readers"]["read_pcap, first call"], fresh["readers"]["dpkt"]
        lines += ["", f"First call / dpkt: {first['pps_wall'] / dpkt['pps_wall']:.0f}x wall, "
                  f"{first['pps_cpu'] / dpkt['pps_cpu']:.0f}x CPU. Floor 5M, aim 10M packets/s for the first call.",
                  ""]
    with atomic_file(out_dir / "read.md", "w") as fh:
        fh.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="minimum packets in the big capture")
    parser.add_argument("--dpkt-packets", type=int, default=200_000)
    parser.add_argument("--scapy-packets", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--fresh", type=int, default=0, metavar="K", help="first calls in K fresh processes")
    parser.add_argument("--fresh-packets", type=int, default=300_000)
    parser.add_argument("--fresh-only", action="store_true", help="keep the other figures of read.json")
    args = parser.parse_args()

    info = machine()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_read.py", *sys.argv[1:]])
    fresh = None
    if args.fresh:
        path, n = build_inputs(args.fresh_packets, {"fresh": args.fresh_packets})["fresh"]
        path.read_bytes()  # warm the page cache
        load = os.getloadavg()
        first = fresh_first_calls(path, args.fresh, cpu)
        fresh = {"command": command, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "loadavg_at_start": load, "input_packets": n, "input_bytes": path.stat().st_size,
                 "processes": args.fresh,
                 "readers": {"read_pcap, first call": first["first"], "read_pcap, second call": first["warm"],
                             "dpkt": measure(lambda: dpkt_reader(path), 1)}}
        fresh["loadavg_at_end"] = os.getloadavg()
        if args.fresh_only:
            result = json.loads((args.out / "read.json").read_text())
            result["fresh"] = fresh
            write_results(args.out, result)
            print((args.out / "read.md").read_text())
            return
    inputs = build_inputs(args.packets, {"dpkt": args.dpkt_packets, "scapy": args.scapy_packets})
    big, n_big = inputs["full"]
    for path, _ in inputs.values():
        path.read_bytes()  # warm the page cache

    table_holder: list[pytrafgen.PacketTable] = []

    def read_all() -> int:
        table_holder.append(pytrafgen.read_pcap(big))
        return len(table_holder[-1])

    readers = {
        # the previous repeat's table is freed outside the timed region
        "pytrafgen read_pcap": measure(read_all, args.repeats, before=table_holder.clear),
        "pytrafgen iter_pcap (262144/chunk)": measure(
            lambda: sum(len(t) for t in pytrafgen.iter_pcap(big, chunk_packets=262_144)), args.repeats),
        "C++ mmap walk (record headers only)": measure(lambda: _core.walk_records(str(big))[0], args.repeats),
        "pytrafgen assemble_flows": measure(lambda: len(pytrafgen.assemble_flows(table_holder[0]).flow_id),
                                            args.repeats),
        "dpkt": measure(lambda: dpkt_reader(inputs["dpkt"][0]), 1),
        "scapy": measure(lambda: scapy_reader(inputs["scapy"][0]), 1),
    }
    assert readers["pytrafgen read_pcap"]["packets"] == n_big
    ours = readers["pytrafgen read_pcap"]

    def ratio(other: str) -> dict[str, float]:
        return {k: ours[f"pps_{k}"] / readers[other][f"pps_{k}"] for k in ("wall", "cpu")}

    info["loadavg_at_end"] = os.getloadavg()
    result = {
        "fresh": fresh,
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "input_packets": n_big,
        "input_bytes": big.stat().st_size,
        "readers": readers,
        "ratios": {"read_pcap / dpkt": ratio("dpkt"), "read_pcap / scapy": ratio("scapy"),
                   "read_pcap / bare walk": ratio("C++ mmap walk (record headers only)")},
        "floor_pps": 6_000_000,
        "aim_pps": 10_000_000,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)
    print((args.out / "read.md").read_text())


if __name__ == "__main__":
    main()
