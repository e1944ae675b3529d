#!/usr/bin/env python
"""Observability overhead: what metrics, traces and the access log cost the gateway per request.

Five ``clawrouter serve`` processes, each with one ``kind = "openai"`` provider pointing at the
same fake upstream (the one of ``gateway_overhead.py``), measured in one run, interleaved
(round-robin rounds, the target order rotated every round):

* ``off``       ``[observability] enabled = false``: no telemetry stage in the stack;
* ``metrics``   ``enabled = true`` (the default): the metrics registry and the ``/-/stats``
                time steps, no traces, no access log;
* ``full``      the issue's "tracing and metrics enabled": ``enabled = true`` and
                ``traces = "memory"`` (every span built and handed to the bounded in-memory
                exporter);
* ``logs``      ``full`` plus ``access_log = true`` and ``--log-format json`` (one JSON line per
                request, to a file): reported, no target;
* ``baseline``  the same gateway at the commit before the observability work (``d4d8f94``),
                from a ``git worktree`` (``--baseline-tree``, created when missing) started with
                ``PYTHONPATH=<tree>``.

The gateways share one CPU (the last; the upstream and the load generator get the others), and
the figure is the gateway process's CPU time per request, read from the kernel's CPU clock of
its pid before and after each round (``gateway_overhead.py``'s machinery, imported). The
collector drains its queue every 0.25 s, after the response: each round waits
``--settle-seconds`` (0.3) after its last response before reading the clock, so the deferred
work of a round's requests is counted in that round.

Targets (issue 9): ``full / off`` at most 1.15 per scenario; ``off`` against ``baseline``:
nothing measurable, i.e. the difference of the medians is within the baseline's own
round-to-round spread (max - min of its rounds) in the same run.

``--otlp`` adds a sixth target, ``otlp``: ``full`` with ``traces = "otlp"`` to a local sink
process (batch span processor, protobuf over HTTP). ``--gc-stats`` starts the gateways through
a wrapper (``_gateway``) that times their garbage collections.

A short in-process section (no servers) explains the figures: whole requests through
``router.app`` (off, metrics, full), the cost of the request path's ``Telemetry.request(ctx)``
and ``TraceSetup.begin``, of the collector's absorb per request (``flush()`` of queued records)
with and without traces and the access log, and of one OTel metrics export (a conversion of the
registry every ``export_interval_seconds``, not a cost per request).

    python benchmarks/observability.py            # about 3 minutes
    python benchmarks/observability.py --quick    # about 50 seconds
    python benchmarks/observability.py --json > result.json
    python benchmarks/observability.py --otlp --gc-stats --no-micro
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_overhead as go

REPO = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "d4d8f94"
DEFAULT_BASELINE_TREE = Path(tempfile.gettempdir()) / "clawrouter-baseline"
FULL_TARGET = 1.15

OBSERVABILITY = {
    "off": "[observability]\nenabled = false\n",
    "metrics": "[observability]\nenabled = true\n",
    "full": '[observability]\nenabled = true\ntraces = "memory"\n',
    "logs": '[observability]\nenabled = true\ntraces = "memory"\naccess_log = true\nlog_format = "json"\n',
    "baseline": "",  # d4d8f94 has no [observability] section (unknown keys are an error)
    # --otlp: "full" with a real exporter (BatchSpanProcessor, OTLP/HTTP protobuf) to a local sink
    "otlp": '[observability]\nenabled = true\ntraces = "otlp"\notlp_endpoint = "http://127.0.0.1:{sink}"\n',
}
DESCRIPTION = {
    "off": "[observability] enabled = false (no telemetry stage)",
    "metrics": "[observability] enabled = true: registry + /-/stats steps; no traces, no access log",
    "full": 'enabled, traces = "memory" (metrics and traces; no access log)',
    "logs": 'as full, plus access_log = true and --log-format json (log to a file)',
    "baseline": f"commit {BASELINE_COMMIT}, before the observability work",
    "otlp": 'as full, but traces = "otlp" to a local sink (batch processor, protobuf over HTTP)',
}
ORDER = ("baseline", "off", "metrics", "full", "logs", "otlp")
log = go.log


# --------------------------------------------------------------------------------------------
# The baseline checkout
# --------------------------------------------------------------------------------------------


def git(*argv: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout.strip()


def ensure_baseline(tree: Path) -> str:
    """The worktree at ``BASELINE_COMMIT`` (created when missing); its full commit id."""
    want = git("rev-parse", f"{BASELINE_COMMIT}^{{commit}}")
    if not (tree / "clawrouter" / "__init__.py").exists():
        if tree.exists() and any(tree.iterdir()):
            raise RuntimeError(f"{tree} exists and is not a clawrouter checkout; pass --baseline-tree")
        log(f"creating the baseline worktree: git worktree add --detach {tree} {BASELINE_COMMIT}")
        git("worktree", "add", "--detach", str(tree), want)
    have = git("rev-parse", "HEAD", cwd=tree)
    if have != want:
        raise RuntimeError(
            f"{tree} is at {have[:10]}, not {want[:10]} ({BASELINE_COMMIT}); pass another --baseline-tree"
        )
    return have


# --------------------------------------------------------------------------------------------
# Child processes of our own: a local OTLP/HTTP sink, and a gateway wrapper timing the GC
# --------------------------------------------------------------------------------------------


def serve_sink(port: int) -> int:
    """``_serve otlp-sink --port N``: accepts OTLP/HTTP posts, counts them; ``GET /health``."""
    import uvicorn

    seen = {"posts": 0, "bytes": 0}

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] == "lifespan":
            await go._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await go._read_body(receive)
        if scope["method"] == "POST":
            seen["posts"] += 1
            seen["bytes"] += len(body)
            out, ctype = b"", b"application/x-protobuf"
        else:
            out, ctype = json.dumps(seen).encode(), b"application/json"
        headers = [(b"content-type", ctype), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")
    return 0


def gateway_main(argv: Sequence[str]) -> int:
    """``_gateway STATS-FILE serve ...``: ``python -m clawrouter.cli serve ...`` with the CPU time of
    every garbage collection (per generation) written to STATS-FILE when it stops (--gc-stats)."""
    import runpy

    stats_file, rest = argv[0], list(argv[1:])
    stats = {0: [0, 0], 1: [0, 0], 2: [0, 0]}  # collections, thread CPU ns
    started = [0]

    def timing(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time_ns()
        else:
            entry = stats[info["generation"]]
            entry[0] += 1
            entry[1] += time.thread_time_ns() - started[0]

    def dump(*_: Any) -> None:
        with open(stats_file, "w") as f:
            json.dump({"gc": stats, "process_cpu_ns": time.process_time_ns()}, f)
        os._exit(0)

    gc.callbacks.append(timing)
    # uvicorn handles SIGTERM while serving, then restores this handler and raises it again
    signal.signal(signal.SIGTERM, dump)
    sys.argv = ["clawrouter", *rest]
    sys.path[0] = os.getcwd()  # as with python -m
    runpy.run_module("clawrouter.cli", run_name="__main__", alter_sys=True)
    dump()
    return 0


# --------------------------------------------------------------------------------------------
# Checks that each target's configuration is really in effect
# --------------------------------------------------------------------------------------------


def http_request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=go.HEADERS if body is not None else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def chat(port: int) -> None:
    status, headers, data = http_request(port, "POST", "/v1/chat/completions", go.request_body(False))
    if status != 200 or headers.get("x-clawrouter-model") != go.MODEL:
        raise RuntimeError(f"chat completion: HTTP {status}, model {headers.get('x-clawrouter-model')}: {data[:200]!r}")


def requests_counted(port: int) -> float:
    """The sum of ``clawrouter_requests_total`` on ``GET /-/metrics`` (which drains the collector)."""
    status, _, data = http_request(port, "GET", "/-/metrics")
    if status != 200:
        raise RuntimeError(f"GET /-/metrics: HTTP {status}")
    total = 0.0
    for line in data.decode().splitlines():
        if line.startswith("clawrouter_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def spans_counted(port: int) -> float:
    """``clawrouter_trace_spans_total`` on ``GET /-/metrics``: spans handed to the exporter."""
    _, _, data = http_request(port, "GET", "/-/metrics")
    for line in data.decode().splitlines():
        if line.startswith("clawrouter_trace_spans_total "):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("GET /-/metrics has no clawrouter_trace_spans_total (traces off?)")


def access_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            if b'"clawrouter.access"' in line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out


def count_access_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if b'"clawrouter.access"' in line)


def verify(name: str, child: go.Child) -> str:
    """Check, with a few requests, that ``name``'s configuration is in effect; what was seen."""
    port = child.port
    chat(port)
    if name in ("off", "baseline"):
        seen = {path: http_request(port, "GET", path)[0] for path in ("/-/metrics", "/-/stats")}
        if any(status != 404 for status in seen.values()):
            raise RuntimeError(f"{name}: observability endpoints answer: {seen}")
        return "GET /-/metrics and /-/stats: 404"
    before = requests_counted(port)
    spans_before = spans_counted(port) if name != "metrics" else 0.0
    size = child.log.stat().st_size
    chat(port)
    after = requests_counted(port)  # drains the collector: the access log line is written by now
    status, _, data = http_request(port, "GET", "/-/stats?window=60")
    stats = json.loads(data) if status == 200 else {}
    counted = stats.get("totals", {}).get("requests", 0)
    if after - before != 1 or counted < 2:
        raise RuntimeError(f"{name}: requests not counted: /-/metrics {before} -> {after}, /-/stats {counted}")
    grew = child.log.stat().st_size - size
    text = f"/-/metrics counts each request ({after:.0f}), /-/stats too ({counted})"
    if name == "metrics":
        if grew:
            raise RuntimeError(f"metrics: the log grew by {grew} bytes for one request (no access log expected)")
        return text + "; nothing logged per request"
    spans = spans_counted(port) - spans_before
    if spans < 4:
        raise RuntimeError(f"{name}: {spans:.0f} spans exported for one request (traces off?)")
    text += f"; {spans:.0f} spans exported per request"
    if name != "logs":
        if grew:
            raise RuntimeError(f"{name}: the log grew by {grew} bytes for one request (no access log expected)")
        return text + "; nothing logged per request"
    lines = access_lines(child.log)
    last = lines[-1] if lines else {}
    # (otlp: the sink's count of posts is checked after the load)
    if not grew or last.get("event") != "request" or last.get("request_id") is None:
        raise RuntimeError(f"{name}: no JSON access log line for the request: {child.log_tail(3)}")
    if not last.get("trace_id"):
        raise RuntimeError(f"{name}: the access log line has no trace_id (traces off?): {last}")
    return text + f"; JSON access log line of {grew} bytes with trace_id {last['trace_id'][:8]}…"


