"""Bad input: a typed CaptureError naming file and byte offset, or a counted skip. Never a
crash, a hang or silently wrong fields."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from capture_files import ng_block, ng_epb, ng_idb, ng_shb, pcap_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytrafgen
from pytrafgen import _core
from pytrafgen.errors import CaptureError, PytrafgenError

FRAME = bytes.fromhex(
    "000000000002000000000001080045000028000100004006f97c0a0000010a000002"
    "04d20050000000000000000050022000917c0000"
)  # Ether / IPv4 / TCP SYN 1234 → 80


def write(tmp_path: Path, blob: bytes, name: str = "x.pcap") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def capture_error(path: Path) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        pytrafgen.read_pcap(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_directory_missing_and_empty(tmp_path: Path) -> None:
    assert "directory" in capture_error(tmp_path).reason
    assert "No such file" in capture_error(tmp_path / "nope.pcap").reason
    err = capture_error(write(tmp_path, b""))
    assert (err.offset, err.reason) == (0, "empty file")


def test_bad_magic_and_truncated_file_header(tmp_path: Path) -> None:
    err = capture_error(write(tmp_path, b"GIF89a" + bytes(100)))
    assert err.offset == 0 and "magic" in err.reason
    err = capture_error(write(tmp_path, pcap_file([])[:20]))
    assert err.offset == 0 and "truncated pcap file header" in err.reason


def test_truncated_last_record_is_a_counted_skip(tmp_path: Path) -> None:
    blob = pcap_file([FRAME, FRAME, FRAME])
    for cut in (5, len(FRAME) + 8):  # inside the frame, inside the record header
        table = pytrafgen.read_pcap(write(tmp_path, blob[:-cut]))
        assert len(table) == 2
        assert table.skipped == {"truncated_record": 1}
        assert table.frame(1) == FRAME


def test_absurd_caplen_names_the_record_offset(tmp_path: Path) -> None:
    blob = bytearray(pcap_file([FRAME, FRAME]))
    second = 24 + 16 + len(FRAME)
    blob[second + 8 : second + 12] = struct.pack("<I", 300_000)
    err = capture_error(write(tmp_path, bytes(blob)))
    assert err.offset == second and "caplen 300000" in err.reason


def test_caplen_over_snaplen_is_skipped(tmp_path: Path) -> None:
    big = FRAME + bytes(100)
    table = pytrafgen.read_pcap(write(tmp_path, pcap_file([FRAME, big, FRAME], snaplen=80)))
    assert len(table) == 2 and table.skipped == {"caplen_exceeds_snaplen": 1}
    assert table.dport.tolist() == [80, 80]


def test_pcapng_block_length_lies(tmp_path: Path) -> None:
    head = ng_shb("<") + ng_idb("<", 1)
    good = ng_epb("<", 0, 1, FRAME)
    lying = bytearray(good)
    lying[4:8] = struct.pack("<I", len(good) - 8)  # disagrees with the trailer
    err = capture_error(write(tmp_path, head + good + bytes(lying) + good, "l.pcapng"))
    assert err.offset == len(head) + len(good) and "trailer" in err.reason
    for bad_len in (0, 13, 8):  # zero would loop forever; unaligned; shorter than a block
        bad = bytearray(good)
        bad[4:8] = struct.pack("<I", bad_len)
        err = capture_error(write(tmp_path, head + bytes(bad), "z.pcapng"))
        assert err.offset == len(head) and "invalid" in err.reason


def test_pcapng_damage_inside_blocks(tmp_path: Path) -> None:
    head = ng_shb("<") + ng_idb("<", 1)
    # a packet block whose captured length exceeds the block
    epb = bytearray(ng_epb("<", 0, 1, FRAME))
    epb[20:24] = struct.pack("<I", len(FRAME) + 40)
    err = capture_error(write(tmp_path, head + bytes(epb), "c.pcapng"))
    assert err.offset == len(head) and "exceeds the block" in err.reason
    # a packet for an interface no IDB declared, then a block cut short by the end of file
    blob = head + ng_epb("<", 3, 1, FRAME) + ng_epb("<", 0, 1, FRAME) + ng_epb("<", 0, 2, FRAME)[:-10]
    table = pytrafgen.read_pcap(write(tmp_path, blob, "u.pcapng"))
    assert len(table) == 1
    assert table.skipped == {"unknown_interface": 1, "truncated_record": 1}
    # a file that does not start with a section header, and a bad byte-order magic
    err = capture_error(write(tmp_path, ng_shb("<")[:8] + b"\x00\x00\x00\x00" + bytes(16), "b.pcapng"))
    assert err.offset == 0 and "byte-order" in err.reason
    err = capture_error(write(tmp_path, ng_shb("<") + ng_block("<", 6, bytes(8)), "s.pcapng"))
    assert err.offset == len(ng_shb("<")) and "too short" in err.reason


def test_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, pcap_file([FRAME]))
    with pytest.raises(PytrafgenError):
        pytrafgen.read_pcap(path, max_packets=0)
    with pytest.raises(PytrafgenError):
        next(pytrafgen.iter_pcap(path, chunk_packets=0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 3), st.integers(0, 1))
def test_garbage_never_crashes(noise: bytes, head_kind: int, flip: int) -> None:
    """Random bytes after each kind of header: a CaptureError or a table whose offsets stay
    inside its own buffer, never a crash."""
    heads = [b"", pcap_file([])[:24], ng_shb("<") + ng_idb("<", 1), pcap_file([], big=True, linktype=276)]
    blob = heads[head_kind] + (pcap_file([FRAME])[24:] if flip else b"") + noise
    try:
        cols, _ = _core.CaptureFile.from_bytes(blob, "fuzz").read()
    except CaptureError:
        return
    n = len(cols["caplen"])
    ends = cols["frame_off"] + cols["caplen"]
    assert n == 0 or int(ends.max()) <= len(cols["data"])
    assert ((cols["payload_off"] + cols["payload_len"]) <= cols["caplen"]).all()
