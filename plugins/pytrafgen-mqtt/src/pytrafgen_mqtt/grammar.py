"""The MQTT token grammar as data (``pytrafgen.app_grammar.BinaryGrammar``), for the C++
tokenizer: the fixed header and Remaining Length of every packet, CONNECT and PUBLISH bodies as
field lists (the other types' bodies are RAW bytes, as in ``pytrafgen_mqtt.tokens``, whose
Python encoder is the reference the C++ path is tested against token for token)."""

from __future__ import annotations

from pytrafgen.app_grammar import BinaryGrammar, Field, PacketType
from pytrafgen_mqtt.packets import REQUIRED_FLAGS, TYPE_NAMES, TYPE_NUMBER
from pytrafgen_mqtt.tokens import FLAGS0, LEVELS, PNAMES, TWO_BYTE_BODIES, TYPE0, T

LEVEL, FLAGS = 0, 1  # variable slots: the CONNECT protocol level and connect flags

_text = Field("str16", end=T["STR_END"])
_props_if_v5 = Field("if_eq", var=LEVEL, n=5, then=(Field("varbytes", end=T["PROPS_END"]),))

CONNECT_BODY = (
    Field("enum_str16", table=PNAMES, other=T["PNAME_OTHER"], end=T["STR_END"]),  # protocol name
    Field("enum_u8", var=LEVEL, table=LEVELS, other=T["LEVEL_OTHER"]),  # protocol level
    Field("u8", var=FLAGS),  # connect flags
    Field("bytes", n=2),  # keep alive
    _props_if_v5,
    _text,  # client id
    Field("if_any", var=FLAGS, n=0x04, then=(_props_if_v5, _text, _text)),  # will topic, message
    Field("if_any", var=FLAGS, n=0x80, then=(_text,)),  # username
    Field("if_any", var=FLAGS, n=0x40, then=(_text,)),  # password
)
PUBLISH_BODY = (
    _text,  # topic
    Field("if_header_any", n=0x06, then=(Field("bytes", n=2),)),  # packet id when QoS > 0
    Field("rest"),  # (5.0 properties and) the application message
)


def _packet_type(t: int) -> PacketType:
    name = TYPE_NAMES[t]
    if name == "RESERVED":
        return PacketType(allowed=False)
    body = CONNECT_BODY if name == "CONNECT" else PUBLISH_BODY if name == "PUBLISH" else None
    min_raw = 2 if name in TWO_BYTE_BODIES else 0
    if t == TYPE_NUMBER["PUBLISH"]:  # QoS 3 does not exist
        return PacketType(flag_mask=0x06, flag_value=0x06, flag_differ=True, min_raw_body=min_raw, body=body)
    return PacketType(flag_mask=0x0F, flag_value=REQUIRED_FLAGS[t], min_raw_body=min_raw, body=body)


MQTT_GRAMMAR = BinaryGrammar(
    tokens={"type0": TYPE0, "flags0": FLAGS0, "rl_derived": T["RL_DERIVED"], "rl_explicit": T["RL_EXPLICIT"],
            "raw": T["RAW"], "packet_end": T["PKT_END"]},
    types=tuple(_packet_type(t) for t in range(16)),
)
