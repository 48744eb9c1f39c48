"""``pytrafgen compare DATASET --generator ar --generator markov ... --out DIR``: train (or load)
each named generator on the same tokenized dataset, generate the test split's size per
class, evaluate every set against the same real test split, write one side-by-side report.

The real side is the dataset's test split (and, for memorisation and utility, its training
split) decoded and built exactly like generated records, so both sides share the builder,
the address plan and the tokenizer's timing resolution.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pytrafgen.cli.evaluate import evaluation_settings, print_summary
from pytrafgen.cli.options import Device, Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.errors import PytrafgenError
from pytrafgen.progress import activity, progress_bar, progress_steps
from pytrafgen.records import FieldRecords


def take_record_flows(records: FieldRecords, flows: np.ndarray) -> FieldRecords:
    """The records of ``flows`` only (renumbered; the blob is shared, offsets stay valid)."""
    flows = np.sort(np.asarray(flows, np.int64))
    new_id = np.full(records.n_flows, -1, np.int64)
    new_id[flows] = np.arange(len(flows))
    keep = np.flatnonzero(new_id[records.packets["flow"]] >= 0)
    packets = {k: v[keep] for k, v in records.packets.items()}
    packets["flow"] = new_id[packets["flow"]].astype(records.packets["flow"].dtype)
    return FieldRecords(packets=packets, flows={k: v[flows] for k, v in records.flows.items()},
                        blob=records.blob, classes=list(records.classes),
                        raw_derived={k: v[keep] for k, v in records.raw_derived.items()})


def cap_flows_per_class(records: FieldRecords, cap: int, seed: int) -> FieldRecords:
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(records.flows["label"]):
        idx = np.flatnonzero(records.flows["label"] == c)
        keep.append(rng.choice(idx, cap, replace=False) if len(idx) > cap else idx)
    return take_record_flows(records, np.concatenate(keep) if keep else np.zeros(0, np.int64))


def parse_assignments(pairs: list[str], what: str) -> dict[str, dict[str, Any]]:
    """``["ar.size=tiny", "ar.steps=50"]`` → ``{"ar": {"size": "tiny", "steps": 50}}``."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, setting = key.partition(".")
        if not sep or not dot or not name or not setting:
            raise PytrafgenError(f"{what} expects generator.key=value, got {pair!r}")
        try:
            out.setdefault(name, {})[setting] = json.loads(value)
        except json.JSONDecodeError:
            out.setdefault(name, {})[setting] = value
    return out


