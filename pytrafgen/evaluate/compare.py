"""Comparing generators on one dataset (``pytrafgen compare`` and ``pytrafgen demo`` run it):
train (or load) each named generator on the same tokenized dataset, generate the test split's
size per class, evaluate every set against the same real test split, write one side-by-side
report.

The real side is the dataset's test split (and, for memorisation and utility, its training
split) decoded and built exactly like generated records, so both sides share the builder,
the address plan and the tokenizer's timing resolution. ``run_comparison`` is an edge: it
resolves the plugin registry once (``registry=``, default the loaded plugins') and hands its
generators, protocols and validators down (docs/architecture.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.errors import PytrafgenError
from pytrafgen.progress import activity, progress_bar, progress_steps
from pytrafgen.records import FieldRecords

if TYPE_CHECKING:
    from pytrafgen.interfaces import Generator
    from pytrafgen.plugins import Registry


def cap_flows_per_class(records: FieldRecords, cap: int, seed: int) -> FieldRecords:
    """At most ``cap`` flows per class, drawn with ``seed`` (flows keep their order)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(records.flows["label"]):
        idx = np.flatnonzero(records.flows["label"] == c)
        keep.append(rng.choice(idx, cap, replace=False) if len(idx) > cap else idx)
    return records.take_flows(np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64))


def obtain_generator(name: str, dataset: Any, checkpoint: Path | None, ckpt_dir: Path,
                     fit_settings: dict[str, Any], registry: Registry) -> tuple[Generator, dict[str, Any]]:
    """A trained generator (loaded from ``checkpoint`` or fitted and saved under ``ckpt_dir``)."""
    from pytrafgen.generators import load_generator
    from pytrafgen.plugins import lookup

    t0 = time.perf_counter()
    if checkpoint is not None:
        return load_generator(checkpoint, name, registry), {"checkpoint": str(checkpoint), "trained": False}
    gen_cls: type[Generator] = lookup("generator", registry.generators, name)
    gen = gen_cls()
    settings = dict(fit_settings)
    if gen_cls.checkpoints_during_fit:
        settings["checkpoint_dir"] = ckpt_dir
    # a generator that draws its own bar keeps it; others' fit shows as an activity with its time
    with activity(f"{name}: training", enabled=not gen_cls.draws_fit_progress and not fit_settings.get("quiet")):
        gen.fit(dataset, settings)
    gen.save(ckpt_dir)
    return gen, {"checkpoint": str(ckpt_dir), "trained": True, "fit_settings": fit_settings,
                 "fit_seconds": round(time.perf_counter() - t0, 1)}


def generate_set(name: str, ds: Any, checkpoint: Path | None, out: Path, fit_settings: dict[str, Any],
                 counts: dict[str, int], plan: Any, kinds: dict[str, str], device: str, seed: int,
                 quiet: bool, registry: Registry) -> tuple[Any, dict[str, Any]]:
    """Train/load one generator, sample ``counts``, write ``out/<name>.pcap`` (+ labels CSV)
    and return its EvalSet (with the raw, unrepaired set where the generator emits one)."""
    from pytrafgen.build import write_records
    from pytrafgen.evaluate.from_records import evalset_from_records
    from pytrafgen.payload_fill import fill_payloads

    gen, info = obtain_generator(name, ds, checkpoint, out / "checkpoints" / name, fit_settings, registry)
    gen.set_sampling(device=device)
    t0 = time.perf_counter()
    with progress_bar(f"{name}: sampling", sum(counts.values()), enabled=not quiet) as report:
        gen.on_progress = report
        records = gen.sample(counts, seed=seed)
    info["sample_seconds"] = round(time.perf_counter() - t0, 1)
    records, note = fill_payloads(records, checkpoint if checkpoint is not None else ds.path, seed)
    info["payload_fill"] = note or "bytes past the generated ones drawn from the per-class model (payload_fill.json)"
    pcap = out / f"{name}.pcap"
    protocols = registry.protocols
    write_records(pcap, records, plan, seed, protocols=protocols)  # and <pcap>.flows.csv
    es = evalset_from_records(records, plan, seed, name, kinds=kinds, protocols=protocols)
    es.raw = evalset_from_records(records, plan, seed, f"{name}-raw", repair=False, kinds=kinds, protocols=protocols)
    info["raw"] = ("built as sampled, with the generator's derived fields" if records.raw_derived else
                   "built as sampled; the generator emits no derived fields, so the builder derives them")
    return es, info


