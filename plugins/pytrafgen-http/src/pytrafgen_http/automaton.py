"""The HTTP token grammar of ``pytrafgen_http.tokens`` as an automaton over local ids, for
sampling (``ProtocolSpec.token_automaton``): whole messages, each start line, header and body
where the grammar puts them, closed by MSG_END. Every span it accepts is one
``decode_payload`` decodes as written (no slip to absorb, nothing filled in); every span the
encoder writes is one."""

from __future__ import annotations

from pytrafgen.app_grammar import AutomatonBuilder, TokenAutomaton
from pytrafgen_http.tokens import HEADER_IDS, METHOD_IDS, STATUS_IDS, VERSION_IDS, T


def _ids(table: dict[bytes, int]) -> list[int]:
    return sorted(table.values())


def _text(a: AutomatonBuilder, name: str, then: int) -> int:
    """A state reading bytes until END, then ``then``."""
    s = a.state(name)
    a.edge(s, 0, 256, s)
    a.token(s, T["END"], then)
    return s


def token_automaton() -> TokenAutomaton:
    a = AutomatonBuilder()
    start, between = a.state("message"), a.state("between messages")
    method, target = a.state("method"), a.state("target")
    request_version, response_version = a.state("request version"), a.state("response version")
    status, headers, separator, body = a.state("status"), a.state("headers"), a.state("separator"), a.state("body")
    reason_known, reason_other = a.state("reason (standard code)"), a.state("reason (other code)")
    for s in (start, between):  # one message or more
        a.token(s, T["REQUEST"], method)
        a.token(s, T["RESPONSE"], response_version)
    for tok in _ids(METHOD_IDS):
        a.token(method, tok, target)
    a.token(method, T["METHOD_OTHER"], _text(a, "method text", target))
    a.edge(target, 0, 256, target)
    a.token(target, T["END"], request_version)
    for version, then in ((request_version, headers), (response_version, status)):
        for tok in _ids(VERSION_IDS):
            a.token(version, tok, then)
        a.token(version, T["VERSION_OTHER"], _text(a, "version text", then))
    for tok in _ids(STATUS_IDS):
        a.token(status, tok, reason_known)
    digits = [a.state(f"status digit {k}") for k in range(3)]
    a.token(status, T["STATUS_OTHER"], digits[0])
    for k in range(3):
        a.edge(digits[k], 0, 256, digits[k + 1] if k < 2 else reason_other)
    reason_text = _text(a, "reason text", headers)
    for reason in (reason_known, reason_other):
        a.token(reason, T["REASON_NONE"], headers)
        a.edge(reason, 0, 256, reason_text)
        a.token(reason, T["END"], headers)
    a.token(reason_known, T["REASON_STANDARD"], headers)  # a standard phrase only for a known code
    for tok in _ids(HEADER_IDS):
        a.token(headers, tok, separator)
    a.token(headers, T["HEADER_OTHER"], _text(a, "header name", separator))
    a.token(headers, T["HEADERS_END"], body)
    value = _text(a, "header value", headers)
    a.token(separator, T["VALUE"], value)
    a.token(separator, T["VALUE_RAW"], value)
    a.token(separator, T["VALUE_LENGTH"], headers)
    a.edge(body, 0, 256, body)
    a.token(body, T["MSG_END"], between)
    return a.build([between])
