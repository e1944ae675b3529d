"""What the Redis state backend adds to a paid request, against the in-memory one in the same run.

A paid request's state work on the verify path is: take the payment's lock
(``acquire``: ``SET NX PX``), then, at once (``Limits.admit``), take a token from
the payer's rate-limit bucket (``take_token``: a Lua script) and reserve its
amount against the payer's day and total budgets (``budget_reserve``: a Lua
script); after settlement the
budget is committed (``budget_settle``) and the settled marker set (``set``).

For each backend the benchmark runs that sequence for many distinct payments,
in interleaved rounds, and reports the median and p95 of the verify-path part
(lock + rate limit + budget reserve) and of the whole sequence, per request,
and the Redis figure minus the memory one (the added latency). The issue's
target: added p50 of the verify path <= 0.5 ms on loopback.

    python benchmarks/state_backends.py           # ~10 s; needs Redis on 127.0.0.1:6379
    python benchmarks/state_backends.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from clawrouter.state import MemoryState


async def one_request(state: Any, n: int, tag: str) -> tuple[float, float]:
    """(verify-path seconds, whole-sequence seconds) for payment ``n``."""
    payer = f"payer-{n % 50}"
    counters = [
        (f"budget:payer:{payer}:day:{tag}", 10**12, 172800.0),
        (f"budget:payer:{payer}:total:{tag}", 10**12, 1e8),
    ]
    start = time.perf_counter()
    assert await state.acquire(f"payment:bench:{tag}:{n}", 300.0)
    # then, as Limits.admit does, the rate limit and the budget reservation at once
    token, reserved = await asyncio.gather(
        state.take_token(f"rate:payer:{payer}:{tag}", 1e9, 1e9), state.budget_reserve(counters, 1000)
    )
    assert token == 0.0 and reserved
    verified = time.perf_counter()
    await state.budget_settle([(k, t) for k, _, t in counters], 1000, True)
    await state.set(f"payment:bench:{tag}:{n}", "settled", 300.0)
    return verified - start, time.perf_counter() - start


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


async def main(rounds: int, per_round: int) -> int:
    try:
        from clawrouter_redis.state import RedisState
    except ImportError:
        print("clawrouter-redis is not installed: pip install -e plugins/redis", file=sys.stderr)
        return 2
    prefix = f"clawrouter-bench:{uuid.uuid4().hex}:"
    backends: dict[str, Any] = {"memory": MemoryState(), "redis": RedisState("redis://127.0.0.1:6379/0", prefix=prefix)}
    try:
        await backends["redis"].ping()
    except Exception as exc:
        print(f"Redis is not reachable on 127.0.0.1:6379: {exc}", file=sys.stderr)
        return 2
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in backends}
    n = 0
    try:
        for round_ in range(rounds + 1):  # the first round warms up (script loading, connections)
            for name in sorted(backends, reverse=round_ % 2 == 1):
                for _ in range(per_round):
                    n += 1
                    verify, whole = await one_request(backends[name], n, prefix)
                    if round_:
                        samples[name][0].append(verify)
                        samples[name][1].append(whole)
    finally:
        redis = backends["redis"]
        keys = [k async for k in redis.client.scan_iter(match=prefix + "*")]
        for start in range(0, len(keys), 500):
            await redis.client.delete(*keys[start : start + 500])
        await redis.aclose()
    print(f"{'backend':<8} {'verify p50':>11} {'verify p95':>11} {'whole p50':>10} {'whole p95':>10}")
    for name, (verify, whole) in samples.items():
        print(
            f"{name:<8} {statistics.median(verify) * 1e3:>9.3f}ms {p95(verify) * 1e3:>9.3f}ms "
            f"{statistics.median(whole) * 1e3:>8.3f}ms {p95(whole) * 1e3:>8.3f}ms"
        )
    added = statistics.median(samples["redis"][0]) - statistics.median(samples["memory"][0])
    print(
        f"\nadded by Redis on the verify path (lock + rate limit + budget reserve), p50: {added * 1e3:.3f} ms "
        f"(target <= 0.5 ms); {rounds} rounds x {per_round} requests per backend, Python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    raise SystemExit(asyncio.run(main(3, 100) if options.quick else main(10, 500)))
