"""The per-row attention kernel alone with a float16 cache and with an int8 one (a scale per
slot), shaped as the bundled default samples on a CPU: a full pool (256 rows, 4 layers, 4
heads of 48) whose rows sit at positions averaging ~295 (uniform 1..590), so a step's keys and
values (hundreds of MB) do not fit in the CPU's caches. One decoding step = the fused call
(store the new key/value, attend) on each layer in turn; the two stores are timed alternately,
each the best of REPEATS steps, one thread.

    python benchmarks/bench_attend_cache.py --out benchmarks/results/attend_cache.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pytrafgen import _core
from pytrafgen.generators.ar.model import int8_cache_supported, quantize_slots

LAYERS, ROWS, HEADS, DIM, SLOTS = 4, 256, 4, 48, 640
REPEATS = 7


def step_seconds(attend: Callable[..., None], k: list[np.ndarray], v: list[np.ndarray], qkv: np.ndarray, lengths: np.ndarray) -> float:
    out = np.empty((ROWS, HEADS, DIM), dtype=np.float32)
    start = time.perf_counter()
    for layer in range(LAYERS):
        attend(qkv, k[layer], v[layer], lengths, DIM ** -0.5, out, 1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not int8_cache_supported(DIM):
        raise SystemExit("the float16 and int8 cache kernels need a CPU with AVX-512")
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    lengths = torch.randint(1, 2 * 295, (ROWS,)).numpy()
    qkv = torch.randn(ROWS, 3 * HEADS * DIM).numpy()
    values = [torch.randn(ROWS, HEADS, SLOTS, DIM) for _ in range(2 * LAYERS)]
    half = [t.half().numpy().view(np.uint16) for t in values]
    int8 = [quantize_slots(t).numpy() for t in values]
    del values
    stores: dict[str, tuple[Callable[..., None], list[np.ndarray], list[np.ndarray]]] = {"float16": (_core.attend_qkv_half, half[:LAYERS], half[LAYERS:]),
              "int8, a scale per slot": (_core.attend_qkv_int8, int8[:LAYERS], int8[LAYERS:])}
    best = {name: float("inf") for name in stores}
    for _ in range(REPEATS):
        for name, (attend, k, v) in stores.items():
            best[name] = min(best[name], step_seconds(attend, k, v, qkv, lengths))
    slots_read = int(lengths.sum()) * HEADS * LAYERS
    lines = ["# Attention kernel: float16 vs int8 key/value cache", "",
             f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}  ",
             f"Command: `python benchmarks/bench_attend_cache.py --out {args.out}`  ",
             f"Load average {load_start:.1f} → {os.getloadavg()[0]:.1f} (2 cores shared with other sessions)", "",
             f"One decoding step of a full pool: {LAYERS} layers × {ROWS} rows × {HEADS} heads of {DIM}, positions "
             f"uniform 1..589 (mean {lengths.mean():.0f}); best of {REPEATS} steps each, alternating, one thread.", "",
             "| cache | bytes per slot (key + value, one head) | ms per step | ns per row·head·slot | vs float16 |",
             "|---|---|---|---|---|"]
    for name, seconds in best.items():
        per_slot = 2 * (2 * DIM if name == "float16" else DIM + 4)
        lines.append(f"| {name} | {per_slot} | {seconds * 1e3:.1f} | {seconds / slots_read * 1e9:.2f} | "
                     f"{best['float16'] / seconds:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