# --------------------------------------------------------------------------------------------
# The server benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    child: go.Child
    source: dict[str, Any]
    verified: str = ""


def start_gateways(
    args: argparse.Namespace,
    procs: go.Processes,
    base_procs: go.Processes | None,
    up_port: int,
    cpus: set[int] | None,
    sink_port: int | None,
) -> list[Gateway]:
    gateways = []
    for name in ORDER:
        if (name == "baseline" and base_procs is None) or (name == "otlp" and sink_port is None):
            continue
        where = procs.workdir / name
        where.mkdir()
        config = go.clawrouter_config(up_port, where)
        with open(config, "a", encoding="utf-8") as f:
            f.write("\n" + OBSERVABILITY[name].replace("{sink}", str(sink_port)))
        port = go.free_port()
        serve = ["serve", "--config", str(config), "--log-level", "warning"]
        if name == "logs":
            serve += ["--log-format", "json"]
        if args.gc_stats:
            argv = [sys.executable, str(Path(__file__).resolve()), "_gateway", str(where / "gc.json"), *serve]
        else:
            argv = [sys.executable, "-m", "clawrouter.cli", *serve]
        owner = base_procs if name == "baseline" else procs
        assert owner is not None
        child = owner.spawn(name, [*argv, "--port", str(port)], port, cpus)
        owner.wait_ready(child, "/-/health")
        health = json.loads(go.urlopen_text(port, "/-/health"))
        if health.get("payments"):
            raise RuntimeError(f"{name} has payment rails configured: {health['payments']}")
        gateways.append(Gateway(name, child, go._source_state(owner.env)))
        log(f"{name}: up in {child.ready_after * 1000:.0f} ms (pid {child.pid})")
    return gateways


