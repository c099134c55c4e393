"""query_log.lua's answers of several proxies, or of one proxy's workers, merged into one: plain data, no Django.

``PROXY LOG STATUS`` (and ON, OFF, RESET, which answer with the status), ``TAIL`` and ``DIGEST`` rows as dicts
of column name to value (text or numbers, as a driver or the host reads them). The Django side merges what
several proxies answer (``querylog/client.py``); ``instrumented-proxy --workers N`` merges what its workers
answer (``proxy/workers.py``), so a DBA gets one answer either way, computed the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: Digest columns summed over the proxies.
SUMMED = ("count", "sum_us", "rows_sent", "rows_affected", "errors", "warnings")
#: ``PROXY LOG DIGEST ... ORDER BY`` word -> the column it orders by (busiest first).
DIGEST_ORDER = {"sum": "sum_us", "count": "count", "max": "max_us", "rows": "rows_sent", "errors": "errors"}


def _int(value: Any) -> int:
    """A count as a driver gives it (int, text, None)."""
    return int(value or 0)


def merge_status(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One status from each proxy's (or worker's) status row: ``logging`` on/off, or ``partly on`` when they
    differ; the longest time left; counts summed; the first one's filters; each distinct log file once."""
    states = {row.get("logging") for row in rows}
    return {
        "logging": states.pop() if len(states) == 1 else "partly on",
        "seconds_left": max((_int(row.get("seconds_left")) for row in rows), default=0),
        "logged": sum(_int(row.get("logged")) for row in rows),
        "log_file": "; ".join(dict.fromkeys(str(row.get("log_file") or "") for row in rows)),
        "filters": (rows[0].get("filters") or "") if rows else "",
        "digests": sum(_int(row.get("digests")) for row in rows),
        "evicted": sum(_int(row.get("evicted")) for row in rows),
    }


def merge_tail(answers: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """TAIL rows of several answers as one list, oldest first (by ``ts``; stable, so each answer's own order is
    kept within a second). The caller keeps the last n."""
    rows = [row for answer in answers for row in answer]
    rows.sort(key=lambda row: str(row.get("ts") or ""))
    return rows


def merge_digests(answers: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Digest rows of several proxies as one: per (digest, db, user) summed, min/max kept, avg recomputed,
    p95 the largest of the proxies' p95s (an upper bound), views joined (busiest first per proxy)."""
    merged: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for rows in answers:
        for row in rows:
            key = (row.get("digest"), row.get("db"), row.get("user"))
            have = merged.get(key)
            if have is None:
                merged[key] = dict(row)
                continue
            for name in SUMMED:
                have[name] = _int(have.get(name)) + _int(row.get(name))
            have["min_us"] = min(_int(have.get("min_us")), _int(row.get("min_us")))
            have["max_us"] = max(_int(have.get("max_us")), _int(row.get("max_us")))
            have["p95_us"] = max(_int(have.get("p95_us")), _int(row.get("p95_us")))
            have["first_seen"] = min(str(have.get("first_seen") or ""), str(row.get("first_seen") or "")) or None
            have["last_seen"] = max(str(have.get("last_seen") or ""), str(row.get("last_seen") or "")) or None
            views = [v for v in (have.get("views") or "").split(", ") if v]
            views += [v for v in (row.get("views") or "").split(", ") if v and v not in views]
            have["views"] = ", ".join(views) or None
    for row in merged.values():
        count = _int(row.get("count"))
        row["avg_us"] = round(_int(row.get("sum_us")) / count) if count else 0
    return list(merged.values())


def top_digests(rows: list[dict[str, Any]], order: str = "sum", limit: int | None = None) -> list[dict[str, Any]]:
    """Merged digest rows busiest first by ``order`` (a key of ``DIGEST_ORDER``), the first ``limit``."""
    column = DIGEST_ORDER[order]
    rows = sorted(rows, key=lambda row: (-_int(row.get(column)), str(row.get("digest"))))
    return rows if limit is None else rows[:limit]
