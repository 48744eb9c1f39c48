"""The output writers tests/test_crash_safety.py kills: name → (final path, args) → a call
that writes. Inputs are prepared before the call, so only the writing itself is observed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def _frames() -> list[bytes]:
    frame = bytes.fromhex("020000000002020000000001080045000028000140004006000" "00a0000010a000002") + bytes(20)
    return [frame] * 5000


def pcap(final: Path) -> Callable[[], object]:
    from pytrafgen import write_pcap

    frames = _frames()
    return lambda: write_pcap(final, frames)


def dataset(final: Path) -> Callable[[], object]:
    from pytrafgen.dataset import write_dataset
    from pytrafgen.tokenizer.vocab import Vocabulary

    vocab = Vocabulary(classes=["benign", "attack"])
    flow = [vocab.special("BOS"), vocab.class_token("benign"), vocab.special("EOS")]
    tokens = np.array(flow * 200, np.uint16)
    offsets = np.arange(0, len(tokens) + 1, 3, dtype=np.int64)
    labels = np.zeros(200, np.int16)
    labels[100:] = 1
    return lambda: write_dataset(final, vocab, tokens, offsets, labels,
                                 class_kinds={"benign": "benign", "attack": "malicious"}, seed=0)


def checkpoint(final: Path, source: str) -> Callable[[], object]:
    from pytrafgen.generators.ar.generator import ARGenerator

    gen = ARGenerator.load(Path(source))
    return lambda: gen.save(final)


def safetensors(final: Path) -> Callable[[], object]:
    from pytrafgen.safetensors_io import save_file

    tensors = {"w": np.arange(1_000_000, dtype=np.float32)}
    return lambda: save_file(tensors, final)


def report(final: Path) -> Callable[[], object]:
    from pytrafgen.evaluate.report import write_report

    # final is <out>/report.json: the first file the evaluation report writes
    results = {"real": {"flows": 10, "packets": 100}, "generated": {},
               "settings": {"real_sources": ["x.pcap"], "seed": 0}, "filler": list(range(100_000))}
    return lambda: write_report(final.parent, None, {}, results, plots=False)  # type: ignore[arg-type]


def vocab(final: Path) -> Callable[[], object]:
    from pytrafgen.tokenizer.vocab import Vocabulary

    v = Vocabulary(classes=[f"class{k}" for k in range(50)])
    return lambda: v.save(final)


WRITERS: dict[str, Callable[..., Callable[[], object]]] = {
    "pcap": pcap, "dataset": dataset, "checkpoint": checkpoint, "safetensors": safetensors,
    "report": report, "vocab": vocab,
}
