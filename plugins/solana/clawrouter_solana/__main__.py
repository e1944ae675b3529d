"""``python -m clawrouter_solana wallet new|show|balance``: the agent's Solana wallet."""

from __future__ import annotations

import argparse
import json
import sys

from .networks import MAINNET, network_for
from .wallet import SolanaWallet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clawrouter_solana", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wallet = commands.add_parser("wallet", help="the agent's Solana wallet").add_subparsers(
        dest="action", required=True
    )
    new = wallet.add_parser("new", help="create a wallet file (solana-keygen's format, mode 0600)")
    new.add_argument("--file", help="where (default: $CLAWROUTER_SOLANA_WALLET_FILE or the config directory)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file (its key is lost)")
    show = wallet.add_parser("show", help="print the wallet's address")
    show.add_argument("--file")
    balance = wallet.add_parser("balance", help="the wallet's USDC balance")
    balance.add_argument("--file")
    balance.add_argument("--network", default=MAINNET.network, help="CAIP-2 id (default: mainnet)")
    balance.add_argument("--rpc-url", help="RPC endpoint (default: the network's public one)")
    balance.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.action == "new":
            created = SolanaWallet.generate()
            path = created.save(args.file, overwrite=args.force)
            print(f"{created.address}\n(key written to {path})")
            return 0
        found = SolanaWallet.resolve(args.file)
        if found is None:
            print("no Solana wallet: create one with `python -m clawrouter_solana wallet new`", file=sys.stderr)
            return 1
        if args.action == "show":
            print(found.address)
            return 0
        return _balance(found, args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _balance(wallet: SolanaWallet, args: argparse.Namespace) -> int:
    from .accounts import associated_token_address
    from .rpc import RpcError, RpcUnavailable, SyncSolanaRpc

    network = network_for(args.network)
    url = args.rpc_url or (network.rpc_url if network else "")
    if network is None or not url:
        print(f"error: {args.network}: give --rpc-url (and a built-in network)", file=sys.stderr)
        return 1
    rpc = SyncSolanaRpc(url)
    try:
        mint = rpc.account(network.usdc)
        program = mint.owner if mint is not None else ""
        units = rpc.token_balance(associated_token_address(wallet.address, network.usdc, program)) if program else 0
    except (RpcError, RpcUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        rpc.close()
    if args.json:
        print(
            json.dumps({"address": wallet.address, "network": network.network, "asset": network.usdc, "units": units})
        )
    else:
        print(f"{units / 10**network.decimals:.6f} USDC on {network.network} ({wallet.address})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
