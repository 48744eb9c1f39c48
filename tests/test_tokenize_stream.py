"""``pytrafgen tokenize`` reading captures in chunks (flows encoded as they end) writes the same
dataset, byte for byte, as reading each capture whole — on every lab capture, on the public
ones, and on crafted captures whose flows straddle many chunk boundaries (tiny chunks, idle
splits, a reused 5-tuple) — and reports its progress by bytes read."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ALL_SHARED, PUBLIC, SHARED_CAPTURES, needs_full_captures, shared_ids
from typer.testing import CliRunner

import pytrafgen
from pytrafgen.cli.main import build_app
from pytrafgen.demo.default import corpus_dir
from pytrafgen.tokenizer.pipeline import tokenize_captures

CORPUS = corpus_dir()
CORPUS_CAPTURES = sorted(CORPUS.glob("*.pcap"))


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset; the manifest without its creation time (the runs differ in it)."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = json.loads(files["manifest.json"])
    assert manifest.pop("created_utc")
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def _assert_same_dataset(captures: list[Path], labels: Path, tmp: Path, chunks: tuple[int, ...],
                         **settings: Any) -> None:
    whole = tokenize_captures(captures, labels, tmp / "whole", chunk_packets=0, **settings)
    assert sum(c["flows"] for c in whole["counts"].values()) > 0
    expected = _files(tmp / "whole")
    for chunk in chunks:
        tokenize_captures(captures, labels, tmp / f"chunk{chunk}", chunk_packets=chunk, **settings)
        got = _files(tmp / f"chunk{chunk}")
        assert not list(tmp.glob(".*tokens-*")), "the spilled tokens' scratch folder is left behind"
        assert got.keys() == expected.keys(), chunk
        differ = [name for name in expected if got[name] != expected[name]]
        assert not differ, (chunk, differ)


def _labels_for(captures: list[Path], tmp: Path, cls: str = "lab") -> Path:
    labels = tmp / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class", "label"])
        for capture in captures:
            writer.writerow([str(capture), cls, "benign"])
    return labels


@pytest.mark.parametrize("capture", CORPUS_CAPTURES, ids=lambda p: p.stem)
def test_corpus_capture_streamed_equals_whole(capture: Path, tmp_path: Path) -> None:
    """Each bundled lab capture alone, in chunks of 7 and 500 records: the same dataset."""
    _assert_same_dataset([capture], CORPUS / "manifest.csv", tmp_path, (7, 500))


def test_corpus_together_with_idle_splits_and_a_packet_limit(tmp_path: Path) -> None:
    """All bundled captures in one dataset (address plan and payload fill learned over all of
    them), flows cut by a short idle timeout and a packet limit, in chunks of 3 records."""
    _assert_same_dataset(CORPUS_CAPTURES, CORPUS / "manifest.csv", tmp_path, (3,),
                         idle_timeout_s=0.5, max_flow_packets=7)


def test_files_in_parallel_spill_in_their_workers(tmp_path: Path) -> None:
    """Several captures tokenized by two worker processes, each spilling its tokens."""
    _assert_same_dataset(CORPUS_CAPTURES[:4], CORPUS / "manifest.csv", tmp_path, (11,), workers=2)


@pytest.mark.slow
@needs_full_captures
@pytest.mark.parametrize("capture", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_shared_capture_streamed_equals_whole(capture: Path, tmp_path: Path) -> None:
    """Every shared capture (lab and public), in chunks of 4,096 and the default size. A
    capture whose timestamps go back by more than the idle timeout has no promise of the
    same flows when streamed (pytrafgen.detect.stream); none of the shared ones does."""
    ts = np.asarray(pytrafgen.read_pcap(capture).ts_ns, np.int64)
    assert not len(ts) or (np.maximum.accumulate(ts) - ts).max() <= 120e9
    labels = capture.parent / "manifest.csv" if capture in SHARED_CAPTURES else PUBLIC / "manifest.csv"
    _assert_same_dataset([capture], labels, tmp_path, (4096, 262_144))


# --- crafted: many interleaved connections, each straddling many chunks -----------------------

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _interleaved_http(path: Path) -> Path:
    """Eight keep-alive HTTP connections taking turns packet by packet, a connection reopened
    on a used 5-tuple, and an idle gap that cuts one connection into two flows."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    packets: list[Any] = []
    t = 1_700_000_000.0

    def add(cport: int, from_client: bool, flags: str, payload: bytes = b"") -> None:
        nonlocal t
        t += 0.01
        ip = IP(src=CLIENT, dst=SERVER) if from_client else IP(src=SERVER, dst=CLIENT)
        tcp = TCP(sport=cport, dport=80, flags=flags) if from_client else TCP(sport=80, dport=cport, flags=flags)
        packet: Any = Ether() / ip / tcp / payload
        packet.time = t
        packets.append(packet)

    ports = [41000 + k for k in range(8)] + [41000]  # the last one reuses the first's 5-tuple
    for port in ports[:8]:
        add(port, True, "S")
        add(port, False, "SA")
    for i in range(6):
        for port in ports[:8]:
            add(port, True, "PA", f"GET /item/{i} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
            add(port, False, "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        if i == 2:
            t += 3.0  # past the 1 s idle timeout: every connection continues in a new flow
    for port in ports[:8]:
        add(port, True, "FA")
        add(port, False, "FA")
    add(ports[8], True, "S")
    add(ports[8], False, "SA")
    add(ports[8], True, "PA", b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
    wrpcap(str(path), packets)
    return path


def test_flows_straddling_chunks_give_the_same_dataset(tmp_path: Path) -> None:
    capture = _interleaved_http(tmp_path / "interleaved.pcap")
    labels = _labels_for([capture], tmp_path)
    for idle in (120.0, 1.0):
        _assert_same_dataset([capture], labels, tmp_path / f"idle{idle}", (1, 2, 5, 11), idle_timeout_s=idle)


def test_progress_by_bytes(tmp_path: Path) -> None:
    """The API reports bytes read per chunk, up to the captures' size; the CLI, not on a
    terminal, prints plain progress lines in MB."""
    captures = CORPUS_CAPTURES[:3]
    total = sum(c.stat().st_size for c in captures)
    seen: list[tuple[int, int]] = []
    tokenize_captures(captures, CORPUS / "manifest.csv", tmp_path / "api", chunk_packets=50,
                      on_bytes=lambda done, of: seen.append((done, of)))
    done = [d for d, _ in seen]
    assert {of for _, of in seen} == {total}
    assert done == sorted(done) and done[-1] == total and len(done) > len(captures)  # several per file

    result = CliRunner().invoke(build_app(), ["tokenize", *map(str, captures), "--labels", str(CORPUS / "manifest.csv"),
                                              "--out", str(tmp_path / "cli"), "--chunk-packets", "50", "-j", "1"])
    assert result.exit_code == 0, result.output
    mb = -(-total // 1_000_000)
    lines = [line for line in result.output.splitlines() if line.startswith("tokenizing: ")]
    assert lines[0].startswith(f"tokenizing: 0/{mb} MB (0 %)")
    assert lines[-1].startswith(f"tokenizing: {mb}/{mb} MB (100 %)") and lines[-1].endswith("— done")


def test_negative_chunk_size_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["tokenize", str(CORPUS_CAPTURES[0]), "--labels",
                                              str(CORPUS / "manifest.csv"), "--out", str(tmp_path / "o"),
                                              "--chunk-packets", "-5"])
    assert result.exit_code == 2 and "Invalid value for '--chunk-packets'" in result.output


def test_truncated_capture_gives_the_same_dataset_and_counts(tmp_path: Path) -> None:
    """A capture cut mid-record: the same flows and the same skipped-record count either way."""
    capture = tmp_path / "cut.pcap"
    capture.write_bytes((CORPUS / "benign_http.pcap").read_bytes()[:300_000])
    labels = _labels_for([capture], tmp_path)
    _assert_same_dataset([capture], labels, tmp_path, (50,))
    manifest = json.loads((tmp_path / "chunk50" / "manifest.json").read_text())
    assert manifest["sources"][0]["skipped"] == {"read_truncated_record": 1}


def test_capture_without_records_is_the_same_clear_error(tmp_path: Path) -> None:
    from pytrafgen.errors import DatasetError

    capture = tmp_path / "empty.pcap"
    capture.write_bytes((CORPUS / "benign_http.pcap").read_bytes()[:24])  # the file header alone
    labels = _labels_for([capture], tmp_path)
    for chunk in (0, 50):
        with pytest.raises(DatasetError, match="no flow could be tokenized"):
            tokenize_captures([capture], labels, tmp_path / f"out{chunk}", chunk_packets=chunk)
    assert not list(tmp_path.glob(".*tokens-*"))
