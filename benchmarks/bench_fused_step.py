"""One decoding step of the bundled default on a CPU: the operator path (``GPT.decode_rows`` of
the bfloat16 sampling copy, int8 cache) against the fused C++ step (``FusedStep``), side by side
in one process, for pools of 1 to 256 rows at positions around 300 (the bundled default's flows
average 295 earlier tokens per sampled token); CPU time per step, best of 5 rounds of at least
0.3 s each, one thread.

    python benchmarks/bench_fused_step.py --out benchmarks/results/fused_step.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pytrafgen.generators.ar.fused_step import FusedStep, fused_step_applies
from pytrafgen.generators.ar.generator import ARGenerator
from pytrafgen.generators.ar.model import KVCache, bf16_linear_copy

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"
ROWS = (1, 4, 16, 64, 256)


def per_step(step: Callable[[], object]) -> float:
    """Best CPU milliseconds per call over 5 rounds of at least 0.3 s."""
    step()
    best = float("inf")
    for _ in range(5):
        start, calls = time.process_time(), 0
        while time.process_time() - start < 0.3:
            step()
            calls += 1
        best = min(best, (time.process_time() - start) / calls * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = bf16_linear_copy(ARGenerator.load(DEFAULT_MODEL)._model_on_device()[0]).eval()
    if not fused_step_applies(model):
        raise SystemExit("the fused step does not run on this CPU (it needs AVX512-BF16)")
    config, fused = model.config, FusedStep(model)
    cache = KVCache.allocate(config, max(ROWS), config.block_size, torch.device("cpu"), torch.int8, zeroed=False)
    generator = torch.Generator().manual_seed(0)
    lines = []
    load = os.getloadavg()[0]
    with torch.inference_mode():
        # fill every slot the steps read, so the attention reads written keys and values
        for t in range(340):
            tokens = torch.randint(0, config.vocab_size, (max(ROWS),), generator=generator)
            fused(tokens, torch.full((max(ROWS),), t), torch.full((max(ROWS),), 5), cache)
        for rows in ROWS:
            tokens = torch.randint(0, config.vocab_size, (rows,), generator=generator)
            positions = torch.randint(260, 340, (rows,), generator=generator)
            classes = torch.randint(2, 15, (rows,), generator=generator)
            view = KVCache(cache.k[:, :rows], cache.v[:, :rows])
            operators = per_step(lambda t=tokens, p=positions, v=view, c=classes:
                                 model.decode_rows(t, p, v, 341, c, True))
            step = per_step(lambda t=tokens, p=positions, c=classes: fused(t, p, c, cache))
            lines.append(f"| {rows} | {operators:.3f} | {step:.3f} | {operators / step:.2f}x | "
                         f"{rows / step * 1e3:,.0f} |")
    text = ["# One decoding step of the bundled default: operators vs the fused C++ step", "",
            f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  ",
            f"Command: `python benchmarks/bench_fused_step.py --out {args.out}`  ",
            f"Load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end (2 shared cores); one thread; "
            "CPU time per step, best of 5 rounds", "",
            "Both paths: bfloat16 projections, int8 key/value cache, positions 260–339; the operator path is "
            "`GPT.decode_rows` (per-row attention kernel), the fused step `FusedStep` (one C++ call). The head "
            "and the draw are not included.", "",
            "| rows | operators ms/step | fused ms/step | speed-up | fused tokens/s (CPU) |",
            "|---|---|---|---|---|", *lines]
    args.out.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
