"""The agent's wallet: the EVM key that signs its x402 payments.

An agent pays for calls with EIP-3009 authorizations signed by one secp256k1
key. :class:`Wallet` holds that key (on top of :class:`clawrouter.keys.RouterKey`,
which does the key handling and signing) and finds it where an agent keeps it:

* ``$CLAWROUTER_WALLET_KEY`` — 64 hex digits, for containers and CI secrets;
* else a key file — ``$CLAWROUTER_WALLET_FILE``, or
  ``$XDG_CONFIG_HOME/clawrouter/wallet.key`` (``~/.config/clawrouter/wallet.key``
  when ``XDG_CONFIG_HOME`` is unset). The file holds the key as ``0x``-hex and a
  newline. It is written atomically with mode 0600 (its missing parent
  directories 0700) and never overwritten unless asked; a key file that group or
  others may access is refused, as ssh refuses such a private key.

The key never appears in ``repr``/``str`` or in an error message: a malformed
value is reported by where it came from (the variable, the file), never by its
content. ``clawrouter wallet show --private-key`` is the one place that prints it.

:meth:`Wallet.balance` reads the wallet's USDC (or any token's) balance over
JSON-RPC; web3 is imported only then.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

from .evm.networks import NETWORKS, network_for
from .keys import RouterKey

__all__ = [
    "DEFAULT_RPC_URLS",
    "FILE_ENV",
    "KEY_ENV",
    "Wallet",
    "config_dir",
    "key_file_path",
    "read_private_file",
    "write_private_file",
]

#: the environment variable holding the key itself (read before any file)
KEY_ENV = "CLAWROUTER_WALLET_KEY"
#: the environment variable naming the key file (instead of the default location)
FILE_ENV = "CLAWROUTER_WALLET_FILE"

#: public JSON-RPC endpoints used when no ``rpc_url`` is given (rate-limited; fine for a balance)
DEFAULT_RPC_URLS: dict[str, str] = {
    "eip155:8453": "https://mainnet.base.org",
    "eip155:84532": "https://sepolia.base.org",
}

_CAIP2_EVM = re.compile(r"eip155:([0-9]+)")
_MAX_FILE_BYTES = 4096  # a key file is 67 bytes; anything much larger is not one


class Wallet(RouterKey):
    """An agent's secp256k1 payer key with its EIP-55 checksummed ``address``.

    A :class:`~clawrouter.keys.RouterKey` (``generate``, ``from_hex``,
    ``private_key``, ``sign``; equal to a key with the same secret, compared in
    constant time) that knows where an agent keeps its key.
    """

    __slots__ = ()
    kind = "wallet key"

    @classmethod
    def from_env(cls, var: str = KEY_ENV) -> Wallet | None:
        """The key in environment variable ``var``, or ``None`` when it is unset or empty.

        A malformed value raises ``ValueError`` naming the variable but not its content.
        """
        return super().from_env(var)

    @classmethod
    def load(cls, path: str | Path) -> Wallet:
        """The key in the file at ``path`` (``0x``-hex, whitespace ignored).

        Raises ``FileNotFoundError`` if there is no such file, ``PermissionError``
        if its mode lets group or others access it (the message names the file
        and the ``chmod 600`` that fixes it), ``ValueError`` if it does not hold a
        key (naming the file, not its content).
        """
        file = Path(path).expanduser()
        data = read_private_file(file, "wallet key file", "clawrouter wallet new")
        if len(data) > _MAX_FILE_BYTES:
            raise ValueError(f"wallet key file {file}: a {cls.kind} is 64 hex digits (32 bytes)")
        try:
            return cls.from_hex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"wallet key file {file}: a {cls.kind} is 64 hex digits (32 bytes)") from None

    @staticmethod
    def default_path() -> Path:
        """``$CLAWROUTER_WALLET_FILE``, else ``wallet.key`` in the ``clawrouter`` config directory
        (``$XDG_CONFIG_HOME/clawrouter``, or ``~/.config/clawrouter``)."""
        return key_file_path(FILE_ENV, "wallet.key")

    @classmethod
    def resolve(cls, path: str | Path | None = None, env: str | None = KEY_ENV) -> Wallet:
        """The agent's wallet: the key in ``$env`` if set, else the key file at ``path``
        (default :meth:`default_path`).

        Raises ``FileNotFoundError`` naming both places when neither holds a key,
        and what :meth:`from_env` / :meth:`load` raise for a bad one.
        """
        if env:
            wallet = cls.from_env(env)
            if wallet is not None:
                return wallet
        file = Path(path).expanduser() if path is not None else cls.default_path()
        try:
            return cls.load(file)
        except FileNotFoundError:
            unset = f"${env} is not set and " if env else ""
            raise FileNotFoundError(
                f"no wallet: {unset}there is no key file at {file} (create one with `clawrouter wallet new`)"
            ) from None

    # --- keeping one ------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the key to ``path`` (``0x``-hex and a newline, mode 0600); returns the absolute path.

        Missing parent directories are created with mode 0700. The file appears
        complete or not at all (written to a temporary file in the same directory,
        then linked or renamed into place). An existing file raises
        ``FileExistsError`` unless ``overwrite``.
        """
        data = f"0x{self.private_key.hex()}\n".encode("ascii")
        return write_private_file(path, data, overwrite=overwrite)

    # --- using one --------------------------------------------------------------------

    async def balance(self, network: str = "eip155:8453", rpc_url: str | None = None, asset: str | None = None) -> int:
        """The wallet's balance of ``asset`` (default: the network's USDC) in atomic units.

        ``network`` is a CAIP-2 EVM id. ``rpc_url`` defaults to the public endpoint
        of Base or Base Sepolia (:data:`DEFAULT_RPC_URLS`); other networks need both
        ``rpc_url`` and ``asset``. The node must serve ``network``'s chain id.
        Raises ``ValueError`` for a bad argument, ``clawrouter.evm.chain.ChainError``
        when the node cannot be reached or fails.
        """
        match = _CAIP2_EVM.fullmatch(network)
        if match is None:
            raise ValueError(f"{network!r} is not a CAIP-2 EVM network id like 'eip155:8453'")
        known = network_for(network)
        token = asset or (known.asset if known is not None else None)
        url = rpc_url or DEFAULT_RPC_URLS.get(network)
        if token is None or url is None:
            needed = " and ".join(
                name for name, value in (("an RPC URL", url), ("the token address", token)) if not value
            )
            raise ValueError(
                f"unknown network {network!r}: give {needed} for it "
                f"(built in: {', '.join(f'{n.network} ({n.label})' for n in NETWORKS.values())})"
            )

        from web3 import Web3

        from .evm.chain import EvmChain

        if not Web3.is_address(token):
            raise ValueError(f"asset {token!r} is not an EVM address")
        chain = EvmChain.from_url(url, token)
        try:
            served = await chain.chain_id()
            if served != int(match[1]):
                raise ValueError(f"the RPC endpoint serves chain {served}, not {network}")
            return await chain.balance_of(self.address)
        finally:
            chain.close()


