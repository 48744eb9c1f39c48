"""Builders of small pcap / pcapng files for the capture tests, written with struct so the
tests control every byte (byte order, resolution, block layout, damage)."""

from __future__ import annotations

import struct
from collections.abc import Sequence


def pcap_file(frames: Sequence[bytes], linktype: int = 1, *, ts_ns: Sequence[int] | None = None,
              big: bool = False, nano: bool = False, snaplen: int = 65535,
              wirelen: Sequence[int] | None = None) -> bytes:
    order = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, frame in enumerate(frames):
        ts = ts_ns[i] if ts_ns is not None else 1_700_000_000_000_000_000 + i * 1_000_000
        frac = ts % 1_000_000_000 if nano else (ts % 1_000_000_000) // 1000
        wl = wirelen[i] if wirelen is not None else len(frame)
        out.append(struct.pack(order + "IIII", ts // 1_000_000_000, frac, len(frame), wl) + frame)
    return b"".join(out)


def _pad4(body: bytes) -> bytes:
    return body + b"\0" * (-len(body) % 4)


def ng_block(order: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def ng_option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad4(value)


def ng_shb(order: str) -> bytes:
    return ng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def ng_idb(order: str, linktype: int, snaplen: int = 0, tsresol: int | None = None,
           tsoffset_s: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += ng_option(order, 9, bytes([tsresol]))
    if tsoffset_s is not None:
        opts += ng_option(order, 14, struct.pack(order + "q", tsoffset_s))
    if opts:
        opts += struct.pack(order + "HH", 0, 0)
    return ng_block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def ng_epb(order: str, iface: int, ts_units: int, frame: bytes, wirelen: int | None = None) -> bytes:
    body = struct.pack(order + "IIIII", iface, ts_units >> 32, ts_units & 0xFFFFFFFF, len(frame),
                       len(frame) if wirelen is None else wirelen) + frame
    return ng_block(order, 6, body)


def ng_opb(order: str, iface: int, ts_units: int, frame: bytes) -> bytes:
    body = struct.pack(order + "HHIIII", iface, 0, ts_units >> 32, ts_units & 0xFFFFFFFF, len(frame),
                       len(frame)) + frame
    return ng_block(order, 2, body)


def ng_spb(order: str, frame: bytes) -> bytes:
    return ng_block(order, 3, struct.pack(order + "I", len(frame)) + frame)
