"""Tests a plugin author keeps: the codec is exact, parse/build round-trip, the rule fires,
and pytrafgen's registry finds the plugin (with the fixtures of ``pytrafgen.testing``)."""

from __future__ import annotations

import pytest
import pytrafgen_example

from pytrafgen import plugins
from pytrafgen.testing import (
    TcpConversation,
    assert_build_roundtrip,
    assert_codec_roundtrip,
    check_rule,
    registry_with,
    rule_context,
)

SPEC = pytrafgen_example.KeyValueProtocol()


@pytest.mark.parametrize("payload", [b"temp=21.5\n", b"status=ok\nwind=3\n"])
def test_codec_is_exact(payload: bytes) -> None:
    tokens = assert_codec_roundtrip(SPEC, payload, 0)
    assert len(tokens) < len(payload) + 2  # known keys are one token


def test_parse_build_round_trip() -> None:
    assert_build_roundtrip(SPEC, b"temp=1\nhumidity=2\n", 0)


def test_registered_and_rule_fires() -> None:
    with registry_with(pytrafgen_example):
        assert plugins.get_protocol("example_kv") is not None
        assert plugins.get_validator("payload_size").name == "payload_size"
    conv = TcpConversation(server=("10.0.0.2", 7777)).handshake().send(0, b"temp=1\n", b"garbage\n").close()
    applicable, violating = check_rule(SPEC.rules()[0], rule_context(conv.table(), {"example_kv": SPEC}))
    assert len(applicable) == 2 and len(violating) == 1
