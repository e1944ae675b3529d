"""OpenTelemetry metrics: the registry's figures as OTLP or console exports.

Nothing is recorded into OpenTelemetry instruments per request: every
``export_interval_seconds`` the collector converts its registry (cumulative sums, gauges and
explicit-bucket histograms) into the SDK's ``MetricsData`` and hands it to the exporter, in a
worker thread. Needs ``opentelemetry-sdk`` (``pip install 'clawrouter[otel]'``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .metrics import Counter, Gauge, Histogram, Registry

if TYPE_CHECKING:
    from ..config import ObservabilityConfig

__all__ = ["ATTRIBUTES", "metric_exporter", "metrics_data"]

#: Prometheus label → OpenTelemetry attribute (the GenAI and HTTP conventions where they apply)
ATTRIBUTES = {
    "model": "gen_ai.response.model",
    "provider": "gen_ai.provider.name",
    "status": "http.response.status_code",
    "type": "gen_ai.token.type",
    "network": "clawrouter.payment.network",
    "payer": "clawrouter.payment.payer",
    "outcome": "clawrouter.settlement.outcome",
    "strategy": "clawrouter.strategy",
    "profile": "clawrouter.profile",
    "served_by": "clawrouter.served_by",
}

_START = time.time_ns()


def _attributes(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        key = ATTRIBUTES.get(name, f"clawrouter.{name}")
        out[key] = int(value) if name == "status" and value.isdigit() else value
    return out


def metrics_data(registry: Registry, config: ObservabilityConfig) -> Any:
    """The registry as an OpenTelemetry ``MetricsData`` (cumulative temporality)."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        HistogramDataPoint,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.metrics.export import (
        Gauge as OGauge,
    )
    from opentelemetry.sdk.metrics.export import (
        Histogram as OHistogram,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from .. import __version__

    now = time.time_ns()
    cumulative = AggregationTemporality.CUMULATIVE
    metrics = []
    for metric in registry.metrics:
        data: Any
        if isinstance(metric, Counter):
            points = [
                NumberDataPoint(_attributes(metric.labels, labels), _START, now, value)
                for labels, value in metric.values.items()
            ]
            data = Sum(points, cumulative, True)
        elif isinstance(metric, Gauge):
            points = [
                NumberDataPoint(_attributes(metric.labels, labels), _START, now, value)
                for labels, value in metric.current().items()
            ]
            data = OGauge(points)
        elif isinstance(metric, Histogram):
            hpoints = [
                HistogramDataPoint(
                    _attributes(metric.labels, labels),
                    _START,
                    now,
                    series.count,
                    series.sum,
                    list(series.counts),
                    list(metric.bounds),
                    series.min,
                    series.max,
                )
                for labels, series in metric.values.items()
            ]
            data = OHistogram(hpoints, cumulative)
        else:  # pragma: no cover - the registry holds these three kinds only
            continue
        metrics.append(Metric(metric.otel, metric.help, metric.unit, data))
    resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
    scope = ScopeMetrics(InstrumentationScope("clawrouter", __version__), metrics, "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])


def metric_exporter(config: ObservabilityConfig) -> Any:
    kind = config.metrics
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        endpoint = config.otlp_endpoint.rstrip("/") + "/v1/metrics"
        return OTLPMetricExporter(endpoint=endpoint, headers=dict(config.otlp_headers))
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    raise ValueError(f"unknown metrics exporter {kind!r}; expected 'otlp' or 'console'")
