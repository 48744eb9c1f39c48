"""Plugin conflicts are explicit (issue 17): two plugins registering one name, two app protocols
claiming one port, a protocol whose tokens do not fit the vocabulary, a codec returning ids
outside its local vocabulary, a misspelt hook, rules and validators that raise. Each case is
an inline plugin registered in the test (no installed distribution needed)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from pytrafgen import hookimpl, plugins
from pytrafgen.cli.main import build_app
from pytrafgen.errors import DatasetError, PluginError
from pytrafgen.evaluate.compliance import run_rules
from pytrafgen.evaluate.evalset import evalset_from_tables
from pytrafgen.evaluate.report import evaluation_errors
from pytrafgen.flows import assemble_flows
from pytrafgen.interfaces import ProtocolSpec, Rule, Validator
from pytrafgen.plugins import PluginLoadWarning
from pytrafgen.testing import TcpConversation, registry_with
from pytrafgen.tokenizer import Vocabulary, encode_flows

PORT = 5555


class _LineProtocol(ProtocolSpec):
    """Bytes as tokens (ids 0..255) plus an end token, for one TCP port."""

    layer: ClassVar[str] = "app"
    transport: ClassVar[str] = "tcp"
    default_ports: ClassVar[tuple[int, ...]] = (PORT,)
    token_names: ClassVar[tuple[str, ...]] = (*(f"0x{b:02x}" for b in range(256)), "END")

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        return [*payload, 256]

    def decode(self, tokens: Sequence[int], direction: int) -> bytes:
        return bytes(t for t in tokens if t < 256)


class AlphaProtocol(_LineProtocol):
    name: ClassVar[str] = "alpha"


class BetaProtocol(_LineProtocol):
    name: ClassVar[str] = "beta"


class AlphaPlugin:
    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(AlphaProtocol())


class BetaPlugin:
    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(BetaProtocol())


class ImpostorAlpha(_LineProtocol):
    """Another plugin's protocol under the name "alpha", on another port."""

    name: ClassVar[str] = "alpha"
    default_ports: ClassVar[tuple[int, ...]] = (6666,)


class ImpostorPlugin:
    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(ImpostorAlpha())


def _conversation_table() -> Any:
    return (TcpConversation(server=("10.0.0.2", PORT)).handshake().send(0, b"hello\n").send(1, b"world\n")
            .close().table())


def _encode_app_packets(registry: plugins.Registry) -> dict[str, int]:
    table = _conversation_table()
    flows = assemble_flows(table)
    vocab = Vocabulary.for_protocols(registry.protocols.values(), ["c"])
    return encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, registry.protocols).app_packets


# -- one name, two plugins --------------------------------------------------------------------------
def test_a_duplicate_name_is_reported_naming_both_plugins_and_the_first_in_order_keeps_it() -> None:
    with pytest.warns(PluginLoadWarning, match=r"plugins 'AlphaPlugin' and 'ImpostorPlugin' both register "
                                               r"protocol 'alpha'; 'AlphaPlugin' keeps it"), \
            registry_with(AlphaPlugin, ImpostorPlugin) as registry:
        assert isinstance(registry.protocols["alpha"], AlphaProtocol)
        assert registry.owners["protocol"]["alpha"] == "AlphaPlugin"
        assert any("PYTRAFGEN_PLUGIN_ORDER=ImpostorPlugin,AlphaPlugin" in c for c in registry.conflicts)


def test_the_plugin_order_chooses_which_plugin_keeps_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(PluginLoadWarning, match="'ImpostorPlugin' keeps it"), \
            registry_with(AlphaPlugin, ImpostorPlugin, order=["ImpostorPlugin"]) as registry:
        assert isinstance(registry.protocols["alpha"], ImpostorAlpha)
    monkeypatch.setenv("PYTRAFGEN_PLUGIN_ORDER", "ImpostorPlugin")
    with pytest.warns(PluginLoadWarning, match="'ImpostorPlugin' keeps it"), \
            registry_with(AlphaPlugin, ImpostorPlugin) as registry:
        assert isinstance(registry.protocols["alpha"], ImpostorAlpha)
        assert next(p.name for p in registry.plugins) == "ImpostorPlugin"


# -- one port, two app protocols --------------------------------------------------------------------
def test_overlapping_port_claims_are_reported_and_the_first_in_order_tokenizes_the_flow() -> None:
    with pytest.warns(PluginLoadWarning, match=rf"protocols 'alpha' \(plugin 'AlphaPlugin'\) and 'beta' "
                                               rf"\(plugin 'BetaPlugin'\) both claim tcp port {PORT}; 'alpha' is asked first"), \
            registry_with(AlphaPlugin, BetaPlugin) as registry:
        counts = _encode_app_packets(registry)
    assert counts == {"alpha": 2}
    # not alphabetical accident: the plugin order decides
    with pytest.warns(PluginLoadWarning, match="'beta' is asked first"), \
            registry_with(AlphaPlugin, BetaPlugin, order=["BetaPlugin"]) as registry:
        counts = _encode_app_packets(registry)
    assert counts == {"beta": 2}


# -- tokens that do not fit, ids out of range ------------------------------------------------------
class HugeProtocol(_LineProtocol):
    name: ClassVar[str] = "huge"
    token_names: ClassVar[tuple[str, ...]] = tuple(f"t{i}" for i in range(60000))


def test_a_protocol_whose_tokens_overflow_the_vocabulary_is_named() -> None:
    with pytest.raises(DatasetError, match=r"app protocol 'huge' \(60000 local tokens\) does not fit the vocabulary"):
        Vocabulary.for_protocols([HugeProtocol()], ["c"])


