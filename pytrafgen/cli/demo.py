"""``pytrafgen demo``: the main job on the bundled default — real captures in, generated pcap
and evaluation report out — in a few minutes on a 2-core CPU, with no GPU and no download.

``pytrafgen demo build-corpus`` and ``pytrafgen demo train-default`` rebuild the two bundled
pieces (the trimmed CC0 corpus and the default AR checkpoint) with the project's own code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pytrafgen.cli.options import Device, Force, OutDir, Quiet, Seed

demo_app = typer.Typer(help="Run the main job on the bundled default data, or rebuild that default.")


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        typer.secho(message, fg=typer.colors.CYAN)


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    out: OutDir = Path("pytrafgen-demo"),
    baseline: Annotated[list[str] | None, typer.Option(
        "--baseline", "-b", help="Also train this baseline generator for a side-by-side report (repeatable).")] = None,
    max_per_class: Annotated[int, typer.Option("--max-per-class", help="Test flows per class at most.")] = 8,
    no_tshark: Annotated[bool, typer.Option("--no-tshark", help="Skip the tshark oracle.")] = False,
    device: Device = "auto",
    seed: Seed = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Tokenize the bundled corpus, generate every class with the bundled AR model, evaluate it
    against the real test split (side by side with the markov baseline), and write the pcaps
    and the report (report.html, report.md, report.json)."""
    if ctx.invoked_subcommand is not None:
        return
    from pytrafgen.atomic import open_output_dir
    from pytrafgen.cli.evaluate import print_summary, report_errors
    from pytrafgen.demo.default import TOKENIZE_SETTINGS, corpus_dir, default_checkpoint
    from pytrafgen.evaluate.compare import run_comparison
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    started = time.perf_counter()
    registry = get_registry()  # resolved once, handed to every step
    open_output_dir(out, force)
    corpus = corpus_dir()
    checkpoint = default_checkpoint()
    dataset = out / "dataset"
    generators = ["ar", *(baseline if baseline is not None else ["markov"])]
    _say(quiet, f"1/3 tokenizing the bundled corpus {corpus} → {dataset}")
    tokenize_captures([corpus], corpus / "manifest.csv", dataset, workers=1,
                      **TOKENIZE_SETTINGS, protocols=registry.protocols)

    def stage(name: str, detail: str) -> None:
        # printed as each stage starts, so the line on screen is what runs now
        if name == "skipped":
            typer.echo(detail, err=True)
        elif name == "generate":
            how = f"the bundled checkpoint {checkpoint}" if detail == "ar" else "trained on the dataset now"
            _say(quiet, f"2/3 generating every class with {detail} ({how}) "
                        f"[{generators.index(detail) + 1}/{len(generators)} generators]")
        else:
            _say(quiet, "3/3 evaluating against the real test split")

    results = run_comparison(
        dataset, generators, out, checkpoints={"ar": checkpoint}, max_per_class=max_per_class,
        tshark=not no_tshark, device=device, seed=seed, quiet=quiet, on_stage=stage, registry=registry,
    )
    elapsed = time.perf_counter() - started
    typer.echo("")
    print_summary(results["summary"])
    report_errors(results, strict=False)
    for name in generators:
        pcap = out / f"{name}.pcap"
        if pcap.exists():
            typer.echo(f"generated ({name}): {pcap}  (flow labels: {pcap}.flows.csv)")
    typer.echo(f"report: {out / 'report.html'}  (open it in a browser; also {out / 'report.md'}, "
               f"figures in {out / 'report.json'})")
    typer.echo(f"done in {elapsed:.0f} s")


