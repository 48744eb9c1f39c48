"""What the benchmark scripts share: the CPU a figure was measured on, and writing a result
as JSON plus Markdown (atomically, then printed). Imported as ``bench_common`` because each
script runs as ``python benchmarks/bench_*.py`` (its folder is on ``sys.path``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pytrafgen.atomic import atomic_file


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else whatever platform reports."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(out: Path, report: dict[str, Any], markdown: str, indent: int = 2) -> None:
    """``out``.json and ``out``.md, each written atomically; the Markdown is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out.with_suffix(".json"), "w") as fh:
        json.dump(report, fh, indent=indent)
    with atomic_file(out.with_suffix(".md"), "w") as fh:
        fh.write(markdown)
    print(markdown.rstrip("\n"))


def default_model_flows(model_dir: Path, per_class: int, context: int) -> tuple[Any, Any, Any]:
    """The AR checkpoint at ``model_dir`` (one thread, plugin protocols), ``per_class`` flows of
    each of its classes sampled with seed 0 and its own sampling settings, cut or padded with
    EOS to ``context`` tokens (at most the model's): ``(model, special tokens, idx)``, ``idx`` a
    (flows, context) int64 tensor. The grammar spans the model's tokens (its continuation tokens
    included, never sampled), as ``ARGenerator.sample`` builds it."""
    import numpy as np
    import torch

    from pytrafgen.generators.ar import tokens as tok
    from pytrafgen.generators.ar.generator import ARGenerator
    from pytrafgen.generators.ar.sample import sample_classes
    from pytrafgen.plugins import get_registry

    torch.set_num_threads(1)
    gen = ARGenerator.load(model_dir)
    gen.protocols = get_registry().protocols
    model, device = gen._model_on_device()
    vocab = gen.vocabulary()
    special = tok.special_tokens(vocab)
    grammar = tok.grammar_tables(vocab, device, model.config.vocab_size, gen.protocols)
    flows, _ = sample_classes(model, grammar, special.bos, special.eos, tok.class_tokens(vocab),
                              dict.fromkeys(gen.classes, per_class), gen.sampling, 0, device)
    context = min(context, model.config.block_size)
    idx = torch.tensor(np.stack([np.pad(f[:context].astype(np.int64), (0, max(0, context - len(f))),
                                        constant_values=special.eos) for f in flows]))
    return model, special, idx
