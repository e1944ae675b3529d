"""``solana:localnet``: a Solana chain in this process, and the JSON-RPC endpoint in front of it.

:class:`LocalSolana` wraps ``solders.litesvm.LiteSVM``, which executes real transactions
with the real SPL Token, Token-2022, Memo, Associated Token and ComputeBudget programs
(all built into LiteSVM) but has no blocks, no validators and no RPC. On top of it this
module keeps what an RPC node would report:

* a mint at a fixed address (``LOCAL_USDC_MINT``) whose mint authority is a keypair held
  here; :meth:`LocalSolana.fund` writes token accounts directly (``set_account``), so
  funding costs no transaction;
* a slot counter (equal to the block height: no slot is skipped) that advances by one per
  processed transaction, mirrored into LiteSVM's ``Clock`` with ``warp_to_slot`` (this
  leaves the blockhash alone);
* blockhashes as on Solana: a new one per slot, each accepted until the block height
  passes its ``lastValidBlockHeight`` (150 slots after it was made). LiteSVM itself
  accepts only its latest blockhash, so its own check is switched off and this class
  applies Solana's rule before executing (``BlockhashNotFound`` otherwise);
  :meth:`LocalSolana.advance` moves the chain on, :meth:`LocalSolana.expire_blockhash`
  past the life of every blockhash issued so far;
* the status of every processed transaction (succeeded, or failed after paying its fee),
  for ``getSignatureStatuses``. LiteSVM itself rejects a signature it has processed with
  ``AlreadyProcessed``, in ``simulate_transaction`` as in ``send_transaction``.

LiteSVM checks signatures unless told not to (``set_sigverify``, switchable between calls):
:meth:`LocalSolana.simulate` turns it off for one call when asked, which is how
``simulateTransaction`` honours ``sigVerify: false`` for a transaction whose fee payer has
not signed yet. LiteSVM is not thread-safe: every method takes :attr:`LocalSolana.lock`
(re-entrant).

:class:`RpcFacade` serves the subset of Solana's JSON-RPC API that a payment facilitator
and a paying client use, with the shapes of a real node (``apiVersion`` 2.2): preflight
failures are error -32002 carrying the simulation result, bad signatures -32003, and so
on. It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 speaking HTTP/1.1 keep-alive, so
solana-py's ``Client`` (and the official x402 SDK on top of it) can use it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import TransactionErrorType

from .accounts import MINT_LEN, TOKEN_ACCOUNT_LEN, associated_token_address, mint_decimals, token_account_amount
from .constants import TOKEN_PROGRAM, TOKEN_PROGRAMS
from .networks import LOCAL_USDC_MINT

__all__ = ["API_VERSION", "InProcessTransport", "LocalSolana", "RpcFacade", "transaction_error_json"]

#: the Solana version the facade claims (``context.apiVersion``, ``getVersion``)
API_VERSION = "2.2.0"
#: slots a blockhash stays valid after the one it was made in (Solana's MAX_PROCESSING_AGE)
BLOCKHASH_LIFETIME = 150
LAMPORTS_PER_SIGNATURE = 5_000
MAX_BODY_BYTES = 1 << 20

_T = TypeVar("_T")


def transaction_error_json(err: TransactionErrorType) -> Any:
    """``err`` as Solana's RPC writes a ``TransactionError``.

    ``"BlockhashNotFound"``, ``{"InstructionError": [2, {"Custom": 1}]}``,
    ``{"InsufficientFundsForRent": {"account_index": 1}}``... The errors' own ``to_json``
    drops the enum tags, so this borrows the serializer of an RPC simulation result.
    """
    return json.loads(RpcSimulateTransactionResult(err=err, logs=None).to_json())["err"]


class LocalSolana:
    """A LiteSVM chain with one SPL mint, funded accounts and the bookkeeping of an RPC node.

    Addresses, signatures and blockhashes are base58 strings. Each slot (one per
    processed transaction, or :meth:`advance`) brings a new :meth:`latest_blockhash`;
    a blockhash is accepted until the block height passes its
    ``lastValidBlockHeight`` (150 slots), after which transactions made with it fail
    with ``BlockhashNotFound``.
    """

    def __init__(self, *, mint: str = LOCAL_USDC_MINT, decimals: int = 6, token_program: str = TOKEN_PROGRAM) -> None:
        if token_program not in TOKEN_PROGRAMS:
            raise ValueError(f"not a token program: {token_program}")
        self.mint = mint
        self.decimals = decimals
        self.token_program = token_program
        self.mint_authority = Keypair()
        self.lock = threading.RLock()
        self._svm = LiteSVM()
        self._svm.with_blockhash_check(False)  # Solana's rule is applied here (_check_blockhash)
        self._slot: int = self._svm.get_clock().slot
        self._last_valid = self._slot + BLOCKHASH_LIFETIME
        #: every blockhash still accepted -> its lastValidBlockHeight
        self._blockhashes: dict[str, int] = {str(self._svm.latest_blockhash()): self._last_valid}
        self._processed: dict[str, tuple[int, Any]] = {}  # signature -> (slot, error JSON or None)
        self._write_mint(0)

    # --- chain state -------------------------------------------------------------

    @property
    def slot(self) -> int:
        return self._slot

    @property
    def block_height(self) -> int:
        return self._slot

    @property
    def last_valid_block_height(self) -> int:
        """The last block height at which :meth:`latest_blockhash` is accepted."""
        return self._last_valid

    def latest_blockhash(self) -> str:
        with self.lock:
            return str(self._svm.latest_blockhash())

    def is_blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction made with ``blockhash`` is accepted now."""
        with self.lock:
            return self._blockhashes.get(blockhash, -1) >= self._slot

    def last_valid_of(self, blockhash: str) -> int | None:
        """The ``lastValidBlockHeight`` of a blockhash this chain issued (None: unknown or forgotten)."""
        with self.lock:
            return self._blockhashes.get(blockhash)

    def advance(self, slots: int) -> None:
        """Move the chain on by ``slots`` empty slots (a new blockhash each)."""
        if slots < 1:
            raise ValueError("slots must be positive")
        with self.lock:
            self._advance(slots)

    def expire_blockhash(self) -> None:
        """Advance the block height past the ``lastValidBlockHeight`` of every blockhash issued so far."""
        with self.lock:
            self._advance(self._last_valid + 1 - self._slot)

    def minimum_balance(self, data_len: int) -> int:
        """The rent-exempt minimum of an account of ``data_len`` bytes."""
        with self.lock:
            return self._svm.minimum_balance_for_rent_exemption(data_len)

    def account(self, address: str) -> Account | None:
        with self.lock:
            return self._svm.get_account(Pubkey.from_string(address))

    def sol_balance(self, address: str) -> int:
        with self.lock:
            return self._svm.get_balance(Pubkey.from_string(address)) or 0

    # --- funding -----------------------------------------------------------------

    def ata(self, owner: str) -> str:
        """``owner``'s associated token account for the mint."""
        return associated_token_address(owner, self.mint, self.token_program)

    def airdrop(self, address: str, lamports: int) -> str:
        """Credit ``lamports`` to ``address`` and return the signature the airdrop is recorded under.

        Written straight into the account: LiteSVM's own airdrop is a transfer that fails
        with ``AlreadyProcessed`` when repeated with the same amount and blockhash.
        """
        if lamports <= 0:
            raise ValueError("lamports must be positive")
        key = Pubkey.from_string(address)
        with self.lock:
            current = self._svm.get_account(key)
            if current is None:
                credited = Account(lamports, b"", Pubkey.default())
            else:
                credited = Account(
                    current.lamports + lamports, current.data, current.owner, current.executable, current.rent_epoch
                )
            self._svm.set_account(key, credited)
            signature = str(Signature(os.urandom(64)))
            self._record(signature, None)
            return signature

    def fund(self, owner: str, amount: int, *, lamports: int = 1_000_000_000) -> str:
        """Give ``owner`` ``lamports`` more SOL (if > 0) and exactly ``amount`` tokens; return its ATA."""
        with self.lock:
            if lamports > 0:
                self.airdrop(owner, lamports)
            return self._write_token_account(owner, amount)

    def create_ata(self, owner: str) -> str:
        """``owner``'s ATA, created empty if it does not exist yet."""
        with self.lock:
            if self.account(self.ata(owner)) is None:
                return self._write_token_account(owner, 0)
            return self.ata(owner)

    def token_balance(self, owner: str) -> int:
        """The tokens in ``owner``'s ATA (0 without one)."""
        found = self.account(self.ata(owner))
        return 0 if found is None else token_account_amount(found.data)

    # --- transactions ------------------------------------------------------------

    def send(self, tx: VersionedTransaction) -> tuple[str, Any, list[str]]:
        """Execute ``tx``: its signature, its error (as RPC JSON, None on success) and its logs.

        A transaction that fails after paying its fee (an instruction error) is processed,
        and remembered, as on Solana; one rejected before (bad blockhash or signature,
        duplicate, no fee) leaves no trace.
        """
        signature = str(tx.signatures[0])
        with self.lock:
            if not self.is_blockhash_valid(str(tx.message.recent_blockhash)):
                return signature, "BlockhashNotFound", []
            result = self._svm.send_transaction(tx)
            if isinstance(result, FailedTransactionMetadata):
                error, logs = transaction_error_json(result.err()), result.meta().logs()
            else:
                error, logs = None, result.logs()
            if signature not in self._processed and self._svm.get_transaction(tx.signatures[0]) is not None:
                self._record(signature, error)
            return signature, error, logs

    def simulate(self, tx: VersionedTransaction, *, sig_verify: bool = True) -> tuple[Any, list[str], int]:
        """Execute ``tx`` without committing: its error (RPC JSON or None), logs and compute units.

        ``sig_verify=False`` switches LiteSVM's signature check off for this call, so a
        transaction whose fee payer has not signed yet (an all-zero signature) simulates.
        """
        with self.lock:
            if not self.is_blockhash_valid(str(tx.message.recent_blockhash)):
                return "BlockhashNotFound", [], 0
            self._svm.with_sigverify(sig_verify)
            try:
                result = self._svm.simulate_transaction(tx)
            finally:
                self._svm.with_sigverify(True)
            error = transaction_error_json(result.err()) if isinstance(result, FailedTransactionMetadata) else None
            meta = result.meta()
            return error, meta.logs(), meta.compute_units_consumed()

    def status(self, signature: str) -> dict[str, Any] | None:
        """``{"slot", "err"}`` of a processed transaction, None for one never processed."""
        with self.lock:
            found = self._processed.get(signature)
        return None if found is None else {"slot": found[0], "err": found[1]}

    # --- internals ---------------------------------------------------------------

    def _record(self, signature: str, error: Any) -> None:
        self._advance(1)
        self._processed[signature] = (self._slot, error)

    def _advance(self, slots: int) -> None:
        """``slots`` slots pass: a new blockhash (valid 150 slots), the expired ones forgotten."""
        self._slot += slots
        self._svm.warp_to_slot(self._slot)
        self._svm.expire_blockhash()
        self._last_valid = self._slot + BLOCKHASH_LIFETIME
        self._blockhashes = {b: v for b, v in self._blockhashes.items() if v >= self._slot}
        self._blockhashes[str(self._svm.latest_blockhash())] = self._last_valid

    def _put(self, address: str, data: bytes) -> None:
        rent = self._svm.minimum_balance_for_rent_exemption(len(data))
        self._svm.set_account(Pubkey.from_string(address), Account(rent, data, Pubkey.from_string(self.token_program)))

    def _write_mint(self, supply: int) -> None:
        self._put(self.mint, bytes(Mint(self.mint_authority.pubkey(), supply, self.decimals, True)))

    def _write_token_account(self, owner: str, amount: int) -> str:
        """Set ``owner``'s ATA to hold ``amount`` tokens, keeping the mint's supply the sum of balances."""
        address = self.ata(owner)
        previous = self.account(address)
        mint = self.account(self.mint)
        assert mint is not None, "the mint is created with the chain"
        supply = Mint.from_bytes(mint.data).supply + amount
        if previous is not None:
            supply -= token_account_amount(previous.data)
        mint_key, owner_key = Pubkey.from_string(self.mint), Pubkey.from_string(owner)
        self._put(
            address, bytes(TokenAccount(mint_key, owner_key, amount, None, TokenAccountState.Initialized, None, 0))
        )
        self._write_mint(supply)
        return address


