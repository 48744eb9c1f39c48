"""The plugin manager and the registry.

Built-in plugins are registered first, exactly like third-party ones; then every entry point
of group ``pytrafgen`` is loaded in its own try/except, so one broken plugin is reported with
one warning and skipped, never fatal. ``PYTRAFGEN_PLUGINS`` (comma-separated allow-list of
entry-point names; empty string = load none) and ``PYTRAFGEN_BLOCK_PLUGINS`` (block-list)
choose which third-party plugins load.

A plugin whose hook raises is skipped as a whole for that hook: what it registered in that
call is dropped, so a half-registered plugin never leaves a partial entry behind.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

import pluggy

from pytrafgen import hookspecs
from pytrafgen.errors import PluginError

if TYPE_CHECKING:
    from pytrafgen.interfaces import Generator, ProtocolSpec, Tokenizer, Validator

ENTRY_POINT_GROUP = "pytrafgen"

# Modules of the package that register built-ins through the hooks (as a third party would).
BUILTIN_PLUGIN_MODULES: tuple[str, ...] = (
    "pytrafgen.protocols.builtin",
    "pytrafgen.generators.builtin",
    "pytrafgen.generators.markov",
    "pytrafgen.evaluate.validators",
)

# Where a name that is not registered usually comes from, so the error can say what to install.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "http": "pytrafgen-http",
    "mqtt": "pytrafgen-mqtt",
    "coap": "pytrafgen-coap",
    "gan": "pytrafgen-gan",
    "diffusion": "pytrafgen-diffusion",
}

# registry kind -> hook that fills it
_KIND_HOOKS: dict[str, str] = {
    "protocol": "register_protocols",
    "tokenizer": "register_tokenizers",
    "generator": "register_generators",
    "validator": "register_validators",
}


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be loaded (or one of its hooks raised) and was skipped."""