def run_servers(args: argparse.Namespace) -> dict[str, Any]:
    pin, pin_text = go.plan_pinning(not args.no_pin)
    if pin:
        os.sched_setaffinity(0, pin["rest"])
    gateway_cpus = pin["gateway"] if pin else None
    baseline_commit = None if args.no_baseline else ensure_baseline(args.baseline_tree)
    env = go.child_env()
    with tempfile.TemporaryDirectory(prefix="clawrouter-obs-bench-") as tmp:
        workdir = Path(tmp)
        procs = go.Processes(workdir, env)
        base_procs = None
        sink = None
        if baseline_commit is not None:
            base_env = dict(env)
            base_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(args.baseline_tree), env.get("PYTHONPATH", "")) if p
            )
            base_procs = go.Processes(workdir, base_env)
        try:
            up_port = go.free_port()
            upstream = procs.spawn(
                "upstream",
                [
                    sys.executable,
                    str(go.SCRIPT),
                    "_serve",
                    "upstream",
                    "--port",
                    str(up_port),
                    "--chunk-gap-ms",
                    str(args.chunk_gap_ms),
                ],
                up_port,
                None,
            )
            procs.wait_ready(upstream, "/health")
            if args.otlp:
                sink_port = go.free_port()
                sink_argv = [sys.executable, str(Path(__file__).resolve()), "_serve", "otlp-sink", str(sink_port)]
                sink = procs.spawn("otlp-sink", sink_argv, sink_port, None)
                procs.wait_ready(sink, "/health")
            gateways = start_gateways(args, procs, base_procs, up_port, gateway_cpus, sink.port if sink else None)
            for g in gateways:
                if g.name == "baseline":
                    if not (g.source["commit"] or "").startswith(baseline_commit or "-"):
                        raise RuntimeError(f"baseline imports clawrouter from {g.source}, not {args.baseline_tree}")
                elif g.source["module"] and Path(g.source["module"]).is_relative_to(args.baseline_tree):
                    raise RuntimeError(f"{g.name} imports the baseline's clawrouter: {g.source['module']}")
                g.verified = verify(g.name, g.child)
                log(f"{g.name}: {g.verified}")
            reader, source = go.pick_cpu_reader(gateways[0].child.pid)
            up_reader, _ = go.pick_cpu_reader(upstream.pid)
            targets = [go.Target(g.name, g.child.url, g.child.pid, reader) for g in gateways]
            series, scenarios, completed = go.run_async(go.measure(args, targets, upstream, up_reader))
            after = {}
            for g in gateways:
                after[g.name] = {
                    "rss_mib": (go.proc_status_kib(g.child.pid, "VmRSS") or 0) / 1024,
                    "peak_mib": (go.proc_status_kib(g.child.pid, "VmHWM") or 0) / 1024,
                    "startup_ms": (g.child.ready_after or math.nan) * 1000,
                }
            measured = {
                t.name: sum(r.requests for s in scenarios for r in series[(t.name, s.name)].rounds) for t in targets
            }
            for g in gateways:
                if g.name == "logs":
                    lines = count_access_lines(g.child.log)
                    after[g.name]["access_log_lines"] = lines
                    after[g.name]["access_log_bytes"] = g.child.log.stat().st_size
                    if lines < measured[g.name]:
                        raise RuntimeError(f"{g.name}: {lines} access log lines for {measured[g.name]} requests")
                if g.name in ("metrics", "full", "logs", "otlp"):
                    after[g.name]["requests_counted"] = requests_counted(g.child.port)
                after[g.name]["requests_measured"] = measured[g.name]
            if sink is not None:
                time.sleep(5.5)  # the batch span processor exports every 5 s
                after["otlp"]["sink"] = json.loads(go.urlopen_text(sink.port, "/health"))
                if not after["otlp"]["sink"]["posts"]:
                    raise RuntimeError("otlp: the sink received no spans")
        finally:
            procs.stop_all()
            if base_procs is not None:
                base_procs.stop_all()
        if args.gc_stats:
            for g in gateways:
                path = workdir / g.name / "gc.json"
                if path.exists():
                    data = json.loads(path.read_text())
                    gc_ns = sum(ns for _, ns in data["gc"].values())
                    after[g.name]["gc"] = {
                        "collections": {gen: n for gen, (n, _) in data["gc"].items()},
                        "cpu_s": {gen: ns / 1e9 for gen, (_, ns) in data["gc"].items()},
                        "share_of_process_cpu": gc_ns / data["process_cpu_ns"],
                    }
    series, selection = go.select_quiet(series, targets, scenarios, args.rounds)
    results = [go.summarize(series[(t.name, s.name)]) for s in scenarios for t in targets]
    for r, (t, s) in zip(results, [(t, s) for s in scenarios for t in targets], strict=True):
        # gateway_overhead's other CPU % divides by the load time only; here the CPU clocks are
        # read after the settle time too: over the whole window (the noise selection above used
        # the former, a stricter limit)
        window = [
            max(0.0, x.other_cpu_ns / (x.elapsed + args.settle_seconds) / 1e7) for x in series[(t.name, s.name)].rounds
        ]
        r["other_cpu_pct"] = statistics.median(window) if window else math.nan
        r["other_cpu_pct_max"] = max(window) if window else math.nan
        per_round = r["gateway_cpu_us_per_round"]
        r["gateway_cpu_us_min"] = min(per_round) if per_round else None
        r["gateway_cpu_us_max"] = max(per_round) if per_round else None
        for key in ("p50_ms", "p99_ms", "mean_ms"):  # latency lists are not kept in the JSON
            r[key] = round(r[key], 4)
    return {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pinning": pin_text,
            "cpu_source": source,
            "rounds_requested": args.rounds,
            "rounds_completed": completed,
            "rounds_run_max": max(v["rounds_run"] for v in selection.values()),
            "seconds_per_round": args.seconds,
            "requests_per_round": args.requests,
            "settle_seconds": args.settle_seconds,
            "chunk_gap_ms": args.chunk_gap_ms,
            "stream_chunks": go.N_CHUNKS,
            "versions": go._versions(),
        },
        "targets": {
            g.name: {"config": DESCRIPTION[g.name], "source": g.source, "verified": g.verified} for g in gateways
        },
        "results": results,
        "ratios": ratios(series, scenarios, [t.name for t in targets]),
        "gc_stats": bool(args.gc_stats),
        "rounds": selection,
        "after_load": after,
    }


