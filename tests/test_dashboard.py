"""The dashboard (``GET /-/dashboard``) in the machine's headless Chromium.

A router paid on the in-process chain is served by uvicorn on 127.0.0.1 in this test's event loop,
mounted under ``/llm`` (the page fetches ``stats`` relative to itself), with an admin key. Paid
clients keep it under load from the simulated provider (JSON and streamed answers; one model
failing, so there are errors, fallbacks and an open breaker; settlements on the chain) while
``tests/browser/dashboard.mjs`` (playwright-core driving ``chromium``, never a downloaded browser)
waits for every chart to draw, screenshots the page and reports what it sees. Without Chromium,
node or ``node_modules/playwright-core`` the browser test is skipped (``scripts/ensure-chromium``,
``npm ci``), except under ``CI=true`` where it fails.

The admin key's protection of the page is checked over plain HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import paid_router
import pytest
import uvicorn
from paid_router import make_router

from clawrouter.client import AsyncClient, Policy
from clawrouter.config import load_config
from clawrouter.router import Router
from clawrouter.types import ASGIApp

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "browser" / "dashboard.mjs"
ADMIN = "dashboard-admin-key-0123456789"
DIGEST = hashlib.sha256(ADMIN.encode()).hexdigest()
FAILING = "simulated/eco"  # the eco profile's first choice: its requests fall back, explicit ones fail
CHARTS = {"spend", "traffic", "model-mix", "latency", "latency-trend"}
NODE_TIMEOUT = 90.0

chain = paid_router.chain  # a fixture: one in-process chain per module
wallets = paid_router.wallets  # a fixture: (settler, agent funded with FUNDS, operator)


def chromium() -> str | None:
    """``$CLAWROUTER_CHROMIUM`` if set (and executable), else ``chromium`` on the PATH."""
    path = os.environ.get("CLAWROUTER_CHROMIUM")
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which("chromium")


@pytest.fixture
def browser() -> tuple[str, str]:
    """(node, chromium), or skip naming what is missing; under ``CI=true`` fail instead."""
    node, found = shutil.which("node"), chromium()
    missing = []
    if node is None:
        missing.append("node")
    if found is None:
        missing.append("chromium (scripts/ensure-chromium installs it)")
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("node_modules/playwright-core (npm ci)")
    if missing:
        reason = "the dashboard's browser test needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: every test must run)", pytrace=False)
        pytest.skip(reason)
    assert node is not None and found is not None
    return node, found


async def _not_found(scope, receive, send) -> None:
    """The host app around the router: nothing of its own."""
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not here"})


@contextlib.asynccontextmanager
async def serve(router: Router, app: ASGIApp | None = None) -> AsyncIterator[str]:
    """``app`` (default: the router) over HTTP with uvicorn on 127.0.0.1, in this event loop,
    with the router started; yields the base URL."""
    async with router.lifespan():
        config = uvicorn.Config(
            app or router.app, host="127.0.0.1", port=0, lifespan="off", access_log=False, log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                assert not task.done() and time.monotonic() < deadline, "uvicorn did not start"
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


def observed(chain, **server) -> dict:
    """Config sections: fine statistics steps, explorer links for the test chain, the server's keys."""
    explorer = {chain.network: "https://explorer.invalid/tx/{tx}"}
    return {
        "observability": {"stats_step_seconds": 1, "explorers": explorer},
        "server": server,
        "providers": {"simulated": {"kind": "simulated", "fail_models": [FAILING], "latency_ms": 15, "ttft_ms": 4}},
    }


async def one_call(client: AsyncClient, model: str, stream: bool, text: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 24, "stream": stream}
    try:
        async with client.stream("POST", "v1/chat/completions", json=body) as response:
            await response.aread()
            return response.status_code
    except httpx.HTTPError:  # a paid call the client gave up on: the router still counted it
        return 0


