"""``pytrafgen generate CKPT --class a:100 --class b:50 --out gen.pcap``: sample flows from any
generator checkpoint and write them as a pcap through the builder (lengths and checksums
repaired; ``--raw-out`` also writes them as generated, unrepaired), with each flow's class in
``gen.pcap.flows.csv`` beside it, in the order a reader finds the flows in the pcap.
``--format pcapng`` also puts each packet's class and flow in a packet comment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pytrafgen.cli.options import Device, Force, JsonOutput, OutFile, Quiet, Seed
from pytrafgen.errors import PytrafgenError
from pytrafgen.progress import progress_bar


def parse_class_counts(specs: list[str], default_count: int | None) -> dict[str, int]:
    """``["a:100", "b"]`` with ``-n 50`` → ``{"a": 100, "b": 50}``."""
    counts: dict[str, int] = {}
    for spec in specs:
        name, sep, number = spec.rpartition(":")
        if not sep:
            name, number = spec, ""
        if not name:
            raise PytrafgenError(f"--class {spec!r}: empty class name")
        if number:
            try:
                n = int(number)
            except ValueError:
                raise PytrafgenError(f"--class {spec!r}: count {number!r} is not a number") from None
        elif default_count is not None:
            n = default_count
        else:
            raise PytrafgenError(f"--class {spec!r}: give a count (name:N) or -n N")
        if n < 0:
            raise PytrafgenError(f"--class {spec!r}: count must not be negative")
        counts[name] = counts.get(name, 0) + n
    if not counts:
        raise PytrafgenError("give at least one --class")
    return counts


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        checkpoint: Annotated[Path, typer.Argument(help="Generator checkpoint directory.")],
        classes: Annotated[list[str], typer.Option("--class", "-c", help="Class to generate, as name:N (repeatable).")],
        out: OutFile,
        count: Annotated[int | None, typer.Option("-n", "--count", help="Flows for a --class given without :N.")] = None,
        seed: Seed = 0,
        temperature: Annotated[float | None, typer.Option("--temperature", help="Softmax temperature (0: greedy).")] = None,
        top_k: Annotated[int | None, typer.Option("--top-k", help="Sample among the k likeliest tokens.")] = None,
        top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass.")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help="Flows sampled together.")] = None,
        max_flow_packets: Annotated[int | None, typer.Option(
            "--max-flow-packets", help="AR with continuation: close a flow after this many packets at the latest "
                                       "(default 10000; 0: no cap).")] = None,
        generator: Annotated[str | None, typer.Option("--generator", "-g", help="Override the checkpoint's generator.")] = None,
        raw_out: Annotated[Path | None, typer.Option("--raw-out", help="Also write the packets unrepaired.")] = None,
        file_format: Annotated[str, typer.Option("--format", help="pcap, or pcapng with each packet's class and "
                                                 "flow in a packet comment.")] = "pcap",
        device: Device = "auto",
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Generate labeled flows per class and write them as a pcap (and its flow labels as
        OUT.flows.csv). An existing OUT is replaced only when pytrafgen wrote it, or with --force."""
        import numpy as np

        from pytrafgen.address_plan import AddressPlan
        from pytrafgen.atomic import check_output_file
        from pytrafgen.build import CAPTURE_FORMATS, write_records
        from pytrafgen.generators import load_generator
        from pytrafgen.payload_fill import fill_payloads
        from pytrafgen.plugins import get_registry

        if file_format not in CAPTURE_FORMATS:
            raise PytrafgenError(f"--format must be one of {', '.join(CAPTURE_FORMATS)}, got {file_format!r}")
        counts = parse_class_counts(classes, count)
        # refuse outputs that are not ours before sampling, which can take minutes
        for path in (out, Path(f"{out}.flows.csv"), *([raw_out] if raw_out is not None else [])):
            check_output_file(path, force)
        registry = get_registry()
        gen = load_generator(checkpoint, generator, registry)
        # Generator.set_sampling refuses options the generator does not take
        tuned: dict[str, Any] = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "batch_size": batch_size,
                                 "max_flow_packets": max_flow_packets}
        gen.set_sampling(device=device, **{k: v for k, v in tuned.items() if v is not None})
        with progress_bar("sampling", sum(counts.values()), enabled=not (quiet or as_json)) as report:
            gen.on_progress = report
            records = gen.sample(counts, seed=seed)
        plan = AddressPlan.load(checkpoint / "address_plan.json")
        records, fill_note = fill_payloads(records, checkpoint, seed)
        if fill_note and not as_json:
            typer.echo(fill_note, err=True)
        written = write_records(out, records, plan, seed, file_format=file_format, protocols=registry.protocols)
        labels_csv = written["flow_labels"]  # what `pytrafgen evaluate` reads
        if raw_out is not None:
            write_records(raw_out, records, plan, seed, repair=False, labels=False, file_format=file_format)
        labels = records.flows["label"]
        per_class = {name: int(np.count_nonzero(labels == records.classes.index(name)))
                     for name in counts if name in records.classes}
        packets_per_flow = np.bincount(records.packets["flow"], minlength=records.n_flows)
        packets = {name: int(packets_per_flow[labels == records.classes.index(name)].sum()) for name in per_class}
        summary = {"out": str(out), "flow_labels": str(labels_csv), "raw_out": str(raw_out) if raw_out else None, "seed": seed,
                   "flows": per_class, "packets": packets, "skipped": written["skipped"], "repairs": written["repairs"],
                   "sampling": gen.last_sample_stats}
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            for name, n in per_class.items():
                typer.echo(f"{name}: {n} flows, {packets[name]} packets")
            if written["skipped"]:
                typer.echo(f"builder skipped: {written['skipped']}")
            typer.echo(f"wrote {out} (flow labels: {labels_csv})" + (f" and {raw_out}" if raw_out else ""))
