"""Build + repair throughput, side by side in one run: pytrafgen's builder against scapy and dpkt
rebuilding the same packets with their checksums and lengths recomputed.

* data: every capture listed in ``<captures>/manifest.csv``, read with the C++ reader, flows
  assembled, turned into field records (``records_from_packets``), then tiled to ``--packets``
  packets (the tiles are separate flows sharing the byte blob);
* pytrafgen: ``build_frames`` (address plan draw, ISN draw, C++ build with every length and
  checksum recomputed, Ethernet framing), best of ``--repeats``; also the bare C++ call;
* scapy and dpkt: parse each captured frame, drop its checksums/lengths, serialise again (which
  makes them recompute those), on the first ``--scapy-packets`` / ``--dpkt-packets`` frames.

    python benchmarks/bench_build.py --out benchmarks/results/build
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_model, write_results

from pytrafgen import _core
from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import LINKTYPE_ETHERNET, build_frames
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import records_and_origin

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURES = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / "captures"


def load(folder: Path) -> tuple[FieldRecords, AddressPlan, list[bytes]]:
    """Records of every capture (one class per file), a plan learned from them, and the
    original Ethernet frames of the record packets (for scapy/dpkt)."""
    with (folder / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["class"] for r in rows})
    parts, plans, frames = [], [], []
    for row in rows:
        table = read_pcap(folder / row["file"])
        flows = assemble_flows(table)
        labels = np.full(len(flows), classes.index(row["class"]), np.int16)
        records, origin = records_and_origin(table, flows, labels, classes)
        parts.append(records)
        plans.append(AddressPlan.learn(table, flows, labels, classes))
        frames += [table.frame(int(r)) for r in origin.rows if table.linktype[r] == LINKTYPE_ETHERNET]
    plan = AddressPlan(classes={k: v for p in plans for k, v in p.classes.items() if k != "*"})
    return FieldRecords.concat(parts), plan, frames



def tile(records: FieldRecords, n_packets: int) -> FieldRecords:
    reps = max(1, -(-n_packets // records.n_packets))
    packets = {k: np.tile(v, reps)[:n_packets] for k, v in records.packets.items()}
    shift = np.repeat(np.arange(reps, dtype=np.int32) * records.n_flows, records.n_packets)[:n_packets]
    packets["flow"] = packets["flow"] + shift
    flows = {k: np.tile(v, reps) for k, v in records.flows.items()}
    return FieldRecords(packets, flows, records.blob, records.classes)


def timings(repeats: int, fn) -> tuple[list[float], list[float]]:
    """Wall-clock and this thread's CPU seconds of each run (CPU time is what other processes
    on a shared machine cannot inflate)."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu


def best_of(repeats: int, fn) -> float:
    return min(timings(repeats, fn)[0])


def previous_build(records: FieldRecords, plan: AddressPlan, repeats: int) -> float:
    """Best wall time of ``build_frames`` with the per-flow Python preparation it had before the
    bulk C++ one (kept verbatim in tests/build_reference.py): the same bytes, the old cost."""
    import pytrafgen.build as build

    sys.path.insert(0, str(REPO / "tests"))
    import build_reference

    saved = build._distinct_five_tuples, build._timestamps
    build._distinct_five_tuples, build._timestamps = build_reference._distinct_five_tuples, build_reference._timestamps
    try:
        return best_of(repeats, lambda: build_frames(records, plan, seed=0))
    finally:
        build._distinct_five_tuples, build._timestamps = saved


def bench_scapy(frames: list[bytes]) -> float:
    from scapy.layers.l2 import Ether

    def run() -> None:
        for raw in frames:
            pkt = Ether(raw)
            layer = pkt
            while layer:
                for name in ("chksum", "len", "ihl", "dataofs", "plen", "cksum"):
                    if name in layer.fields:
                        delattr(layer, name)
                layer = layer.payload if layer.payload else None
            bytes(pkt)

    return best_of(1, run)


def bench_dpkt(frames: list[bytes]) -> float:
    import dpkt

    def run() -> None:
        for raw in frames:
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                ip.sum = 0  # dpkt recomputes IP length + checksum, and TCP/UDP checksums, on pack
                if isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP, dpkt.icmp.ICMP)):
                    ip.data.sum = 0
                if isinstance(ip.data, dpkt.udp.UDP):
                    ip.data.ulen = len(ip.data)
            bytes(eth)

    return best_of(1, run)


