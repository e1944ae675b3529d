"""Traces: what the request path records, and its OpenTelemetry spans.

The request path only takes timestamps: :class:`Trace` holds the trace context (from the
caller's ``traceparent``, the host app's current span, or new), the stages' start and end
times and each upstream attempt, with the span ids already chosen so the attempt's
``traceparent`` can be sent upstream. The collector's background task turns a finished
:class:`Trace` into OpenTelemetry spans (:func:`spans_of`) and hands them to the span
processor. This keeps the request path's cost to a few timestamps; starting and ending SDK spans
through a tracer costs several times more than building their finished records afterwards.

``opentelemetry-sdk`` is needed only when traces are enabled (``pip install
'clawrouter[otel]'``); this module imports it lazily.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ObservabilityConfig
    from ..types import Scope

__all__ = ["Attempt", "MemorySpanExporter", "Trace", "TraceSetup", "parse_traceparent"]

_rand = random.Random()  # span and trace ids (W3C: random, not secret)


def _new_id(bits: int) -> int:
    while True:
        value = _rand.getrandbits(bits)
        if value:
            return value


def parse_traceparent(value: bytes | str | None) -> tuple[int, int, bool] | None:
    """``(trace_id, parent span id, sampled)`` from a W3C ``traceparent`` header, or ``None``."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    parts = text.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    if parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


class Attempt:
    """One upstream attempt: its span id, timing and outcome."""

    __slots__ = ("end", "error", "model", "number", "provider", "span_id", "start", "upstream")

    def __init__(self, model: str, provider: str, upstream: str, number: int) -> None:
        self.model, self.provider, self.upstream, self.number = model, provider, upstream, number
        self.span_id = _new_id(64)
        self.start = time.time_ns()
        self.end = 0
        self.error: str | None = None


class Trace:
    """The trace of one request, filled in by the stages (timestamps in ns since the epoch)."""

    __slots__ = (
        "attempts",
        "execute_started",
        "finish_reasons",
        "parent_id",
        "sampled",
        "span_id",
        "stages",
        "start",
        "trace_id",
        "tracestate",
    )

    def __init__(self, trace_id: int, parent_id: int, sampled: bool, tracestate: str | None = None) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id  # 0: a root span
        self.sampled = sampled
        #: the caller's W3C ``tracestate``, passed on upstream unchanged
        self.tracestate = tracestate
        self.span_id = _new_id(64)
        self.start = time.time_ns()
        #: (stage, start, end, attributes or the route's decision) in the order they ended; the
        #: attributes that can wait are built by the collector (:func:`spans_of`), not here
        self.stages: list[tuple[str, int, int, Any]] = []
        self.attempts: list[Attempt] = []
        self.finish_reasons: list[str] | None = None
        self.execute_started = 0

    def stage(self, name: str, start: int, attributes: dict[str, Any] | None = None) -> None:
        self.stages.append((name, start, time.time_ns(), attributes))

    def note_finish(self, chunk: bytes | list[bytes]) -> None:
        """Keep the ``finish_reason`` values found in a completion or in streamed chunks."""
        for data in [chunk] if isinstance(chunk, bytes) else chunk:
            for marker in (b'"finish_reason":"', b'"finish_reason": "'):
                at = data.find(marker)
                while at >= 0:
                    start = at + len(marker)
                    end = data.find(b'"', start)
                    if end < 0:
                        break
                    if self.finish_reasons is None:
                        self.finish_reasons = []
                    self.finish_reasons.append(data[start:end].decode("utf-8", "replace"))
                    at = data.find(marker, end)

    def route(self, decision: Any) -> None:
        """A routing decision just taken (its span ends now and lasted ``decision.elapsed_ns``)."""
        end = time.time_ns()
        self.stages.append(("route", end - decision.elapsed_ns, end, decision))

    def attempt(self, model: str, provider: str, upstream: str) -> Attempt:
        attempt = Attempt(model, provider, upstream, len(self.attempts) + 1)
        self.attempts.append(attempt)
        return attempt

    def traceparent(self, span_id: int) -> str:
        """The ``traceparent`` header naming ``span_id`` (an attempt's) as the parent."""
        return f"00-{self.trace_id:032x}-{span_id:016x}-{'01' if self.sampled else '00'}"


