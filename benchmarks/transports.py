#!/usr/bin/env python
"""Client-side CPU per request of the HTTP clients an upstream transport can use.

Against the fake OpenAI-compatible upstream of ``gateway_overhead.py`` (its own
process, pinned to another CPU than this one where possible), this process
sends chat completion requests with each client in turn, in interleaved rounds
(the client order rotated every round), and measures its own CPU time per
request (``time.process_time_ns``):

* ``aiohttp``          ``aiohttp.ClientSession`` directly;
* ``httpx``            ``httpx.AsyncClient`` with its default transport (httpcore);
* ``httpx+aiohttp``    ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())``;
* ``httpcore-direct``  (extra) ``httpx.AsyncHTTPTransport`` driven at the transport
                       level, no ``AsyncClient`` around it.

Scenarios: concurrency 1 and 16, a JSON completion and a 20-chunk SSE stream
(read chunk by chunk). Figures are medians over rounds.

    python benchmarks/transports.py            # about 1 minute
    python benchmarks/transports.py --quick    # about 15 seconds
    python benchmarks/transports.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_overhead as go

# what clawrouter/upstream.py says about these clients (µs CPU per request)
QUOTED_US = {"aiohttp": 300, "httpx": 1300, "httpx+aiohttp": 490}
DONE = b"data: [DONE]\n\n"


class Client:
    name = ""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def post(self, url: str, body: bytes, stream: bool) -> bool:
        """Send one request, read the whole response; ``True`` if it was a complete 200."""
        raise NotImplementedError


class AiohttpClient(Client):
    name = "aiohttp"

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), skip_auto_headers=("User-Agent",)
        )

    async def aclose(self) -> None:
        await self.session.close()

    async def post(self, url: str, body: bytes, stream: bool) -> bool:
        async with self.session.post(url, data=body, headers=go.HEADERS) as response:
            if not stream:
                data = await response.read()
                return response.status == 200 and bool(data)
            last = b""
            async for chunk in response.content.iter_any():
                last = chunk
            return response.status == 200 and last.endswith(DONE)


class HttpxClient(Client):
    name = "httpx"

    def transport(self) -> Any:
        return None

    async def start(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        transport = self.transport()
        if transport is None:
            self.client = httpx.AsyncClient(limits=limits)
        else:
            self.client = httpx.AsyncClient(transport=transport)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, stream: bool) -> bool:
        if not stream:
            response = await self.client.post(url, content=body, headers=go.HEADERS)
            return response.status_code == 200 and bool(response.content)
        last = b""
        async with self.client.stream("POST", url, content=body, headers=go.HEADERS) as response:
            async for chunk in response.aiter_raw():
                last = chunk
            return response.status_code == 200 and last.endswith(DONE)


class HttpxAiohttpClient(HttpxClient):
    name = "httpx+aiohttp"

    def transport(self) -> Any:
        import httpx
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))


class HttpcoreDirectClient(Client):
    name = "httpcore-direct"

    async def start(self) -> None:
        import httpx

        self.httpx = httpx
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def post(self, url: str, body: bytes, stream: bool) -> bool:
        request = self.httpx.Request("POST", url, content=body, headers=go.HEADERS)
        response = await self.transport.handle_async_request(request)
        try:
            last = b""
            async for chunk in response.stream:
                last = chunk
        finally:
            await response.aclose()
        return response.status_code == 200 and (last.endswith(DONE) if stream else bool(last))


CLIENTS = (AiohttpClient, HttpxClient, HttpxAiohttpClient, HttpcoreDirectClient)


async def one_round(
    client: Client, url: str, stream: bool, concurrency: int, max_requests: int, seconds: float, upstream_pid: int
) -> dict[str, float]:
    body = go.request_body(stream)
    done = 0
    errors = 0
    issued = 0
    perf = time.perf_counter

    async def worker(deadline: float) -> None:
        nonlocal done, errors, issued
        while issued < max_requests and perf() < deadline:
            issued += 1
            try:
                ok = await client.post(url, body, stream)
            except Exception:
                ok = False
            if ok:
                done += 1
            else:
                errors += 1

    cpu0, up0, busy0 = time.process_time_ns(), go.clock_cpu_ns(upstream_pid), go.system_busy_ns()
    start = perf()
    await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
    elapsed = perf() - start
    cpu = time.process_time_ns() - cpu0
    other = (go.system_busy_ns() - busy0) - cpu - (go.clock_cpu_ns(upstream_pid) - up0)
    return {
        "requests": done,
        "errors": errors,
        "rps": done / elapsed if elapsed else 0.0,
        "cpu_us": cpu / done / 1000 if done else float("nan"),
        "other_pct": max(0.0, other / elapsed / 1e7) if elapsed else 0.0,
    }


async def measure(
    args: argparse.Namespace, url: str, upstream_pid: int
) -> tuple[dict[tuple[str, str], list[dict[str, float]]], int]:
    go.cancel_on_sigterm()
    clients = [cls() for cls in CLIENTS if cls.name in args.clients]
    for client in clients:
        await client.start()
    scenarios = [(stream, c) for stream in (False, True) for c in args.concurrency]
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for stream, concurrency in scenarios:  # warm-up, and a correctness check
            for client in clients:
                if not await client.post(url, go.request_body(stream), stream):
                    raise RuntimeError(f"{client.name}: bad response (stream={stream})")
                await one_round(
                    client, url, stream, concurrency, args.warmup_requests, args.warmup_seconds, upstream_pid
                )
        started = time.perf_counter()
        per_round = len(scenarios) * len(clients) * args.seconds
        completed = 0
        for index in range(args.rounds):
            if completed and time.perf_counter() - started + per_round > args.budget:
                go.log(f"time budget of {args.budget:g} s reached: stopping after {completed} rounds")
                break
            shift = index % len(clients)
            order = clients[shift:] + clients[:shift]
            for stream, concurrency in scenarios:
                name = f"{'stream' if stream else 'json'} c={concurrency}"
                for client in order:
                    result = await one_round(
                        client, url, stream, concurrency, args.requests, args.seconds, upstream_pid
                    )
                    rounds.setdefault((name, client.name), []).append(result)
            completed += 1
            go.log(f"round {completed}/{args.rounds} done ({time.perf_counter() - started:.1f} s)")
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
    return rounds, completed


def summarize(rounds: dict[tuple[str, str], list[dict[str, float]]]) -> list[dict[str, Any]]:
    out = []
    base: dict[str, float] = {}
    for (scenario, client), results in rounds.items():
        cpu = [r["cpu_us"] for r in results]
        row = {
            "scenario": scenario,
            "client": client,
            "rounds": len(results),
            "requests": int(sum(r["requests"] for r in results)),
            "errors": int(sum(r["errors"] for r in results)),
            "cpu_us": statistics.median(cpu),
            "cpu_us_min": min(cpu),
            "cpu_us_max": max(cpu),
            "rps": statistics.median(r["rps"] for r in results),
            "other_cpu_pct": statistics.median(r["other_pct"] for r in results),
            "quoted_us": QUOTED_US.get(client),
        }
        if client == "aiohttp":
            base[scenario] = row["cpu_us"]
        out.append(row)
    for row in out:
        row["vs_aiohttp"] = row["cpu_us"] / base[row["scenario"]] if row["scenario"] in base else None
    return out


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"client CPU per request — {env['rounds_completed']} interleaved rounds x {env['seconds_per_round']:g} s per "
        f"client and scenario; run took {env['wall_seconds']:.0f} s",
        f"python {env['python']}, {env['loop']} loop, {env['cpus']} CPUs; pinning: {env['pinning']}",
        "",
    ]
    header = (
        "scenario",
        "client",
        "CPU µs/req",
        "(min..max)",
        "vs aiohttp",
        "req/s",
        "quoted µs",
        "other CPU %",
        "errors",
    )
    rows = [header]
    for r in result["results"]:
        rows.append(
            (
                r["scenario"],
                r["client"],
                f"{r['cpu_us']:.0f}",
                f"{r['cpu_us_min']:.0f}..{r['cpu_us_max']:.0f}",
                f"{r['vs_aiohttp']:.2f}x" if r["vs_aiohttp"] is not None else "-",
                f"{r['rps']:.0f}",
                f"~{r['quoted_us']:,}" if r["quoted_us"] else "-",
                f"{r['other_cpu_pct']:.0f}",
                str(r["errors"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "CPU µs/req: this process's CPU time per request (client library + event loop + this loop), median of rounds;"
        " 'quoted' is what clawrouter/upstream.py states; other CPU %: busy time of anything else on the machine"
        " (% of one CPU, median of rounds) — high values mean noisy figures."
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~15 s run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 3)")
    parser.add_argument("--seconds", type=float, help="time limit of one round (default 0.6; quick 0.2)")
    parser.add_argument("--requests", type=int, default=20000, help="request limit of one round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="concurrency levels (default 1 16)")
    parser.add_argument(
        "--budget", type=float, help="stop starting rounds after this many seconds (default 70; quick 12)"
    )
    parser.add_argument("--clients", nargs="+", default=[c.name for c in CLIENTS], help="clients to measure")
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0, help="upstream pause before each SSE chunk")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (default uvloop)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    args = parser.parse_args(argv)
    defaults = {
        "rounds": 3 if args.quick else 5,
        "seconds": 0.2 if args.quick else 0.6,
        "budget": 12.0 if args.quick else 70.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.warmup_seconds = 0.1 if args.quick else 0.25
    args.warmup_requests = 300
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the upstream
    try:
        return run(args)
    except (asyncio.CancelledError, KeyboardInterrupt):
        go.log("interrupted; the upstream was stopped")
        return 130


def run(args: argparse.Namespace) -> int:
    wall = time.perf_counter()
    pin, pin_text = go.plan_pinning(not args.no_pin)
    if pin:  # here the client is under test: it gets the last CPU, the upstream the others
        pin_text = f"client on CPU {sorted(pin['gateway'])}, upstream on CPU {sorted(pin['rest'])}"
    with tempfile.TemporaryDirectory(prefix="clawrouter-bench-") as tmp:
        procs = go.Processes(Path(tmp), go.child_env())
        try:
            port = go.free_port()
            cmd = [sys.executable, str(go.SCRIPT), "_serve", "upstream", "--port", str(port)]
            upstream = procs.spawn("upstream", [*cmd, "--chunk-gap-ms", str(args.chunk_gap_ms)], port, None)
            if pin:
                os.sched_setaffinity(upstream.pid, pin["rest"])
                os.sched_setaffinity(0, pin["gateway"])
            procs.wait_ready(upstream, "/health")
            url = upstream.url + "/v1/chat/completions"
            if args.loop == "uvloop":
                rounds, completed = go.run_async(measure(args, url, upstream.pid))
            else:
                rounds, completed = asyncio.run(measure(args, url, upstream.pid))
        finally:
            procs.stop_all()
    result = {
        "environment": {
            "python": platform.python_version(),
            "loop": args.loop,
            "cpus": os.cpu_count(),
            "pinning": pin_text,
            "rounds_completed": completed,
            "seconds_per_round": args.seconds,
            "chunk_gap_ms": args.chunk_gap_ms,
            "wall_seconds": time.perf_counter() - wall,
            "versions": {name: _version(name) for name in ("aiohttp", "httpx", "httpcore", "httpx-aiohttp", "uvloop")},
        },
        "results": summarize(rounds),
    }
    table = render(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table)
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


if __name__ == "__main__":
    sys.exit(main())
