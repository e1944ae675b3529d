"""The project's EIP-3009 test token (TestUSDC) on a throwaway local chain.

Two chains, one interface (``w3``, ``chain_id``, ``network``, ``token``,
``accounts``, ``fund``, ``usdc_balance``):

* :class:`InProcessChain` — eth-tester's py-evm backend inside this process:
  no subprocess, no port, ~70 ms to create (plus ~0.2 s for the first import of
  eth-tester). Its block timestamps follow the wall clock (see
  ``WallClockBackend`` below) so EIP-3009 authorizations signed against
  ``time.time()`` verify and settle as on a live chain.
* :class:`AnvilChain` — a real JSON-RPC node (foundry's ``anvil``, installed by
  ``npm ci``) on 127.0.0.1, chain id 84532, with TestUSDC's code at the Base
  Sepolia USDC address, so EIP-712 domains and payment requirements are exactly
  those of Base Sepolia.

Everything here is for tests and local demos: :data:`DEV_KEYS` are public
throwaway keys and TestUSDC lets anyone mint. web3 is imported at module import;
eth-tester only when an :class:`InProcessChain` is created.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import requests
from eth_abi import abi
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from msgspec import Struct
from web3 import Web3
from web3.contract import Contract
from web3.providers.base import BaseProvider
from web3.types import RPCEndpoint, RPCError, RPCResponse, TxParams, Wei

__all__ = [
    "BASE_SEPOLIA_CHAIN_ID",
    "BASE_SEPOLIA_USDC",
    "DEV_KEYS",
    "AnvilChain",
    "AnvilError",
    "InProcessChain",
    "TokenArtifact",
    "find_anvil",
    "load_token_artifact",
]

#: Base Sepolia's chain id and its (Circle) USDC address: AnvilChain puts
#: TestUSDC's code there, so EIP-712 domains match the real testnet token.
BASE_SEPOLIA_CHAIN_ID = 84532
BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"

#: TEST-ONLY private keys: keccak256("clawrouter-dev-<i>"). They are public (they
#: are derived from this source) and must never hold anything of value on a real
#: network. The local chains give each of them ETH for gas.
DEV_KEYS: tuple[str, ...] = tuple(Web3.keccak(text=f"clawrouter-dev-{i}").to_0x_hex() for i in range(4))

_ARTIFACT = Path(__file__).resolve().parent / "contracts" / "TestUSDC.json"
_DEV_ETH = 1_000 * 10**18  # each dev account's starting gas money


class TokenArtifact(Struct, frozen=True):
    """The compiled TestUSDC (``clawrouter/evm/contracts/TestUSDC.json``)."""

    abi: list[dict[str, Any]]
    bytecode: str  # creation code, 0x-hex
    deployed_bytecode: str  # runtime code, 0x-hex
    compiler: str = ""


@functools.cache
def load_token_artifact() -> TokenArtifact:
    """TestUSDC's ABI and bytecode, as built by ``scripts/build_contracts.py``."""
    raw = json.loads(_ARTIFACT.read_text())
    return TokenArtifact(
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        compiler=str(raw.get("compiler", {}).get("version", "")),
    )


class _TokenChain:
    """What both local chains share: the token contract, funding and balances."""

    w3: Web3
    chain_id: int
    network: str
    token: str
    funder: str  # an unlocked, well-funded account of the node
    accounts: tuple[LocalAccount, ...]

    @property
    def token_contract(self) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(self.token), abi=load_token_artifact().abi)

    def fund(self, address: str, usdc_atomic: int, eth_wei: int = 10**18) -> None:
        """Mint ``usdc_atomic`` TestUSDC to ``address`` and send it ``eth_wei`` for gas."""
        to = Web3.to_checksum_address(address)
        if usdc_atomic:
            self._transact(self.token_contract.functions.mint(to, usdc_atomic).build_transaction(self._tx_base()))
        if eth_wei:
            self._transact({**self._tx_base(), "to": to, "value": Wei(eth_wei)})

    def usdc_balance(self, address: str) -> int:
        balance: int = self.token_contract.functions.balanceOf(Web3.to_checksum_address(address)).call()
        return balance

    def _tx_base(self) -> TxParams:
        return {"from": Web3.to_checksum_address(self.funder)}

    def _transact(self, tx: TxParams) -> str:
        tx_hash = self.w3.eth.send_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
        if receipt["status"] != 1:
            raise RuntimeError(f"local chain transaction {tx_hash.to_0x_hex()} reverted")
        return tx_hash.to_0x_hex()

    def _deploy_token(self) -> str:
        artifact = load_token_artifact()
        tx_hash = self.w3.eth.send_transaction({**self._tx_base(), "data": HexStr(artifact.bytecode)})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
        address = receipt["contractAddress"]
        if receipt["status"] != 1 or address is None:
            raise RuntimeError("deploying TestUSDC failed")
        return Web3.to_checksum_address(address)


