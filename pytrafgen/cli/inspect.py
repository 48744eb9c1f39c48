"""``pytrafgen inspect FILE...``: what a capture holds — packets, link types, L3/L4 mix, flows,
top server ports, and what was skipped or left undissected, with reasons."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pytrafgen.cli.options import JsonOutput, Quiet

L4_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
TOP_PORTS = 10


def _counts(values: np.ndarray, name: Callable[[int], str] = str) -> dict[str, int]:
    """Occurrences of each value, most frequent first, keyed by ``name(value)``."""
    keys, counts = np.unique(values, return_counts=True)
    pairs = sorted(zip(keys.tolist(), counts.tolist(), strict=True), key=lambda kc: -kc[1])
    return {name(int(k)): int(c) for k, c in pairs}


def _l4_name(proto: int) -> str:
    return L4_NAMES.get(proto, f"ip proto {proto}")


def summarize(path: Path, idle_timeout_s: float = 120.0) -> dict[str, Any]:
    """The summary ``inspect`` prints for one capture, as JSON-able values."""
    from pytrafgen.capture import LINKTYPE_NAMES, STATUS_NAMES, read_pcap
    from pytrafgen.flows import assemble_flows

    table = read_pcap(path)
    flows = assemble_flows(table, idle_timeout_s=idle_timeout_s)
    n = len(table)
    ip = table.l3 != 0
    l4 = table.proto[ip]
    server_ports = flows.server_port[(flows.proto == 6) | (flows.proto == 17)]
    port_flows: dict[str, int] = {}
    for proto in (6, 17):
        for port, count in _counts(flows.server_port[flows.proto == proto]).items():
            port_flows[f"{port}/{L4_NAMES[proto]}"] = count
    top_ports = dict(sorted(port_flows.items(), key=lambda kv: -kv[1])[:TOP_PORTS])
    return {
        "file": str(path),
        "packets": n,
        "captured_bytes": int(table.caplen.sum(dtype=np.uint64)),
        "wire_bytes": int(table.wirelen.sum(dtype=np.uint64)),
        "first_ns": int(table.ts_ns.min()) if n else None,
        "duration_s": float((table.ts_ns.max() - table.ts_ns.min()) / 1e9) if n else 0.0,
        "linktypes": _counts(table.linktype, lambda k: f"{LINKTYPE_NAMES.get(k, 'unknown')} ({k})"),
        "l3": _counts(table.l3, {0: "none", 4: "ipv4", 6: "ipv6"}.__getitem__),
        "l4": _counts(l4, _l4_name),
        "status": _counts(table.status, STATUS_NAMES.__getitem__),
        "skipped": dict(table.skipped),
        "flows": len(flows),
        "flows_by_proto": _counts(flows.proto, _l4_name),
        "flow_server_ports": len(np.unique(server_ports)),
        "top_server_ports": top_ports,
        "idle_timeout_s": idle_timeout_s,
    }


def _mix_text(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {v:,} ({100 * v / total:.1f} %)" for k, v in counts.items()) or "-"


def _print(console: Console, s: dict[str, Any]) -> None:
    table = Table(title=s["file"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("packets", f"{s['packets']:,} ({s['captured_bytes']:,} bytes captured, "
                             f"{s['wire_bytes']:,} on the wire)")
    table.add_row("duration", f"{s['duration_s']:.3f} s")
    table.add_row("link types", _mix_text(s["linktypes"]))
    table.add_row("L3", _mix_text(s["l3"]))
    table.add_row("L4", _mix_text(s["l4"]))
    table.add_row("dissection", _mix_text(s["status"]))
    table.add_row("skipped records", ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()) or "none")
    table.add_row("flows", f"{s['flows']:,} ({_mix_text(s['flows_by_proto'])}; idle timeout "
                           f"{s['idle_timeout_s']:g} s)")
    table.add_row("top server ports", ", ".join(f"{k} ({v:,} flows)" for k, v in s["top_server_ports"].items())
                  or "-")
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        files: Annotated[list[Path], typer.Argument(help="pcap or pcapng files.")],
        idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="Flow idle timeout, seconds.")] = 120.0,
        quiet: Quiet = False,
        as_json: JsonOutput = False,
    ) -> None:
        """Summarise captures: packets, link types, L3/L4 mix, flows, top ports, skipped records."""
        summaries = []
        with Progress(transient=True, disable=quiet or as_json or len(files) < 2) as progress:
            task = progress.add_task("reading", total=len(files))
            for path in files:
                summaries.append(summarize(path, idle_timeout))
                progress.advance(task)
        if as_json:
            typer.echo(json.dumps(summaries, indent=2))
            return
        console = Console()
        for s in summaries:
            _print(console, s)
