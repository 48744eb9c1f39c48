"""The malformed-capture corpus (tests/malformed/): every file gives exactly the expected
CaptureError (reason fragment and byte offset) or exactly the expected rows, skip counts and
status counts, through read_pcap, iter_pcap and CaptureFile.from_bytes. Never a crash or a
hang: each test has its own timeout."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pytrafgen
from pytrafgen import _core
from pytrafgen.capture import STATUS_NAMES
from pytrafgen.errors import CaptureError

CORPUS = Path(__file__).resolve().parent / "malformed"
EXPECTATIONS: dict[str, dict[str, Any]] = json.loads((CORPUS / "expectations.json").read_text())
NAMES = sorted(EXPECTATIONS)


def _outcome(table: pytrafgen.PacketTable) -> dict[str, Any]:
    return {
        "packets": len(table),
        "skipped": dict(table.skipped),
        "status": dict(Counter(STATUS_NAMES[s] for s in table.status.tolist())),
    }


def _check_error(err: CaptureError, expected: dict[str, Any], path: str) -> None:
    assert expected["fragment"] in err.reason, f"reason {err.reason!r} lacks {expected['fragment']!r}"
    assert err.offset == expected["offset"]
    assert err.path == path
    assert f"at byte {expected['offset']}" in str(err)


def test_corpus_is_complete() -> None:
    files = {p.name for p in (CORPUS / "files").iterdir()}
    assert files == set(EXPECTATIONS)
    assert len(files) >= 30
    errors = sum("error" in e for e in EXPECTATIONS.values())
    assert errors >= 10 and len(files) - errors >= 10  # both kinds of outcome are covered


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", NAMES)
def test_read_pcap(name: str) -> None:
    expected = EXPECTATIONS[name]
    path = CORPUS / "files" / name
    if "error" in expected:
        with pytest.raises(CaptureError) as info:
            pytrafgen.read_pcap(path)
        _check_error(info.value, expected["error"], str(path))
        return
    table = pytrafgen.read_pcap(path)
    assert _outcome(table) == {k: expected[k] for k in ("packets", "skipped", "status")}
    # Every row's frame and payload lie inside the table's data.
    ends = table.frame_off.astype("int64") + table.caplen
    assert (ends <= len(table.data)).all()
    assert (table.payload_off.astype("int64") + table.payload_len <= table.caplen).all()
    if "first_ts_ns" in expected:
        assert int(table.ts_ns[0]) == expected["first_ts_ns"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", NAMES)
def test_iter_pcap_one_packet_chunks(name: str) -> None:
    """Reading one packet at a time ends, and adds up to what one read gives."""
    expected = EXPECTATIONS[name]
    path = CORPUS / "files" / name
    if "error" in expected:
        with pytest.raises(CaptureError) as info:
            for _ in pytrafgen.iter_pcap(path, chunk_packets=1):
                pass
        _check_error(info.value, expected["error"], str(path))
        return
    chunks = list(pytrafgen.iter_pcap(path, chunk_packets=1))
    assert all(len(c) <= 1 for c in chunks)
    merged = pytrafgen.PacketTable.concat(chunks)
    assert _outcome(merged) == {k: expected[k] for k in ("packets", "skipped", "status")}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", [n for n in NAMES if "error" in EXPECTATIONS[n]])
def test_from_bytes_names_the_buffer(name: str) -> None:
    """The in-memory reader reports the same offset, naming the buffer it was given."""
    expected = EXPECTATIONS[name]["error"]
    data = (CORPUS / "files" / name).read_bytes()
    with pytest.raises(CaptureError) as info:
        reader = _core.CaptureFile.from_bytes(data, "<upload>")
        reader.read(0)
    _check_error(info.value, expected, "<upload>")
