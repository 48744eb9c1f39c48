"""pcapng packet comments through the C++ reader (``read_packet_comments``): the same comments
scapy and tshark read from the same files, keyed by the row ``read_pcap`` gives each packet,
and damaged option lists that end a block's options without ending the read."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_flow_labels import interleaved_records, rate_plan

from pytrafgen.build import write_records
from pytrafgen.capture import read_packet_comments, read_pcap, write_pcap

FRAME = bytes.fromhex("020000000002020000000001080045000028000100004006") + bytes(36)  # 60-byte Ethernet/IPv4


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def block(endian: str, kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(endian + "II", kind, 12 + len(body)) + body + struct.pack(endian + "I", 12 + len(body))


def section(endian: str) -> bytes:
    shb = block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    return shb + block(endian, 1, struct.pack(endian + "HHI", 1, 0, 65535))


def epb(endian: str, options: bytes, iface: int = 0, frame: bytes = FRAME) -> bytes:
    head = struct.pack(endian + "IIIII", iface, 0, 1000, len(frame), len(frame))
    return block(endian, 6, head + frame + bytes(-len(frame) % 4) + options)


def scapy_comments(path: Path) -> dict[int, str]:
    from scapy.utils import PcapNgReader

    with PcapNgReader(str(path)) as reader:
        return {i: p.comment.decode("utf-8", "replace") for i, p in enumerate(reader) if p.comment}


@pytest.mark.parametrize("endian", ["<", ">"])
def test_comments_match_scapy_whatever_the_options_around_them(tmp_path: Path, endian: str) -> None:
    end = option(endian, 0, b"")
    flags = option(endian, 2, struct.pack(endian + "I", 1))  # epb_flags before the comment
    blocks = [
        epb(endian, option(endian, 1, b"class=a flow=0") + end),
        epb(endian, b""),  # no options at all
        epb(endian, flags + option(endian, 1, b"odd") + end),  # length not a multiple of 4
        epb(endian, option(endian, 1, b"first") + option(endian, 1, b"second") + end),
        epb(endian, flags + end),  # options, no comment
        epb(endian, option(endian, 1, "h\u00e9".encode()) + end, frame=FRAME + b"x"),  # padded frame
    ]
    path = tmp_path / "c.pcapng"
    path.write_bytes(section(endian) + b"".join(blocks))
    got = read_packet_comments(path)
    assert got == {0: "class=a flow=0", 2: "odd", 3: "first", 5: "h\u00e9"}
    assert got == scapy_comments(path)
    assert len(read_pcap(path)) == 6


def test_rows_stay_aligned_when_records_are_skipped(tmp_path: Path) -> None:
    end = option("<", 0, b"")
    path = tmp_path / "skip.pcapng"
    path.write_bytes(section("<") + epb("<", option("<", 1, b"skipped") + end, iface=7)
                     + epb("<", option("<", 1, b"row0") + end) + epb("<", option("<", 1, b"row1") + end))
    table = read_pcap(path)
    assert len(table) == 2 and table.skipped == {"unknown_interface": 1}
    assert read_packet_comments(path) == {0: "row0", 1: "row1"}


def test_an_option_running_past_its_block_ends_that_block_only(tmp_path: Path) -> None:
    end = option("<", 0, b"")
    overrun = struct.pack("<HH", 1, 400) + b"abcd"  # claims 400 bytes, the block holds 4
    bad_utf8 = option("<", 1, b"ok\xff") + end
    path = tmp_path / "bad.pcapng"
    path.write_bytes(section("<") + epb("<", overrun) + epb("<", bad_utf8) + epb("<", struct.pack("<HH", 1, 2)))
    assert len(read_pcap(path)) == 3
    assert read_packet_comments(path) == {1: "ok\ufffd"}


def test_classic_pcap_has_no_comments(tmp_path: Path) -> None:
    path = tmp_path / "plain.pcap"
    write_pcap(path, [FRAME, FRAME], ts_ns=[0, 1000])
    assert read_packet_comments(path) == {}


def test_generated_pcapng_comments_match_scapy_and_tshark(tmp_path: Path) -> None:
    out = tmp_path / "gen.pcapng"
    write_records(out, interleaved_records(), rate_plan(), seed=3, file_format="pcapng")
    got = read_packet_comments(out)
    assert len(got) == len(read_pcap(out)) == 270
    assert got == scapy_comments(out)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (apt-get install tshark): compared with scapy only")
    lines = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.comment"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert {i: c for i, c in enumerate(lines) if c} == got
