"""Flows drawn again because an app span does not decode, before and after the sampling grammar
follows the app protocols' token automata (``ProtocolSpec.token_automaton``), in one run.

Each variant is one fresh ``pytrafgen generate`` process on the bundled default (every class,
``--per-class`` flows, the same seed, ``OMP_NUM_THREADS=1``), timed by wall clock: "before"
runs it with every plugin's ``token_automaton`` switched off (app spans are then any of the
protocol's local tokens, the sampling grammar the previous code built), "after" as installed.
Per variant: the redraws and their reasons, flows and packets per class, wall seconds and
packets/s, the builder's repairs, and packet/flow compliance of the raw (``--raw-out``) and
final pcaps by every registered rule (tshark not run).

    OMP_NUM_THREADS=1 python benchmarks/bench_decode_redraws.py --per-class 15 \\
        --results benchmarks/results/decode_redraws
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model, write_results

# runs the CLI with every installed plugin's token automaton switched off (the previous sampling)
BEFORE = """
import sys
from pytrafgen.plugins import get_registry
for spec in get_registry().protocols.values():
    type(spec).token_automaton = lambda self: None
sys.argv = ["pytrafgen", *sys.argv[1:]]
from pytrafgen.cli.main import run
run()
"""
AFTER = """
import sys
sys.argv = ["pytrafgen", *sys.argv[1:]]
from pytrafgen.cli.main import run
run()
"""


def compliance(pcap: Path) -> dict[str, Any]:
    from pytrafgen.evaluate.compliance import run_rules
    from pytrafgen.evaluate.evalset import load_evalset
    from pytrafgen.plugins import get_registry

    r = run_rules(load_evalset([pcap], pcap.stem), protocols=get_registry().protocols)
    failing = {k: v["violating"] for k, v in r["per_rule"].items() if v.get("violating")}
    return {"packets": r["packets"], "flows": r["flows"], "packet_pass_rate": r["packet_pass_rate"],
            "flow_pass_rate": r["flow_pass_rate"], "failing_rules": failing}


def run_variant(name: str, classes: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out, raw = work / f"{name}.pcap", work / f"{name}.raw.pcap"
    cmd = [sys.executable, "-c", BEFORE if name == "before" else AFTER, "generate", str(args.checkpoint),
           *[x for c in classes for x in ("-c", f"{c}:{args.per_class}")], "--out", str(out),
           "--raw-out", str(raw), "--seed", str(args.seed), "--max-flow-packets", str(args.max_flow_packets),
           "--json", "--quiet", "--force"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: generate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    packets = sum(summary["packets"].values())
    return {"wall_s": round(wall, 2), "packets": packets, "packets_per_s": round(packets / wall, 1),
            "flows": summary["flows"], "packets_per_class": summary["packets"], "sampling": summary["sampling"],
            "repairs": summary["repairs"], "skipped": summary["skipped"],
            "compliance_raw": compliance(raw), "compliance_final": compliance(out)}


def markdown(doc: dict[str, Any]) -> str:
    b, a = doc["variants"]["before"], doc["variants"]["after"]
    rows = [("flows", lambda v: sum(v["flows"].values())),
            ("flows drawn again", lambda v: v["sampling"]["redrawn"]),
            ("  why", lambda v: ", ".join(f"{k} {n}" for k, n in v["sampling"]["redrawn_reasons"].items()) or "—"),
            ("packets", lambda v: v["packets"]),
            ("wall seconds (fresh process, sampling + build)", lambda v: v["wall_s"]),
            ("packets/s", lambda v: v["packets_per_s"]),
            ("packet compliance, raw", lambda v: f"{100 * v['compliance_raw']['packet_pass_rate']:.2f} %"),
            ("flow compliance, raw", lambda v: f"{100 * v['compliance_raw']['flow_pass_rate']:.2f} %"),
            ("packet compliance, final", lambda v: f"{100 * v['compliance_final']['packet_pass_rate']:.2f} %"),
            ("flow compliance, final", lambda v: f"{100 * v['compliance_final']['flow_pass_rate']:.2f} %"),
            ("builder repairs (sum)", lambda v: sum(v["repairs"].values()))]
    lines = ["# App spans that do not decode: flows drawn again, before and after the token automata", "",
             f"`{doc['command']}` — {doc['per_class']} flows of each of the bundled default's "
             f"{len(doc['classes'])} classes, seed {doc['seed']}, --max-flow-packets {doc['max_flow_packets']}, "
             f"OMP_NUM_THREADS=1, each variant one fresh `pytrafgen generate` process in the same run "
             f"(before: every plugin's `token_automaton` switched off, the previous sampling grammar). "
             f"CPU: {doc['cpu']}; {doc['note']}", "",
             "| figure | before | after |", "|---|---|---|"]
    lines += [f"| {label} | {f(b)} | {f(a)} |" for label, f in rows]
    lines += ["", "Per class: flows, packets (before → after)", "", "| class | packets before | packets after |",
              "|---|---|---|"]
    lines += [f"| {c} | {b['packets_per_class'].get(c, 0)} | {a['packets_per_class'].get(c, 0)} |"
              for c in doc["classes"]]
    lines += ["", "Builder repairs (before → after): " + ", ".join(
        f"{k} {b['repairs'].get(k, 0)} → {a['repairs'].get(k, 0)}"
        for k in sorted(set(b["repairs"]) | set(a["repairs"])) if b["repairs"].get(k) or a["repairs"].get(k)), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("pytrafgen/data/default_model"))
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--max-flow-packets", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--note", default="machine shared with other sessions (load varies): compare wall times "
                                      "side by side only")
    args = ap.parse_args()
    classes = json.loads((args.checkpoint / "config.json").read_text())["classes"]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {name: run_variant(name, classes, args, Path(tmp)) for name in ("before", "after")}
    doc = {"command": " ".join(["python benchmarks/bench_decode_redraws.py", *sys.argv[1:]]),
           "per_class": args.per_class, "seed": args.seed, "max_flow_packets": args.max_flow_packets,
           "classes": classes, "cpu": cpu_model(), "load": os.getloadavg(), "note": args.note,
           "variants": variants}
    write_results(args.results, doc, markdown(doc))


if __name__ == "__main__":
    main()
