"""The router: configuration, plugins and the ASGI app, built together.

::

    router = Router("clawrouter.toml")      # or Router(), the embedded default
    app = router.app                        # a complete ASGI app
    router.mount(fastapi_app, "/llm")       # or inside an existing app
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .breaker import Breakers
from .catalogue import VIRTUAL_MODELS, Catalogue, CatalogueError, ModelInfo, model_from_dict
from .config import Config, ConfigError, load_config
from .context import Actor
from .errors import BadRequest, ServiceUnavailable, Unauthorized
from .events import Event, EventBus
from .ledger import Ledger, LedgerFactory
from .payments import PaymentRail
from .plugins import PluginError, PluginInfo, load_plugins
from .pricing import cost_pico, micro_usd
from .providers.base import Provider
from .routing import RouteDecision, RouteFeatures, RoutingStrategy
from .state import StateBackend, StateBackendFactory
from .types import ASGIApp, Scope
from .wire import ChatCompletionRequest, Model, ModelList, encode

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["Router"]

log = logging.getLogger("clawrouter")


class Router:
    """A clawrouter instance with its own plugin manager.

    :param config: a :class:`Config`, a path to a TOML file, or ``None`` for
        ``$CLAWROUTER_CONFIG`` or else the embedded default (simulated models).
    :param plugins: plugin objects (modules, classes, instances) registered
        after the entry points, so they take precedence.
    :param env: the environment for overrides and plugin selection
        (default ``os.environ``).
    :param entry_points: load installed plugins (``False`` for isolated tests).
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        plugins: Iterable[object] = (),
        env: Mapping[str, str] | None = None,
        entry_points: bool = True,
    ) -> None:
        env = os.environ if env is None else env
        self.config = config if isinstance(config, Config) else load_config(config, env=env)
        self.pm, self.plugins, self.plugin_errors = load_plugins(plugins, env=env, entry_points_enabled=entry_points)
        self._by_plugin: dict[str, PluginInfo] = {info.name: info for info in self.plugins}
        self.providers: dict[str, Provider] = self._first_by("register_providers", "providers", lambda p: p.name)
        unknown = sorted(set(self.config.providers) - set(self.providers))
        if unknown:
            kinds = {n: self.config.providers[n].get("kind") for n in unknown}
            raise ConfigError(
                "; ".join(
                    f"config key 'providers.{n}': no installed plugin provides kind {kinds[n]!r}" for n in unknown
                )
            )
        self.catalogue = self._build_catalogue()
        self.strategies: dict[str, RoutingStrategy] = self._first_by(
            "register_routing_strategies", "routing_strategies", lambda s: s.name
        )
        name = self.config.routing.strategy
        if name not in self.strategies:
            raise ConfigError(
                f"config key 'routing.strategy': unknown strategy {name!r}; installed: {sorted(self.strategies)}"
            )
        self.strategy = self.strategies[name]
        if self.config.routing.default_profile not in VIRTUAL_MODELS:
            raise ConfigError(f"config key 'routing.default_profile': expected one of {list(VIRTUAL_MODELS)}")
        self.rails: dict[tuple[str, str], PaymentRail] = self._first_by(
            "register_payment_rails", "payment_rails", lambda r: (r.scheme, r.network)
        )
        states: dict[str, StateBackendFactory] = self._first_by(
            "register_state_backends", "state_backends", lambda f: f.name
        )
        self.state: StateBackend = self._pick(states, "state", self.config.state).create(
            msgspec.structs.asdict(self.config.state)
        )
        self._ledgers: dict[str, LedgerFactory] = self._first_by("register_ledgers", "ledgers", lambda f: f.name)
        self._ledger_factory = self._pick(self._ledgers, "ledger", self.config.ledger)
        self._ledger: Ledger | None = None
        impls = self.pm.hook.actor_from_request.get_hookimpls()
        self._actor_hook: Any = impls[0].function if len(impls) == 1 else self.pm.hook.actor_from_request
        deliver = self._deliver if self.pm.hook.handle_event.get_hookimpls() else None
        self.events = EventBus(deliver)
        self.models_body = encode(
            ModelList(
                [Model(m.id, m.provider) for m in self.catalogue] + [Model(v, "clawrouter") for v in VIRTUAL_MODELS]
            )
        )
        execution = self.config.execution
        self.breakers = Breakers(execution.breaker_failures, execution.breaker_cooldown)
        self._started = False
        from .app import build_app

        self.app: ASGIApp = build_app(self)

    # --- registration -------------------------------------------------------------

    def _collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call each implementation of a ``register_*`` hook on its own, in pluggy's
        order, so that what each plugin registered is known and a plugin that
        raises is reported and skipped (config errors stop the router)."""
        caller = getattr(self.pm.hook, hook_name)
        out: list[tuple[str, Any]] = []
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = impl.function(**{k: kwargs[k] for k in impl.argnames})
                items = list(result or ())
            except (ConfigError, CatalogueError):
                raise
            except Exception as exc:
                self.plugin_errors.append(PluginError(impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}"))
                log.warning("plugin %s: %s failed: %s", impl.plugin_name, hook_name, exc)
                continue
            out.extend((impl.plugin_name, item) for item in items)
        return out

    def _first_by(self, hook_name: str, label: str, key: Any) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        for plugin, item in self._collect(hook_name, config=self.config):
            k = key(item)
            if k in found:
                continue
            found[k] = item
            info = self._by_plugin.get(plugin)
            if info is not None:
                info.registered.setdefault(label, []).append(k if isinstance(k, str) else ":".join(k))
        return found

    def _pick(self, factories: dict[str, Any], section: str, settings: Any) -> Any:
        if settings.backend not in factories:
            raise ConfigError(
                f"config key '{section}.backend': unknown backend {settings.backend!r}; installed: {sorted(factories)}"
            )
        return factories[settings.backend]

    def _build_catalogue(self) -> Catalogue:
        catalogue = Catalogue()
        entries = self._collect("register_models", config=self.config)
        entries += [("config", m) for m in self.config.models]
        for plugin, entry in entries:
            model = entry if isinstance(entry, ModelInfo) else model_from_dict(entry)
            if model.provider not in self.providers:
                continue
            catalogue.add(model)
            info = self._by_plugin.get(plugin)
            if info is not None:
                info.registered.setdefault("models", []).append(model.id)
        if not len(catalogue):
            raise ConfigError("the catalogue is empty: no model's provider is configured under [providers]")
        self._available = tuple(sorted(catalogue, key=lambda m: m.id))
        return catalogue

    # --- per request -----------------------------------------------------------------

    async def authenticate(self, scope: Scope) -> Actor:
        token: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                text = value.decode("latin-1").strip()
                token = text[7:].strip() if text[:7].lower() == "bearer " else text
            elif name == b"x-api-key" and token is None:
                token = value.decode("latin-1").strip()
        result = self._actor_hook(router=self, scope=scope, token=token or None)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise Unauthorized("not authenticated", code="invalid_api_key")
        actor: Actor = result
        return actor

    def features(self, request: ChatCompletionRequest) -> RouteFeatures:
        chars = 0
        vision = False
        for message in request.messages:
            content = message.content
            if isinstance(content, str):
                chars += len(content)
            elif content:
                for part in content:
                    if isinstance(part.text, str):
                        chars += len(part.text)
                    elif part.type == "image_url":
                        vision = True
        name = request.model
        return RouteFeatures(
            profile=name if name in VIRTUAL_MODELS else self.config.routing.default_profile,
            prompt_tokens=chars // 3 + 4 * len(request.messages),
            output_tokens=request.output_cap() or self.config.routing.default_max_tokens,
            needs_tools=bool(request.tools),
            needs_vision=vision,
        )

    def decide(self, request: ChatCompletionRequest) -> RouteDecision:
        """Pick the model chain for ``request``; :class:`BadRequest` names what excluded what."""
        features = self.features(request)
        keep = self.config.routing.fallbacks
        name = request.model
        if name not in VIRTUAL_MODELS:
            model = self.catalogue.get(name)
            if model is None:
                raise BadRequest(
                    f"model {name!r} is not in the catalogue; use 'auto', 'eco', 'premium' "
                    "or a model id from GET /v1/models",
                    param="model",
                    code="model_not_found",
                )
            reason = features.fits(model)
            if reason is not None:
                raise BadRequest(f"model {model.id!r} cannot serve this request: {reason}", param="model")
            chain = [self.catalogue.get(f) for f in model.fallbacks]
            fallbacks = [m for m in chain if m is not None and features.fits(m) is None][:keep]
            return RouteDecision(model, fallbacks, strategy="explicit")
        excluded: dict[str, str] = {}
        candidates: list[ModelInfo] = []
        breakers = self.breakers
        for model in self._available:
            reason = features.fits(model)
            if reason is None and not breakers.available(model.provider, model.id):
                reason = "circuit open"
            if reason is None:
                candidates.append(model)
            else:
                excluded[model.id] = reason
        if not candidates:
            if "circuit open" in excluded.values():
                raise ServiceUnavailable(
                    "every model able to serve this request is failing upstream (circuit open); retry later",
                    code="circuit_open",
                    headers=[(b"retry-after", str(max(1, round(self.config.execution.breaker_cooldown))).encode())],
                )
            detail = "; ".join(f"{k}: {v}" for k, v in excluded.items())
            raise BadRequest(f"no model can serve this request ({detail})", param="model", code="no_model")
        ranked = self.strategy.rank(features, candidates)
        return RouteDecision(
            ranked[0], ranked[1 : 1 + keep], strategy=self.strategy.name, profile=features.profile, excluded=excluded
        )

    def quote(self, request: ChatCompletionRequest, decision: RouteDecision) -> int:
        """Worst-case price of ``request`` over the whole chain, in micro-USD (USDC atomic units).

        Input tokens are bounded by the UTF-8 length of every string in the
        request (a token is at least one byte), so the quote never undercounts.
        """
        prompt = len(encode(request.messages)) + 4 * len(request.messages)
        output = request.output_cap() or self.config.routing.default_max_tokens
        return max(micro_usd(cost_pico(m, prompt, output)) for m in decision.chain)

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self._ledger_factory.create(msgspec.structs.asdict(self.config.ledger))
        return self._ledger

    def _deliver(self, event: Event) -> object:
        return self.pm.hook.handle_event(router=self, event=event)

    async def _call_all(self, hook: Any) -> None:
        for result in hook(router=self):
            if inspect.isawaitable(result):
                await result

    async def start(self) -> None:
        """Open provider pools and run ``startup`` hooks (idempotent)."""
        if self._started:
            return
        self._started = True
        for provider in self.providers.values():
            await provider.start()
        await self._call_all(self.pm.hook.startup)
        self.events.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._call_all(self.pm.hook.shutdown)
        await self.events.stop()
        for provider in self.providers.values():
            await provider.aclose()
        await self.state.aclose()
        if self._ledger is not None:
            await self._ledger.aclose()
            self._ledger = None

    @property
    def started(self) -> bool:
        return self._started

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An async context manager usable as a Starlette/FastAPI ``lifespan``."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def mount(self, app: Starlette, path: str = "/llm") -> None:
        """Mount the router under ``path`` of a Starlette or FastAPI app, and
        chain its start-up and shut-down into the host app's lifespan."""
        app.mount(path, self.app)
        host = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(instance: Any) -> AsyncIterator[Any]:
            async with self.lifespan(), host(instance) as state:
                yield state

        app.router.lifespan_context = lifespan

    def wrap(self, app: ASGIApp, prefix: str = "/llm") -> ASGIApp:
        """An ASGI app serving the router under ``prefix`` and ``app`` for everything else."""
        from .app import PrefixDispatcher

        return PrefixDispatcher(self, app, prefix)

    # --- introspection ------------------------------------------------------------------

    def plugins_document(self) -> dict[str, Any]:
        return {
            "plugins": msgspec.to_builtins(self.plugins),
            "errors": msgspec.to_builtins(self.plugin_errors),
        }

    def __repr__(self) -> str:
        return f"<Router providers={sorted(self.providers)} models={len(self.catalogue)} rails={len(self.rails)}>"
