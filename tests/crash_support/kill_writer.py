"""Runs one pytrafgen output writer and SIGKILLs itself at the moment it would put its output
under the final name (tests/test_crash_safety.py).

    python kill_writer.py WRITER FINAL [ARG] KILL_AT

KILL_AT: ``never`` lets the writer finish; ``replace`` kills at the first rename onto FINAL; ``first-rename`` at the first rename
from or onto FINAL (a directory writer first moves the old version aside). An audit hook sees
every open() and rename: opening FINAL (or a path inside it) for writing is a direct, non-atomic
write and exits with status 3 before it happens. Exits 0 if the writer finished unkilled.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _inside(path: Any, final: Path) -> bool:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    p = Path(os.fsdecode(path)).absolute()
    return p == final or final in p.parents


def _writes(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str) and mode:
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def install(final: Path, kill_at: str) -> None:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and len(args) >= 3 and _inside(args[0], final) and _writes(args[1], args[2]):
            os.write(2, f"DIRECT WRITE under the final name: {os.fsdecode(args[0])}\n".encode())
            os._exit(3)
        if event == "os.rename" and kill_at != "never":
            src, dst = (Path(os.fsdecode(a)).absolute() for a in args[:2])
            if dst == final or (kill_at == "first-rename" and src == final):
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def main() -> None:
    writer, final_arg, *extra, kill_at = sys.argv[1:]
    final = Path(final_arg).absolute()
    from writers import WRITERS  # prepared before the hook: imports open files too

    run = WRITERS[writer](final, *extra)
    install(final, kill_at)
    run()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
