"""Structured logs: a JSON formatter, secret redaction, and ``clawrouter serve``'s logging setup.

* :class:`JsonFormatter` writes one JSON object per line: ``time`` (RFC 3339, UTC, milliseconds),
  ``level``, ``logger``, ``message``, then the record's ``fields`` (``log.info("...",
  extra={"fields": {...}})``, the convention of the access log ``clawrouter.access`` and the
  event log ``clawrouter.events``), then ``exc_type`` and ``exc`` when an exception is attached.
* :class:`RedactSecrets` replaces every secret the process knows (:func:`register_secret`: the
  router's key, provider and facilitator API keys) with ``[redacted]`` in messages, fields and
  exception text. It is a safety net: the code never logs those values in the first place.
* :func:`configure_logging` is the :func:`logging.config.dictConfig` dictionary (also uvicorn's
  ``log_config``) that ``clawrouter serve`` runs with.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = [
    "LOG_FORMATS",
    "REDACTED",
    "JsonFormatter",
    "RedactSecrets",
    "TextFormatter",
    "configure_logging",
    "register_secret",
]

#: what a secret is replaced with
REDACTED = "[redacted]"
#: ``clawrouter serve --log-format`` / ``[observability] log_format``
LOG_FORMATS = ("text", "json")
#: shorter values are not registered: they would redact ordinary words and numbers
MIN_SECRET_LENGTH = 8
#: the keys every JSON line starts with; a field of the same name is written as ``fields.<name>``
_BASE_KEYS = frozenset({"time", "level", "logger", "message", "exc_type", "exc", "stack"})
#: third-party loggers that log URLs (RPC endpoints carry API keys in their path or query) or
#: request bodies at INFO or DEBUG: kept at WARNING whatever ``level`` is
_QUIET = ("httpx", "httpcore", "urllib3", "web3", "aiohttp.client", "hpack")
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


# --- the registry of secrets ----------------------------------------------------------------

_lock = threading.Lock()
_registered: set[str] = set()
_generation = 0  # bumped on every new secret, so filters know to rebuild their pattern


def register_secret(value: str) -> None:
    """Have every :class:`RedactSecrets` filter (of this process) hide ``value``.

    Surrounding whitespace is ignored; values shorter than 8 characters are ignored. A hex
    value (a private key) is also hidden with or without ``0x`` and in any case.
    """
    global _generation
    text = str(value).strip() if value else ""
    if len(text) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if text not in _registered:
            _registered.add(text)
            _generation += 1


def _alternative(secret: str) -> str:
    """The regular expression matching ``secret`` (and, for hex, its variants)."""
    if _HEX.fullmatch(secret):
        digits = secret[2:] if secret[:2] in ("0x", "0X") else secret
        if len(digits) >= MIN_SECRET_LENGTH:
            return f"(?i:(?:0x)?{digits})"
    return re.escape(secret)


def _compile(secrets: Iterable[str]) -> re.Pattern[str] | None:
    # longest first: where one secret contains another, the whole of the longer one goes
    alternatives = sorted({_alternative(s) for s in secrets}, key=lambda a: (-len(a), a))
    return re.compile("|".join(alternatives)) if alternatives else None


# --- redaction --------------------------------------------------------------------------------


class RedactSecrets(logging.Filter):
    """Replace secrets with ``[redacted]`` in a record's final message, in its ``fields``
    (nested dicts, lists and tuples included), in its exception text and stack.

    It hides ``secrets`` and, with ``registry`` (the default), every value given to
    :func:`register_secret`, including those registered after the filter was made. It never
    drops a record. Put it on a handler: it then sees the records of every logger.
    """

    def __init__(self, secrets: Iterable[str] = (), *, registry: bool = True, name: str = "") -> None:
        super().__init__(name)
        self.secrets: set[str] = {s.strip() for s in secrets if len(s.strip()) >= MIN_SECRET_LENGTH}
        self.registry = registry
        self._pattern: re.Pattern[str] | None = None
        self._built = -1  # the registry's generation the pattern was built for
        self._own = len(self.secrets)
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Hide ``secret`` too (same rules as :func:`register_secret`)."""
        text = secret.strip()
        if len(text) >= MIN_SECRET_LENGTH:
            with self._lock:
                self.secrets.add(text)

    def _current(self) -> re.Pattern[str] | None:
        generation = _generation if self.registry else 0
        if generation != self._built or len(self.secrets) != self._own:
            with self._lock:
                with _lock:
                    every = set(self.secrets) | (set(_registered) if self.registry else set())
                self._pattern = _compile(every)
                self._built, self._own = generation, len(self.secrets)
        return self._pattern

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced."""
        pattern = self._current()
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            pattern = self._current()
            if pattern is None:
                return True
            try:
                message = record.getMessage()
            except Exception:  # bad arguments: leave the record for the handler to report
                message = None
            if message is not None:
                cleaned = pattern.sub(REDACTED, message)
                if cleaned != message:
                    record.msg, record.args = cleaned, None
            fields = getattr(record, "fields", None)
            if fields is not None:
                setattr(record, "fields", _scrub(fields, pattern, 0))  # noqa: B010 (not a LogRecord attribute)
            if record.exc_info and not record.exc_text:
                # formatted here so that the formatter (which caches exc_text) writes the clean text
                record.exc_text = _format_exception(record.exc_info)
            if record.exc_text:
                record.exc_text = pattern.sub(REDACTED, record.exc_text)
            if record.stack_info:
                record.stack_info = pattern.sub(REDACTED, record.stack_info)
        except Exception:  # a filter that raises would lose the record
            pass
        return True


def _scrub(value: Any, pattern: re.Pattern[str], depth: int) -> Any:
    """``value`` with the secrets in its strings replaced; never raises (what cannot be walked
    is replaced by its redacted ``str()``)."""
    try:
        if isinstance(value, str):
            return pattern.sub(REDACTED, value)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if depth <= 8:
            if isinstance(value, Mapping):
                return {
                    (pattern.sub(REDACTED, k) if isinstance(k, str) else k): _scrub(v, pattern, depth + 1)
                    for k, v in value.items()
                }
            if isinstance(value, list | tuple):
                return [_scrub(v, pattern, depth + 1) for v in value]
        # anything else is written with str() by the formatters: redact what would be written
        text = bytes(value).decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else _str(value)
        cleaned = pattern.sub(REDACTED, text)
        return cleaned if cleaned != text else value
    except Exception:
        return pattern.sub(REDACTED, _str(value))


def _format_exception(exc_info: Any) -> str:
    text = "".join(traceback.format_exception(*exc_info))
    return text[:-1] if text.endswith("\n") else text


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


# --- formatters ---------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder(enc_hook=str)
_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text: one tuple, so threads agree


def _timestamp(record: logging.LogRecord) -> str:
    """``2025-01-31T12:34:56.789Z``."""
    global _second
    second = int(record.created)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int(record.msecs):03d}Z"


_SCALARS = (str, int, float, bool, type(None))
_MAX_DEPTH = 16


def _safe(value: Any, depth: int = 0) -> Any:
    """``value`` with its dicts, lists and tuples walked here, not by msgspec (a structure that
    contains itself would overflow msgspec's C stack); nested too deep, it is ``str()``-ed."""
    if isinstance(value, _SCALARS):
        return value
    if depth >= _MAX_DEPTH:
        return _str(value)
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str | int) and not isinstance(k, bool) else _str(k)): _safe(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_safe(v, depth + 1) for v in value]
    return value  # msgspec writes datetimes, decimals, bytes, UUIDs...; enc_hook str()s the rest


