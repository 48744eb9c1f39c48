"""``pytrafgen learn-gaps CHECKPOINT (--dataset DIR | --captures PATH... --labels CSV)``: add the
inter-arrival gap table (``iat_fill.json``, :mod:`pytrafgen.iat_fill`) to a checkpoint made before
it, without retraining: the tokens, the vocabulary and the weights stay as they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pytrafgen.cli.options import JsonOutput
from pytrafgen.errors import PytrafgenError


def register(app: typer.Typer) -> None:
    @app.command("learn-gaps")
    def learn_gaps(
        checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory the table is added to.")],
        dataset: Annotated[Path | None, typer.Option(
            "--dataset", help="The dataset the checkpoint was trained on: its table, or, for a dataset made "
                              "before it, the captures its manifest names, tokenized again with its settings.")]
        = None,
        captures: Annotated[list[Path] | None, typer.Option(
            "--captures", help="Captures (files or directories) the checkpoint was trained on; repeatable.")] = None,
        labels: Annotated[list[Path] | None, typer.Option(
            "--labels", help="With --captures: CSV manifest(s) with columns file,class[,label].")] = None,
        seed: Annotated[int, typer.Option("--seed", help="With --captures: the split seed the dataset was "
                                                          "tokenized with.")] = 0,
        idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="With --captures: flow idle timeout, "
                                                                           "seconds (as tokenized).")] = 120.0,
        max_flow_packets: Annotated[int, typer.Option(
            "--max-flow-packets", help="With --captures: flows split after this many packets, as tokenized "
                                       "(0: never).")] = 0,
        as_json: JsonOutput = False,
    ) -> None:
        """Learn per class how real gaps between packets spread inside each IAT bucket and add it to
        CHECKPOINT as iat_fill.json (replacing one there). With --captures, --seed and the flow
        settings must be those the checkpoint's dataset was tokenized with: the table is learned
        from the same training split."""
        from pytrafgen.iat_fill import add_to_checkpoint, learn_from_captures, learn_from_dataset
        from pytrafgen.plugins import get_registry

        if (dataset is None) == (not captures):
            raise PytrafgenError("give either --dataset or --captures (with --labels)")
        if not (checkpoint / "config.json").is_file():
            raise PytrafgenError(f"{checkpoint}: not a checkpoint directory (no config.json)")
        protocols = get_registry().protocols
        if dataset is not None:
            fill = learn_from_dataset(dataset, protocols)
        else:
            if not labels:
                raise PytrafgenError("--captures needs --labels: a CSV with columns file,class[,label]")
            vocab = json.loads((checkpoint / "vocab.json").read_text()) if (checkpoint / "vocab.json").is_file() else {}
            fill = learn_from_captures(list(captures or []), labels, payload_cap=int(vocab.get("payload_cap", 16)),
                                       seed=seed, idle_timeout_s=idle_timeout, max_flow_packets=max_flow_packets,
                                       protocols=protocols)
        written = add_to_checkpoint(checkpoint, fill)
        if as_json:
            typer.echo(json.dumps(written))
            return
        typer.echo(f"{'replaced' if written['replaced'] else 'wrote'} {written['path']}: gaps of "
                   f"{len(written['classes_with_gaps'])} classes"
                   + (f"; {', '.join(written['classes_without_gaps'])} had none (all classes' gaps stand in)"
                      if written["classes_without_gaps"] else ""))
