"""Vectorised reads of raw header bytes and Internet checksums over a PacketTable's buffer.

Compliance rules must judge the bytes on the wire, not what the dissector made of them, so
they read header bytes directly from ``data``; these helpers do it for many packets at once.
"""

from __future__ import annotations

import numpy as np

# Checksums over at most this many bytes at once keep the index arrays small.
_CHUNK_BYTES = 1 << 22


def read_u8(data: np.ndarray, offsets: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes at absolute ``offsets``; ``ok`` is False where the offset is at/after ``limit``."""
    offsets = np.asarray(offsets, np.int64)
    ok = (offsets >= 0) & (offsets < np.asarray(limit, np.int64)) & (offsets < len(data))
    out = np.zeros(len(offsets), np.uint8)
    out[ok] = data[offsets[ok]]
    return out, ok


def read_u16(data: np.ndarray, offsets: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Big-endian 16-bit words at absolute ``offsets``; ``ok`` False where they do not fit."""
    hi, ok_hi = read_u8(data, offsets, limit)
    lo, ok_lo = read_u8(data, np.asarray(offsets, np.int64) + 1, limit)
    return (hi.astype(np.uint16) << 8) | lo.astype(np.uint16), ok_hi & ok_lo


def fold(sums: np.ndarray) -> np.ndarray:
    """Fold 32/64-bit one's-complement sums to 16 bits."""
    s = np.asarray(sums, np.uint64)
    for _ in range(4):
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return s.astype(np.uint32)


def ones_sum(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Unfolded one's-complement sums of the byte ranges ``[start, start+length)`` of
    ``data`` taken as big-endian 16-bit words (an odd last byte padded with zero)."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    out = np.zeros(len(starts), np.uint64)
    i = 0
    while i < len(starts):
        # Take packets until the chunk is full (at least one packet per chunk).
        cum = np.cumsum(lengths[i:])
        j = i + max(1, int(np.searchsorted(cum, _CHUNK_BYTES, side="right")))
        out[i:j] = _ones_sum_chunk(data, starts[i:j], lengths[i:j])
        i = j
    return out


def _ones_sum_chunk(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum())
    result = np.zeros(len(starts), np.uint64)
    if total == 0:
        return result
    seg_begin = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos_in_seg = np.arange(total, dtype=np.int64) - np.repeat(seg_begin, lengths)
    idx = np.repeat(starts, lengths) + pos_in_seg
    values = data[idx].astype(np.uint64)
    values = np.where(pos_in_seg % 2 == 0, values << np.uint64(8), values)
    nonempty = lengths > 0
    result[nonempty] = np.add.reduceat(values, seg_begin[nonempty])
    return result


def address_words_sum(addr: np.ndarray, ipv4: np.ndarray) -> np.ndarray:
    """Sum of the 16-bit words of (N,16) addresses: the last 4 bytes for IPv4 (mapped)."""
    a = np.asarray(addr, np.uint64)
    words = (a[:, 0::2] << np.uint64(8)) | a[:, 1::2]
    full = words.sum(axis=1)
    v4 = words[:, 6:].sum(axis=1)
    return np.where(ipv4, v4, full)
