"""``pytrafgen vocab``: the token vocabulary as a table (field, width, encoding, token range)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pytrafgen.cli.options import JsonOutput


def register(app: typer.Typer) -> None:
    @app.command("vocab")
    def vocab(
        dataset: Annotated[Path | None, typer.Option("--dataset", help="Show this dataset's vocabulary "
                                                                        "(default: the one a new dataset gets).")]
        = None,
        payload_cap: Annotated[int | None, typer.Option("--payload-cap", help="Payload cap of the default vocabulary.")]
        = None,
        as_json: JsonOutput = False,
    ) -> None:
        """Print the vocabulary: every field's token range, width and encoding."""
        from pytrafgen.dataset import TrafficDataset
        from pytrafgen.tokenizer.layout import DEFAULT_PAYLOAD_CAP
        from pytrafgen.tokenizer.vocab import Vocabulary

        if dataset is not None:
            v = TrafficDataset(dataset, protocols={}).vocab  # only its vocabulary is shown
        else:
            from pytrafgen.plugins import get_registry

            v = Vocabulary.for_protocols(get_registry().protocols.values(),
                                         payload_cap=DEFAULT_PAYLOAD_CAP if payload_cap is None else payload_cap)
        if as_json:
            typer.echo(json.dumps(v.to_json(), indent=1))
            return
        grammar = v.grammar()
        table = Table(title=f"vocabulary v{v.to_json()['version']}: {v.size} tokens, hash {v.hash}, "
                            f"payload cap {v.payload_cap}, grammar {grammar.n_states} states",
                      title_justify="left")
        for col in ("field", "width", "encoding", "tokens", "range", "description"):
            table.add_column(col, overflow="fold")
        for row in v.table():
            width = "" if row["width_bits"] is None else f"{row['width_bits']} bit"
            table.add_row(row["field"], width, row["encoding"], str(row["size"]),
                          f"{row['first']}–{row['last']}" if row["size"] else "-", row["description"])
        Console().print(table)
