"""A small metrics registry: counters, gauges and histograms with labels.

Written to by the telemetry collector's background task only (never by the request path),
read by ``GET /-/metrics`` (Prometheus text format 0.0.4, :meth:`Registry.prometheus`) and by
the OpenTelemetry metrics export (:func:`clawrouter.telemetry.otel.metrics_data`). Values are
cumulative since the router started.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

__all__ = ["Counter", "Gauge", "Histogram", "LogHistogram", "Registry"]

Labels = tuple[str, ...]
Reader = Callable[[], dict[Labels, float]]

#: request duration buckets (seconds): LLM calls take from milliseconds to minutes
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Labels, *, otel: str, unit: str = "") -> None:
        self.name = name
        self.help = help
        self.labels = labels
        #: the OpenTelemetry instrument name and unit ("s", "{token}", "USD", "1")
        self.otel = otel
        self.unit = unit

    def _label_text(self, values: Labels, extra: str = "") -> str:
        parts = [f'{k}="{_escape(v)}"' for k, v in zip(self.labels, values, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> Iterator[str]:
        """The metric in the Prometheus text format."""
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Labels = (), **kw: str) -> None:
        super().__init__(name, help, labels, **kw)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def lines(self) -> Iterator[str]:
        yield from self.header()
        for labels, value in self.values.items():
            yield f"{self.name}{self._label_text(labels)} {_number(value)}"


class Gauge(_Metric):
    """A gauge read when exported: ``read`` returns ``{labels: value}``."""

    kind = "gauge"

    def __init__(
        self, name: str, help: str, labels: Labels = (), read: Reader | None = None, **kw: str
    ) -> None:
        super().__init__(name, help, labels, **kw)
        self.values: dict[Labels, float] = {}
        self.read = read

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def current(self) -> dict[Labels, float]:
        return self.read() if self.read is not None else self.values

    def lines(self) -> Iterator[str]:
        yield from self.header()
        for labels, value in self.current().items():
            yield f"{self.name}{self._label_text(labels)} {_number(value)}"


class _Series:
    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Labels = (), buckets: Iterable[float] = DURATION_BUCKETS, **kw: str
    ) -> None:
        super().__init__(name, help, labels, **kw)
        self.bounds = tuple(sorted(buckets))
        self.values: dict[Labels, _Series] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.values.get(labels)
        if series is None:
            series = self.values[labels] = _Series(len(self.bounds) + 1)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value
        series.count += 1
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value

    def lines(self) -> Iterator[str]:
        yield from self.header()
        for labels, series in self.values.items():
            running = 0
            for bound, count in zip((*self.bounds, math.inf), series.counts, strict=True):
                running += count
                le = 'le="' + _number(bound) + '"'
                yield f"{self.name}_bucket{self._label_text(labels, le)} {running}"
            yield f"{self.name}_sum{self._label_text(labels)} {_number(series.sum)}"
            yield f"{self.name}_count{self._label_text(labels)} {series.count}"


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self.metrics.append(metric)
        return metric

    def counter(self, name: str, help: str, labels: Labels = (), **kw: str) -> Counter:
        metric = Counter(name, help, labels, **kw)
        self.add(metric)
        return metric

    def histogram(
        self, name: str, help: str, labels: Labels = (), buckets: Iterable[float] = DURATION_BUCKETS, **kw: str
    ) -> Histogram:
        metric = Histogram(name, help, labels, buckets, **kw)
        self.add(metric)
        return metric

    def gauge(
        self, name: str, help: str, labels: Labels = (), read: Reader | None = None, **kw: str
    ) -> Gauge:
        metric = Gauge(name, help, labels, read, **kw)
        self.add(metric)
        return metric

    def prometheus(self) -> bytes:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for metric in self.metrics:
            lines.extend(metric.lines())
        return ("\n".join(lines) + "\n").encode()


class LogHistogram:
    """Counts in logarithmic buckets (5 % wide): percentiles within 2.5 %, mergeable, small.

    For ``/-/stats``: one per model and time step, summed over a window.
    """

    __slots__ = ("counts",)
    _SCALE = 1 / math.log(1.05)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, value: float) -> None:
        index = math.floor(math.log(value) * self._SCALE) if value > 1e-6 else -284
        self.counts[index] = self.counts.get(index, 0) + 1

    def merge(self, other: LogHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentiles(self, quantiles: Iterable[float]) -> list[float | None]:
        """The values at ``quantiles`` (0..1): each bucket's geometric middle."""
        total = self.total
        if not total:
            return [None for _ in quantiles]
        ordered = sorted(self.counts.items())
        out: list[float | None] = []
        for q in quantiles:
            rank = max(1, math.ceil(q * total))
            running = 0
            for index, count in ordered:
                running += count
                if running >= rank:
                    out.append(1.05 ** (index + 0.5))
                    break
        return out
