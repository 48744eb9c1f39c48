"""The expert rules of the built-in L3/L4 protocols, by protocol name: the tables of
``rules_l3l4`` (IPv4, IPv6, UDP, ICMP) and ``rules_tcp`` joined here, so neither table module
imports the other's importer (no import circle)."""

from __future__ import annotations

from pytrafgen.protocol_spec import Rule
from pytrafgen.protocols.rules_l3l4 import L3L4_RULES
from pytrafgen.protocols.rules_tcp import TCP_RULES


def rules_for(protocol_name: str) -> list[Rule]:
    """The expert rules of one built-in L3/L4 protocol ("ipv4", "ipv6", "tcp", "udp", "icmp")."""
    table = TCP_RULES if protocol_name == "tcp" else L3L4_RULES.get(protocol_name, [])
    return [Rule(rule_id, protocol_name, scope, text, check) for rule_id, scope, text, check in table]


__all__ = ["rules_for"]
