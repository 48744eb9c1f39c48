"""pytrafgen-coap: CoAP (RFC 7252) for pytrafgen, as a separately installed plugin.

Registers the ``coap`` protocol through the ``register_protocols`` hook (entry point ``coap``
of group ``pytrafgen``): recognition, the field table, a byte-exact token codec whose option
tokens carry numbers and values (deltas and lengths derived: ``pytrafgen_coap.tokens``),
message parsing and building (``pytrafgen_coap.messages``) and the compliance rules
(``pytrafgen_coap.rules``). One UDP datagram is one message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any, ClassVar

from pytrafgen import hookimpl
from pytrafgen.app_grammar import TokenAutomaton
from pytrafgen.interfaces import FieldSpec, ProtocolSpec, Rule
from pytrafgen.protocols.coap_wire import COAP_OPTIONS, COAP_PORT
from pytrafgen_coap.messages import build_message, parse_message
from pytrafgen_coap.tokens import TOKEN_NAMES, decode_payload, encode_payload, token_automaton

__version__ = version("pytrafgen-coap")  # single source: this plugin's pyproject.toml

RESERVED_CODE_CLASSES = frozenset((1, 6, 7))


def _well_formed(payload: bytes, registered_only: bool) -> bool:
    """A whole version-1 message of a code class in use (and, if asked, registered options only)."""
    msg = parse_message(payload)
    if msg is None or msg.error is not None or msg.version != 1 or msg.code >> 5 in RESERVED_CODE_CLASSES:
        return False
    return not registered_only or all(n in COAP_OPTIONS for n, _ in msg.options)


class CoapProtocol(ProtocolSpec):
    """CoAP over UDP: a client sends requests (CON or NON) to port 5683, the server answers."""

    name: ClassVar[str] = "coap"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "udp"
    default_ports: ClassVar[tuple[int, ...]] = (COAP_PORT,)
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("version", 2, "value", "enum", "always 1"),
        FieldSpec("type", 2, "value", "enum", "CON, NON, ACK, RST"),
        FieldSpec("token_length", 4, "length", "derived", "the token's length (0..8)"),
        FieldSpec("code", 8, "value", "enum", "c.dd: 0.00 empty, 0.01-0.07 methods, 2.xx/4.xx/5.xx responses"),
        FieldSpec("message_id", 16, "value", "uint", "matches an ACK/RST to its CON, detects duplicates"),
        FieldSpec("token", None, "value", "bytes", "matches a response to its request"),
        FieldSpec("option_number", None, "value", "enum", "absolute option number (registered ones own a token)"),
        FieldSpec("option_delta", None, "length", "derived", "delta nibble and 13/14 extended bytes"),
        FieldSpec("option_length", None, "length", "derived", "length nibble and 13/14 extended bytes"),
        FieldSpec("option_value", None, "value", "bytes", "the option's value"),
        FieldSpec("payload_marker", 8, "value", "derived", "0xFF, written only before a non-empty payload"),
        FieldSpec("payload", None, "payload", "bytes", "the representation"),
    )
    token_names: ClassVar[tuple[str, ...]] = TOKEN_NAMES

    def recognise(self, server_port: int, client_payload: bytes, server_payload: bytes) -> bool:
        if server_port in self.default_ports:
            # as rule UDP-005 judges the service port: a client that speaks CoAP version 1
            return not client_payload or client_payload[0] >> 6 == 1
        # elsewhere both sides must exchange whole, plausible messages
        return (bool(client_payload) and bool(server_payload) and _well_formed(client_payload, True)
                and _well_formed(server_payload, True))

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        return encode_payload(payload)

    def token_automaton(self) -> TokenAutomaton:
        """Sampling follows the message grammar, so every sampled span decodes."""
        return token_automaton()

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        return decode_payload(tokens)

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        """The message in one datagram (``stream``), with ``offset`` 0 and ``length`` (where its
        well-formed part ends) and, when it is not well-formed, ``error``; a datagram shorter
        than the header is one entry ``{"type_name": "INVALID", "error": ...}``."""
        msg = parse_message(stream)
        if msg is None:
            return [{"type": -1, "type_name": "INVALID", "error": "shorter than the 4-byte header",
                     "offset": 0, "length": len(stream)}]
        return [{**msg.fields(), "offset": 0}]

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        return build_message(message)

    def rules(self) -> list[Rule]:
        from pytrafgen_coap.rules import coap_rules

        return coap_rules()


@hookimpl
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    register(CoapProtocol())