def run_comparison(dataset: Path, generators: list[str], out: Path, *,
                   checkpoints: dict[str, Path] | None = None,
                   fit_sets: dict[str, dict[str, Any]] | None = None, max_per_class: int = 500,
                   validators: list[str] | None = None, tshark: bool = True, plots: bool = True,
                   device: str = "auto", seed: int = 0, quiet: bool = False,
                   on_stage: Callable[[str, str], None] | None = None,
                   registry: Registry | None = None) -> dict[str, Any]:
    """Train or load each generator on ``dataset``, generate its test split's size per class,
    evaluate every set against that test split and write ``out/report.{json,md,html}``;
    returns the report's results (``summary`` and ``generators`` among them).
    ``on_stage(stage, detail)`` is called as each stage starts: ``("generate", name)`` per
    generator, ``("skipped", why)`` for a generator that could not be trained, loaded or
    sampled (the comparison goes on without it), ``("evaluate", "")`` once. ``registry``: the plugins whose generators, protocols
    and validators are used (default: the loaded ones)."""
    from pytrafgen.atomic import open_output_dir
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.evaluate.from_records import evalset_from_records
    from pytrafgen.evaluate.report import write_report
    from pytrafgen.evaluate.run import evaluation_settings, run_validators
    from pytrafgen.plugins import get_registry, lookup

    reg = registry if registry is not None else get_registry()
    protocols = reg.protocols
    for name, given in (fit_sets or {}).items():
        if name not in generators:
            raise PytrafgenError(f"--set {name}.…: {name!r} is not among the generators compared "
                                 f"({', '.join(generators)})")
        try:
            gen_cls: type[Generator] = lookup("generator", reg.generators, name)
        except PytrafgenError:
            continue  # an unavailable generator is skipped below, with its reason
        gen_cls.check_settings(given, f"--set {name}.")
    ds = TrafficDataset(dataset, protocols)
    plan = ds.address_plan
    kinds = ds.class_kinds
    given = checkpoints or {}
    fit_sets = fit_sets or {}
    test_records = cap_flows_per_class(ds.records("test"), max_per_class, seed)
    train_records = cap_flows_per_class(ds.records("train"), 5 * max_per_class, seed)
    real = evalset_from_records(test_records, plan, seed, "real-test", kinds=kinds, protocols=protocols)
    real.train = evalset_from_records(train_records, plan, seed, "real-train", kinds=kinds, protocols=protocols)
    real.train.relabel(list(dict.fromkeys(real.classes + real.train.classes)))
    real.relabel(real.train.classes)
    labels = test_records.flows["label"]
    counts = {test_records.classes[int(c)]: int(n) for c, n in zip(*np.unique(labels, return_counts=True),
                                                                    strict=True)}
    # a class whose few flows are all in the train split (one long publish-flood connection) is
    # generated too, as many flows as it has in training: the generators learned it, and
    # class fidelity and the detectors judge its flows against the real training flows
    train_labels = train_records.flows["label"]
    for c, n in zip(*np.unique(train_labels, return_counts=True), strict=True):
        counts.setdefault(train_records.classes[int(c)], min(int(n), max_per_class))
    open_output_dir(out)
    gens: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for name in generators:
        fit_settings = {"device": device, "seed": seed, "quiet": quiet, **fit_sets.get(name, {})}
        if on_stage is not None:
            on_stage("generate", name)
        try:
            es, info = generate_set(name, ds, given.get(name), out, fit_settings, counts, plan, kinds,
                                    device, seed, quiet, reg)
        except Exception as exc:  # one generator failing (or not installed) must not end the comparison
            runs[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            if on_stage is not None:
                on_stage("skipped", f"{name}: skipped ({type(exc).__name__}: {exc})")
            continue
        gens[name] = es
        runs[name] = info
    if not gens:
        raise PytrafgenError("no generator could be trained or loaded: " +
                             "; ".join(f"{k}: {v.get('skipped')}" for k, v in runs.items()))
    split = f"dataset {dataset} test split (at most {max_per_class} flows per class, seed {seed}); " \
            f"train split at most {5 * max_per_class} flows per class"
    settings = evaluation_settings(seed, tshark, 4000, split, [str(dataset)])
    settings["generation_counts"] = counts
    n_val = len(validators) if validators else len(reg.validators)
    if on_stage is not None:
        on_stage("evaluate", "")
    with progress_steps(1 + n_val * len(gens), enabled=not quiet) as step:
        results = run_validators(real, gens, settings, validators, step, validators=reg.validators,
                                 protocols=protocols)
    results["generators"] = runs
    return write_report(out, real, gens, results, plots=plots)


__all__ = ["cap_flows_per_class", "generate_set", "obtain_generator", "run_comparison"]
