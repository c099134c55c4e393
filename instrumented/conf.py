"""One settings dict, ``INSTRUMENTED = {...}``, validated once into a frozen, typed :class:`Config`.

Every default lives in :data:`DEFAULTS` and nowhere else. A bad value is reported by the system checks
(``instrumented.E001``) and replaced by its default, so a typo never breaks the site it instruments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .keys import Keys

#: Every setting, its default, and (in the README's table) what it does.
DEFAULTS: dict[str, Any] = {
    # memcached servers, "host:port" strings; several are rendezvous-hashed over the live ones (memcached.Store).
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
    # A query taking at least this long (milliseconds) is counted as slow and its call site is looked up.
    "SLOW_QUERY_MS": 100,
    # Where a query came from is the first frame outside Django, this package, the standard library and
    # site-packages; these module names ("myproject.db") or path prefixes ("/srv/app/vendor/") are skipped too.
    "CALL_SITE_SKIP": [],
    # Server-Timing response header (app, db, cache, http): "staff" (whoever PERMISSION_CALLBACK allows), "all", "off".
    "SERVER_TIMING": "staff",
    # Headers in which the front server stamps when it received the request (nginx `t=${msec}`, Heroku, Thruster):
    # the request's queue time is the wait between that stamp and Django. [] switches it off.
    "QUEUE_TIME_HEADERS": ["X-Request-Start", "X-Queue-Start"],
    # Fraction of requests recorded (1.0 = all).
    "SAMPLE_RATE": 1.0,
    # Distinct views per process and bucket; the rest are counted under "(other)".
    "MAX_VIEWS": 500,
    # Slowest requests kept per view and bucket, with their timeline (0 = none: nothing is recorded for them).
    "SAMPLES_PER_VIEW": 5,
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
    # Bearer token that lets a scraper (Prometheus) read /instrumented/metrics without a session; None = only users
    # who may see the dashboard. At least 16 characters; compare with secrets.compare_digest.
    "METRICS_TOKEN": None,
    # The DATABASES alias that goes through the MySQL proxy, for instrumented_querylog and the DBA panel.
    "QUERYLOG_DATABASE": "querylog",
    # Several proxies: their aliases, switched and read together (None = just QUERYLOG_DATABASE).
    "QUERYLOG_DATABASES": None,
    # End every statement with /*view='...',route='...'*/ for the proxy's digest: False, True (every alias)
    # or a list of aliases.
    "SQL_COMMENT": False,
    # The view page's Explain (issue 22): the DATABASES alias plans run on (a replica, say); None = the alias the
    # stats recorded for the view.
    "EXPLAIN_DATABASE": None,
    # Allow EXPLAIN ANALYZE (PostgreSQL) / ANALYZE FORMAT=JSON (MariaDB), which run the statement; off by default.
    "EXPLAIN_ANALYZE": False,
    # Statement timeout of one EXPLAIN (seconds); a plan that takes longer is cut.
    "EXPLAIN_TIMEOUT": 2.0,
    # Profiles (a superuser's X-Instrumented-Profile request, or the next N requests of an armed view):
    # "builtin" (a thread sampling the request's stack: measured 1.0-1.1x a request) or "pyinstrument" (the
    # [profile] extra; exact at call boundaries, but it hooks every call: measured 1.6-3x on call-heavy views).
    "PROFILE_ENGINE": "builtin",
    # Sampling interval (milliseconds), the longest stretch of a request profiled (seconds), nodes kept per tree.
    "PROFILE_INTERVAL_MS": 1.0,
    "PROFILE_MAX_SECONDS": 30.0,
    "PROFILE_MAX_NODES": 2000,
}


#: Settings that must be positive numbers: int-only ones, and those that may be fractional.
_POSITIVE_INTS = (
    "WINDOW_SECONDS",
    "BUCKET_SECONDS",
    "BREAKER_FAILURES",
    "N_PLUS_ONE_THRESHOLD",
    "MAX_VIEWS",
    "MAX_QUERIES_PER_VIEW",
    "MAX_SQL_LENGTH",
    "MAX_NAME_LENGTH",
    "READ_MAX_BYTES",
    "READ_MAX_VIEWS",
    "ERROR_PAGES_PER_MINUTE",
    "ERROR_LOOKUPS_PER_MINUTE",
    "PROFILE_MAX_NODES",
)
#: Most slowest-request samples kept per view and bucket (each holds up to a few hundred events).
MAX_SAMPLES_PER_VIEW = 50
#: Who gets the Server-Timing header.
SERVER_TIMING_CHOICES = ("staff", "all", "off")
_POSITIVE_FLOATS = (
    "SLOW_QUERY_MS",
    "FLUSH_INTERVAL",
    "CONNECT_TIMEOUT",
    "TIMEOUT",
    "BREAKER_COOLDOWN",
    "BREAKER_MAX_COOLDOWN",
    "EXPLAIN_TIMEOUT",
    "PROFILE_INTERVAL_MS",
    "PROFILE_MAX_SECONDS",
)
#: Which profiler profiles a request.
PROFILE_ENGINE_CHOICES = ("builtin", "pyinstrument")


@dataclass(frozen=True, slots=True)
class Config:
    """The effective settings, each field the lower-case name of its ``INSTRUMENTED`` key, already validated."""

    servers: tuple[tuple[str, int], ...]
    key_prefix: str
    enabled: bool
    window_seconds: int
    bucket_seconds: int
    flush_interval: float
    connect_timeout: float
    timeout: float
    breaker_failures: int
    breaker_cooldown: float
    breaker_max_cooldown: float
    n_plus_one_threshold: int
    slow_query_ms: float
    call_site_skip: tuple[str, ...]
    server_timing: str
    #: QUEUE_TIME_HEADERS as ``request.META`` keys (``HTTP_X_REQUEST_START``), looked up in this order.
    queue_time_meta: tuple[str, ...]
    sample_rate: float
    max_views: int
    max_queries_per_view: int
    samples_per_view: int
    max_sql_length: int
    max_name_length: int
    read_max_bytes: int
    read_max_views: int
    ignore_views: tuple[str, ...]
    permission_callback: str | Callable[..., Any] | None
    superuser_callback: str | Callable[..., Any] | None
    strict_reporter_filter: bool
    error_pages_per_minute: int
    error_lookups_per_minute: int
    querylog_database: str
    querylog_databases: tuple[str, ...]
    #: The aliases whose statements carry the view comment (empty: none; "*" in it: every alias).
    sql_comment: frozenset[str]
    metrics_token: str | None = None
    explain_database: str | None = None
    explain_analyze: bool = False
    explain_timeout: float = 2.0
    profile_engine: str = "builtin"
    profile_interval_ms: float = 1.0
    profile_max_seconds: float = 30.0
    profile_max_nodes: int = 2000
    #: What was wrong with ``INSTRUMENTED`` (each bad value was replaced by its default).
    problems: tuple[str, ...] = ()

    @property
    def ttl(self) -> int:
        """Expiry of everything written for the window: the window plus two buckets of slack."""
        return self.window_seconds + 2 * self.bucket_seconds

    @property
    def window_buckets(self) -> int:
        """Buckets in the window (rounded up)."""
        return -(-self.window_seconds // self.bucket_seconds)

    @property
    def keys(self) -> Keys:
        """The memcached key scheme under this KEY_PREFIX."""
        return Keys(self.key_prefix)

    @property
    def server_names(self) -> list[str]:
        """The servers as ``host:port`` strings, for messages."""
        return [f"{host}:{port}" for host, port in self.servers]


def _bad(raw: dict[str, Any], problems: list[str], key: str, message: str) -> None:
    """Report ``message`` and fall back to the default of ``key``."""
    problems.append(message)
    raw[key] = DEFAULTS[key]


#: What SERVERS looks like, for the messages of a value that does not.
SERVERS_EXAMPLE = 'a list of "host:port" strings, e.g. ["127.0.0.1:11211"] or ["10.0.0.1:11211", "10.0.0.2:11211"]'


def _servers(raw: dict[str, Any], problems: list[str]) -> list[str]:
    """The valid ``host:port`` entries of SERVERS (the default when none is valid). One ``host:port`` string is
    taken as a list of one; several in one string, or a ``memcached://`` URL, are reported with the form expected."""
    servers = raw["SERVERS"]
    if isinstance(servers, str):
        parts = servers.replace(",", " ").replace(";", " ").split()
        if len(parts) > 1:
            problems.append(f"SERVERS is one string, {servers!r}: it must be {SERVERS_EXAMPLE}.")
        servers = parts or [servers]
    if not isinstance(servers, list | tuple) or not servers:
        problems.append(f"SERVERS must be {SERVERS_EXAMPLE}, not {servers!r}.")
        return list(DEFAULTS["SERVERS"])
    wrong = [s for s in servers if not isinstance(s, str) or not parse_server(s)]
    for entry in wrong:
        if isinstance(entry, str) and "://" in entry:
            address = entry.split("://", 1)[1].split("/", 1)[0]
            problems.append(
                f"SERVERS entry {entry!r} is a URL: give its 'host:port' ({address!r}); SERVERS is {SERVERS_EXAMPLE}."
            )
        else:
            problems.append(f"SERVERS entry {entry!r} is not 'host:port': SERVERS is {SERVERS_EXAMPLE}.")
    return [s for s in servers if s not in wrong] or list(DEFAULTS["SERVERS"])


