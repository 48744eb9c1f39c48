"""Option aliases shared by the command modules, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOutput = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="Output file.")]
Device = Annotated[str, typer.Option("--device", help="Torch device: auto, cpu, cuda, cuda:N.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Labels = Annotated[
    Path | None,
    typer.Option("--labels", help="CSV manifest with at least columns file,class (label optional)."),
]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace --out even when pytrafgen did not write it (what is there is deleted).")]
