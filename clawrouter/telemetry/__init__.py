"""Observability: metrics, statistics, traces and the access log, off the request's hot path.

The request path appends one tuple per finished request (and one per settlement) to a bounded
queue and returns: :meth:`Telemetry.request` costs about a microsecond. A background task drains
the queue every quarter second into

* the metrics registry (:mod:`clawrouter.telemetry.metrics`): ``GET /-/metrics`` in Prometheus
  text format, and OpenTelemetry metrics pushed to OTLP or the console (``[observability]
  metrics``);
* time steps of ``stats_step_seconds`` kept for ``stats_retention_seconds``: ``GET /-/stats``
  and the dashboard (``GET /-/dashboard``);
* OpenTelemetry spans, when traces are on (:mod:`clawrouter.telemetry.tracing`);
* the structured access log (logger ``clawrouter.access``), when ``access_log`` is on.

When the queue is full the oldest entries are dropped and counted
(``clawrouter_telemetry_dropped_total``), so a stalled collector never holds requests up.
With ``[observability] enabled = false`` none of this exists: the stack has no telemetry stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..context import get_context
from ..types import ASGIApp, Receive, Scope, Send
from .metrics import LogHistogram, Registry

if TYPE_CHECKING:
    from ..context import RequestContext
    from ..ledger import SettlementIntent
    from ..payments import SettlementResponse
    from ..router import Router
    from .tracing import Trace, TraceSetup

__all__ = ["EXPLORERS", "Telemetry", "TelemetryMiddleware", "parse_window"]

log = logging.getLogger("clawrouter.telemetry")
access_log = logging.getLogger("clawrouter.access")
event_log = logging.getLogger("clawrouter.events")

#: transaction pages per network id ("{tx}": the transaction); ``[observability] explorers`` adds more
EXPLORERS = {
    "eip155:8453": "https://basescan.org/tx/{tx}",
    "eip155:84532": "https://sepolia.basescan.org/tx/{tx}",
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp": "https://explorer.solana.com/tx/{tx}",
    "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1": "https://explorer.solana.com/tx/{tx}?cluster=devnet",
}

_REQUEST, _SETTLEMENT = 0, 1
#: the collector drains every 0.25 s, or as soon as this many records wait
_BATCH = 64
_QUANTILES = (0.5, 0.95, 0.99)
_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def parse_window(text: str | None, default: int, limit: int) -> int:
    """``300``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds, between 10 s and ``limit``."""
    if not text:
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], 0)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 10 <= value <= limit:
        raise ValueError(
            f"window: expected seconds or a duration like 90s, 15m, 1h between 10 s and {limit} s, got {text!r}"
        )
    return int(value)


class _ModelStep:
    __slots__ = ("completion", "cost_pico", "errors", "fallbacks", "latency", "prompt", "requests", "ttft")

    def __init__(self) -> None:
        self.requests = self.errors = self.fallbacks = self.prompt = self.completion = self.cost_pico = 0
        self.latency = LogHistogram()
        self.ttft: LogHistogram | None = None


class _Step:
    """What happened during one time step."""

    __slots__ = (
        "by_network",
        "by_payer",
        "decisions",
        "failed",
        "latency",
        "models",
        "rejected",
        "settled",
        "spend",
        "unrouted_errors",
    )

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], _ModelStep] = {}
        self.latency = LogHistogram()
        self.decisions: dict[str, int] = {}
        self.by_network: dict[str, int] = {}  # micro-USD charged
        self.by_payer: dict[str, int] = {}
        self.spend = self.settled = self.failed = self.rejected = self.unrouted_errors = 0


class Telemetry:
    """The router's collector (``router.telemetry``), created when observability is enabled."""

    def __init__(self, router: Router) -> None:
        self.router = router
        config = self.config = router.config.observability
        self.queue: deque[tuple[Any, ...]] = deque()
        self.queue_size = config.queue_size
        self.dropped = 0
        self.step = max(1, config.stats_step_seconds)
        self.retention = max(self.step, config.stats_retention_seconds)
        self.steps: dict[int, _Step] = {}
        self.recent: deque[tuple[Any, ...]] = deque(maxlen=20)
        self.recent_settlements: deque[tuple[Any, ...]] = deque(maxlen=20)
        self.explorers = {**EXPLORERS, **config.explorers}
        self.tracing: TraceSetup | None = None
        if config.traces:
            from .tracing import TraceSetup

            self.tracing = TraceSetup(config)
        self.access = config.access_log
        self.outbox_depth = 0
        self.spans = 0  # spans handed to the trace exporter
        self._payers: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._metrics_exporter: Any = None
        self._last_export = time.monotonic()
        self._build_metrics()

    # --- the request path: append and return ---------------------------------------------------

    def request(self, ctx: RequestContext) -> None:
        """Record a finished request (called by :class:`TelemetryMiddleware`)."""
        queue = self.queue
        size = len(queue)
        if size >= self.queue_size:
            queue.popleft()
            self.dropped += 1
        elif size == _BATCH and self._wake is not None:
            self._wake.set()  # drain soon: records that die young cost the garbage collector nothing
        queue.append(
            (
                _REQUEST,
                time.time(),
                time.perf_counter() - ctx.started,
                ctx.request_id,
                ctx.status or 500,
                ctx.succeeded,
                ctx.model,
                ctx.decision,
                ctx.ttft,
                ctx.usage,
                ctx.cost_pico,
                ctx.payment,
                ctx.settlement,
                ctx.actor,
                ctx.error,
                ctx.trace,
            )
        )

    def settlement(self, intent: SettlementIntent, response: SettlementResponse) -> None:
        """Record a settlement's final outcome (called by the settler)."""
        if len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((_SETTLEMENT, time.time(), intent, response))

    # --- the collector -------------------------------------------------------------------------

    def _build_metrics(self) -> None:
        r = self.registry = Registry()
        model = ("model", "provider")
        self.m_requests = r.counter(
            "clawrouter_requests_total",
            "Chat completion requests by served (or routed) model, provider and HTTP status.",
            (*model, "status"),
            otel="clawrouter.requests",
            unit="{request}",
        )
        self.m_duration = r.histogram(
            "clawrouter_request_duration_seconds",
            "Time from the request's arrival to its last byte, by model, provider and status.",
            (*model, "status"),
            otel="gen_ai.server.request.duration",
            unit="s",
        )
        self.m_ttft = r.histogram(
            "clawrouter_time_to_first_token_seconds",
            "Streamed requests: time from the upstream attempt's start to its first chunk.",
            model,
            otel="gen_ai.server.time_to_first_token",
            unit="s",
        )
        self.m_tokens = r.counter(
            "clawrouter_tokens_total",
            "Tokens by model, provider and type (input, output).",
            (*model, "type"),
            otel="clawrouter.tokens",
            unit="{token}",
        )
        self.m_cost = r.counter(
            "clawrouter_cost_usd_total",
            "Cost of the answered usage at the catalogue's prices, by model and provider.",
            model,
            otel="clawrouter.cost",
            unit="USD",
        )
        self.m_decisions = r.counter(
            "clawrouter_routing_decisions_total",
            "Routing decisions of executed requests, by chosen model, strategy and profile.",
            ("model", "strategy", "profile"),
            otel="clawrouter.routing.decisions",
            unit="{decision}",
        )
        self.m_fallbacks = r.counter(
            "clawrouter_fallbacks_total",
            "Requests answered by a fallback, by the route's first model and the model that answered.",
            ("model", "served_by"),
            otel="clawrouter.fallbacks",
            unit="{request}",
        )
        self.m_spend = r.counter(
            "clawrouter_spend_usd_total",
            "USDC charged by settled x402 payments, by network and payer.",
            ("network", "payer"),
            otel="clawrouter.spend",
            unit="USD",
        )
        self.m_settlements = r.counter(
            "clawrouter_settlements_total",
            "Final settlement outcomes by network (settled, failed).",
            ("network", "outcome"),
            otel="clawrouter.settlements",
            unit="{settlement}",
        )
        r.gauge(
            "clawrouter_settlement_outbox_depth",
            "Settlement intents pending in the ledger's outbox (read at export).",
            read=lambda: {(): float(self.outbox_depth)},
            otel="clawrouter.settlement.outbox_depth",
            unit="{intent}",
        )
        r.gauge(
            "clawrouter_circuit_breaker_state",
            "Circuit breaker per provider and model: 0 closed, 1 half-open, 2 open.",
            model,
            read=self._breaker_states,
            otel="clawrouter.circuit_breaker.state",
            unit="1",
        )
        if self.tracing is not None:
            r.gauge(
                "clawrouter_trace_spans_total",
                "Spans handed to the trace exporter (traces on).",
                read=lambda: {(): float(self.spans)},
                otel="clawrouter.telemetry.spans",
                unit="{span}",
            )
        r.gauge(
            "clawrouter_telemetry_dropped_total",
            "Telemetry records dropped because the collector's queue was full.",
            read=lambda: {(): float(self.dropped)},
            otel="clawrouter.telemetry.dropped",
            unit="{record}",
        )

    def _breaker_states(self) -> dict[tuple[str, ...], float]:
        breakers = self.router.breakers
        return {(model, provider): float(_BREAKER_STATES.get(b.state, 0)) for (provider, model), b in breakers.items()}

    def _step_of(self, when: float) -> _Step:
        index = int(when // self.step)
        step = self.steps.get(index)
        if step is None:
            step = self.steps[index] = _Step()
            oldest = index - self.retention // self.step
            while self.steps:
                first = next(iter(self.steps))
                if first >= oldest:
                    break
                del self.steps[first]
        return step

    def flush(self, limit: int | None = None) -> None:
        """Drain the queue now (readers call it so what they show is current), or at most
        ``limit`` records of it."""
        queue = self.queue
        spans: list[Any] = []
        left = len(queue) if limit is None else min(limit, len(queue))
        while left > 0:
            left -= 1
            item = queue.popleft()
            try:
                if item[0] == _REQUEST:
                    self._absorb_request(item, spans)
                else:
                    self._absorb_settlement(item)
            except Exception:  # never let one odd record stop the collector
                kind = "request" if item[:1] == (_REQUEST,) else "settlement"
                log.exception("telemetry: could not record a %s", kind)
        if spans and self.tracing is not None:
            self.spans += len(spans)
            self.tracing.export(spans)

    def _absorb_request(self, item: tuple[Any, ...], spans: list[Any]) -> None:
        (
            _,
            when,
            duration,
            request_id,
            status,
            succeeded,
            served,
            decision,
            ttft,
            usage,
            cost_pico,
            payment,
            settlement,
            actor,
            error,
            trace,
        ) = item
        routed = served or (decision.primary if decision is not None else None)
        model_id, provider = (routed.id, routed.provider) if routed is not None else ("", "")
        code = str(status)
        self.m_requests.inc((model_id, provider, code))
        self.m_duration.observe((model_id, provider, code), duration)
        executed = status < 400 or status >= 500  # 4xx: refused before any upstream was called
        failed = status >= 500 or not succeeded
        step = self._step_of(when)
        if not executed:
            step.rejected += 1
        elif routed is None:
            step.unrouted_errors += 1
        else:
            key = (model_id, provider)
            entry = step.models.get(key)
            if entry is None:
                entry = step.models[key] = _ModelStep()
            entry.requests += 1
            entry.latency.add(duration * 1000)
            step.latency.add(duration * 1000)
            if failed:
                entry.errors += 1
            if ttft is not None:
                self.m_ttft.observe(key, ttft)
                if entry.ttft is None:
                    entry.ttft = LogHistogram()
                entry.ttft.add(ttft * 1000)
            if usage is not None:
                entry.prompt += usage.prompt_tokens
                entry.completion += usage.completion_tokens
                self.m_tokens.inc((model_id, provider, "input"), usage.prompt_tokens)
                self.m_tokens.inc((model_id, provider, "output"), usage.completion_tokens)
            if cost_pico:
                entry.cost_pico += cost_pico
                self.m_cost.inc(key, cost_pico / 10**12)
            if decision is not None:
                primary = decision.primary.id
                step.decisions[primary] = step.decisions.get(primary, 0) + 1
                self.m_decisions.inc((primary, decision.strategy, decision.profile or ""))
                if served is not None and served.id != primary:
                    entry.fallbacks += 1
                    self.m_fallbacks.inc((primary, served.id))
            self.recent.append((when, request_id, status, served, decision))
        if trace is not None and trace.sampled and self.tracing is not None:
            from .tracing import spans_of

            end = trace.start + int(duration * 1e9)
            root = _root_attributes(
                request_id, status, served, decision, usage, cost_pico, payment, settlement, trace, provider
            )
            # OpenTelemetry's HTTP conventions: a server span's status stays unset for a 4xx
            server_error = failed and executed
            spans.extend(spans_of(self.tracing, trace, end, root, (error or str(status)) if server_error else None))
        if self.access:
            fields: dict[str, Any] = {
                "event": "request",
                "request_id": request_id,
                "method": "POST",
                "path": "/v1/chat/completions",
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "model": model_id or None,
                "provider": provider or None,
                "actor": actor.id,
                "actor_kind": actor.kind,
            }
            if decision is not None and served is not None and served.id != decision.primary.id:
                fields["fallback_from"] = decision.primary.id
            if usage is not None:
                fields["prompt_tokens"] = usage.prompt_tokens
                fields["completion_tokens"] = usage.completion_tokens
                fields["cost_usd"] = round(cost_pico / 10**12, 9)
            if ttft is not None:
                fields["ttft_ms"] = round(ttft * 1000, 3)
            if payment is not None:
                fields["payer"] = payment.payer
                fields["network"] = payment.network
                fields["authorized_usd"] = payment.amount / 1e6
                if settlement is not None:
                    fields["settled"] = settlement.success
                    if settlement.transaction:
                        fields["transaction"] = settlement.transaction
            if error:
                fields["error"] = error
            if trace is not None:
                fields["trace_id"] = f"{trace.trace_id:032x}"
            access_log.info("%s %s %s", "POST", "/v1/chat/completions", status, extra={"fields": fields})

    def _absorb_settlement(self, item: tuple[Any, ...]) -> None:
        _, when, intent, response = item
        network = intent.network
        step = self._step_of(when)
        charged = charged_amount(intent, response) if response.success else 0
        if response.success:
            payer = intent.payer
            if payer not in self._payers:
                if len(self._payers) >= self.config.max_payers:
                    payer = "other"
                else:
                    self._payers.add(payer)
            step.settled += 1
            step.spend += charged
            step.by_network[network] = step.by_network.get(network, 0) + charged
            step.by_payer[intent.payer] = step.by_payer.get(intent.payer, 0) + charged
            self.m_spend.inc((network, payer), charged / 1e6)
            self.m_settlements.inc((network, "settled"))
        else:
            step.failed += 1
            self.m_settlements.inc((network, "failed"))
        self.recent_settlements.append(item)
        event_log.info(
            "settlement %s on %s",
            "settled" if response.success else "failed",
            network,
            extra={
                "fields": {
                    "event": "settlement",
                    "request_id": intent.request_id,
                    "network": network,
                    "payer": intent.payer,
                    "charged_usd": charged / 1e6,
                    "cost_usd": intent.charge / 1e6,
                    "success": response.success,
                    "transaction": response.transaction or None,
                    "error": response.errorReason,
                }
            },
        )

    async def _run(self) -> None:
        interval = self.config.export_interval_seconds
        wake = self._wake
        assert wake is not None
        loop = asyncio.get_running_loop()
        while True:
            # not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as
            # the event is set, and stop() would then wait forever
            timer = loop.call_later(0.25, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()
            wake.clear()
            while self.queue:  # in slices, so that serving goes on between them
                self.flush(256)
                await asyncio.sleep(0)
            if self._metrics_exporter is not None and time.monotonic() - self._last_export >= interval:
                self._last_export = time.monotonic()
                try:
                    await self.export_metrics()
                except Exception as exc:
                    log.warning("cannot export metrics: %s", exc)

    async def refresh_gauges(self) -> None:
        """Read what is not fed by requests: the outbox's depth."""
        router = self.router
        if not router.rails:
            return
        with contextlib.suppress(Exception):  # a ledger that is down: keep the last figure
            self.outbox_depth = len(await router.ledger.intents("pending"))

    async def export_metrics(self) -> None:
        from .otel import metrics_data

        await self.refresh_gauges()
        data = metrics_data(self.registry, self.config)
        await asyncio.to_thread(self._metrics_exporter.export, data)

    def start(self) -> None:
        if self._task is None:
            if self.tracing is not None:
                self.tracing.reopen()
            if self.config.metrics:
                from .otel import metric_exporter

                self._metrics_exporter = metric_exporter(self.config)
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="clawrouter-telemetry")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._wake = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.flush()
        if self._metrics_exporter is not None:
            with contextlib.suppress(Exception):
                await self.export_metrics()
            await asyncio.to_thread(self._metrics_exporter.shutdown)
            self._metrics_exporter = None
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes; its export thread ends

    # --- readers -------------------------------------------------------------------------------

    async def prometheus(self) -> bytes:
        self.flush()
        await self.refresh_gauges()
        return self.registry.prometheus()

    async def stats(self, window: int) -> dict[str, Any]:
        """The ``GET /-/stats`` document (see docs/observability.md)."""
        self.flush()
        await self.refresh_gauges()
        now = time.time()
        base = self.step
        step = base * max(1, math.ceil(window / base / 120))  # at most ~120 points
        first = int((now - window) // base)
        last = int(now // base)
        points = math.ceil((last - first + 1) * base / step)
        origin = first * base
        t = [origin + i * step for i in range(points)]
        requests = [0] * points
        errors = [0] * points
        fallbacks = [0] * points
        cost = [0] * points
        spend = [0] * points
        latency: list[LogHistogram] = [LogHistogram() for _ in range(points)]
        models: dict[tuple[str, str], _ModelStep] = {}
        decisions: dict[str, int] = {}
        by_network: dict[str, int] = {}
        by_payer: dict[str, int] = {}
        totals = {"settled": 0, "failed": 0, "rejected": 0, "unrouted": 0}
        for index, item in self.steps.items():
            if index < first or index > last:
                continue
            slot = min(points - 1, (index * base - origin) // step)
            for key, entry in item.models.items():
                total = models.get(key)
                if total is None:
                    total = models[key] = _ModelStep()
                _merge_model(total, entry)
                requests[slot] += entry.requests
                errors[slot] += entry.errors
                fallbacks[slot] += entry.fallbacks
                cost[slot] += entry.cost_pico
            latency[slot].merge(item.latency)
            requests[slot] += item.unrouted_errors  # failed before a model was chosen (every circuit open)
            errors[slot] += item.unrouted_errors
            spend[slot] += item.spend
            totals["settled"] += item.settled
            totals["failed"] += item.failed
            totals["rejected"] += item.rejected
            totals["unrouted"] += item.unrouted_errors
            _add(decisions, item.decisions)
            _add(by_network, item.by_network)
            _add(by_payer, item.by_payer)
        n_requests = sum(requests)
        n_errors = sum(errors)
        n_fallbacks = sum(fallbacks)
        served = n_requests - totals["unrouted"]
        percentiles = [h.percentiles((0.5, 0.95)) for h in latency]
        model_rows = []
        for (model, provider), entry in sorted(models.items(), key=lambda kv: -kv[1].requests):
            p = entry.latency.percentiles(_QUANTILES)
            row: dict[str, Any] = {
                "model": model,
                "provider": provider,
                "requests": entry.requests,
                "errors": entry.errors,
                "fallbacks": entry.fallbacks,
                "share": round(entry.requests / served, 4) if served else 0.0,
                "latency_ms": _pct(p),
                "ttft_ms": _pct(entry.ttft.percentiles(_QUANTILES)) if entry.ttft is not None else None,
                "prompt_tokens": entry.prompt,
                "completion_tokens": entry.completion,
                "cost_usd": entry.cost_pico / 10**12,
            }
            model_rows.append(row)
        top_payers = dict(sorted(by_payer.items(), key=lambda kv: -kv[1])[:20])
        return {
            "generated_at": now,
            "window_seconds": window,
            "step_seconds": step,
            "replica": self.router.replica,
            "totals": {
                "requests": n_requests,
                "errors": n_errors,
                "error_rate": round(n_errors / n_requests, 4) if n_requests else 0.0,
                "fallbacks": n_fallbacks,
                "fallback_rate": round(n_fallbacks / n_requests, 4) if n_requests else 0.0,
                "rejected": totals["rejected"],
                "cost_usd": sum(cost) / 10**12,
                "spend_usd": sum(spend) / 1e6,
                "prompt_tokens": sum(e.prompt for e in models.values()),
                "completion_tokens": sum(e.completion for e in models.values()),
                "settlements": {"settled": totals["settled"], "failed": totals["failed"]},
            },
            "series": {
                "t": t,
                "requests": requests,
                "errors": errors,
                "fallbacks": fallbacks,
                "cost_usd": [c / 10**12 for c in cost],
                "spend_usd": [s / 1e6 for s in spend],
                "p50_ms": [_round(p[0]) for p in percentiles],
                "p95_ms": [_round(p[1]) for p in percentiles],
            },
            "models": model_rows,
            "spend": {
                "by_network": {k: v / 1e6 for k, v in by_network.items()},
                "by_payer": {k: v / 1e6 for k, v in top_payers.items()},
            },
            "routing": {"decisions": decisions, "recent": [_decision_row(i) for i in reversed(self.recent)]},
            "settlements": {
                "recent": [self._settlement_row(i) for i in reversed(self.recent_settlements)],
                "outbox_depth": self.outbox_depth,
            },
            "breakers": [
                {"provider": provider, "model": model, "state": b.state}
                for (provider, model), b in sorted(self.router.breakers.items())
            ],
            "events": {"queued": len(self.queue), "dropped": self.dropped},
        }

    def _settlement_row(self, item: tuple[Any, ...]) -> dict[str, Any]:
        _, when, intent, response = item
        template = self.explorers.get(intent.network)
        tx = response.transaction
        return {
            "time": when,
            "request_id": intent.request_id,
            "network": intent.network,
            "payer": intent.payer,
            "amount_usd": charged_amount(intent, response) / 1e6,
            "status": "settled" if response.success else "failed",
            "transaction": tx,
            "explorer_url": template.replace("{tx}", tx) if template and tx else None,
            "error": response.errorReason,
        }


def charged_amount(intent: SettlementIntent, response: SettlementResponse) -> int:
    """What a settled payment moved, in atomic units: the settlement's ``amount`` when it gives
    one, else the signed amount (``exact`` settles what was signed, not the lower actual cost)."""
    if response.amount and response.amount.isdigit():
        return int(response.amount)
    return intent.amount


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def _merge_model(total: _ModelStep, entry: _ModelStep) -> None:
    total.requests += entry.requests
    total.errors += entry.errors
    total.fallbacks += entry.fallbacks
    total.prompt += entry.prompt
    total.completion += entry.completion
    total.cost_pico += entry.cost_pico
    total.latency.merge(entry.latency)
    if entry.ttft is not None:
        if total.ttft is None:
            total.ttft = LogHistogram()
        total.ttft.merge(entry.ttft)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _pct(values: Iterable[float | None]) -> dict[str, float | None]:
    return dict(zip(("p50", "p95", "p99"), (_round(v) for v in values), strict=True))


def _decision_row(item: tuple[Any, ...]) -> dict[str, Any]:
    when, request_id, status, served, decision = item
    row: dict[str, Any] = {"time": when, "request_id": request_id, "status": status}
    if decision is None:
        row.update(model=served.id if served else None, served_by=served.id if served else None)
        return row
    features = decision.features
    excluded = dict(list(decision.excluded.items())[:5])
    served_by = served.id if served is not None else None
    task = getattr(features, "task", None) if features is not None else None
    fallbacks = [m.id for m in decision.fallbacks]
    explanation = f"{decision.profile or 'explicit'} → {decision.primary.id} ({decision.strategy} strategy"
    explanation += f", task {task})" if task else ")"
    details = []
    if fallbacks:
        details.append(f"{len(fallbacks)} fallback{'s' * (len(fallbacks) != 1)}")
    if decision.excluded:
        details.append(f"{len(decision.excluded)} model{'s' * (len(decision.excluded) != 1)} excluded")
    if served_by and served_by != decision.primary.id:
        details.append(f"answered by fallback {served_by}")
    elif served_by is None:
        details.append("failed")
    if details:
        explanation += ": " + ", ".join(details)
    row.update(
        model=decision.primary.id,
        served_by=served_by,
        provider=decision.primary.provider,
        strategy=decision.strategy,
        profile=decision.profile,
        task=task,
        decision_us=round(decision.elapsed_ns / 1000, 1),
        fallbacks=fallbacks,
        excluded=excluded,
        explanation=explanation,
    )
    return row


def _root_attributes(
    request_id: str,
    status: int,
    served: Any,
    decision: Any,
    usage: Any,
    cost_pico: int,
    payment: Any,
    settlement: Any,
    trace: Trace,
    provider: str,
) -> dict[str, Any]:
    """The server span's attributes: OpenTelemetry's HTTP and GenAI conventions, and ours."""
    attributes: dict[str, Any] = {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": status,
        "gen_ai.operation.name": "chat",
        "clawrouter.request_id": request_id,
    }
    if decision is not None:
        attributes["gen_ai.request.model"] = decision.profile or decision.primary.id
        attributes["clawrouter.strategy"] = decision.strategy
        if decision.profile:
            attributes["clawrouter.profile"] = decision.profile
        attributes["clawrouter.decision_us"] = round(decision.elapsed_ns / 1000, 1)
        attributes["clawrouter.route"] = [m.id for m in decision.chain]
    if provider:
        attributes["gen_ai.provider.name"] = provider
        attributes["gen_ai.system"] = provider
    if served is not None:
        attributes["gen_ai.response.model"] = served.id
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        attributes["clawrouter.cost_usd"] = cost_pico / 10**12
    if trace.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = trace.finish_reasons
    if status >= 500:
        attributes["error.type"] = str(status)
    if payment is not None:
        attributes["clawrouter.payment.network"] = payment.network
        attributes["clawrouter.payment.scheme"] = payment.scheme
        attributes["clawrouter.quote_usd"] = payment.amount / 1e6
        if settlement is not None:
            attributes["clawrouter.payment.settled"] = settlement.success
            if settlement.transaction:
                attributes["clawrouter.payment.transaction"] = settlement.transaction
            attributes["clawrouter.charged_usd"] = payment.amount / 1e6 if settlement.success else 0.0
    return attributes


class TelemetryMiddleware:
    """The stack's outermost stage when observability is enabled: starts the request's trace
    (traces on) and hands the finished request to the collector."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router
        telemetry = router.telemetry
        assert telemetry is not None
        self.telemetry = telemetry
        self.tracing = telemetry.tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope, self.router)
        if self.tracing is not None:
            ctx.trace = self.tracing.begin(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            self.telemetry.request(ctx)