def _encodable(value: Any) -> Any:
    try:
        _encoder.encode(value)
    except Exception:
        return _str(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the record's
    ``fields`` (a field named like one of those is written as ``fields.<name>``), then
    ``exc_type`` and ``exc`` (the traceback) when the record has an exception, and ``stack``
    with ``stack_info``. Values JSON cannot hold are written with ``str()``. Never raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("use_colors", None)  # what uvicorn adds to a log_config's formatters
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        try:
            document = self._document(record)
        except Exception as exc:
            document = {
                "time": _safe_time(record),
                "level": "ERROR",
                "logger": "clawrouter.logs",
                "message": f"a log record could not be formatted: {type(exc).__name__}",
            }
        try:
            return _encoder.encode(document).decode("utf-8", "replace")
        except Exception:
            try:  # values JSON cannot hold in a way enc_hook misses (keys, recursion): str() them
                plain = {k: _encodable(v) for k, v in document.items()}
                return _encoder.encode(plain).decode("utf-8", "replace")
            except Exception:
                return '{"level":"ERROR","logger":"clawrouter.logs","message":"a log record could not be encoded"}'

    def _document(self, record: logging.LogRecord) -> dict[str, Any]:
        try:
            message = record.getMessage()
        except Exception as exc:
            message = f"{_str(record.msg)} (bad log arguments: {type(exc).__name__})"
        document: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                name = key if isinstance(key, str) else _str(key)
                document[f"fields.{name}" if name in _BASE_KEYS else name] = _safe(value)
        elif fields is not None:
            document["fields"] = _safe(fields)
        if record.exc_info:
            kind = record.exc_info[0]
            document["exc_type"] = kind.__name__ if kind is not None else None
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return document


def _safe_time(record: logging.LogRecord) -> str:
    try:
        return _timestamp(record)
    except Exception:
        return ""


class TextFormatter(logging.Formatter):
    """``2025-01-31 12:34:56,789 INFO    clawrouter.access: POST /v1/... 200 key=value ...``:
    the readable format, with the record's ``fields`` appended as ``key=value``."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any) -> None:
        kwargs.pop("use_colors", None)
        super().__init__(fmt or "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping) and fields:
            pairs = []
            for key, value in fields.items():
                if value is None:
                    continue
                shown = _str(value) if isinstance(value, str | int | float | bool) else _json(value)
                if not shown or any(c.isspace() or c in '"=' for c in shown):
                    shown = _json(shown)
                pairs.append(f"{key}={shown}")
            if pairs:
                text += " " + " ".join(pairs)
        return text


def _json(value: Any) -> str:
    try:
        return _encoder.encode(value).decode("utf-8", "replace")
    except Exception:
        return _encoder.encode(_str(value)).decode()


# --- clawrouter serve ---------------------------------------------------------------------------

_LEVELS = {"trace": 5, **{name.lower(): number for name, number in logging.getLevelNamesMapping().items()}}


def configure_logging(level: str = "info", fmt: str = "text", access_log: bool = False) -> dict[str, Any]:
    """The :func:`logging.config.dictConfig` dictionary of ``clawrouter serve`` (uvicorn's
    ``log_config`` too): every logger writes to stderr, in ``fmt`` ("text" or "json": one
    JSON object per line), through :class:`RedactSecrets`.

    ``level`` applies to the root logger, ``clawrouter`` and ``uvicorn``; ``clawrouter.access``
    logs at INFO whenever ``access_log`` is on. uvicorn's own access log is off (clawrouter's
    replaces it). ``httpx``, ``httpcore``, ``urllib3``, ``web3`` and ``aiohttp.client`` stay
    at WARNING: below it they log URLs, where RPC providers put API keys.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(map(repr, LOG_FORMATS))}, not {fmt!r}")
    number = _LEVELS.get(str(level).lower())
    if number is None:
        raise ValueError(
            f"log level must be one of {', '.join(n for n in _LEVELS if n not in ('notset', 'warn', 'fatal'))}, "
            f"not {level!r}"
        )
    quiet = max(number, logging.WARNING)
    formatter = "JsonFormatter" if fmt == "json" else "TextFormatter"
    loggers: dict[str, Any] = {
        "clawrouter": {"level": number, "handlers": [], "propagate": True},
        "uvicorn": {"level": number, "handlers": [], "propagate": True},
        "uvicorn.error": {"level": number, "handlers": [], "propagate": True},
        "uvicorn.access": {"level": logging.CRITICAL + 1, "handlers": ["null"], "propagate": False},
        **{name: {"level": quiet, "handlers": [], "propagate": True} for name in _QUIET},
    }
    if access_log:
        loggers["clawrouter.access"] = {"level": logging.INFO, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": f"{__name__}.RedactSecrets"}},
        # "default" and "access": the names uvicorn sets use_colors on (ignored here)
        "formatters": {name: {"()": f"{__name__}.{formatter}"} for name in ("default", "access")},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["redact"],
            },
            "null": {"class": "logging.NullHandler"},
        },
        "loggers": loggers,
        "root": {"level": number, "handlers": ["stderr"]},
    }
