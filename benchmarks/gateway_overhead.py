#!/usr/bin/env python
"""Gateway overhead: what clawrouter costs in front of an OpenAI-compatible upstream.

Three targets are measured in one run, interleaved (round-robin rounds, the
target order rotated every round, so drift hits every target alike):

* ``direct``     the client talks to the fake upstream itself;
* ``reference``  a minimal pure-ASGI passthrough proxy (aiohttp ``ClientSession``
                 to the upstream, uvicorn + uvloop + httptools), the floor a
                 Python gateway can hope for;
* ``clawrouter`` ``clawrouter serve`` (no payments, no plugins) with one
                 ``kind = "openai"`` provider pointing at the fake upstream.

Every server is its own process bound to 127.0.0.1. Where two or more CPUs are
available, the gateway under test is pinned to the last CPU and the upstream and
the load generator (an aiohttp client in this process) to the others, so the
gateway's CPU time is its own.

Per target and scenario (concurrency 1 and 16, JSON and a 20-chunk SSE stream):
requests per second, latency p50/p99 (until the last byte), and the gateway's
CPU time per request, read from the kernel's CPU clock of the gateway process
(``clock_gettime`` on the process CPU clock, nanoseconds; cross-checked against
``/proc/<pid>/stat`` utime+stime) before and after each round. Also the
gateways' RSS after load and the start-up time of ``clawrouter serve`` (spawn
to the first 200 on ``GET /-/health``).

    python benchmarks/gateway_overhead.py            # about 2 minutes
    python benchmarks/gateway_overhead.py --quick    # about 20 seconds
    python benchmarks/gateway_overhead.py --json > result.json

The headline figure is ``clawrouter CPU/request ÷ reference CPU/request`` per
scenario; the target is at most 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
MODEL = "bench-model"
N_CHUNKS = 20
TARGET_RATIO = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

PROMPT = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "In one sentence, why would an agent route LLM calls through a gateway?"},
    ],
    "max_tokens": 64,
    "temperature": 0.2,
}


# --------------------------------------------------------------------------------------------
# The fake upstream (child process): fixed answers, as cheap as uvicorn allows.
# --------------------------------------------------------------------------------------------


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def upstream_payloads() -> tuple[bytes, list[bytes], bytes, bytes]:
    """(completion body, 20 chunk events, usage event, done event), all precomputed."""
    text = "A gateway gives an agent one endpoint for many models, picks a cheaper or faster one per call"
    words = text.split(" ")[: N_CHUNKS - 2]
    usage = {"prompt_tokens": 31, "completion_tokens": N_CHUNKS - 2, "total_tokens": 31 + N_CHUNKS - 2}
    base = {"id": "chatcmpl-bench0001", "created": 1_700_000_000, "model": MODEL, "system_fingerprint": "fp_bench"}
    completion = _compact(
        {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + _compact(doc) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    events.append(chunk({}, "stop"))
    assert len(events) == N_CHUNKS
    usage_event = (
        b"data: " + _compact({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n"
    )
    return completion, events, usage_event, b"data: [DONE]\n\n"


async def _read_body(receive: Callable[[], Any]) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _lifespan(receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any], on_start=None, on_stop=None):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start is not None:
                await on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_stop is not None:
                await on_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_upstream_app(chunk_gap: float = 0.0) -> Callable[..., Any]:
    completion, events, usage_event, done = upstream_payloads()
    json_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(completion)).encode())]
    sse_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    ok = b'{"status":"ok"}'

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/health", "/-/health"):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": ok})
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            request = json.loads(await _read_body(receive))
        except ValueError:
            request = None
        if not isinstance(request, dict) or not request.get("messages"):
            body = b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
            await send(
                {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if request.get("stream") is not True:
            await send({"type": "http.response.start", "status": 200, "headers": json_headers})
            await send({"type": "http.response.body", "body": completion})
            return
        options = request.get("stream_options") or {}
        await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
        for event in events:
            if chunk_gap:
                await asyncio.sleep(chunk_gap)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if options.get("include_usage") is True:
            await send({"type": "http.response.body", "body": usage_event, "more_body": True})
        await send({"type": "http.response.body", "body": done, "more_body": False})

    return app


# --------------------------------------------------------------------------------------------
# The reference gateway (child process): a minimal pure-ASGI aiohttp passthrough.
# --------------------------------------------------------------------------------------------


def build_reference_app(upstream: str) -> Callable[..., Any]:
    import aiohttp

    state: dict[str, aiohttp.ClientSession] = {}
    forward_headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    ok = b'{"status":"ok"}'

    async def start() -> None:
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            skip_auto_headers=("User-Agent",),
            timeout=aiohttp.ClientTimeout(total=600, sock_connect=5, sock_read=60),
        )

    async def stop() -> None:
        await state["session"].close()

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, start, stop)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/-/health":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": ok})
            return
        body = await _read_body(receive)
        async with state["session"].post(upstream + scope["path"], data=body, headers=forward_headers) as response:
            content_type = response.headers.get("content-type", "application/octet-stream")
            if content_type.startswith("text/event-stream"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-cache")],
                    }
                )
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                data = await response.read()
                headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                await send({"type": "http.response.body", "body": data})

    return app


def serve_main(argv: Sequence[str]) -> int:
    """``gateway_overhead.py _serve {upstream,reference} --port N [--upstream URL]``"""
    import uvicorn

    parser = argparse.ArgumentParser(prog="gateway_overhead.py _serve")
    parser.add_argument("role", choices=["upstream", "reference"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    app = (
        build_upstream_app(args.chunk_gap_ms / 1000) if args.role == "upstream" else build_reference_app(args.upstream)
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    return 0


# --------------------------------------------------------------------------------------------
# Processes: spawn, pin, wait for health, measure CPU and memory, stop by pid.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_clock(pid: int) -> int:
    # glibc's clock_getcpuclockid(): MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    return ((~pid) << 3) | 2


def stat_cpu_ns(pid: int) -> int:
    """utime + stime of the whole process (all threads, live and exited), in ns (tick resolution)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK


