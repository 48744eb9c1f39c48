"""The plugin layer: hooks, the manager and registry, built-ins registered like third-party
plugins, broken and blocked plugins, `pytrafgen plugins`, installing the plugin packages the
way a user does, and a third-party protocol defined inline going through the tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from pytrafgen import hookimpl, plugins
from pytrafgen.errors import PluginError, TokenError
from pytrafgen.interfaces import FieldSpec, ProtocolSpec, Validator
from pytrafgen.testing import TcpConversation, assert_build_roundtrip, assert_codec_roundtrip, registry_with

REPO = Path(__file__).resolve().parents[1]
PYTRAFGEN = Path(sys.executable).with_name("pytrafgen")


# -- an inline third-party protocol: "key=value\n" lines over TCP port 7777 ---------------------
class KeyValueProtocol(ProtocolSpec):
    name: ClassVar[str] = "kv"
    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "tcp"
    default_ports: ClassVar[tuple[int, ...]] = (7777,)
    fields: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("key", None, "value", "enum", "known keys as tokens, others as text"),
        FieldSpec("value", None, "value", "text", "the value"),
    )
    KEYS = ("temp", "humidity")
    token_names: ClassVar[tuple[str, ...]] = (*(f"0x{b:02x}" for b in range(256)), "KEY_END", "LINE_END",
                                              *(f"KEY:{k}" for k in KEYS))

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        if not payload.endswith(b"\n"):
            return None
        out: list[int] = []
        for line in payload[:-1].split(b"\n"):
            key, eq, value = line.partition(b"=")
            if not eq:
                return None
            if key.decode(errors="replace") in self.KEYS:
                out.append(self.token_names.index(f"KEY:{key.decode()}"))
            else:
                out += [*key, 256]
            out += [*value, 257]
        return out

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        out = bytearray()
        for t in tokens:
            if t == 257:
                out += b"\n"
            elif t == 256 or t > 257:
                out += (self.token_names[t][4:].encode() if t > 257 else b"") + b"="
            elif t < 256:
                out.append(t)
            else:
                raise TokenError(f"kv: bad token {t}")
        return bytes(out)

    def parse(self, stream: bytes, direction: int) -> list[dict[str, Any]]:
        lines = stream.split(b"\n")[:-1]
        return [dict(zip(("key", "value"), line.decode().split("=", 1), strict=True)) for line in lines]

    def build(self, message: Mapping[str, Any], direction: int) -> bytes:
        return f"{message['key']}={message['value']}\n".encode()


class CountingValidator(Validator):
    name: ClassVar[str] = "packet_count"

    def evaluate(self, real: Any, generated: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"generated_packets": len(generated), "settings": dict(settings)}


class KeyValuePlugin:
    """Registers two things through two hooks, as a third-party package would."""

    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(KeyValueProtocol())

    @staticmethod
    @hookimpl
    def register_validators(register: Callable[[Validator], None]) -> None:
        register(CountingValidator())


# -- registry ----------------------------------------------------------------------------------
def test_builtin_protocols_register_through_the_hook() -> None:
    with registry_with() as registry:
        builtin = next(p for p in registry.plugins if p.name == "pytrafgen.protocols.builtin")
        assert builtin.builtin and builtin.hooks == ["register_protocols"]
        assert builtin.registered["protocol"] == ["ipv4", "ipv6", "tcp", "udp", "icmp"]
        tcp = plugins.get_protocol("tcp")
        assert tcp.layer == "l4" and {f.name for f in tcp.fields} >= {"seq", "ack", "flags", "checksum"}
        assert {f.role for f in tcp.fields if f.name in ("checksum", "data_offset")} == {"checksum", "length"}
        rules = tcp.rules()  # from pytrafgen.protocols.rules_l3l4 (the evaluation suite)
        assert rules and all(r.protocol == "tcp" and r.id.startswith("TCP-") for r in rules)


def test_unknown_names_say_what_is_available() -> None:
    with registry_with():
        with pytest.raises(PluginError, match=r"protocol 'smtp' is not available; available: icmp, ipv4"):
            plugins.get_protocol("smtp")
        with pytest.raises(PluginError, match=r"'mqtt' is not available \(it comes with the pytrafgen-mqtt"):
            plugins.get_protocol("mqtt")
        with pytest.raises(PluginError, match=r"generator 'gan' is not available \(it comes with the pytrafgen-gan"):
            plugins.get_generator("gan")


def test_inline_plugin_registers_several_kinds() -> None:
    with registry_with(KeyValuePlugin) as registry:
        entry = next(p for p in registry.plugins if p.distribution == "(inline)")
        assert entry.hooks == ["register_protocols", "register_validators"]
        assert entry.registered == {"protocol": ["kv"], "validator": ["packet_count"]}
        assert isinstance(plugins.get_protocol("kv"), KeyValueProtocol)
        assert plugins.get_validator("packet_count").evaluate(None, [1, 2], {"k": 1})["generated_packets"] == 2
        assert [p.name for p in plugins.app_protocols()] == ["kv"]
    with pytest.raises(PluginError), registry_with():  # gone once the block ends
        plugins.get_protocol("kv")


class RaisingPlugin:
    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(KeyValueProtocol())  # registered, then the hook fails: must be dropped
        raise RuntimeError("boom")


class WrongTypePlugin:
    @staticmethod
    @hookimpl
    def register_generators(register: Callable[[Any], None]) -> None:
        register(KeyValueProtocol)  # a protocol class where a Generator subclass belongs


def _plugin_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, plugins.PluginLoadWarning)]


@pytest.mark.parametrize(("plugin", "message"), [(RaisingPlugin, "RuntimeError: boom"),
                                                 (WrongTypePlugin, "must be a subclass of Generator")])
def test_failing_plugin_is_skipped_with_one_warning(plugin: object, message: str) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, registry = plugins.load_plugins([plugin, KeyValuePlugin], include_entry_points=False)
    (text,) = _plugin_warnings(record)
    assert message in text and "skipped" in text
    assert list(registry.failed) == [plugin.__name__]  # type: ignore[attr-defined]
    assert registry.protocols["kv"].__class__ is KeyValueProtocol  # the healthy plugin still registered
    assert "tcp" in registry.protocols


def test_duplicate_name_keeps_the_first_owner() -> None:
    class Shadow:
        @staticmethod
        @hookimpl
        def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
            register(KeyValueProtocol())

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, registry = plugins.load_plugins([KeyValuePlugin, Shadow], include_entry_points=False)
    (text,) = _plugin_warnings(record)
    assert "both register protocol 'kv'; 'KeyValuePlugin' keeps it" in text
    owners = {p.name: p.registered.get("protocol") for p in registry.plugins}
    assert owners["KeyValuePlugin"] == ["kv"] and owners["Shadow"] is None


def test_allow_and_block_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytrafgen_http")
    pytest.importorskip("pytrafgen_mqtt")
    monkeypatch.setenv("PYTRAFGEN_BLOCK_PLUGINS", "mqtt")
    assert {"http"} <= set(plugins.load_plugins()[1].protocols) and "mqtt" not in plugins.load_plugins()[1].protocols
    monkeypatch.delenv("PYTRAFGEN_BLOCK_PLUGINS")
    monkeypatch.setenv("PYTRAFGEN_PLUGINS", "mqtt")
    protocols = plugins.load_plugins()[1].protocols
    assert "mqtt" in protocols and "http" not in protocols and "tcp" in protocols  # built-ins always
    monkeypatch.setenv("PYTRAFGEN_PLUGINS", "")
    assert not any(p.distribution.startswith("pytrafgen-") for p in plugins.load_plugins()[1].plugins)


def _throwaway_distribution(root: Path, body: str) -> Path:
    """A module and a dist-info with a ``pytrafgen`` entry point under ``root`` (on sys.path)."""
    (root / "pytrafgen_broken_example.py").write_text(body)
    info = root / "pytrafgen_broken_example-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pytrafgen-broken-example\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[pytrafgen]\nbroken = pytrafgen_broken_example\n")
    return root


def test_plugin_that_raises_on_import_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(_throwaway_distribution(tmp_path, "raise ImportError('missing libfoo')\n")))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, registry = plugins.load_plugins()
    (text,) = _plugin_warnings(record)
    assert "'broken' (pytrafgen-broken-example 0.0.1) failed to load" in text and "missing libfoo" in text
    assert registry.failed == {"broken": "ImportError: missing libfoo"}
    assert "tcp" in registry.protocols


def test_plugins_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    from pytrafgen.cli.plugins import plugins_command

    with registry_with(KeyValuePlugin):
        plugins_command(json_output=True)
    report = json.loads(capsys.readouterr().out)
    inline = next(p for p in report["plugins"] if p["name"] == "KeyValuePlugin")
    assert inline["registered"] == {"protocol": ["kv"], "validator": ["packet_count"]}
    assert report["protocols"]["kv"] == {"layer": "app", "transport": "tcp", "fields": 2, "tokens": 260, "rules": 0}
    assert report["protocols"]["tcp"]["rules"] > 0 and report["failed"] == {}


# -- a third-party protocol through the real tokenizer ------------------------------------------
def test_inline_third_party_protocol_is_tokenized_and_built() -> None:
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer.decode import decode
    from pytrafgen.tokenizer.encode import encode_flows
    from pytrafgen.tokenizer.vocab import Vocabulary

    messages = [b"temp=21.5\n", b"humidity=40\nwind=3\n"]
    conv = TcpConversation(server=("10.0.0.2", 7777)).handshake().send(0, *messages).send(1, b"ok=1\n").close()
    table = conv.table()
    spec = KeyValueProtocol()
    assert_codec_roundtrip(spec, messages[1], 0)
    assert_build_roundtrip(spec, b"".join(messages), 0)
    with registry_with(KeyValuePlugin):
        vocab = Vocabulary.for_protocols(plugins.get_registry().protocols.values(), ["sensors"])
        assert vocab.app_protocols[0].name == "kv"
        flows = assemble_flows(table)
        protocols = plugins.get_registry().protocols
        encoded = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols)
        assert encoded.app_packets == {"kv": 3}
        begin = vocab.app_begin("kv")
        assert begin + 1 + spec.token_names.index("KEY:temp") in set(encoded.tokens.tolist())
        records = decode(encoded.tokens, encoded.offsets, vocab, protocols=protocols)
    stored = records.packets["payload_stored"]
    offs = records.packets["payload_off"]
    payloads = [bytes(records.blob[o : o + n]) for o, n in zip(offs, stored, strict=True) if n]
    assert payloads == [*messages, b"ok=1\n"]


# -- the plugin packages installed the way a user installs them --------------------------------
def _mqtt_capture(folder: Path) -> Path:
    from pytrafgen_mqtt.packets import build_packet

    connect = build_packet({"type_name": "CONNECT", "protocol_name": "MQTT", "protocol_level": 4,
                            "connect_flags": 2, "keepalive": 60, "client_id": "probe"})
    publish = build_packet({"type_name": "PUBLISH", "qos": 0, "topic": "lab/t", "payload": b"1"})
    conv = TcpConversation(server=("10.0.0.2", 1883)).handshake()
    conv.send(0, connect).send(1, bytes([0x20, 2, 0, 0])).send(0, publish, bytes([0xE0, 0])).close()
    folder.mkdir()
    conv.write(folder / "session.pcap")
    (folder / "labels.csv").write_text("file,class,label\nsession.pcap,benign_mqtt,benign\n")
    return folder


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_installed_plugin_is_discovered_and_used_by_tokenize(tmp_path: Path) -> None:
    pytest.importorskip("pytrafgen_mqtt")
    import shutil

    # Build from a copy so setuptools' build/ folder never lands in the checkout.
    source = shutil.copytree(REPO / "plugins" / "pytrafgen-mqtt", tmp_path / "pytrafgen-mqtt",
                             ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
           "--target", str(target), str(source)]
    assert subprocess.run(pip, capture_output=True, text=True, timeout=300).returncode == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    _throwaway_distribution(broken, "raise RuntimeError('plugin bug')\n")
    env = {"PYTHONPATH": f"{target}{os.pathsep}{broken}"}
    listed = _run([str(PYTRAFGEN), "plugins", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    mqtt = next(p for p in report["plugins"] if p["name"] == "mqtt")
    assert (mqtt["distribution"], mqtt["registered"]) == ("pytrafgen-mqtt", {"protocol": ["mqtt"]})
    assert report["failed"] == {"broken": "RuntimeError: plugin bug"}
    warning_lines = [line for line in listed.stderr.splitlines() if "PluginLoadWarning" in line]
    assert len(warning_lines) == 1 and "'broken'" in warning_lines[0]
    where = _run([sys.executable, "-c", "import pytrafgen_mqtt; print(pytrafgen_mqtt.__file__)"], env)
    assert where.stdout.startswith(str(target))  # the copy pip just installed, not the checkout

    data = _mqtt_capture(tmp_path / "data")
    done = _run([str(PYTRAFGEN), "tokenize", str(data), "--labels", str(data / "labels.csv"),
                 "--out", str(tmp_path / "ds"), "--json", "-q", "-j", "1"], env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert "mqtt" in manifest["settings"]["app_protocols"]
    assert manifest["sources"][0]["app_packets"]["mqtt"] == 4  # CONNECT, CONNACK, PUBLISH, DISCONNECT


def test_blocked_plugin_core_still_tokenizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytrafgen_mqtt")
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    data = _mqtt_capture(tmp_path / "data")
    monkeypatch.setenv("PYTRAFGEN_BLOCK_PLUGINS", "mqtt")
    plugins.reset_plugins()
    try:
        with pytest.raises(PluginError, match="pytrafgen-mqtt"):
            plugins.get_protocol("mqtt")
        manifest = tokenize_captures([data], data / "labels.csv", tmp_path / "ds", workers=1)
    finally:
        plugins.reset_plugins()
    assert "mqtt" not in manifest["settings"]["app_protocols"]
    assert "mqtt" not in manifest["sources"][0]["app_packets"]
    assert manifest["sources"][0]["encoded_packets"] == 10  # every packet, payloads as bytes


def test_plugin_template_works_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    template = REPO / "plugins" / "pytrafgen-plugin-template"
    pyproject = (template / "pyproject.toml").read_text()
    assert '[project.entry-points.pytrafgen]\nexample = "pytrafgen_example"' in pyproject
    monkeypatch.syspath_prepend(str(template / "src"))
    example = importlib.import_module("pytrafgen_example")
    with registry_with(example) as registry:
        entry = next(p for p in registry.plugins if p.distribution == "(inline)")
        assert entry.registered == {"protocol": ["example_kv"], "validator": ["payload_size"]}
        spec = plugins.get_protocol("example_kv")
    tokens = assert_codec_roundtrip(spec, b"temp=21.5\nwind=3\n", 0)
    assert spec.token_names[tokens[0]] == "KEY:temp"
    assert_build_roundtrip(spec, b"status=ok\n", 1)


def test_register_commands_hook_adds_commands_and_survives_a_broken_one() -> None:
    import typer
    from typer.testing import CliRunner

    class Commands:
        @staticmethod
        @hookimpl
        def register_commands(app: typer.Typer) -> None:
            @app.command("hello-plugin")
            def hello() -> None:
                typer.echo("hello from a plugin")

    class BrokenCommands:
        @staticmethod
        @hookimpl
        def register_commands(app: typer.Typer) -> None:
            raise ValueError("bad command")

    app = typer.Typer()
    app.command("noop")(lambda: None)
    with warnings.catch_warnings(record=True) as record, registry_with(Commands, BrokenCommands) as registry:
        warnings.simplefilter("always")
        plugins.add_plugin_commands(app)
    assert "ValueError: bad command" in _plugin_warnings(record)[0]
    assert registry.failed == {"BrokenCommands": "register_commands: ValueError: bad command"}
    assert CliRunner().invoke(app, ["hello-plugin"]).output == "hello from a plugin\n"
