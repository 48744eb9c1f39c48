"""``pytrafgen plugins``: the loaded plugins (built-in and installed), the distribution and
version each comes from, the hooks it implements, what it registered, and those that failed."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pytrafgen.cli.options import JsonOutput


def plugins_report() -> dict[str, Any]:
    """What ``pytrafgen plugins --json`` prints."""
    from pytrafgen.plugins import get_registry

    registry = get_registry()
    protocols = {
        name: {
            "layer": spec.layer,
            "transport": spec.transport,
            "fields": len(spec.fields),
            "tokens": len(spec.token_names),
            "rules": len(spec.rules()),
        }
        for name, spec in sorted(registry.protocols.items())
    }
    return {
        "plugins": [p.as_dict() for p in registry.plugins],
        "failed": dict(registry.failed),
        "protocols": protocols,
        "generators": sorted(registry.generators),
        "validators": sorted(registry.validators),
        "conflicts": list(registry.conflicts),
        "order": {"default": "built-ins, then entry points by name, then inline plugins",
                  "env": "PYTRAFGEN_PLUGIN_ORDER"},
    }


def plugins_command(json_output: JsonOutput = False) -> None:
    """List loaded plugins: distribution, version, hooks and what each registered."""
    report = plugins_report()
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    table = Table(title="pytrafgen plugins")
    for column in ("plugin", "distribution", "version", "hooks (register_*)", "registered"):
        table.add_column(column, overflow="fold")
    for p in report["plugins"]:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p["registered"].items())
        name = p["name"] + (" (built-in)" if p["builtin"] else "")
        hooks = ", ".join(h.removeprefix("register_") for h in p["hooks"])
        table.add_row(name, p["distribution"], p["version"], hooks, registered or "-")
    console.print(table)
    if report["protocols"]:
        ptable = Table(title="protocols")
        for column in ("protocol", "layer", "transport", "fields", "tokens", "rules"):
            ptable.add_column(column)
        for name, info in report["protocols"].items():
            ptable.add_row(name, info["layer"], info["transport"] or "-", str(info["fields"]),
                           str(info["tokens"]), str(info["rules"]))
        console.print(ptable)
    for name, why in report["failed"].items():
        console.print(f"[yellow]failed:[/] {name}: {why}", highlight=False)
    for conflict in report["conflicts"]:
        console.print(f"[yellow]conflict:[/] {conflict}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins_command)