def clock_cpu_ns(pid: int) -> int:
    """The kernel's CPU clock of the whole process, in ns (exact)."""
    return time.clock_gettime_ns(_process_clock(pid))


def pick_cpu_reader(pid: int) -> tuple[Callable[[int], int], str]:
    try:
        clock_cpu_ns(pid)
        return clock_cpu_ns, "clock_gettime(process CPU clock of the pid)"
    except (OSError, AttributeError):
        return stat_cpu_ns, f"/proc/<pid>/stat utime+stime (1/{CLK_TCK} s ticks)"


def system_busy_ns() -> int:
    """CPU time all CPUs spent busy (including steal), from /proc/stat, in ns (tick resolution)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) * 1_000_000_000 // CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    spawned: float
    ready_after: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Processes:
    """Every child this benchmark starts; ``stop_all`` stops each by its pid."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.children: list[Child] = []

    def spawn(self, name: str, argv: list[str], port: int, cpus: set[int] | None) -> Child:
        log = self.workdir / f"{name}-{len(self.children)}.log"
        with open(log, "wb") as out:
            spawned = time.perf_counter()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir
            )
        child = Child(name, proc, port, log, spawned)
        self.children.append(child)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, cpus)
        return child

    def wait_ready(self, child: Child, path: str, timeout: float = 30.0) -> float:
        """Seconds from spawn to the first 200 on ``path``."""
        deadline = child.spawned + timeout
        while True:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
            if http_status(child.port, path, timeout=0.5) == 200:
                child.ready_after = time.perf_counter() - child.spawned
                return child.ready_after
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{child.name} not ready after {timeout:.0f} s:\n{child.log_tail()}")
            time.sleep(0.002)

    def stop(self, child: Child) -> None:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                self.stop(child)


# --------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    concurrency: int
    stream: bool

    @property
    def name(self) -> str:
        return f"{'stream' if self.stream else 'json'} c={self.concurrency}"