def _check_ranges(raw: dict[str, Any], problems: list[str]) -> None:
    """Every other value's type and range; a bad one is reported and replaced by its default."""
    prefix = raw["KEY_PREFIX"]
    if (
        not isinstance(prefix, str)
        or not prefix
        or len(prefix) > 40
        or not prefix.isascii()
        or any(c.isspace() or c == ":" for c in prefix)
    ):
        _bad(raw, problems, "KEY_PREFIX", "KEY_PREFIX must be 1-40 ASCII characters without spaces or ':'.")
    for key in (*_POSITIVE_INTS, *_POSITIVE_FLOATS):
        value = raw[key]
        kind = int if key in _POSITIVE_INTS else int | float
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            _bad(raw, problems, key, f"{key} must be a positive number, not {value!r}.")
    if raw["WINDOW_SECONDS"] < raw["BUCKET_SECONDS"]:
        _bad(raw, problems, "WINDOW_SECONDS", "WINDOW_SECONDS must be at least BUCKET_SECONDS.")
        raw["BUCKET_SECONDS"] = DEFAULTS["BUCKET_SECONDS"]
    if raw["WINDOW_SECONDS"] > 24 * 3600:
        message = "WINDOW_SECONDS must be at most one day (memcached keeps stats for the window only)."
        _bad(raw, problems, "WINDOW_SECONDS", message)
    rate = raw["SAMPLE_RATE"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        _bad(raw, problems, "SAMPLE_RATE", f"SAMPLE_RATE must be between 0 and 1, not {rate!r}.")
    if not isinstance(raw["QUERYLOG_DATABASE"], str) or not raw["QUERYLOG_DATABASE"]:
        _bad(raw, problems, "QUERYLOG_DATABASE", "QUERYLOG_DATABASE must be the name of a DATABASES alias.")
    _check_querylog(raw, problems)
    ignore = raw["IGNORE_VIEWS"]
    if not isinstance(ignore, list | tuple) or not all(isinstance(p, str) for p in ignore):
        _bad(raw, problems, "IGNORE_VIEWS", "IGNORE_VIEWS must be a list of view names or 'namespace:' prefixes.")
    _check_call_sites_and_timing(raw, problems)
    token = raw["METRICS_TOKEN"]
    if token is not None and (
        not isinstance(token, str) or len(token) < 16 or not token.isascii() or token != token.strip()
    ):
        _bad(raw, problems, "METRICS_TOKEN", "METRICS_TOKEN must be None or an ASCII string of at least 16 characters.")
    _check_explain(raw, problems)
    for key in ("PERMISSION_CALLBACK", "SUPERUSER_CALLBACK"):
        if raw[key] is not None and not isinstance(raw[key], str) and not callable(raw[key]):
            _bad(raw, problems, key, f"{key} must be a dotted path, a callable or None.")


def _check_samples(raw: dict[str, Any], problems: list[str]) -> None:
    """SAMPLES_PER_VIEW is a whole number from 0 (off) to MAX_SAMPLES_PER_VIEW."""
    per_view = raw["SAMPLES_PER_VIEW"]
    if isinstance(per_view, bool) or not isinstance(per_view, int) or not 0 <= per_view <= MAX_SAMPLES_PER_VIEW:
        message = f"SAMPLES_PER_VIEW must be a whole number from 0 to {MAX_SAMPLES_PER_VIEW}, not {per_view!r}."
        _bad(raw, problems, "SAMPLES_PER_VIEW", message)


def _check_call_sites_and_timing(raw: dict[str, Any], problems: list[str]) -> None:
    """CALL_SITE_SKIP is a list of non-empty strings; SERVER_TIMING one of its choices."""
    skip = raw["CALL_SITE_SKIP"]
    if not isinstance(skip, list | tuple) or not all(isinstance(p, str) and p for p in skip):
        _bad(raw, problems, "CALL_SITE_SKIP", "CALL_SITE_SKIP must be a list of module names or path prefixes.")
    headers = raw["QUEUE_TIME_HEADERS"]
    if isinstance(headers, str):
        raw["QUEUE_TIME_HEADERS"] = headers = [headers]
    if not isinstance(headers, list | tuple) or not all(
        isinstance(h, str) and h.strip() and h.isascii() and all(c.isalnum() or c in "-_" for c in h.strip())
        for h in headers
    ):
        _bad(raw, problems, "QUEUE_TIME_HEADERS", "QUEUE_TIME_HEADERS must be a list of header names.")
    if raw["SERVER_TIMING"] not in SERVER_TIMING_CHOICES:
        choices = ", ".join(repr(c) for c in SERVER_TIMING_CHOICES)
        _bad(raw, problems, "SERVER_TIMING", f"SERVER_TIMING must be one of {choices}, not {raw['SERVER_TIMING']!r}.")
    if raw["PROFILE_ENGINE"] not in PROFILE_ENGINE_CHOICES:
        engine = raw["PROFILE_ENGINE"]
        _bad(raw, problems, "PROFILE_ENGINE", f"PROFILE_ENGINE must be 'builtin' or 'pyinstrument', not {engine!r}.")


def _check_explain(raw: dict[str, Any], problems: list[str]) -> None:
    """EXPLAIN_DATABASE is None or an alias name."""
    database = raw["EXPLAIN_DATABASE"]
    if database is not None and (not isinstance(database, str) or not database):
        _bad(raw, problems, "EXPLAIN_DATABASE", "EXPLAIN_DATABASE must be None or the name of a DATABASES alias.")


def _check_querylog(raw: dict[str, Any], problems: list[str]) -> None:
    """QUERYLOG_DATABASES and SQL_COMMENT: lists of aliases (or None / a bool)."""
    aliases = raw["QUERYLOG_DATABASES"]
    if isinstance(aliases, str):
        raw["QUERYLOG_DATABASES"] = aliases = [aliases]
    if aliases is not None and (
        not isinstance(aliases, list | tuple) or not aliases or not all(isinstance(a, str) and a for a in aliases)
    ):
        _bad(raw, problems, "QUERYLOG_DATABASES", "QUERYLOG_DATABASES must be a list of DATABASES aliases (or None).")
    comment = raw["SQL_COMMENT"]
    if not isinstance(comment, bool) and (
        not isinstance(comment, list | tuple) or not all(isinstance(a, str) and a for a in comment)
    ):
        _bad(raw, problems, "SQL_COMMENT", "SQL_COMMENT must be True, False or a list of DATABASES aliases.")


def load(user: object) -> Config:
    """Validate a raw ``INSTRUMENTED`` value into a :class:`Config`; bad values become their defaults."""
    problems: list[str] = []
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        problems.append(f"INSTRUMENTED must be a dict, not {type(user).__name__}.")
        user = {}
    unknown = sorted(str(key) for key in set(user) - set(DEFAULTS))
    if unknown:
        problems.append(f"Unknown INSTRUMENTED keys: {', '.join(unknown)}.")
    raw = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}

    servers = _servers(raw, problems)
    _check_ranges(raw, problems)
    _check_samples(raw, problems)
    return Config(
        servers=tuple(address for address in map(parse_server, servers) if address),
        key_prefix=raw["KEY_PREFIX"],
        enabled=bool(raw["ENABLED"]),
        window_seconds=raw["WINDOW_SECONDS"],
        bucket_seconds=raw["BUCKET_SECONDS"],
        flush_interval=float(raw["FLUSH_INTERVAL"]),
        connect_timeout=float(raw["CONNECT_TIMEOUT"]),
        timeout=float(raw["TIMEOUT"]),
        breaker_failures=raw["BREAKER_FAILURES"],
        breaker_cooldown=float(raw["BREAKER_COOLDOWN"]),
        breaker_max_cooldown=float(raw["BREAKER_MAX_COOLDOWN"]),
        n_plus_one_threshold=raw["N_PLUS_ONE_THRESHOLD"],
        slow_query_ms=float(raw["SLOW_QUERY_MS"]),
        call_site_skip=tuple(raw["CALL_SITE_SKIP"]),
        server_timing=raw["SERVER_TIMING"],
        queue_time_meta=tuple(header_meta_key(h) for h in raw["QUEUE_TIME_HEADERS"]),
        sample_rate=float(raw["SAMPLE_RATE"]),
        max_views=raw["MAX_VIEWS"],
        max_queries_per_view=raw["MAX_QUERIES_PER_VIEW"],
        samples_per_view=raw["SAMPLES_PER_VIEW"],
        max_sql_length=raw["MAX_SQL_LENGTH"],
        max_name_length=raw["MAX_NAME_LENGTH"],
        read_max_bytes=raw["READ_MAX_BYTES"],
        read_max_views=raw["READ_MAX_VIEWS"],
        ignore_views=tuple(raw["IGNORE_VIEWS"]),
        permission_callback=raw["PERMISSION_CALLBACK"],
        superuser_callback=raw["SUPERUSER_CALLBACK"],
        strict_reporter_filter=bool(raw["STRICT_REPORTER_FILTER"]),
        error_pages_per_minute=raw["ERROR_PAGES_PER_MINUTE"],
        error_lookups_per_minute=raw["ERROR_LOOKUPS_PER_MINUTE"],
        querylog_database=raw["QUERYLOG_DATABASE"],
        querylog_databases=tuple(dict.fromkeys(raw["QUERYLOG_DATABASES"] or [raw["QUERYLOG_DATABASE"]])),
        sql_comment=_sql_comment(raw["SQL_COMMENT"]),
        metrics_token=raw["METRICS_TOKEN"],
        explain_database=raw["EXPLAIN_DATABASE"],
        explain_analyze=bool(raw["EXPLAIN_ANALYZE"]),
        explain_timeout=float(raw["EXPLAIN_TIMEOUT"]),
        profile_engine=raw["PROFILE_ENGINE"],
        profile_interval_ms=float(raw["PROFILE_INTERVAL_MS"]),
        profile_max_seconds=float(raw["PROFILE_MAX_SECONDS"]),
        profile_max_nodes=raw["PROFILE_MAX_NODES"],
        problems=tuple(problems),
    )


def header_meta_key(header: str) -> str:
    """``X-Request-Start`` as Django's ``request.META`` names it: ``HTTP_X_REQUEST_START``."""
    return "HTTP_" + header.strip().upper().replace("-", "_")


def _sql_comment(value: bool | list[str] | tuple[str, ...]) -> frozenset[str]:
    """SQL_COMMENT as the set of aliases it applies to ("*": all)."""
    if value is True:
        return frozenset({"*"})
    if value is False:
        return frozenset()
    return frozenset(value)


@functools.cache
def get_config() -> Config:
    """The effective settings, validated once (cached; cleared when tests override ``INSTRUMENTED``)."""
    return load(getattr(settings, "INSTRUMENTED", None))


def parse_server(server: str) -> tuple[str, int] | None:
    """``"host:port"`` (or ``"[v6]:port"``) to a tuple, or None when it is not one."""
    host, sep, port = server.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host or " " in host:
        return None
    return host.strip("[]"), int(port)


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    """Forget the cached config when tests override ``INSTRUMENTED``."""
    if setting == "INSTRUMENTED":
        get_config.cache_clear()
