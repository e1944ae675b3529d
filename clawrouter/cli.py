"""The ``clawrouter`` command: serve, models, route, demo, hash-key, wallet."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import __version__
from .config import ConfigError

if TYPE_CHECKING:
    from .wallet import Wallet

__all__ = ["main"]


class CommandError(Exception):
    """A command failed for a reason the user can fix: printed without a traceback, exit status 2."""


def cmd_serve(args: argparse.Namespace) -> int:
    import copy
    import logging.config

    import msgspec
    import uvicorn

    from .config import load_config
    from .router import Router
    from .telemetry.logs import configure_logging

    config = load_config(args.config)
    observability = config.observability
    if args.access_log and not observability.access_log:
        observability = msgspec.structs.replace(observability, access_log=True)
        config = msgspec.structs.replace(config, observability=observability)
    fmt = args.log_format or observability.log_format
    try:
        log_config = configure_logging(args.log_level, fmt, observability.access_log)
    except ValueError as exc:
        raise ConfigError(f"config key 'observability.log_format': {exc}") from None
    # before the router is built, so that what it logs while starting is in the chosen format too
    logging.config.dictConfig(copy.deepcopy(log_config))
    logging.captureWarnings(True)  # warnings too, rather than raw text amid JSON lines
    router = Router(config)
    # What exists now (modules, classes, the catalogue: most of the heap) lives as long as the
    # process: leave it out of the garbage collector's full passes, which then only walk what
    # requests create (gc.freeze, as long-running Python servers do)
    import gc

    gc.collect()
    gc.freeze()
    host = args.host or router.config.server.host
    port = args.port if args.port is not None else router.config.server.port
    uvicorn.run(
        router.app,
        host=host,
        port=port,
        lifespan="on",
        log_config=log_config,
        access_log=False,  # clawrouter.access replaces uvicorn's access log
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

    return run_demo(args.config, network=args.network)


def cmd_hash_key(args: argparse.Namespace) -> int:
    from .default_auth import hash_key

    print(hash_key(args.key))
    return 0


def _wallet(path: str | None) -> tuple[Wallet, str]:
    """The wallet the commands use (``$CLAWROUTER_WALLET_KEY``, else the key file) and where it came from."""
    from .wallet import KEY_ENV, Wallet

    file = Path(path).expanduser() if path else Wallet.default_path()
    try:
        wallet = Wallet.resolve(file)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    source = f"${KEY_ENV}" if os.environ.get(KEY_ENV, "").strip() else str(file)
    return wallet, source


def cmd_wallet_new(args: argparse.Namespace) -> int:
    from .wallet import KEY_ENV, Wallet

    file = Path(args.path).expanduser() if args.path else Wallet.default_path()
    wallet = Wallet.generate()
    try:
        saved = wallet.save(file, overwrite=args.force)
    except FileExistsError:
        raise CommandError(f"{file} already exists; pass --force to replace it (its key is then lost)") from None
    except OSError as exc:
        raise CommandError(f"cannot write the wallet key file: {exc}") from None
    print(f"address:  {wallet.address}")
    print(f"key file: {saved} (mode 0600)")
    if os.environ.get(KEY_ENV, "").strip():
        print(f"note: ${KEY_ENV} is set, and is used instead of this file while it is", file=sys.stderr)
    return 0


def cmd_wallet_show(args: argparse.Namespace) -> int:
    wallet, source = _wallet(args.path)
    print(f"address:     {wallet.address}")
    print(f"source:      {source}")
    if args.private_key:
        print(f"private key: 0x{wallet.private_key.hex()}")
    return 0


def cmd_wallet_balance(args: argparse.Namespace) -> int:
    from .evm.networks import network_for

    network: str = args.network
    rpc_url: str | None = args.rpc_url
    asset: str | None = args.asset
    if args.config:
        from .config import load_config

        configured = load_config(args.config).payments.evm.get(network)
        if configured is not None:
            rpc_url = rpc_url or configured.rpc_url or None
            asset = asset or configured.asset or None
    wallet, _ = _wallet(args.path)
    try:
        atomic = asyncio.run(wallet.balance(network, rpc_url, asset))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:
        from web3.exceptions import Web3Exception

        from .evm.chain import ChainError

        if isinstance(exc, ChainError | Web3Exception):
            raise CommandError(f"cannot read the balance on {network}: {_redact(str(exc), rpc_url)}") from None
        raise
    known = network_for(network)
    token = asset or (known.asset if known is not None else "")
    usdc = known is not None and token.lower() == known.asset.lower()
    decimals = known.decimals if known is not None and usdc else None
    amount = _units(atomic, decimals) if decimals is not None else None
    if args.json:
        row = {
            "address": wallet.address,
            "network": network,
            "asset": token,
            "symbol": "USDC" if usdc else None,
            "decimals": decimals,
            "atomic": atomic,
            "amount": amount,
        }
        print(json.dumps(row))
    elif amount is not None:
        print(f"{amount} USDC ({atomic} atomic) on {network} for {wallet.address}")
    else:
        print(f"{atomic} atomic units of {token} on {network} for {wallet.address}")
    return 0


def _units(atomic: int, decimals: int) -> str:
    """``12345678``, 6 -> ``"12.345678"`` (exact, no float)."""
    if decimals <= 0:
        return str(atomic)
    whole, fraction = divmod(atomic, 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}"


def _redact(message: str, url: str | None) -> str:
    """Hide an RPC URL's path and query (providers put API keys there) in an error message."""
    if url:
        parts = urlsplit(url)
        secret = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(secret) > 1:
            message = message.replace(secret, "/…")
    return message


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
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request on the clawrouter.access logger (sets [observability] access_log)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text, or json: one JSON object per line on stderr (default: [observability] log_format, text)",
    )
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
    p.add_argument(
        "--network",
        default="base",
        metavar="NAME",
        help="the local chain to pay on: base (in-process EVM, the default), or one a plugin adds (solana)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("hash-key", help="print the SHA-256 digest to put in [auth] api_keys")
    p.add_argument("key")
    p.set_defaults(func=cmd_hash_key)

    p = sub.add_parser(
        "wallet",
        help="the agent's payer key: create it, show its address, read its USDC balance",
        description="The key an agent pays with: $CLAWROUTER_WALLET_KEY, else a key file (mode 0600).",
    )
    actions = p.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")
    path_help = (
        "key file (default: $CLAWROUTER_WALLET_FILE, else wallet.key in $XDG_CONFIG_HOME/clawrouter "
        "or ~/.config/clawrouter)"
    )

    w = actions.add_parser("new", help="create a wallet key file (mode 0600) and print its address, not its key")
    w.add_argument("--path", metavar="P", help=path_help)
    w.add_argument("--force", action="store_true", help="replace an existing key file (its key is lost)")
    w.set_defaults(func=cmd_wallet_new)

    w = actions.add_parser("show", help="print the wallet's address (and, if asked, its private key)")
    w.add_argument("--path", metavar="P", help=path_help + "; $CLAWROUTER_WALLET_KEY is read first")
    w.add_argument("--private-key", action="store_true", help="also print the private key (anyone with it can spend)")
    w.set_defaults(func=cmd_wallet_show)

    w = actions.add_parser("balance", help="print the wallet's USDC balance on a network")
    w.add_argument("--path", metavar="P", help=path_help + "; $CLAWROUTER_WALLET_KEY is read first")
    w.add_argument("--network", default="eip155:8453", metavar="CAIP2", help="network (default: eip155:8453, Base)")
    w.add_argument(
        "--rpc-url",
        metavar="URL",
        help='JSON-RPC endpoint (default: [payments.evm."NETWORK"] rpc_url of --config, else the public one '
        "of Base / Base Sepolia)",
    )
    w.add_argument("--asset", metavar="ADDR", help="token contract (default: the network's USDC)")
    w.add_argument("--config", metavar="PATH", help="TOML config file to take the network's rpc_url (and asset) from")
    w.add_argument("--json", action="store_true", help="print JSON")
    w.set_defaults(func=cmd_wallet_balance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"clawrouter: configuration error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"clawrouter: {exc}", file=sys.stderr)
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
