"""CoAP compliance rules (RFC 7252 and the option RFCs), checked per message.

Each rule reads ``ctx.streams("coap")`` (``pytrafgen.evaluate.context.RuleContext``): per flow,
both directions' datagrams, each parsed on its own by ``CoapProtocol.parse`` into one message
(``offset`` = where the datagram begins in the stream, so ``stream.packet_at`` names its packet).
A message is judged at its datagram's packet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pytrafgen.interfaces import Rule
from pytrafgen.protocols.coap_wire import MAX_TOKEN_LENGTH
from pytrafgen_coap import RESERVED_CODE_CLASSES

Indices = tuple[np.ndarray, np.ndarray]
Message = dict[str, Any]

# value length (min, max) of each registered option (RFC 7252 §5.10, 7641, 7959, 8613, 8768,
# 9177, 9668, 7967, 9175)
OPTION_LENGTHS: dict[int, tuple[int, int]] = {
    1: (0, 8), 3: (1, 255), 4: (1, 8), 5: (0, 0), 6: (0, 3), 7: (0, 2), 8: (0, 255), 9: (0, 255),
    11: (0, 255), 12: (0, 2), 14: (0, 4), 15: (0, 255), 16: (1, 1), 17: (0, 2), 19: (0, 3), 20: (0, 255),
    21: (0, 0), 23: (0, 3), 27: (0, 3), 28: (0, 4), 31: (0, 3), 35: (1, 1034), 39: (1, 255), 60: (0, 4),
    252: (1, 40), 258: (0, 1), 292: (0, 8),
}


def _messages(ctx: Any) -> Iterator[tuple[Any, Message]]:
    for flow in ctx.streams("coap"):
        for stream in (flow.c2s, flow.s2c):
            for m in stream.messages:
                yield stream, m


def _message_rule(judge: Callable[[Message], bool | None], with_invalid: bool = False) -> Callable[[Any], Indices]:
    """A packet-scoped rule from ``judge(message)``: None = not applicable, True = violation.
    Messages that are not well-formed are judged only by the rules about form (``with_invalid``)."""

    def check(ctx: Any) -> Indices:
        applicable: list[int] = []
        violating: list[int] = []
        for stream, m in _messages(ctx):
            if not with_invalid and ("error" in m or m["version"] != 1):
                continue
            verdict = judge(m)
            if verdict is None:
                continue
            at = stream.packet_at(m["offset"])
            applicable.append(at)
            if verdict:
                violating.append(at)
        return np.unique(np.asarray(applicable, np.int64)), np.unique(np.asarray(violating, np.int64))

    return check


def _version(m: Message) -> bool | None:
    return None if m["type_name"] == "INVALID" else m["version"] != 1


def _token_length(m: Message) -> bool | None:
    return None if m["type_name"] == "INVALID" else m["token_length"] > MAX_TOKEN_LENGTH


def _well_formed(m: Message) -> bool | None:
    if m["type_name"] == "INVALID" or m["version"] != 1 or m["token_length"] > MAX_TOKEN_LENGTH:
        return m["type_name"] == "INVALID" or None  # a short datagram; other cases have their rules
    return "error" in m


def _code_class(m: Message) -> bool:
    return m["code"] >> 5 in RESERVED_CODE_CLASSES


def _type_and_code(m: Message) -> bool:
    """RFC 7252 §4.1-4.3: an Empty message (0.00) is the header alone; a RST is Empty; a NON
    is never Empty; an ACK carries no request."""
    empty, request = m["code"] == 0, m["code"] >> 5 == 0 and m["code"] != 0
    if empty:
        return bool(m["token_length"] or m["options"] or m["marker"]) or m["type_name"] == "NON"
    return m["type_name"] == "RST" or (m["type_name"] == "ACK" and request)


def _option_lengths(m: Message) -> bool | None:
    known = [(n, v) for n, _, v in m["options"] if n in OPTION_LENGTHS]
    if not known:
        return None
    return any(not OPTION_LENGTHS[n][0] <= len(v) <= OPTION_LENGTHS[n][1] for n, v in known)


def coap_rules() -> list[Rule]:
    def rule(n: int, description: str, check: Callable[[Any], Indices]) -> Rule:
        return Rule(f"COAP-{n:03d}", "coap", "packet", description, check)

    return [
        rule(1, "version is 1", _message_rule(_version, with_invalid=True)),
        rule(2, "token length is 0..8 (9..15 are reserved)", _message_rule(_token_length, with_invalid=True)),
        rule(3, "the datagram holds the 4-byte header and the token; options fit the datagram with no "
                "reserved nibble 15; a payload marker is followed by a payload", _message_rule(_well_formed, True)),
        rule(4, "code class is not reserved (1, 6, 7)", _message_rule(_code_class)),
        rule(5, "type and code agree: an Empty message (0.00) is the header alone, RST is Empty, NON is "
                "not Empty, ACK carries no request", _message_rule(_type_and_code)),
        rule(6, "a registered option's value length is within its range (RFC 7252 §5.10 and the option's RFC)",
             _message_rule(_option_lengths)),
    ]
