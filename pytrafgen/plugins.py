"""The plugin manager and the registry.

Built-in plugins, every entry point of group ``pytrafgen`` and inline plugins are each loaded
in their own try/except, so one broken plugin is reported with one warning and skipped, never
fatal. ``PYTRAFGEN_PLUGINS`` (comma-separated allow-list of entry-point names; empty string =
load none) and ``PYTRAFGEN_BLOCK_PLUGINS`` (block-list) choose which third-party plugins load.
A plugin implementing a hook that does not exist (a misspelt ``register_protocol``) fails
pluggy's ``check_pending`` and is skipped the same way.

**Plugin order** decides every conflict: plugins are registered and their hooks called in this
order, the first to register a name keeps it, and app protocols are asked to ``recognise`` a
flow in this order. By default: built-ins, then entry points by name, then inline plugins;
``PYTRAFGEN_PLUGIN_ORDER`` (comma-separated plugin names: entry-point names, built-in module
names or inline plugin names) puts the named plugins first, in the order given
(``load_plugins(order=...)`` does the same from Python). Every conflict is reported with one
``PluginLoadWarning`` naming both plugins, and listed by ``pytrafgen plugins``: a name two
plugins register, and a port two app protocols of one transport both claim (``default_ports``).

A plugin whose hook raises is skipped as a whole for that hook: what it registered in that
call is dropped, so a half-registered plugin never leaves a partial entry behind.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

import pluggy

from pytrafgen import hookspecs
from pytrafgen.errors import PluginError

if TYPE_CHECKING:
    from pytrafgen.interfaces import Generator, ProtocolSpec, Validator

ENTRY_POINT_GROUP = "pytrafgen"
ORDER_ENV = "PYTRAFGEN_PLUGIN_ORDER"

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

    protocols: dict[str, ProtocolSpec] = field(default_factory=dict)  # in plugin order
    generators: dict[str, type[Generator]] = field(default_factory=dict)
    validators: dict[str, Validator] = field(default_factory=dict)
    plugins: list[LoadedPlugin] = field(default_factory=list)  # in plugin order
    failed: dict[str, str] = field(default_factory=dict)  # plugin name -> why
    owners: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> registered name -> plugin
    conflicts: list[str] = field(default_factory=list)  # every conflict, as warned

    def table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "protocol": self.protocols,
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


def plugin_order(order: Sequence[str] | None = None) -> list[str]:
    """The plugin names to put first (``order``, else ``PYTRAFGEN_PLUGIN_ORDER``), in order."""
    if order is None:
        order = [n.strip() for n in os.environ.get(ORDER_ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys(order))


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


@dataclass
class _Candidate:
    """A plugin found but not yet registered (registration follows the plugin order)."""

    name: str
    plugin: object
    entry: LoadedPlugin
    label: str  # how warnings name it: "'http' (pytrafgen-http 0.1.0)"


def load_plugins(
    extra: Iterable[object] | None = None, *, include_entry_points: bool = True,
    order: Sequence[str] | None = None,
) -> tuple[pluggy.PluginManager, Registry]:
    """Build a plugin manager with built-ins, entry-point plugins and ``extra`` (inline plugins,
    e.g. modules or classes with ``@hookimpl`` functions in a test), and collect what they
    register. ``order``: plugin names to put first (default: ``PYTRAFGEN_PLUGIN_ORDER``)."""
    pm = _make_manager()
    registry = Registry()
    found: list[_Candidate] = []

    def _failed(name: str, label: str, what: str, exc: Exception) -> None:
        registry.failed[name] = f"{type(exc).__name__}: {exc}"
        _warn(f"{label} {what} and was skipped: {type(exc).__name__}: {exc}")

    own_version = _own_version()
    for module_name in BUILTIN_PLUGIN_MODULES:
        try:  # a built-in that fails is a bug, but it still must not take the others down
            module = importlib.import_module(module_name)
        except Exception as exc:
            _failed(module_name, f"built-in plugin {module_name!r}", "failed to load", exc)
            continue
        found.append(_Candidate(module_name, module, LoadedPlugin(module_name, "pytrafgen", own_version, True),
                                f"built-in plugin {module_name!r}"))

    for ep in _selected_entry_points() if include_entry_points else []:
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        dist_ver = dist.version if dist is not None else "?"
        label = f"plugin {ep.name!r} ({dist_name} {dist_ver})"
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must never break the tool
            _failed(ep.name, label, "failed to load", exc)
            continue
        found.append(_Candidate(ep.name, module, LoadedPlugin(ep.name, dist_name, dist_ver, False), label))

    for plugin in extra or []:
        name = pm.get_canonical_name(plugin)
        found.append(_Candidate(name, plugin, LoadedPlugin(getattr(plugin, "__name__", name), "(inline)", "-", False),
                                f"inline plugin {name!r}"))

    first = plugin_order(order)
    rank = {name: i for i, name in enumerate(first)}
    found.sort(key=lambda c: rank.get(c.name, len(rank)))  # stable: the default order otherwise
    by_plugin_name: dict[str, LoadedPlugin] = {}
    for cand in found:
        try:
            pm.register(cand.plugin, name=cand.name)
            pm.check_pending()  # a hook no spec declares (a misspelt name) is an error
        except Exception as exc:
            if pm.is_registered(cand.plugin):
                pm.unregister(cand.plugin)
            _failed(cand.name, cand.label, "could not be registered", exc)
            continue
        cand.entry.hooks = _hook_names(pm, cand.plugin)
        registry.plugins.append(cand.entry)
        by_plugin_name[cand.name] = cand.entry

    for kind, hook_name in _KIND_HOOKS.items():
        _call_each(pm, kind, hook_name, registry, by_plugin_name)
    _report_port_claims(registry)
    return pm, registry


def _conflict(registry: Registry, message: str) -> None:
    registry.conflicts.append(message)
    _warn(message)


def _report_port_claims(registry: Registry) -> None:
    """Warn about ports two app protocols of one transport both claim (``default_ports``):
    the first in plugin order is asked first, so it takes the flows both recognise."""
    owners = registry.owners.get("protocol", {})
    claimed: dict[tuple[str, int], str] = {}
    for name, spec in registry.protocols.items():
        if spec.layer != "app":
            continue
        for port in spec.default_ports:
            key = (spec.transport, int(port))
            if key not in claimed:
                claimed[key] = name
                continue
            first = claimed[key]
            _conflict(registry, (
                f"protocols {first!r} (plugin {owners.get(first, '?')!r}) and {name!r} (plugin "
                f"{owners.get(name, '?')!r}) both claim {spec.transport or 'any'} port {port}; {first!r} is asked "
                f"first (plugin order), so it takes the flows both recognise; set {ORDER_ENV} to change the order"))


def _call_each(
    pm: pluggy.PluginManager,
    kind: str,
    hook_name: str,
    registry: Registry,
    by_plugin_name: dict[str, LoadedPlugin],
) -> None:
    """Call one hook plugin by plugin (in plugin order), so a plugin whose hook raises is
    skipped alone; a name already taken keeps its first owner (the conflict is warned)."""
    table = registry.table(kind)
    owners = registry.owners.setdefault(kind, {})
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
                owner = owners.get(name, "?")
                _conflict(registry, (
                    f"plugins {owner!r} and {impl.plugin_name!r} both register {kind} {name!r}; {owner!r} keeps it "
                    f"(the first in plugin order); set {ORDER_ENV}={impl.plugin_name},{owner} to choose "
                    f"{impl.plugin_name!r}"))
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


def lookup(kind: str, table: Mapping[str, Any], name: str) -> Any:
    """``table[name]``, or a PluginError naming what is available and what to install."""
    try:
        return table[name]
    except KeyError:
        available = ", ".join(sorted(table)) or "none"
        hint = ""
        if name in KNOWN_DISTRIBUTIONS:
            hint = f" (it comes with the {KNOWN_DISTRIBUTIONS[name]} plugin, which is not installed or not loaded)"
        raise PluginError(f"{kind} {name!r} is not available{hint}; available: {available}") from None


def get_generator(name: str) -> type[Generator]:
    return lookup("generator", get_registry().generators, name)


def get_validator(name: str) -> Validator:
    return lookup("validator", get_registry().validators, name)


def get_protocol(name: str) -> ProtocolSpec:
    return lookup("protocol", get_registry().protocols, name)


def app_protocols() -> list[ProtocolSpec]:
    """Registered application protocols (layer ``"app"``), sorted by name: the order in which
    the vocabulary gives each its token range."""
    protocols = get_registry().protocols
    return [protocols[n] for n in sorted(protocols) if protocols[n].layer == "app"]


def protocol_for_flow(
    transport: str, server_port: int, client_payload: bytes, server_payload: bytes
) -> ProtocolSpec | None:
    """The first app protocol (in plugin order, as the tokenizer asks them) over ``transport``
    that recognises a flow, or None."""
    for spec in get_registry().protocols.values():
        if spec.layer != "app":
            continue
        if spec.transport == transport and spec.recognise(server_port, client_payload, server_payload):
            return spec
    return None
