"""``pytrafgen tokenize`` as a user runs it, this checkout beside the previous code in the same
run: each run a fresh process (``timeout``-bounded), wall time and the CPU seconds the process
used (user + system), peak RSS, the load average beside every figure; and proof that the
datasets are byte-identical (every file, ``manifest.json`` less its creation time).

Inputs: every shared capture interleaved by time and repeated ``--copies`` times, each copy an
hour after the last (``bench_e2e.make_mixed``: HTTP, MQTT, CoAP, floods, scans); for ``-j``,
``--j-files`` separate copies of that capture, tokenized with ``-j 1`` and ``-j 2``.

    OMP_NUM_THREADS=1 python benchmarks/bench_tokenize_cli.py --previous /tmp/prev --previous-label "main fcf0c4d"
    python benchmarks/bench_tokenize_cli.py --identical-only --previous /tmp/prev   # the byte check alone

``--previous FOLDER``: the previous code's pytrafgen package with its own built ``_core``
(``previous_code.py`` says how to make one), and beside it the previous version of any plugin
package the change touched (``FOLDER/pytrafgen_coap``: FOLDER comes first on ``sys.path``, so
it is imported instead of the installed plugin). The identity check covers each shared capture
alone, the 13 together (``-j 1``) and the large capture.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import cpu_model, write_results
from bench_e2e import DEFAULT_CAPTURES, make_mixed
from previous_code import ENV as PREVIOUS_ENV

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_CLI = Path(__file__).with_name("previous_code.py")


def cli(code: Path | None) -> list[str]:
    """The command that runs ``pytrafgen`` from this checkout, or from the previous code's folder."""
    if code is None:
        return [sys.executable, "-m", "pytrafgen"]
    return [sys.executable, str(PREVIOUS_CLI), str(code)]


def run_tokenize(code: Path | None, inputs: list[Path], labels: Path, out: Path, workers: int,
                 timeout_s: int) -> dict[str, Any]:
    """One ``tokenize`` in a fresh process: wall, CPU (user + system), peak RSS, load average."""
    rss_file = out.parent / "peak_rss_kb"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file),  # the peak RSS of the largest process
           "timeout", str(timeout_s), *cli(code), "tokenize", *map(str, inputs), "--labels", str(labels),
           "--out", str(out), "--force", "-q", "-j", str(workers)]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "peak_rss_mb": int(rss_file.read_text().split()[-1]) / 1024, "load_1min_before": load,
            "load_1min_after": os.getloadavg()[0]}


