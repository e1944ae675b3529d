"""Loading plugins: one :class:`pluggy.PluginManager` per router.

Order of registration (pluggy calls later registrations first):

1. the default plugins (``clawrouter.default_*``, all ``trylast``);
2. entry points of group ``clawrouter``, sorted by entry point name;
3. plugin objects passed to :class:`~clawrouter.Router` in code.

``CLAWROUTER_LOAD_PLUGINS`` (comma-separated entry point or distribution names)
loads only those entry points; an empty value loads none.
``CLAWROUTER_DISABLE_PLUGINS`` skips the named entry points, distributions or
default plugins. A plugin that fails to import, or implements a hook that does
not exist, is reported by name (``Router.plugin_errors``, ``GET /-/plugins``,
a warning in the log) and skipped; the router still starts.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import msgspec
import pluggy

from . import hookspecs

__all__ = ["DEFAULT_PLUGINS", "PluginError", "PluginInfo", "load_plugins"]

log = logging.getLogger("clawrouter.plugins")

ENTRY_POINT_GROUP = "clawrouter"
DEFAULT_PLUGINS = (
    "clawrouter.default_auth",
    "clawrouter.default_ledgers",
    "clawrouter.default_providers",
    "clawrouter.default_rails",
    "clawrouter.default_routing",
    "clawrouter.default_state",
)


class PluginInfo(msgspec.Struct):
    name: str
    source: str  # "default" | "entry_point" | "code"
    version: str | None = None
    distribution: str | None = None
    hooks: list[str] = []
    registered: dict[str, list[str]] = {}


class PluginError(msgspec.Struct):
    name: str
    error: str


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _register(
    pm: pluggy.PluginManager,
    plugin: object,
    info: PluginInfo,
    infos: list[PluginInfo],
    errors: list[PluginError],
) -> None:
    try:
        pm.register(plugin, name=info.name)
        pm.check_pending()
    except Exception as exc:  # pluggy.PluginValidationError, ValueError (duplicate name)
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        errors.append(PluginError(info.name, f"{type(exc).__name__}: {exc}"))
        log.warning("plugin %s skipped: %s", info.name, exc)
        return
    info.hooks = sorted({hook for hook, _ in _impls(pm, info.name)})
    infos.append(info)


def _impls(pm: pluggy.PluginManager, name: str) -> Iterable[tuple[str, Any]]:
    plugin = pm.get_plugin(name)
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                yield caller.name, impl


def load_plugins(
    plugins: Iterable[object] = (),
    *,
    env: Mapping[str, str] | None = None,
    entry_points_enabled: bool = True,
) -> tuple[pluggy.PluginManager, list[PluginInfo], list[PluginError]]:
    env = os.environ if env is None else env
    allow = _names(env.get("CLAWROUTER_LOAD_PLUGINS"))
    deny = _names(env.get("CLAWROUTER_DISABLE_PLUGINS")) or set()
    pm = pluggy.PluginManager("clawrouter")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    errors: list[PluginError] = []

    for module_name in DEFAULT_PLUGINS:
        if module_name in deny or module_name.rsplit(".", 1)[1] in deny:
            continue
        module = importlib.import_module(module_name)
        _register(pm, module, PluginInfo(module_name, "default"), infos, errors)

    if entry_points_enabled:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else None
            names = {ep.name} | ({dist} if dist else set())
            if (allow is not None and not names & allow) or names & deny:
                continue
            info = PluginInfo(ep.name, "entry_point", ep.dist.version if ep.dist else None, dist)
            try:
                plugin = ep.load()
            except Exception as exc:
                errors.append(PluginError(ep.name, f"{type(exc).__name__}: {exc}"))
                log.warning("plugin %s failed to load: %s", ep.name, exc)
                continue
            _register(pm, plugin, info, infos, errors)

    for index, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        _register(pm, plugin, PluginInfo(name, "code"), infos, errors)
    return pm, infos, errors
