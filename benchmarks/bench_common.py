"""What the benchmark scripts share: the CPU a figure was measured on, and writing a result
as JSON plus Markdown (atomically, then printed). Imported as ``bench_common`` because each
script runs as ``python benchmarks/bench_*.py`` (its folder is on ``sys.path``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pytrafgen.atomic import atomic_file


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else whatever platform reports."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(out: Path, report: dict[str, Any], markdown: str, indent: int = 2) -> None:
    """``out``.json and ``out``.md, each written atomically; the Markdown is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out.with_suffix(".json"), "w") as fh:
        json.dump(report, fh, indent=indent)
    with atomic_file(out.with_suffix(".md"), "w") as fh:
        fh.write(markdown)
    print(markdown.rstrip("\n"))
