"""``pytrafgen pretrain`` / ``finetune`` (the AR generator's two stages) and ``pytrafgen train``
(any registered generator's ``fit``). All three run under ``torchrun`` for several GPUs or
nodes; only rank 0 writes the checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pytrafgen.atomic import check_output_dir
from pytrafgen.cli.options import Device, Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.errors import PytrafgenError

Steps = Annotated[int | None, typer.Option("--steps", help="Optimizer steps (default: the size's).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Windows per step per process.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the training state in --out.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")]
CheckpointEvery = Annotated[int | None, typer.Option("--checkpoint-every", help="Steps between checkpoints.")]


def _is_main() -> bool:
    """Rank 0 under torchrun, or a plain single-process launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


def _load_dataset(path: Path) -> Any:
    from pytrafgen.dataset import TrafficDataset

    return TrafficDataset(path)


def _report(gen: Any, out: Path, as_json: bool) -> None:
    if not _is_main():
        return
    summary = {"checkpoint": str(out), "generator": gen.name, "stages": getattr(gen, "completed", [])}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for stage in summary["stages"]:
        val = stage.get("best_val_loss")
        val_text = f"{val:.4f}" if isinstance(val, float) else "n/a"
        typer.echo(f"{stage['stage']}: {stage['steps']} steps, {stage['tokens']:,} tokens, best val loss {val_text}"
                   + (" (stopped early)" if stage.get("stopped_early") else ""))
    typer.echo(f"wrote {out}")


def _fit_ar(gen: Any, dataset: Path, out: Path, settings: dict[str, Any], as_json: bool) -> None:
    from pytrafgen.generators.ar.train import shutdown_distributed

    try:
        gen.fit(_load_dataset(dataset), {**settings, "checkpoint_dir": out})
        if _is_main():
            gen.save(out)
    finally:
        shutdown_distributed()
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


def check_setting_names(gen_cls: Any, settings: dict[str, Any], flag: str = "--set") -> None:
    """Refuse settings the generator does not understand, listing the ones it does."""
    accepted = gen_cls.fit_setting_names()
    if accepted is None:
        return
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise PytrafgenError(f"{flag}: generator {gen_cls.name!r} has no setting {', '.join(unknown)}; "
                             f"accepted: {', '.join(sorted(accepted))}")


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain(
        dataset: Annotated[Path, typer.Argument(help="Tokenized dataset directory (pytrafgen tokenize).")],
        out: OutDir,
        size: Annotated[str, typer.Option("--size", help="Model size: tiny, small or base.")] = "small",
        steps: Steps = None,
        batch_size: BatchSize = None,
        lr: LearningRate = None,
        checkpoint_every: CheckpointEvery = None,
        device: Device = "auto",
        resume: Resume = False,
        compile: Compile = False,
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Pre-train the AR generator on the dataset's benign flows."""
        check_output_dir(out, force)
        from pytrafgen.generators.ar.generator import ARGenerator

        gen = ARGenerator.load(out) if resume and (out / "config.json").is_file() else ARGenerator(size)
        settings = {"stage": "pretrain", "size": size, "steps": steps, "batch_size": batch_size, "lr": lr,
                    "checkpoint_every": checkpoint_every, "device": device, "resume": resume,
                    "compile": compile, "seed": seed, "quiet": quiet or as_json}
        _fit_ar(gen, dataset, out, settings, as_json)

    @app.command("finetune")
    def finetune(
        checkpoint: Annotated[Path, typer.Argument(help="Pre-trained AR checkpoint directory.")],
        dataset: Annotated[Path, typer.Argument(help="Tokenized dataset with labeled malicious flows.")],
        out: OutDir,
        replay: Annotated[float, typer.Option("--replay", help="Share of benign windows (against forgetting).")] = 0.2,
        lora_rank: Annotated[int, typer.Option("--lora-rank", help="Train rank-r LoRA adapters only (0: all weights).")] = 0,
        steps: Steps = None,
        batch_size: BatchSize = None,
        lr: LearningRate = None,
        checkpoint_every: CheckpointEvery = None,
        device: Device = "auto",
        resume: Resume = False,
        compile: Compile = False,
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Fine-tune a pre-trained AR generator on malicious flows, conditioned on their class."""
        check_output_dir(out, force)
        from pytrafgen.generators.ar.generator import ARGenerator

        resuming = resume and (out / "train_state.json").is_file()
        gen = ARGenerator.load(out if resuming else checkpoint)
        settings = {"stage": "finetune", "replay": replay, "lora_rank": lora_rank, "steps": steps,
                    "batch_size": batch_size, "lr": lr, "checkpoint_every": checkpoint_every,
                    "device": device, "resume": resuming, "compile": compile, "seed": seed,
                    "quiet": quiet or as_json}
        _fit_ar(gen, dataset, out, settings, as_json)

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
        check_setting_names(gen_cls, given)
        settings = {"device": device, "seed": seed, "quiet": quiet or as_json, **given}
        gen = gen_cls()
        if generator == "ar":
            _fit_ar(gen, dataset, out, settings, as_json)
            return
        from pytrafgen.progress import activity

        with activity(f"{generator}: training", enabled=not (quiet or as_json)):
            gen.fit(_load_dataset(dataset), settings)
        gen.save(out)
        _report(gen, out, as_json)
