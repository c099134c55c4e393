"""One settings dict, ``INSTRUMENTED = {...}``, merged over documented defaults."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: Every setting, its default, and (in the README's table) what it does.
DEFAULTS: dict[str, Any] = {
    # memcached servers, "host:port" strings; several servers are consistent-hashed (pymemcache HashClient).
    "SERVERS": ["127.0.0.1:11211"],
    # Prefix of every memcached key; the schema version is appended by the store.
    "KEY_PREFIX": "instr",
    # Record at all. Off: the middleware and SQL hook do nothing.
    "ENABLED": True,
    # How far back readers look, and the TTL of everything written.
    "WINDOW_SECONDS": 300,
    # Width of one aggregation bucket.
    "BUCKET_SECONDS": 10,
    # How often the background thread writes changed buckets.
    "FLUSH_INTERVAL": 1.0,
    # memcached socket timeouts (seconds): short, so a dead server never stalls the flusher or a reader for long.
    "CONNECT_TIMEOUT": 0.25,
    "TIMEOUT": 0.5,
    # Circuit breaker: after this many consecutive failures, stop trying for a cool-down that doubles up to the max.
    "BREAKER_FAILURES": 3,
    "BREAKER_COOLDOWN": 2.0,
    "BREAKER_MAX_COOLDOWN": 30.0,
    # The same SQL template run at least this many times in one request flags it as N+1.
    "N_PLUS_ONE_THRESHOLD": 5,
    # Fraction of requests recorded (1.0 = all).
    "SAMPLE_RATE": 1.0,
    # Distinct views per process and bucket; the rest are counted under "(other)".
    "MAX_VIEWS": 500,
    # SQL templates kept per view and bucket (the heaviest by time).
    "MAX_QUERIES_PER_VIEW": 8,
    # Longest SQL template / view name stored (characters).
    "MAX_SQL_LENGTH": 2000,
    "MAX_NAME_LENGTH": 200,
    # One read's budget (memcached is not trusted: a forged value must not make every read slow): bytes
    # decoded from memcached (one value at most a quarter of it), and distinct views merged; the rest is
    # skipped or counted under "(other)", and the answer says so.
    "READ_MAX_BYTES": 64 * 1024 * 1024,
    "READ_MAX_VIEWS": 5000,
    # View names (or namespace prefixes ending in ":") that are not recorded: the tool's own pages by default.
    "IGNORE_VIEWS": ["instrumented:"],
    # Who may see the dashboard/API: dotted path to a callable(request) -> bool; None = active staff.
    "PERMISSION_CALLBACK": None,
    # Who gets the technical 500 page and may open error references: callable(user) -> bool; None = active superuser.
    "SUPERUSER_CALLBACK": None,
    # Use the stricter exception reporter filter for every traceback page this package renders or stores.
    "STRICT_REPORTER_FILTER": True,
    # Rendered technical pages stored per process and minute (rendering costs ~25 ms); later errors keep
    # their metadata and text traceback.
    "ERROR_PAGES_PER_MINUTE": 10,
    # Error-reference lookups per user and minute (then 429).
    "ERROR_LOOKUPS_PER_MINUTE": 60,
    # The DATABASES alias that goes through the MySQL proxy, for instrumented_querylog and the DBA panel.
    "QUERYLOG_DATABASE": "querylog",
}


class ImproperlyConfiguredSetting(ValueError):
    """A value in ``INSTRUMENTED`` has the wrong type or range."""


@functools.cache
def get_config() -> dict[str, Any]:
    """The effective settings: ``settings.INSTRUMENTED`` over ``DEFAULTS`` (cached; cleared on override)."""
    user = getattr(settings, "INSTRUMENTED", None) or {}
    config = dict(DEFAULTS)
    if isinstance(user, dict):
        config.update(user)
    return config


def validate(config: dict[str, Any]) -> list[str]:
    """Human-readable problems with ``config`` (empty when it is fine); used by the system checks."""
    problems: list[str] = []
    user = getattr(settings, "INSTRUMENTED", None)
    if user is not None and not isinstance(user, dict):
        return [f"INSTRUMENTED must be a dict, not {type(user).__name__}."]
    unknown = sorted(set(user or {}) - set(DEFAULTS))
    if unknown:
        problems.append(f"Unknown INSTRUMENTED keys: {', '.join(unknown)}.")
    servers = config["SERVERS"]
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list | tuple) or not servers:
        problems.append("SERVERS must be a non-empty list of 'host:port' strings.")
    else:
        for server in servers:
            if not isinstance(server, str) or not parse_server(server):
                problems.append(f"SERVERS entry {server!r} is not 'host:port'.")
    prefix = config["KEY_PREFIX"]
    if (
        not isinstance(prefix, str)
        or not prefix
        or len(prefix) > 40
        or not prefix.isascii()
        or any(c.isspace() or c == ":" for c in prefix)
    ):
        problems.append("KEY_PREFIX must be 1-40 ASCII characters without spaces or ':'.")
    positive = {
        "WINDOW_SECONDS": int,
        "BUCKET_SECONDS": int,
        "FLUSH_INTERVAL": (int, float),
        "CONNECT_TIMEOUT": (int, float),
        "TIMEOUT": (int, float),
        "BREAKER_FAILURES": int,
        "BREAKER_COOLDOWN": (int, float),
        "BREAKER_MAX_COOLDOWN": (int, float),
        "N_PLUS_ONE_THRESHOLD": int,
        "MAX_VIEWS": int,
        "MAX_QUERIES_PER_VIEW": int,
        "MAX_SQL_LENGTH": int,
        "MAX_NAME_LENGTH": int,
        "READ_MAX_BYTES": int,
        "READ_MAX_VIEWS": int,
        "ERROR_PAGES_PER_MINUTE": int,
        "ERROR_LOOKUPS_PER_MINUTE": int,
    }
    for key, kind in positive.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            problems.append(f"{key} must be a positive number, not {value!r}.")
    if not problems and config["WINDOW_SECONDS"] < config["BUCKET_SECONDS"]:
        problems.append("WINDOW_SECONDS must be at least BUCKET_SECONDS.")
    if not problems and config["WINDOW_SECONDS"] > 24 * 3600:
        problems.append("WINDOW_SECONDS must be at most one day (memcached keeps stats for the window only).")
    rate = config["SAMPLE_RATE"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        problems.append(f"SAMPLE_RATE must be between 0 and 1, not {rate!r}.")
    if not isinstance(config["QUERYLOG_DATABASE"], str) or not config["QUERYLOG_DATABASE"]:
        problems.append("QUERYLOG_DATABASE must be the name of a DATABASES alias.")
    if not isinstance(config["IGNORE_VIEWS"], list | tuple):
        problems.append("IGNORE_VIEWS must be a list of view names or 'namespace:' prefixes.")
    return problems


def parse_server(server: str) -> tuple[str, int] | None:
    """``"host:port"`` (or ``"[v6]:port"``) to a tuple, or None when it is not one."""
    host, sep, port = server.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    """Forget the cached config when tests override ``INSTRUMENTED``."""
    if setting == "INSTRUMENTED":
        get_config.cache_clear()