# ---------------------------------------------------------------- in-process


@functools.cache
def _wall_clock_classes() -> tuple[type[Any], type[BaseProvider]]:
    """The eth-tester backend and provider classes (eth-tester imported lazily)."""
    from eth.vm.forks.prague import PragueVM
    from eth_tester.backends.pyevm import PyEVMBackend  # type: ignore[import-untyped,unused-ignore]
    from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped,unused-ignore]
    from web3.providers.eth_tester import EthereumTesterProvider

    class SameSecondPragueVM(PragueVM):
        """Prague, except that consecutive blocks may share a timestamp (as on anvil).

        py-evm insists on +1 s per block, so a test mining a block per
        transaction would run the chain's clock ahead of the wall clock by one
        second per transaction, and authorizations with ``validBefore = now +
        60`` would start failing after 60 quick settlements.
        """

        @classmethod
        def validate_header(cls, header: Any, parent_header: Any) -> None:
            if parent_header is not None and header.timestamp == parent_header.timestamp:
                header = header.copy(timestamp=header.timestamp + 1)  # only for the ordering check
            super().validate_header(header, parent_header)

    class WallClockBackend(PyEVMBackend):  # type: ignore[misc,unused-ignore]
        """eth-tester's py-evm backend with block timestamps that follow the wall clock.

        Stock eth-tester stamps the pending block when the previous one is mined,
        so after the process idles, transactions execute with an old
        ``block.timestamp``; and eth_call at ``latest`` runs at the head block's
        time. Here an empty pending block is re-stamped with the current time
        before a transaction is applied, and an eth_call mines an empty block
        first if the head is more than a second old (as a live chain would have).
        ``time_travel`` shifts this clock forward for good.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._clock_offset = 0
            super().__init__(*args, vm_configuration=((0, SameSecondPragueVM),), **kwargs)

        def _now(self) -> int:
            return int(time.time()) + self._clock_offset

        def _restamp_pending(self) -> None:
            header = self.chain.header
            if header.gas_used:  # transactions already applied (auto-mining off): leave it
                return
            parent = self.chain.get_canonical_head()
            stamp = max(self._now(), parent.timestamp)
            if header.timestamp != stamp:
                self.chain.header = header.copy(timestamp=stamp)

        def _refresh_head(self) -> None:
            if not self.chain.header.gas_used and self.chain.get_canonical_head().timestamp < self._now() - 1:
                self.mine_blocks()

        def time_travel(self, to_timestamp: int) -> int:
            self._clock_offset = to_timestamp - int(time.time())
            self.chain.header = self.chain.header.copy(timestamp=to_timestamp)
            super().mine_blocks()
            return to_timestamp

        def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = b"\0" * 20) -> tuple[bytes, ...]:
            hashes: list[bytes] = []
            for _ in range(num_blocks):
                self._restamp_pending()
                hashes.extend(super().mine_blocks(1, coinbase))
            return tuple(hashes)

        def send_raw_transaction(self, raw_transaction: bytes) -> Any:
            self._restamp_pending()
            return super().send_raw_transaction(raw_transaction)

        def send_signed_transaction(self, signed_transaction: Any, block_number: Any = "latest") -> Any:
            self._restamp_pending()
            return super().send_signed_transaction(signed_transaction, block_number)

        def send_transaction(self, transaction: Any) -> Any:
            self._restamp_pending()
            return super().send_transaction(transaction)

        def call(self, transaction: Any, block_number: Any = "latest") -> Any:
            if block_number in ("latest", "safe", "finalized"):
                self._refresh_head()
            elif block_number == "pending":
                self._restamp_pending()
            return super().call(transaction, block_number)

        def get_block_by_number(self, block_number: Any, full_transaction: bool = True) -> Any:
            if block_number == "pending":
                self._restamp_pending()
            return super().get_block_by_number(block_number, full_transaction)

    class NodeLikeEthereumTesterProvider(EthereumTesterProvider):
        """EthereumTesterProvider that answers reverts like a JSON-RPC node, one request at a time.

        The stock provider lets eth-tester's ``TransactionFailed`` escape from
        eth_call / eth_estimateGas; here a revert becomes the error response geth
        and anvil send (code 3, the revert data), so web3 raises
        ``ContractLogicError`` (or its custom/panic subclasses) exactly as it does
        over HTTP. A lock serialises requests: py-evm is not thread-safe.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._lock = threading.RLock()

        def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
            with self._lock:
                try:
                    return super().make_request(method, params)
                except TransactionFailed as exc:
                    return _revert_response(exc, self._current_request_id)

    return WallClockBackend, NodeLikeEthereumTesterProvider


