"""The ``clawrouter`` command: serve, models, route, demo, hash-key."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError

__all__ = ["main"]


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .router import Router

    router = Router(args.config)
    host = args.host or router.config.server.host
    port = args.port if args.port is not None else router.config.server.port
    uvicorn.run(
        router.app,
        host=host,
        port=port,
        lifespan="on",
        access_log=args.access_log,
        log_level=args.log_level,
        server_header=False,
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .catalogue import builtin_models
    from .router import Router

    router = Router(args.config)
    models = list(router.catalogue)
    if args.all:
        known = {m.id for m in models}
        models += [m for m in builtin_models() if m.id not in known]
    if args.json:
        import msgspec

        rows_json = [{**msgspec.to_builtins(m), "available": m.id in router.catalogue} for m in models]
        print(msgspec.json.encode(rows_json).decode())
        return 0
    rows = [("MODEL", "PROVIDER", "IN $/M", "OUT $/M", "CONTEXT", "CAPABILITIES", "AVAILABLE")]
    rows += [
        (
            m.id,
            m.provider,
            f"{m.input_price:g}",
            f"{m.output_price:g}",
            str(m.context_window),
            ",".join(m.capabilities),
            "yes" if m.id in router.catalogue else "no (provider not configured)",
        )
        for m in models
    ]
    _table(rows)
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .router import Router
    from .wire import ChatCompletionRequest, ChatMessage, RouteConstraints

    router = Router(args.config)
    profile = args.profile or router.config.routing.default_profile
    constraints = RouteConstraints(max_price=args.max_price, strategy=args.strategy)
    request = ChatCompletionRequest(
        model=profile, messages=[ChatMessage(role="user", content=args.prompt)], clawrouter=constraints
    )
    explained = router.explain(request)
    if args.json:
        print(json.dumps(explained, indent=2))
        return 0
    features = explained["features"]
    print(f"model:     {explained['model']} ({explained['provider']})")
    print(f"fallbacks: {', '.join(explained['fallbacks']) or '-'}")
    print(f"profile:   {explained['profile']}  strategy: {explained['strategy']}")
    print(
        f"request:   task {features['task']}, tier {features['tier']}, ~{features['prompt_tokens']} prompt tokens, "
        f"language {features['language']}"
    )
    print(f"quote:     {explained['quote_usd_micro']} micro-USD (worst case over the chain)")
    print(f"decided in {explained['decision_us']} µs\n")
    rows = [("CANDIDATE", "SCORE", "QUALITY", "PRICE", "LATENCY", "WORST µUSD", "EXCLUDED")]
    for c in explained["candidates"]:
        rows.append(
            (
                c["model"],
                f"{c.get('score', 0):.3f}",
                f"{c.get('quality', 0):.2f}",
                f"{c.get('price', 0):.2f}",
                f"{c.get('latency', 0):.2f}",
                str(c["worst_case_usd_micro"]),
                c.get("excluded", ""),
            )
        )
    _table(rows)
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.config)


def cmd_hash_key(args: argparse.Namespace) -> int:
    from .default_auth import hash_key

    print(hash_key(args.key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawrouter", description="One OpenAI-compatible endpoint to many LLMs, paid per call with x402."
    )
    parser.add_argument("--version", action="version", version=f"clawrouter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="PATH", help="TOML config file (default: $CLAWROUTER_CONFIG or built-in)")

    p = sub.add_parser("serve", help="run the router over HTTP (uvicorn)")
    common(p)
    p.add_argument("--host", help="address to bind (default: [server] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [server] port, 8402)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the model catalogue")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all", action="store_true", help="include shipped models whose provider is not configured")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("route", help="explain which model a prompt would be routed to")
    common(p)
    p.add_argument("prompt")
    p.add_argument("--profile", choices=["eco", "auto", "premium"], help="routing profile (default: config)")
    p.add_argument("--max-price", type=float, metavar="USD", help="most the request may cost (worst case)")
    p.add_argument("--strategy", help="routing strategy (default: config)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("demo", help="run the embedded default end to end and print a summary")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("hash-key", help="print the SHA-256 digest to put in [auth] api_keys")
    p.add_argument("key")
    p.set_defaults(func=cmd_hash_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"clawrouter: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a clear message, not a traceback
        from .errors import ClawError

        if isinstance(exc, ClawError):
            print(f"clawrouter: {exc.message}", file=sys.stderr)
            return 1
        raise
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
