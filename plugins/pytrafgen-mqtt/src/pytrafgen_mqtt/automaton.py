"""The MQTT token grammar of ``pytrafgen_mqtt.tokens`` as an automaton over local ids, for
sampling (``ProtocolSpec.token_automaton``): whole packets of a real type with the fixed-header
flags it requires (PUBLISH: QoS below 3), a complete Remaining Length where it is explicit, and
CONNECT / PUBLISH bodies laid out as the encoder writes them (the CONNECT fields its connect
flags and protocol level announce, a PUBLISH packet identifier when QoS > 0). Every span it
accepts is one ``decode_payload`` decodes as written; every span the encoder writes is one
(``encode_payload`` keeps anything else as bytes)."""

from __future__ import annotations

from functools import cache

from pytrafgen.app_grammar import AutomatonBuilder, TokenAutomaton
from pytrafgen_mqtt.packets import REQUIRED_FLAGS, TYPE_NAMES, TYPE_NUMBER
from pytrafgen_mqtt.tokens import FLAGS0, LEVELS, PNAMES, TWO_BYTE_BODIES, TYPE0, T

CONNECT, PUBLISH = TYPE_NUMBER["CONNECT"], TYPE_NUMBER["PUBLISH"]
CONTINUE = 0x80  # a Remaining Length byte with more to come


def _connect_fields(v5: bool, flags: int) -> tuple[str, ...]:
    """The CONNECT fields after the connect flags, as ``_encode_connect`` writes them."""
    props = ("props",) if v5 else ()
    will = (*props, "text", "text") if flags & 0x04 else ()
    return ("byte", "byte", *props, "text", *will, *(("text",) if flags & 0x80 else ()),
            *(("text",) if flags & 0x40 else ()))


def token_automaton() -> TokenAutomaton:
    a = AutomatonBuilder()
    start, between = a.state("packet"), a.state("between packets")
    packet_end = a.state("packet end")
    a.token(packet_end, T["PKT_END"], between)

    def loop(name: str, end: str, then: int) -> int:
        """A state reading bytes until the token ``end``, then ``then``."""
        s = a.state(name)
        a.edge(s, 0, 256, s)
        a.token(s, T[end], then)
        return s

    raw_body = loop("raw body", "PKT_END", between)

    @cache
    def fields(rest: tuple[str, ...]) -> int:
        """The state reading CONNECT fields ``rest`` then PKT_END (shared suffixes share states)."""
        if not rest:
            return packet_end
        then = fields(rest[1:])
        if rest[0] == "byte":
            s = a.state(f"connect {' '.join(rest)}")
            a.edge(s, 0, 256, then)
            return s
        return loop(f"connect {' '.join(rest)}", "STR_END" if rest[0] == "text" else "PROPS_END", then)

    # the Remaining Length given as bytes (a packet cut short, or not minimally encoded): at most
    # four bytes, all but the last with the continuation bit, then the body as bytes
    explicit_body = loop("explicit body", "PKT_END", between)
    length = [a.state(f"remaining length byte {k}") for k in range(4)]
    for k, s in enumerate(length):
        a.edge(s, 0, CONTINUE, explicit_body)
        if k < 3:
            a.edge(s, CONTINUE, 256, length[k + 1])

    def framing(name: str, derived: int) -> int:
        s = a.state(f"{name} length")
        a.token(s, T["RL_DERIVED"], derived)
        a.token(s, T["RL_EXPLICIT"], length[0])
        a.token(derived, T["RAW"], raw_body)  # any type's body may be bytes after RAW
        return s

    other = framing("other", a.state("other body"))
    # a body the protocol fixes at two bytes or more is never sampled shorter (the decoder would
    # pad it with zeros; the encoder keeps such a packet as bytes)
    two_bytes = [a.state("two-byte body byte 1"), a.state("two-byte body byte 2")]
    a.edge(two_bytes[0], 0, 256, two_bytes[1])
    a.edge(two_bytes[1], 0, 256, raw_body)
    two_byte_derived = a.state("two-byte body")
    two_byte = a.state("two-byte length")
    a.token(two_byte, T["RL_DERIVED"], two_byte_derived)
    a.token(two_byte, T["RL_EXPLICIT"], length[0])
    a.token(two_byte_derived, T["RAW"], two_bytes[0])
    connect_body = a.state("connect body")
    connect = framing("connect", connect_body)
    level = a.state("connect level")
    for tok in sorted(PNAMES.values()):
        a.token(connect_body, tok, level)
    a.token(connect_body, T["PNAME_OTHER"], loop("connect protocol name", "STR_END", level))
    connect_flags = {v5: a.state(f"connect flags (level 5: {v5})") for v5 in (False, True)}
    for lv, tok in LEVELS.items():
        a.token(level, tok, connect_flags[lv == 5])
    level_other = a.state("connect level byte")
    a.token(level, T["LEVEL_OTHER"], level_other)
    for byte in range(256):
        if byte not in LEVELS:  # a listed level has its own token
            a.token(level_other, byte, connect_flags[False])
    for v5, s in connect_flags.items():
        for flags in range(256):
            a.token(s, flags, fields(_connect_fields(v5, flags)))
    publish = {}
    for qos in (False, True):
        body = a.state(f"publish body (QoS > 0: {qos})")
        publish[qos] = framing(f"publish (QoS > 0: {qos})", body)
        rest = loop(f"publish message (QoS > 0: {qos})", "PKT_END", between)
        after_topic = rest
        if qos:  # the packet identifier
            after_topic = a.state("publish packet id")
            second = a.state("publish packet id byte 2")
            a.edge(after_topic, 0, 256, second)
            a.edge(second, 0, 256, rest)
        topic = loop(f"publish topic (QoS > 0: {qos})", "STR_END", after_topic)
        a.edge(body, 0, 256, topic)
        a.token(body, T["STR_END"], after_topic)
    flags_of = {}
    for ptype in range(1, 16):  # type 0 is reserved
        s = flags_of[ptype] = a.state(f"flags of type {ptype}")
        if ptype == PUBLISH:
            for flags in range(16):
                if (flags >> 1) & 3 != 3:  # QoS 3 does not exist
                    a.token(s, FLAGS0 + flags, publish[bool(flags & 0x06)])
        else:  # the flags the type requires
            framed = connect if ptype == CONNECT else two_byte if TYPE_NAMES[ptype] in TWO_BYTE_BODIES else other
            a.token(s, FLAGS0 + REQUIRED_FLAGS[ptype], framed)
    for s in (start, between):
        for ptype, flags_state in flags_of.items():
            a.token(s, TYPE0 + ptype, flags_state)
    return a.build([between])
