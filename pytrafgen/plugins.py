"""The plugin manager and the registry.

Built-in plugins are registered first, exactly like third-party ones; then every entry point
of group ``pytrafgen`` is loaded in its own try/except, so one broken plugin is reported with
one warning and skipped, never fatal. ``PYTRAFGEN_PLUGINS`` (comma-separated allow-list of
entry-point names; empty string = load none) and ``PYTRAFGEN_BLOCK_PLUGINS`` (block-list)
choose which third-party plugins load.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from pytrafgen import hookspecs
from pytrafgen.errors import PluginError

if TYPE_CHECKING:
    from pytrafgen.interfaces import Generator, ProtocolSpec, Tokenizer, Validator

# Modules of the package that register built-ins through the hooks (as a third party would).
BUILTIN_PLUGIN_MODULES: tuple[str, ...] = ()


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be loaded and was skipped."""


@dataclass
class LoadedPlugin:
    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Everything the loaded plugins registered, by name."""

    protocols: dict[str, ProtocolSpec] = field(default_factory=dict)
    tokenizers: dict[str, type[Tokenizer]] = field(default_factory=dict)
    generators: dict[str, type[Generator]] = field(default_factory=dict)
    validators: dict[str, Validator] = field(default_factory=dict)
    plugins: list[LoadedPlugin] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("pytrafgen")
    pm.add_hookspecs(hookspecs)
    return pm


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(impl.name for impl in pm.get_hookcallers(plugin) or [])


def load_plugins(extra: list[object] | None = None) -> tuple[pluggy.PluginManager, Registry]:
    """Build a plugin manager with built-ins, entry-point plugins and ``extra`` (inline plugins
    for tests), and collect what they register."""
    pm = _make_manager()
    registry = Registry()
    from importlib.metadata import version as dist_version

    own_version = dist_version("pytrafgen") if _is_installed("pytrafgen") else "dev"
    for module_name in BUILTIN_PLUGIN_MODULES:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        registry.plugins.append(
            LoadedPlugin(module_name, "pytrafgen", own_version, True, _hook_names(pm, module))
        )

    allow = _env_names("PYTRAFGEN_PLUGINS")
    block = _env_names("PYTRAFGEN_BLOCK_PLUGINS") or set()
    for ep in entry_points(group="pytrafgen"):
        if (allow is not None and ep.name not in allow) or ep.name in block:
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must never break the tool
            registry.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"pytrafgen: plugin {ep.name!r} failed to load and was skipped ({type(exc).__name__}: {exc})",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        dist = ep.dist
        registry.plugins.append(
            LoadedPlugin(
                ep.name,
                dist.metadata["Name"] if dist else "?",
                dist.version if dist else "?",
                False,
                _hook_names(pm, module),
            )
        )
    for plugin in extra or []:
        pm.register(plugin)
        registry.plugins.append(
            LoadedPlugin(getattr(plugin, "__name__", repr(plugin)), "(inline)", "-", False, _hook_names(pm, plugin))
        )

    def _adder(kind: str, table: dict[str, Any]):
        def register(obj: Any) -> None:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"a registered {kind} has no 'name'")
            table[name] = obj

        return register

    _call_each(pm, "register_protocols", _adder("protocol", registry.protocols), registry)
    _call_each(pm, "register_tokenizers", _adder("tokenizer", registry.tokenizers), registry)
    _call_each(pm, "register_generators", _adder("generator", registry.generators), registry)
    _call_each(pm, "register_validators", _adder("validator", registry.validators), registry)
    return pm, registry


def _call_each(pm: pluggy.PluginManager, hook_name: str, register: Any, registry: Registry) -> None:
    """Call one hook plugin by plugin, so a plugin whose hook raises is skipped alone."""
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            impl.function(register=register)
        except Exception as exc:
            registry.failed[impl.plugin_name] = f"{hook_name}: {type(exc).__name__}: {exc}"
            warnings.warn(
                f"pytrafgen: plugin {impl.plugin_name!r} raised in {hook_name} and was skipped ({exc})",
                PluginLoadWarning,
                stacklevel=2,
            )


def _is_installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


_STATE: tuple[pluggy.PluginManager, Registry] | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _STATE
    if _STATE is None:
        _STATE = load_plugins()
    return _STATE[1]


def get_plugin_manager() -> pluggy.PluginManager:
    get_registry()
    assert _STATE is not None
    return _STATE[0]


def reset_plugins() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in-process)."""
    global _STATE
    _STATE = None


def _lookup(kind: str, table: dict[str, Any], name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        available = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {kind} {name!r}; available: {available}") from None


def get_generator(name: str) -> type[Generator]:
    return _lookup("generator", get_registry().generators, name)


def get_validator(name: str) -> Validator:
    return _lookup("validator", get_registry().validators, name)


def get_protocol(name: str) -> ProtocolSpec:
    return _lookup("protocol", get_registry().protocols, name)


def get_tokenizer(name: str) -> type[Tokenizer]:
    return _lookup("tokenizer", get_registry().tokenizers, name)
