"""Replay proof: every scenario's effect at a live target for the real attack, generated
attacks from two generators and a benign control, with the verdict per generator.

* real and control: a lab recording the models never trained on (``--real-dir``, by default
  the SEED=3 recording made with capture.sh, /work/rec/seed3);
* generated: the bundled default AR model (``pytrafgen/data/default_model``) and a ``markov``
  baseline trained on the training captures (``--train-dir``, /work/shared/data/captures),
  each sampled with ``pytrafgen generate ... --class CLASS:N --seed 1``. ``--generate`` writes
  the missing sets into ``--gen-dir`` first (the AR model samples slowly on a CPU: minutes).

Every input is measured ``--repeat`` times (the median stands), each time in a fresh namespace
pair with a fresh target, with the same bounds for every input of a scenario (``SCENARIOS``). Needs root and the targets'
packages (nginx, mosquitto, libcoap3-bin, iproute2).

The generated sets are stamped (``GEN/stamps.json``: the bundled model's weights hash and the
code's git commit); ``--generate`` samples again every set whose stamp differs, so after a new
default model or a change to the builder the same one command measures fresh sets:

    sudo .venv/bin/python benchmarks/bench_replay.py --generate --gen-dir /tmp/replay-gen --repeat 3

Each scenario's row carries the cause of a generated miss from ``replay_causes.json`` (an
analysis of the named run; re-check it against the input profile figures after a new model).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench_common import cpu_model, write_results

from pytrafgen.replay import report, scenarios
from pytrafgen.replay.netns import install_cleanup_handlers, require_root
from pytrafgen.replay.senders import Bounds
from pytrafgen.replay.trace import Trace, load_trace

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "pytrafgen" / "data" / "default_model"
RESULTS = ROOT / "benchmarks" / "results" / "replay"
CAUSES = ROOT / "benchmarks" / "results" / "replay_causes.json"
GENERATORS = ("ar", "markov")

# scenario: (attack class, benign control class, flows generated, bounds for every input)
SCENARIOS: dict[str, tuple[str, str, int, Bounds]] = {
    "syn_flood": ("syn_flood", "benign_http", 400, Bounds()),
    # distinct ports answered grows with the probes sent: every input sends the same number
    "port_scan": ("nmap_syn_scan", "benign_http", 400, Bounds(max_packets=400)),
    "http_bruteforce": ("http_bruteforce", "benign_http", 150, Bounds()),
    "mqtt_bruteforce": ("mqtt_bruteforce", "benign_mqtt", 150, Bounds()),
    # the real flood holds each session 6.1 s: a 3 s cap would cut the attack short
    "mqtt_connect_flood": ("mqtt_connect_flood", "benign_mqtt", 400, Bounds(hold_cap_s=8.0)),
    "udp_flood": ("udp_flood", "benign_coap", 800, Bounds(max_packets=12000, timeout_s=2.0)),
    "slowloris": ("slowloris", "benign_http", 300, Bounds()),
    # the served rate of a burst depends on its length: every input sends the same number of sessions
    "http_flood": ("http_flood", "benign_http", 200, Bounds(max_sessions=200)),
    "mqtt_publish_flood": ("mqtt_publish_flood", "benign_mqtt", 4, Bounds()),
    # nmap -sV waits 6 s for a banner before it sends its probes: sessions are held long enough
    "nmap_version_scan": ("nmap_version_scan", "benign_http", 30, Bounds(hold_cap_s=8.0)),
}


def _run(argv: list[str], log: Path, cwd: Path | None = None, timeout_s: float = 1800) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout_s,
                              check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}); see {log}")


def _stamp(generator: str, ckpt: Path) -> str:
    """What a generated set depends on: the checkpoint's weights and the code's commit."""
    digest = hashlib.sha256()
    for part in sorted(ckpt.glob("*")):
        if part.is_file():
            digest.update(part.name.encode() + part.read_bytes())
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "pytrafgen", "plugins"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return f"{generator} weights {digest.hexdigest()[:16]} code {commit[:12]}{' (modified)' if dirty else ''}"


def generate(gen_dir: Path, train_dir: Path) -> dict[str, str]:
    """Sample the missing or stale generated sets (their stamp differs: another model or code):
    AR from the bundled model, markov trained here. Returns each generator's stamp."""
    gen_dir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "pytrafgen"]
    markov = gen_dir / "markov_ckpt"
    if not markov.exists():
        _run([*cli, "tokenize", str(train_dir), "--labels", str(train_dir / "manifest.csv"), "--out",
              str(gen_dir / "markov_ds"), "--payload-cap", "256"], gen_dir / "markov_tokenize.log")
        _run([*cli, "train", str(gen_dir / "markov_ds"), "-g", "markov", "--out", str(markov)],
             gen_dir / "markov_train.log")
    stamps_file = gen_dir / "stamps.json"
    stamps: dict[str, str] = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
    current = {"ar": _stamp("ar", DEFAULT_MODEL), "markov": _stamp("markov", markov)}
    for cls, _, flows, _ in SCENARIOS.values():
        for gen, ckpt in (("ar", DEFAULT_MODEL), ("markov", markov)):
            out = gen_dir / f"{gen}_{cls}.pcap"
            if not out.exists() or stamps.get(out.name) != current[gen]:
                _run([*cli, "generate", str(ckpt), "--class", f"{cls}:{flows}", "--seed", "1", "--out", str(out)],
                     gen_dir / f"{gen}_{cls}.log")
                stamps[out.name] = current[gen]
                stamps_file.write_text(json.dumps(stamps, indent=1))
    return current


