"""Runs pytest with ``pytrafgen._core`` taken from a sanitizer build (docs/hardening.md).

    LD_PRELOAD=$(c++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
        python csrc/fuzz/sanitized_pytest.py build/asan/_core.*.so [pytest args...]

The Python sources stay those of the working tree; only the extension module is swapped, by a
meta-path finder placed ahead of the editable install's. The interpreter itself is not
instrumented, so libasan must be preloaded (it has to come first in the process).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class SanitizedCoreFinder:
    """Finds ``pytrafgen._core`` at one given path, and nothing else."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def find_spec(self, name: str, target_path: Any = None, target: ModuleType | None = None) -> Any:
        if name != "pytrafgen._core":
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(self.path))
        return importlib.util.spec_from_file_location(name, str(self.path), loader=loader)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    core = Path(argv[0]).resolve()
    if not core.is_file():
        print(f"no sanitizer build of _core at {core}", file=sys.stderr)
        return 2
    sys.meta_path.insert(0, SanitizedCoreFinder(core))
    from pytrafgen import _core

    if Path(_core.__file__).resolve() != core:
        print(f"pytrafgen._core came from {_core.__file__}, not {core}", file=sys.stderr)
        return 2
    print(f"pytrafgen._core: {core}", file=sys.stderr)
    import pytest

    return int(pytest.main(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