def _revert_response(exc: Exception, request_id: int) -> RPCResponse:
    """The JSON-RPC error a node returns for a revert, from eth-tester's ``TransactionFailed``."""
    message = str(exc.args[0]) if exc.args else ""
    reason = message.removeprefix("execution reverted").removeprefix(": ")
    data: str | None = None
    if reason.startswith(("b'", 'b"')):  # raw revert data that is not Error(string), as a bytes repr
        with contextlib.suppress(ValueError, SyntaxError):
            raw = ast.literal_eval(reason)
            if isinstance(raw, bytes):
                data, reason = "0x" + raw.hex(), ""
    elif reason:
        data = "0x08c379a0" + abi.encode(["string"], [reason]).hex()  # Error(string)
    error: RPCError = {"code": 3, "message": f"execution reverted: {reason}" if reason else "execution reverted"}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class InProcessChain(_TokenChain):
    """TestUSDC on an eth-tester (py-evm) chain inside this process.

    ``w3`` is a synchronous Web3 over ``provider`` (an ``EthereumTesterProvider``);
    other code may build its own ``Web3(chain.provider)`` on the same chain.
    The chain id is eth-tester's fixed 131277322940537. ``funder`` is one of
    eth-tester's unlocked, prefunded accounts; ``accounts`` are the
    :data:`DEV_KEYS`, each given 1000 ETH for gas.
    """

    def __init__(self) -> None:
        from eth_tester import EthereumTester  # type: ignore[import-untyped,unused-ignore]

        backend_class, provider_class = _wall_clock_classes()
        self.backend: Any = backend_class()
        self.tester: Any = EthereumTester(self.backend)
        self.provider: BaseProvider = provider_class(self.tester)
        self.w3 = Web3(self.provider)
        self.chain_id = self.w3.eth.chain_id
        self.network = f"eip155:{self.chain_id}"
        self.funder = self.w3.eth.accounts[0]
        self.token = self._deploy_token()
        self.accounts = tuple(Account.from_key(key) for key in DEV_KEYS)
        for account in self.accounts:
            self.fund(account.address, 0, _DEV_ETH)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------- anvil


class AnvilError(RuntimeError):
    """anvil could not be found, started or set up."""


_PLATFORMS = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _node_modules_candidates(base: Path) -> Iterator[Path]:
    modules = base / "node_modules"
    system, arch = _PLATFORMS.get(sys.platform), _ARCHES.get(platform.machine().lower())
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    if system and arch:
        yield modules / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / exe
    yield modules / ".bin" / exe


