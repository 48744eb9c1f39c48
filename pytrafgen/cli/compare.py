"""``pytrafgen compare DATASET --generator ar --generator markov ... --out DIR``: train (or load)
each named generator on the same tokenized dataset, generate the test split's size per
class, evaluate every set against the same real test split, write one side-by-side report
(the work is ``pytrafgen.evaluate.compare.run_comparison``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pytrafgen.cli.evaluate import Strict, print_summary, report_errors
from pytrafgen.cli.options import Device, Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.errors import PytrafgenError


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
        strict: Strict = False,
        device: Device = "auto",
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Train or load each generator on one dataset and evaluate them side by side."""
        from pytrafgen.atomic import check_output_dir
        from pytrafgen.evaluate.compare import run_comparison
        from pytrafgen.plugins import get_registry

        check_output_dir(out, force)
        given = {k: Path(v) for k, _, v in (c.partition("=") for c in checkpoints or [])}
        def stage(name: str, detail: str) -> None:
            if name == "skipped":
                typer.echo(detail, err=True)
                return
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
                                 device=device, seed=seed, quiet=quiet or as_json, on_stage=stage,
                                 registry=get_registry())
        if as_json:
            typer.echo(json.dumps({"out": str(out), "summary": results["summary"],
                                   "generators": results["generators"], "errors": results["errors"]}))
        else:
            print_summary(results["summary"])
            typer.echo(f"wrote {out / 'report.html'} (open it in a browser), {out / 'report.md'} and "
                       f"{out / 'report.json'}")
        report_errors(results, strict)
