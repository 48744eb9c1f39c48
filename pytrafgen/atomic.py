"""Atomic, safe outputs: a killed run never leaves a truncated file under the final name, and
pytrafgen never deletes or overwrites what it did not write.

Files: write to a temporary sibling, fsync, then ``os.replace`` onto the final name.
Directories: build a temporary sibling directory and rename it into place.

Every directory pytrafgen creates holds a marker file, :data:`OUTPUT_MARKER`. An existing
non-empty directory without it is the user's: :func:`atomic_dir` and :func:`open_output_dir`
refuse to replace it unless the caller allowed it (``--force`` on the command line, through
:func:`allow_replace`). A file is pytrafgen's when a labels CSV that pytrafgen wrote lies
beside it (``<file>.flows.csv``, which ``pytrafgen generate`` writes with every pcap).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pytrafgen.errors import OutputError

OUTPUT_MARKER = ".pytrafgen-output"
# how the first line of every ``<pcap>.flows.csv`` pytrafgen writes starts (flow_labels.py; later
# versions added columns after these, e.g. record_flow)
FLOW_LABELS_HEADER = "flow_index,class,proto,client_port,server_port"

# resolved paths the user allowed pytrafgen to replace although it did not write them
_replace_allowed: set[Path] = set()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def allow_replace(path: str | os.PathLike[str]) -> None:
    """Let this process replace ``path`` even though pytrafgen did not write it (``--force``)."""
    _replace_allowed.add(_key(Path(path)))


def write_marker(directory: Path) -> None:
    """Mark ``directory`` as pytrafgen's output."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        written_by = f"pytrafgen {version('pytrafgen')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        written_by = "pytrafgen"
    with atomic_file(directory / OUTPUT_MARKER, "w") as fh:
        fh.write(json.dumps({"written_by": written_by}) + "\n")


def is_pytrafgen_dir(path: Path) -> bool:
    return (path / OUTPUT_MARKER).is_file()


def is_pytrafgen_file(path: Path) -> bool:
    """True for a labels CSV pytrafgen wrote, and for a file with one beside it (``generate``
    writes both)."""
    labels = path if path.name.endswith(".flows.csv") else path.with_name(path.name + ".flows.csv")
    try:
        with labels.open() as fh:
            header = fh.readline().strip()
    except OSError:
        return False
    return header == FLOW_LABELS_HEADER or header.startswith(FLOW_LABELS_HEADER + ",")


def _force_hint(path: Path, what: str) -> str:
    return (f"{path}: {what} that pytrafgen did not write (no {OUTPUT_MARKER} marker in it); "
            f"choose another --out, or pass --force to replace it and everything in it")


def check_output_dir(path: str | os.PathLike[str], force: bool = False) -> None:
    """Refuse, before any work, an output directory that would replace what is not pytrafgen's.

    A missing or empty directory, or one pytrafgen wrote, is fine; with ``force`` anything is.
    """
    p = Path(path)
    if force:
        allow_replace(p)
        return
    if p.is_symlink():  # replacing it would replace the link, not what it points to
        raise OutputError(f"{p}: is a symbolic link; give the folder it points to as --out, "
                          f"or pass --force to replace the link")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is not a directory; choose another --out, or pass --force to replace it")
    if p.is_dir() and any(p.iterdir()) and not is_pytrafgen_dir(p) and _key(p) not in _replace_allowed:
        raise OutputError(_force_hint(p, "a non-empty directory"))


def check_output_file(path: str | os.PathLike[str], force: bool = False) -> None:
    """Refuse, before any work, an output file that exists and is not pytrafgen's."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; give a file name for --out (e.g. {p / 'gen.pcap'})")
    if force:
        allow_replace(p)
        return
    if p.exists() and not is_pytrafgen_file(p) and _key(p) not in _replace_allowed:
        raise OutputError(f"{p}: exists and was not written by pytrafgen; choose another --out, "
                          f"or pass --force to overwrite it")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def open_output_dir(path: str | os.PathLike[str], force: bool = False) -> Path:
    """An output directory that files are written into one by one (each atomically): created
    and marked when new; pytrafgen's earlier output is kept and added to; anything else is
    refused unless ``force``, which replaces it with an empty directory."""
    p = Path(path)
    check_output_dir(p, force)
    if p.is_symlink() or (p.exists() and not p.is_dir()) or (
            p.is_dir() and any(p.iterdir()) and not is_pytrafgen_dir(p)):
        _remove(p)  # only reached with --force (check_output_dir refused it otherwise)
    p.mkdir(parents=True, exist_ok=True)
    if not is_pytrafgen_dir(p):
        write_marker(p)
    return p


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise users of the output
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    The new directory carries :data:`OUTPUT_MARKER`. A non-empty ``path`` without it is
    refused (:class:`OutputError`) before the body runs, unless :func:`allow_replace` named it.
    """
    final = Path(path)
    check_output_dir(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        write_marker(tmp)
        if final.exists() or final.is_symlink():
            check_output_dir(final)  # it may have appeared while the body ran
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
