"""Formatting for people, shared by the dashboard, the DBA panel and the terminal commands."""

from __future__ import annotations

from typing import Any

import sqlparse


def pretty_sql(sql: str) -> str:
    """Re-indented SQL with upper-case keywords (display only: sqlparse never runs on the request path)."""
    return sqlparse.format(sql, reindent=True, keyword_case="upper").strip()


def duration_us(us: Any) -> str:
    """Microseconds as a short readable duration ("-" when there is none)."""
    if not isinstance(us, int | float) or isinstance(us, bool):
        return "-"
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{int(us)} µs"