# ------------------------------------------------------------------------------------ JSON-RPC

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Solana's server errors
PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003

#: how Solana words the errors a payment meets (the ``Display`` of ``TransactionError``)
_TX_ERROR_TEXT = {
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "SignatureFailure": "Transaction did not pass signature verification",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
}
_INSTRUCTION_ERROR_TEXT = {
    "InsufficientFunds": "insufficient funds for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "InvalidAccountData": "invalid account data for instruction",
    "InvalidInstructionData": "invalid instruction data",
    "IncorrectProgramId": "incorrect program id for instruction",
}


def _error_text(error: Any) -> str:
    if isinstance(error, str):
        return _TX_ERROR_TEXT.get(error, error)
    if isinstance(error, dict) and "InstructionError" in error:
        index, inner = error["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            text = f"custom program error: {inner['Custom']:#x}"
        elif isinstance(inner, str):
            text = _INSTRUCTION_ERROR_TEXT.get(inner, inner)
        else:
            text = json.dumps(inner)
        return f"Error processing Instruction {index}: {text}"
    return json.dumps(error)


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _invalid(message: str) -> _RpcError:
    """-32602 with ``message`` verbatim (Solana words its own checks; serde's start "Invalid params: ")."""
    return _RpcError(INVALID_PARAMS, message)


def _arg(params: list[Any], index: int, kind: type[_T], what: str) -> _T:
    value = params[index] if index < len(params) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _invalid(f"Invalid params: expected {what} at position {index}")
    return value


def _config(params: list[Any], index: int) -> dict[str, Any]:
    if index >= len(params) or params[index] is None:
        return {}
    return _arg(params, index, dict, "a configuration object")


def _pubkey(value: Any) -> str:
    try:
        return str(Pubkey.from_string(value))
    except (TypeError, ValueError):
        raise _invalid("Invalid param: Invalid") from None


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_DIGITS = {char: value for value, char in enumerate(_B58_ALPHABET)}


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58_DIGITS.get(char)
        if digit is None:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _decode_transaction(params: list[Any], encoding: str) -> VersionedTransaction:
    """The transaction in ``params[0]``, decoded like Solana does (``base58`` is its default)."""
    text = _arg(params, 0, str, "an encoded transaction")
    try:
        if encoding == "base64":
            raw = base64.b64decode(text, validate=True)
        elif encoding == "base58":
            raw = _b58decode(text)
        else:
            raise _invalid(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"invalid {encoding} encoding: {exc}") from None
    try:
        return VersionedTransaction.from_bytes(raw)
    except ValueError as exc:
        raise _invalid(f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}") from None


def _with_blockhash(tx: VersionedTransaction, blockhash: str) -> VersionedTransaction:
    """``tx`` with its recent blockhash replaced (its signatures no longer verify)."""
    message, recent = tx.message, Hash.from_string(blockhash)
    if isinstance(message, MessageV0):
        replaced: Message | MessageV0 = MessageV0(
            message.header, message.account_keys, recent, message.instructions, message.address_table_lookups
        )
    else:
        header = message.header
        replaced = Message.new_with_compiled_instructions(
            header.num_required_signatures,
            header.num_readonly_signed_accounts,
            header.num_readonly_unsigned_accounts,
            message.account_keys,
            recent,
            message.instructions,
        )
    return VersionedTransaction.populate(replaced, tx.signatures)


def _simulation(error: Any, logs: list[str], units: int, replacement: Any = None) -> dict[str, Any]:
    """An ``RpcSimulateTransactionResult`` (also the ``data`` of a preflight failure)."""
    return {
        "err": error,
        "logs": logs,
        "accounts": None,
        "unitsConsumed": units,
        "returnData": None,
        "innerInstructions": None,
        "replacementBlockhash": replacement,
    }


def _ui_amount_string(amount: int, decimals: int) -> str:
    if decimals == 0:
        return str(amount)
    digits = str(amount).rjust(decimals + 1, "0")
    whole, fraction = digits[:-decimals], digits[-decimals:].rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


class RpcFacade:
    """Solana JSON-RPC over HTTP for a :class:`LocalSolana`, on ``host:port`` (0: any free port).

    ``calls`` counts the requests per method (batch members included).
    """

    def __init__(self, local: LocalSolana, host: str = "127.0.0.1", port: int = 0) -> None:
        self.local = local
        self.host, self.port = host, port
        self.calls: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "getLatestBlockhash": self._get_latest_blockhash,
            "isBlockhashValid": self._is_blockhash_valid,
            "getAccountInfo": self._get_account_info,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getBalance": self._get_balance,
            "getTokenAccountBalance": self._get_token_account_balance,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance,
            "getSlot": lambda params: self.local.slot,
            "getBlockHeight": lambda params: self.local.block_height,
            "getHealth": lambda params: "ok",
            "getVersion": lambda params: {"solana-core": API_VERSION, "feature-set": 0},
            "getGenesisHash": lambda params: "localnet",
            "requestAirdrop": self._request_airdrop,
            "getFeeForMessage": self._get_fee_for_message,
            "simulateTransaction": self._simulate_transaction,
            "sendTransaction": self._send_transaction,
            "getSignatureStatuses": self._get_signature_statuses,
        }

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the RPC facade is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the RPC facade is already started")
        self._server = _Server((self.host, self.port), self)
        # a short poll interval, as stop() waits for the loop to notice
        serve = {"poll_interval": 0.05}
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs=serve, name="solana-rpc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open keep-alive connections, and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- JSON-RPC ----------------------------------------------------------------

    def handle(self, body: bytes) -> bytes:
        """Answer one HTTP body: a request or a batch."""
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            answer: Any = self._error(None, _RpcError(PARSE_ERROR, "Parse error"))
        else:
            if isinstance(request, list) and request:
                answer = [self._answer(item) for item in request]
            else:
                answer = self._answer(request)
        return json.dumps(answer, separators=(",", ":")).encode()

    def _answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return self._error(None, _RpcError(INVALID_REQUEST, "Invalid request"))
        ident, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return self._error(ident, _RpcError(INVALID_REQUEST, "Invalid request"))
        with self.local.lock:
            self.calls[method] += 1
            try:
                call = self._methods.get(method)
                if call is None:
                    raise _RpcError(METHOD_NOT_FOUND, "Method not found")
                if not isinstance(params, list):
                    raise _invalid("Invalid params: expected an array of parameters")
                result = call(params)
            except _RpcError as exc:
                return self._error(ident, exc)
            except Exception as exc:  # a bug here must still answer, and not kill the connection
                return self._error(ident, _RpcError(INTERNAL_ERROR, f"Internal error: {exc}"))
        return {"jsonrpc": "2.0", "result": result, "id": ident}

    @staticmethod
    def _error(ident: Any, error: _RpcError) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "error": error.body(), "id": ident}

    def _context(self, value: Any) -> dict[str, Any]:
        return {"context": {"slot": self.local.slot, "apiVersion": API_VERSION}, "value": value}

    # --- methods -----------------------------------------------------------------

    def _get_latest_blockhash(self, params: list[Any]) -> Any:
        blockhash = self.local.latest_blockhash()
        return self._context({"blockhash": blockhash, "lastValidBlockHeight": self.local.last_valid_block_height})

    def _is_blockhash_valid(self, params: list[Any]) -> Any:
        return self._context(self.local.is_blockhash_valid(_arg(params, 0, str, "a blockhash")))

    def _ui_account(self, address: str, encoding: str) -> dict[str, Any] | None:
        # jsonParsed is answered in base64, as Solana does for accounts it cannot parse
        if encoding not in ("base64", "jsonParsed"):
            raise _invalid(f"unsupported encoding: {encoding}. Supported encodings: base64, jsonParsed")
        found = self.local.account(address)
        if found is None:
            return None
        return {
            "data": [base64.b64encode(found.data).decode(), "base64"],
            "executable": found.executable,
            "lamports": found.lamports,
            "owner": str(found.owner),
            "rentEpoch": found.rent_epoch,
            "space": len(found.data),
        }

    def _get_account_info(self, params: list[Any]) -> Any:
        address = _pubkey(_arg(params, 0, str, "a pubkey"))
        return self._context(self._ui_account(address, _config(params, 1).get("encoding", "base64")))

    def _get_multiple_accounts(self, params: list[Any]) -> Any:
        addresses = [_pubkey(item) for item in _arg(params, 0, list, "an array of pubkeys")]
        if len(addresses) > 100:
            raise _invalid("Too many inputs provided; max 100")
        encoding = _config(params, 1).get("encoding", "base64")
        return self._context([self._ui_account(address, encoding) for address in addresses])

    def _get_balance(self, params: list[Any]) -> Any:
        return self._context(self.local.sol_balance(_pubkey(_arg(params, 0, str, "a pubkey"))))

    def _get_token_account_balance(self, params: list[Any]) -> Any:
        found = self.local.account(_pubkey(_arg(params, 0, str, "a pubkey")))
        if found is None:
            raise _RpcError(INVALID_PARAMS, "Invalid param: could not find account")
        if str(found.owner) not in TOKEN_PROGRAMS or len(found.data) < TOKEN_ACCOUNT_LEN:
            raise _RpcError(INVALID_PARAMS, "Invalid param: not a Token account")
        mint = self.local.account(str(Pubkey.from_bytes(found.data[:32])))
        if mint is None or len(mint.data) < MINT_LEN:
            raise _RpcError(INVALID_PARAMS, "Invalid param: could not find mint")
        amount, decimals = token_account_amount(found.data), mint_decimals(mint.data)
        return self._context(
            {
                "amount": str(amount),
                "decimals": decimals,
                "uiAmount": amount / 10**decimals,
                "uiAmountString": _ui_amount_string(amount, decimals),
            }
        )

    def _get_minimum_balance(self, params: list[Any]) -> Any:
        return self.local.minimum_balance(_arg(params, 0, int, "a data length"))

    def _request_airdrop(self, params: list[Any]) -> Any:
        address = _pubkey(_arg(params, 0, str, "a pubkey"))
        lamports = _arg(params, 1, int, "an amount of lamports")
        if lamports <= 0:
            raise _invalid("Invalid params: lamports must be positive")
        return self.local.airdrop(address, lamports)

    def _get_fee_for_message(self, params: list[Any]) -> Any:
        try:
            message = from_bytes_versioned(base64.b64decode(_arg(params, 0, str, "a base64 message"), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise _invalid(f"Invalid params: invalid message: {exc}") from None
        if not self.local.is_blockhash_valid(str(message.recent_blockhash)):
            return self._context(None)
        return self._context(LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures)

    def _simulate_transaction(self, params: list[Any]) -> Any:
        config = _config(params, 1)
        tx = _decode_transaction(params, config.get("encoding", "base58"))
        sig_verify, replace = bool(config.get("sigVerify", False)), bool(config.get("replaceRecentBlockhash", False))
        replacement = None
        if replace:
            if sig_verify:
                raise _invalid("sigVerify may not be used with replaceRecentBlockhash")
            blockhash = self.local.latest_blockhash()
            tx = _with_blockhash(tx, blockhash)
            replacement = {"blockhash": blockhash, "lastValidBlockHeight": self.local.last_valid_block_height}
        error, logs, units = self.local.simulate(tx, sig_verify=sig_verify)
        if error == "SignatureFailure":
            raise _RpcError(SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure")
        return self._context(_simulation(error, logs, units, replacement))

    def _send_transaction(self, params: list[Any]) -> Any:
        config = _config(params, 1)
        tx = _decode_transaction(params, config.get("encoding", "base58"))
        if not config.get("skipPreflight", False):
            error, logs, units = self.local.simulate(tx)
            if error == "SignatureFailure":
                raise _RpcError(SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure")
            if error is not None:
                raise _RpcError(
                    PREFLIGHT_FAILURE,
                    f"Transaction simulation failed: {_error_text(error)}",
                    _simulation(error, logs, units),
                )
        return self.local.send(tx)[0]  # without preflight, a failure shows in getSignatureStatuses (or nowhere)

    def _get_signature_statuses(self, params: list[Any]) -> Any:
        signatures = _arg(params, 0, list, "an array of signatures")
        if len(signatures) > 256:
            raise _invalid("Too many inputs provided; max 256")
        statuses: list[dict[str, Any] | None] = []
        for text in signatures:
            try:
                signature = str(Signature.from_string(text))
            except (TypeError, ValueError):
                raise _invalid("Invalid param: Invalid") from None
            found = self.local.status(signature)
            if found is None:
                statuses.append(None)
                continue
            error = found["err"]
            statuses.append(
                {
                    "slot": found["slot"],
                    "confirmations": None,
                    "err": error,
                    "confirmationStatus": "finalized",
                    "status": {"Ok": None} if error is None else {"Err": error},
                }
            )
        return self._context(statuses)


# ------------------------------------------------------------------------------------ HTTP


class _Server(ThreadingHTTPServer):
    """One thread per connection; every connection is tracked so :meth:`drop_connections` can end it."""

    daemon_threads = False  # server_close() joins the connection threads

    def __init__(self, address: tuple[str, int], facade: RpcFacade) -> None:
        self.facade = facade
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Wake the threads waiting on idle keep-alive connections (their reads see end of stream)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them
    server: _Server

    def do_POST(self) -> None:
        length = self._content_length()
        if length is None:
            self._refuse(411)
        elif length > MAX_BODY_BYTES:
            self._refuse(413, length)
        else:
            self._reply(200, self.server.facade.handle(self.rfile.read(length)), "application/json")

    def _not_allowed(self) -> None:
        self._refuse(405, self._content_length() or 0, ("Allow", "POST"))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    def _refuse(self, status: int, unread: int = 0, *headers: tuple[str, str]) -> None:
        """Answer ``status`` and close the connection, once the body is read.

        Closing a socket with unread data resets it, and the client may lose the answer.
        """
        while unread > 0 and (chunk := self.rfile.read(min(unread, 1 << 16))):
            unread -= len(chunk)
        self._reply(status, b"", "text/plain", ("Connection", "close"), *headers)

    def _reply(self, status: int, body: bytes, content_type: str, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)  # "Connection: close" also sets close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the facade's ``calls`` counter is its log."""


class _Answered:
    """A whole JSON-RPC answer, as a :class:`clawrouter.upstream.UpstreamResponse`."""

    status = 200
    headers: Mapping[str, str] = {"content-type": "application/json"}

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self) -> bytes:
        return self.body

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        yield self.body

    async def aclose(self) -> None:
        return None


class InProcessTransport:
    """An upstream transport (:class:`clawrouter.upstream.UpstreamTransport`) that hands each
    JSON-RPC body to ``handle`` — :meth:`RpcFacade.handle` for LiteSVM with no socket in
    between, or a test's own node — and answers with what it returns."""

    def __init__(self, handle: Callable[[bytes], bytes]) -> None:
        self.handle = handle

    async def start(self) -> None:
        return None

    async def prewarm(self, url: str) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Any) -> _Answered:
        return _Answered(self.handle(body))
