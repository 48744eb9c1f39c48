"""Sample AR token sequences per class and save them undecoded (``tokens.npz``), so that the
compliance benchmark (``bench_compliance.py``) decodes and builds them with the current
decoder and builder, and counts the flows whose app messages do not decode (redraws) itself.

Sampling is the slow part on a CPU (a few packets per second per thread); it runs once:

    OMP_NUM_THREADS=1 python benchmarks/sample_ar_tokens.py --checkpoint pytrafgen/data/default_model \
        --per-class 40 --spare 10 --out benchmarks/results/ar_tokens.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("pytrafgen/data/default_model"))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--spare", type=int, default=10, help="extra flows per class, drawn in a second round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-flow-packets", type=int, default=0,
                    help="close a continued flow after this many packets (0: the generator's own cap)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pytrafgen.generators import load_generator
    from pytrafgen.generators.ar import tokens as tok
    from pytrafgen.generators.ar.continuation import continuation_tokens
    from pytrafgen.generators.ar.generator import LONGEST_FLOW_FACTOR
    from pytrafgen.generators.ar.sample import sample_classes

    gen = load_generator(args.checkpoint)
    if args.max_flow_packets:
        gen.set_sampling(max_flow_packets=args.max_flow_packets)
    model, device = gen._model_on_device()
    vocab = gen.vocabulary()
    special = tok.special_tokens(vocab)
    # as ARGenerator.sample: the model's continuation tokens are never sampled, continued flows
    # stop at EOS, the sampling cap or twice the class's longest training flow
    n_tokens = model.config.vocab_size
    grammar = tok.grammar_tables(vocab, device, n_tokens, gen.protocols)
    classes = list(gen.classes)
    header = tok.header_masks({c: gen.header[c] for c in classes if c in gen.header}, n_tokens)
    class_tokens = tok.class_tokens(vocab)
    caps = {class_tokens[c]: LONGEST_FLOW_FACTOR * gen.longest_flow[c] for c in classes if c in gen.longest_flow}
    sequences: list[np.ndarray] = []
    names: list[str] = []
    rounds: list[int] = []
    t0 = time.perf_counter()
    for round_, n in enumerate((args.per_class, args.spare)):
        if n <= 0:
            continue
        # the same per-round seeds as ArGenerator.sample
        round_seed = int(np.random.SeedSequence([args.seed, round_]).generate_state(1)[0])
        seqs, got = sample_classes(model, grammar, special.bos, special.eos, class_tokens,
                                   dict.fromkeys(classes, n), gen.sampling, round_seed, device,
                                   header_allowed=header or None, continuation=continuation_tokens(model.config),
                                   pkt=special.pkt, class_caps=caps)
        sequences += seqs
        names += got
        rounds += [round_] * len(seqs)
    lengths = np.array([len(s) for s in sequences], np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, tokens=np.concatenate(sequences).astype(np.uint16),
                        offsets=np.r_[0, np.cumsum(lengths)], names=np.array(names), rounds=np.array(rounds))
    meta = {"checkpoint": str(args.checkpoint), "per_class": args.per_class, "spare": args.spare,
            "seed": args.seed, "threads": args.threads, "max_flow_packets": args.max_flow_packets, "sample_seconds": round(time.perf_counter() - t0, 1),
            "sampling": {k: v for k, v in vars(gen.sampling).items()} if hasattr(gen.sampling, "__dict__") else {},
            "flows": len(sequences), "tokens": int(lengths.sum())}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    print(json.dumps(meta, default=str))


if __name__ == "__main__":
    main()
