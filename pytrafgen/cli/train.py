"""``pytrafgen train`` (any registered generator's ``fit``), through the ``Generator`` contract
only. The AR generator's stage commands (``pretrain``, ``finetune``) are registered by its
built-in plugin through ``register_commands`` (``pytrafgen.generators.ar.commands``), as a
third-party generator's would be. Runs under ``torchrun`` for several GPUs or nodes; only the
writing process (``Generator.is_writer``) writes the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pytrafgen.atomic import check_output_dir
from pytrafgen.cli.options import Device, Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.interfaces import Generator

Steps = Annotated[int | None, typer.Option("--steps", help="Optimizer steps (default: the size's).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Windows per step per process.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the training state in --out.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")]
CheckpointEvery = Annotated[int | None, typer.Option("--checkpoint-every", help="Steps between checkpoints.")]


def _load_dataset(path: Path) -> Any:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.plugins import get_registry

    return TrafficDataset(path, get_registry().protocols)


def _report(gen: Generator, out: Path, as_json: bool) -> None:
    if not gen.is_writer():
        return
    stages = gen.training_stages()
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(out), "generator": gen.name, "stages": stages}))
        return
    for stage in stages:
        val = stage.get("best_val_loss")
        val_text = f"{val:.4f}" if isinstance(val, float) else "n/a"
        typer.echo(f"{stage['stage']}: {stage['steps']} steps, {stage.get('tokens', 0):,} tokens, best val loss {val_text}"
                   + (" (stopped early)" if stage.get("stopped_early") else ""))
    typer.echo(f"wrote {out}")


def fit_and_save(gen: Generator, dataset: Path, out: Path, settings: dict[str, Any], as_json: bool) -> None:
    """``gen.fit`` on the dataset and ``gen.save(out)``, through the Generator contract only:
    the output directory as ``checkpoint_dir`` for a generator that checkpoints as it trains,
    an activity line for one that draws no progress of its own, ``finish_fit`` always, and the
    checkpoint written (and reported) by the writing process only."""
    from pytrafgen.progress import activity

    if gen.checkpoints_during_fit:
        settings = {**settings, "checkpoint_dir": out}
    try:
        with activity(f"{gen.name}: training", enabled=not gen.draws_fit_progress and not settings.get("quiet")):
            gen.fit(_load_dataset(dataset), settings)
        if gen.is_writer():
            gen.save(out)
    finally:
        gen.finish_fit()
    _report(gen, out, as_json)


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON when they are JSON (numbers, booleans)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PytrafgenError(f"--set expects key=value, got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        dataset: Annotated[Path, typer.Argument(help="Tokenized dataset directory.")],
        out: OutDir,
        generator: Annotated[str, typer.Option("--generator", "-g", help="Registered generator name.")] = "ar",
        set_: Annotated[list[str] | None, typer.Option("--set", help="Generator setting key=value (repeatable).")] = None,
        device: Device = "auto",
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Train any registered generator (``fit``) and save its checkpoint. For ``ar`` this
        pre-trains on benign flows, then fine-tunes on malicious ones."""
        check_output_dir(out, force)
        from pytrafgen.plugins import get_generator

        given = _parse_set(set_ or [])
        gen_cls = get_generator(generator)
        gen_cls.check_settings(given)
        settings = {"device": device, "seed": seed, "quiet": quiet or as_json, **given}
        fit_and_save(gen_cls(), dataset, out, settings, as_json)
