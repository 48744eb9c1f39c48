"""The built-in L3/L4 protocols: IPv4, IPv6, TCP, UDP and ICMP (ICMPv6 shares ICMP's layout).

Parsing, tokenizing and building these is the C++ core's job (``pytrafgen._core``); these
specs carry what the rest of the system reads from a protocol: the field table (the
vocabulary and the docs are generated from it) and the compliance rules. The rules are
written in ``pytrafgen.protocols.rules`` (``rules_for(name)``, over ``rules_l3l4``/``rules_tcp``)
and imported lazily, so the field tables are usable before and without the evaluation code.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from pytrafgen.protocol_spec import FieldSpec, ProtocolSpec, Rule

_RULES_MODULE = "pytrafgen.protocols.rules"


def _l3l4_rules(protocol_name: str) -> list[Rule]:
    try:
        module = importlib.import_module(_RULES_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _RULES_MODULE:  # the rules module exists but one of its imports is missing
            raise
        return []
    return list(module.rules_for(protocol_name))


class _CoreProtocol(ProtocolSpec):
    """A protocol whose bytes the C++ core handles; contributes fields and rules."""

    def rules(self) -> list[Rule]:
        return _l3l4_rules(self.name)


class IPv4(_CoreProtocol):
    name: ClassVar[str] = "ipv4"
    layer: ClassVar[str] = "l3"
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("version", 4, "value", "const", "always 4"),
        FieldSpec("ihl", 4, "length", "derived", "header length in 32-bit words, from the options"),
        FieldSpec("tos", 8, "value", "enum", "DSCP and ECN"),
        FieldSpec("total_length", 16, "length", "derived", "header plus payload bytes"),
        FieldSpec("ip_id", 16, "value", "uint", "identification"),
        FieldSpec("ip_flags", 3, "value", "enum", "reserved, DF, MF"),
        FieldSpec("frag_offset", 13, "value", "uint", "fragment offset in 8-byte units"),
        FieldSpec("ttl", 8, "value", "uint", "time to live"),
        FieldSpec("proto", 8, "value", "enum", "upper-layer protocol number"),
        FieldSpec("checksum", 16, "checksum", "derived", "header checksum"),
        FieldSpec("src", 32, "value", "role", "source address, as the flow role mapped by the address plan"),
        FieldSpec("dst", 32, "value", "role", "destination address, as the flow role"),
        FieldSpec("options", None, "value", "bytes", "IP options (0-40 bytes)"),
    )


class IPv6(_CoreProtocol):
    name: ClassVar[str] = "ipv6"
    layer: ClassVar[str] = "l3"
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("version", 4, "value", "const", "always 6"),
        FieldSpec("traffic_class", 8, "value", "enum", "DSCP and ECN"),
        FieldSpec("flow_label", 20, "value", "uint", "flow label"),
        FieldSpec("payload_length", 16, "length", "derived", "bytes after the fixed header"),
        FieldSpec("next_header", 8, "value", "enum", "first extension header or upper-layer protocol"),
        FieldSpec("hop_limit", 8, "value", "uint", "hop limit"),
        FieldSpec("src", 128, "value", "role", "source address, as the flow role"),
        FieldSpec("dst", 128, "value", "role", "destination address, as the flow role"),
        FieldSpec("extension_headers", None, "value", "bytes", "extension headers, kept as bytes"),
    )


class TCP(_CoreProtocol):
    name: ClassVar[str] = "tcp"
    layer: ClassVar[str] = "l4"
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("sport", 16, "value", "port", "source port (client port or server port by direction)"),
        FieldSpec("dport", 16, "value", "port", "destination port"),
        FieldSpec("seq", 32, "value", "relative", "sequence number relative to the sender's initial one"),
        FieldSpec("ack", 32, "value", "relative", "acknowledgement relative to the peer's initial sequence"),
        FieldSpec("data_offset", 4, "length", "derived", "header length in 32-bit words, from the options"),
        FieldSpec("flags", 9, "value", "enum", "NS CWR ECE URG ACK PSH RST SYN FIN"),
        FieldSpec("window", 16, "value", "uint", "receive window"),
        FieldSpec("checksum", 16, "checksum", "derived", "over pseudo-header, header and payload"),
        FieldSpec("urgent", 16, "value", "uint", "urgent pointer"),
        FieldSpec("options", None, "value", "bytes", "TCP options (0-40 bytes)"),
        FieldSpec("payload", None, "payload", "bytes", "segment data (app-protocol tokens where recognised)"),
    )


class UDP(_CoreProtocol):
    name: ClassVar[str] = "udp"
    layer: ClassVar[str] = "l4"
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("sport", 16, "value", "port", "source port"),
        FieldSpec("dport", 16, "value", "port", "destination port"),
        FieldSpec("length", 16, "length", "derived", "header plus payload bytes"),
        FieldSpec("checksum", 16, "checksum", "derived", "over pseudo-header, header and payload"),
        FieldSpec("payload", None, "payload", "bytes", "datagram data (app-protocol tokens where recognised)"),
    )


class ICMP(_CoreProtocol):
    name: ClassVar[str] = "icmp"
    layer: ClassVar[str] = "l4"
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("type", 8, "value", "enum", "message type (ICMP or ICMPv6 numbering by IP version)"),
        FieldSpec("code", 8, "value", "enum", "message code"),
        FieldSpec("checksum", 16, "checksum", "derived", "ICMP: over the message; ICMPv6: with pseudo-header"),
        FieldSpec("rest", 32, "value", "bytes", "the 4 bytes after the checksum (id/sequence, MTU, unused)"),
        FieldSpec("payload", None, "payload", "bytes", "message data (e.g. the quoted packet of an error)"),
    )


L3L4_PROTOCOLS: tuple[ProtocolSpec, ...] = (IPv4(), IPv6(), TCP(), UDP(), ICMP())