def ratios(
    series: dict[tuple[str, str], go.Series], scenarios: Sequence[go.Scenario], names: Sequence[str]
) -> list[dict[str, Any]]:
    out = []
    pairs = [
        ("metrics", "off"),
        ("full", "off"),
        ("logs", "off"),
        ("otlp", "off"),
        ("off", "baseline"),
        ("full", "baseline"),
    ]
    for scenario in scenarios:
        row: dict[str, Any] = {"scenario": scenario.name}
        med = {}
        for name in names:
            values = [r.gateway_us for r in series[(name, scenario.name)].rounds if r.gateway_us]
            med[name] = statistics.median(values) if values else math.nan
        for a, b in pairs:
            if a not in names or b not in names:
                continue
            paired = [
                x.gateway_us / y.gateway_us
                for x, y in zip(series[(a, scenario.name)].rounds, series[(b, scenario.name)].rounds, strict=True)
                if x.gateway_us and y.gateway_us
            ]
            row[f"{a}/{b}"] = {
                "ratio": med[a] / med[b],
                "extra_us": med[a] - med[b],
                "per_round_min": min(paired) if paired else None,
                "per_round_max": max(paired) if paired else None,
            }
        row["full/off"]["target"] = FULL_TARGET
        row["full/off"]["pass"] = row["full/off"]["ratio"] <= FULL_TARGET
        if "baseline" in names:
            base = [r.gateway_us for r in series[("baseline", scenario.name)].rounds if r.gateway_us]
            spread = max(base) - min(base) if base else math.nan
            entry = row["off/baseline"]
            entry["baseline_spread_us"] = spread
            entry["baseline_spread_pct"] = spread / med["baseline"] * 100
            entry["pass"] = abs(entry["extra_us"]) <= spread
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# In-process figures: the request path's append and the collector's absorb
# --------------------------------------------------------------------------------------------


