"""The router: configuration, plugins and the ASGI app, built together.

::

    router = Router("clawrouter.toml")      # or Router(), the embedded default
    app = router.app                        # a complete ASGI app
    router.mount(fastapi_app, "/llm")       # or inside an existing app
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .breaker import Breakers
from .catalogue import VIRTUAL_MODELS, Catalogue, CatalogueError, ModelInfo, merge_models, model_from_dict
from .classify import classify
from .config import Config, ConfigError, load_config
from .context import Actor
from .errors import BadRequest, ClawError, ServiceUnavailable, Unauthorized
from .events import Event, EventBus
from .ledger import Ledger, LedgerFactory
from .limits import Limits
from .payments import PaymentRail
from .plugins import PluginError, PluginInfo, load_plugins
from .pricing import cost_pico, micro_usd
from .providers.base import Provider
from .routing import OrderedStrategy, RouteDecision, RouteFeatures, RoutingStrategy, latency_of, quality
from .state import StateBackend, StateBackendFactory
from .stats import LiveStats
from .tokens import prompt_bound
from .types import ASGIApp, Scope
from .wire import ChatCompletionRequest, Model, ModelList, RouteConstraints, encode

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .telemetry import Telemetry

__all__ = ["Router", "merge_constraints"]

log = logging.getLogger("clawrouter")


def merge_constraints(
    body: RouteConstraints | msgspec.UnsetType | None, headers: RouteConstraints | None
) -> RouteConstraints | None:
    """The body's ``clawrouter`` constraints, with headers filling what the body left unset."""
    if not isinstance(body, RouteConstraints):
        return headers
    if headers is None:
        return body
    merged = {**msgspec.structs.asdict(headers), **msgspec.to_builtins(body)}
    return msgspec.convert(merged, RouteConstraints)


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
        #: this process among replicas sharing a state backend and a ledger (stats, settlement leases)
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        #: rails with an ``async refresh()`` to await before their requirements are asked for
        self.refreshing_rails = [r for r in self.rails.values() if callable(getattr(r, "refresh", None))]
        self._setup_payments(env)
        states: dict[str, StateBackendFactory] = self._first_by(
            "register_state_backends", "state_backends", lambda f: f.name
        )
        self.state: StateBackend = self._pick(states, "state", self.config.state).create(
            msgspec.structs.asdict(self.config.state)
        )
        self.limits: Limits | None = None  # budgets and rate limits, when [limits] sets any
        if self.config.limits.active():
            try:
                self.limits = Limits(self.config.limits, self.state)
            except TypeError as exc:
                raise ConfigError(f"config key 'limits': {exc}") from None
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
        self.stats = LiveStats()
        #: metrics, statistics, traces and the access log (``None``: ``[observability] enabled = false``)
        self.telemetry: Telemetry | None = self._setup_telemetry()
        self._rankings: dict[Any, list[ModelInfo]] = {}
        self._rankings_generation = -1
        self._started = False
        self._stats_task: asyncio.Task[None] | None = None
        from .app import build_app

        self.app: ASGIApp = build_app(self)

    def _setup_telemetry(self) -> Telemetry | None:
        settings = self.config.observability
        checks = [
            ("traces", settings.traces, ("", "otlp", "console", "memory")),
            ("metrics", settings.metrics, ("", "otlp", "console")),
            ("log_format", settings.log_format, ("text", "json")),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"config key 'observability.{key}': expected one of {list(allowed)}, got {value!r}")
        if not 0.0 <= settings.sample_ratio <= 1.0:
            raise ConfigError("config key 'observability.sample_ratio': expected a number between 0 and 1")
        for key in ("stats_step_seconds", "stats_retention_seconds", "queue_size", "max_payers"):
            if getattr(settings, key) < 1:
                raise ConfigError(f"config key 'observability.{key}': expected a positive number")
        if settings.export_interval_seconds <= 0:
            raise ConfigError("config key 'observability.export_interval_seconds': expected a positive number")
        for network, template in settings.explorers.items():
            if "{tx}" not in template:
                raise ConfigError(f"config key 'observability.explorers.{network}': the URL must contain {{tx}}")
        if not settings.enabled:
            if settings.traces or settings.metrics or settings.access_log:
                raise ConfigError(
                    "config key 'observability.enabled': traces, metrics exports and the access log "
                    "need observability enabled"
                )
            return None
        if settings.traces or settings.metrics:
            try:
                import opentelemetry.sdk  # noqa: F401
            except ImportError:
                key = "traces" if settings.traces else "metrics"
                raise ConfigError(
                    f"config key 'observability.{key}': OpenTelemetry is not installed; "
                    "pip install 'clawrouter[otel]'"
                ) from None
        from .telemetry import Telemetry

        return Telemetry(self)

    def _setup_payments(self, env: Mapping[str, str]) -> None:
        """The router's key (receipts; the embedded facilitator settles with it too),
        the quote signer derived from it, the settler and the receipt book."""
        from .keys import RouterKey
        from .quotes import QuoteSigner
        from .settlement import Receipts, Settler

        payments = self.config.payments
        value = env.get(payments.key_env, "").strip()
        if value:
            try:
                self.key = RouterKey.from_hex(value)
            except ValueError as exc:
                raise ConfigError(f"config key 'payments.key_env': ${payments.key_env}: {exc}") from None
        else:
            self.key = RouterKey.generate()
            if self.rails:
                log.warning(
                    "$%s is not set: receipts are signed by a throwaway key (%s) and quotes "
                    "do not survive a restart",
                    payments.key_env,
                    self.key.address,
                )
        self.quotes = QuoteSigner(self.key.derive(b"clawrouter/quote/v1"), payments.quote_ttl_seconds)
        self.settler = Settler(self)
        self.receipts = Receipts(self, self.key)

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
        origin: dict[str, str] = {}
        registered: list[ModelInfo] = []
        for plugin, entry in self._collect("register_models", config=self.config):
            model = entry if isinstance(entry, ModelInfo) else model_from_dict(entry)
            origin[model.id] = plugin
            registered.append(model)
        # [[models]] in the config override fields of registered models by id, or add models
        available = [m for m in merge_models(registered, self.config.models) if m.provider in self.providers]
        catalogue = Catalogue(available)
        for model in available:
            info = self._by_plugin.get(origin.get(model.id, "config"))
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

    def features(self, request: ChatCompletionRequest, constraints: RouteConstraints | None = None) -> RouteFeatures:
        name = request.model
        if name not in VIRTUAL_MODELS and (constraints is None or constraints.min_quality is None):
            return self._explicit_features(request, constraints)
        found = classify(request)
        profile: str
        if constraints is not None and constraints.profile is not None:
            profile = constraints.profile
        else:
            profile = name if name in VIRTUAL_MODELS else self.config.routing.default_profile
        return RouteFeatures(
            profile=profile,
            prompt_tokens=found.prompt_tokens,
            output_tokens=request.output_cap() or self.config.routing.default_max_tokens,
            task=found.task,
            tier=found.tier,
            complexity=found.complexity,
            needs_tools=found.needs_tools,
            needs_vision=found.needs_vision,
            long_context=found.long_context,
            language=found.language,
            stream=request.stream,
            capabilities=constraints.capabilities if constraints is not None else (),
        )

    def _explicit_features(self, request: ChatCompletionRequest, constraints: RouteConstraints | None) -> RouteFeatures:
        """A model named explicitly is not scored: only what its checks need, without classifying."""
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
        return RouteFeatures(
            profile=self.config.routing.default_profile,
            prompt_tokens=chars // 3 + 4 * len(request.messages),
            output_tokens=request.output_cap() or self.config.routing.default_max_tokens,
            needs_tools=bool(request.tools),
            needs_vision=vision,
            stream=request.stream,
            capabilities=constraints.capabilities if constraints is not None else (),
        )

    def _strategy_for(self, constraints: RouteConstraints | None) -> RoutingStrategy:
        if constraints is None:
            return self.strategy
        if constraints.strategy is not None:
            strategy = self.strategies.get(constraints.strategy)
            if strategy is None:
                raise BadRequest(
                    f"unknown routing strategy {constraints.strategy!r}; installed: {sorted(self.strategies)}",
                    param="clawrouter.strategy",
                )
            if strategy.name == "ordered" and constraints.models:
                return OrderedStrategy(constraints.models)
            return strategy
        return self.strategy

    def _ranking(self, strategy: RoutingStrategy, features: RouteFeatures) -> list[ModelInfo]:
        generation = self.stats.maybe_refresh()
        if generation != self._rankings_generation:
            self._rankings.clear()
            self._rankings_generation = generation
        key = strategy.cache_key(features)
        if key is None:
            return strategy.rank(features, self._available, self.stats)
        key = (strategy.name, key)
        ranking = self._rankings.get(key)
        if ranking is None:
            ranking = self._rankings[key] = strategy.rank(features, self._available, self.stats)
        return ranking

    def exclusion(
        self,
        model: ModelInfo,
        features: RouteFeatures,
        constraints: RouteConstraints | None,
        request: ChatCompletionRequest,
    ) -> str | None:
        """Why ``model`` cannot serve this request, as ``"<constraint>: <reason>"``, or ``None``."""
        return self._checker(features, constraints, request, detailed=True)(model)

    def _checker(
        self,
        features: RouteFeatures,
        constraints: RouteConstraints | None,
        request: ChatCompletionRequest,
        *,
        detailed: bool = False,
    ) -> Callable[[ModelInfo], str | None]:
        """The hard constraints of one request, prepared once and applied to each model walked
        (``detailed``: reasons with figures, for explanations and errors)."""
        fits = features.fits
        breakers = self.breakers
        if constraints is None:

            def check_plain(model: ModelInfo) -> str | None:
                reason = fits(model)
                if reason is None and breakers.tripped and not breakers.available(model.provider, model.id):
                    return "circuit: open after repeated upstream failures"
                return reason

            return check_plain
        allowed = set(constraints.models)
        denied = set(constraints.deny_models)
        providers = set(constraints.providers)
        deny_providers = set(constraints.deny_providers)
        min_quality = constraints.min_quality
        slo = constraints.latency_slo_ms
        task, stream = features.task, features.stream
        max_pico = None
        if constraints.max_price is not None:
            max_pico = round(constraints.max_price * 10**12)
            if features.prompt_bound < 0:
                features.prompt_bound = prompt_bound(request)
            prompt = features.prompt_bound
            output = request.output_cap() or self.config.routing.default_max_tokens

        def check(model: ModelInfo) -> str | None:
            if max_pico is not None:  # first: the cheapest test, and the one that excludes most
                worst = micro_usd(cost_pico(model, prompt, output))
                if worst * 1_000_000 > max_pico:
                    if not detailed:
                        return "max_price: worst case over the limit"
                    return f"max_price: worst case ${worst / 1e6:.6f} > ${max_pico / 1e12:g}"
            reason = fits(model)
            if reason is not None:
                return reason
            if breakers.tripped and not breakers.available(model.provider, model.id):
                return "circuit: open after repeated upstream failures"
            if allowed and model.id not in allowed and not allowed.intersection(model.aliases):
                return "models: not in the allowed list"
            if denied and (model.id in denied or denied.intersection(model.aliases)):
                return "deny_models: denied"
            if providers and model.provider not in providers:
                return "providers: not allowed"
            if model.provider in deny_providers:
                return "deny_providers: denied"
            if min_quality is not None:
                score = quality(model, task)
                if score < min_quality:
                    return f"min_quality: {task} quality {score:.2f} < {min_quality:g}"
            if slo is not None:
                snapshot = self.stats.snapshot(model.id)
                if (snapshot.ttft if stream else snapshot.latency) is not None:
                    p95 = latency_of(snapshot, stream) * 1000
                    if p95 > slo:
                        return f"latency_slo_ms: p95 {p95:.0f} ms > {slo:g} ms"
            return None

        return check

    def decide(
        self, request: ChatCompletionRequest, header_constraints: RouteConstraints | None = None
    ) -> RouteDecision:
        """Pick the model chain for ``request``; :class:`BadRequest` names what excluded what."""
        started = time.perf_counter_ns()
        constraints = merge_constraints(request.clawrouter, header_constraints)
        features = self.features(request, constraints)
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
            check = self._checker(features, constraints, request, detailed=True)
            reason = check(model)
            if reason is not None:
                if reason.startswith("circuit"):
                    raise self._circuit_open()
                raise BadRequest(f"model {model.id!r} cannot serve this request: {reason}", param="model")
            chain = [self.catalogue.get(f) for f in model.fallbacks]
            fallbacks = [m for m in chain if m is not None and check(m) is None][:keep]
            decision = RouteDecision(model, fallbacks, strategy="explicit", features=features)
        else:
            strategy = self._strategy_for(constraints)
            chosen: list[ModelInfo] = []
            excluded: dict[str, str] = {}
            check = self._checker(features, constraints, request)
            for model in self._ranking(strategy, features):
                reason = check(model)
                if reason is None:
                    chosen.append(model)
                    if len(chosen) > keep:
                        break
                else:
                    excluded[model.id] = reason
            if not chosen:
                raise self._nothing_fits(features, constraints, request, strategy)
            decision = RouteDecision(
                chosen[0],
                chosen[1:],
                strategy=strategy.name,
                profile=features.profile,
                excluded=excluded,
                features=features,
            )
        decision.elapsed_ns = time.perf_counter_ns() - started
        return decision

    def _circuit_open(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "every model able to serve this request is failing upstream (circuit open); retry later",
            code="circuit_open",
            headers=[(b"retry-after", str(max(1, round(self.config.execution.breaker_cooldown))).encode())],
        )

    def _nothing_fits(
        self,
        features: RouteFeatures,
        constraints: RouteConstraints | None,
        request: ChatCompletionRequest,
        strategy: RoutingStrategy,
    ) -> ClawError:
        by_constraint: dict[str, list[str]] = {}
        check = self._checker(features, constraints, request, detailed=True)
        for model in self._available:
            reason = check(model)
            if reason is None:  # fits, but the strategy ranked it out (e.g. weights, order)
                reason = f"strategy: not chosen by {strategy.name}"
            by_constraint.setdefault(reason.split(":", 1)[0], []).append(model.id)
        if set(by_constraint) == {"circuit"}:
            return self._circuit_open()
        detail = "; ".join(
            f"{name} excluded {len(ids)} model{'s' * (len(ids) != 1)} ({', '.join(ids[:5])}{', …' * (len(ids) > 5)})"
            for name, ids in sorted(by_constraint.items())
        )
        return BadRequest(f"no model can serve this request: {detail}", param="model", code="no_model")

    def explain(
        self, request: ChatCompletionRequest, header_constraints: RouteConstraints | None = None
    ) -> dict[str, Any]:
        """The decision with every candidate's score components and every exclusion's reason."""
        decision = self.decide(request, header_constraints)
        constraints = merge_constraints(request.clawrouter, header_constraints)
        features = decision.features or self.features(request, constraints)
        strategy = self._strategy_for(constraints)
        components = getattr(strategy, "components", None)
        scores = components(features, self._available, self.stats) if components is not None else {}
        candidates = []
        check = self._checker(features, constraints, request, detailed=True)
        for model in self._ranking(strategy, features):
            entry: dict[str, Any] = {"model": model.id, "provider": model.provider}
            entry.update({k: round(v, 4) for k, v in scores.get(model.id, {}).items()})
            entry["worst_case_usd_micro"] = micro_usd(self.worst_case_pico(request, model))
            reason = check(model)
            if reason is not None:
                entry["excluded"] = reason
            candidates.append(entry)
        out = decision.explain()
        out["quote_usd_micro"] = self.quote(request, decision)
        out["candidates"] = candidates
        out["excluded"] = {c["model"]: c["excluded"] for c in candidates if "excluded" in c}
        out["live"] = self.stats.report(m.id for m in decision.chain)
        return out

    def worst_case_pico(
        self, request: ChatCompletionRequest, model: ModelInfo, features: RouteFeatures | None = None
    ) -> int:
        """The most ``request`` can cost on ``model``: every UTF-8 byte of its text a token
        (:func:`clawrouter.tokens.prompt_bound`), and the output cap (the request's, else
        ``[routing] default_max_tokens``) fully used."""
        if features is not None:
            if features.prompt_bound < 0:
                features.prompt_bound = prompt_bound(request)
            prompt = features.prompt_bound
        else:
            prompt = prompt_bound(request)
        output = request.output_cap() or self.config.routing.default_max_tokens
        return cost_pico(model, prompt, output)

    def quote(self, request: ChatCompletionRequest, decision: RouteDecision) -> int:
        """Worst-case price of ``request`` over the whole chain, in micro-USD (USDC atomic units).

        Input tokens are bounded by the UTF-8 length of every string in the
        request (a token is at least one byte), so the quote never undercounts.
        """
        return max(micro_usd(self.worst_case_pico(request, m)) for m in decision.chain)

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
        if self.telemetry is not None:
            self.telemetry.start()
        if self.rails:
            self.settler.start()  # settles what a previous run left pending, then retries periodically
        interval = self.config.state.stats_sync_seconds
        if interval > 0 and callable(getattr(self.state, "publish_stats", None)):
            self._stats_task = asyncio.get_running_loop().create_task(self._share_stats(interval))

    async def sync_stats(self) -> None:
        """Publish this replica's routing measurements to the shared state backend and absorb
        the other replicas' (the background loop does it every ``[state] stats_sync_seconds``)."""
        interval = self.config.state.stats_sync_seconds or 2.0
        state: Any = self.state
        await state.publish_stats(self.replica, msgspec.json.encode(self.stats.export()), 3 * interval)
        others = await state.fetch_stats(self.replica)
        self.stats.absorb(msgspec.json.decode(document) for document in others)

    async def _share_stats(self, interval: float) -> None:
        while True:
            try:
                await self.sync_stats()
            except Exception as exc:  # best effort: routing goes on with this replica's own figures
                log.warning("cannot share routing statistics: %s", exc)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        task, self._stats_task = self._stats_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.rails:
            await self.settler.drain()
            for rail in self.rails.values():
                close = getattr(rail, "aclose", None)
                if close is not None:
                    await close()
        await self._call_all(self.pm.hook.shutdown)
        await self.events.stop()
        if self.telemetry is not None:
            await self.telemetry.stop()
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
