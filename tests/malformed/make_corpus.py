"""Hand-made malformed captures and what the reader must do with each.

    python tests/malformed/make_corpus.py        # (re)writes tests/malformed/files/ + expectations.json

Every file is built here byte by byte (no third-party capture bytes), deterministically: the
same script always writes the same files. Each case states its expectation by hand, from the
file format and the reader's documented rules (csrc/pcap.hpp, csrc/dissect.hpp):

* ``error``: read_pcap raises CaptureError whose reason contains ``fragment`` at byte ``offset``;
* otherwise ``packets`` rows, ``skipped`` counts by reason and ``status`` counts by name.

tests/test_malformed.py checks every file against this table through the Python API.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"

# --- frames -------------------------------------------------------------------------------
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
IP_A, IP_B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
IP6_A, IP6_B = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")


def eth(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + payload


def ipv4(payload: bytes, proto: int = 6, ihl_words: int = 5, total: int | None = None, version: int = 4) -> bytes:
    options = b"\x01" * (max(ihl_words, 5) * 4 - 20)
    length = 20 + len(options) + len(payload) if total is None else total
    head = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl_words, 0, length, 1, 0x4000, 64, proto, 0, IP_A, IP_B)
    return head + options + payload


def ipv6(payload: bytes, next_header: int = 6, payload_len: int | None = None) -> bytes:
    plen = len(payload) if payload_len is None else payload_len
    return struct.pack("!IHBB16s16s", 6 << 28, plen, next_header, 64, IP6_A, IP6_B) + payload


def tcp(payload: bytes = b"", data_offset_words: int = 5, flags: int = 0x18) -> bytes:
    head = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, data_offset_words << 4, flags, 65535, 0, 0)
    return head + b"\x01" * (max(data_offset_words, 5) * 4 - 20) + payload


def udp(payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload


GOOD = eth(ipv4(tcp(b"GET / HTTP/1.1\r\n\r\n")))  # 14 + 20 + 20 + 18 = 72 bytes


# --- classic pcap ---------------------------------------------------------------------------
def pcap_header(linktype: int = 1, snaplen: int = 65535, endian: str = "<", magic: int = 0xA1B2C3D4) -> bytes:
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def record(frame: bytes, ts: int = 1, caplen: int | None = None, wirelen: int | None = None,
           endian: str = "<") -> bytes:
    cap = len(frame) if caplen is None else caplen
    wire = len(frame) if wirelen is None else wirelen
    return struct.pack(endian + "IIII", ts, 0, cap, wire) + frame


def pcap(frames: list[bytes], **header: Any) -> bytes:
    return pcap_header(**header) + b"".join(record(f, ts=k + 1) for k, f in enumerate(frames))


THREE = pcap([GOOD, GOOD, GOOD])  # records at 24, 112, 200; file ends at 288


# --- pcapng ---------------------------------------------------------------------------------
def block(btype: int, body: bytes, endian: str = "<", length: int | None = None, trailer: int | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return (struct.pack(endian + "II", btype, total if length is None else length) + body
            + struct.pack(endian + "I", total if trailer is None else trailer))


def shb(endian: str = "<", major: int = 1, bom: int = 0x1A2B3C4D) -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", bom, major, 0, -1), endian)


def idb(linktype: int = 1, snaplen: int = 65535, endian: str = "<", options: bytes = b"") -> bytes:
    if options:
        options += struct.pack(endian + "HH", 0, 0)
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + options, endian)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def epb(frame: bytes, iface: int = 0, endian: str = "<", caplen: int | None = None, ts: int = 1_000_000) -> bytes:
    cap = len(frame) if caplen is None else caplen
    return block(6, struct.pack(endian + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, cap, len(frame)) + frame, endian)


def spb(frame: bytes, endian: str = "<") -> bytes:
    return block(3, struct.pack(endian + "I", len(frame)) + frame, endian)


SHB_LE = shb()  # 28 bytes
IDB_LE = idb()  # 20 bytes
EPB_GOOD = epb(GOOD)  # 32 + 72 = 104 bytes
NG_TWO = SHB_LE + IDB_LE + EPB_GOOD + EPB_GOOD  # EPBs at 48 and 152, file ends at 256


# --- the cases ------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    data: bytes
    why: str
    error: tuple[str, int] | None = None  # (reason fragment, byte offset)
    packets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    first_ts_ns: int | None = None  # the first row's timestamp, where the case is about time

    def expectation(self) -> dict[str, Any]:
        out: dict[str, Any] = {"why": self.why}
        if self.error:
            out["error"] = {"fragment": self.error[0], "offset": self.error[1]}
        else:
            out.update(packets=self.packets, skipped=self.skipped, status=self.status)
            if self.first_ts_ns is not None:
                out["first_ts_ns"] = self.first_ts_ns
        return out


def _truncations() -> list[Case]:
    """THREE cut at every header boundary (and one byte either side of the first ones)."""
    cuts = {
        "pcap-trunc-00-empty": (0, None),
        "pcap-trunc-03-in-magic": (3, None),
        "pcap-trunc-04-after-magic": (4, None),
        "pcap-trunc-23-in-file-header": (23, None),
        "pcap-trunc-24-after-file-header": (24, (0, {})),
        "pcap-trunc-25-in-record-header": (25, (0, {"truncated_record": 1})),
        "pcap-trunc-39-in-record-header": (39, (0, {"truncated_record": 1})),
        "pcap-trunc-40-after-record-header": (40, (0, {"truncated_record": 1})),
        "pcap-trunc-53-in-ip-header": (53, (0, {"truncated_record": 1})),
        "pcap-trunc-111-last-frame-byte": (111, (0, {"truncated_record": 1})),
        "pcap-trunc-112-record-boundary": (112, (1, {})),
        "pcap-trunc-128-second-record-header": (128, (1, {"truncated_record": 1})),
        "pcap-trunc-287-last-byte": (287, (2, {"truncated_record": 1})),
    }
    cases = []
    for name, (cut, result) in cuts.items():
        data = THREE[:cut]
        if cut == 0:
            cases.append(Case(name, data, "empty file", error=("empty file", 0)))
        elif cut < 4:
            cases.append(Case(name, data, "shorter than a magic number", error=("too short", 0)))
        elif cut < 24:
            cases.append(Case(name, data, "magic, then the file header ends", error=("truncated pcap file header", 0)))
        else:
            packets, skipped = result
            cases.append(Case(name, data, f"cut at byte {cut}: whole records read, a cut one counted",
                              packets=packets, skipped=skipped, status={"ok": packets} if packets else {}))
    return cases


def _pcap_cases() -> list[Case]:
    big = pcap_header(endian=">") + b"".join(record(GOOD, ts=k, endian=">") for k in (1, 2))
    lying = pcap_header() + record(GOOD, caplen=100) + record(GOOD) + record(GOOD)
    absurd = pcap_header() + record(GOOD) + struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 60) + GOOD
    over_cap = pcap_header() + struct.pack("<IIII", 1, 0, 262145, 262145) + b"\0" * 64
    snap = pcap_header(snaplen=64) + record(GOOD) + record(GOOD[:60]) + record(GOOD)
    return [
        Case("pcap-bad-magic", b"\xde\xad\xbe\xef" + THREE[4:], "unknown magic number", error=("bad magic", 0)),
        Case("pcap-text-file", b"hello, this is not a capture file at all\n", "a text file", error=("bad magic", 0)),
        Case("pcap-big-endian", big, "valid big-endian pcap: control case", packets=2, status={"ok": 2}),
        Case("pcap-huge-snaplen", pcap([GOOD], snaplen=0xFFFFFFFF), "snaplen 2^32-1 only bounds caplen",
             packets=1, status={"ok": 1}),
        Case("pcap-snaplen-zero", pcap([GOOD], snaplen=0), "snaplen 0: no limit", packets=1, status={"ok": 1}),
        Case("pcap-caplen-over-snaplen", snap, "snaplen 64: records of 72 bytes skipped, the 60-byte one read",
             packets=1, skipped={"caplen_exceeds_snaplen": 2}, status={"ok": 1}),
        Case("pcap-caplen-absurd", absurd, "second record claims 4 GB", error=("exceeds 262144", 112)),
        Case("pcap-caplen-just-over-limit", over_cap, "caplen 262145 is over the 256 KiB bound",
             error=("exceeds 262144", 24)),
        # caplen 100 swallows 28 bytes of the next record; the walk then reads frame bytes
        # (offset 140: 10.0.0.1 … as a header) whose caplen is absurd.
        Case("pcap-lying-caplen", lying, "first record says 100 bytes, holds 72", error=("exceeds 262144", 140)),
        Case("pcap-zero-length-records", pcap([b"", GOOD, b""]), "caplen 0 records are rows with status truncated",
             packets=3, status={"ok": 1, "truncated": 2}),
        Case("pcap-wirelen-below-caplen", pcap_header() + record(GOOD, wirelen=10), "wire length lies low: read as is",
             packets=1, status={"ok": 1}),
        Case("pcap-unknown-linktype", pcap([GOOD, GOOD], linktype=147), "DLT_USER0: not dissected",
             packets=2, status={"unsupported_linktype": 2}),
        Case("pcap-linktype-fcs-bits", pcap([GOOD], linktype=1 | 0x1000_0000), "FCS bits above the link type",
             packets=1, status={"ok": 1}),
    ]


def _dissector_cases() -> list[Case]:
    """Intact records whose frames are broken at L2–L4: rows with a status, never an error."""
    ext_past_packet = ipv6(bytes([6, 30]) + b"\0" * 6, next_header=0)  # hop-by-hop says 248 bytes
    ext_past_capture = ipv6(bytes([6, 1]) + b"\0" * 6 + b"\0" * 8 + tcp(), next_header=0, payload_len=400)
    frames = {
        "frame-truncated-ethernet": (GOOD[:10], "truncated"),
        "frame-truncated-vlan-tag": (MAC_B + MAC_A + b"\x81\x00\x00", "truncated"),
        "frame-truncated-ipv4": (GOOD[:14 + 12], "truncated"),
        "frame-truncated-tcp": (GOOD[:14 + 20 + 10], "truncated"),
        "frame-ipv4-ihl-below-5": (eth(ipv4(tcp(), ihl_words=4)), "bad_header"),
        "frame-ipv4-wrong-version": (eth(ipv4(tcp(), version=5)), "bad_header"),
        "frame-ipv4-total-below-ihl": (eth(ipv4(tcp(), total=12)), "bad_header"),
        "frame-ipv4-total-cuts-tcp": (eth(ipv4(tcp(), total=30)), "bad_header"),
        "frame-ipv4-options-past-capture": (eth(ipv4(tcp(), ihl_words=15))[:14 + 40], "truncated"),
        "frame-tcp-data-offset-below-5": (eth(ipv4(tcp(data_offset_words=3))), "bad_header"),
        "frame-tcp-options-past-packet": (eth(ipv4(tcp(data_offset_words=15), total=40)), "bad_header"),
        "frame-udp-past-packet": (eth(ipv4(udp(), proto=17, total=24)), "bad_header"),
        "frame-ipv6-ext-chain-past-packet": (eth(ext_past_packet, 0x86DD), "bad_header"),
        "frame-ipv6-ext-chain-past-capture": (eth(ext_past_capture, 0x86DD)[:14 + 40 + 12], "truncated"),
        "frame-ipv6-truncated-fixed-header": (eth(ipv6(tcp()), 0x86DD)[:14 + 30], "truncated"),
        "frame-pppoe-truncated": (MAC_B + MAC_A + b"\x88\x64\x11\x00", "truncated"),
    }
    return [Case(name, pcap([GOOD, frame]), f"one good frame, then one whose {name[6:]}",
                 packets=2, status={"ok": 1, status: 1})
            for name, (frame, status) in frames.items()]


def _pcapng_cases() -> list[Case]:
    be = shb(">") + idb(endian=">") + epb(GOOD, endian=">")
    mixed = SHB_LE + IDB_LE + EPB_GOOD + be  # second section big-endian
    tsresol = idb(options=option(9, bytes([0x80 | 64])))
    nano = idb(options=option(9, bytes([9])))
    tsoffset = idb(options=option(14, struct.pack("<II", 0xFFFFFFFF, 0x7FFFFFFF)))
    return [
        Case("ng-valid-two-packets", NG_TWO, "valid pcapng: control case", packets=2, status={"ok": 2}),
        Case("ng-mixed-endian-sections", mixed, "an LE section then a BE section: each in its own order",
             packets=2, status={"ok": 2}),
        Case("ng-section-endianness-flipped-block", SHB_LE + idb(endian=">") + EPB_GOOD,
             "an LE section with a BE interface block: its length reads as 2^29+",
             skipped={"truncated_record": 1}),
        Case("ng-bad-byte-order-magic", shb(bom=0x12345678) + IDB_LE + EPB_GOOD, "SHB byte-order magic is garbage",
             error=("byte-order magic", 0)),
        Case("ng-major-version-2", shb(major=2) + IDB_LE + EPB_GOOD, "SHB says version 2.0",
             error=("major version 2", 0)),
        Case("ng-shb-too-short", block(0x0A0D0D0A, struct.pack("<I", 0x1A2B3C4D) + b"\0" * 4), "SHB body of 8 bytes",
             error=("section header block too short", 0)),
        Case("ng-magic-only", b"\x0a\x0d\x0d\x0a", "pcapng magic and nothing else", skipped={"truncated_record": 1}),
        Case("ng-block-length-zero", SHB_LE + IDB_LE + struct.pack("<II", 6, 0) + b"\0" * 40,
             "EPB length 0 (a walker that trusted it would loop forever)", error=("block length 0 is invalid", 48)),
        Case("ng-block-length-8", SHB_LE + IDB_LE + struct.pack("<III", 6, 8, 8) + b"\0" * 40,
             "block length 8, below the 12-byte minimum", error=("block length 8 is invalid", 48)),
        Case("ng-block-length-unaligned", SHB_LE + IDB_LE + block(6, b"\0" * 20, length=33) + b"\0" * 8,
             "block length 33, not a multiple of 4", error=("block length 33 is invalid", 48)),
        Case("ng-block-length-past-eof", SHB_LE + IDB_LE + block(6, b"\0" * 20, length=4096),
             "last block claims 4096 bytes", skipped={"truncated_record": 1}),
        Case("ng-lying-trailer", SHB_LE + IDB_LE + block(6, EPB_GOOD[8:-4], trailer=40) + EPB_GOOD,
             "EPB trailer 40 disagrees with its length 104", error=("disagrees with its trailer 40", 48)),
        Case("ng-truncated-mid-block", NG_TWO[:200], "file ends inside the second EPB",
             packets=1, skipped={"truncated_record": 1}, status={"ok": 1}),
        Case("ng-no-idb", SHB_LE + EPB_GOOD + EPB_GOOD, "EPBs with no interface described",
             skipped={"unknown_interface": 2}),
        Case("ng-epb-unknown-interface", SHB_LE + IDB_LE + epb(GOOD, iface=5) + EPB_GOOD,
             "EPB for interface 5 of 1", packets=1, skipped={"unknown_interface": 1}, status={"ok": 1}),
        Case("ng-spb-without-idb", SHB_LE + spb(GOOD), "simple packet block, no interface", skipped={"unknown_interface": 1}),
        Case("ng-epb-caplen-past-block", SHB_LE + IDB_LE + epb(GOOD, caplen=500), "EPB caplen 500 in a 104-byte block",
             error=("captured length 500 exceeds the block", 48)),
        Case("ng-epb-too-short", SHB_LE + IDB_LE + block(6, b"\0" * 12), "EPB body of 12 bytes",
             error=("packet block too short", 48)),
        Case("ng-idb-too-short", SHB_LE + block(1, b"\x01\x00"), "IDB body of 4 bytes",
             error=("interface description block too short", 28)),
        Case("ng-epb-over-snaplen", SHB_LE + idb(snaplen=64) + EPB_GOOD + epb(GOOD[:60]),
             "IDB snaplen 64, EPB of 72 bytes", packets=1, skipped={"caplen_exceeds_snaplen": 1}, status={"ok": 1}),
        Case("ng-tsresol-2-pow-minus-64", SHB_LE + tsresol + EPB_GOOD, "if_tsresol 2^-64 cannot be represented",
             error=("unsupported if_tsresol", 28)),
        Case("ng-tsoffset-overflow", SHB_LE + tsoffset + EPB_GOOD, "if_tsoffset 2^63-1 s: timestamps saturate",
             packets=1, status={"ok": 1}, first_ts_ns=2**63 - 1),
        Case("ng-tsresol-nanoseconds", SHB_LE + nano + epb(GOOD, ts=1_500_000_000_123_456_789),
             "if_tsresol 10^-9: ticks are nanoseconds (control for the timestamp cases)",
             packets=1, status={"ok": 1}, first_ts_ns=1_500_000_000_123_456_789),
        Case("ng-unknown-blocks-between", SHB_LE + IDB_LE + block(0xBAD, b"x" * 7) + block(4, b"\0" * 4) + EPB_GOOD,
             "custom and name-resolution blocks are not packets", packets=1, status={"ok": 1}),
        Case("ng-idb-option-length-lies", SHB_LE + block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HH", 9, 200))
             + EPB_GOOD, "IDB option claims 200 bytes: the option list ends there", packets=1, status={"ok": 1}),
    ]


GENERATORS: tuple[Callable[[], list[Case]], ...] = (_truncations, _pcap_cases, _dissector_cases, _pcapng_cases)


def all_cases() -> list[Case]:
    return [case for make in GENERATORS for case in make()]


def suffix(case: Case) -> str:
    return ".pcapng" if case.name.startswith("ng-") else ".pcap"


def main() -> None:
    FILES.mkdir(parents=True, exist_ok=True)
    for old in FILES.iterdir():
        old.unlink()
    table = {}
    for case in all_cases():
        name = case.name + suffix(case)
        (FILES / name).write_bytes(case.data)
        table[name] = case.expectation()
    (HERE / "expectations.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{len(table)} files in {FILES}")


if __name__ == "__main__":
    main()