def _per_call_ns(fn: Callable[[], None], calls: int) -> float:
    start = time.process_time_ns()
    fn()
    return (time.process_time_ns() - start) / calls


_SCOPE_HEADERS = [
    (b"host", b"127.0.0.1:8402"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer bench"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"content-length", b"245"),
]


def _chat_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": list(_SCOPE_HEADERS),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8402),
    }


async def _asgi_request(app: Any, body: bytes) -> int:
    """One request straight into the ASGI app (no sockets); its status."""
    done = asyncio.Event()
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            done.set()

    await app(_chat_scope(), receive, send)
    done.set()
    return status


def in_process_requests(requests: int, rounds: int, tmp: str) -> dict[str, Any]:
    """CPU per request of whole requests through ``router.app`` in this process (a simulated
    provider, no sockets), per configuration, interleaved rounds; the deferred work is included
    (the collector is flushed before the clock is read)."""
    from clawrouter.config import load_config
    from clawrouter.router import Router

    sections = {
        "off": {"enabled": False},
        "metrics": {"enabled": True},
        "full": {"enabled": True, "traces": "memory"},
        "logs": {"enabled": True, "traces": "memory", "access_log": True},
    }
    bodies = {
        kind: go._compact({**go.PROMPT, "model": "simulated/standard", "stream": kind == "stream"})
        for kind in ("json", "stream")
    }
    routers = {}
    for name, section in sections.items():
        data = {
            "providers": {"simulated": {"kind": "simulated", "latency_ms": 0, "ttft_ms": 0}},
            "ledger": {"path": f"{tmp}/ledger-{name}.sqlite3"},
            "observability": section,
        }
        routers[name] = Router(load_config(data=data, env={}), entry_points=False)
    samples: dict[tuple[str, str], list[float]] = {(n, k): [] for n in routers for k in bodies}

    async def run() -> None:
        for router in routers.values():
            await router.start()
        try:
            for kind, body in bodies.items():  # warm-up, and a check
                for name, router in routers.items():
                    for _ in range(max(50, requests // 10)):
                        status = await _asgi_request(router.app, body)
                        if status != 200:
                            raise RuntimeError(f"in-process {name} {kind} request: HTTP {status}")
            names = list(routers)
            for i in range(rounds):
                order = names[i % len(names) :] + names[: i % len(names)]
                for kind, body in bodies.items():
                    for name in order:
                        router = routers[name]
                        gc.collect()
                        start = time.process_time_ns()
                        for _ in range(requests):
                            await _asgi_request(router.app, body)
                        if router.telemetry is not None:
                            router.telemetry.flush()
                            exporter = router.telemetry.tracing and router.telemetry.tracing.exporter
                            elapsed = time.process_time_ns() - start
                            if exporter is not None:
                                exporter.clear()  # the server's in-memory exporter keeps them; see README
                        else:
                            elapsed = time.process_time_ns() - start
                        samples[(name, kind)].append(elapsed / requests / 1000)
        finally:
            for router in routers.values():
                await router.stop()

    go.run_async(run())
    out: dict[str, Any] = {"requests_per_round": requests, "rounds": rounds}
    for kind in bodies:
        med = {name: statistics.median(samples[(name, kind)]) for name in routers}
        out[kind] = {
            **{f"{name}_us": med[name] for name in routers},
            **{f"{name}_us_per_round": [round(x, 1) for x in samples[(name, kind)]] for name in routers},
            "metrics_minus_off_us": med["metrics"] - med["off"],
            "full_minus_off_us": med["full"] - med["off"],
            "logs_minus_off_us": med["logs"] - med["off"],
        }
    return out


def micro(iterations: int) -> dict[str, Any]:
    """CPU time per request of the telemetry's pieces, in this process (µs, median of batches)."""
    import logging

    from clawrouter.config import load_config
    from clawrouter.router import Router
    from clawrouter.telemetry.otel import metrics_data

    out: dict[str, Any] = {"iterations": iterations}
    stream_null = open(os.devnull, "w")  # noqa: SIM115 (closed below)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out["access_log_format"] = _log_to(stream_null)
    try:
        with tempfile.TemporaryDirectory(prefix="clawrouter-obs-micro-") as tmp:
            quick = iterations < 50_000
            out["requests"] = in_process_requests(500 if quick else 2000, 3 if quick else 5, tmp)
            data = {
                "providers": {"simulated": {"kind": "simulated", "latency_ms": 0, "ttft_ms": 0}},
                "ledger": {"path": f"{tmp}/ledger.sqlite3"},
                "observability": {"traces": "memory", "access_log": True},
            }
            router = Router(load_config(data=data, env={}), entry_points=False)
            telemetry = router.telemetry
            assert telemetry is not None and telemetry.tracing is not None
            grabbed: list[Any] = []

            async def capture() -> None:
                await router.start()
                original = telemetry.request
                telemetry.request = lambda ctx: (grabbed.append(ctx), original(ctx))  # type: ignore[method-assign]
                try:
                    for stream in (False, True):
                        body = go._compact({**go.PROMPT, "model": "simulated/standard", "stream": stream})
                        status = await _asgi_request(router.app, body)
                        if status != 200:
                            raise RuntimeError(f"in-process request: HTTP {status}")
                    await asyncio.sleep(0)
                finally:
                    del telemetry.request
                    await router.stop()

            go.run_async(capture())
        contexts = {"json": grabbed[0], "stream": grabbed[1]}
        for kind, ctx in contexts.items():
            if ctx.trace is None or not ctx.trace.attempts or ctx.usage is None:
                raise RuntimeError(f"in-process {kind} request: no trace, attempt or usage recorded")
        out["spans_per_request"] = {
            kind: 1 + len(ctx.trace.stages) + len(ctx.trace.attempts) for kind, ctx in contexts.items()
        }
        queue = telemetry.queue
        batch = 1000
        batches = max(5, iterations // batch)

        # 1. the request path: Telemetry.request(ctx) appends one tuple; TraceSetup.begin(scope)
        def appends(fn: Callable[[Any], None], arg: Any) -> list[float]:
            per_batch = []
            for _ in range(batches):
                start = time.process_time_ns()
                for _ in range(batch):
                    fn(arg)
                per_batch.append((time.process_time_ns() - start) / batch / 1000)
                queue.clear()
            return per_batch

        def noop(arg: Any) -> None:
            return None

        gc.collect()
        loop_us = statistics.median(appends(noop, contexts["json"]))
        out["request_path"] = {
            "loop_overhead_us": loop_us,
            **{
                f"Telemetry.request ({kind})": statistics.median(appends(telemetry.request, ctx)) - loop_us
                for kind, ctx in contexts.items()
            },
        }
        # router.stop() shut the span processor down: a live one, as in a running gateway
        from clawrouter.telemetry.tracing import TraceSetup

        setup = telemetry.tracing = TraceSetup(telemetry.config)
        begin = statistics.median(appends(setup.begin, _chat_scope())) - loop_us
        out["request_path"]["TraceSetup.begin (traces on)"] = begin

        # 2. the collector: flush() of queued records, per record
        exporter = setup.exporter
        records = {}
        for kind, ctx in contexts.items():
            telemetry.request(ctx)
            records[kind] = queue.pop()
        variants = {
            "metrics": (None, False),
            "metrics + traces": (setup, False),
            "metrics + access log": (None, True),
            "metrics + traces + access log (full)": (setup, True),
        }
        absorb: dict[str, dict[str, float]] = {}
        per_flush = 200
        flushes = max(5, iterations // per_flush // 4)
        try:
            for label, (tracing, access) in variants.items():
                telemetry.tracing, telemetry.access = tracing, access
                absorb[label] = {}
                for kind, record in records.items():
                    gc.collect()
                    samples = []
                    for _ in range(flushes):
                        queue.extend([record] * per_flush)
                        samples.append(_per_call_ns(telemetry.flush, per_flush) / 1000)
                        if exporter is not None:
                            exporter.clear()
                    absorb[label][kind] = statistics.median(samples)
        finally:
            telemetry.tracing, telemetry.access = setup, True
        out["collector_per_request"] = absorb
        out["span_exporter"] = type(exporter).__name__ if exporter is not None else None
        exports = []
        for _ in range(20):
            start = time.process_time_ns()
            metrics_data(telemetry.registry, telemetry.config)
            exports.append((time.process_time_ns() - start) / 1000)
        out["otel_metrics_export_us"] = statistics.median(exports)
        out["registry_series"] = sum(len(getattr(m, "values", {}) or {}) for m in telemetry.registry.metrics)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        stream_null.close()
    return out


def _log_to(stream: Any) -> str:
    """Log as ``clawrouter serve --log-format json --access-log`` does, to ``stream``."""
    import logging
    import logging.config

    try:
        from clawrouter.telemetry.logs import configure_logging
    except ImportError:  # an older checkout: a plain handler
        handler = logging.StreamHandler(stream)
        logging.getLogger("clawrouter.access").addHandler(handler)
        logging.getLogger("clawrouter.access").setLevel(logging.INFO)
        return "text to /dev/null"
    config = configure_logging("warning", "json", True)
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    return "JSON (clawrouter serve --log-format json's formatter) to /dev/null"


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    fmt = go._fmt
    lines: list[str] = []
    servers = result.get("servers")
    if servers:
        env = servers["environment"]
        lines.append(
            f"clawrouter observability overhead — {env['rounds_completed']} interleaved rounds x "
            f"{env['seconds_per_round']:g} s (max {env['requests_per_round']} req) per target and scenario, "
            f"{env['settle_seconds']:g} s settle after each; run took {result['wall_seconds']:.0f} s"
        )
        selection = servers["rounds"]
        if any(v["rounds_run"] > len(v["rounds_used"]) for v in selection.values()):
            lines.append(
                "noisy rounds were re-run; used per scenario, the quietest: "
                + ", ".join(f"{name} {len(v['rounds_used'])} of {v['rounds_run']}" for name, v in selection.items())
            )
        lines.append(
            f"python {env['python']} on {env['cpus']} CPUs; pinning: {env['pinning']}; "
            f"gateway CPU from {env['cpu_source']}"
        )
        for name, target in servers["targets"].items():
            source = target["source"]
            where = source["module"]
            if source["commit"]:
                dirty = f", {len(source['modified'])} files modified under clawrouter/" if source["modified"] else ""
                where = f"{Path(source['module']).parent.parent} at {source['commit'][:10]}{dirty}"
            lines.append(f"  {name:<9} {target['config']}; {where}")
            lines.append(f"  {'':<9} verified: {target['verified']}")
        lines.append("")
        header = ("scenario", "target", "CPU µs/req", "rounds min-max", "req/s", "p50 ms", "p99 ms", "other CPU %")
        rows = [header]
        for s in servers["results"]:
            rows.append(
                (
                    s["scenario"],
                    s["target"],
                    fmt(s["gateway_cpu_us"], ".1f"),
                    f"{fmt(s['gateway_cpu_us_min'], '.1f')}-{fmt(s['gateway_cpu_us_max'], '.1f')}",
                    fmt(s["rps"]),
                    fmt(s["p50_ms"], ".2f"),
                    fmt(s["p99_ms"], ".2f"),
                    f"{fmt(s['other_cpu_pct'])} (max {fmt(s['other_cpu_pct_max'])})",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        by_scenario = {r["scenario"]: r for r in servers["ratios"]}
        previous = None
        for i, row in enumerate(rows):
            if i and row[0] != previous and previous is not None and previous != "scenario":
                lines.extend(_ratio_lines(by_scenario[previous]))
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
            lines.append("  ".join(cells))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
            previous = row[0]
        lines.extend(_ratio_lines(by_scenario[previous]))
        lines.append(
            "CPU µs/req: gateway process CPU per request, median of rounds (rounds min-max: the spread);"
            " ratios: of the medians (per round: paired rounds, min to max)."
        )
        ratio_rows = servers["ratios"]
        full_ok = sum(r["full/off"]["pass"] for r in ratio_rows)
        lines.append(f"full/off ≤ {FULL_TARGET:g}: {full_ok} of {len(ratio_rows)} scenarios")
        if all("off/baseline" in r for r in ratio_rows):
            same = sum(r["off/baseline"]["pass"] for r in ratio_rows)
            lines.append(
                "off vs baseline, 'nothing measurable' (|off - baseline| ≤ the baseline's own round-to-round"
                f" spread, max - min): {same} of {len(ratio_rows)} scenarios"
            )
        after = servers["after_load"]
        lines.append(
            "after the load: "
            + "; ".join(
                f"{name} RSS {a['rss_mib']:.0f} MiB (peak {a['peak_mib']:.0f}), start-up {a['startup_ms']:.0f} ms"
                for name, a in after.items()
            )
        )
        if any("gc" in a for a in after.values()):
            lines.append(
                "garbage collection (--gc-stats; the whole run, warm-up included): "
                + "; ".join(
                    f"{name} {a['gc']['share_of_process_cpu'] * 100:.1f}% of its CPU"
                    f" (gen2: {a['gc']['collections']['2']} x, {a['gc']['cpu_s']['2']:.2f} s)"
                    for name, a in after.items()
                    if "gc" in a
                )
            )
        if "otlp" in after:
            sink = after["otlp"]["sink"]
            lines.append(f"otlp: the local sink received {sink['posts']} posts, {sink['bytes'] / 2**20:.1f} MiB")
        if "logs" in after:
            logs = after["logs"]
            lines.append(
                f"logs: {logs['access_log_lines']} JSON access log lines ({logs['access_log_bytes'] / 2**20:.1f} MiB)"
                f" for {logs['requests_measured']} measured requests (plus warm-up); /-/metrics counted"
                f" {logs['requests_counted']:.0f}."
            )
        lines.append(
            'OTel metrics export ([observability] metrics = "otlp") is not measured per request: it converts'
            " the registry once every export_interval_seconds (see the in-process figure below), whatever the"
            " request rate."
        )
    m = result.get("micro")
    if m:
        lines.append("")
        lines.append(
            f"in-process (no servers; process CPU time, median of batches, {m['iterations']} iterations;"
            f" a simulated provider; {m['spans_per_request']['json']} spans per JSON request,"
            f" {m['spans_per_request']['stream']} per stream):"
        )
        rq = m["requests"]
        lines.append(
            f"  whole requests through router.app (no sockets; {rq['rounds']} interleaved rounds of"
            f" {rq['requests_per_round']}; the collector flushed before the clock is read):"
        )
        for kind in ("json", "stream"):
            r = rq[kind]
            lines.append(
                f"    {kind:<6} off {r['off_us']:6.1f} µs, metrics {r['metrics_us']:6.1f} µs"
                f" ({r['metrics_minus_off_us']:+.1f}), full {r['full_us']:6.1f} µs ({r['full_minus_off_us']:+.1f}),"
                f" logs {r['logs_us']:6.1f} µs ({r['logs_minus_off_us']:+.1f})"
            )
        rp = m["request_path"]
        lines.append(f"  request path (loop overhead {rp['loop_overhead_us'] * 1000:.0f} ns subtracted):")
        for key, value in rp.items():
            if key != "loop_overhead_us":
                lines.append(f"    {key:<34} {value:7.2f} µs")
        lines.append(f"  collector, per request absorbed by flush() (access log: {m['access_log_format']}):")
        lines.append(f"    {'':<40} {'json':>8} {'stream':>8}")
        for label, figures in m["collector_per_request"].items():
            lines.append(f"    {label:<40} {figures['json']:6.1f} µs {figures['stream']:6.1f} µs")
        lines.append(
            f"  one OTel metrics export (registry -> MetricsData, every export_interval_seconds):"
            f" {m['otel_metrics_export_us']:.0f} µs"
        )
    return "\n".join(lines)


def _ratio_lines(row: dict[str, Any]) -> list[str]:
    fmt = go._fmt
    out = []
    for key in ("metrics/off", "full/off", "logs/off", "otlp/off", "off/baseline", "full/baseline"):
        r = row.get(key)
        if r is None:
            continue
        text = (
            f"    {key:<13} {r['ratio']:.3f}x  ({r['extra_us']:+.1f} µs/req; per round"
            f" {fmt(r['per_round_min'], '.3f')} to {fmt(r['per_round_max'], '.3f')})"
        )
        if key == "full/off":
            text += f"  target ≤ {FULL_TARGET:g}: {'PASS' if r['pass'] else 'FAIL'}"
        if key == "off/baseline":
            text += (
                f"  baseline spread {r['baseline_spread_us']:.1f} µs ({r['baseline_spread_pct']:.1f}%):"
                f" {'PASS (within noise)' if r['pass'] else 'FAIL (measurable)'}"
            )
        out.append(text)
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a ~50 s run (3 short rounds)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per target and scenario (default 5; quick 3)")
    parser.add_argument("--seconds", type=float, help="time limit of one round (default 1.5; quick 0.35)")
    parser.add_argument("--requests", type=int, help="request limit of one round (default 20000; quick 5000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="concurrency levels (default 1 16)")
    parser.add_argument(
        "--budget", type=float, help="stop starting rounds after this many seconds of load (default 190; quick 40)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=0.3,
        help="wait after a round's last response before reading the gateway's CPU clock, so the collector"
        " (every 0.25 s) has absorbed the round's requests (default 0.3)",
    )
    parser.add_argument(
        "--chunk-gap-ms", type=float, default=0.0, help="upstream pause before each SSE chunk (default 0)"
    )
    parser.add_argument(
        "--noise-limit", type=float, default=25.0, help="'quiet' rounds: other CPU at most this %% of a CPU"
    )
    parser.add_argument(
        "--no-replace-noisy",
        dest="replace_noisy",
        action="store_false",
        help="do not spend the rest of the budget re-running rounds disturbed by other processes",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=DEFAULT_BASELINE_TREE,
        help=f"checkout of {BASELINE_COMMIT} (git worktree add when missing; default {DEFAULT_BASELINE_TREE})",
    )
    parser.add_argument("--no-baseline", action="store_true", help="measure off, metrics and full only")
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="one more target, otlp: full with traces exported over OTLP/HTTP to a local sink process",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="start the gateways through a wrapper that times their garbage collections (reported per target)",
    )
    parser.add_argument("--micro-iterations", type=int, help="in-process iterations (default 100000; quick 20000)")
    parser.add_argument("--no-micro", action="store_true", help="skip the in-process figures")
    parser.add_argument("--micro-only", action="store_true", help="only the in-process figures (no servers)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 3 if quick else 5,
        "seconds": 0.35 if quick else 1.5,
        "requests": 5000 if quick else 20000,
        "budget": 40.0 if quick else 190.0,
        "micro_iterations": 20_000 if quick else 100_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.baseline_tree = args.baseline_tree.resolve()
    args.warmup_seconds = 0.15 if quick else 0.4
    args.warmup_requests = 300 if quick else 1000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["_serve", "otlp-sink"]:
        return serve_sink(int(argv[2]))
    if argv[:1] == ["_gateway"]:
        return gateway_main(argv[1:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the children
    wall = time.perf_counter()
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    try:
        if not args.micro_only:
            result["servers"] = run_servers(args)
        if not args.no_micro:
            log("in-process figures...")
            result["micro"] = micro(args.micro_iterations)
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; every server started was stopped")
        return 130
    result["wall_seconds"] = time.perf_counter() - wall
    table = render(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2, default=str))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