def find_anvil() -> str | None:
    """The anvil executable: ``$CLAWROUTER_ANVIL``, ``anvil`` on PATH, else the one
    ``npm ci`` installs under ``node_modules`` of the current directory or of the
    repository (a parent of this file). None if there is none."""
    configured = os.environ.get("CLAWROUTER_ANVIL")
    if configured:
        return shutil.which(configured)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    bases = [Path.cwd(), *Path(__file__).resolve().parents]
    for base in dict.fromkeys(bases):
        for candidate in _node_modules_candidates(base):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_process(proc: subprocess.Popen[bytes], log: IO[bytes], session: requests.Session) -> None:
    """Stop ``proc`` (by its pid): terminate, wait, kill if it lingers; close its log and HTTP session."""
    session.close()
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    finally:
        log.close()


class AnvilChain(_TokenChain):
    """TestUSDC at Base Sepolia's USDC address on a fresh local anvil (chain 84532).

    Starts ``anvil --host 127.0.0.1 --port <free> --chain-id 84532 --silent``
    (offline, no fork). With ``block_time`` (default 1 s) anvil also mines an
    empty block every ``block_time`` seconds besides one per transaction
    (``--mixed-mining``), so the head's timestamp stays near the wall clock like
    a live chain's; ``block_time=None`` leaves only per-transaction blocks.

    ``funder`` is anvil's first (unlocked) account; ``accounts`` are the
    :data:`DEV_KEYS`, each given 1000 ETH. Use as a context manager or call
    :meth:`stop`; the process is also stopped when this object is collected and at
    interpreter exit.
    """

    def __init__(
        self,
        anvil: str | None = None,
        *,
        chain_id: int = BASE_SEPOLIA_CHAIN_ID,
        token: str = BASE_SEPOLIA_USDC,
        block_time: int | None = 1,
        startup_timeout: float = 10.0,
    ) -> None:
        executable = anvil or find_anvil()
        if executable is None:
            raise AnvilError("anvil not found: run `npm ci` at the repository root or set CLAWROUTER_ANVIL")
        self.executable = executable
        self.chain_id = chain_id
        self.network = f"eip155:{chain_id}"
        self.token = Web3.to_checksum_address(token)
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        try:
            self._start(block_time, startup_timeout)
            self._setup()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _start(self, block_time: int | None, startup_timeout: float) -> None:
        for _attempt in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            args = [
                self.executable,
                *("--host", "127.0.0.1", "--port", str(port), "--chain-id", str(self.chain_id), "--silent"),
            ]
            if block_time:
                args += ["--mixed-mining", "--block-time", str(block_time)]
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the finalizer, with the process
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            self._proc = proc
            session = requests.Session()
            self._finalizer = weakref.finalize(self, _stop_process, proc, log, session)
            self.rpc_url = f"http://127.0.0.1:{port}"
            self.w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 10}, session=session))
            deadline = time.monotonic() + startup_timeout
            probe = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
            headers = {"Content-Type": "application/json"}
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(requests.RequestException, ValueError):
                    answer = session.post(self.rpc_url, data=probe, headers=headers, timeout=1).json()
                    if int(answer["result"], 16) == self.chain_id:
                        return
                time.sleep(0.05)
            log.seek(0)
            output = log.read().decode(errors="replace").strip()
            exited = proc.poll() is not None
            self._finalizer()  # stop this attempt's process
            if not exited:
                raise AnvilError(f"anvil did not answer on {self.rpc_url} within {startup_timeout:g} s: {output}")
            if "address" not in output.lower() and "in use" not in output.lower():
                raise AnvilError(f"anvil exited with code {proc.returncode}: {output}")
        raise AnvilError("anvil could not bind a free port on 127.0.0.1")

    def _setup(self) -> None:
        self.funder = self.w3.eth.accounts[0]
        deployed = self._deploy_token()
        runtime = self.w3.eth.get_code(Web3.to_checksum_address(deployed))
        self._rpc("anvil_setCode", [self.token, runtime.to_0x_hex()])
        self.accounts = tuple(Account.from_key(key) for key in DEV_KEYS)
        for account in self.accounts:
            self._rpc("anvil_setBalance", [account.address, hex(_DEV_ETH)])

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(RPCEndpoint(method), params)
        if "error" in response:
            raise AnvilError(f"{method} failed: {response['error']}")
        return response.get("result")

    def stop(self) -> None:
        """Stop the anvil process (terminate by pid, wait, kill if needed). Idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_process once

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
