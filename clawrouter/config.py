"""Configuration: one TOML file, every key overridable from the environment.

``CLAWROUTER_<SECTION>__<KEY>=value`` overrides ``[section] key`` (a double
underscore separates levels: ``CLAWROUTER_SERVER__PORT=9000``,
``CLAWROUTER_PROVIDERS__OPENAI__API_KEY=...``). Values are read as TOML values
when they parse as one (``9000``, ``true``, ``["a", "b"]``) and as strings
otherwise. ``CLAWROUTER_LOAD_PLUGINS`` and ``CLAWROUTER_DISABLE_PLUGINS`` choose
plugins and are not config keys; nor is any variable without ``__`` that does
not begin with a section's name (``CLAWROUTER_SOLANA_KEY``, a plugin's own),
while ``CLAWROUTER_SERVER_PORT`` (meant ``SERVER__PORT``) is still an error.

Everything is validated at start-up; a :class:`ConfigError` names the key, the
expected type and, for overrides, the variable.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from .limits import LimitsConfig

__all__ = [
    "AuthConfig",
    "Config",
    "ConfigError",
    "ExecutionConfig",
    "LedgerConfig",
    "ObservabilityConfig",
    "PaymentsConfig",
    "RoutingConfig",
    "ServerConfig",
    "StateConfig",
    "load_config",
]

ENV_PREFIX = "CLAWROUTER_"
NOT_CONFIG = {
    "CLAWROUTER_LOAD_PLUGINS",
    "CLAWROUTER_DISABLE_PLUGINS",
    "CLAWROUTER_CONFIG",
    "CLAWROUTER_KEY",
    # the agent-side wallet (clawrouter.wallet), not router configuration
    "CLAWROUTER_WALLET_KEY",
    "CLAWROUTER_WALLET_FILE",
}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class ServerConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8402
    max_body_bytes: int = 4 * 1024 * 1024
    #: origins allowed by CORS ("*": any); the x402 headers are exposed to them
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: SHA-256 of the admin key (``clawrouter hash-key KEY``): required by ``/-/metrics``, ``/-/stats``
    #: and ``/-/dashboard`` when set (``[limits] admin_key_sha256`` is accepted there too)
    admin_key_sha256: str = ""


class RoutingConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    strategy: str = "default"
    default_profile: str = "auto"
    default_max_tokens: int = 1024
    fallbacks: int = 2
    weights: dict[str, float] = {}
    order: list[str] = []


class ExecutionConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    max_retries: int = 1
    retry_budget: int = 2
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    max_retry_wait: float = 10.0
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0


class ApiKey(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: str
    sha256: str


class AuthConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    api_keys: list[ApiKey] = []
    allow_anonymous: bool = True


class EvmNetworkConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[payments.evm."eip155:<id>"]``: where to reach a network, and its token for
    networks outside the built-in table (a local chain)."""

    rpc_url: str = ""
    asset: str = ""
    name: str = ""
    version: str = ""


class PaymentsConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pay_to: str = ""
    #: CAIP-2 ids the built-in ``exact`` EVM rail accepts, e.g. ["eip155:8453"]
    networks: list[str] = []
    evm: dict[str, EvmNetworkConfig] = {}
    #: "embedded" (the router's key settles) or the URL of an x402 facilitator
    facilitator: str = "embedded"
    facilitator_api_key_env: str = ""
    #: serve the x402 facilitator API (/-/x402/…) for other x402 servers
    serve_facilitator: bool = False
    #: the environment variable holding the router's private key (signs receipts, settles)
    key_env: str = "CLAWROUTER_KEY"
    #: "before" (settle before the JSON response is released) or "deferred"
    settlement: str = "before"
    settle_attempts: int = 3
    settle_retry_seconds: float = 30.0
    #: with a ledger shared by replicas (PostgreSQL): how long a replica holds an intent it settles;
    #: longer than a settlement takes (confirmation included), after which another replica takes over
    settle_lease_seconds: float = 300.0
    simulate: bool = False
    balance_cache_seconds: float = 30.0
    quote_ttl_seconds: int = 300
    max_timeout_seconds: int = 60
    lock_ttl_seconds: float = 300.0
    rails: dict[str, dict[str, Any]] = {}

    def __post_init__(self) -> None:
        if self.settlement not in ("before", "deferred"):
            raise ValueError(f"settlement must be 'before' or 'deferred', not {self.settlement!r}")
        for network in self.networks:
            if not re.fullmatch(r"eip155:[0-9]+", network):
                raise ValueError(f"networks: {network!r} is not a CAIP-2 EVM id like 'eip155:8453'")


class StateConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    backend: str = "memory"
    url: str = ""
    #: the namespace of this router's keys in a shared backend (Redis)
    prefix: str = "clawrouter:"
    #: with a shared backend: how often replicas exchange routing statistics (0: never)
    stats_sync_seconds: float = 2.0


class LedgerConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    backend: str = "sqlite"
    path: str = "clawrouter-ledger.sqlite3"
    url: str = ""


class ObservabilityConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[observability]``: metrics, statistics, dashboard, traces and logs (docs/observability.md)."""

    #: in-process metrics and statistics, ``GET /-/metrics``, ``/-/stats`` and ``/-/dashboard``
    enabled: bool = True
    #: OpenTelemetry traces: "" (off), "otlp" (OTLP/HTTP), "console", or "memory" (tests, benchmarks)
    traces: str = ""
    #: OpenTelemetry metrics pushed every ``export_interval_seconds``: "" (off), "otlp", "console"
    metrics: str = ""
    #: OTLP/HTTP endpoint (``/v1/traces`` and ``/v1/metrics`` are appended) and extra headers
    otlp_endpoint: str = "http://127.0.0.1:4318"
    otlp_headers: dict[str, str] = {}
    service_name: str = "clawrouter"
    #: the share of new traces recorded (a caller's sampled ``traceparent`` is always followed)
    sample_ratio: float = 1.0
    export_interval_seconds: float = 10.0
    #: resolution and depth of ``/-/stats``
    stats_step_seconds: int = 5
    stats_retention_seconds: int = 86_400
    #: distinct payers with a series of their own (the rest are counted as "other")
    max_payers: int = 1000
    #: requests waiting for the collector; beyond it the oldest are dropped (and counted)
    queue_size: int = 10_000
    #: one structured line per request on the ``clawrouter.access`` logger
    access_log: bool = False
    #: ``clawrouter serve``'s log format: "text" or "json" (one JSON object per line)
    log_format: str = "text"
    #: transaction links on the dashboard, per network id ("{tx}" is replaced)
    explorers: dict[str, str] = {}


class Config(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    server: ServerConfig = ServerConfig()
    routing: RoutingConfig = RoutingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    auth: AuthConfig = AuthConfig()
    payments: PaymentsConfig = PaymentsConfig()
    state: StateConfig = StateConfig()
    ledger: LedgerConfig = LedgerConfig()
    limits: LimitsConfig = LimitsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    providers: dict[str, dict[str, Any]] = msgspec.field(default_factory=lambda: {"simulated": {"kind": "simulated"}})
    models: list[dict[str, Any]] = []
    plugins: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, sources: Mapping[str, str] | None = None) -> Config:
        try:
            return msgspec.convert(dict(data), cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(str(exc), sources or {})) from None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _explain(message: str, sources: Mapping[str, str]) -> str:
    match = _AT.match(message)
    assert match is not None
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    path = re.sub(r"\[(\d+)\]", r"[\1]", path)
    unknown = _UNKNOWN.match(msg)
    if unknown:
        key = f"{path}.{unknown['field']}" if path else unknown["field"]
        text = f"config key {key!r}: unknown key"
    else:
        key = path
        text = f"config key {key!r}: {msg.replace('`', '')}"
    source = sources.get(key)
    return text + (f" (from {source})" if source else "")


def parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested overrides from ``CLAWROUTER_*`` variables, and which variable set each key."""
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" not in rest and not any(rest == f or rest.startswith(f + "_") for f in Config.__struct_fields__):
            continue  # not a config key: a plugin's or a tool's own variable (CLAWROUTER_SOLANA_KEY)
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(parts)} overrides a key that is not a table")
            node = child
        node[parts[-1]] = parse_env_value(env[name])
        sources[".".join(parts)] = name
    return tree, sources


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Config:
    """Read ``path`` (TOML) or ``data``, apply environment overrides, validate.

    With neither, the embedded default: the simulated provider and its models.
    ``path`` defaults to ``$CLAWROUTER_CONFIG`` when that is set.
    """
    env = os.environ if env is None else env
    path = path or env.get("CLAWROUTER_CONFIG") or None
    base: dict[str, Any] = dict(data or {})
    if path is not None:
        try:
            base = _merge(base, tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    overrides, sources = env_overrides(env)
    if "providers" in overrides and "providers" not in base:
        base["providers"] = msgspec.to_builtins(Config().providers)
    return Config.from_dict(_merge(base, overrides), sources=sources)
