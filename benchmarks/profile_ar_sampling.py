"""Where the CPU time of sampling the bundled default AR model goes: ``ARGenerator.sample`` of
N flows per class under cProfile with a CPU-time clock (on a shared machine wall time mostly
says how busy it was), the top functions by their own CPU time.

    python benchmarks/profile_ar_sampling.py 20
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

from pytrafgen.generators.ar.generator import ARGenerator
from pytrafgen.plugins import get_registry

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"


def main() -> None:
    flows_per_class = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    gen = ARGenerator.load(DEFAULT_MODEL)
    gen.protocols = get_registry().protocols  # the application protocols the vocabulary uses
    gen.set_sampling(show_progress=False)
    profile = cProfile.Profile(time.process_time)
    wall = time.perf_counter()
    profile.enable()
    gen.sample({name: flows_per_class for name in gen.classes}, seed=0)
    profile.disable()
    print(f"{flows_per_class} flows per class: {time.perf_counter() - wall:.1f} s wall, {gen.last_sample_stats}")
    pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
