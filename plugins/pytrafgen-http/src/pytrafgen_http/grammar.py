"""The HTTP/1.x token grammar as data (``pytrafgen.app_grammar.TextGrammar``), for the C++
tokenizer. It names the same local tokens as ``pytrafgen_http.tokens``, whose Python encoder
is the reference the C++ path is tested against token for token."""

from __future__ import annotations

from pytrafgen.app_grammar import TextGrammar
from pytrafgen_http.tokens import HEADER_IDS, METHOD_IDS, STATUS_IDS, STATUS_REASONS, VERSION_IDS, T

# roles of the C++ text family -> this plugin's structural token names
_ROLES = {
    "request": "REQUEST", "response": "RESPONSE", "end": "END", "headers_end": "HEADERS_END",
    "msg_end": "MSG_END", "method_other": "METHOD_OTHER", "version_other": "VERSION_OTHER",
    "status_other": "STATUS_OTHER", "reason_standard": "REASON_STANDARD", "reason_none": "REASON_NONE",
    "header_other": "HEADER_OTHER", "value": "VALUE", "value_raw": "VALUE_RAW", "value_length": "VALUE_LENGTH",
}

HTTP_GRAMMAR = TextGrammar(
    tokens={role: T[name] for role, name in _ROLES.items()},
    methods=METHOD_IDS,
    versions=VERSION_IDS,
    statuses=STATUS_IDS,
    standard_reasons={str(code).encode(): reason.encode() for code, reason in STATUS_REASONS.items()},
    header_names=HEADER_IDS,
    length_header=b"content-length",
    transfer_header=b"transfer-encoding",
    chunked=b"chunked",
    version_prefix=b"HTTP/",
    no_body_statuses=(b"204", b"304"),
    no_body_status_class=b"1",
)
