"""``pytrafgen replay GEN.pcap --scenario NAME [--real REAL.pcap] [--control BENIGN.pcap]``:
replay traffic at real servers inside network namespaces this command creates, measure the
attack's effect at the target and compare generated with real traffic (docs/replay.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pytrafgen.cli.options import Force, JsonOutput, Quiet
from pytrafgen.errors import ReplayError


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        generated: Annotated[Path, typer.Argument(help="Generated attack capture (pcap/pcapng).")],
        scenario: Annotated[str, typer.Option("--scenario", "-s", help="syn_flood, port_scan, http_bruteforce, "
                                              "mqtt_bruteforce, mqtt_connect_flood, udp_flood, slowloris, "
                                              "http_flood, mqtt_publish_flood or nmap_version_scan.")],
        real: Annotated[Path | None, typer.Option("--real", help="Real attack capture of the same class.")] = None,
        control: Annotated[Path | None, typer.Option("--control", help="Benign control capture.")] = None,
        max_packets: Annotated[int, typer.Option("--max-packets", help="Most packets (stateless, floods "
                                                 "included) or client messages (sessions) sent per input.")] = 2000,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds of sending per input.")] = 10.0,
        max_rate: Annotated[float, typer.Option("--max-rate", help="Most packets per second.")] = 20000.0,
        max_sessions: Annotated[int, typer.Option("--max-sessions", help="Most TCP sessions per input.")] = 400,
        hold: Annotated[float, typer.Option("--hold", help="Longest a session is held open, seconds.")] = 3.0,
        repeat: Annotated[int, typer.Option("--repeat", help="Measurements per input, each in fresh namespaces; "
                                            "the median stands (flood effects vary with the machine's load).")] = 1,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write replay_<scenario>.json/.md here.")] = None,
        force: Force = False,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Replay GEN.pcap (and --real, --control) at a live target inside private network
        namespaces; needs root. Traffic never leaves the namespaces this command creates."""
        from pytrafgen.atomic import check_output_dir, open_output_dir
        from pytrafgen.replay.netns import install_cleanup_handlers, require_root
        from pytrafgen.replay.report import run_replay, write_report
        from pytrafgen.replay.scenarios import get_scenario
        from pytrafgen.replay.senders import Bounds

        chosen = get_scenario(scenario)
        if repeat < 1:
            raise ReplayError(f"--repeat must be at least 1, got {repeat}")
        if out is not None:
            check_output_dir(out, force)
        inputs = {"real": real, "generated": generated, "control": control}
        for role, path in inputs.items():
            if path is not None and not path.is_file():
                raise ReplayError(f"{path}: no such capture (given as the {role} input)")
        require_root()
        chosen.check_requirements()
        bounds = Bounds(max_packets=max_packets, timeout_s=timeout, max_rate_pps=max_rate,
                        max_sessions=max_sessions, hold_cap_s=hold)
        install_cleanup_handlers()
        given = {role: path for role, path in inputs.items() if path is not None}
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, transient=True, disable=quiet or as_json) as progress:
            task = progress.add_task(f"{chosen.name}: starting", total=None)
            report = run_replay(chosen, given, bounds, on_step=lambda role: progress.update(
                task, description=f"{chosen.name}: replaying the {role} input at the target"), repeat=repeat)
        if out is not None:
            write_report(report, open_output_dir(out))
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        console = Console()
        table = Table(title=f"replay {chosen.name}: {chosen.effect} (tolerance {chosen.tolerance_text})")
        for column in ("input", "file", "effect", "key figures"):
            table.add_column(column)
        for role, run in report["runs"].items():
            figures = ", ".join(f"{k}={v}" for k, v in list(run["figures"].items())[:6])
            table.add_row(role, Path(run["input"]).name, f"{run['effect']:g}", figures)
        console.print(table)
        console.print(f"verdict: [bold]{report['verdict']}[/]")
        if out is not None:
            console.print(f"report written to {out}/replay_{chosen.name}.json and .md")
