"""What ``bf16_linears`` (bfloat16 attention/MLP projections, the CPU sampling default where the
CPU multiplies bfloat16 natively) does to the bundled default model's next-token
distribution: flows sampled from it (2 per class, seed 0, cut to 256
tokens) are scored by the float32 model and by its bfloat16 copy (full forward); the KL
divergence of the copy's next-token softmax from float32's per position, and the largest
logit change.

    python benchmarks/ar_bf16_kl.py --out benchmarks/results/ar_bf16_kl.md
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import default_model_flows

from pytrafgen.generators.ar.model import bf16_linear_copy
from pytrafgen.generators.ar.sample import native_bf16

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"
CONTEXT = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, special, idx = default_model_flows(DEFAULT_MODEL, 2, CONTEXT)
    context = idx.size(1)
    real = idx != special.eos  # positions of the flows, not the padding
    with torch.inference_mode():
        exact = model(idx)[0].float()
        logits = bf16_linear_copy(model)(idx)[0].float()
    reference, rounded = F.log_softmax(exact, -1), F.log_softmax(logits, -1)
    kl = (reference.exp() * (reference - rounded)).sum(-1)[real]
    shift = (logits - exact)[real].abs().max()
    lines = ["# bfloat16 projections: next-token distribution of the bundled default", "",
             f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  ",
             f"Command: `python benchmarks/ar_bf16_kl.py --out {args.out}`  ",
             f"CPU multiplies bfloat16 natively here: {native_bf16()} (load average {os.getloadavg()[0]:.1f})", "",
             f"{idx.size(0)} flows sampled from the model (2 per class, seed 0), {int(real.sum()):,} positions "
             f"(first {context} tokens of each), scored by the float32 model and by `bf16_linear_copy` of it.", "",
             "| KL(float32 ‖ bf16) per token: mean | median | 99th percentile | max | largest logit change |",
             "|---|---|---|---|---|",
             f"| {float(kl.mean()):.1e} | {float(kl.median()):.1e} | {float(torch.quantile(kl, 0.99)):.1e} | "
             f"{float(kl.max()):.1e} | {float(shift):.3f} |"]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