def dataset_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file of a dataset; ``manifest.json`` without ``created_utc``."""
    out = {}
    for f in sorted(folder.iterdir()):
        body = f.read_bytes()
        if f.name == "manifest.json":
            manifest = json.loads(body)
            manifest.pop("created_utc", None)
            body = json.dumps(manifest, sort_keys=True).encode()
        out[f.name] = hashlib.sha256(body).hexdigest()
    return out


def identical(previous: Path, captures: list[Path], labels: Path, big: Path, big_labels: Path, work: Path,
              timeout_s: int) -> list[dict[str, Any]]:
    """Each case tokenized by both codes: equal digests of every file?"""
    cases = [(c.name, [c], labels) for c in captures] + [("all 13 shared captures", captures, labels),
                                                         (big.name, [big], big_labels)]
    rows = []
    for name, inputs, lab in cases:
        digests = []
        for code in (previous, None):
            out = work / f"same-{'prev' if code else 'this'}"
            run_tokenize(code, inputs, lab, out, 1, timeout_s)
            digests.append(dataset_digest(out))
            shutil.rmtree(out)
        rows.append({"case": name, "files": len(digests[1]), "identical": digests[0] == digests[1],
                     "differing": sorted(k for k in digests[0].keys() | digests[1].keys()
                                         if digests[0].get(k) != digests[1].get(k))})
        print(rows[-1], flush=True)
    return rows


def profile(code: Path | None, capture: Path, labels: Path, out: Path, timeout_s: int, repeats: int) -> dict[str, Any]:
    """``profile_tokenize.py`` on ``capture`` (``-j 1``): CPU seconds per stage, of the run with
    the least CPU time of ``repeats``."""
    runs = []
    for _ in range(repeats):
        cmd = ["timeout", str(timeout_s), sys.executable, str(Path(__file__).with_name("profile_tokenize.py")),
               "tokenize", str(capture), "--labels", str(labels), "--out", str(out), "--force", "-q", "-j", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", **({PREVIOUS_ENV: str(code)} if code else {})}
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        got["load_1min"] = os.getloadavg()[0]
        runs.append(got)
    return min(runs, key=lambda r: r["user_s"] + r["sys_s"])


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the least CPU time (the one other jobs disturbed least), with every run's figures."""
    out = dict(min(runs, key=lambda r: r["cpu_s"]))
    out["all_cpu_s"] = [round(r["cpu_s"], 3) for r in runs]
    out["all_wall_s"] = [round(r["wall_s"], 3) for r in runs]
    out["loads"] = [round(r["load_1min_before"], 2) for r in runs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    ap.add_argument("--copies", type=int, default=10, help="copies of the interleaved captures in the large one")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--j-files", type=int, default=4, help="separate copies of the large capture for -j 1 / -j 2")
    ap.add_argument("--previous", type=Path, required=True, help="the previous code's folder (previous_code.py)")
    ap.add_argument("--previous-label", default="previous code")
    ap.add_argument("--identical-only", action="store_true")
    ap.add_argument("--timeout-s", type=int, default=600, help="per tokenize run")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tokenize_cli")
    args = ap.parse_args()

    captures = sorted(args.captures.glob("*.pcap"))
    labels = args.captures / "manifest.csv"
    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_cli-"))
    try:
        big = work / f"mixed{args.copies}.pcap"
        packets = make_mixed(captures, args.copies, big)
        big_labels = work / "labels.csv"
        names = [big.name] + [f"copy{k}.pcap" for k in range(args.j_files)]
        big_labels.write_text("file,class,label\n" + "".join(f"{n},mixed,benign\n" for n in names))
        report: dict[str, Any] = {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "nproc": os.cpu_count(), "previous_label": args.previous_label,
            "args": {k: str(v) for k, v in vars(args).items()}, "packets": packets,
            "capture_mb": big.stat().st_size / 1e6,
            "identical": identical(args.previous, captures, labels, big, big_labels, work, args.timeout_s)}
        if not args.identical_only:
            runs: dict[str, list[dict[str, Any]]] = {"previous": [], "this": []}
            for _ in range(args.repeats):  # alternated, so both see the same load
                for key, code in (("previous", args.previous), ("this", None)):
                    runs[key].append(run_tokenize(code, [big], big_labels, work / "ds", 1, args.timeout_s))
                    print(key, runs[key][-1], flush=True)
            report["one_file"] = {k: best(v) for k, v in runs.items()}
            report["stages"] = {key: profile(code, big, big_labels, work / "dsp", args.timeout_s, args.repeats)
                                for key, code in (("previous", args.previous), ("this", None))}
            copies = [work / n for n in names[1:]]
            for c in copies:
                os.link(big, c)
            jruns: dict[str, list[dict[str, Any]]] = {"j1": [], "j2": []}
            for _ in range(args.repeats):
                for key, workers in (("j1", 1), ("j2", 2)):
                    jruns[key].append(run_tokenize(None, copies, big_labels, work / "dsj", workers, args.timeout_s))
                    print(key, jruns[key][-1], flush=True)
            report["many_files"] = {"files": len(copies), "packets": packets * len(copies),
                                    **{k: best(v) for k, v in jruns.items()}}
        write_results(args.out, report, markdown(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    same = all(row["identical"] for row in r["identical"])
    lines = [
        "# `pytrafgen tokenize`, whole command, this code beside the previous code",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/bench_tokenize_cli.py --previous PREV --previous-label "
        f"\"{r['previous_label']}\"` — {r['date_utc']}, {r['cpu']} (nproc {r['nproc']}, shared with other "
        "sessions). Each run a fresh process; best of the repeats by CPU seconds (user + system of the "
        "process), every run's CPU and wall seconds and the 1-minute load average before it in the JSON.",
        "",
        f"Datasets byte-identical to the previous code's (every file, `manifest.json` less its creation "
        f"time) on each of the 13 shared captures alone, on the 13 together and on the large capture: "
        f"**{same}** ({sum(row['identical'] for row in r['identical'])}/{len(r['identical'])} cases).",
    ]
    if "one_file" not in r:
        return "\n".join(lines) + "\n"
    one, many = r["one_file"], r["many_files"]
    packets = r["packets"]

    def rate(n: int, s: float) -> str:
        return f"{n / s:,.0f}"

    lines += [
        "",
        f"Large capture: the 13 shared captures interleaved by time, {r['args']['copies']} copies an hour "
        f"apart: {packets:,} packets, {r['capture_mb']:.0f} MB (HTTP, MQTT, CoAP, floods, scans); `-j 1`.",
        "",
        "| code | CPU s | packets / CPU-s | wall s | packets / s wall | peak RSS MB | load (1 min) at the runs |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in (("previous", r["previous_label"]), ("this", "this branch")):
        x = one[key]
        lines.append(f"| {label} | {x['cpu_s']:.2f} | {rate(packets, x['cpu_s'])} | {x['wall_s']:.2f} | "
                     f"{rate(packets, x['wall_s'])} | {x['peak_rss_mb']:.0f} | "
                     f"{', '.join(map(str, x['loads']))} |")
    lines += ["", f"Ratio (CPU): {one['previous']['cpu_s'] / one['this']['cpu_s']:.2f}×; "
              f"(wall): {one['previous']['wall_s'] / one['this']['wall_s']:.2f}×.", ""]
    st = r["stages"]
    lines += ["Where the CPU seconds go (`benchmarks/profile_tokenize.py`, the same command with a process-CPU "
              "timer around each stage; stages nest, a row includes the rows indented under it; best of the repeats "
              "by total CPU):", "",
              f"| stage | what | {r['previous_label']} CPU s | this branch CPU s |", "|---|---|---:|---:|"]
    for code in ("previous", "this"):
        st[code]["total"] = st[code]["user_s"] + st[code]["sys_s"]
    lines.append(f"| whole process (user + system) | | {st['previous']['total']:.2f} | {st['this']['total']:.2f} |")
    lines.append(f"| of it system time (page faults, file writes) | | {st['previous']['sys_s']:.2f} | {st['this']['sys_s']:.2f} |")
    lines.append(f"| before the command runs (imports of the CLI; interpreter start not included) | | "
                 f"{st['previous']['before_command_s']:.2f} | {st['this']['before_command_s']:.2f} |")
    names = list(dict.fromkeys([*st["previous"]["stages"], *st["this"]["stages"]]))
    for name in names:
        row = [st[c]["stages"].get(name) for c in ("previous", "this")]
        what = next(x["what"] for x in row if x)
        cells = [f"{x['cpu_s']:.2f}" if x and x["calls"] else "–" for x in row]
        lines.append(f"| `{name}` | {what} | {cells[0]} | {cells[1]} |")
    lines += ["",
              f"Many files: {many['files']} copies of the large capture as separate files "
              f"({many['packets']:,} packets), this branch:", "",
              "| workers | CPU s | wall s | packets / s wall | load (1 min) at the runs |", "|---|---:|---:|---:|---|"]
    for key in ("j1", "j2"):
        x = many[key]
        lines.append(f"| `-j {key[1]}` | {x['cpu_s']:.2f} | {x['wall_s']:.2f} | {rate(many['packets'], x['wall_s'])} | "
                     f"{', '.join(map(str, x['loads']))} |")
    lines += ["", f"Speed-up of `-j 2` over `-j 1` (wall): {many['j1']['wall_s'] / many['j2']['wall_s']:.2f}×."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
