"""Run pytrafgen from another copy of its code (the previous commit's, to time it side by side):
``use_code_from(folder)`` makes ``import pytrafgen`` load ``folder/pytrafgen`` (its own built
``_core`` inside) instead of the installed or editable package; the plugins stay as installed.

    python benchmarks/previous_code.py FOLDER tokenize ...     # that code's CLI

Make FOLDER from a commit: ``git archive COMMIT | tar -x -C SRC``, build its ``_core``
(``cmake -S SRC -B BUILD -DCMAKE_BUILD_TYPE=Release && cmake --build BUILD``), then put
``SRC/pytrafgen`` and the built ``_core*.so`` in ``FOLDER/pytrafgen``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ENV = "PYTRAFGEN_BENCH_CODE"  # e2e_child.py reads the folder from here


def use_code_from(folder: str | Path) -> None:
    root = Path(folder).resolve()
    if not (root / "pytrafgen" / "__init__.py").is_file():
        raise SystemExit(f"{root}: no pytrafgen package in it")
    # finders that would serve another pytrafgen (an editable install's redirect) step aside
    keep = []
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            spec = find("pytrafgen", None) if find is not None and not isinstance(finder, type) else None
        except Exception:
            spec = None
        origin = getattr(spec, "origin", None) if spec is not None else None
        if origin is None or Path(origin).resolve().is_relative_to(root):
            keep.append(finder)
    sys.meta_path[:] = keep
    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == "pytrafgen" or m.startswith("pytrafgen.")]:
        del sys.modules[name]
    import pytrafgen

    if not Path(pytrafgen.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"pytrafgen still loads from {pytrafgen.__file__}, not {root}")


if __name__ == "__main__":
    use_code_from(sys.argv[1])
    sys.argv = ["pytrafgen", *sys.argv[2:]]
    from pytrafgen.cli.main import run

    run()
