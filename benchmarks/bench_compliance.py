"""Protocol compliance per rule: real traffic whole and cut, the bundled AR model and markov,
against a lab recording the models never trained on.

Real: every pcap of the recording (``--real``, with its manifest.csv), judged whole and cut into
16-packet flows (as ``pytrafgen tokenize --max-flow-packets 16`` cuts them). Generated: ``--per-class``
flows of every class, markov trained on ``--train`` (tokenized with the bundled default's
settings), AR from the token sequences of ``sample_ar_tokens.py`` (decoded here with the current
decoder; sequences whose app messages do not decode count as redraws and are replaced from the
spare round). Each generated set is built twice: raw (the records as sampled, only lengths and
checksums derived) and final (with the builder's repairs), with per-field counts of what
repair changed; both are written as pcaps and judged by every rule and by tshark (malformed
packets, error-level expert items, checksum validation on), and packets from a host to itself
are counted. Per class, the share of TCP flows that open with the client's SYN, and of those
the ones with a full handshake, is set beside the recording cut at 16 packets.

    python benchmarks/bench_compliance.py --real /work/rec/seed3 --train /work/shared/data/captures \\
        --ar-tokens benchmarks/results/ar_tokens.npz --results benchmarks/results/compliance
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model, write_results

CUT = 16
TSHARK_PREFS = ("ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE")
SEVERITY_ERROR = 0x00800000
GROUP_MALFORMED = 0x07000000
SEP = "\x1e"  # between a field's occurrences (expert messages may hold commas)
# tshark 4.0's CoAP dissector does not know option 292 (Request-Tag, RFC 9175, in the IANA
# registry) and marks it malformed; the lab's CoAP client sends it in its block-wise PUTs
UNKNOWN_REQUEST_TAG = "Invalid Option Number 292"


def read_manifest(folder: Path) -> list[tuple[str, Path]]:
    with (folder / "manifest.csv").open(newline="") as fh:
        return [(r["class"], folder / r["file"]) for r in csv.DictReader(fh)]


def judge(es: Any) -> dict[str, Any]:
    from pytrafgen.evaluate.compliance import run_rules
    from pytrafgen.plugins import get_registry

    r = run_rules(es, protocols=get_registry().protocols)
    return {"packets": r["packets"], "flows": r["flows"], "packet_pass_rate": r["packet_pass_rate"],
            "flow_pass_rate": r["flow_pass_rate"],
            "per_rule": {k: {"applicable": v.get("applicable"), "violating": v.get("violating"), **(
                {"error": v["error"]} if "error" in v else {})} for k, v in r["per_rule"].items()}}


def tshark_counts(pcap: Path) -> dict[str, Any]:
    exe = shutil.which("tshark")
    if exe is None:
        return {"skipped": "tshark is not installed"}
    cmd = [exe, "-r", str(pcap), "-n"]
    for pref in TSHARK_PREFS:
        cmd += ["-o", pref]
    cmd += ["-T", "fields", "-e", "frame.number", "-e", "_ws.expert.severity", "-e", "_ws.malformed",
            "-e", "_ws.expert.message", "-e", "_ws.expert.group", "-E", "occurrence=a", "-E", f"aggregator={SEP}",
            "-E", "separator=\t"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    packets = malformed = errors = request_tag_only = 0
    messages: dict[str, int] = {}
    for line in proc.stdout.split("\n"):  # not splitlines: it splits at SEP too
        parts = [*line.split("\t"), "", "", "", ""][:5]
        if not parts[0].isdigit():
            continue
        packets += 1
        sev = [int(s) for s in parts[1].split(SEP) if s.strip().isdigit()]
        bad_form = parts[2].strip() != ""
        malformed += bad_form
        is_error = max(sev, default=0) >= SEVERITY_ERROR
        errors += is_error
        said = dict(zip(parts[3].split(SEP), parts[4].split(SEP), strict=False))  # message -> group
        why = {m for m, g in said.items() if g.isdigit() and int(g) == GROUP_MALFORMED}
        request_tag_only += bad_form and not is_error and why == {UNKNOWN_REQUEST_TAG}
        if (bad_form or is_error) and parts[3]:
            key = parts[3].split(SEP)[0][:80]
            messages[key] = messages.get(key, 0) + 1
    return {"packets": packets, "malformed": malformed, "malformed_request_tag_only": request_tag_only,
            "expert_errors": errors, "top_messages": dict(sorted(messages.items(), key=lambda kv: -kv[1])[:8])}


def self_addressed(pcap: Path) -> int:
    from pytrafgen import read_pcap

    t = read_pcap(pcap)
    return int(np.all(t.src == t.dst, axis=1)[t.l3 != 0].sum())


def real_figures(folder: Path) -> dict[str, Any]:
    import pytrafgen
    from pytrafgen.evaluate.evalset import evalset_from_tables

    out: dict[str, Any] = {}
    files = read_manifest(folder)
    tables = [(pytrafgen.read_pcap(p), c) for c, p in files]
    for name, cut in (("real_whole", 0), ("real_cut", CUT)):
        es = evalset_from_tables(tables, name, max_flow_packets=cut)
        out[name] = judge(es)
    out["real_whole"]["self_addressed"] = sum(self_addressed(p) for _, p in files)
    merged = Path(tempfile.mkdtemp(prefix="bench-compliance-")) / "real.pcap"
    tsh = {"packets": 0, "malformed": 0, "malformed_request_tag_only": 0, "expert_errors": 0}
    for _, p in files:
        t = tshark_counts(p)
        for k in tsh:
            tsh[k] += t.get(k, 0)
    out["real_whole"]["tshark"] = tsh
    shutil.rmtree(merged.parent, ignore_errors=True)
    return out


def generated_figures(name: str, records: Any, plan: Any, out_dir: Path, seed: int) -> dict[str, Any]:
    from pytrafgen.build import write_records
    from pytrafgen.evaluate.evalset import load_evalset

    figures: dict[str, Any] = {}
    for stage, repair in (("raw", False), ("final", True)):
        pcap = out_dir / f"{name}.{stage}.pcap"
        summary = write_records(pcap, records, plan, seed, repair=repair)
        es = load_evalset([pcap], f"{name}-{stage}")
        figures[stage] = judge(es) | {"self_addressed": self_addressed(pcap), "tshark": tshark_counts(pcap),
                                      "skipped": summary["skipped"]}
        if repair:
            figures[stage]["repairs"] = summary.get("repairs", {})
    return figures


def markov_records(train: Path, classes: list[str], per_class: int, seed: int, work: Path) -> tuple[Any, Any]:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.demo.default import TOKENIZE_SETTINGS
    from pytrafgen.generators.markov import MarkovGenerator
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    ds_dir = work / "markov-ds"
    tokenize_captures([train], train / "manifest.csv", ds_dir, payload_cap=TOKENIZE_SETTINGS["payload_cap"],
                      max_flow_packets=TOKENIZE_SETTINGS["max_flow_packets"], seed=TOKENIZE_SETTINGS["seed"])
    ds = TrafficDataset(ds_dir)
    gen = MarkovGenerator()
    gen.fit(ds, {"seed": seed})
    return gen.sample(dict.fromkeys(classes, per_class), seed=seed), ds.address_plan


def ar_records(tokens: Path, checkpoint: Path, per_class: int) -> tuple[Any, Any, dict[str, Any]]:
    """Decode the sampled sequences; per class the first ``per_class`` that decode (round 0
    first, then the spare round), counting the ones that did not as redraws."""
    from pytrafgen.address_plan import AddressPlan
    from pytrafgen.generators import load_generator
    from pytrafgen.generators.ar import tokens as tok

    gen = load_generator(checkpoint)
    vocab = gen.vocabulary()
    z = np.load(tokens)
    offsets, names = z["offsets"], z["names"].tolist()
    seqs = [z["tokens"][offsets[i]:offsets[i + 1]] for i in range(len(names))]
    reasons: dict[str, int] = {}
    ok = tok.decodable(seqs, vocab, reasons, gen.protocols)
    kept: dict[str, list[np.ndarray]] = {}
    for seq, good, name in zip(seqs, ok, names, strict=True):
        if good and len(kept.setdefault(name, [])) < per_class:
            kept[name].append(seq)
    round0 = z["rounds"] == 0
    redrawn = int(np.sum(~np.asarray(ok)[round0]))
    short = {n: per_class - len(v) for n, v in kept.items() if len(v) < per_class}
    stats = {"sampled_round0": int(round0.sum()), "undecodable_round0": redrawn,
             "undecodable_reasons_all": reasons, "classes_short": short,
             "sample_meta": json.loads(tokens.with_suffix(".json").read_text())
             if tokens.with_suffix(".json").exists() else {}}
    records = tok.decode_sequences([s for n in kept for s in kept[n]], vocab, gen.protocols)
    return records, AddressPlan.load(checkpoint / "address_plan.json"), stats


def handshake_shares(pcap: Path, cut: int, labels: list[str] | None, label: str = "") -> dict[str, list[int]]:
    """Per class: [TCP flows, flows opening with the client's SYN, of those the ones whose next
    two packets are the server's SYN-ACK and the client's (bare) ACK]. ``labels``: the class of
    each flow (the generated pcap's labels file), else every flow is ``label``."""
    from pytrafgen import read_pcap
    from pytrafgen.flows import assemble_flows

    t = read_pcap(pcap)
    fl = assemble_flows(t, max_flow_packets=cut)
    fid, flags, sport = np.asarray(fl.flow_id), np.asarray(t.tcp_flags), np.asarray(t.sport)
    order = np.lexsort((np.arange(len(fid)), fid))
    order = order[fid[order] >= 0]
    fo = fid[order]
    out: dict[str, list[int]] = {}
    for st in np.r_[0, np.flatnonzero(fo[1:] != fo[:-1]) + 1].tolist() if len(fo) else []:
        f = int(fo[st])
        if int(fl.proto[f]) != 6:
            continue
        rows = order[st:st + 3]
        rows = rows[fid[rows] == f]
        side = [0 if int(sport[r]) == int(fl.client_port[f]) else 1 for r in rows]
        fs = [int(flags[r]) & 0x17 for r in rows]
        syn = fs[0] == 0x02 and side[0] == 0
        full = syn and len(rows) == 3 and fs[1] == 0x12 and side[1] == 1 and fs[2] == 0x10 and side[2] == 0
        row = out.setdefault(labels[f] if labels is not None else label, [0, 0, 0])
        row[0] += 1
        row[1] += syn
        row[2] += full
    return out


def handshake_figures(real: Path, out_dir: Path, generated: list[str]) -> dict[str, dict[str, list[int]]]:
    """``handshake_shares`` of the real recording cut at 16 packets and of each final generated set."""
    figures: dict[str, dict[str, list[int]]] = {"real_cut": {}}
    for c, pcap in read_manifest(real):
        figures["real_cut"].update(handshake_shares(pcap, CUT, None, c))
    for name in generated:
        pcap = out_dir / f"{name}.final.pcap"
        with open(f"{pcap}.flows.csv", newline="") as fh:
            labels = [r["class"] for r in csv.DictReader(fh)]
        figures[name] = handshake_shares(pcap, 0, labels)
    return figures


def plugin_set() -> list[str]:
    """The third-party plugins that judged and generated (the CoAP plugin adds rules and a
    token codec), as ``name distribution version``."""
    from pytrafgen.plugins import get_registry

    return [f"{p.name} {p.distribution} {p.version}" for p in get_registry().plugins if not p.builtin]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def rule_cell(d: dict[str, Any] | None) -> str:
    if not d or d.get("applicable") in (None, 0):
        return "–"
    if "error" in d:
        return "error"
    return f"{100 * (1 - d['violating'] / d['applicable']):.2f} % ({d['violating']}/{d['applicable']})"


def markdown(doc: dict[str, Any]) -> str:
    cols = [("real whole", doc["real"]["real_whole"]), ("real cut 16", doc["real"]["real_cut"])]
    for g in ("ar", "markov"):
        if g in doc["generated"]:
            cols += [(f"{g} raw", doc["generated"][g]["raw"]), (f"{g} final", doc["generated"][g]["final"])]
    lines = ["# Protocol compliance against an unseen lab recording", "",
             f"Reference: {doc['settings']['reference']}. Training data: {doc['settings']['training']}. "
             f"Generated: {doc['settings']['per_class']} flows per class, every class; raw = records as sampled "
             "(lengths and checksums derived only), final = after the builder's repairs. "
             f"CPU: {doc['settings']['cpu']}, load average (1, 5, 15 min) {doc['settings']['load_before']} before, "
             f"{doc['settings']['load_after']} after, {doc['settings']['seconds']} s. "
             f"Plugins loaded: {', '.join(doc['settings']['plugins']) or 'none'}. "
             f"Command: `{doc['settings']['command']}`.", "",
             "| figure | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    lines.append("| packets | " + " | ".join(str(d["packets"]) for _, d in cols) + " |")
    lines.append("| flows | " + " | ".join(str(d["flows"]) for _, d in cols) + " |")
    lines.append("| packet compliance | " + " | ".join(pct(d["packet_pass_rate"]) for _, d in cols) + " |")
    lines.append("| flow compliance | " + " | ".join(pct(d["flow_pass_rate"]) for _, d in cols) + " |")
    lines.append("| tshark malformed | " + " | ".join(str(d.get("tshark", {}).get("malformed", "–")) for _, d in cols)
                 + " |")
    lines.append("| of those, for option 292 alone (Request-Tag, unknown to tshark 4.0) | " + " | ".join(
        str(d.get("tshark", {}).get("malformed_request_tag_only", "–")) for _, d in cols) + " |")
    lines.append("| tshark error-level expert items | " + " | ".join(
        str(d.get("tshark", {}).get("expert_errors", "–")) for _, d in cols) + " |")
    lines.append("| packets with source = destination | " + " | ".join(
        str(d.get("self_addressed", "–")) for _, d in cols) + " |")
    lines += ["", "## Per rule (pass rate, violating/applicable; – = never applicable)", "",
              "| rule | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    rules = sorted(set().union(*(d["per_rule"] for _, d in cols)))
    for r in rules:
        lines.append(f"| {r} | " + " | ".join(rule_cell(d["per_rule"].get(r)) for _, d in cols) + " |")
    for g, gd in doc["generated"].items():
        lines += ["", f"## {g}: what repair changed (packets per field)", ""]
        rep = gd["final"].get("repairs") or {}
        lines += [f"- {k}: {v}" for k, v in sorted(rep.items())] or ["- nothing"]
        if gd.get("stats"):
            lines += ["", f"{g} sampling: `{json.dumps(gd['stats'], default=str)[:600]}`"]
        for stage in ("raw", "final"):
            msgs = gd[stage].get("tshark", {}).get("top_messages")
            if msgs:
                lines.append(f"- tshark {stage}: {msgs}")
    if doc.get("handshakes"):
        hs = doc["handshakes"]
        names = list(hs)
        lines += ["", "## Handshakes (TCP flows per class: opening with the client's SYN / of those, SYN, "
                  "SYN-ACK, ACK as the first three packets)", "",
                  "Real: the recording cut into 16-packet flows as the models' training data is, so a "
                  "share of its flows begins mid-connection.", "",
                  "| class | " + " | ".join(n.replace("_", " ") for n in names) + " |", "|---|" + "---|" * len(names)]
        for c in sorted(set().union(*(hs[n] for n in names))):
            cells = []
            for n in names:
                tcp, syn, full = hs[n].get(c, [0, 0, 0])
                cells.append("–" if not tcp else f"{syn / tcp:.2f} of {tcp} / {full / syn:.2f}" if syn
                             else f"0.00 of {tcp}")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""] + [f"- {t}" for t in doc["targets"]]
    return "\n".join(lines) + "\n"


def targets(doc: dict[str, Any]) -> list[str]:
    out = []
    for g, gd in doc["generated"].items():
        f = gd["final"]
        out.append(f"{g}: packet compliance {pct(f['packet_pass_rate'])} (target ≥ 99.9 %: "
                   f"{'met' if f['packet_pass_rate'] >= 0.999 else 'NOT met'}), flow compliance "
                   f"{pct(f['flow_pass_rate'])} (target ≥ 99 %: {'met' if f['flow_pass_rate'] >= 0.99 else 'NOT met'}), "
                   f"tshark malformed {f['tshark'].get('malformed')} ({f['tshark'].get('malformed_request_tag_only')} "
                   f"of them for the Request-Tag option alone), expert errors {f['tshark'].get('expert_errors')}, "
                   f"source = destination {f['self_addressed']} (targets 0)"
                   + (f"; redraws {gd['stats']['undecodable_round0']} of {gd['stats']['sampled_round0']} "
                      "sampled flows (aim 0)" if gd.get("stats") else ""))
    real = doc["real"]["real_whole"]["tshark"]
    out.append(f"real recording, whole: tshark malformed {real['malformed']} of {real['packets']} packets "
               f"({real['malformed_request_tag_only']} of them for the Request-Tag option alone), "
               f"error-level items {real['expert_errors']} (the floor an independent dissector sets on real traffic)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, required=True, help="lab recording (pcaps + manifest.csv)")
    ap.add_argument("--train", type=Path, required=True, help="captures markov trains on (+ manifest.csv)")
    ap.add_argument("--ar-tokens", type=Path, help="token sequences from sample_ar_tokens.py")
    ap.add_argument("--checkpoint", type=Path, default=Path("pytrafgen/data/default_model"))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-name", default="lab recording SEED=3, capture.sh, 2026-12-03")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--keep", type=Path, help="keep the generated pcaps here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    classes = [c for c, _ in read_manifest(args.real)]
    work = Path(tempfile.mkdtemp(prefix="bench-compliance-"))
    out_dir = args.keep or work
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"real": real_figures(args.real), "generated": {}}
    rec, plan = markov_records(args.train, classes, args.per_class, args.seed, work)
    doc["generated"]["markov"] = generated_figures("markov", rec, plan, out_dir, args.seed)
    if args.ar_tokens is not None:
        rec, plan, stats = ar_records(args.ar_tokens, args.checkpoint, args.per_class)
        doc["generated"]["ar"] = generated_figures("ar", rec, plan, out_dir, args.seed) | {"stats": stats}
    doc["handshakes"] = handshake_figures(args.real, out_dir, list(doc["generated"]))
    shutil.rmtree(work, ignore_errors=True)
    doc["settings"] = {"reference": f"{args.real} ({args.reference_name})", "training": str(args.train),
                       "per_class": args.per_class, "seed": args.seed, "cut": CUT, "cpu": cpu_model(),
                       "ar_checkpoint": str(args.checkpoint), "seconds": round(time.perf_counter() - t0, 1),
                       "command": "python " + " ".join(sys.argv), "plugins": plugin_set(),
                       "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}
    doc["targets"] = targets(doc)
    write_results(args.results, doc, markdown(doc))


if __name__ == "__main__":
    main()