def input_profile(trace: Trace, bounds: Bounds) -> dict[str, Any]:
    """What a session scenario can replay of an input: flows, flows in view from the client's
    SYN, flows with a client message within the hold cap, flows the client closes, client
    packets per flow (median) and the span of flow starts."""
    flows = trace.flows
    if not flows:
        return {"flows": 0}
    in_view = sum(any(p.is_syn for p in f.packets) for f in flows)
    with_message = sum(any(ns / 1e9 <= bounds.hold_cap_s for ns, _ in f.messages()) for f in flows)
    sizes = sorted(len(f.packets) for f in flows)
    starts = [f.start_ns for f in flows]
    return {"flows": len(flows), "client_syn": in_view, "message_within_hold": with_message,
            "client_closed": sum(f.client_closed for f in flows), "client_packets_median": sizes[len(sizes) // 2],
            "start_span_s": round((max(starts) - min(starts)) / 1e9, 4)}


def _sha_of(real_dir: Path) -> dict[str, str]:
    with (real_dir / "manifest.csv").open() as fh:
        return {row["file"]: row["sha256"] for row in csv.DictReader(fh)}


def measure_all(real_dir: Path, gen_dir: Path, only: list[str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name in only:
        cls, control_cls, flows, bounds = SCENARIOS[name]
        scenario = scenarios.get_scenario(name)
        scenario.check_requirements()
        inputs = {"real": real_dir / f"{cls}.pcap", "control": real_dir / f"{control_cls}.pcap",
                  **{gen: gen_dir / f"{gen}_{cls}.pcap" for gen in GENERATORS}}
        runs: dict[str, dict[str, Any]] = {}
        effects: dict[str, scenarios.Effect] = {}
        for role, path in inputs.items():
            trace = load_trace(path)
            profile = input_profile(trace.of_proto(scenario.proto), bounds)
            started = time.perf_counter()
            # Each repetition in a fresh pair with a fresh target; the median run stands.
            measured = sorted((scenarios.measure(scenario, trace, bounds) for _ in range(repeat)),
                              key=lambda e: e.value)
            effects[role] = measured[len(measured) // 2]
            runs[role] = {"input": str(path), "effect": round(effects[role].value, 4),
                          "effects_all": [round(e.value, 4) for e in measured],
                          "wall_s": round((time.perf_counter() - started) / repeat, 2), "figures": effects[role].figures,
                          "input_profile": profile}
            print(f"{name:20s} {role:8s} effect {effects[role].value:10.4g} of {runs[role]['effects_all']} "
                  f"({runs[role]['wall_s']} s each)", flush=True)
        verdicts = {}
        for gen in GENERATORS:
            text, ok = report.verdict(scenario, {"real": effects["real"], "generated": effects[gen],
                                                 "control": effects["control"]})
            verdicts[gen] = {"verdict": text, "reproduces": ok}
        rows.append({
            "scenario": name, "class": cls, "control_class": control_cls, "generated_flows": flows,
            "effect": scenario.effect, "tolerance": scenario.tolerance_text,
            "control_within_tolerance": scenario.within(effects["control"].value, effects["real"].value),
            "bounds": vars(bounds), "runs": runs, "verdicts": verdicts,
        })
    return rows


_KEY_FIGURES = {
    "syn_flood": ("peak_syn_recv", "listen_drops", "legit_client_connected"),
    "port_scan": ("packets_sent", "ports_answered", "open_ports_discovered"),
    "http_bruteforce": ("requests_logged", "status_401", "status_200", "status_other"),
    "mqtt_bruteforce": ("sessions", "connack_codes"),
    "mqtt_connect_flood": ("sessions", "connack_codes", "peak_concurrent_accepted_sessions"),
    "udp_flood": ("datagrams_sent", "server_receive_buffer_drops", "legit_coap_answered", "legit_coap_median_ms"),
    "slowloris": ("sessions", "peak_connections_held", "legit_refused_or_failed_share"),
    "http_flood": ("sessions", "responses_served", "served_span_s", "status_counts", "legit_http_median_ms"),
    "mqtt_publish_flood": ("sessions_accepted", "publish_packets_sent", "messages_delivered", "delivery_span_s"),
    "nmap_version_scan": ("sessions", "probes_per_port", "services_identified"),
}


def markdown(result: dict[str, Any]) -> str:
    rows = result["scenarios"]
    causes = result.get("causes", {})
    counts = {gen: sum(r["verdicts"][gen]["reproduces"] for r in rows) for gen in GENERATORS}
    controls = sum(r["control_within_tolerance"] for r in rows)
    lines = [
        "# Replay: real vs generated vs benign control at live targets",
        "",
        f"Real attacks and benign controls: **{result['real_source']}**; the models never trained on it. "
        f"Generated: the bundled default AR model (`pytrafgen/data/default_model`) and `markov` trained on "
        f"{result['training_source']}, `--seed 1`. Each input in a fresh namespace pair with a fresh target; "
        f"the same bounds for every input of a scenario. Command: `{result['command']}`.",
        "",
        f"**Reproduced with generated traffic: AR {counts['ar']} of {len(rows)}, markov {counts['markov']} of "
        f"{len(rows)}. Benign controls within the tolerance of the real effect: {controls} of {len(rows)}.**",
        "",
        f"Effects are the median of {result['repeat']} measurements per input (all of them in brackets). "
        f"Generated sets: {'; '.join(f'{k}: {v}' for k, v in result.get('stamps', {}).items()) or 'as found'}. "
        f"Load average (1 min) at the start and end of the run: {result.get('load_average', 'not recorded')}.",
        "",
        "The cause column is an analysis of the generated sets of the run it names "
        "(`benchmarks/results/replay_causes.json`); after a new default model, re-check it against the key "
        "figures and input profiles below.",
        "",
        "| scenario | effect | tolerance | real | AR | markov | control | verdict AR | verdict markov | cause of a "
        f"generated miss ({causes.get('analysed', 'no analysis')}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(run: dict[str, Any]) -> str:
        return f"{run['effect']:g} [{', '.join(f'{v:g}' for v in run['effects_all'])}]"

    for r in rows:
        e = {role: cell(run) for role, run in r["runs"].items()}
        lines.append(f"| {r['scenario']} | {r['effect']} | {r['tolerance']} | {e['real']} | {e['ar']} | "
                     f"{e['markov']} | {e['control']} | {r['verdicts']['ar']['verdict']} | "
                     f"{r['verdicts']['markov']['verdict']} | {causes.get('scenarios', {}).get(r['scenario'], '')} |")
    lines += ["", "## Key figures per input (median run)", "",
              "Input profile: flows of the scenario's transport / in view from the client's SYN / with a client "
              "message within the hold cap / closed by the client; median client packets per flow; span of the "
              "flow starts.", "",
              "| scenario | input | flows generated | figures | input profile | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        for role, run in r["runs"].items():
            figs = ", ".join(f"{k} {run['figures'].get(k)}" for k in _KEY_FIGURES[r["scenario"]])
            flows = r["generated_flows"] if role in GENERATORS else ""
            prof = run.get("input_profile", {})
            profile = (f"{prof.get('flows')} / {prof.get('client_syn')} / {prof.get('message_within_hold')} / "
                       f"{prof.get('client_closed')}; {prof.get('client_packets_median')} pkts; "
                       f"{prof.get('start_span_s')} s") if prof.get("flows") else ""
            lines.append(f"| {r['scenario']} | {role} (`{Path(run['input']).name}`) | {flows} | {figs} | {profile} | "
                         f"{run['wall_s']} |")
    lines += ["", f"Machine: {result['machine']['cpu']}, {result['machine']['nproc']} CPUs (shared), kernel "
              f"{result['machine']['kernel']}; {result['date']}; total wall time {result['wall_s']} s. "
              "All figures of every run are in replay.json.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-dir", type=Path, default=Path("/work/rec/seed3"))
    ap.add_argument("--real-source", default="lab recording SEED=3, capture.sh, 2026-12-03 (/work/rec/seed3)")
    ap.add_argument("--train-dir", type=Path, default=Path("/work/shared/data/captures"))
    ap.add_argument("--gen-dir", type=Path, required=True, help="holds ar_CLASS.pcap and markov_CLASS.pcap")
    ap.add_argument("--generate", action="store_true", help="sample the missing generated sets first")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)")
    ap.add_argument("--repeat", type=int, default=3, help="measurements per input; the median stands")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true",
                    help="keep the other scenarios' rows of an existing --out.json (same recording and settings)")
    args = ap.parse_args()
    require_root()
    install_cleanup_handlers()
    stamps = generate(args.gen_dir, args.train_dir) if args.generate else {}
    only = args.scenario or list(SCENARIOS)
    load_start = round(os.getloadavg()[0], 2)  # the machine is shared: floods feel its load
    started = time.perf_counter()
    rows = measure_all(args.real_dir, args.gen_dir, only, args.repeat)
    wall_s = round(time.perf_counter() - started, 1)
    previous = args.out.with_suffix(".json")
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("real_source") != args.real_source or old.get("repeat") != args.repeat:
            sys.exit(f"{previous} was measured on another recording or --repeat; not merging")
        kept = {r["scenario"]: r for r in old["scenarios"] if r["scenario"] not in only}
        fresh = {r["scenario"]: r for r in rows}
        rows = [kept.get(n) or fresh[n] for n in SCENARIOS if n in kept or n in fresh]
        wall_s = round(wall_s + old.get("wall_s", 0.0), 1)
    shas = _sha_of(args.real_dir)
    result = {
        "real_source": args.real_source, "training_source": f"{args.train_dir} (training captures)",
        "real_sha256": {SCENARIOS[r["scenario"]][0]: shas.get(f"{SCENARIOS[r['scenario']][0]}.pcap") for r in rows},
        "repeat": args.repeat,
        "stamps": stamps, "load_average": f"{load_start} / {round(os.getloadavg()[0], 2)}",
        "causes": json.loads(CAUSES.read_text()) if CAUSES.exists() else {},
        "command": f"sudo .venv/bin/python benchmarks/bench_replay.py --generate --gen-dir GEN --repeat {args.repeat}"
                   + ("" if args.merge else "".join(f" --scenario {n}" for n in (args.scenario or []))),
        "scenarios": rows,
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": wall_s,
    }
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
