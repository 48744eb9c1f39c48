"""Reading and writing captures: pcap/pcapng → PacketTable (numpy columns), and back.

The reading and L2–L4 dissection run in C++ (``csrc/pcap.hpp``, ``csrc/dissect.hpp``)
without the GIL; see docs/architecture.md §1 for every column's meaning.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from pytrafgen import _core
from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError

# status code → name (index = code): "ok", "non_ip", "truncated", "bad_header", "fragment", …
STATUS_NAMES: tuple[str, ...] = tuple(_core.STATUS_NAMES)
STATUS_OK = 0

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_NAMES: dict[int, str] = {
    0: "null",
    1: "ethernet",
    12: "raw",
    14: "raw",
    101: "raw",
    108: "loop",
    113: "linux_sll",
    228: "ipv4",
    229: "ipv6",
    276: "linux_sll2",
}

# column name → dtype in the order of docs/architecture.md §1, as the C++ reader writes them
# (csrc/columns.hpp): ``data`` (all frames back to back), then one row per packet
_ROW_WIDTHS: dict[str, int] = {name: width for name, _, width in _core.PACKET_COLUMNS}  # src/dst: (N, 16)
PACKET_COLUMNS: dict[str, np.dtype] = {"data": np.dtype(np.uint8),
                                       **{name: np.dtype(dtype) for name, dtype, _ in _core.PACKET_COLUMNS}}
_ROW_COLUMNS = tuple(_ROW_WIDTHS)


def _row_shape(name: str, n: int) -> tuple[int, ...]:
    width = _ROW_WIDTHS[name]
    return (n,) if width == 1 else (n, width)


@dataclass(eq=False)
class PacketTable:
    """One row per captured record; frames live concatenated in ``data``."""

    data: np.ndarray
    frame_off: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    iface: np.ndarray
    status: np.ndarray
    l3: np.ndarray
    l3_off: np.ndarray
    ip_hdr_len: np.ndarray
    ip_total_len: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    proto: np.ndarray
    ttl: np.ndarray
    tos: np.ndarray
    ip_id: np.ndarray
    ip_flags: np.ndarray
    frag_offset: np.ndarray
    flow_label: np.ndarray
    ip_csum: np.ndarray
    l4_off: np.ndarray
    l4_hdr_len: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    window: np.ndarray
    urgent: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    l4_csum: np.ndarray
    payload_off: np.ndarray
    payload_len: np.ndarray
    payload_wirelen: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Columns take their contract dtypes; lengths and frame ranges must agree."""
        for name, dtype in PACKET_COLUMNS.items():
            setattr(self, name, np.asarray(getattr(self, name), dtype))
        n = len(self.caplen)
        for name in _ROW_COLUMNS:
            col = getattr(self, name)
            want = _row_shape(name, n)
            if col.shape != want:
                raise PytrafgenError(f"PacketTable column {name!r} has shape {col.shape}, expected {want}")
        if self.data.ndim != 1:
            raise PytrafgenError(f"PacketTable data must be 1-D, got shape {self.data.shape}")
        if n and int((self.frame_off + self.caplen).max()) > len(self.data):
            raise PytrafgenError("PacketTable frame_off + caplen reaches past the end of data")

    def __len__(self) -> int:
        return len(self.caplen)

    def frame(self, i: int) -> bytes:
        off = int(self.frame_off[i])
        return self.data[off : off + int(self.caplen[i])].tobytes()

    def payload(self, i: int) -> bytes:
        """The captured L4 payload of row ``i`` (without Ethernet padding)."""
        off = int(self.frame_off[i]) + int(self.payload_off[i])
        return self.data[off : off + int(self.payload_len[i])].tobytes()

    def columns(self) -> dict[str, np.ndarray]:
        """Every column by name (``data`` included, ``skipped`` not)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}

    def take(self, idx: np.ndarray | Sequence[int]) -> PacketTable:
        """The rows ``idx`` (indices or a boolean mask), with their own compact ``data``."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.intp, copy=False)
        cols = {name: getattr(self, name)[idx] for name in _ROW_COLUMNS}
        data, frame_off = _gather(self.data, self.frame_off[idx], self.caplen[idx])
        cols["frame_off"] = frame_off
        return PacketTable(data=data, skipped=dict(self.skipped), **cols)

    @classmethod
    def empty(cls) -> PacketTable:
        cols = {name: np.zeros(_row_shape(name, 0), PACKET_COLUMNS[name]) for name in _ROW_COLUMNS}
        return cls(data=np.zeros(0, np.uint8), skipped={}, **cols)

    @classmethod
    def concat(cls, tables: Iterable[PacketTable]) -> PacketTable:
        """Rows of every table in order; ``skipped`` counts are summed."""
        tables = list(tables)
        if not tables:
            return cls.empty()
        cols = {name: np.concatenate([getattr(t, name) for t in tables]) for name in _ROW_COLUMNS}
        bases = np.cumsum([0] + [len(t.data) for t in tables[:-1]], dtype=np.uint64)
        cols["frame_off"] = np.concatenate([t.frame_off + b for t, b in zip(tables, bases, strict=True)])
        skipped: dict[str, int] = {}
        for t in tables:
            for reason, count in t.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        return cls(data=np.concatenate([t.data for t in tables]), skipped=skipped, **cols)

    @classmethod
    def from_frames(cls, frames: Sequence[bytes], ts_ns: Sequence[int] | np.ndarray | None = None,
                    linktype: int = LINKTYPE_ETHERNET, wirelen: Sequence[int] | np.ndarray | None = None,
                    ) -> PacketTable:
        """Dissect in-memory frames (e.g. built packets) into a table."""
        blob = pcap_bytes(frames, ts_ns=ts_ns, wirelen=wirelen, linktype=linktype)
        return _table_from_reader(_core.CaptureFile.from_bytes(blob, "<frames>"), 0)


