"""The agent's wallet (clawrouter.wallet) and ``clawrouter wallet new | show | balance``.

Every test runs with HOME, XDG_CONFIG_HOME and the wallet variables pointed into
``tmp_path`` (or unset), so nothing reads or writes the real home directory. The
balance tests read a real chain: anvil at chain 84532 with the test token at Base
Sepolia's USDC address (skipped without anvil, failed under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import chains
import pytest
from eth_account import Account

from clawrouter.cli import main
from clawrouter.evm.networks import BASE, BASE_SEPOLIA
from clawrouter.wallet import DEFAULT_RPC_URLS, Wallet

anvil_chain = chains.anvil_chain  # a fixture

# a fixed, throwaway key (never funded anywhere) and its address according to eth-account
KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_ADDRESS = Account.from_key(bytes.fromhex(KEY_HEX)).address


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME; no XDG_CONFIG_HOME, wallet variables or config file from the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "CLAWROUTER_WALLET_FILE", "CLAWROUTER_WALLET_KEY", "CLAWROUTER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home


def default_file(home: Path) -> Path:
    return home / ".config" / "clawrouter" / "wallet.key"


# ------------------------------------------------------------------ the key


def test_address_is_the_eip55_address_of_the_key() -> None:
    wallet = Wallet.from_hex("0x" + KEY_HEX)
    assert wallet.address == KEY_ADDRESS
    assert wallet.private_key == bytes.fromhex(KEY_HEX)
    assert Wallet.from_hex(f"  {KEY_HEX.upper()}\n") == wallet
    fresh = Wallet.generate()
    assert len(fresh.private_key) == 32 and fresh != wallet
    assert Account.from_key(fresh.private_key).address == fresh.address


@pytest.mark.parametrize(
    "value",
    [
        KEY_HEX[:-1],  # 63 digits
        KEY_HEX + "0",  # 65 digits
        "0x" + KEY_HEX[:-2] + "zz",
        KEY_HEX[:32] + " " + KEY_HEX[33:],  # whitespace inside
        "",
    ],
)
def test_from_hex_errors_never_echo_the_value(value: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits") as error:
        Wallet.from_hex(value)
    assert KEY_HEX[:16] not in str(error.value)


def test_a_key_outside_the_curve_order_is_refused() -> None:
    with pytest.raises(ValueError, match="secp256k1 scalar"):
        Wallet.from_hex("00" * 32)
    with pytest.raises(ValueError, match="secp256k1 scalar"):
        Wallet.from_hex("ff" * 32)


def test_repr_and_str_hide_the_key() -> None:
    wallet = Wallet.from_hex(KEY_HEX)
    assert repr(wallet) == f"Wallet(address='{KEY_ADDRESS}')"
    for text in (repr(wallet), str(wallet), f"{wallet}", f"{[wallet]}"):
        assert KEY_HEX not in text.lower() and KEY_HEX[:16] not in text.lower()
    assert hash(wallet) == hash(Wallet.from_hex(KEY_HEX))


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Wallet.from_env() is None
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", "   ")
    assert Wallet.from_env() is None
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", f"0x{KEY_HEX}\n")
    assert Wallet.from_env().address == KEY_ADDRESS
    monkeypatch.setenv("AGENT_KEY", KEY_HEX)
    assert Wallet.from_env("AGENT_KEY").address == KEY_ADDRESS


def test_from_env_malformed_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = KEY_HEX[:-1] + "x"
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", bad)
    with pytest.raises(ValueError) as error:
        Wallet.from_env()
    message = str(error.value)
    assert message.startswith("$CLAWROUTER_WALLET_KEY: ")
    assert bad not in message and KEY_HEX[:16] not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


# ------------------------------------------------------------------ the key file


def test_save_writes_a_0600_file_in_0700_directories(tmp_path: Path) -> None:
    wallet = Wallet.from_hex(KEY_HEX)
    before = mode(tmp_path)
    target = tmp_path / "a" / "b" / "wallet.key"
    saved = wallet.save(target)
    assert saved == target and saved.is_absolute()
    assert target.read_bytes() == f"0x{KEY_HEX}\n".encode()
    assert mode(target) == 0o600
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path) == before  # an existing directory is left alone
    assert os.listdir(target.parent) == ["wallet.key"]  # no temporary file left behind
    assert Wallet.load(target) == wallet


def test_save_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        saved = Wallet.generate().save(tmp_path / "open" / "wallet.key")
    finally:
        os.umask(old)
    assert mode(saved) == 0o600 and mode(saved.parent) == 0o700


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "wallet.key"
    first, second = Wallet.generate(), Wallet.generate()
    first.save(target)
    with pytest.raises(FileExistsError, match="already exists") as error:
        second.save(target)
    assert str(target) in str(error.value)
    assert Wallet.load(target) == first  # untouched
    second.save(target, overwrite=True)
    assert Wallet.load(target) == second and mode(target) == 0o600
    assert os.listdir(target.parent) == ["wallet.key"]


def test_save_refuses_a_dangling_symlink_too(tmp_path: Path) -> None:
    link = tmp_path / "wallet.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(FileExistsError):
        Wallet.generate().save(link)
    assert not (tmp_path / "elsewhere.key").exists()


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_load_refuses_a_file_others_can_access(tmp_path: Path, bits: int) -> None:
    target = Wallet.from_hex(KEY_HEX).save(tmp_path / "wallet.key")
    target.chmod(bits)
    with pytest.raises(PermissionError) as error:
        Wallet.load(target)
    message = str(error.value)
    assert str(target) in message and f"chmod 600 {target}" in message and f"(mode {bits:04o})" in message
    assert KEY_HEX not in message
    target.chmod(0o600)
    assert Wallet.load(target).address == KEY_ADDRESS


def test_load_accepts_0400(tmp_path: Path) -> None:
    target = Wallet.from_hex(KEY_HEX).save(tmp_path / "wallet.key")
    target.chmod(0o400)
    assert Wallet.load(target).address == KEY_ADDRESS


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="clawrouter wallet new"):
        Wallet.load(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    secret_ish = "0x" + KEY_HEX[:40] + "not-hex-at-all-here-x"
    bad.write_text(secret_ish + "\n")
    bad.chmod(0o600)
    with pytest.raises(ValueError) as error:
        Wallet.load(bad)
    assert str(bad) in str(error.value) and "64 hex digits" in str(error.value)
    assert KEY_HEX[:16] not in str(error.value)
    bad.write_bytes(b"\xff" * 10)
    with pytest.raises(ValueError, match="64 hex digits"):
        Wallet.load(bad)


def test_default_path(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Wallet.default_path() == default_file(home)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Wallet.default_path() == tmp_path / "xdg" / "clawrouter" / "wallet.key"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/xdg")  # invalid per the XDG spec: ignored
    assert Wallet.default_path() == default_file(home)
    monkeypatch.setenv("CLAWROUTER_WALLET_FILE", "~/keys/agent.key")
    assert Wallet.default_path() == home / "keys" / "agent.key"


def test_resolve_order(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as error:
        Wallet.resolve()
    assert "$CLAWROUTER_WALLET_KEY is not set" in str(error.value)
    assert str(default_file(home)) in str(error.value)

    in_file = Wallet.generate()
    in_file.save(Wallet.default_path())
    assert Wallet.resolve() == in_file  # the default file

    other = Wallet.generate()
    other.save(tmp_path / "other.key")
    assert Wallet.resolve(tmp_path / "other.key") == other  # an explicit file
    assert Wallet.resolve(str(tmp_path / "other.key")) == other

    in_env = Wallet.from_hex(KEY_HEX)
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", KEY_HEX)
    assert Wallet.resolve() == in_env  # the variable comes first
    assert Wallet.resolve(tmp_path / "other.key") == in_env
    assert Wallet.resolve(env=None) == in_file  # unless it is not to be read

    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", "nonsense")
    with pytest.raises(ValueError, match=r"^\$CLAWROUTER_WALLET_KEY: "):
        Wallet.resolve()


# ------------------------------------------------------------------ balance (without a chain)


class FakeChain:
    """What EvmChain.from_url returns in these tests: records where it was pointed."""

    def __init__(self, url: str, token: str, chain_id: int) -> None:
        self.url, self.token, self._chain_id = url, token, chain_id
        self.closed = False

    async def chain_id(self) -> int:
        return self._chain_id

    async def balance_of(self, account: str) -> int:
        return 42

    def close(self) -> None:
        self.closed = True


class FakeNodes:
    """Replaces EvmChain.from_url: every chain it makes serves ``chain_id``."""

    def __init__(self) -> None:
        self.chain_id = 0
        self.made: list[FakeChain] = []

    def from_url(self, url: str, token: str, **kwargs: Any) -> FakeChain:
        self.made.append(FakeChain(url, token, self.chain_id))
        return self.made[-1]


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> FakeNodes:
    from clawrouter.evm.chain import EvmChain

    fake = FakeNodes()
    monkeypatch.setattr(EvmChain, "from_url", fake.from_url)
    return fake


async def test_balance_defaults_to_the_public_rpc_and_usdc(nodes: FakeNodes) -> None:
    wallet = Wallet.generate()
    for network in (BASE, BASE_SEPOLIA):
        nodes.chain_id = network.chain_id
        assert await wallet.balance(network.network) == 42
        used = nodes.made[-1]
        assert (used.url, used.token) == (DEFAULT_RPC_URLS[network.network], network.asset) and used.closed
    assert DEFAULT_RPC_URLS == {"eip155:8453": "https://mainnet.base.org", "eip155:84532": "https://sepolia.base.org"}
    nodes.chain_id = 8453
    assert await wallet.balance() == 42 and nodes.made[-1].url == "https://mainnet.base.org"


async def test_balance_argument_errors(nodes: FakeNodes) -> None:
    wallet = Wallet.generate()
    with pytest.raises(ValueError, match=r"unknown network 'eip155:1': give an RPC URL and the token address"):
        await wallet.balance("eip155:1")
    with pytest.raises(ValueError, match=r"give the token address"):
        await wallet.balance("eip155:1", rpc_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match=r"give an RPC URL for it"):
        await wallet.balance("eip155:1", asset=BASE.asset)
    with pytest.raises(ValueError, match="not a CAIP-2 EVM network id"):
        await wallet.balance("base")
    with pytest.raises(ValueError, match="is not an EVM address"):
        await wallet.balance("eip155:8453", asset="0x1234")
    assert nodes.made == []  # nothing was contacted
    nodes.chain_id = 1
    with pytest.raises(ValueError, match="serves chain 1, not eip155:8453"):
        await wallet.balance("eip155:8453", rpc_url="http://node.invalid")
    assert nodes.made[-1].closed


# ------------------------------------------------------------------ the command


@pytest.mark.parametrize("command", [["wallet"], ["wallet", "new"], ["wallet", "show"], ["wallet", "balance"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: clawrouter {' '.join(command)}" in capsys.readouterr().out


def test_cli_new_prints_address_and_path_not_the_key(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wallet", "new"]) == 0
    out = capsys.readouterr().out
    target = default_file(home)
    wallet = Wallet.load(target)
    assert out == f"address:  {wallet.address}\nkey file: {target} (mode 0600)\n"
    assert wallet.private_key.hex() not in out.lower()
    assert mode(target) == 0o600 and mode(target.parent) == 0o700 and mode(target.parent.parent) == 0o700

    assert main(["wallet", "new"]) == 2  # refuses to overwrite
    captured = capsys.readouterr()
    assert captured.out == "" and "already exists" in captured.err and "--force" in captured.err
    assert Wallet.load(target) == wallet

    assert main(["wallet", "new", "--force"]) == 0
    replaced = Wallet.load(target)
    assert replaced != wallet and capsys.readouterr().out.startswith(f"address:  {replaced.address}\n")


def test_cli_new_with_path_and_env_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "keys" / "agent.key"
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", KEY_HEX)
    assert main(["wallet", "new", "--path", str(target)]) == 0
    captured = capsys.readouterr()
    assert f"key file: {target} (mode 0600)" in captured.out
    assert "$CLAWROUTER_WALLET_KEY is set" in captured.err and KEY_HEX not in captured.err + captured.out
    assert Wallet.load(target).address in captured.out


def test_cli_show(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wallet = Wallet.from_hex(KEY_HEX)
    target = wallet.save(default_file(home))
    assert main(["wallet", "show"]) == 0
    out = capsys.readouterr().out
    assert out == f"address:     {KEY_ADDRESS}\nsource:      {target}\n"
    assert KEY_HEX not in out.lower()

    assert main(["wallet", "show", "--private-key"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"address:     {KEY_ADDRESS}"
    assert out.splitlines()[-1] == f"private key: 0x{KEY_HEX}"

    other = Wallet.generate()
    other.save(tmp_path / "other.key")
    assert main(["wallet", "show", "--path", str(tmp_path / "other.key")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"address:     {other.address}"

    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", other.private_key.hex())  # read before the file
    assert main(["wallet", "show"]) == 0
    assert capsys.readouterr().out == f"address:     {other.address}\nsource:      $CLAWROUTER_WALLET_KEY\n"


def test_cli_show_errors(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wallet", "show"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no wallet" in captured.err and "clawrouter wallet new" in captured.err

    target = Wallet.from_hex(KEY_HEX).save(default_file(home))
    target.chmod(0o644)
    assert main(["wallet", "show"]) == 2
    captured = capsys.readouterr()
    assert f"chmod 600 {target}" in captured.err and KEY_HEX not in captured.err

    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", "0x" + KEY_HEX[:-1])
    assert main(["wallet", "show", "--private-key"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("clawrouter: $CLAWROUTER_WALLET_KEY: ") and KEY_HEX[:-1] not in captured.err


def test_cli_errors_exit_2_without_a_traceback(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_WALLET")}
    result = subprocess.run(
        [sys.executable, "-m", "clawrouter.cli", "wallet", "balance", "--network", "eip155:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "HOME": str(home), "CLAWROUTER_WALLET_KEY": KEY_HEX},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("clawrouter: unknown network 'eip155:1'")
    assert "Traceback" not in result.stderr and KEY_HEX not in result.stderr


# ------------------------------------------------------------------ balance on a real chain

FUNDED = 12_345_678


@pytest.fixture
def funded(anvil_chain: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> Wallet:
    """A new wallet in the default key file, holding 12.345678 test USDC on anvil."""
    wallet = Wallet.generate()
    wallet.save(default_file(home))
    anvil_chain.fund(wallet.address, FUNDED, 0)
    return wallet


@pytest.mark.slow
async def test_balance_on_anvil(anvil_chain: Any, funded: Wallet) -> None:
    assert await funded.balance("eip155:84532", rpc_url=anvil_chain.rpc_url) == FUNDED
    assert await funded.balance("eip155:84532", anvil_chain.rpc_url, anvil_chain.token.lower()) == FUNDED
    assert await Wallet.generate().balance("eip155:84532", rpc_url=anvil_chain.rpc_url) == 0


@pytest.mark.slow
def test_cli_balance_on_anvil(anvil_chain: Any, funded: Wallet, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["wallet", "balance", "--network", "eip155:84532", "--rpc-url", anvil_chain.rpc_url]
    assert main(args) == 0
    assert capsys.readouterr().out == f"12.345678 USDC (12345678 atomic) on eip155:84532 for {funded.address}\n"

    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "address": funded.address,
        "network": "eip155:84532",
        "asset": BASE_SEPOLIA.asset,
        "symbol": "USDC",
        "decimals": 6,
        "atomic": FUNDED,
        "amount": "12.345678",
    }


@pytest.mark.slow
def test_cli_balance_takes_the_rpc_url_from_the_config(
    anvil_chain: Any,
    funded: Wallet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "clawrouter.toml"
    config.write_text(f'[payments.evm."eip155:84532"]\nrpc_url = "{anvil_chain.rpc_url}"\n')
    args = ["wallet", "balance", "--network", "eip155:84532", "--config", str(config)]
    assert main(args) == 0
    assert capsys.readouterr().out == f"12.345678 USDC (12345678 atomic) on eip155:84532 for {funded.address}\n"

    # the wallet's own variables are not taken for config overrides (CLAWROUTER_<SECTION>__<KEY>)
    monkeypatch.setenv("CLAWROUTER_WALLET_FILE", str(Wallet.default_path()))
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", funded.private_key.hex())
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("12.345678 USDC (12345678 atomic)")

    config.write_text('[payments.evm."eip155:84532"]\nrpc_url = 5\n')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("clawrouter: configuration error: config key 'payments.evm") and "rpc_url" in err


@pytest.mark.slow
def test_cli_balance_of_the_env_wallet_and_a_given_asset(
    anvil_chain: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wallet = Wallet.generate()
    anvil_chain.fund(wallet.address, 1_500_000, 0)
    monkeypatch.setenv("CLAWROUTER_WALLET_KEY", wallet.private_key.hex())
    args = ["wallet", "balance", "--network", "eip155:84532", "--rpc-url", anvil_chain.rpc_url]
    assert main([*args, "--asset", BASE_SEPOLIA.asset.lower()]) == 0
    assert capsys.readouterr().out == f"1.500000 USDC (1500000 atomic) on eip155:84532 for {wallet.address}\n"
    other_token = "0x" + "11" * 20  # no contract there: the call fails, reported without a traceback
    assert main([*args, "--asset", other_token]) == 2
    assert capsys.readouterr().err.startswith("clawrouter: cannot read the balance on eip155:84532: ")


@pytest.mark.slow
def test_cli_balance_errors_on_anvil(anvil_chain: Any, funded: Wallet, capsys: pytest.CaptureFixture[str]) -> None:
    # the node is anvil at 84532, not Base: refused rather than a wrong number
    assert main(["wallet", "balance", "--network", "eip155:8453", "--rpc-url", anvil_chain.rpc_url]) == 2
    assert capsys.readouterr().err == "clawrouter: the RPC endpoint serves chain 84532, not eip155:8453\n"

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/v2/secret-api-key"
    assert main(["wallet", "balance", "--network", "eip155:84532", "--rpc-url", dead]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clawrouter: cannot read the balance on eip155:84532: ")
    assert "secret-api-key" not in err


def test_the_wallet_variables_are_not_router_config_overrides():
    from clawrouter.config import load_config

    env = {"CLAWROUTER_WALLET_KEY": KEY_HEX, "CLAWROUTER_WALLET_FILE": "/tmp/w.key", "CLAWROUTER_SERVER__PORT": "9"}
    assert load_config(data={}, env=env).server.port == 9
