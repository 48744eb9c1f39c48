"""The three worked examples of docs/plugins.md (a protocol, a generator, a validator) are real
plugins: each ``# example: KIND`` block is executed as a module and driven through the
``pytrafgen.testing`` helpers, the tokenizer, the rules and the CLI, as an outsider would."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pytrafgen.cli.main import build_app
from pytrafgen.dataset import TrafficDataset
from pytrafgen.generators import load_generator
from pytrafgen.testing import (
    TcpConversation,
    assert_build_roundtrip,
    assert_codec_roundtrip,
    assert_tokenized_roundtrip,
    check_rule,
    evaluation_set,
    field_records,
    registry_with,
    rule_context,
)
from pytrafgen.tokenizer.pipeline import tokenize_captures

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def example(kind: str) -> types.ModuleType:
    """The ``# example: kind`` code block of docs/plugins.md, executed as a module."""
    block = re.search(rf"```python\n# example: {kind}\n(.*?)```", DOC, re.S)
    assert block, f"docs/plugins.md has no '# example: {kind}' block"
    module = types.ModuleType(f"plugins_md_{kind}")
    exec(compile(block.group(1), f"docs/plugins.md ({kind})", "exec"), module.__dict__)
    return module


def ping_capture(pong_numbers: tuple[int, ...] = (7, 8)) -> Any:
    conv = TcpConversation(server=("10.0.0.2", 9999)).handshake()
    conv.send(0, b"PING 7\nPING 8\n").send(1, *(f"PONG {n}\n".encode() for n in pong_numbers))
    return conv.close().table()


def test_the_protocol_example_round_trips_tokenizes_and_its_rule_judges() -> None:
    ping = example("protocol")
    spec = ping.PingProtocol()
    assert assert_codec_roundtrip(spec, b"PING 42\n", 0) == [0, 6, 4, 12]
    assert spec.encode(b"PING 4", 0) is None  # not a whole line: stays bytes
    assert_build_roundtrip(spec, b"PONG 1\nPONG 22\n", 1)
    with registry_with(ping) as registry:
        encoded = assert_tokenized_roundtrip(ping_capture(), registry.protocols)
        assert encoded.app_packets["ping"] == 3  # the PING segment and both PONG segments
        (rule,) = spec.rules()
        applicable, violating = check_rule(rule, rule_context(ping_capture()))
        assert applicable.tolist() == [0] and violating.tolist() == []
        _, violating = check_rule(rule, rule_context(ping_capture(pong_numbers=(7, 9))))
        assert violating.tolist() == [0]  # PONG 9 answers no PING


def _dataset(tmp_path: Path, protocols: Any) -> Path:
    src = tmp_path / "captures"
    src.mkdir()
    rows = ["file,class,label"]
    for i, (cls, port) in enumerate([("ping", 9999), ("ping", 9999), ("web", 80), ("web", 80)] * 3):
        conv = TcpConversation(client=("10.0.0.1", 40000 + i), server=("10.0.0.2", port)).handshake()
        conv.send(0, b"PING 1\n" if cls == "ping" else b"GET / HTTP/1.0\r\n\r\n").send(1, b"PONG 1\n").close()
        conv.write(src / f"c{i}.pcap")
        rows.append(f"c{i}.pcap,{cls},{'benign' if cls == 'web' else 'malicious'}")
    (src / "manifest.csv").write_text("\n".join(rows) + "\n")
    tokenize_captures([src], src / "manifest.csv", tmp_path / "ds", protocols=protocols)
    return tmp_path / "ds"


def test_the_generator_example_trains_samples_saves_loads_and_generates_from_the_cli(tmp_path: Path) -> None:
    replay = example("generator")
    with registry_with(replay) as registry:
        ds = TrafficDataset(_dataset(tmp_path, registry.protocols), registry.protocols)
        gen = replay.ReplayGenerator()
        gen.fit(ds, {"seed": 0})
        records = gen.sample({"ping": 3, "web": 2}, seed=1)
        assert records.n_flows == 5
        assert np.bincount(records.flows["label"]).tolist() == [3, 2]
        gen.save(tmp_path / "ckpt")
        again = load_generator(tmp_path / "ckpt", registry=registry).sample({"ping": 3, "web": 2}, seed=1)
        assert np.array_equal(again.packets["payload_len"], records.packets["payload_len"])
        runner = CliRunner()
        trained = runner.invoke(build_app(), ["train", str(tmp_path / "ds"), "-g", "replay", "--out",
                                              str(tmp_path / "ck2"), "--quiet"])
        assert trained.exit_code == 0, trained.output
        generated = runner.invoke(build_app(), ["generate", str(tmp_path / "ck2"), "--class", "ping:4",
                                                "--out", str(tmp_path / "g.pcap"), "--json"])
        assert generated.exit_code == 0, generated.output
        assert json.loads(generated.output.strip().splitlines()[-1])["flows"] == {"ping": 4}
        refused = runner.invoke(build_app(), ["generate", str(tmp_path / "ck2"), "--class", "ping:1",
                                              "--out", str(tmp_path / "h.pcap"), "--temperature", "0.5"])
        assert refused.exit_code != 0 and "takes no sampling options (temperature)" in str(refused.exception)


def test_the_validator_example_evaluates_the_sets_a_validator_receives() -> None:
    flow_length = example("validator")
    validator = flow_length.FlowLengthValidator()
    real = evaluation_set(ping_capture(), "ping", name="real")
    short = TcpConversation(server=("10.0.0.2", 9999)).handshake().close().table()
    generated = evaluation_set(short, "ping")
    figures = validator.evaluate(real, generated, {"seed": 0})
    assert figures["real_mean"] == 9.0 and figures["generated_mean"] == 6.0
    assert figures["ratio"] == pytest.approx(6 / 9) and figures["settings"] == {"seed": 0}


def test_field_records_and_take_and_concat_flows() -> None:
    records = field_records(ping_capture(), "ping")
    assert records.n_flows == 1 and records.classes == ["ping"]
    twice = records.take_flows([0, 0])
    assert twice.n_flows == 2 and twice.n_packets == 2 * records.n_packets
    other = field_records(TcpConversation(server=("10.0.0.2", 80)).handshake().close().table(), "web")
    joined = type(records).concat([records, other])
    assert joined.classes == ["ping", "web"] and joined.flows["label"].tolist() == [0, 1]
    assert joined.n_packets == records.n_packets + other.n_packets
    assert joined.take_flows([1]).flows["server_port"].tolist() == [80]
    stored = joined.packets["payload_stored"] > 0
    got = [bytes(joined.blob[o:o + n]) for o, n in zip(joined.packets["payload_off"][stored],
                                                      joined.packets["payload_stored"][stored], strict=True)]
    assert got == [b"PING 7\nPING 8\n", b"PONG 7\n", b"PONG 8\n"]


def test_evaluation_set_with_a_training_split_shares_classes_and_protocols() -> None:
    with registry_with(example("protocol")) as registry:
        train = TcpConversation(server=("10.0.0.2", 80)).handshake().close().table()
        es = evaluation_set(ping_capture(), "ping", name="real", train=train)
        assert es.train is not None and es.classes == es.train.classes == ["ping"]
        assert es.labels.tolist() == [0] and es.train.labels.tolist() == [0]
        assert es.protocols is registry.protocols and "ping" in es.train.protocols
    unlabelled = evaluation_set(ping_capture(), None, protocols={})
    assert unlabelled.labels.tolist() == [-1] and unlabelled.protocols == {}