def key_file_path(env: str, name: str) -> Path:
    """``$env`` if set, else ``name`` in :func:`config_dir`."""
    configured = os.environ.get(env, "").strip()
    return Path(configured).expanduser() if configured else config_dir() / name


def config_dir() -> Path:
    """The ``clawrouter`` config directory: ``$XDG_CONFIG_HOME/clawrouter``, or ``~/.config/clawrouter``."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
    # the XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "clawrouter"


def read_private_file(file: Path, what: str, create: str) -> bytes:
    """The first few KiB of a key file that only its owner can read.

    Raises ``FileNotFoundError`` (saying ``create`` makes one), ``PermissionError``
    if the mode lets group or others access it (naming the ``chmod 600`` that
    fixes it), ``ValueError`` if it is not a regular file.
    """
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {file} (create one with `{create}`)") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # of the file opened, not of whatever the path names now
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what} {file} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if os.name != "nt" and mode & 0o077:
            raise PermissionError(
                f"{what} {file} is accessible by group or others (mode {mode:04o}); "
                f"restrict it with `chmod 600 {file}`"
            )
        return handle.read(_MAX_FILE_BYTES + 1)


def write_private_file(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (parents created 0700), all or nothing;
    an existing file raises ``FileExistsError`` unless ``overwrite``. Returns the absolute path."""
    file = Path(os.path.abspath(Path(path).expanduser()))
    if not overwrite and os.path.lexists(file):
        raise FileExistsError(_exists(file))
    _make_private_dirs(file.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.chmod(tmp, 0o600)  # mkstemp's mode already; explicit, whatever the platform
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, file)
        else:
            try:
                os.link(tmp, file)  # atomic, and fails if the file appeared meanwhile
            except FileExistsError:
                raise FileExistsError(_exists(file)) from None
            except OSError:  # a filesystem without hard links: exclusive create instead
                _write_exclusive(file, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(file.parent)
    return file


def _exists(file: Path) -> str:
    return f"wallet key file {file} already exists (overwriting it would lose its key)"


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing ancestors with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current.parent != current:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # created concurrently: not ours to change
            continue
        os.chmod(path, 0o700)  # exactly 0700, whatever the umask


def _write_exclusive(file: Path, data: bytes) -> None:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise FileExistsError(_exists(file)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.chmod(file, 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(file)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