@dataclass
class Target:
    name: str
    url: str
    gateway_pid: int | None  # None for direct
    cpu_reader: Callable[[int], int] | None = None


@dataclass
class Round:
    requests: int
    errors: int
    elapsed: float
    latencies: list[float]
    gateway_cpu_ns: int | None
    gateway_stat_ns: int | None
    upstream_cpu_ns: int
    other_cpu_ns: int  # busy CPU time not spent in the gateway, the upstream or this process

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def gateway_us(self) -> float | None:
        if self.gateway_cpu_ns is None or not self.requests:
            return None
        return self.gateway_cpu_ns / self.requests / 1000

    @property
    def other_pct(self) -> float:
        """CPU used by anything else during the round, in % of one CPU (approximate)."""
        return max(0.0, self.other_cpu_ns / self.elapsed / 1e7) if self.elapsed > 0 else 0.0

    @property
    def upstream_us(self) -> float:
        return self.upstream_cpu_ns / self.requests / 1000 if self.requests else math.nan


@dataclass
class Series:
    target: str
    scenario: Scenario
    rounds: list[Round] = field(default_factory=list)


def request_body(stream: bool) -> bytes:
    doc: dict[str, Any] = dict(PROMPT)
    if stream:
        doc["stream"] = True
        doc["stream_options"] = {"include_usage": True}
    return _compact(doc)


HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


