"""Segment payloads that conformance steps may cut or replace, never in place of another's bytes."""

from __future__ import annotations

import numpy as np


class _Payloads:
    """Segment payloads as the builder sends them (stored bytes, then zeros to the length),
    with replacements appended to a new blob: a payload can shrink or change, never in place
    of another's bytes."""

    def __init__(self, blob: np.ndarray, off: np.ndarray, length: np.ndarray, stored: np.ndarray) -> None:
        self.blob, self.off, self.length, self.stored = blob, off.copy(), length.copy(), stored.copy()
        self.extra = bytearray()  # replacement payloads, placed after the blob

    def get(self, i: int) -> bytes:
        off, stored = int(self.off[i]), int(self.stored[i])
        if off >= len(self.blob):
            data = bytes(self.extra[off - len(self.blob):off - len(self.blob) + stored])
        else:
            data = self.blob[off:off + stored].tobytes()
        return data + bytes(int(self.length[i]) - stored)

    def set(self, i: int, data: bytes) -> None:
        if self.get(i)[:len(data)] == data:  # a cut: the same bytes, fewer of them
            self.length[i] = len(data)
            self.stored[i] = min(int(self.stored[i]), len(data))
            return
        self.off[i] = len(self.blob) + len(self.extra)
        self.length[i] = self.stored[i] = len(data)
        self.extra += data

    def new_blob(self) -> np.ndarray:
        return np.concatenate([self.blob, np.frombuffer(bytes(self.extra), np.uint8)])
