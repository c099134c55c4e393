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
#: Digest percentiles: the merge keeps the largest of the proxies' (an upper bound).
UPPER = ("p50_us", "p95_us", "p99_us")
#: ``PROXY LOG DIGEST ... ORDER BY`` word -> the column it orders by (busiest first).
DIGEST_ORDER = {"sum": "sum_us", "count": "count", "max": "max_us", "rows": "rows_sent", "errors": "errors"}


def _int(value: Any) -> int:
    """A count as a driver gives it (int, text, None); anything else counts 0 (a proxy's answer is untrusted)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    """A decimal as a driver gives it; anything else counts 0."""
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def histogram(value: Any) -> list[int]:
    """A digest row's distribution: eight counts (1 µs, 10 µs, … 1 s, 10 s and more), zeros when unreadable."""
    counts = [_int(c) for c in str(value or "").split()[:8]]
    return counts + [0] * (8 - len(counts))


def hosts(value: Any) -> dict[str, int]:
    """``"10.0.0.7 (12), 10.0.0.8 (3)"`` as a dict (``...``, the unnamed rest, left out)."""
    found: dict[str, int] = {}
    for part in str(value or "").split(", "):
        name, _, count = part.rpartition(" (")
        if name and count.endswith(")"):
            found[name] = found.get(name, 0) + _int(count[:-1])
    return found


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
        "total_us": sum(_int(row.get("total_us")) for row in rows),
        "span_seconds": max((_int(row.get("span_seconds")) for row in rows), default=0),
        "load": sum(_float(row.get("load")) for row in rows),
    }


def merge_tail(answers: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """TAIL rows of several answers as one list, oldest first (by ``ts``; stable, so each answer's own order is
    kept within a second). The caller keeps the last n."""
    rows = [row for answer in answers for row in answer]
    rows.sort(key=lambda row: str(row.get("ts") or ""))
    return rows


def merge_digests(answers: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Digest rows of several proxies as one: per (digest, db, user) summed, min/max kept, avg recomputed,
    p50/p95/p99 the largest of the proxies' (an upper bound), loads added, shares recomputed from the merged
    times, distributions and hosts added, views joined (busiest first per proxy); ``alias`` and ``id`` are those of
    the proxy whose sample is the slowest (what Explain asks for; a proxy with a sample before one without)."""
    merged: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    answers = list(answers)
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
            slower = _int(row.get("max_us")) > _int(have.get("max_us"))
            if row.get("explain") and (slower or not have.get("explain")):  # a row with a sample beats one without
                have["alias"], have["id"], have["explain"] = row.get("alias"), row.get("id"), row.get("explain")
            have["max_us"] = max(_int(have.get("max_us")), _int(row.get("max_us")))
            for name in UPPER:
                have[name] = max(_int(have.get(name)), _int(row.get(name)))
            have["load"] = _float(have.get("load")) + _float(row.get("load"))
            added = zip(histogram(have.get("histogram")), histogram(row.get("histogram")), strict=True)
            have["histogram"] = " ".join(str(a + b) for a, b in added)
            seen = hosts(have.get("hosts"))
            for name, count in hosts(row.get("hosts")).items():
                seen[name] = seen.get(name, 0) + count
            have["hosts"] = ", ".join(f"{h} ({c})" for h, c in sorted(seen.items(), key=lambda i: (-i[1], i[0])))
            have["first_seen"] = min(str(have.get("first_seen") or ""), str(row.get("first_seen") or "")) or None
            have["last_seen"] = max(str(have.get("last_seen") or ""), str(row.get("last_seen") or "")) or None
            views = [v for v in (have.get("views") or "").split(", ") if v]
            views += [v for v in (row.get("views") or "").split(", ") if v and v not in views]
            have["views"] = ", ".join(views) or None
    total = sum(_int(row.get("sum_us")) for row in merged.values())
    for row in merged.values():
        count = _int(row.get("count"))
        row["avg_us"] = round(_int(row.get("sum_us")) / count) if count else 0
        row["load"] = _float(row.get("load"))
        if len(answers) > 1:  # each proxy's share is of its own total: of the merged one
            row["share_pct"] = round(_int(row.get("sum_us")) * 100 / total, 4) if total else 0.0
        row["share_pct"] = _float(row.get("share_pct"))
    return list(merged.values())


def top_digests(rows: list[dict[str, Any]], order: str = "sum", limit: int | None = None) -> list[dict[str, Any]]:
    """Merged digest rows busiest first by ``order`` (a key of ``DIGEST_ORDER``), the first ``limit``."""
    column = DIGEST_ORDER[order]
    rows = sorted(rows, key=lambda row: (-_int(row.get(column)), str(row.get("digest"))))
    return rows if limit is None else rows[:limit]