def machine() -> dict[str, Any]:
    return {"nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()),
            "cpu": cpu_model(), "python": platform.python_version(), "platform": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scapy-packets", type=int, default=2000)
    ap.add_argument("--dpkt-packets", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build")
    args = ap.parse_args()

    base, plan, frames = load(args.captures)
    records = tile(base, args.packets)
    built = build_frames(records, plan, seed=0)
    assert len(built) == records.n_packets, built.skipped
    out_bytes = len(built.data)

    api_times, api_cpu = timings(args.repeats, lambda: build_frames(records, plan, seed=0))
    previous = previous_build(records, plan, args.repeats)
    t_api = min(api_times)
    isn = np.zeros((records.n_flows, 2), np.uint32)
    ends = plan.assign(records, np.random.default_rng(0))
    t_core = best_of(args.repeats, lambda: _core.build_frames(
        records.packets, records.flows, ends["client_addr"], ends["server_addr"], ends["client_mac"],
        ends["server_mac"], isn, records.blob, LINKTYPE_ETHERNET, True, {}, None))
    # scapy / dpkt on a sample spread over every capture
    step_s = max(1, len(frames) // args.scapy_packets)
    step_d = max(1, len(frames) // args.dpkt_packets)
    scapy_frames = frames[::step_s][: args.scapy_packets]
    dpkt_frames = frames[::step_d][: args.dpkt_packets]
    t_scapy = bench_scapy(scapy_frames)
    t_dpkt = bench_dpkt(dpkt_frames)

    rate = {
        "pytrafgen_build_frames": records.n_packets / t_api,
        "pytrafgen_core_only": records.n_packets / t_core,
        "previous_python_preparation": records.n_packets / previous,
        "scapy": len(scapy_frames) / t_scapy,
        "dpkt": len(dpkt_frames) / t_dpkt,
    }
    result = {
        "benchmark": "build + repair (lengths, IPv4 header checksum, TCP/UDP/ICMP checksums, Ethernet framing)",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": 1,
        "data": {"captures": str(args.captures), "distinct_packets": base.n_packets, "packets": records.n_packets,
                 "flows": records.n_flows, "output_bytes": out_bytes,
                 "mean_frame_bytes": out_bytes / records.n_packets},
        "packets": {"pytrafgen": records.n_packets, "scapy": len(scapy_frames), "dpkt": len(dpkt_frames)},
        "seconds": {"pytrafgen_build_frames": t_api, "pytrafgen_core_only": t_core, "previous_python_preparation": previous,
                    "scapy": t_scapy, "dpkt": t_dpkt},
        "pytrafgen_build_frames_all_runs_s": api_times,
        "pytrafgen_build_frames_median_packets_per_s": records.n_packets / float(np.median(api_times)),
        "pytrafgen_build_frames_cpu_s": api_cpu,
        "pytrafgen_build_frames_packets_per_cpu_s": records.n_packets / min(api_cpu),
        "load_average": list(os.getloadavg()),
        "packets_per_s": rate,
        "output_mb_per_s": out_bytes / t_api / 1e6,
        "ratio_vs_scapy": rate["pytrafgen_build_frames"] / rate["scapy"],
        "ratio_vs_dpkt": rate["pytrafgen_build_frames"] / rate["dpkt"],
        "floor_3M_met": rate["pytrafgen_build_frames"] >= 3e6,
    }
    md = [
        "# Build + repair throughput",
        "",
        f"`{result['command']}` — {result['date']} — {result['machine']['cpu']}, nproc {result['machine']['nproc']}, one thread",
        "",
        f"{base.n_packets} distinct packets from {args.captures.name}/ (all shared captures), tiled to "
        f"{records.n_packets} packets ({result['data']['mean_frame_bytes']:.0f} B mean frame). Every IP length, "
        "IHL, UDP length, TCP data offset, IPv4 header checksum and TCP/UDP/ICMP checksum recomputed.",
        "",
        "| implementation | packets | seconds | packets/s | pytrafgen is × faster |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in (("pytrafgen build_frames (Python API)", "pytrafgen_build_frames"),
                      ("pytrafgen _core.build_frames only", "pytrafgen_core_only"),
                      ("build_frames with the previous per-flow Python preparation", "previous_python_preparation"),
                      ("scapy (del chksum/len, bytes())", "scapy"), ("dpkt (sum=0, bytes())", "dpkt")):
        n = result["packets"].get(key.split("_")[0], records.n_packets)
        ratio = rate["pytrafgen_build_frames"] / rate[key]
        md.append(f"| {name} | {n} | {result['seconds'][key]:.4f} | {rate[key]:,.0f} | {ratio:,.1f} |")
    md += ["", f"Floor ≥ 3M packets/s: {'met' if result['floor_3M_met'] else 'NOT met'} (best of {args.repeats}; "
           f"median {result['pytrafgen_build_frames_median_packets_per_s']:,.0f} packets/s; first, cold-memory run "
           f"{records.n_packets / api_times[0]:,.0f}); output {result['output_mb_per_s']:.0f} MB/s. "
           "scapy and dpkt run once on a sample spread over every capture (they take seconds per thousand).",
           "", f"By this thread's CPU time (immune to other processes): "
           f"{result['pytrafgen_build_frames_packets_per_cpu_s']:,.0f} packets/s. Load average during the run: "
           f"{', '.join(f'{x:.1f}' for x in result['load_average'])} on {result['machine']['nproc']} cores; times on "
           "this shared machine drift by ±30 % or more, compare the ratios."]
    write_results(args.out, result, "\n".join(md) + "\n", indent=1)


if __name__ == "__main__":
    main()
