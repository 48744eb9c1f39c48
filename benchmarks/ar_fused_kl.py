"""What the fused C++ decoding step (``SamplingSettings.fused_step``, fused_step.py) does to the
bundled default model's next-token distribution: flows sampled from it (2 per class, seed 0, cut
to the first CONTEXT tokens) are fed token by token through the operator path it replaces
(``decode_rows`` of the bfloat16 sampling copy, int8 cache: the default before it) and through
the fused step (same copy, same cache); the KL divergence of the fused step's next-token
softmax from the operator path's per position, and the largest logit change. Both are also
compared with the float32 model over a float32 cache, for scale.

    python benchmarks/ar_fused_kl.py --out benchmarks/results/ar_fused_kl.md
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import default_model_flows

from pytrafgen.generators.ar.fused_step import FusedStep, fused_step_applies
from pytrafgen.generators.ar.model import GPT, KVCache, bf16_linear_copy

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"
CONTEXT = 512


def decode_logits(model: GPT, idx: torch.Tensor, dtype: torch.dtype, fused: FusedStep | None) -> torch.Tensor:
    """(rows, T, V) logits of feeding ``idx`` (rows, T) one position at a time through a cache of
    ``dtype``, by the fused step where given, else by ``decode_rows``."""
    rows, length = idx.shape
    cache = KVCache.allocate(model.config, rows, length, torch.device("cpu"), dtype, zeroed=False)
    out = []
    for t in range(length):
        pos = torch.full((rows,), t, dtype=torch.long)
        if fused is not None:
            hidden = fused(idx[:, t].contiguous(), pos, idx[:, 1].contiguous(), cache)
        else:
            hidden = model.decode_rows(idx[:, t], pos, cache, t + 1, idx[:, 1], row_kernel=True)
        out.append(hidden @ model.head_weight().T)
    return torch.stack(out, 1)


def kl_row(name: str, reference: torch.Tensor, logits: torch.Tensor, real: torch.Tensor) -> str:
    ref, other = F.log_softmax(reference, -1), F.log_softmax(logits, -1)
    kl = (ref.exp() * (ref - other)).sum(-1)[real]
    shift = (logits - reference)[real].abs().max()
    return (f"| {name} | {float(kl.mean()):.1e} | {float(kl.median()):.1e} | "
            f"{float(torch.quantile(kl, 0.99)):.1e} | {float(kl.max()):.1e} | {float(shift):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, special, idx = default_model_flows(DEFAULT_MODEL, 2, CONTEXT)
    sampling = bf16_linear_copy(model).eval()
    if not fused_step_applies(sampling):
        raise SystemExit("the fused step does not run on this CPU (it needs AVX512-BF16)")
    real = idx != special.eos  # positions of the flows, not the padding
    with torch.inference_mode():
        exact = decode_logits(model, idx, torch.float32, None)
        operators = decode_logits(sampling, idx, torch.int8, None)
        fused = decode_logits(sampling, idx, torch.int8, FusedStep(sampling))
    rows = [kl_row("operator path (bfloat16 projections, int8 cache) | fused step (the same)", operators, fused, real),
            kl_row("float32 model, float32 cache | operator path", exact, operators, real),
            kl_row("float32 model, float32 cache | fused step", exact, fused, real)]
    lines = ["# Fused C++ decoding step: next-token distribution of the bundled default", "",
             f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  ",
             f"Command: `python benchmarks/ar_fused_kl.py --out {args.out}`  ",
             f"Load average {os.getloadavg()[0]:.1f}", "",
             f"{idx.size(0)} flows sampled from the model (2 per class, seed 0), {int(real.sum()):,} positions "
             f"(first {idx.size(1)} tokens of each), fed token by token through each path; KL(reference ‖ path) "
             "per token: from the reference's next-token softmax to the path's.", "",
             "| reference | path | KL per token: mean | median | 99th percentile | max | largest logit change |",
             "|---|---|---|---|---|---|---|", *rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
