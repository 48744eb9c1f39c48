"""The AR generator's stage commands, ``pytrafgen pretrain`` and ``pytrafgen finetune``,
registered by its built-in plugin through the ``register_commands`` hook, exactly as a
third-party generator adds its own commands. Both train through the same ``Generator``
contract as ``pytrafgen train`` (``pytrafgen.cli.train.fit_and_save``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pytrafgen.atomic import check_output_dir
from pytrafgen.cli.options import Device, Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.cli.train import BatchSize, CheckpointEvery, Compile, LearningRate, Resume, Steps, fit_and_save


def register_commands(app: typer.Typer) -> None:
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
        fit_and_save(gen, dataset, out, settings, as_json)

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
        fit_and_save(gen, dataset, out, settings, as_json)
