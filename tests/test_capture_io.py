"""Streaming reads, writing pcaps back, and the PacketTable helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from capture_files import pcap_file
from conftest import CAPTURES, manifest_row

import pytrafgen
from pytrafgen.capture import PACKET_COLUMNS, PacketTable, pcap_bytes
from pytrafgen.errors import PytrafgenError

FRAME = bytes.fromhex(
    "000000000002000000000001080045000028000100004006f97c0a0000010a000002"
    "04d20050000000000000000050022000917c0000"
)


def same_rows(a: PacketTable, b: PacketTable) -> None:
    assert len(a) == len(b)
    for name in PACKET_COLUMNS:
        if name in ("data", "frame_off"):
            continue
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert all(a.frame(i) == b.frame(i) for i in range(len(a)))


def test_columns_have_the_contract_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_file([FRAME] * 3))
    table = pytrafgen.read_pcap(path)
    for name, dtype in PACKET_COLUMNS.items():
        col = getattr(table, name)
        assert col.dtype == dtype, name
        assert col.shape == ((3, 16) if name in ("src", "dst") else (len(table.data),) if name == "data" else (3,))
        assert col.flags.c_contiguous


def test_iter_pcap_chunks_equal_one_read() -> None:
    path = CAPTURES / "benign_coap.pcap"
    whole = pytrafgen.read_pcap(path)
    chunks = list(pytrafgen.iter_pcap(path, chunk_packets=100))
    n = manifest_row(path)["packets"]  # counted by the manifest's writer, not by our reader
    assert len(whole) == int(n)
    assert [len(c) for c in chunks] == [100] * (int(n) // 100) + [int(n) % 100]
    same_rows(PacketTable.concat(chunks), whole)
    # each chunk holds only its own frames
    assert len(chunks[0].data) == int(chunks[0].caplen.sum())
    assert len(pytrafgen.read_pcap(path, max_packets=10)) == 10


def test_iter_pcap_reports_skips_in_the_chunk_that_met_them(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_file([FRAME] * 5)[:-3])
    chunks = list(pytrafgen.iter_pcap(path, chunk_packets=2))
    # the cut record is met by the third read, which yields no rows but reports it
    assert [len(c) for c in chunks] == [2, 2, 0]
    assert [c.skipped for c in chunks] == [{}, {}, {"truncated_record": 1}]
    assert PacketTable.concat(chunks).skipped == pytrafgen.read_pcap(path).skipped


@pytest.mark.parametrize("name", ["benign_http.pcap", "udp_flood.pcap"])
def test_write_pcap_reproduces_the_records(tmp_path: Path, name: str) -> None:
    src = CAPTURES / name
    table = pytrafgen.read_pcap(src)
    out = pytrafgen.write_pcap(tmp_path / "copy.pcap", table, nanosecond=False)
    original = src.read_bytes()
    assert original[:4] == b"\xd4\xc3\xb2\xa1"  # little-endian µs, like what we write here
    assert out.read_bytes()[24:] == original[24:]  # every record header and frame, byte for byte
    again = pytrafgen.read_pcap(pytrafgen.write_pcap(tmp_path / "ns.pcap", table))
    same_rows(again, table)


def test_write_frames_and_from_frames(tmp_path: Path) -> None:
    frames = [FRAME, FRAME[:30], FRAME + b"\0" * 6]
    ts = [5, 1_000_000_007, 2_000_000_000]
    path = pytrafgen.write_pcap(tmp_path / "f.pcap", frames, ts_ns=ts)
    table = pytrafgen.read_pcap(path)
    assert table.ts_ns.tolist() == ts and [table.frame(i) for i in range(3)] == frames
    same_rows(PacketTable.from_frames(frames, ts_ns=ts), table)
    raw = pytrafgen.write_pcap(tmp_path / "r.pcap", [FRAME[14:]], linktype=101)
    assert pytrafgen.read_pcap(raw).dport.tolist() == [80]
    with pytest.raises(PytrafgenError):
        pcap_bytes([FRAME], ts_ns=[-1])
    with pytest.raises(PytrafgenError):
        pcap_bytes([FRAME], ts_ns=[1, 2])
    mixed = PacketTable.concat([table, pytrafgen.read_pcap(raw)])
    with pytest.raises(PytrafgenError, match="link types"):
        pcap_bytes(mixed)


def test_take_and_concat(tmp_path: Path) -> None:
    frames = [FRAME[:-i] if i else FRAME for i in range(5)]
    table = PacketTable.from_frames(frames, ts_ns=list(range(5)))
    picked = table.take([4, 0, 2])
    assert picked.ts_ns.tolist() == [4, 0, 2]
    assert [picked.frame(i) for i in range(3)] == [frames[4], frames[0], frames[2]]
    assert len(picked.data) == sum(len(frames[i]) for i in (4, 0, 2))
    masked = table.take(table.ts_ns % 2 == 0)
    assert masked.ts_ns.tolist() == [0, 2, 4]
    both = PacketTable.concat([picked, masked])
    assert [both.frame(i) for i in range(6)] == [frames[i] for i in (4, 0, 2, 0, 2, 4)]
    assert len(PacketTable.concat([])) == 0 and len(table.take([])) == 0


def test_one_capture_read_from_threads_and_closed(tmp_path: Path) -> None:
    """Reads run without the GIL; the capture's lock keeps concurrent readers consistent."""
    from concurrent.futures import ThreadPoolExecutor

    from pytrafgen import _core

    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_file([FRAME] * 5000, ts_ns=list(range(5000)), nano=True))
    reader = _core.CaptureFile(str(path))
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda _: reader.read(100)[0]["ts_ns"], range(60)))
    seen = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(seen, np.arange(5000))
    assert reader.done
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def _rss_anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


@pytest.mark.slow
def test_iter_pcap_memory_stays_bounded(tmp_path: Path) -> None:
    """Streaming a ~400 MB capture in 50k-packet chunks keeps anonymous memory near one
    chunk (the file itself is mapped, not copied)."""
    frame = FRAME + bytes(1400)
    path = tmp_path / "big.pcap"
    one = pcap_file([frame] * 10_000)
    with path.open("wb") as fh:
        fh.write(one)
        for _ in range(29):
            fh.write(one[24:])
    baseline = _rss_anon_bytes()
    peak, rows = 0, 0
    for chunk in pytrafgen.iter_pcap(path, chunk_packets=50_000):
        rows += len(chunk)
        peak = max(peak, _rss_anon_bytes() - baseline)
    chunk_bytes = 50_000 * len(frame)
    assert rows == 300_000
    assert peak < 3 * chunk_bytes, f"anonymous memory grew by {peak / 1e6:.0f} MB"


def test_read_from_a_pipe(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    blob = pcap_file([FRAME] * 3)

    def feed() -> None:
        with fifo.open("wb") as fh:
            fh.write(blob)

    writer = threading.Thread(target=feed)
    writer.start()
    table = pytrafgen.read_pcap(fifo)
    writer.join(timeout=10)
    assert len(table) == 3 and table.frame(2) == FRAME


def test_table_checks_its_columns() -> None:
    table = PacketTable.from_frames([FRAME, FRAME])
    cols = table.columns()
    with pytest.raises(PytrafgenError, match="'sport' has shape"):
        PacketTable(**{**cols, "sport": cols["sport"][:1]})
    with pytest.raises(PytrafgenError, match="past the end of data"):
        PacketTable(**{**cols, "data": cols["data"][:-1]})
    coerced = PacketTable(**{**cols, "ts_ns": [1, 2]})
    assert coerced.ts_ns.dtype == np.int64 and coerced.ts_ns.tolist() == [1, 2]
