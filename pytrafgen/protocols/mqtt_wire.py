"""MQTT's variable-length integer (the fixed header's Remaining Length), for the core's own
MQTT writers — the builder's conformance step and replay's clients — which must not depend on
the separately installed MQTT plugin."""

from __future__ import annotations


def encode_remaining_length(value: int) -> bytes:
    """Seven bits per byte, least significant first, the top bit set on every byte but the last
    (MQTT 3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        digit, value = value & 0x7F, value >> 7
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)