# the dataclass spells the columns out for type checkers; a stale _core would disagree
if [f.name for f in fields(PacketTable) if f.name != "skipped"] != list(PACKET_COLUMNS):
    raise ImportError("pytrafgen._core's packet columns differ from capture.PacketTable; rebuild _core")


def _gather(data: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate data[offs[i] : offs[i] + lens[i]] → (new data, new offsets)."""
    return _core.gather_frames(data, offs, lens)


def _table_from_reader(reader: _core.CaptureFile, max_packets: int) -> PacketTable:
    cols, skipped = reader.read(max_packets)
    return PacketTable(skipped=dict(skipped), **cols)


def _open(path: str | os.PathLike[str]) -> _core.CaptureFile:
    return _core.CaptureFile(os.fspath(path))


def read_pcap(path: str | os.PathLike[str], max_packets: int | None = None) -> PacketTable:
    """Read and dissect a pcap/pcapng file (all records, or the first ``max_packets``).

    Raises pytrafgen.errors.CaptureError (file, byte offset, reason) for file-level damage;
    records that cannot become rows are counted in ``table.skipped`` by reason.
    """
    if max_packets is not None and max_packets <= 0:
        raise PytrafgenError(f"max_packets must be positive, got {max_packets}")
    reader = _open(path)
    try:
        return _table_from_reader(reader, max_packets or 0)
    finally:
        reader.close()


def read_packet_comments(path: str | os.PathLike[str]) -> dict[int, str]:
    """Packet comments of a pcapng capture: ``{row: comment}`` for the packets whose block has
    an opt_comment (the first one; UTF-8, undecodable bytes replaced), keyed by the row
    ``read_pcap(path)`` gives that packet. Empty for classic pcap. Options that run past
    their block end the block's option list (counted as no comment), never the read."""
    reader = _open(path)
    try:
        index, texts = reader.comments()
    finally:
        reader.close()
    return {int(i): t.decode("utf-8", "replace") for i, t in zip(index.tolist(), texts, strict=True)}


def iter_pcap(path: str | os.PathLike[str], chunk_packets: int = 1_000_000,
              on_read: Callable[[int, int], None] | None = None) -> Iterator[PacketTable]:
    """Yield the capture in tables of at most ``chunk_packets`` rows (bounded memory: the file
    is memory-mapped and each chunk holds only its own frames). Each chunk's ``skipped``
    counts what was skipped while reading that chunk. ``on_read(offset, size)`` after each
    chunk is read: the byte offset reached in the file and its size (for a progress bar)."""
    if chunk_packets <= 0:
        raise PytrafgenError(f"chunk_packets must be positive, got {chunk_packets}")
    reader = _open(path)
    try:
        while not reader.done:
            table = _table_from_reader(reader, chunk_packets)
            if on_read is not None:
                on_read(reader.offset, reader.size)
            if len(table) or table.skipped:
                yield table
            del table  # drop our reference before the next chunk is read: one chunk alive, not two
    finally:
        reader.close()


def pcap_bytes(frames: Sequence[bytes] | PacketTable, ts_ns: Sequence[int] | np.ndarray | None = None,
               wirelen: Sequence[int] | np.ndarray | None = None, *, nanosecond: bool = True,
               linktype: int | None = None, snaplen: int = 262144) -> bytes:
    """A classic little-endian pcap file as bytes (see ``write_pcap``)."""
    header, records = _pcap_parts(frames, ts_ns, wirelen, nanosecond, linktype, snaplen)
    return header + records


def _pcap_parts(frames: Sequence[bytes] | PacketTable, ts_ns: Sequence[int] | np.ndarray | None,
                wirelen: Sequence[int] | np.ndarray | None, nanosecond: bool, linktype: int | None,
                snaplen: int) -> tuple[bytes, bytes]:
    """(file header, records) of a classic little-endian pcap."""
    if isinstance(frames, PacketTable):
        table = frames
        if linktype is None:
            types = np.unique(table.linktype)
            if len(types) > 1:
                raise PytrafgenError(f"packets have several link types {types.tolist()}: pass linktype=")
            linktype = int(types[0]) if len(types) else LINKTYPE_ETHERNET
        data, offs, caplen = table.data, table.frame_off, table.caplen
        ts = table.ts_ns if ts_ns is None else ts_ns
        wire = table.wirelen if wirelen is None else wirelen
    else:
        chunks = [bytes(f) for f in frames]
        caplen = np.fromiter((len(c) for c in chunks), np.uint32, len(chunks))
        data = np.frombuffer(b"".join(chunks), np.uint8)
        offs = np.zeros(len(chunks), np.uint64)
        np.cumsum(caplen[:-1], out=offs[1:])
        ts = np.zeros(len(chunks), np.int64) if ts_ns is None else ts_ns
        wire = caplen if wirelen is None else wirelen
        linktype = LINKTYPE_ETHERNET if linktype is None else linktype
    ts = np.asarray(ts, np.int64)
    wire = np.asarray(wire, np.uint32)
    n = len(caplen)
    if len(ts) != n or len(wire) != n:
        raise PytrafgenError(f"{n} frames but {len(ts)} timestamps and {len(wire)} wire lengths")
    if n and int(caplen.max()) > snaplen:
        raise PytrafgenError(f"a frame of {int(caplen.max())} bytes exceeds snaplen {snaplen}")
    if n and int(ts.min()) < 0:
        raise PytrafgenError("negative timestamps cannot be written to pcap")
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    return header, _core.pack_pcap_records(data, offs, caplen, wire, ts, nanosecond)


def write_pcap(path: str | os.PathLike[str], table_or_frames: PacketTable | Sequence[bytes],
               ts_ns: Sequence[int] | np.ndarray | None = None, wirelen: Sequence[int] | np.ndarray | None = None,
               *, nanosecond: bool = True, linktype: int | None = None, snaplen: int = 262144) -> Path:
    """Write a classic little-endian pcap atomically. ``table_or_frames``: a PacketTable (its
    timestamps, wire lengths and link type unless given) or a sequence of frames (``ts_ns``
    default 0, ``wirelen`` default the frame length, ``linktype`` default Ethernet).
    ``nanosecond`` selects the ns-resolution pcap magic (else µs, truncating)."""
    header, records = _pcap_parts(table_or_frames, ts_ns, wirelen, nanosecond, linktype, snaplen)
    with atomic_file(path) as fh:
        fh.write(header)
        fh.write(records)
    return Path(path)