class TraceSetup:
    """Trace configuration: starts traces for requests, exports finished ones."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.ratio = config.sample_ratio
        self.config = config
        from opentelemetry import trace as trace_api
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from .. import __version__

        self._api = trace_api
        self.resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        self.scope = InstrumentationScope("clawrouter", __version__)
        self.processor, self.exporter = _processor(config)
        #: the in-memory exporter takes a flush's spans in one call, without a processor's lock per span
        self.direct = isinstance(self.exporter, MemorySpanExporter)
        self.closed = False

    def begin(self, scope: Scope) -> Trace:
        traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        parsed = parse_traceparent(traceparent)
        if parsed is None:
            current = self._api.get_current_span().get_span_context()  # a host app's span (FastAPI...)
            if current.is_valid:
                parsed = current.trace_id, current.span_id, bool(current.trace_flags.sampled)
                tracestate = None
        if parsed is not None:
            return Trace(parsed[0], parsed[1], parsed[2], tracestate)
        return Trace(_new_id(128), 0, self.ratio >= 1.0 or _rand.random() < self.ratio)

    def export(self, spans: list[Any]) -> None:
        if self.direct:
            self.exporter.export(spans)
            return
        on_end = self.processor.on_end
        for span in spans:
            on_end(span)

    def shutdown(self) -> None:
        """Flush and stop the processor (its export thread); :meth:`reopen` makes a new one."""
        self.closed = True
        self.processor.shutdown()

    def reopen(self) -> None:
        """A router started again after a stop: a new processor (and exporter) for its spans."""
        if self.closed:
            self.processor, self.exporter = _processor(self.config)
        self.closed = False


def _processor(config: ObservabilityConfig) -> tuple[Any, Any]:
    """The span processor for ``[observability] traces`` and its exporter."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    exporter: Any
    kind = config.traces
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = config.otlp_endpoint.rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(config.otlp_headers))
    elif kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    elif kind == "memory":  # spans go straight to it (TraceSetup.export); the processor shuts it down
        memory: Any = MemorySpanExporter()  # the SpanExporter interface, without importing the SDK here
        return SimpleSpanProcessor(memory), memory
    else:
        raise ValueError(f"unknown trace exporter {kind!r}; expected 'otlp', 'console' or 'memory'")
    return BatchSpanProcessor(exporter), exporter


class MemorySpanExporter:
    """Keeps the latest ``limit`` spans in memory (``traces = "memory"``: tests and benchmarks).

    Unlike the SDK's ``InMemorySpanExporter`` it is bounded, so a long-running router with it
    does not grow without end."""

    def __init__(self, limit: int = 2_000) -> None:
        from collections import deque

        self._spans: deque[Any] = deque(maxlen=limit)
        self.exported = 0

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._spans.extend(spans)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def get_finished_spans(self) -> tuple[Any, ...]:
        return tuple(self._spans)

    def clear(self) -> None:
        self._spans.clear()

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _route_attributes(decision: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "clawrouter.strategy": decision.strategy,
        "clawrouter.model": decision.primary.id,
        "clawrouter.fallbacks": [m.id for m in decision.fallbacks],
        "clawrouter.decision_us": round(decision.elapsed_ns / 1000, 1),
        "clawrouter.excluded": len(decision.excluded),
    }
    if decision.profile:
        attributes["clawrouter.profile"] = decision.profile
    task = getattr(decision.features, "task", None)
    if task:
        attributes["clawrouter.task"] = task
    return attributes


def spans_of(setup: TraceSetup, trace: Trace, end: int, root: dict[str, Any], error: str | None) -> list[Any]:
    """The OpenTelemetry spans of a finished request: the server span (``root`` attributes),
    one per stage, and under the execute stage one client span per upstream attempt."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_id = trace.trace_id
    resource, scope = setup.resource, setup.scope
    root_context = SpanContext(trace_id, trace.span_id, False, flags)
    parent = SpanContext(trace_id, trace.parent_id, True, flags) if trace.parent_id else None
    ok = Status(StatusCode.UNSET)
    spans: list[Any] = [
        ReadableSpan(
            "POST /v1/chat/completions",
            root_context,
            parent,
            resource,
            root,
            kind=SpanKind.SERVER,
            status=Status(StatusCode.ERROR, error) if error else ok,
            start_time=trace.start,
            end_time=end,
            instrumentation_scope=scope,
        )
    ]
    answered = {k: v for k, v in root.items() if k.startswith(("gen_ai.response.", "gen_ai.usage."))}
    execute_context = None
    for name, start, stop, payload in trace.stages:
        context = SpanContext(trace_id, _new_id(64), False, flags)
        attributes = payload
        if name == "route":
            attributes = _route_attributes(payload)
        elif name == "execute":
            execute_context = context
            if answered:
                attributes = {"gen_ai.provider.name": root.get("gen_ai.provider.name"), **answered, **(payload or {})}
        failed = attributes.get("error.type") if attributes else None
        spans.append(
            ReadableSpan(
                f"clawrouter.{name}",
                context,
                root_context,
                resource,
                attributes,
                status=Status(StatusCode.ERROR, str(failed)) if failed else ok,
                start_time=start,
                end_time=stop,
                instrumentation_scope=scope,
            )
        )
    last = trace.attempts[-1] if trace.attempts else None
    for attempt in trace.attempts:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.system": attempt.provider,
            "gen_ai.request.model": attempt.upstream,
            "clawrouter.model": attempt.model,
            "clawrouter.attempt": attempt.number,
        }
        if attempt.error:
            attributes["error.type"] = attempt.error
        elif attempt is last:
            attributes.update(answered)
        spans.append(
            ReadableSpan(
                f"chat {attempt.upstream}",
                SpanContext(trace_id, attempt.span_id, False, flags),
                execute_context or root_context,
                resource,
                attributes,
                kind=SpanKind.CLIENT,
                status=Status(StatusCode.ERROR, attempt.error) if attempt.error else ok,
                start_time=attempt.start,
                end_time=attempt.end or end,
                instrumentation_scope=scope,
            )
        )
    return spans
