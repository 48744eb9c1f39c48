"""Which sampled app spans decode, per protocol and class, with and without the token automata.

Samples ``--per-class`` flows of every class of the bundled default (seed ``--seed``), once with
every plugin's ``token_automaton`` switched off (the previous sampling grammar) and once as
installed, keeps every flow the sampler handed to the decoder (redrawn ones included) and
judges each app span with the plugin's strict decoder (``pytrafgen_<p>.tokens.decode_payload``):
"as written" (it decodes, and the C++ detokenizer takes it as a sequence the encoder writes),
"absorbed" (the strict decoder absorbs a slip: a CoAP token over 8 bytes, options out of order,
an HTTP message closed where it breaks, an MQTT body padded), "filled in" (only the lenient
``decode`` of HTTP/MQTT makes bytes of it) or "refused" (no bytes: the flow is drawn again),
with the strict decoder's reason (digits folded).

    OMP_NUM_THREADS=1 python benchmarks/app_span_breakdown.py --per-class 10 \\
        --results benchmarks/results/app_span_breakdown
"""

from __future__ import annotations

import argparse
import collections
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model, write_results


def sampled_sequences(checkpoint: Path, per_class: int, seed: int, max_flow_packets: int,
                      automata: bool) -> tuple[Any, list[np.ndarray]]:
    """The vocabulary and every sequence ``ARGenerator.sample`` asked the decoder about."""
    import torch

    import pytrafgen.generators.ar.tokens as tok
    from pytrafgen.generators import load_generator
    from pytrafgen.generators.ar.generator import ARGenerator
    from pytrafgen.plugins import get_registry

    torch.set_num_threads(1)
    registry = get_registry()
    gen = load_generator(checkpoint, None, registry)
    assert isinstance(gen, ARGenerator)
    gen.set_sampling(max_flow_packets=max_flow_packets)
    gen.show_progress = False
    seen: list[np.ndarray] = []
    decodable = tok.decodable
    saved = {name: type(spec).token_automaton for name, spec in registry.protocols.items()}

    def recording(seqs: Any, vocab: Any, reasons: Any, protocols: Any = None) -> list[bool]:
        seen.extend(np.asarray(s).copy() for s in seqs)
        return decodable(seqs, vocab, reasons, protocols)

    tok.decodable = recording  # type: ignore[assignment]
    if not automata:
        for spec in registry.protocols.values():
            type(spec).token_automaton = lambda self: None  # type: ignore[method-assign]
    try:
        gen.sample(dict.fromkeys(gen.vocabulary().classes, per_class), seed=seed)
    finally:
        tok.decodable = decodable
        for name, spec in registry.protocols.items():
            type(spec).token_automaton = saved[name]  # type: ignore[method-assign]
    return gen.vocabulary(), seen


def judge(name: str, local: list[int], direction: int) -> tuple[str, str]:
    """(verdict, the strict decoder's reason or "")."""
    from pytrafgen.app_grammar import decode_payloads
    from pytrafgen.errors import TokenError
    from pytrafgen.plugins import get_registry

    spec = get_registry().protocols[name]
    strict = importlib.import_module(f"pytrafgen_{name}.tokens").decode_payload
    try:
        data = strict(local)
    except TokenError as exc:
        try:
            spec.decode(local, direction)
        except TokenError:
            return "refused", re.sub(r"0x[0-9a-f]{2}|\d+", "#", str(exc))
        return "filled in", re.sub(r"0x[0-9a-f]{2}|\d+", "#", str(exc))
    grammar = spec.token_grammar()
    if grammar is not None:
        res = decode_payloads(grammar, len(spec.token_names), np.asarray(local, np.int32),
                              np.array([0, len(local)], np.int64))
        if not res.ok[0] or res.data.tobytes() != data:
            return "absorbed", ""
    elif importlib.import_module(f"pytrafgen_{name}.tokens").encode_payload(data) != list(local):
        return "absorbed", ""
    return "as written", ""


def breakdown(vocab: Any, sequences: list[np.ndarray]) -> dict[str, Any]:
    begins = {vocab.app_begin(p.name): p.name for p in vocab.app_protocols}
    app_end, c2s, s2c = vocab.special("APP_END"), vocab.special("DIR_C2S"), vocab.special("DIR_S2C")
    first_class = vocab.ranges["class"].start
    counts: dict[str, dict[str, collections.Counter[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(collections.Counter))
    reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for seq in sequences:
        toks = seq.astype(np.int64).tolist()
        cls = vocab.classes[toks[1] - first_class]
        direction, i = 0, 0
        while i < len(toks):
            t = toks[i]
            direction = 0 if t == c2s else 1 if t == s2c else direction
            if t in begins:
                j = toks.index(app_end, i + 1)
                verdict, why = judge(begins[t], [x - t - 1 for x in toks[i + 1:j]], direction)
                counts[begins[t]][cls][verdict] += 1
                if why:
                    reasons[begins[t]][f"{verdict}: {why}"] += 1
                i = j
            i += 1
    return {"spans": {p: {c: dict(v) for c, v in by.items()} for p, by in counts.items()},
            "reasons": {p: dict(r.most_common()) for p, r in reasons.items()}, "flows": len(sequences)}


VERDICTS = ("as written", "absorbed", "filled in", "refused")


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# Sampled app spans: do they decode? (per protocol and class)", "",
             f"`{doc['command']}` — {doc['per_class']} flows of every class of the bundled default, seed "
             f"{doc['seed']}, --max-flow-packets {doc['max_flow_packets']}; every flow the sampler handed to the "
             f"decoder (redrawn ones included). CPU: {doc['cpu']}.", ""]
    for variant, label in (("before", "without the token automata (previous sampling grammar)"),
                           ("after", "with the token automata")):
        d = doc[variant]
        lines += [f"## {label}: {d['flows']} flows sampled", "",
                  "| protocol | class | spans | " + " | ".join(VERDICTS) + " |", "|---|---|---|" + "---|" * len(VERDICTS)]
        for proto, by_class in sorted(d["spans"].items()):
            for cls, c in sorted(by_class.items()):
                lines.append(f"| {proto} | {cls} | {sum(c.values())} | " + " | ".join(str(c.get(v, 0)) for v in VERDICTS) + " |")
        for proto, why in sorted(d["reasons"].items()):
            lines += ["", f"{proto}, the strict decoder's reasons: " + "; ".join(f"{k} ({n})" for k, n in why.items())]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("pytrafgen/data/default_model"))
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--max-flow-packets", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    doc: dict[str, Any] = {"command": " ".join(["python benchmarks/app_span_breakdown.py", *sys.argv[1:]]),
                           "per_class": args.per_class, "seed": args.seed, "max_flow_packets": args.max_flow_packets,
                           "cpu": cpu_model()}
    for variant in ("before", "after"):
        vocab, seqs = sampled_sequences(args.checkpoint, args.per_class, args.seed, args.max_flow_packets,
                                        automata=variant == "after")
        doc[variant] = breakdown(vocab, seqs)
    write_results(args.results, doc, markdown(doc))


if __name__ == "__main__":
    main()
