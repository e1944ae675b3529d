"""``clawrouter demo``: the embedded default, end to end, over real HTTP.

Starts the router on 127.0.0.1 with the simulated provider (no network, no
keys), sends a few chat completions (profiles, an explicit model, a stream, a
model that fails and falls back) and prints what happened.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from .config import load_config
from .router import Router
from .server import BackgroundServer

__all__ = ["run_demo"]

PROMPTS = [
    ("auto", "Summarise why per-call payments suit autonomous agents.", False),
    ("eco", "List three colours.", False),
    ("premium", "Prove that the square root of two is irrational.", False),
    ("simulated/flaky", "This model fails upstream; the router falls back.", False),
    ("auto", "Stream a short greeting.", True),
]


def run_demo(config_path: str | Path | None = None) -> int:
    config = load_config(config_path)
    if config_path is None:
        # The embedded default, plus one simulated model that always fails, to show fallback.
        data = json.loads(json.dumps(__import__("msgspec").to_builtins(config)))
        data["providers"]["simulated"]["fail_models"] = ["simulated/flaky"]
        data["models"] = [
            {
                "id": "simulated/flaky",
                "provider": "simulated",
                "input_price": 0.2,
                "output_price": 0.8,
                "fallbacks": ["simulated/eco"],
            }
        ]
        config = load_config(data=data, env={})
    router = Router(config)
    print(f"clawrouter demo: {len(router.catalogue)} simulated models, no network, no keys\n")
    rows: list[tuple[str, ...]] = []
    with BackgroundServer(router.app) as server, httpx.Client(base_url=server.url + "/v1", timeout=30) as client:
        for model, prompt, stream in PROMPTS:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
            started = time.perf_counter()
            if stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
                with client.stream("POST", "/chat/completions", json=body) as response:
                    response.raise_for_status()
                    usage: dict[str, int] = {}
                    chunks = 0
                    for line in response.iter_lines():
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            chunks += 1
                            usage = chunk.get("usage") or usage
                    headers = response.headers
                kind = f"stream ({chunks} chunks)"
            else:
                response = client.post("/chat/completions", json=body)
                response.raise_for_status()
                usage, headers, kind = response.json()["usage"], response.headers, "json"
            elapsed = (time.perf_counter() - started) * 1000
            rows.append(
                (
                    model,
                    headers["x-clawrouter-model"],
                    kind,
                    str(usage.get("prompt_tokens", "?")),
                    str(usage.get("completion_tokens", "?")),
                    headers.get("x-clawrouter-cost-usd", "-"),
                    f"{elapsed:.1f}",
                )
            )
    header = ("REQUESTED", "ANSWERED BY", "MODE", "IN", "OUT", "COST USD", "MS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{len(rows)} calls served by {server.url}; payments arrive with the x402 rails.")
    return 0
