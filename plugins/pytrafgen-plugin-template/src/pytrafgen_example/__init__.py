"""An example pytrafgen plugin: one protocol and one validator, registered through hooks.

pytrafgen finds this module through the entry point in pyproject.toml and calls every
function marked ``@hookimpl`` whose name is a hook in ``pytrafgen.hookspecs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pytrafgen import hookimpl
from pytrafgen.errors import TokenError
from pytrafgen.interfaces import FieldSpec, ProtocolSpec, Rule, Validator

KNOWN_KEYS = ("temp", "humidity", "status")
BYTE_TOKENS = 256
KEY_END, LINE_END = 256, 257  # local ids after the 256 byte tokens
TOKEN_NAMES = (*(f"0x{b:02x}" for b in range(BYTE_TOKENS)), "KEY_END", "LINE_END", *(f"KEY:{k}" for k in KNOWN_KEYS))
FIRST_KEY = 258


class KeyValueProtocol(ProtocolSpec):
    """``key=value\\n`` lines over TCP: the smallest protocol with every part a protocol has."""

    name: ClassVar[str] = "example_kv"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "tcp"
    default_ports: ClassVar[tuple[int, ...]] = (7777,)
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("key", None, "value", "enum", "known keys as one token each, others as text"),
        FieldSpec("value", None, "value", "text", "the value, as byte tokens"),
    )
    token_names: ClassVar[tuple[str, ...]] = TOKEN_NAMES

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        # Only whole lines are tokenized; anything else is left to the tokenizer as bytes.
        if not payload.endswith(b"\n"):
            return None
        tokens: list[int] = []
        for line in payload[:-1].split(b"\n"):
            key, eq, value = line.partition(b"=")
            if not eq:
                return None
            text = key.decode("latin-1")
            tokens += [FIRST_KEY + KNOWN_KEYS.index(text)] if text in KNOWN_KEYS else [*key, KEY_END]
            tokens += [*value, LINE_END]
        return tokens

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        out = bytearray()
        for t in tokens:
            if t < BYTE_TOKENS:
                out.append(t)
            elif t == KEY_END:
                out += b"="
            elif t == LINE_END:
                out += b"\n"
            elif t < len(TOKEN_NAMES):
                out += KNOWN_KEYS[t - FIRST_KEY].encode() + b"="
            else:
                raise TokenError(f"example_kv: token {t} is outside the local vocabulary")
        return bytes(out)

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        messages, offset = [], 0
        for line in stream.split(b"\n")[:-1]:
            key, _, value = line.partition(b"=")
            messages.append({"key": key.decode("latin-1"), "value": value.decode("latin-1"),
                             "offset": offset, "valid": b"=" in line})
            offset += len(line) + 1
        return messages

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        return f"{message['key']}={message['value']}\n".encode("latin-1")

    def rules(self) -> list[Rule]:
        return [Rule("KV-001", self.name, "packet", "every line is key=value", _lines_have_equals)]


def _lines_have_equals(ctx: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rule KV-001 over ``ctx.streams(...)`` (pytrafgen.rules.context.RuleContext)."""
    applicable, violating = [], []
    for flow in ctx.streams(KeyValueProtocol.name):
        for stream in (flow.c2s, flow.s2c):
            for msg in stream.messages:
                packet = stream.packet_at(msg["offset"])
                applicable.append(packet)
                if not msg["valid"]:
                    violating.append(packet)
    return np.unique(np.asarray(applicable, np.int64)), np.unique(np.asarray(violating, np.int64))


class PayloadSizeValidator(Validator):
    """Mean payload bytes per packet, real vs generated (an example metric)."""

    name: ClassVar[str] = "payload_size"
    description: ClassVar[str] = "mean payload bytes per packet, real and generated"

    def evaluate(self, real: Any, generated: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        def mean_payload(evalset: Any) -> float:
            lengths = np.asarray(evalset.packets.payload_len, np.float64)
            return float(lengths.mean()) if len(lengths) else 0.0

        real_mean, generated_mean = mean_payload(real), mean_payload(generated)
        return {"real": real_mean, "generated": generated_mean,
                "abs_difference": abs(real_mean - generated_mean), "settings": dict(settings)}


@hookimpl
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    register(KeyValueProtocol())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(PayloadSizeValidator())
