"""``CodecLayout``: where the C++ codec finds each token range of a vocabulary, typed.

The encoder and decoder (``_core.encode_flows`` / ``_core.decode_tokens``) read token ids by
range: the start of every core range, the class range, the application protocols' ranges, the
inter-arrival buckets and the payload cap. ``Vocabulary.codec_layout`` derives this from the
vocabulary (``vocab.json`` in a dataset or checkpoint; its format is unchanged, so every saved
file still loads); ``to_core()`` is the form the C++ binding takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytrafgen.errors import DatasetError

#: bytes of each packet's payload kept as tokens (the rest is only counted in ``payload_len``)
DEFAULT_PAYLOAD_CAP = 64
MAX_PAYLOAD_CAP = 1024
IAT_BUCKETS = 64  # csrc/tokenize_common.hpp kIatBuckets
TRANSPORT_NUMBERS = {"": 0, "tcp": 6, "udp": 17}


@dataclass(frozen=True)
class AppRange:
    """An application protocol's tokens: its begin token, then ``n_local`` local tokens."""

    begin: int
    n_local: int
    transport: int  # 0 any, 6 TCP, 17 UDP


@dataclass(frozen=True)
class CodecLayout:
    """The token layout the C++ codec encodes and decodes with (see the module docstring)."""

    range_starts: tuple[int, ...]  # start id of each core range, in CORE_RANGE_NAMES order
    class_start: int
    n_classes: int
    vocab_size: int
    iat_edges_ns: tuple[int, ...]  # IAT_BUCKETS - 1 edges: bucket k holds edges[k-1] <= gap < edges[k]
    iat_values_ns: tuple[int, ...]  # IAT_BUCKETS: the gap a decoded bucket stands for
    apps: tuple[AppRange, ...] = ()
    payload_cap: int = DEFAULT_PAYLOAD_CAP

    def __post_init__(self) -> None:
        def bad(what: str) -> DatasetError:
            return DatasetError(f"codec layout: {what}")

        if not 0 <= self.payload_cap <= MAX_PAYLOAD_CAP:
            raise bad(f"payload cap must be between 0 and {MAX_PAYLOAD_CAP}, got {self.payload_cap}")
        if any(b < a for a, b in zip(self.range_starts, self.range_starts[1:], strict=False)):
            raise bad("core range starts must not decrease")
        if len(self.iat_edges_ns) != IAT_BUCKETS - 1 or len(self.iat_values_ns) != IAT_BUCKETS:
            raise bad(f"{IAT_BUCKETS - 1} inter-arrival edges and {IAT_BUCKETS} values expected, got "
                      f"{len(self.iat_edges_ns)} and {len(self.iat_values_ns)}")
        if self.n_classes < 0 or self.class_start + self.n_classes > self.vocab_size:
            raise bad(f"class range {self.class_start}+{self.n_classes} lies outside the vocabulary "
                      f"({self.vocab_size} tokens)")
        for app in self.apps:
            if app.begin < 0 or app.n_local < 0 or app.begin + 1 + app.n_local > self.vocab_size:
                raise bad(f"application range at {app.begin} ({app.n_local} local tokens) lies outside the "
                          f"vocabulary ({self.vocab_size} tokens)")
            if app.transport not in TRANSPORT_NUMBERS.values():
                raise bad(f"application transport must be 0, 6 or 17, got {app.transport}")

    def to_core(self) -> dict[str, Any]:
        """The layout as ``_core.encode_flows`` / ``_core.decode_tokens`` take it."""
        apps = np.array([(a.begin, a.n_local, a.transport, 0) for a in self.apps], np.int32).reshape(-1, 4)
        return {"layout": np.array(self.range_starts, np.int32), "class_start": self.class_start,
                "n_classes": self.n_classes, "vocab_size": self.vocab_size, "payload_cap": self.payload_cap,
                "iat_edges": np.array(self.iat_edges_ns, np.int64),
                "iat_values": np.array(self.iat_values_ns, np.int64), "apps": apps}


__all__ = ["DEFAULT_PAYLOAD_CAP", "IAT_BUCKETS", "MAX_PAYLOAD_CAP", "AppRange", "CodecLayout"]
