"""Seed corpora for the fuzz harnesses, cut from the shared captures.

    python csrc/fuzz/make_seeds.py [--public]

Writes small slices (file header + the first few records) of every CC0 capture under
/work/shared/data/captures to csrc/fuzz/corpus/fuzz_reader/ (committed), each also rewritten
as little- and big-endian pcapng so the pcapng walker starts from valid blocks. With
``--public`` it also slices the third-party captures into build/fuzz/seeds/ (never committed:
their licences do not allow redistribution). Deterministic: same input, same seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", "/work/shared/data"))
MAX_SEED_BYTES = 1500
RECORDS_PER_SEED = 4


def pcap_slices(blob: bytes) -> list[tuple[bytes, list[tuple[int, int, bytes]]]]:
    """(file header, [(ts_sec, ts_frac, frame)]) for consecutive groups of records, little-endian pcap only."""
    if len(blob) < 24 or struct.unpack_from("<I", blob)[0] not in (0xA1B2C3D4, 0xA1B23C4D):
        return []
    header, off, group, groups = blob[:24], 24, [], []
    while off + 16 <= len(blob) and len(groups) < 3:
        sec, frac, caplen, _wire = struct.unpack_from("<IIII", blob, off)
        frame = blob[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if len(frame) != caplen or caplen > MAX_SEED_BYTES:
            continue
        group.append((sec, frac, frame))
        if len(group) == RECORDS_PER_SEED or sum(len(f) for _, _, f in group) > MAX_SEED_BYTES:
            groups.append(group)
            group = []
    return [(header, g) for g in groups]


def as_pcap(header: bytes, records: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(header)
    for sec, frac, frame in records:
        out += struct.pack("<IIII", sec, frac, len(frame), len(frame)) + frame
    return bytes(out)


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def as_pcapng(header: bytes, records: list[tuple[int, int, bytes]], endian: str, comments: bool = False) -> bytes:
    """The same records as one pcapng section: SHB, IDB (with if_tsresol), EPBs (with an
    opt_comment each, as `pytrafgen generate --format pcapng` writes, when ``comments``)."""
    nano = struct.unpack_from("<I", header)[0] == 0xA1B23C4D
    linktype, snaplen = struct.unpack_from("<I", header, 20)[0] & 0xFFFF, struct.unpack_from("<I", header, 16)[0]
    shb = _block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    tsresol = 9 if nano else 6
    opts = struct.pack(endian + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + struct.pack(endian + "HH", 0, 0)
    idb = _block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts)
    out = bytearray(shb + idb)
    unit = 10**tsresol
    for k, (sec, frac, frame) in enumerate(records):
        ts = sec * unit + frac
        body = struct.pack(endian + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
        if comments:
            text = f"class=c{k % 3} flow={k}".encode()
            body += b"\0" * (-len(body) % 4) + struct.pack(endian + "HH", 1, len(text)) + text
            body += b"\0" * (-len(body) % 4) + struct.pack(endian + "HH", 0, 0)
        out += _block(endian, 6, body)
    return bytes(out)


def write_seed(directory: Path, blob: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(blob).hexdigest()).write_bytes(blob)


def cc0_seeds(out: Path) -> int:
    count = 0
    for path in sorted((DATA / "captures").glob("*.pcap")):
        for header, records in pcap_slices(path.read_bytes()):
            for blob in (as_pcap(header, records), as_pcapng(header, records, "<"), as_pcapng(header, records, ">"),
                         as_pcapng(header, records, "<", comments=True), as_pcapng(header, records, ">", comments=True)):
                write_seed(out, blob)
                count += 1
    return count


def public_seeds(out: Path) -> int:
    """Heads of the third-party captures (pcapng ones keep their real options and blocks)."""
    count = 0
    for path in sorted((DATA / "public").rglob("*")):
        if path.suffix not in (".pcap", ".pcapng", ".cap") or not path.is_file():
            continue
        with path.open("rb") as fh:
            write_seed(out, fh.read(4096))
        count += 1
    return count


def _ipv6_table():  # type: ignore[no-untyped-def]
    """Two small IPv6 flows with hop-by-hop, routing and fragment headers (scapy-built)."""
    from scapy.layers.inet import TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
    from scapy.layers.l2 import Ether

    from pytrafgen import PacketTable

    a, b = "fd00::1", "fd00::2"
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / TCP(sport=40000, dport=80, flags="S"),
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src=b, dst=a) / IPv6ExtHdrRouting() / TCP(sport=80, dport=40000, flags="SA"),
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src=a, dst=b) / IPv6ExtHdrFragment(id=7, m=1) / UDP(sport=5000, dport=53) / (b"q" * 24),
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src=b, dst=a, fl=5) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=9) / UDP(sport=53, dport=5000),
    ]
    return PacketTable.from_frames([bytes(f) for f in frames], ts_ns=[0, 1000, 2000, 3000])


def token_seeds(out: Path) -> int:
    """Encoded flows of the CC0 captures (first packets of each), in fuzz_decode's input format:
    an options byte, then little-endian uint16 token ids (vocabulary of fuzz_layout.hpp)."""
    import numpy as np

    from pytrafgen import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer.encode import encode_flows
    from pytrafgen.tokenizer.vocab import AppProtocol, Vocabulary

    vocab = Vocabulary(classes=["a", "b", "c"], payload_cap=16,
                       app_protocols=[AppProtocol("fuzz", "", tuple(f"t{i}" for i in range(16)))])
    count = 0
    # the CC0 captures are IPv4 only: add IPv6 flows with extension headers (built here)
    tables = [_ipv6_table()] + [read_pcap(p, max_packets=200) for p in sorted((DATA / "captures").glob("*.pcap"))]
    for table in tables:
        flows = assemble_flows(table, max_flow_packets=6)
        labels = np.arange(len(flows), dtype=np.int32) % 3
        enc = encode_flows(table, flows, labels, vocab, protocols={})
        for k in range(min(len(flows), 4)):
            span = enc.tokens[enc.offsets[k] : enc.offsets[k + 1]].astype("<u2")
            if 0 < len(span) <= MAX_SEED_BYTES:
                write_seed(out, bytes([k & 1]) + span.tobytes())
                count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public", action="store_true", help="also slice the third-party captures into build/fuzz/seeds/")
    args = parser.parse_args()
    if not (DATA / "captures").is_dir():
        print(f"no shared captures under {DATA}", file=sys.stderr)
        return 1
    n = cc0_seeds(HERE / "corpus" / "fuzz_reader")
    print(f"{n} CC0 seeds in {HERE / 'corpus' / 'fuzz_reader'}")
    n = token_seeds(HERE / "corpus" / "fuzz_decode")
    print(f"{n} token seeds in {HERE / 'corpus' / 'fuzz_decode'}")
    if args.public:
        m = public_seeds(ROOT / "build" / "fuzz" / "seeds" / "fuzz_reader")
        print(f"{m} third-party seeds in {ROOT / 'build' / 'fuzz' / 'seeds' / 'fuzz_reader'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
