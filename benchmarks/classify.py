#!/usr/bin/env python
"""Cost of request classification (:func:`clawrouter.classify.classify`).

Times every call individually (``time.perf_counter_ns`` around one call, the
garbage collector paused while timing) over:

* the routing evaluation set (``tests/data/routing_eval.jsonl``, built into
  requests exactly as the tests build them), and
* synthetic prompts of about 20, 200, 2,000 and 20,000 tokens (mixed prose
  and code, generated from a fixed seed; sizes measured with
  :func:`clawrouter.tokens.count_tokens`), plus a 200,000-token one to show the
  cost does not follow the size.

Calls are interleaved (round-robin over the requests, repeated for a number
of rounds) so drift hits every row alike. Prints median, p90, p99 and max per
row, in microseconds, and the cost of an empty timed call (timer overhead, not
subtracted). For scale, a second table times :func:`clawrouter.tokens.prompt_tokens`
(a full regex scan of the prompt) on the same synthetic prompts, a few calls each.

    python benchmarks/classify.py              # about 10 seconds
    python benchmarks/classify.py --rounds 50  # quicker, noisier
    python benchmarks/classify.py --json       # JSON on stdout, table on stderr
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clawrouter.classify import classify  # noqa: E402
from clawrouter.tokens import count_tokens, prompt_tokens  # noqa: E402
from clawrouter.wire import ChatCompletionRequest, decode_request  # noqa: E402

TARGET_TOKENS = (20, 200, 2_000, 20_000, 200_000)
TIME_BUDGET_S = 25.0

_PROSE_TEXT = (
    "the request asks for a careful answer about how the service behaves when two payments arrive at "
    "once and whether the ledger can record the same charge twice if a retry happens after a timeout"
)
_PROSE = _PROSE_TEXT.split()
_CODE = [
    "def settle(account, amount):",
    "    if amount <= 0:",
    "        raise ValueError('amount must be positive')",
    "    entry = ledger.find(account.id)",
    "    ledger.write({'account': account.id, 'amount': amount})",
    "    return gateway.charge(account, amount)",
]


def synthetic(tokens: int, seed: int = 7) -> str:
    """Prose with pasted code, about ``tokens`` tokens long (counted, not guessed)."""
    rng = random.Random(seed)
    parts = ["Please look at the code below and tell me whether a retry can double-charge a customer.\n\n"]
    count = count_tokens(parts[0])
    while count < tokens:
        if rng.random() < 0.5:
            chunk = " ".join(rng.choice(_PROSE) for _ in range(rng.randint(6, 18))) + ".\n"
        else:
            chunk = "\n".join(_CODE[: rng.randint(2, len(_CODE))]) + "\n\n"
        parts.append(chunk)
        count += count_tokens(chunk)
    parts.append("\nWhat would you change first?")
    return "".join(parts)


def request_for(text: str) -> ChatCompletionRequest:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    return decode_request(json.dumps(body).encode())


def eval_requests() -> list[ChatCompletionRequest]:
    path = ROOT / "tests" / "test_classify.py"
    spec = importlib.util.spec_from_file_location("_classify_eval", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [request for _, request in module.load_eval()]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(
    groups: dict[str, list[ChatCompletionRequest]], rounds: int, budget_s: float
) -> tuple[dict[str, list[float]], int]:
    """Per-call times in microseconds per group, interleaved; stops early at ``budget_s``."""
    fn: Callable[[ChatCompletionRequest], Any] = classify
    clock = time.perf_counter_ns
    order = [(name, request) for name, requests in groups.items() for request in requests]
    samples: dict[str, list[float]] = {name: [] for name in groups}
    for _, request in order:  # warm-up
        fn(request)
    deadline = time.monotonic() + budget_s
    done = 0
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(order)
            for name, request in order[shift:] + order[:shift]:
                t0 = clock()
                fn(request)
                t1 = clock()
                samples[name].append((t1 - t0) / 1000.0)
            done += 1
            if time.monotonic() > deadline:
                break
            if r % 16 == 15:
                gc.enable()
                gc.collect()
                gc.disable()
    finally:
        gc.enable()
    return samples, done


def full_scan_reference(groups: dict[str, list[ChatCompletionRequest]], budget_s: float) -> dict[str, float]:
    """Median time of ``tokens.prompt_tokens`` per synthetic prompt, in microseconds (a few calls)."""
    clock = time.perf_counter_ns
    out: dict[str, float] = {}
    deadline = time.monotonic() + budget_s
    for name, requests in groups.items():
        if not name.startswith("synthetic"):
            continue
        values = []
        for _ in range(9):
            t0 = clock()
            prompt_tokens(requests[0])
            values.append((clock() - t0) / 1000.0)
            if time.monotonic() > deadline:
                break
        out[name] = statistics.median(values)
    return out


def timer_overhead() -> float:
    clock = time.perf_counter_ns
    values = []
    for _ in range(20_000):
        t0 = clock()
        t1 = clock()
        values.append((t1 - t0) / 1000.0)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="calls per request (default 200)")
    parser.add_argument("--budget", type=float, default=TIME_BUDGET_S, help="time budget in seconds")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args()

    groups: dict[str, list[ChatCompletionRequest]] = {"eval set": eval_requests()}
    sizes: dict[str, tuple[int, int]] = {}
    for target in TARGET_TOKENS:
        text = synthetic(target)
        name = f"synthetic {target:,} tok"
        groups[name] = [request_for(text)]
        sizes[name] = (count_tokens(text), len(text))

    samples, rounds = measure(groups, args.rounds, args.budget)
    overhead = timer_overhead()
    reference = full_scan_reference(groups, 5.0)

    rows = []
    for name, values in samples.items():
        values.sort()
        tokens, chars = sizes.get(name, (0, 0))
        rows.append(
            {
                "set": name,
                "requests": len(groups[name]),
                "calls": len(values),
                "tokens": tokens,
                "chars": chars,
                "p50_us": round(statistics.median(values), 2),
                "p90_us": round(percentile(values, 0.90), 2),
                "p99_us": round(percentile(values, 0.99), 2),
                "max_us": round(values[-1], 2),
            }
        )

    out = sys.stderr if args.json else sys.stdout
    print(f"classify(): per-call time, {rounds} interleaved rounds, GC paused while timing", file=out)
    print(f"{'set':<26}{'calls':>8}{'chars':>11}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'max µs':>9}", file=out)
    for row in rows:
        chars = f"{row['chars']:,}" if row["chars"] else "-"
        print(
            f"{row['set']:<26}{row['calls']:>8}{chars:>11}{row['p50_us']:>9.2f}{row['p90_us']:>9.2f}"
            f"{row['p99_us']:>9.2f}{row['max_us']:>9.2f}",
            file=out,
        )
    print(f"timer overhead (empty timed call, included above): {overhead:.2f} µs", file=out)
    print("for scale, tokens.prompt_tokens (full regex scan) on the same prompts, median of a few calls:", file=out)
    for name, value in reference.items():
        print(f"  {name:<24}{value:>14,.1f} µs", file=out)
    print(f"python {sys.version.split()[0]}", file=out)
    if args.json:
        result = {"rounds": rounds, "timer_overhead_us": overhead, "rows": rows, "prompt_tokens_us": reference}
        json.dump(result, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
