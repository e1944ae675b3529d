"""Routing decision latency and memory, in process.

A 100-model catalogue (the shipped one, plus synthetic variants of its models
with perturbed prices and scores under the same configured providers), prompts
from 20 to 20,000 tokens, mixed profiles and constraints. Each decision is the
router's whole ``decide`` call: classification, constraints, cached ranking and
the walk. Reports p50/p99 per prompt size, then runs ``--decisions`` more
decisions (default 1,000,000) and reports memory before and after (tracemalloc
current size and the process RSS).

    python benchmarks/routing.py            # ~40 s
    python benchmarks/routing.py --decisions 100000 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import sys
import time
import tracemalloc

import msgspec

from clawrouter import Router, load_config
from clawrouter.catalogue import builtin_models
from clawrouter.wire import decode_request

PROVIDERS = ("openai", "anthropic", "google", "deepseek", "mistral", "xai", "qwen", "together", "groq", "moonshot")
WORDS = ("the", "router", "weighs", "price", "latency", "quality", "and", "context", "before", "it", "picks")


def catalogue_router(size: int = 100) -> Router:
    kinds = {"anthropic": "anthropic", "google": "gemini"}
    providers = {
        p: {"kind": kinds.get(p, p if p != "together" else "together"), "base_url": "http://127.0.0.1:9"}
        for p in PROVIDERS
    }
    for data in providers.values():
        if data["kind"] not in ("anthropic", "gemini"):
            data["prewarm"] = False
    base = [m for m in builtin_models() if m.provider in PROVIDERS]
    rng = random.Random(1)
    extra = []
    while len(base) + len(extra) < size:
        model = rng.choice(base)
        n = len(extra)
        data = msgspec.to_builtins(model)
        data.update(
            id=f"{model.id}-variant{n}",
            aliases=[],
            fallbacks=[],
            input_price=round(model.input_price * rng.uniform(0.5, 1.5), 4),
            output_price=round(model.output_price * rng.uniform(0.5, 1.5), 4),
            quality={k: min(1.0, max(0.0, v + rng.uniform(-0.05, 0.05))) for k, v in model.quality.items()},
        )
        extra.append(data)
    config = load_config(data={"providers": providers, "models": extra}, env={})
    router = Router(config, entry_points=False, env={})
    assert len(router.catalogue) >= size, len(router.catalogue)
    return router


def prompt_of(tokens: int, rng: random.Random, kind: int) -> str:
    heads = [
        "Write a Python function that parses this log and returns the error counts:\n",
        "Prove that the following statement holds for every integer n:\n",
        "Summarise the following document in three bullet points:\n",
        "Write a short poem about the sea inspired by this text:\n",
        "Extract every date and amount from this invoice as JSON:\n",
    ]
    body = " ".join(rng.choice(WORDS) for _ in range(max(1, tokens - 12)))
    return heads[kind % len(heads)] + body


def requests_for(tokens: int, count: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = {
            "model": ("auto", "eco", "premium")[i % 3],
            "messages": [{"role": "user", "content": prompt_of(tokens, rng, i)}],
            "max_tokens": rng.choice([256, 1024, 4096]),
        }
        if i % 4 == 1:
            body["clawrouter"] = {"max_price": 0.05}
        if i % 4 == 2:
            body["clawrouter"] = {"capabilities": ["tools"], "deny_providers": ["groq"]}
        out.append(decode_request(json.dumps(body).encode()))
    return out


def measure(router: Router, requests: list, repeat: int) -> list[float]:
    times = []
    decide = router.decide
    clock = time.perf_counter_ns
    for _ in range(repeat):
        for request in requests:
            start = clock()
            decide(request)
            times.append((clock() - start) / 1000)
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=1_000_000, help="decisions for the memory check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    router = catalogue_router(100)
    results: dict[str, object] = {"models": len(router.catalogue), "sizes": {}}
    all_times: list[float] = []
    for tokens in (20, 200, 2_000, 20_000):
        requests = requests_for(tokens, 200, tokens)
        measure(router, requests, 1)  # warm the ranking cache
        times = measure(router, requests, 25)
        all_times += times
        results["sizes"][tokens] = {  # type: ignore[index]
            "p50_us": round(statistics.median(times), 2),
            "p99_us": round(pct(times, 0.99), 2),
            "decisions": len(times),
        }
    results["all"] = {"p50_us": round(statistics.median(all_times), 2), "p99_us": round(pct(all_times, 0.99), 2)}

    # memory: a long run of decisions over mixed sizes
    mixed = requests_for(20, 50, 1) + requests_for(2_000, 50, 2) + requests_for(20_000, 20, 3)
    gc.collect()
    tracemalloc.start()
    measure(router, mixed, 2)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    done = 0
    while done < args.decisions:
        for request in mixed:
            router.decide(request)
        done += len(mixed)
        if done % 100_000 < len(mixed):
            # feed live stats now and then, as the execute stage would
            router.stats.success(next(iter(router.catalogue)).id, 0.2)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["memory"] = {
        "decisions": done,
        "seconds": round(elapsed, 1),
        "traced_before_kib": before // 1024,
        "traced_after_kib": after // 1024,
        "growth_kib": (after - before) // 1024,
        "max_rss_before_mib": rss_before // 1024,
        "max_rss_after_mib": rss_after // 1024,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"routing decisions on a {results['models']}-model catalogue (classification included)")
    print(f"{'prompt tokens':>14}  {'p50 µs':>8}  {'p99 µs':>8}  decisions")
    for tokens, row in results["sizes"].items():  # type: ignore[attr-defined]
        print(f"{tokens:>14}  {row['p50_us']:>8}  {row['p99_us']:>8}  {row['decisions']}")
    print(f"{'all':>14}  {results['all']['p50_us']:>8}  {results['all']['p99_us']:>8}")  # type: ignore[index]
    mem = results["memory"]
    print(
        f"memory over {mem['decisions']:,} decisions ({mem['seconds']} s, tracemalloc on): "  # type: ignore[index]
        f"traced {mem['traced_before_kib']} -> {mem['traced_after_kib']} KiB "  # type: ignore[index]
        f"(growth {mem['growth_kib']} KiB); max RSS {mem['max_rss_before_mib']} -> {mem['max_rss_after_mib']} MiB"  # type: ignore[index]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
