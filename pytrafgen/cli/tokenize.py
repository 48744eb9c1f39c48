"""``pytrafgen tokenize PCAP_OR_DIR... --labels manifest.csv [--labels more.csv] --out DIR``:
captures → a tokenized dataset (uint16 shards per split, manifest, vocabulary, address plan);
files in parallel, each read in chunks (memory does not grow with its packets), progress by bytes read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pytrafgen.cli.options import Force, JsonOutput, OutDir, Quiet, Seed
from pytrafgen.errors import DatasetError
from pytrafgen.progress import progress_bar
from pytrafgen.tokenizer.layout import DEFAULT_PAYLOAD_CAP
from pytrafgen.tokenizer.stream import DEFAULT_CHUNK_PACKETS

MB = 1_000_000  # progress is counted in MB read: a capture's size in bytes overflows a readable bar


def register(app: typer.Typer) -> None:
    @app.command("tokenize")
    def tokenize(
        inputs: Annotated[list[Path], typer.Argument(help="pcap/pcapng files or directories (searched recursively).")],
        out: OutDir,
        labels: Annotated[list[Path] | None, typer.Option(
            "--labels", help="CSV manifest(s) with at least columns file,class (label optional); repeatable.")] = None,
        payload_cap: Annotated[int, typer.Option("--payload-cap", help="Payload bytes kept as tokens per packet.")]
        = DEFAULT_PAYLOAD_CAP,
        seed: Seed = 0,
        workers: Annotated[int, typer.Option("--workers", "-j", help="Files tokenized in parallel (0: all cores).")]
        = 0,
        idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="Flow idle timeout, seconds.")] = 120.0,
        max_flow_packets: Annotated[int, typer.Option("--max-flow-packets",
                                                      help="Split flows after this many packets (0: never).")] = 0,
        max_app_tokens: Annotated[int, typer.Option(
            "--max-app-tokens", help="A payload whose app-protocol encoding is longer stays bytes.")] = 512,
        chunk_packets: Annotated[int, typer.Option(
            "--chunk-packets", min=0, help="Records read at a time per capture (memory bounded in packets; 0: each capture whole).")]
        = DEFAULT_CHUNK_PACKETS,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Tokenize captures into a dataset: split by flow (stratified by class, seeded)."""
        from pytrafgen.atomic import check_output_dir
        from pytrafgen.plugins import get_registry
        from pytrafgen.tokenizer.pipeline import (
            expand_inputs,
            match_labels,
            read_label_files,
            tokenize_captures,
        )

        check_output_dir(out, force)
        if not labels:
            raise DatasetError("--labels is required: a CSV with columns file,class[,label] naming every capture")
        files = expand_inputs(inputs)
        match_labels(files, read_label_files(labels), labels)  # a labelling mistake ends here, before any progress
        n_workers = workers if workers > 0 else (os.cpu_count() or 1)
        total_mb = -(-sum(f.stat().st_size for f in files) // MB)  # rounded up: a small capture shows 1 MB
        with progress_bar("tokenizing", total_mb, unit="MB", enabled=not (quiet or as_json)) as report:
            def read_so_far(done: int, _total: int) -> None:
                report(-(-done // MB))

            manifest = tokenize_captures(
                files, labels, out, payload_cap=payload_cap, seed=seed, workers=n_workers,
                idle_timeout_s=idle_timeout, max_flow_packets=max_flow_packets, max_app_tokens=max_app_tokens,
                protocols=get_registry().protocols, chunk_packets=chunk_packets, on_bytes=read_so_far)
        if as_json:
            typer.echo(json.dumps(manifest, indent=2))
            return
        counts = manifest["counts"]
        Console().print(
            f"wrote [bold]{out}[/]: {len(manifest['classes'])} classes, "
            + ", ".join(f"{s} {c['flows']:,} flows / {c['packets']:,} packets / {c['tokens']:,} tokens"
                        for s, c in counts.items())
            + f"; vocabulary {manifest['vocab_size']} tokens (hash {manifest['vocab_hash']})",
            highlight=False)