async def check_target(session: Any, target: Target, scenario: Scenario) -> None:
    """One request, validated in depth: the benchmark must measure working responses."""
    url = target.url + "/v1/chat/completions"
    async with session.post(url, data=request_body(scenario.stream), headers=HEADERS) as response:
        data = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: {scenario.name}: HTTP {response.status}: {data[:300]!r}")
        ctype = response.headers.get("content-type", "")
        if target.name == "clawrouter" and response.headers.get("x-clawrouter-model") != MODEL:
            raise RuntimeError(f"clawrouter did not route to {MODEL}: {dict(response.headers)}")
    if not scenario.stream:
        doc = json.loads(data)
        if doc.get("object") != "chat.completion" or not doc.get("usage") or not ctype.startswith("application/json"):
            raise RuntimeError(f"{target.name}: unexpected completion: {data[:300]!r}")
        return
    events = [e for e in data.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    payloads = [e[len(b"data: ") :] for e in events if e.startswith(b"data: ")]
    if payloads[-1:] != [b"[DONE]"]:
        raise RuntimeError(f"{target.name}: stream does not end with [DONE]: {data[-200:]!r}")
    docs = [json.loads(p) for p in payloads[:-1]]
    chunks = [d for d in docs if d.get("choices")]
    usage = [d for d in docs if d.get("usage")]
    if len(chunks) != N_CHUNKS or len(usage) != 1 or not ctype.startswith("text/event-stream"):
        raise RuntimeError(f"{target.name}: expected {N_CHUNKS} chunks and a usage chunk, got {len(docs)} events")


async def run_round(
    session: Any,
    target: Target,
    scenario: Scenario,
    upstream_pid: int,
    upstream_reader: Callable[[int], int],
    max_requests: int,
    max_seconds: float,
    settle_seconds: float = 0.005,
) -> Round:
    url = target.url + "/v1/chat/completions"
    body = request_body(scenario.stream)
    done_marker = b"data: [DONE]\n\n"
    latencies: list[float] = []
    errors = 0
    issued = 0
    perf = time.perf_counter

    async def worker(deadline: float) -> None:
        nonlocal issued, errors
        while issued < max_requests and perf() < deadline:
            issued += 1
            t0 = perf()
            try:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    data = await response.read()
                    ok = response.status == 200 and (not scenario.stream or data.endswith(done_marker))
            except Exception:
                ok = False
            if ok:
                latencies.append(perf() - t0)
            else:
                errors += 1

    pid = target.gateway_pid
    reader = target.cpu_reader
    g0 = reader(pid) if pid is not None and reader is not None else None
    s0 = stat_cpu_ns(pid) if pid is not None else None
    u0 = upstream_reader(upstream_pid)
    b0, m0 = system_busy_ns(), time.process_time_ns()
    start = perf()
    deadline = start + max_seconds
    await asyncio.gather(*(worker(deadline) for _ in range(scenario.concurrency)))
    elapsed = perf() - start
    # let the servers finish their post-response bookkeeping (work a gateway defers to a
    # background task needs longer: benchmarks/observability.py waits for its collector)
    await asyncio.sleep(settle_seconds)
    g1 = reader(pid) if pid is not None and reader is not None else None
    s1 = stat_cpu_ns(pid) if pid is not None else None
    u1 = upstream_reader(upstream_pid)
    b1, m1 = system_busy_ns(), time.process_time_ns()
    ours = (u1 - u0) + (m1 - m0) + ((g1 - g0) if g0 is not None and g1 is not None else 0)
    return Round(
        requests=len(latencies),
        errors=errors,
        elapsed=elapsed,
        latencies=latencies,
        gateway_cpu_ns=(g1 - g0) if g0 is not None and g1 is not None else None,
        gateway_stat_ns=(s1 - s0) if s0 is not None and s1 is not None else None,
        upstream_cpu_ns=u1 - u0,
        other_cpu_ns=(b1 - b0) - ours,
    )


# --------------------------------------------------------------------------------------------
# Statistics and reporting
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize(series: Series) -> dict[str, Any]:
    rounds = series.rounds
    lat = sorted(x for r in rounds for x in r.latencies)
    gw = [r.gateway_us for r in rounds if r.gateway_us is not None]
    requests = sum(r.requests for r in rounds)
    stat_total = sum(r.gateway_stat_ns or 0 for r in rounds)
    return {
        "target": series.target,
        "scenario": series.scenario.name,
        "concurrency": series.scenario.concurrency,
        "stream": series.scenario.stream,
        "rounds": len(rounds),
        "requests": requests,
        "errors": sum(r.errors for r in rounds),
        "rps": statistics.median(r.rps for r in rounds) if rounds else math.nan,
        "rps_per_round": [round(r.rps, 1) for r in rounds],
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "gateway_cpu_us": statistics.median(gw) if gw else None,
        "gateway_cpu_us_per_round": [round(x, 1) for x in gw],
        "gateway_cpu_us_proc_stat": (stat_total / requests / 1000) if gw and requests else None,
        "upstream_cpu_us": statistics.median(r.upstream_us for r in rounds) if rounds else math.nan,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else math.nan,
        "other_cpu_pct": statistics.median(r.other_pct for r in rounds) if rounds else math.nan,
        "other_cpu_pct_max": max(r.other_pct for r in rounds) if rounds else math.nan,
    }


def ratios(
    by_key: dict[tuple[str, str], Series], scenarios: Sequence[Scenario], noise_limit: float
) -> list[dict[str, Any]]:
    out = []
    for scenario in scenarios:
        ref = by_key[("reference", scenario.name)]
        claw = by_key[("clawrouter", scenario.name)]
        ref_s, claw_s = summarize(ref), summarize(claw)
        paired = [
            c.gateway_us / r.gateway_us
            for c, r in zip(claw.rounds, ref.rounds, strict=False)
            if c.gateway_us and r.gateway_us
        ]
        quiet = [
            c.gateway_us / r.gateway_us
            for c, r in zip(claw.rounds, ref.rounds, strict=False)
            if c.gateway_us and r.gateway_us and max(c.other_pct, r.other_pct) <= noise_limit
        ]
        ratio = claw_s["gateway_cpu_us"] / ref_s["gateway_cpu_us"] if ref_s["gateway_cpu_us"] else math.nan
        out.append(
            {
                "scenario": scenario.name,
                "reference_cpu_us": ref_s["gateway_cpu_us"],
                "clawrouter_cpu_us": claw_s["gateway_cpu_us"],
                "extra_cpu_us": claw_s["gateway_cpu_us"] - ref_s["gateway_cpu_us"],
                "ratio": ratio,
                "ratio_per_round_min": min(paired) if paired else None,
                "ratio_per_round_max": max(paired) if paired else None,
                "rounds": len(paired),
                "ratio_quiet_rounds": statistics.median(quiet) if quiet else None,
                "quiet_rounds": len(quiet),
                "noise_limit_pct": noise_limit,
                "target": TARGET_RATIO,
                "within_target": ratio <= TARGET_RATIO,
                "rps_ratio": claw_s["rps"] / ref_s["rps"] if ref_s["rps"] else math.nan,
            }
        )
    return out


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    env = result["environment"]
    lines.append(
        f"clawrouter gateway overhead — {env['rounds_completed']} interleaved rounds x "
        f"{env['seconds_per_round']:g} s (max {env['requests_per_round']} req) per target and scenario; "
        f"run took {env['wall_seconds']:.0f} s"
    )
    selection = result["rounds"]
    if any(v["rounds_run"] > len(v["rounds_used"]) for v in selection.values()):
        lines.append(
            "noisy rounds were re-run; used per scenario, the quietest: "
            + ", ".join(f"{name} {len(v['rounds_used'])} of {v['rounds_run']}" for name, v in selection.items())
        )
    lines.append(
        f"python {env['python']} on {env['cpus']} CPUs; pinning: {env['pinning']}; gateway CPU from {env['cpu_source']}"
    )
    source = env["source"]
    if source["commit"]:
        dirty = f", {len(source['modified'])} files modified under clawrouter/" if source["modified"] else ""
        lines.append(f"clawrouter: {source['module']} (working tree at {source['commit'][:10]}{dirty})")
    else:
        lines.append(f"clawrouter: {source['module']}")
    lines.append("")
    header = (
        "scenario",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "gw CPU µs/req",
        "(/proc/stat)",
        "upstream µs/req",
        "other CPU %",
        "errors",
    )
    rows = [header]
    for s in result["results"]:
        rows.append(
            (
                s["scenario"],
                s["target"],
                _fmt(s["rps"]),
                _fmt(s["p50_ms"], ".2f"),
                _fmt(s["p99_ms"], ".2f"),
                _fmt(s["gateway_cpu_us"]),
                _fmt(s["gateway_cpu_us_proc_stat"]),
                _fmt(s["upstream_cpu_us"]),
                f"{_fmt(s['other_cpu_pct'])} (max {_fmt(s['other_cpu_pct_max'])})",
                str(s["errors"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "gw CPU: gateway process CPU per request (median of rounds); (/proc/stat): the same from utime+stime over all"
        " rounds; other CPU %: busy time of anything else on the machine during the round (% of one CPU, median"
        " and max) — high values mean the figures are noisy."
    )
    lines.append("")
    lines.append(f"clawrouter CPU/request ÷ reference CPU/request (target ≤ {TARGET_RATIO:g}):")
    for r in result["ratios"]:
        verdict = "OK" if r["within_target"] else "OVER TARGET"
        lines.append(
            f"  {r['scenario']:<12} {r['clawrouter_cpu_us']:7.0f} / {r['reference_cpu_us']:5.0f} µs = "
            f"{r['ratio']:.2f}x  (per round {_fmt(r['ratio_per_round_min'], '.2f')}"
            f" to {_fmt(r['ratio_per_round_max'], '.2f')}; "
            f"+{r['extra_cpu_us']:.0f} µs/req; req/s {r['rps_ratio']:.2f}x of reference)  {verdict}"
        )
        if r["quiet_rounds"] == 0:
            lines.append(
                f"  {'':<12} noisy machine: other processes used more than {r['noise_limit_pct']:g}% of a CPU"
                " in every round; treat this figure with caution"
            )
        elif r["quiet_rounds"] < r["rounds"]:
            lines.append(
                f"  {'':<12} noisy machine: over the {r['quiet_rounds']} rounds where other CPU was ≤"
                f" {r['noise_limit_pct']:g}%, the median ratio is {r['ratio_quiet_rounds']:.2f}x"
            )
    lines.append("")
    mem = result["memory"]
    lines.append(
        "RSS after load: "
        + "; ".join(f"{name} {m['rss_mib']:.1f} MiB (peak {m['peak_mib']:.1f})" for name, m in mem.items())
    )
    st = result["startup"]
    lines.append(
        f"start-up, spawn to first 200 on GET /-/health: clawrouter serve {st['clawrouter_ms_median']:.0f} ms "
        f"(runs: {', '.join(f'{x:.0f}' for x in st['clawrouter_ms'])}); "
        f"reference proxy {st['reference_ms']:.0f} ms"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def clawrouter_config(upstream_port: int, workdir: Path) -> Path:
    path = workdir / "clawrouter-bench.toml"
    path.write_text(
        f"""\
# written by benchmarks/gateway_overhead.py
[ledger]
path = "{(workdir / "ledger.sqlite3").as_posix()}"

[providers.bench]
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
api_key = "bench"

[[models]]
id = "{MODEL}"
provider = "bench"
input_price = 1.0
output_price = 2.0
""",
        encoding="utf-8",
    )
    return path


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_")}
    env["CLAWROUTER_LOAD_PLUGINS"] = ""  # no entry-point plugins: nothing but the defaults (no payment rails)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def plan_pinning(enabled: bool) -> tuple[dict[str, set[int]] | None, str]:
    if not enabled or not hasattr(os, "sched_getaffinity"):
        return None, "off"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, f"off (only CPU {cpus} available)"
    gateway = {cpus[-1]}
    rest = set(cpus[:-1])
    return {
        "gateway": gateway,
        "rest": rest,
    }, f"gateways on CPU {sorted(gateway)}, upstream + load generator on CPU {sorted(rest)}"


def cancel_on_sigterm() -> None:
    """In the event loop, SIGTERM cancels the running task, so every ``finally`` runs and the children stop."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def measure(
    args: argparse.Namespace, targets: list[Target], upstream: Child, upstream_reader: Callable[[int], int]
) -> tuple[dict[tuple[str, str], Series], list[Scenario], int]:
    import aiohttp

    cancel_on_sigterm()
    scenarios = [Scenario(c, s) for s in (False, True) for c in args.concurrency]
    series = {(t.name, s.name): Series(t.name, s) for t in targets for s in scenarios}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        for scenario in scenarios:
            for target in targets:
                await check_target(session, target, scenario)
                await run_round(
                    session,
                    target,
                    scenario,
                    upstream.pid,
                    upstream_reader,
                    args.warmup_requests,
                    args.warmup_seconds,
                    args.settle_seconds,
                )
        log(f"warm-up done; {len(scenarios)} scenarios x {len(targets)} targets per round")
        started = time.perf_counter()
        per_scenario = len(targets) * (args.seconds + args.settle_seconds + 0.015)
        per_round = len(scenarios) * per_scenario

        def rounds_of(scenario: Scenario) -> int:
            return len(series[(targets[0].name, scenario.name)].rounds)

        async def scenario_round(scenario: Scenario) -> None:
            """One round of one scenario: every target once, in an order rotated from round to round."""
            shift = rounds_of(scenario) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                rnd = await run_round(
                    session,
                    target,
                    scenario,
                    upstream.pid,
                    upstream_reader,
                    args.requests,
                    args.seconds,
                    args.settle_seconds,
                )
                series[(target.name, scenario.name)].rounds.append(rnd)

        completed = 0
        for _ in range(args.rounds):
            if completed and time.perf_counter() - started + per_round > args.budget:
                log(f"time budget of {args.budget:g} s reached: stopping after {completed} rounds")
                break
            for scenario in scenarios:
                await scenario_round(scenario)
            completed += 1
            log(f"round {completed}/{args.rounds} done ({time.perf_counter() - started:.1f} s)")
        # Other processes busy during a round make it noisy: while the budget allows, run
        # more rounds of the scenarios that have fewer than `rounds` quiet ones.
        extra = 0
        while completed == args.rounds and args.replace_noisy:
            quiet = {s.name: sum(n <= args.noise_limit for n in scenario_noise(series, targets, s)) for s in scenarios}
            short = [s for s in scenarios if quiet[s.name] < args.rounds]
            if not short or time.perf_counter() - started + per_scenario > args.budget:
                break
            scenario = min(short, key=lambda s: (quiet[s.name], rounds_of(s)))
            await scenario_round(scenario)
            extra += 1
        if extra:
            log(f"{extra} extra scenario rounds run to replace noisy ones ({time.perf_counter() - started:.1f} s)")
    return series, scenarios, completed


def scenario_noise(series: dict[tuple[str, str], Series], targets: Sequence[Target], scenario: Scenario) -> list[float]:
    """Per round of ``scenario``: the highest 'other CPU %' seen while any target was measured."""
    columns = [series[(t.name, scenario.name)].rounds for t in targets]
    return [max(r.other_pct for r in rounds) for rounds in zip(*columns, strict=True)]


def select_quiet(
    series: dict[tuple[str, str], Series], targets: Sequence[Target], scenarios: Sequence[Scenario], keep: int
) -> tuple[dict[tuple[str, str], Series], dict[str, Any]]:
    """Per scenario, the ``keep`` rounds with the least foreign CPU load (the same rounds for every target)."""
    chosen: dict[tuple[str, str], Series] = {}
    info: dict[str, Any] = {}
    for scenario in scenarios:
        noise = scenario_noise(series, targets, scenario)
        used = sorted(sorted(range(len(noise)), key=lambda i: noise[i])[:keep])
        info[scenario.name] = {
            "rounds_run": len(noise),
            "rounds_used": used,
            "other_cpu_pct_per_round": [round(n, 1) for n in noise],
        }
        for t in targets:
            full = series[(t.name, scenario.name)]
            chosen[(t.name, scenario.name)] = Series(t.name, scenario, [full.rounds[i] for i in used])
    return chosen, info


def run(args: argparse.Namespace) -> dict[str, Any]:
    wall = time.perf_counter()
    pin, pin_text = plan_pinning(not args.no_pin)
    if pin:
        os.sched_setaffinity(0, pin["rest"])
    gateway_cpus = pin["gateway"] if pin else None
    with tempfile.TemporaryDirectory(prefix="clawrouter-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir, child_env())
        try:
            py = sys.executable
            up_port, ref_port = free_port(), free_port()
            upstream = procs.spawn(
                "upstream",
                [
                    py,
                    str(SCRIPT),
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
            reference = procs.spawn(
                "reference",
                [
                    py,
                    str(SCRIPT),
                    "_serve",
                    "reference",
                    "--port",
                    str(ref_port),
                    "--upstream",
                    f"http://127.0.0.1:{up_port}",
                ],
                ref_port,
                gateway_cpus,
            )
            reference_ms = procs.wait_ready(reference, "/-/health") * 1000
            config = clawrouter_config(up_port, workdir)
            claw_cmd = [
                py,
                "-m",
                "clawrouter.cli",
                "serve",
                "--config",
                str(config),
                "--log-level",
                "warning",
                "--port",
            ]
            startup_ms: list[float] = []
            for _ in range(max(0, args.startup_runs - 1)):  # extra start-up samples, stopped at once
                port = free_port()
                extra = procs.spawn("clawrouter-startup", [*claw_cmd, str(port)], port, gateway_cpus)
                startup_ms.append(procs.wait_ready(extra, "/-/health") * 1000)
                procs.stop(extra)
            claw_port = free_port()
            claw = procs.spawn("clawrouter", [*claw_cmd, str(claw_port)], claw_port, gateway_cpus)
            startup_ms.append(procs.wait_ready(claw, "/-/health") * 1000)
            health = json.loads(urlopen_text(claw.port, "/-/health"))
            if health.get("payments"):
                raise RuntimeError(f"clawrouter has payment rails configured: {health['payments']}")
            log(f"clawrouter up in {startup_ms[-1]:.0f} ms: {health}")

            reader, source = pick_cpu_reader(reference.pid)
            up_reader, _ = pick_cpu_reader(upstream.pid)
            targets = [
                Target("direct", upstream.url, None),
                Target("reference", reference.url, reference.pid, reader),
                Target("clawrouter", claw.url, claw.pid, reader),
            ]
            series, scenarios, completed = run_async(measure(args, targets, upstream, up_reader))
            memory = {
                c.name: {
                    "rss_mib": (proc_status_kib(c.pid, "VmRSS") or 0) / 1024,
                    "peak_mib": (proc_status_kib(c.pid, "VmHWM") or 0) / 1024,
                }
                for c in (reference, claw, upstream)
            }
        finally:
            procs.stop_all()
    series, selection = select_quiet(series, targets, scenarios, args.rounds)
    results = [summarize(series[(t.name, s.name)]) for s in scenarios for t in targets]
    source_state = _source_state(child_env())
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
            "chunk_gap_ms": args.chunk_gap_ms,
            "stream_chunks": N_CHUNKS,
            "wall_seconds": time.perf_counter() - wall,
            "versions": _versions(),
            "source": source_state,
        },
        "results": results,
        "ratios": ratios(series, scenarios, args.noise_limit),
        "rounds": selection,
        "memory": memory,
        "startup": {
            "clawrouter_ms": startup_ms,
            "clawrouter_ms_median": statistics.median(startup_ms),
            "reference_ms": reference_ms,
        },
    }


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (the load generator should be cheap)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def urlopen_text(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _source_state(env: dict[str, str]) -> dict[str, Any]:
    """Where the gateway imports clawrouter from; if from a git checkout, its commit and the
    files under clawrouter/ that differ from it (the working tree is what gets measured)."""
    try:
        found = subprocess.run(
            [sys.executable, "-c", "import clawrouter; print(clawrouter.__file__)"],
            env=env,
            cwd=tempfile.gettempdir(),  # as the servers run: not from the current directory
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found = ""
    root = Path(found).parent.parent if found else SCRIPT.parent.parent

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD").strip() if (root / ".git").exists() else ""
    changed = git("status", "--porcelain", "--", "clawrouter") if commit else ""
    return {"module": found or None, "commit": commit or None, "modified": [line[3:] for line in changed.splitlines()]}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("clawrouter", "aiohttp", "uvicorn", "uvloop", "httptools", "msgspec"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a ~20 s run (3 short rounds, one start-up sample)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per target and scenario (default 5; quick 3)")
    parser.add_argument("--seconds", type=float, help="time limit of one round (default 1.5; quick 0.35)")
    parser.add_argument("--requests", type=int, help="request limit of one round (default 20000; quick 5000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="concurrency levels (default 1 16)")
    parser.add_argument(
        "--budget", type=float, help="stop starting rounds after this many seconds of load (default 115; quick 16)"
    )
    parser.add_argument("--startup-runs", type=int, help="clawrouter start-up samples (default 3; quick 1)")
    parser.add_argument(
        "--chunk-gap-ms", type=float, default=0.0, help="upstream pause before each SSE chunk (default 0)"
    )
    parser.add_argument(
        "--noise-limit",
        type=float,
        default=25.0,
        help="'quiet' rounds: other CPU at most this %% of a CPU (default 25)",
    )
    parser.add_argument(
        "--no-replace-noisy",
        dest="replace_noisy",
        action="store_false",
        help="do not spend the rest of the budget re-running rounds disturbed by other processes",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 3 if quick else 5,
        "seconds": 0.35 if quick else 1.5,
        "requests": 5000 if quick else 20000,
        "budget": 16.0 if quick else 115.0,
        "startup_runs": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.warmup_seconds = 0.15 if quick else 0.4
    args.warmup_requests = 300 if quick else 1000
    args.settle_seconds = 0.005  # after a round, before reading the gateway's CPU clock
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_serve"]:
        return serve_main(argv[1:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the children
    try:
        result = run(args)
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; every server started was stopped")
        return 130
    table = render(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