async def load(client: AsyncClient, rounds: int, *, seconds: float = 0, done: asyncio.Event | None = None) -> list[int]:
    """At most ``rounds`` rounds, stopping early after ``seconds`` (if given) or once ``done`` is set,
    of: the eco profile (its first model fails: a fallback), an explicit failing model, and an
    explicit working one, JSON and streamed."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds if seconds else math.inf
    for i in range(rounds):
        if (done is not None and done.is_set()) or time.monotonic() > deadline:
            break
        for model, stream in (("eco", False), ("simulated/standard", True), ("eco", True), (FAILING, False)):
            statuses.append(await one_call(client, model, stream, f"round {i}: say something about {model}"))
        await asyncio.sleep(0.05)
    return statuses


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


async def run_node(
    node: str, chromium_path: str, url: str, key: str, png: Path, wait_ms: int = 20_000
) -> tuple[int, dict, str]:
    """``node tests/browser/dashboard.mjs``, killed by its pid if it outlives NODE_TIMEOUT;
    ``wait_ms``: how long it waits for every chart to draw."""
    env = {**os.environ, "CLAWROUTER_CHROMIUM": chromium_path, "DASHBOARD_WAIT_MS": str(wait_ms)}
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), url, key, str(png), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: node and the Chromium it started
        await proc.wait()
        pytest.fail(f"dashboard.mjs did not finish within {NODE_TIMEOUT} s")
    lines = out.decode().strip().splitlines()
    assert lines, f"dashboard.mjs printed nothing (exit {proc.returncode}): {err.decode()[-2000:]}"
    return proc.returncode or 0, json.loads(lines[-1]), err.decode()


async def test_the_dashboard_draws_live_charts_of_a_router_under_load(browser, chain, wallets, tmp_path):
    node, chromium_path = browser
    _, agent, _ = wallets
    router = make_router(chain, wallets, sections=observed(chain, admin_key_sha256=DIGEST))
    policy = Policy(networks=[chain.network], assets={chain.token: 6})
    png = tmp_path / "dashboard.png"
    async with serve(router, router.wrap(_not_found, "/llm")) as base:
        async with AsyncClient(agent, policy, base_url=base + "/llm/", trust_env=False, timeout=30) as client:
            # a few seconds of traffic first, so that the one-minute window the page is opened on
            # has several points in each series; then more while the browser watches
            warm = await load(client, 60, seconds=4)
            assert 200 in warm and any(s >= 500 for s in warm), warm
            done = asyncio.Event()
            background = asyncio.create_task(load(client, 300, done=done))
            try:
                code, report, stderr = await run_node(node, chromium_path, base + "/llm/-/dashboard#1m", ADMIN, png)
            finally:
                done.set()
                await asyncio.wait_for(background, 60)
        await router.settler.idle()
        settled = {i.transaction for i in await router.ledger.intents() if i.status == "settled"}

    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))  # beside the screenshot
    assert code == 0 and report["ok"], f"{report}\n{stderr[-2000:]}"
    assert report["pageErrors"] == [] and report["consoleErrors"] == [], report
    assert report["blocked"] == [], report  # the page asks for nothing beyond the router
    assert report["status"].startswith("live"), report
    assert set(report["charts"]) == CHARTS, report["charts"]
    for name, chart in report["charts"].items():
        assert chart["points"] > 0, (name, chart)
        # the data marks are the chart's coloured pixels (axes, grid and text are grey)
        assert chart["colored"] >= 300, (name, chart)
        assert chart["pixels"] >= chart["colored"] and chart["width"] >= 280, (name, chart)
    links = report["settlementLinks"]
    assert links and settled, (links, settled)
    assert any(tx in link["href"] for link in links for tx in settled), (links, settled)
    assert all(link["href"].startswith("https://explorer.invalid/tx/0x") for link in links), links
    assert all(link["target"] == "_blank" and "noopener" in link["rel"] for link in links), links
    decisions = report["decisions"]
    assert decisions and any("→" in d["explanation"] for d in decisions), decisions
    assert any("fallback" in d["explanation"] for d in decisions), decisions

    assert png.is_file() and 10_000 < png.stat().st_size < 20_000_000
    width, height = png_size(png)
    assert width == 1280 and 900 <= height <= 8000, (width, height)


async def test_an_idle_router_shows_empty_charts_without_coloured_pixels(browser, tmp_path):
    """The other side of the pixel check: with no traffic nothing is drawn but grey axes and text."""
    node, chromium_path = browser
    router = Router(load_config(data={"providers": {"simulated": {"kind": "simulated"}}}, env={}), entry_points=False)
    png = tmp_path / "empty.png"
    async with serve(router) as base:
        code, report, stderr = await run_node(node, chromium_path, base + "/-/dashboard", "", png, wait_ms=2500)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert code == 1 and not report["ok"] and "error" not in report, f"{report}\n{stderr[-2000:]}"
    assert report["pageErrors"] == [] and report["consoleErrors"] == [] and report["blocked"] == [], report
    assert report["status"].startswith("live") and report["banner"] == "", report
    assert set(report["charts"]) == CHARTS, report["charts"]
    for name, chart in report["charts"].items():
        assert chart["points"] == 0 and chart["colored"] < 20, (name, chart)
        assert chart["pixels"] > 0, (name, chart)  # the "no data yet" message
    assert report["settlementLinks"] == [] and report["settlements"] == 0 and report["decisions"] == []
    assert png_size(png)[0] == 1280


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{key}".encode()).decode()


async def test_the_admin_key_protects_the_page_over_http():
    data = {"server": {"admin_key_sha256": DIGEST}, "providers": {"simulated": {"kind": "simulated"}}}
    router = Router(load_config(data=data, env={}), entry_points=False)
    async with serve(router) as base, httpx.AsyncClient(base_url=base, trust_env=False) as client:
        refused = await client.get("/-/dashboard")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")
        assert "<html" not in refused.text
        assert (await client.get("/-/dashboard", headers={"authorization": basic("not-the-key")})).status_code == 401
        for authorization in (f"Bearer {ADMIN}", basic(ADMIN)):
            page = await client.get("/-/dashboard", headers={"authorization": authorization})
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert b'data-chart="spend"' in page.content
        # what the page fetches, resolved as the browser does: protected the same way
        stats = urljoin(f"{base}/-/dashboard", "stats?window=5m")
        assert (await client.get(stats)).status_code == 401
        assert (await client.get(stats, headers={"authorization": basic(ADMIN)})).json()["window_seconds"] == 300


async def test_without_an_admin_key_the_page_is_open_and_self_contained():
    router = Router(load_config(data={"providers": {"simulated": {"kind": "simulated"}}}, env={}), entry_points=False)
    async with serve(router, router.wrap(_not_found, "/llm")) as base, httpx.AsyncClient(trust_env=False) as client:
        page = await client.get(f"{base}/llm/-/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        stats = await client.get(urljoin(f"{base}/llm/-/dashboard", "stats?window=15m"))
        assert stats.status_code == 200 and stats.json()["window_seconds"] == 900
    html = page.text
    # no build step, nothing fetched from elsewhere: no external script, style, font or image
    for needle in ("<script src", '<link rel="stylesheet"', "@import", "url(http", 'src="http', "//cdn"):
        assert needle not in html, needle
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