class OutOfRangeProtocol(_LineProtocol):
    name: ClassVar[str] = "oor"

    def encode(self, payload: bytes, direction: int) -> list[int] | None:
        return [*payload, len(self.token_names)]  # one past the last local id


def test_out_of_range_local_token_ids_are_an_error_naming_the_protocol() -> None:
    table = _conversation_table()
    flows = assemble_flows(table)
    spec = OutOfRangeProtocol()
    vocab = Vocabulary.for_protocols([spec], ["c"])
    with pytest.raises(PluginError, match=r"protocol 'oor': encode\(\) returned local token id 257, outside its "
                                          r"257 token_names"):
        encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, {"oor": spec})


# -- a misspelt hook -------------------------------------------------------------------------------------
class MisspeltPlugin:
    @staticmethod
    @hookimpl
    def register_protocol(register: Callable[[ProtocolSpec], None]) -> None:  # the hook is register_protocols
        register(AlphaProtocol())


def test_a_misspelt_hook_is_an_error_and_the_plugin_is_skipped() -> None:
    with pytest.warns(PluginLoadWarning, match=r"inline plugin 'MisspeltPlugin' could not be registered.*"
                                               r"unknown hook 'register_protocol'"), \
            registry_with(MisspeltPlugin) as registry:
        assert "MisspeltPlugin" in registry.failed
        assert "alpha" not in registry.protocols
        assert all(p.name != "MisspeltPlugin" for p in registry.plugins)


# -- rules and validators that raise -----------------------------------------------------------
def _boom(ctx: Any) -> Any:
    raise RuntimeError("rule bug")


class RaisingRuleProtocol(AlphaProtocol):
    def rules(self) -> list[Rule]:
        return [Rule("ALPHA-001", "alpha", "flow", "always raises", _boom)]


class RaisingRulePlugin:
    @staticmethod
    @hookimpl
    def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
        register(RaisingRuleProtocol())


def test_a_raising_rule_is_listed_among_the_evaluation_errors() -> None:
    es = evalset_from_tables([(_conversation_table(), None)], "gen")
    with registry_with(RaisingRulePlugin) as registry:
        figures = run_rules(es, protocols=registry.protocols)
    assert figures["per_rule"]["ALPHA-001"]["error"] == "RuntimeError: rule bug"
    results = {"generated": {"gen": {"metrics": {"compliance": {"final": figures}}}}}
    assert evaluation_errors(results) == ["gen: rule ALPHA-001 (alpha, final) raised RuntimeError: rule bug"]


class PayloadBytes(Validator):
    name: ClassVar[str] = "payload_bytes"

    def evaluate(self, real: Any, generated: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"generated_payload_bytes": int(np.sum(generated.packets.payload_len)), "settings": dict(settings)}


class RaisingValidator(Validator):
    name: ClassVar[str] = "boom"

    def evaluate(self, real: Any, generated: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        raise ValueError("validator bug")


class ValidatorPlugin:
    @staticmethod
    @hookimpl
    def register_validators(register: Callable[[Validator], None]) -> None:
        register(PayloadBytes())
        register(RaisingValidator())


def _evaluate_args(tmp_path: Path) -> list[str]:
    pcap = TcpConversation(server=("10.0.0.2", PORT)).handshake().send(0, b"hello\n").close().write(tmp_path / "t.pcap")
    (tmp_path / "manifest.csv").write_text("file,class,label\nt.pcap,c,benign\n")
    gen = TcpConversation(server=("10.0.0.2", PORT)).handshake().send(0, b"hi\n").close().write(tmp_path / "g.pcap")
    Path(f"{gen}.flows.csv").write_text("flow_index,class\n0,c\n")
    return ["evaluate", "--real", str(pcap), "--train", str(pcap), "--labels", str(tmp_path / "manifest.csv"),
            "--generated", str(gen), "-V", "payload_bytes", "-V", "boom", "--no-tshark", "--no-plots"]


def test_validator_figures_and_errors_reach_the_console_report_md_and_strict_fails(tmp_path: Path) -> None:
    runner = CliRunner()
    with registry_with(ValidatorPlugin):
        app = build_app()
        ok = runner.invoke(app, [*_evaluate_args(tmp_path), "--out", str(tmp_path / "r1")])
        strict = runner.invoke(app, [*_evaluate_args(tmp_path), "--out", str(tmp_path / "r2"), "--strict"])
    assert ok.exit_code == 0, ok.output
    # the plugin validator's figure in the CLI table, its error as a warning
    assert "payload_bytes: generated payload bytes" in ok.output
    assert "warning: g: validator boom raised ValueError: validator bug" in ok.output
    md = (tmp_path / "r1" / "report.md").read_text()
    assert "| payload_bytes: generated payload bytes | 3.0000 |" in md
    assert "## Errors" in md and "- g: validator boom raised ValueError: validator bug" in md
    assert json.loads((tmp_path / "r1" / "report.json").read_text())["errors"] == [
        "g: validator boom raised ValueError: validator bug"]
    assert strict.exit_code != 0
    assert "--strict: 1 validator or rule error(s)" in str(strict.exception or "") + strict.output


# -- the template ships sources only ----------------------------------------------------------
def test_the_plugin_template_tracks_no_build_output() -> None:
    root = Path(__file__).resolve().parents[1]
    try:
        tracked = subprocess.run(["git", "ls-files", "plugins/pytrafgen-plugin-template"], cwd=root, text=True,
                                 capture_output=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"git ls-files unavailable ({exc})")
    assert tracked, "the template is tracked"
    assert not [f for f in tracked if "/build/" in f or ".egg-info" in f or "__pycache__" in f]
