"""Running the registered validators over a real set and one or more generated sets; shared
by ``pytrafgen evaluate`` and ``pytrafgen compare``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytrafgen.errors import PytrafgenError
from pytrafgen.evaluate.evalset import EvalSet, load_evalset, read_manifest, stratified_split

if TYPE_CHECKING:
    from pytrafgen.interfaces import Validator
    from pytrafgen.protocol_spec import ProtocolSpec

DEFAULT_TEST_SHARE = 0.3


def evaluation_settings(seed: int, tshark: bool, max_flows: int, split: str, real_sources: list[str]) -> dict:
    """The settings every validator gets (and each result echoes)."""
    return {"seed": seed, "tshark": tshark, "k": 5, "max_flows": max_flows, "scarce_share": 0.1,
            "max_train": 20000, "split": split, "real_sources": real_sources}


def prepare_real(real_paths: Sequence[Path], labels: Path | None, train_paths: Sequence[Path] | None,
                 seed: int, test_share: float = DEFAULT_TEST_SHARE) -> tuple[EvalSet, str]:
    """The real test set with its training split attached, and how the split was made."""
    manifest = read_manifest(labels) if labels is not None else None
    real = load_evalset(real_paths, "real", manifest)
    if train_paths:
        train = load_evalset(train_paths, "real-train", manifest)
        classes = list(dict.fromkeys(real.classes + train.classes))
        real.relabel(classes)
        real.train = train.relabel(classes)
        return real, "test = --real captures, train = --train captures"
    if (real.labels < 0).all():
        raise PytrafgenError("the real captures have no class labels: pass --labels manifest.csv")
    train_idx, test_idx = stratified_split(real.labels, test_share, seed)
    test = real.take_flows(test_idx, "real-test")
    test.train = real.take_flows(train_idx, "real-train")
    return test, f"--real flows split by flow, stratified by class: {1 - test_share:.0%} train / " \
                 f"{test_share:.0%} test (seed {seed})"


def align_classes(real: EvalSet, generated: EvalSet) -> EvalSet:
    """Re-index the generated set's labels into the real classes (unknown classes are added
    at the end, so they never match a real class)."""
    classes = list(real.classes) + [c for c in generated.classes if c not in real.classes]
    if len(classes) > len(real.classes):
        real.relabel(classes)
        if real.train is not None:
            real.train.relabel(classes)
    generated.relabel(classes)
    if generated.raw is not None:
        generated.raw.relabel(classes)
    return generated


def describe(es: EvalSet) -> dict[str, Any]:
    return {"flows": es.n_flows, "packets": es.n_packets, "class_counts": es.class_counts(),
            "sources": list(es.sources)}


def run_validators(real: EvalSet, generated: Mapping[str, EvalSet], settings: Mapping[str, Any],
                   names: Sequence[str] | None = None,
                   progress: Callable[[str], None] | None = None, *,
                   validators: Mapping[str, Validator],
                   protocols: Mapping[str, ProtocolSpec]) -> dict[str, Any]:
    """Every validator of ``validators`` (or only ``names``) over every generated set. The sets
    are handed ``protocols`` (``EvalSet.protocols``), the specs their rules are judged with;
    the caller resolves both from the plugin registry."""
    from pytrafgen.evaluate.compliance import compliance

    registry = validators
    for es in (real, real.train, *generated.values(), *(g.raw for g in generated.values())):
        if es is not None:
            es.protocols = protocols
    chosen = list(names) if names else list(registry)
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise PytrafgenError(f"unknown validator(s) {', '.join(unknown)}; available: {', '.join(sorted(registry))}")
    results: dict[str, Any] = {
        "settings": dict(settings),
        "real": describe(real) | {"train": describe(real.train) if real.train is not None else None},
        "generated": {},
    }
    if "compliance" in chosen:
        if progress:
            progress("compliance of the real test split (reference)")
        results["real_reference"] = compliance(real, use_tshark=bool(settings.get("tshark", True)))
    for gname, gen in generated.items():
        align_classes(real, gen)
        metrics: dict[str, Any] = {}
        timings: dict[str, float] = {}
        for vname in chosen:
            if progress:
                progress(f"{gname}: {vname}")
            t0 = time.perf_counter()
            try:
                metrics[vname] = registry[vname].evaluate(real, gen, settings)
            except PytrafgenError:
                raise
            except Exception as exc:  # a broken third-party metric is reported, never fatal
                metrics[vname] = {"error": f"{type(exc).__name__}: {exc}"}
            timings[vname] = round(time.perf_counter() - t0, 3)
        results["generated"][gname] = describe(gen) | {"metrics": metrics, "seconds": timings}
    return results
