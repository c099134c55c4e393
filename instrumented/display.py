"""Formatting for people, shared by the dashboard, the DBA panel and the terminal commands."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import sqlparse
from django.utils import timezone
from rich.text import Text

# What a terminal acts on instead of showing: C0 (ESC starts OSC 52 clipboard writes, screen clears),
# DEL, C1 (0x9b is a one-byte CSI), and the bidirectional overrides that reorder what is shown.
_INVISIBLE = "\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_CONTROLS = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_CONTROLS_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_INVISIBLE}]")
# json.dumps already escapes C0; these it leaves raw with ensure_ascii=False.
_JSON_RAW = re.compile(f"[{_INVISIBLE}]")


def pretty_sql(sql: str) -> str:
    """Re-indented SQL with upper-case keywords (display only: sqlparse never runs on the request path)."""
    return sqlparse.format(sql, reindent=True, keyword_case="upper").strip()


#: The MySQL proxy's digests mark values ``?`` and collapsed lists ``(?+)`` (pt-query-digest's habit); MySQL has
#: no ``?`` operator, so outside a word or a quoted name a ``?`` is always one of these.
_PROXY_LIST = re.compile(r"\(\?\+\)")
_PROXY_VALUE = re.compile(r"(?<![\w`'\"])\?(?![\w`'\"])")


def proxy_sql(sql: str) -> str:
    """A proxy digest in the placeholders every other page shows: ``%s``, lists as ``(%s, ...)``."""
    if "?" not in sql:
        return sql
    return _PROXY_VALUE.sub("%s", _PROXY_LIST.sub("(%s, ...)", sql))


def zone_name() -> str:
    """The site's time zone (``settings.TIME_ZONE``), in which every page and command shows times."""
    return str(timezone.get_default_timezone_name())


def local_time(when: Any) -> str:
    """``when`` (unix time, ISO 8601 text or an aware datetime) in the site's TIME_ZONE, its abbreviation shown;
    "-" when there is no time. One format for the dashboard, the error pages, the DBA panel and the terminal."""
    try:
        if isinstance(when, datetime):
            moment = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        elif isinstance(when, int | float) and not isinstance(when, bool):
            moment = datetime.fromtimestamp(float(when), UTC)
        elif isinstance(when, str) and when:
            moment = datetime.fromisoformat(when)
            moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        else:
            return "-"
        return moment.astimezone(timezone.get_default_timezone()).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (ValueError, TypeError, OverflowError, OSError):
        return "-"


def count_of(count: Any, noun: str, plural: str = "") -> str:
    """``1 statement``, ``2 statements``, ``? statements`` (a value that is not a number, shown as it is)."""
    try:
        one = int(count) == 1
    except (TypeError, ValueError):
        one = False
    return f"{count} {noun if one else plural or noun + 's'}"


def duration_us(us: Any) -> str:
    """Microseconds as a short readable duration ("-" when there is none)."""
    if not isinstance(us, int | float) or isinstance(us, bool):
        return "-"
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{int(us)} µs"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as ``\\x1b`` / ``\\u202e``: data never drives the terminal."""
    return (_CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS).sub(_escape, text)


def plain(value: Any) -> Text:
    """Data as rich text: control characters escaped, ``[markup]`` shown as written, never interpreted."""
    return Text(escape_controls(str(value)))


def terminal_json(obj: Any) -> str:
    """Indented JSON whose strings carry no raw control character (C1 and bidi controls as ``\\u`` escapes)."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group(0)):04x}", json.dumps(obj, indent=2, ensure_ascii=False))