@dataclass
class LoadedPlugin:
    """One registered plugin: where it comes from, which hooks it implements, what it added."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": list(self.hooks),
            "registered": {k: list(v) for k, v in self.registered.items()},
        }


@dataclass
class Registry:
    """Everything the loaded plugins registered, by name."""

    protocols: dict[str, ProtocolSpec] = field(default_factory=dict)
    tokenizers: dict[str, type[Tokenizer]] = field(default_factory=dict)
    generators: dict[str, type[Generator]] = field(default_factory=dict)
    validators: dict[str, Validator] = field(default_factory=dict)
    plugins: list[LoadedPlugin] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # plugin name -> why

    def table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "protocol": self.protocols,
            "tokenizer": self.tokenizers,
            "generator": self.generators,
            "validator": self.validators,
        }
        return tables[kind]


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _warn(message: str) -> None:
    # warn_explicit with a pseudo file name prints one line (no source line underneath).
    warnings.warn_explicit(message, PluginLoadWarning, filename="pytrafgen", lineno=0, module="pytrafgen")


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("pytrafgen")
    pm.add_hookspecs(hookspecs)
    return pm


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(impl.name for impl in pm.get_hookcallers(plugin) or [])


def _own_version() -> str:
    try:
        return dist_version("pytrafgen")
    except PackageNotFoundError:
        return "dev"


def _selected_entry_points() -> list[EntryPoint]:
    allow = _env_names("PYTRAFGEN_PLUGINS")
    block = _env_names("PYTRAFGEN_BLOCK_PLUGINS") or set()
    chosen = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (allow is not None and ep.name not in allow) or ep.name in block:
            continue
        chosen.append(ep)
    return sorted(chosen, key=lambda ep: ep.name)


def _check_registered(kind: str, obj: Any) -> str:
    """The name of a registered object, after checking it is what the hook asks for."""
    from pytrafgen import interfaces

    expected: dict[str, tuple[type, bool]] = {  # kind -> (base, registered as a class?)
        "protocol": (interfaces.ProtocolSpec, False),
        "tokenizer": (interfaces.Tokenizer, True),
        "generator": (interfaces.Generator, True),
        "validator": (interfaces.Validator, False),
    }
    base, as_class = expected[kind]
    ok = (isinstance(obj, type) and issubclass(obj, base)) if as_class else isinstance(obj, base)
    if not ok:
        what = "a subclass" if as_class else "an instance"
        raise PluginError(f"a registered {kind} must be {what} of {base.__name__}, got {obj!r}")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"a registered {kind} has no 'name': {obj!r}")
    return name


def load_plugins(
    extra: Iterable[object] | None = None, *, include_entry_points: bool = True
) -> tuple[pluggy.PluginManager, Registry]:
    """Build a plugin manager with built-ins, entry-point plugins and ``extra`` (inline plugins,
    e.g. modules or classes with ``@hookimpl`` functions in a test), and collect what they
    register."""
    pm = _make_manager()
    registry = Registry()
    by_plugin_name: dict[str, LoadedPlugin] = {}

    def _add(plugin_name: str, entry: LoadedPlugin) -> None:
        registry.plugins.append(entry)
        by_plugin_name[plugin_name] = entry

    own_version = _own_version()
    for module_name in BUILTIN_PLUGIN_MODULES:
        try:  # a built-in that fails is a bug, but it still must not take the others down
            module = importlib.import_module(module_name)
            pm.register(module, name=module_name)
        except Exception as exc:
            registry.failed[module_name] = f"{type(exc).__name__}: {exc}"
            _warn(f"built-in plugin {module_name!r} failed to load and was skipped: {type(exc).__name__}: {exc}")
            continue
        _add(module_name, LoadedPlugin(module_name, "pytrafgen", own_version, True, _hook_names(pm, module)))

    for ep in _selected_entry_points() if include_entry_points else []:
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        dist_ver = dist.version if dist is not None else "?"
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must never break the tool
            registry.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            _warn(
                f"plugin {ep.name!r} ({dist_name} {dist_ver}) failed to load and was skipped: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        _add(ep.name, LoadedPlugin(ep.name, dist_name, dist_ver, False, _hook_names(pm, module)))

    for plugin in extra or []:
        name = pm.register(plugin) or repr(plugin)  # None only for names blocked in pluggy
        label = getattr(plugin, "__name__", name)
        _add(name, LoadedPlugin(label, "(inline)", "-", False, _hook_names(pm, plugin)))

    for kind, hook_name in _KIND_HOOKS.items():
        _call_each(pm, kind, hook_name, registry, by_plugin_name)
    return pm, registry


def _call_each(
    pm: pluggy.PluginManager,
    kind: str,
    hook_name: str,
    registry: Registry,
    by_plugin_name: dict[str, LoadedPlugin],
) -> None:
    """Call one hook plugin by plugin (built-ins first), so a plugin whose hook raises is
    skipped alone; a name already taken keeps its first owner."""
    table = registry.table(kind)
    owners: dict[str, str] = {}
    # get_hookimpls() is in registration order (pluggy's own calls run it backwards)
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin_name in registry.failed:
            continue
        pending: list[tuple[str, Any]] = []

        def register(obj: Any, _pending: list[tuple[str, Any]] = pending) -> None:
            _pending.append((_check_registered(kind, obj), obj))

        try:
            impl.function(register=register)
        except Exception as exc:
            registry.failed[impl.plugin_name] = f"{hook_name}: {type(exc).__name__}: {exc}"
            _warn(f"plugin {impl.plugin_name!r} raised in {hook_name} and was skipped: {type(exc).__name__}: {exc}")
            continue
        entry = by_plugin_name.get(impl.plugin_name)
        for name, obj in pending:
            if name in table:
                _warn(
                    f"plugin {impl.plugin_name!r} registers {kind} {name!r}, already registered by "
                    f"{owners.get(name, '?')!r}; keeping the first"
                )
                continue
            table[name] = obj
            owners[name] = impl.plugin_name
            if entry is not None:
                entry.registered.setdefault(kind, []).append(name)


def add_plugin_commands(app: Any) -> None:
    """Call every plugin's ``register_commands(app)`` one by one, so a plugin whose hook raises
    is skipped with a warning instead of stopping the CLI (``pm.hook.register_commands``
    would propagate the first exception)."""
    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(app=app)
        except Exception as exc:
            get_registry().failed[impl.plugin_name] = f"register_commands: {type(exc).__name__}: {exc}"
            _warn(f"plugin {impl.plugin_name!r} raised in register_commands and was skipped: "
                  f"{type(exc).__name__}: {exc}")


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


def swap_state(
    state: tuple[pluggy.PluginManager, Registry] | None,
) -> tuple[pluggy.PluginManager, Registry] | None:
    """Make ``state`` (from ``load_plugins``) the process-wide one; returns the previous one
    (``pytrafgen.testing.registry_with`` uses this to run code against inline plugins)."""
    global _STATE
    previous, _STATE = _STATE, state
    return previous


def _lookup(kind: str, table: dict[str, Any], name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        available = ", ".join(sorted(table)) or "none"
        hint = ""
        if name in KNOWN_DISTRIBUTIONS:
            hint = f" (it comes with the {KNOWN_DISTRIBUTIONS[name]} plugin, which is not installed or not loaded)"
        raise PluginError(f"{kind} {name!r} is not available{hint}; available: {available}") from None


def get_generator(name: str) -> type[Generator]:
    return _lookup("generator", get_registry().generators, name)


def get_validator(name: str) -> Validator:
    return _lookup("validator", get_registry().validators, name)


def get_protocol(name: str) -> ProtocolSpec:
    return _lookup("protocol", get_registry().protocols, name)


def get_tokenizer(name: str) -> type[Tokenizer]:
    return _lookup("tokenizer", get_registry().tokenizers, name)


def app_protocols() -> list[ProtocolSpec]:
    """Registered application protocols (layer ``"app"``), sorted by name: the order in which
    the vocabulary gives each its token range."""
    protocols = get_registry().protocols
    return [protocols[n] for n in sorted(protocols) if protocols[n].layer == "app"]


def protocol_for_flow(
    transport: str, server_port: int, client_payload: bytes, server_payload: bytes
) -> ProtocolSpec | None:
    """The first app protocol (by name) over ``transport`` that recognises a flow, or None."""
    for spec in app_protocols():
        if spec.transport == transport and spec.recognise(server_port, client_payload, server_payload):
            return spec
    return None
