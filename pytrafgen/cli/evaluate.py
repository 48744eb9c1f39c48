"""``pytrafgen evaluate --real REAL... --labels manifest.csv --generated GEN.pcap [...] --out DIR``:
every registered validator over real and generated captures, written as report.json +
report.md with plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pytrafgen.cli.options import Force, JsonOutput, Labels, OutDir, Quiet, Seed
from pytrafgen.errors import PytrafgenError
from pytrafgen.evaluate.run import evaluation_settings
from pytrafgen.progress import progress_steps


def print_summary(summary: dict[str, dict[str, float | None]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from pytrafgen.evaluate.report import _fmt, summary_rows

    table = Table(title="evaluation (side by side)")
    table.add_column("metric")
    for name in summary:
        table.add_column(name, justify="right")
    for key, label in summary_rows(summary):
        table.add_row(label, *(_fmt(summary[n].get(key)) for n in summary))
    Console().print(table)


Strict = Annotated[bool, typer.Option(
    "--strict", help="Exit non-zero when a validator or compliance rule raised (the report is still written).")]


def report_errors(results: dict, strict: bool) -> None:
    """Print every validator and rule that raised (stderr, one line each); with ``strict`` they
    make the command fail after the report is written."""
    errors = results.get("errors") or []
    for line in errors:
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
    if strict and errors:
        raise PytrafgenError(f"--strict: {len(errors)} validator or rule error(s), listed above and in report.md")


def register(app: typer.Typer) -> None:
    @app.command("rules")
    def rules(
        markdown: Annotated[bool, typer.Option("--markdown", help="Print docs/rules.md.")] = False,
        as_json: JsonOutput = False,
    ) -> None:
        """List every compliance rule of every loaded protocol plugin."""
        from pytrafgen.evaluate.compliance import all_rules, rules_markdown
        from pytrafgen.plugins import get_registry

        protocols = get_registry().protocols
        if markdown:
            typer.echo(rules_markdown(protocols), nl=False)
            return
        found = all_rules(protocols)
        if as_json:
            typer.echo(json.dumps([{"id": r.id, "protocol": r.protocol, "scope": r.scope,
                                    "description": r.description} for r in found]))
            return
        for r in found:
            typer.echo(f"{r.id:10} {r.scope:6} {r.description}")
        typer.echo(f"{len(found)} rules")

    @app.command("evaluate")
    def evaluate(
        real: Annotated[list[Path], typer.Option("--real", help="Real captures (the test side; repeatable).")],
        generated: Annotated[list[Path], typer.Option("--generated", "-g", help="Generated pcap (repeatable).")],
        out: OutDir,
        labels: Labels = None,
        train: Annotated[list[Path] | None, typer.Option(
            "--train", help="Real training captures (memorisation, utility); else --real is split.")] = None,
        raw: Annotated[list[Path] | None, typer.Option(
            "--raw", help="Pre-repair pcap of each --generated, in the same order (raw compliance).")] = None,
        validators: Annotated[list[str] | None, typer.Option(
            "--validator", "-V", help="Run only these validators (repeatable); default: all registered.")] = None,
        no_tshark: Annotated[bool, typer.Option("--no-tshark", help="Skip the tshark oracle.")] = False,
        no_plots: Annotated[bool, typer.Option("--no-plots", help="Write no PNG plots.")] = False,
        max_flows: Annotated[int, typer.Option("--max-flows", help="Flows per side for k-NN metrics.")] = 4000,
        strict: Strict = False,
        seed: Seed = 0,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Evaluate generated captures against real ones: compliance, fidelity, diversity,
        memorisation, utility, class fidelity."""
        from pytrafgen import read_pcap
        from pytrafgen.atomic import check_output_dir
        from pytrafgen.evaluate.evalset import load_evalset, read_manifest
        from pytrafgen.evaluate.report import write_report
        from pytrafgen.evaluate.run import prepare_real, run_validators

        check_output_dir(out, force)
        for path in [*real, *generated, *(train or []), *(raw or [])]:
            if not path.is_file():
                raise PytrafgenError(f"{path}: no such file")
        for path in generated:
            if len(read_pcap(path)) == 0:
                raise PytrafgenError(f"{path}: the generated pcap has no packets, so there is nothing to "
                                     f"evaluate; generate at least one flow (pytrafgen generate ... --class NAME:N)")
        if raw and len(raw) != len(generated):
            raise PytrafgenError(f"--raw needs one file per --generated ({len(generated)}), got {len(raw)}")
        manifest = read_manifest(labels) if labels is not None else None
        real_set, split = prepare_real(real, labels, train, seed)
        gens = {}
        for i, path in enumerate(generated):
            name = path.stem if path.stem not in gens else f"{path.stem}-{i}"
            gen = load_evalset([path], name, manifest)
            if (gen.labels < 0).all():
                raise PytrafgenError(f"{path}: no class labels (list it in --labels or write {path}.flows.csv)")
            if raw:
                gen.raw = load_evalset([raw[i]], f"{name}-raw", manifest)
                if (gen.raw.labels < 0).all() and gen.raw.n_flows == gen.n_flows:
                    # same records built twice: flows assemble in the same order
                    gen.raw.classes, gen.raw.labels = list(gen.classes), gen.labels.copy()
            gens[name] = gen
        settings = evaluation_settings(seed, not no_tshark, max_flows, split, [str(p) for p in real])
        from pytrafgen.plugins import get_registry

        registry = get_registry()
        n_validators = len(validators) if validators else len(registry.validators)
        with progress_steps(1 + n_validators * len(gens), enabled=not (quiet or as_json)) as step:
            results = run_validators(real_set, gens, settings, validators, step,
                                     validators=registry.validators, protocols=registry.protocols)
            results = write_report(out, real_set, gens, results, plots=not no_plots)
        if as_json:
            typer.echo(json.dumps({"out": str(out), "summary": results["summary"], "errors": results["errors"]}))
        else:
            print_summary(results["summary"])
            typer.echo(f"wrote {out / 'report.html'} (open it in a browser), {out / 'report.md'} and "
                       f"{out / 'report.json'}")
        report_errors(results, strict)