def obtain_generator(name: str, dataset: Any, checkpoint: Path | None, ckpt_dir: Path,
                     fit_settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A trained generator (loaded from ``checkpoint`` or fitted and saved under ``ckpt_dir``)."""
    from pytrafgen.generators import load_generator
    from pytrafgen.plugins import get_generator

    t0 = time.perf_counter()
    if checkpoint is not None:
        return load_generator(checkpoint, name), {"checkpoint": str(checkpoint), "trained": False}
    gen = get_generator(name)()
    settings = dict(fit_settings)
    if name == "ar":
        settings["checkpoint_dir"] = ckpt_dir  # the AR trainer checkpoints as it goes
    # the AR trainer draws its own bar; other generators' fit shows as an activity with its time
    with activity(f"{name}: training", enabled=name != "ar" and not fit_settings.get("quiet")):
        gen.fit(dataset, settings)
    gen.save(ckpt_dir)
    return gen, {"checkpoint": str(ckpt_dir), "trained": True, "fit_settings": fit_settings,
                 "fit_seconds": round(time.perf_counter() - t0, 1)}


def generate_set(name: str, ds: Any, checkpoint: Path | None, out: Path, fit_settings: dict[str, Any],
                 counts: dict[str, int], plan: Any, kinds: dict[str, str], device: str, seed: int,
                 quiet: bool) -> tuple[Any, dict[str, Any]]:
    """Train/load one generator, sample ``counts``, write ``out/<name>.pcap`` (+ labels CSV)
    and return its EvalSet (with the raw, unrepaired set where the generator emits one)."""
    from pytrafgen.build import write_records
    from pytrafgen.evaluate.from_records import evalset_from_records
    from pytrafgen.payload_fill import fill_payloads

    gen, info = obtain_generator(name, ds, checkpoint, out / "checkpoints" / name, fit_settings)
    setter = getattr(gen, "set_sampling", None)
    if setter is not None:
        setter(device=device)
    t0 = time.perf_counter()
    with progress_bar(f"{name}: sampling", sum(counts.values()), enabled=not quiet) as report:
        gen.on_progress = report
        records = gen.sample(counts, seed=seed)
    info["sample_seconds"] = round(time.perf_counter() - t0, 1)
    records, note = fill_payloads(records, checkpoint if checkpoint is not None else ds.path, seed)
    info["payload_fill"] = note or "bytes past the generated ones drawn from the per-class model (payload_fill.json)"
    pcap = out / f"{name}.pcap"
    write_records(pcap, records, plan, seed)  # and <pcap>.flows.csv
    es = evalset_from_records(records, plan, seed, name, kinds=kinds)
    es.raw = evalset_from_records(records, plan, seed, f"{name}-raw", repair=False, kinds=kinds)
    info["raw"] = ("built as sampled, with the generator's derived fields" if records.raw_derived else
                   "built as sampled; the generator emits no derived fields, so the builder derives them")
    return es, info


def run_comparison(dataset: Path, generators: list[str], out: Path, *,
                   checkpoints: dict[str, Path] | None = None,
                   fit_sets: dict[str, dict[str, Any]] | None = None, max_per_class: int = 500,
                   validators: list[str] | None = None, tshark: bool = True, plots: bool = True,
                   device: str = "auto", seed: int = 0, quiet: bool = False,
                   on_stage: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Train or load each generator on ``dataset``, generate its test split's size per class,
    evaluate every set against that test split and write ``out/report.{json,md,html}``;
    returns the report's results (``summary`` and ``generators`` among them).
    ``on_stage(stage, detail)`` is called as each stage starts: ``("generate", name)`` per
    generator, ``("evaluate", "")`` once."""
    from pytrafgen.atomic import open_output_dir
    from pytrafgen.cli.train import check_setting_names
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.evaluate.from_records import evalset_from_records
    from pytrafgen.evaluate.report import write_report
    from pytrafgen.evaluate.run import run_validators
    from pytrafgen.plugins import get_generator, get_registry

    for name, given in (fit_sets or {}).items():
        if name not in generators:
            raise PytrafgenError(f"--set {name}.…: {name!r} is not among the generators compared "
                                 f"({', '.join(generators)})")
        try:
            gen_cls = get_generator(name)
        except PytrafgenError:
            continue  # an unavailable generator is skipped below, with its reason
        check_setting_names(gen_cls, given, f"--set {name}.")
    ds = TrafficDataset(dataset)
    plan = ds.address_plan
    kinds = ds.class_kinds
    given = checkpoints or {}
    fit_sets = fit_sets or {}
    test_records = cap_flows_per_class(ds.records("test"), max_per_class, seed)
    train_records = cap_flows_per_class(ds.records("train"), 5 * max_per_class, seed)
    real = evalset_from_records(test_records, plan, seed, "real-test", kinds=kinds)
    real.train = evalset_from_records(train_records, plan, seed, "real-train", kinds=kinds)
    real.train.relabel(list(dict.fromkeys(real.classes + real.train.classes)))
    real.relabel(real.train.classes)
    labels = test_records.flows["label"]
    counts = {test_records.classes[int(c)]: int(n) for c, n in zip(*np.unique(labels, return_counts=True),
                                                                    strict=True)}
    open_output_dir(out)
    gens: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for name in generators:
        fit_settings = {"device": device, "seed": seed, "quiet": quiet, **fit_sets.get(name, {})}
        if on_stage is not None:
            on_stage("generate", name)
        try:
            es, info = generate_set(name, ds, given.get(name), out, fit_settings, counts, plan, kinds,
                                    device, seed, quiet)
        except Exception as exc:  # one generator failing (or not installed) must not end the comparison
            runs[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            typer.echo(f"{name}: skipped ({type(exc).__name__}: {exc})", err=True)
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
    n_val = len(validators) if validators else len(get_registry().validators)
    if on_stage is not None:
        on_stage("evaluate", "")
    with progress_steps(1 + n_val * len(gens), enabled=not quiet) as step:
        results = run_validators(real, gens, settings, validators, step)
    results["generators"] = runs
    return write_report(out, real, gens, results, plots=plots)


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        dataset: Annotated[Path, typer.Argument(help="Tokenized dataset directory (pytrafgen tokenize).")],
        generators: Annotated[list[str], typer.Option("--generator", "-g", help="Generator name (repeatable).")],
        out: OutDir,
        checkpoints: Annotated[list[str] | None, typer.Option(
            "--checkpoint", help="name=PATH: use this checkpoint instead of training (repeatable).")] = None,
        sets: Annotated[list[str] | None, typer.Option(
            "--set", help="name.key=value fit setting for one generator (repeatable).")] = None,
        max_per_class: Annotated[int, typer.Option(
            "--max-per-class", help="Test flows (and generated flows) per class at most.")] = 500,
        validators: Annotated[list[str] | None, typer.Option("--validator", "-V", help="Only these validators.")] = None,
        no_tshark: Annotated[bool, typer.Option("--no-tshark", help="Skip the tshark oracle.")] = False,
        no_plots: Annotated[bool, typer.Option("--no-plots", help="Write no PNG plots.")] = False,
        device: Device = "auto",
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Train or load each generator on one dataset and evaluate them side by side."""
        from pytrafgen.atomic import check_output_dir

        check_output_dir(out, force)
        given = {k: Path(v) for k, _, v in (c.partition("=") for c in checkpoints or [])}
        def stage(name: str, detail: str) -> None:
            if quiet or as_json:
                return
            if name == "generate":
                how = f"loading {given[detail]}" if detail in given else "training"
                typer.echo(f"{detail}: {how}, then sampling", err=True)
            else:
                typer.echo("evaluating every generated set against the real test split", err=True)

        results = run_comparison(dataset, generators, out, checkpoints=given,
                                 fit_sets=parse_assignments(sets or [], "--set"), max_per_class=max_per_class,
                                 validators=validators, tshark=not no_tshark, plots=not no_plots,
                                 device=device, seed=seed, quiet=quiet or as_json, on_stage=stage)
        if as_json:
            typer.echo(json.dumps({"out": str(out), "summary": results["summary"],
                                   "generators": results["generators"]}))
        else:
            print_summary(results["summary"])
            typer.echo(f"wrote {out / 'report.html'} (open it in a browser), {out / 'report.md'} and "
                       f"{out / 'report.json'}")
