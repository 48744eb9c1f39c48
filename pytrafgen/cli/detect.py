"""``pytrafgen detect train | run | eval``: train malicious-traffic detectors on labeled real
(and generated) flows, run them over captures, and evaluate them. See docs/detect.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pytrafgen.cli.options import JsonOutput, Labels, OutDir, OutFile, Seed
from pytrafgen.detect.stream import DEFAULT_CHUNK_PACKETS
from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.detect.model import Detector

detect_app = typer.Typer(help="Train malicious-traffic detectors on real and generated flows; run and evaluate them.",
                         no_args_is_help=True)

IdleTimeout = Annotated[float, typer.Option("--idle-timeout", help="Flow idle timeout, seconds.")]
MaxFlowPackets = Annotated[int, typer.Option(
    "--max-flow-packets", help="Cut longer flows into segments of this many packets (0: never).")]


def _manifest(labels: Path | None) -> dict[str, tuple[str, str]]:
    from pytrafgen.evaluate.evalset import read_manifest

    if labels is None:
        raise PytrafgenError("the real captures need class labels: pass --labels manifest.csv")
    return read_manifest(labels)


def _check_files(paths: list[Path]) -> None:
    for p in paths:
        if not p.is_file():
            raise PytrafgenError(f"{p}: no such capture file")


@detect_app.command("train")
def train(
    captures: Annotated[list[Path], typer.Argument(help="Labeled real captures (pcap or pcapng).")],
    out: OutDir,
    labels: Labels = None,
    generated: Annotated[list[Path] | None, typer.Option(
        "--generated", "-g", help="Generated pcap to add to the training flows (labels from <pcap>.flows.csv, "
                                  "else a pcapng's class=NAME packet comments); repeatable.")] = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="forest, boosting, transformer, logreg, knn or mlp.")] = "forest",
    val_share: Annotated[float, typer.Option("--val-share", help="Share of real flows held out for validation.")]
    = 0.2,
    max_flows_per_class: Annotated[int, typer.Option(
        "--max-flows-per-class", help="Training flows per class at most, real and generated each (0: all).")] = 5000,
    generated_weight: Annotated[float, typer.Option(
        "--generated-weight", help="Training weight of a generated flow next to a real flow's 1 (forest, boosting, "
                                   "logreg, mlp: sample weight; transformer: how often it is drawn).")] = 1.0,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="transformer: fine-tuning steps (default 700, a few CPU minutes).")] = None,
    idle_timeout: IdleTimeout = 120.0,
    max_flow_packets: MaxFlowPackets = 100,
    seed: Seed = 0,
    as_json: JsonOutput = False,
) -> None:
    """Train a detector on labeled real flows (+ generated flows) and print its validation figures."""
    from pytrafgen.detect.data import FlowSettings, load_labeled
    from pytrafgen.detect.model import KINDS
    from pytrafgen.detect.train import train_detector

    if model not in KINDS:
        raise PytrafgenError(f"unknown --model {model!r} (choose from {', '.join(KINDS)})")
    _check_files([*captures, *(generated or [])])
    settings = FlowSettings(idle_timeout, max_flow_packets)
    real = load_labeled(captures, _manifest(labels), settings)
    gen = load_labeled(generated, None, settings, generated=True) if generated else None
    result = train_detector(model, real, gen, val_share=val_share, seed=seed, max_flows_per_class=max_flows_per_class,
                            transformer_steps=steps, generated_weight=generated_weight)
    result.detector.save(out)
    if as_json:
        typer.echo(json.dumps({"detector": str(out), "training": result.detector.header.training,
                               "validation": result.validation}, indent=2))
        return
    _print_metrics(result.validation, f"validation (held-out real flows) — {model}")
    typer.echo(f"validation macro-F1 {result.validation['macro_f1']:.4f} on {result.validation['flows']} "
               f"held-out real flows; wrote {out}")


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("class", "precision", "recall", "F1", "flows"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, m in metrics["per_class"].items():
        if m["support"]:
            table.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    table.add_row("macro-F1", "", "", f"{metrics['macro_f1']:.4f}", str(metrics["flows"]), style="bold")
    Console().print(table)


@detect_app.command("run")
def run(
    detector_dir: Annotated[Path, typer.Argument(help="Detector directory (from `detect train`).")],
    captures: Annotated[list[Path], typer.Argument(help="Captures to classify (pcap or pcapng).")],
    out: OutFile,
    chunk_packets: Annotated[int, typer.Option("--chunk-packets", help="Packets read per chunk (memory bound).")]
    = DEFAULT_CHUNK_PACKETS,
    as_json: JsonOutput = False,
) -> None:
    """Classify every flow of the captures; one CSV row per flow and a summary per class."""
    from pytrafgen.atomic import atomic_file
    from pytrafgen.detect.model import load_detector
    from pytrafgen.detect.run import run_detector

    if chunk_packets < 1:
        raise PytrafgenError(f"--chunk-packets must be at least 1, got {chunk_packets}")
    detector = load_detector(detector_dir)
    _check_files(captures)
    with atomic_file(out, "w") as fh:
        summary = run_detector(detector, captures, fh, chunk_packets)
    body = summary.to_json()
    body["verdicts"] = str(out)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"{body['flows']:,} flows, {body['malicious_flows']:,} malicious — {out}", title_justify="left")
    for col in ("predicted class", "verdict", "flows", "packets", "bytes", "mean probability"):
        table.add_column(col, justify="left" if col in ("predicted class", "verdict") else "right")
    for r in body["per_class"]:
        if r["flows"]:
            table.add_row(r["class"], r["verdict"], f"{r['flows']:,}", f"{r['packets']:,}", f"{r['bytes']:,}",
                          f"{r['mean_probability']:.3f}")
    Console().print(table)
    if body["skipped"]:
        typer.echo("skipped records: " + ", ".join(f"{k} {v:,}" for k, v in body["skipped"].items()))


@detect_app.command("eval")
def evaluate(
    paths: Annotated[list[Path], typer.Argument(
        help="One or two detector directories, then the labeled captures.", metavar="DET [DET2] CAPTURE...")],
    out: OutDir,
    labels: Labels = None,
    as_json: JsonOutput = False,
) -> None:
    """Per-class precision/recall/F1, macro-F1 and confusion matrices; two detectors side by side."""
    from pytrafgen.detect.evaluate import detector_name, evaluate_detectors, write_report
    from pytrafgen.detect.model import HEADER_FILE, load_detector

    detector_dirs = []
    for p in paths[:2]:
        if not (p.is_dir() and (p / HEADER_FILE).is_file()):
            break
        detector_dirs.append(p)
    captures = paths[len(detector_dirs):]
    if not detector_dirs:
        raise PytrafgenError(f"{paths[0]}: not a detector directory (no {HEADER_FILE}); pass DET [DET2] CAPTURE...")
    if not captures:
        raise PytrafgenError("no captures to evaluate on: pass DET [DET2] CAPTURE...")
    _check_files(captures)
    detectors: list[tuple[str, Detector]] = []
    for p in detector_dirs:
        det = load_detector(p)
        name = detector_name(det, p)
        if any(name == n for n, _ in detectors):
            name = f"{name} [{len(detectors) + 1}]"
        detectors.append((name, det))
    results = evaluate_detectors(detectors, captures, _manifest(labels))
    written = write_report(results, out)
    if as_json:
        typer.echo(json.dumps({**written, "macro_f1": {n: m["macro_f1"] for n, m in results["detectors"].items()}},
                              indent=2))
        return
    for name, metrics in results["detectors"].items():
        _print_metrics(metrics, name)
    if written["note"]:
        typer.echo(written["note"])
    typer.echo(f"report: {written['report']}")


def register(app: typer.Typer) -> None:
    app.add_typer(detect_app, name="detect")
