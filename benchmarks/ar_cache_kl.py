"""What the CPU sampling cache's storage (float16, or int8 with a scale per slot: ``half_cache``,
``int8_cache``) does to the bundled default model's next-token distribution: flows sampled
from it (2 per class, seed 0, cut to the first CONTEXT tokens) are fed token by token through
``decode_rows`` (the per-row kernel sampling uses) with a float32 cache and with each smaller
one, projections float32 in all; the KL divergence of each one's next-token softmax from the
float32 cache's per position, and the largest logit change.

    python benchmarks/ar_cache_kl.py --out benchmarks/results/ar_cache_kl.md
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import default_model_flows

from pytrafgen.generators.ar.model import GPT, KVCache, half_cache_supported, int8_cache_supported

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"
CONTEXT = 512


def decode_logits(model: GPT, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, T, V) logits of feeding ``idx`` (rows, T) one position at a time through a cache of ``dtype``."""
    rows, length = idx.shape
    cache = KVCache.allocate(model.config, rows, length, torch.device("cpu"), dtype, zeroed=False)
    out = []
    for t in range(length):
        pos = torch.full((rows,), t, dtype=torch.long)
        hidden = model.decode_rows(idx[:, t], pos, cache, t + 1, idx[:, 1], row_kernel=True)
        out.append(hidden @ model.head_weight().T)
    return torch.stack(out, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, special, idx = default_model_flows(DEFAULT_MODEL, 2, CONTEXT)
    context = idx.size(1)
    real = idx != special.eos  # positions of the flows, not the padding
    head_dim = model.config.n_embd // model.config.n_head
    stores = [(name, dtype) for name, dtype, ok in (("float16", torch.float16, half_cache_supported(head_dim)),
                                                    ("int8, a scale per slot", torch.int8,
                                                     int8_cache_supported(head_dim))) if ok]
    with torch.inference_mode():
        exact = decode_logits(model, idx, torch.float32)
        rows = []
        for name, dtype in stores:
            logits = decode_logits(model, idx, dtype)
            reference, rounded = F.log_softmax(exact, -1), F.log_softmax(logits, -1)
            kl = (reference.exp() * (reference - rounded)).sum(-1)[real]
            shift = (logits - exact)[real].abs().max()
            rows.append(f"| {name} | {float(kl.mean()):.1e} | {float(kl.median()):.1e} | "
                        f"{float(torch.quantile(kl, 0.99)):.1e} | {float(kl.max()):.1e} | {float(shift):.3f} |")
    lines = ["# Key/value cache storage: next-token distribution of the bundled default", "",
             f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  ",
             f"Command: `python benchmarks/ar_cache_kl.py --out {args.out}`  ",
             f"Load average {os.getloadavg()[0]:.1f}; stores this CPU's kernel reads: "
             f"{', '.join(n for n, _ in stores) or 'none (no AVX-512)'}", "",
             f"{idx.size(0)} flows sampled from the model (2 per class, seed 0), {int(real.sum()):,} positions "
             f"(first {context} tokens of each), fed token by token through `decode_rows` (the C++ per-row "
             "kernel) with a float32 cache and with each store below; projections float32 in all.", "",
             "| cache | KL(float32 cache ‖ this) per token: mean | median | 99th percentile | max | "
             "largest logit change |",
             "|---|---|---|---|---|---|", *rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
