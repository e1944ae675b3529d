"""The hook this distribution registers (entry point ``postgres`` in the group ``clawrouter``).

Registering costs nothing: ``psycopg`` is imported only when a router's config
chooses ``[ledger] backend = "postgres"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from clawrouter.config import Config, ConfigError
from clawrouter.hookspecs import hookimpl
from clawrouter.ledger import Ledger

__all__ = ["PostgresLedgerFactory", "check_url", "redact", "register_ledgers"]

_EXAMPLE = "postgresql://postgres@127.0.0.1:5432/test"
_KEY = "config key 'ledger.url'"


def redact(url: str) -> str:
    """``url`` with any password (``user:password@`` or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if "password" in query.lower():
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> list[str]:
    """The password(s) in ``url``, raw and percent-decoded, to scrub from any message."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() == "password"]
    found += [unquote(s) for s in found]
    return [s for s in found if s]


def check_url(url: str) -> None:
    """Raise :class:`~clawrouter.config.ConfigError` (naming ``ledger.url``, never showing a
    password) unless ``url`` is a ``postgresql://`` URL libpq accepts."""
    if not url:
        raise ConfigError(f"{_KEY}: required by the postgres backend (e.g. {_EXAMPLE})")
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        got = f"a {scheme}:// URL" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}", scheme) else "no URL"
        raise ConfigError(f"{_KEY}: expected a postgresql:// URL (e.g. {_EXAMPLE}), got {got}")
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        message = str(exc).strip()
        for secret in _secrets(url):
            message = message.replace(secret, "***")
        raise ConfigError(f"{_KEY}: {message}") from None


class PostgresLedgerFactory:
    """``[ledger] backend = "postgres"``: ``url`` (``postgresql://user@host:5432/db``; libpq
    parameters such as ``sslmode`` or ``options=-csearch_path%3Dschema`` in its query string)."""

    name = "postgres"

    def create(self, settings: dict[str, Any]) -> Ledger:
        url = str(settings.get("url") or "")
        check_url(url)
        from .ledger import PostgresLedger

        return PostgresLedger(url)


@hookimpl
def register_ledgers(config: Config) -> Iterable[Any]:
    return [PostgresLedgerFactory()]
