"""The agent's half: sign Solana ``exact`` requirements for :class:`clawrouter.client.Client`.

:class:`SolanaExactSigner` is a :class:`clawrouter.client.PaymentSigner`. To
sign it needs the mint's decimals and token program (read once per mint) and a
recent blockhash (read at most every ``blockhash_ttl`` seconds): two RPC reads
that an :class:`~clawrouter.client.AsyncClient` makes ahead, without blocking
its loop (``aprepare``). With the plugin installed and a Solana wallet found
(:class:`~clawrouter_solana.wallet.SolanaWallet`), ``Client()`` gets one
without being asked::

    from clawrouter.client import Client, Policy
    from clawrouter_solana.client import SolanaExactSigner
    from clawrouter_solana.wallet import SolanaWallet

    signer = SolanaExactSigner(SolanaWallet.resolve().keypair)   # mainnet/devnet: public RPC by default
    client = Client(signers=[signer], policy=Policy(max_per_call="0.05"))
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import httpx
from solders.hash import Hash
from solders.keypair import Keypair

from clawrouter.client import PaymentError
from clawrouter.payments import PaymentPayload, PaymentRequirements, ResourceInfo, network_v1

from . import constants as c
from .exact import build_transfer, encode_transaction
from .networks import network_for
from .rpc import (
    JSON_HEADERS,
    AccountInfo,
    Calls,
    RpcError,
    RpcUnavailable,
    SyncSolanaRpc,
    account_from,
    decode_batch,
    encode_batch,
    raise_for_error,
    shown_url,
)

__all__ = ["RPC_URL_ENV", "SolanaExactSigner"]

#: an RPC endpoint for every Solana network the signer is not told otherwise about
RPC_URL_ENV = "CLAWROUTER_SOLANA_RPC_URL"


class SolanaExactSigner:
    """Signs x402 ``exact`` payments on Solana networks with ``keypair`` (see the module docstring).

    ``rpc_urls`` maps CAIP-2 ids to RPC endpoints; ``rpc_url`` (or
    ``$CLAWROUTER_SOLANA_RPC_URL``) serves every other network; mainnet and
    devnet fall back to their public endpoints. A network with no endpoint is
    not supported.
    """

    scheme = "exact"

    def __init__(
        self,
        keypair: Keypair,
        *,
        rpc_urls: Mapping[str, str] | None = None,
        rpc_url: str | None = None,
        blockhash_ttl: float = 10.0,
        unit_price: int = c.DEFAULT_COMPUTE_UNIT_PRICE,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keypair = keypair
        self._pubkey = keypair.pubkey()  # solders derives it from the secret on every call
        self.rpc_urls = dict(rpc_urls or {})
        self.rpc_url = rpc_url or os.environ.get(RPC_URL_ENV, "").strip() or None
        self.blockhash_ttl = blockhash_ttl
        self.unit_price = unit_price
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._mints: dict[tuple[str, str], tuple[int, str]] = {}  # (url, mint) -> (decimals, token program)
        self._blockhashes: dict[str, tuple[str, float]] = {}  # url -> (blockhash, fetched at)
        self._rpcs: dict[str, SyncSolanaRpc] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"SolanaExactSigner({self.payer})"

    @property
    def payer(self) -> str:
        return str(self._pubkey)

    def url_for(self, network: str) -> str | None:
        known = network_for(network)
        return self.rpc_urls.get(network) or self.rpc_url or (known.rpc_url if known else None) or None

    def supports(self, requirements: PaymentRequirements) -> bool:
        fee_payer = (requirements.extra or {}).get("feePayer")
        return (
            requirements.scheme == "exact"
            and requirements.network.startswith("solana:")
            and isinstance(fee_payer, str)
            and self.url_for(requirements.network) is not None
        )

    # --- reading the chain --------------------------------------------------------------

    def _fresh(self, url: str) -> str | None:
        cached = self._blockhashes.get(url)
        if cached is not None and self.clock() - cached[1] < self.blockhash_ttl:
            return cached[0]
        return None

    def _remember_mint(self, url: str, mint: str, account: AccountInfo | None) -> tuple[int, str]:
        if account is None:
            raise PaymentError(f"the mint {mint} does not exist on {url}", reason="unsignable")
        if account.owner not in c.TOKEN_PROGRAMS or len(account.data) < 45:
            raise PaymentError(f"{mint} is not an SPL token mint", reason="unsignable")
        found = (account.data[44], account.owner)
        with self._lock:
            self._mints[(url, mint)] = found
        return found

    def _read(self, requirements: PaymentRequirements) -> tuple[str, int, str, float]:
        """(blockhash, decimals, token program, when the blockhash was read): the server's
        ``extra.recentBlockhash`` if it offers one, else from the caches or the RPC."""
        url = self.url_for(requirements.network)
        assert url is not None  # supports() said so
        mint = requirements.asset
        offered = _offered_blockhash(requirements)
        blockhash, known = offered or self._fresh(url), self._mints.get((url, mint))
        if blockhash is None or known is None:
            rpc = self._rpcs.get(url)
            if rpc is None:
                rpc = self._rpcs.setdefault(url, SyncSolanaRpc(url, timeout=self.timeout))
            try:
                if known is None:
                    known = self._remember_mint(url, mint, rpc.account(mint))
                if blockhash is None:
                    blockhash = rpc.latest_blockhash()[0]
                    with self._lock:
                        self._blockhashes[url] = (blockhash, self.clock())
            except (RpcUnavailable, RpcError) as exc:
                raise PaymentError(f"cannot read {requirements.network} to sign: {exc}", reason="unsignable") from None
        return blockhash, known[0], known[1], self.clock() if offered else self._blockhashes[url][1]

    async def aprepare(self, requirements: Sequence[PaymentRequirements]) -> None:
        """Read what :meth:`sign` needs (one batch per endpoint) without blocking an event loop."""
        wanted = {(self.url_for(r.network), r.asset): _offered_blockhash(r) for r in requirements}
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            for (url, mint), offered in wanted.items():
                if url is None:
                    continue
                calls = [] if (url, mint) in self._mints else [Calls.account_call(mint)]
                if offered is None and self._fresh(url) is None:
                    calls.append(Calls.blockhash_call())
                if not calls:
                    continue
                body, numbers = encode_batch(calls, self._ids)
                try:
                    response = await http.post(url, content=body, headers=JSON_HEADERS)
                except httpx.HTTPError as exc:
                    raise RpcUnavailable(f"Solana RPC {shown_url(url)}: {type(exc).__name__}: {exc}") from exc
                answers = decode_batch(calls, numbers, response.status_code, response.content, url)
                for (method, _), answer in zip(calls, answers, strict=True):
                    result = raise_for_error(answer)
                    if method == "getAccountInfo":
                        self._remember_mint(url, mint, account_from(result))
                    else:
                        with self._lock:
                            self._blockhashes[url] = (Calls.blockhash_result(result)[0], self.clock())

    # --- signing ------------------------------------------------------------------------

    def sign(
        self, requirements: PaymentRequirements, resource: ResourceInfo | None, version: int
    ) -> tuple[PaymentPayload, str, int]:
        blockhash, decimals, program, read_at = self._read(requirements)
        try:
            tx = build_transfer(
                requirements,
                self.keypair,
                blockhash=blockhash,
                decimals=decimals,
                token_program=program,
                unit_price=self.unit_price,
            )
        except ValueError as exc:
            raise PaymentError(f"cannot sign for {requirements.network}: {exc}", reason="unsignable") from None
        payload = {"transaction": encode_transaction(tx)}
        signature = str(tx.signatures[list(tx.message.account_keys).index(self._pubkey)])
        # a blockhash stays usable for ~60-90 s after it was produced: past this the payment cannot land
        expires = int(read_at) + c.SETTLEMENT_TTL_SECONDS
        if version == 1:
            return (
                PaymentPayload(1, payload, scheme=requirements.scheme, network=network_v1(requirements.network)),
                signature,
                expires,
            )
        return PaymentPayload(2, payload, accepted=requirements, resource=resource), signature, expires

    def close(self) -> None:
        """Close the RPC connections. The signer stays usable: it opens new ones when it must read."""
        with self._lock:
            rpcs, self._rpcs = list(self._rpcs.values()), {}
        for rpc in rpcs:
            rpc.close()


def _offered_blockhash(requirements: PaymentRequirements) -> str | None:
    """The blockhash the server offers to sign with (``extra.recentBlockhash``), if well-formed."""
    offered = (requirements.extra or {}).get("recentBlockhash")
    if not isinstance(offered, str):
        return None
    try:
        return str(Hash.from_string(offered))
    except ValueError:
        return None
