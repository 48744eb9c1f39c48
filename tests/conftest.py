"""Shared fixtures. Tests that need ../shared/data skip with a reason where it is absent."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
CAPTURES = SHARED_DATA / "captures"
PUBLIC = SHARED_DATA / "public"


def _manifest_files(folder: Path) -> list[Path]:
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as fh:
        return [folder / row["file"] for row in csv.DictReader(fh)]


SHARED_CAPTURES = _manifest_files(CAPTURES)
PUBLIC_CAPTURES = _manifest_files(PUBLIC)
ALL_SHARED = SHARED_CAPTURES + PUBLIC_CAPTURES

needs_shared = pytest.mark.skipif(
    not SHARED_CAPTURES, reason=f"shared captures not found at {CAPTURES} (set PYTRAFGEN_SHARED_DATA)"
)


def shared_ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    if not SHARED_CAPTURES:
        pytest.skip(f"shared captures not found at {CAPTURES}")
    return CAPTURES
