"""Every field of every packet of every shared capture against scapy (an independent reader).

Capped at REFERENCE_PACKETS per file so the suite stays fast; the row count of the whole
file is checked against the manifest.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from capture_reference import compare_table, read_reference
from conftest import ALL_SHARED, CAPTURES, PUBLIC, shared_ids

import pytrafgen

REFERENCE_PACKETS = 1000


def _manifest_packets(path: Path) -> int:
    folder = CAPTURES if path.is_relative_to(CAPTURES) else PUBLIC
    with (folder / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if folder / row["file"] == path:
                return int(row["packets"])
    raise KeyError(path)


@pytest.mark.parametrize("path", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_fields_match_scapy(path: Path) -> None:
    table = pytrafgen.read_pcap(path, max_packets=REFERENCE_PACKETS)
    reference = read_reference(path, REFERENCE_PACKETS)
    assert len(table) == len(reference)
    problems = compare_table(table, reference)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_every_packet_matches_scapy(path: Path) -> None:
    """The same comparison without the cap (every packet of every file; minutes)."""
    table = pytrafgen.read_pcap(path)
    reference = read_reference(path, -1)
    assert len(table) == len(reference)
    problems = compare_table(table, reference)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("path", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_whole_file_rows_match_manifest(path: Path) -> None:
    table = pytrafgen.read_pcap(path)
    assert len(table) == _manifest_packets(path)
    assert table.skipped == {}
    # frames are back to back in data, in order
    ends = table.frame_off + table.caplen
    assert int(ends[-1]) == len(table.data)
    assert np.array_equal(table.frame_off[1:], ends[:-1])
