"""pytrafgen-mqtt: MQTT 3.1, 3.1.1 and 5.0 for pytrafgen, as a separately installed plugin.

Registers the ``mqtt`` protocol through the ``register_protocols`` hook (entry point ``mqtt``
of group ``pytrafgen``): recognition, the field table, a byte-exact token codec
(``pytrafgen_mqtt.tokens``), packet parsing and building (``pytrafgen_mqtt.packets``) and
the compliance rules (``pytrafgen_mqtt.rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any, ClassVar

from pytrafgen import hookimpl
from pytrafgen.app_grammar import AppGrammar, TokenAutomaton
from pytrafgen.interfaces import FieldSpec, ProtocolSpec, Rule
from pytrafgen_mqtt.automaton import token_automaton
from pytrafgen_mqtt.grammar import MQTT_GRAMMAR
from pytrafgen_mqtt.packets import (
    TYPE_NUMBER,
    build_packet,
    packet_fields,
    plausible,
    split_packets,
    stream_version,
)
from pytrafgen_mqtt.tokens import TOKEN_NAMES, decode_payload_total, encode_payload

__version__ = version("pytrafgen-mqtt")  # single source: this plugin's pyproject.toml


def _starts_with_connect(payload: bytes) -> bool:
    """A CONNECT whose protocol name is MQTT or MQIsdp."""
    packets, _, _ = split_packets(payload[:64])
    if not packets or packets[0].type != TYPE_NUMBER["CONNECT"]:
        return False
    return packets[0].body[2:6] == b"MQTT" or packets[0].body[2:8] == b"MQIsdp"


def _frames_as_mqtt(payload: bytes) -> bool:
    """Bytes that split into plausible MQTT packets end to end (the last may be cut short),
    at least one of them complete."""
    packets, _, error = split_packets(payload)
    return error in (None, "incomplete") and plausible(packets) and any(p.complete for p in packets)


class MqttProtocol(ProtocolSpec):
    """MQTT over TCP: the client sends CONNECT first, the broker answers CONNACK."""

    name: ClassVar[str] = "mqtt"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "tcp"
    default_ports: ClassVar[tuple[int, ...]] = (1883,)
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("type", 4, "value", "enum", "control packet type"),
        FieldSpec("flags", 4, "value", "enum", "fixed-header flags (PUBLISH: DUP, QoS, RETAIN)"),
        FieldSpec("remaining_length", None, "length", "derived", "variable header plus payload bytes"),
        FieldSpec("protocol_name", None, "value", "enum", "CONNECT: MQTT or MQIsdp"),
        FieldSpec("protocol_level", 8, "value", "enum", "CONNECT: 3 (3.1), 4 (3.1.1), 5 (5.0)"),
        FieldSpec("connect_flags", 8, "value", "uint", "CONNECT: username, password, will, clean session"),
        FieldSpec("keepalive", 16, "value", "uint", "CONNECT: keep-alive seconds"),
        FieldSpec("strings", None, "value", "text", "client id, will topic and message, username, password, topic"),
        FieldSpec("string_lengths", 16, "length", "derived", "the 2-byte length of every string"),
        FieldSpec("properties", None, "value", "bytes", "MQTT 5.0 properties (their length derived)"),
        FieldSpec("packet_id", 16, "value", "uint", "packet identifier"),
        FieldSpec("reason_codes", None, "value", "bytes", "return / reason codes"),
        FieldSpec("payload", None, "payload", "bytes", "PUBLISH application message"),
    )
    token_names: ClassVar[tuple[str, ...]] = TOKEN_NAMES

    def recognise(self, server_port: int, client_payload: bytes, server_payload: bytes) -> bool:
        if _starts_with_connect(client_payload):
            return True
        if server_port in self.default_ports:
            return not client_payload or _frames_as_mqtt(client_payload)
        # A capture that starts mid-session may take the broker for the client: then both
        # sides must frame as MQTT, packet after packet, with valid fixed headers.
        return _frames_as_mqtt(client_payload) and _frames_as_mqtt(server_payload)

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        return encode_payload(payload)

    def token_grammar(self) -> AppGrammar:
        """The token grammar as data: the C++ core tokenizes with it, ``encode`` is the reference."""
        return MQTT_GRAMMAR

    def token_automaton(self) -> TokenAutomaton:
        """Sampling writes whole packets with the flags their type requires, laid out as the
        grammar does (nothing to fill in)."""
        return token_automaton()

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        """Any token sequence decodes (``decode_payload_total``), so no sampled flow is drawn
        again for its MQTT packets."""
        return decode_payload_total(tokens, direction)

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        """Packets in one direction's in-order stream, each with ``offset``/``length`` in the
        stream and ``version`` (from the stream's CONNECT or CONNACK). If framing stops before
        the end, a last entry ``{"type_name": "INVALID", "error": ...}`` says why."""
        packets, consumed, error = split_packets(stream)
        version = stream_version(packets)
        out = []
        offset = 0
        for p in packets:
            out.append(packet_fields(p, version, offset))
            offset += out[-1]["length"]
        if error is not None:
            out.append({"type": -1, "type_name": "INVALID", "error": error, "offset": consumed,
                        "length": len(stream) - consumed})
        return out

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        return build_packet(message)

    def rules(self) -> list[Rule]:
        from pytrafgen_mqtt.rules import mqtt_rules

        return mqtt_rules()


@hookimpl
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    register(MqttProtocol())