@demo_app.command("build-corpus")
def build_corpus(
    manifest: Annotated[Path, typer.Argument(help="Manifest (file,class,label,...) of the captures to trim.")],
    out: OutDir = Path("corpus"),
    force: Force = False,
) -> None:
    """Trim labeled captures into a small corpus (whole flows, per-file budgets) with a manifest."""
    from pytrafgen.atomic import check_output_dir
    from pytrafgen.demo.corpus import trim_corpus

    check_output_dir(out, force)
    for row in trim_corpus(manifest, out):
        typer.echo(f"{row['class']}: {row['packets']} packets, {row['flows']} flows, {row['bytes']} bytes")
    typer.echo(f"wrote {out}")


@demo_app.command("train-default")
def train_default(
    out: OutDir = Path("pytrafgen/data/default_model"),
    corpus: Annotated[Path | None, typer.Option("--corpus", help="Corpus folder (default: the bundled one).")] = None,
    work: Annotated[Path, typer.Option("--work", help="Scratch folder for the dataset.")] = Path("default-model-work"),
    warm_start: Annotated[Path | None, typer.Option(
        "--warm-start", help="Continue from this AR checkpoint (one without continuation tokens gets them) for "
                             "WARM_START_STEPS instead of training from scratch.")] = None,
    steps: Annotated[list[str] | None, typer.Option(
        "--steps", help="STAGE=N: train this stage (pretrain, finetune) for N steps instead of the default "
                        "(STAGE_STEPS, or WARM_START_STEPS with --warm-start); repeatable.")] = None,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train the default AR checkpoint on the corpus: pre-train on its benign flows, fine-tune on
    its malicious flows (settings in pytrafgen/demo/default.py); whole flows, continued past the
    model's context (docs/training.md)."""
    from pytrafgen.atomic import check_output_dir
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.demo.default import (
        MODEL_SETTINGS,
        STAGE_STEPS,
        TOKENIZE_SETTINGS,
        WARM_START_STEPS,
        corpus_dir,
    )
    from pytrafgen.generators.ar.generator import ARGenerator
    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    check_output_dir(out, force)
    stage_steps = dict(WARM_START_STEPS if warm_start is not None else STAGE_STEPS)
    stage_steps.update(_stage_steps(steps or [], stage_steps))
    protocols = get_registry().protocols
    corpus = corpus or corpus_dir()
    dataset = work / "dataset"
    tokenize_captures([corpus], corpus / "manifest.csv", dataset, workers=1, **TOKENIZE_SETTINGS,
                      protocols=protocols)
    ds = TrafficDataset(dataset, protocols)
    gen = ARGenerator()  # the bundled default is the built-in AR model, whatever a plugin registers
    if warm_start is not None:
        gen = ARGenerator.load(warm_start)
        gen.snapshot = None  # start the stages afresh from its weights, not from its training state
        if gen.vocab_json is not None and gen.vocab_json["hash"] != ds.vocab.hash:
            gen.adopt_vocabulary(ds.vocab.to_json())  # e.g. the corpus now also has CoAP tokens
        if gen.model_config is not None and gen.model_config.continuation_buckets == 0:
            gen.add_continuation()
        gen.completed = []
    common = {**MODEL_SETTINGS, "device": device, "quiet": quiet, "checkpoint_dir": work / "checkpoint"}
    for stage, count in stage_steps.items():
        gen.fit(ds, {**common, "stage": stage, "steps": count})
    gen.export(out)  # what ships: no resumable training state (that stays in --work)
    typer.echo(f"wrote {out}")


def _stage_steps(pairs: list[str], stages: dict[str, int]) -> dict[str, int]:
    """``--steps pretrain=150``: a stage of the default's schedule and its step count (≥ 1)."""
    from pytrafgen.errors import PytrafgenError

    out: dict[str, int] = {}
    for pair in pairs:
        stage, _, count = pair.partition("=")
        if stage not in stages or not count.isdigit() or int(count) < 1:
            raise PytrafgenError(f"--steps expects STAGE=N with STAGE one of {', '.join(stages)} and N ≥ 1, "
                                 f"got {pair!r}")
        out[stage] = int(count)
    return out


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
