"""Stored errors: the reference format, and reading an error's metadata, page and the window's list back."""

from __future__ import annotations

import time
from typing import Any

from ..codec import unpack
from ..keys import ERROR_INDEX_SECONDS
from ..memcached import get_store
from ..references import normalize_reference

#: Metadata fields that pages show as text (each must be a string when present), and the optional ones.
_TEXT_FIELDS = ("exception", "location", "message", "view", "route", "method", "path", "user", "text")
#: Latest unix time an error may carry (year 9999): beyond it no page can show the date.
_LATEST_TIME = 253_402_300_799


def valid_meta(meta: object, ref: str) -> dict[str, Any] | None:
    """``meta`` when it is metadata a capture could have written under ``ref``, else None.

    Values read back from memcached are untrusted (issue 17): a forged entry without ``ref``, with a ``ref``
    that is not a reference (``javascript:…``) or another error's, a time that is not a finite number, or a
    field of the wrong type is left out rather than turned into a 500 of the error list.
    """
    if not isinstance(meta, dict) or meta.get("ref") != ref or normalize_reference(ref) != ref:
        return None
    when = meta.get("time")
    if not isinstance(when, int | float) or isinstance(when, bool) or not 0 <= when <= _LATEST_TIME:
        return None
    if any(not isinstance(meta.get(name, ""), str) for name in _TEXT_FIELDS):
        return None
    if meta.get("user_id") is not None and not isinstance(meta["user_id"], str):
        return None
    masked = meta.get("masked_fields", [])
    if not isinstance(masked, list) or not all(isinstance(field, str) for field in masked):
        return None
    return meta


def load_meta(ref: str) -> dict[str, Any] | None:
    """An error's metadata and text traceback, or None when expired, unknown, unreachable or malformed."""
    store = get_store()
    return valid_meta(unpack(store.get(store.config.keys.error_meta(ref))), ref)


def load_page(ref: str) -> str | None:
    """An error's stored technical page (HTML), or None."""
    store = get_store()
    page = unpack(store.get(store.config.keys.error_page(ref)))
    if isinstance(page, dict) and isinstance(page.get("html"), str):
        return page["html"]
    return None


def recent_errors(limit: int = 200) -> tuple[list[dict[str, Any]], str | None]:
    """The window's errors, newest first (at most ``limit``), and the reason when memcached could not be read."""
    store = get_store()
    keys, window = store.config.keys, store.config.window_seconds
    now = time.time()
    last = int(now // ERROR_INDEX_SECONDS)
    first = int((now - window) // ERROR_INDEX_SECONDS)
    indexes = store.get_many([keys.error_index(m) for m in range(first, last + 1)])
    if indexes is None:
        return [], store.last_error or "memcached is unavailable"
    refs: list[str] = []
    seen: set[str] = set()
    for minute in range(last, first - 1, -1):
        raw = indexes.get(keys.error_index(minute), b"")
        for ref in reversed(raw.decode("ascii", "replace").split()):
            if ref not in seen and normalize_reference(ref) == ref:
                seen.add(ref)
                refs.append(ref)
    refs = refs[:limit]
    metas = store.get_many([keys.error_meta(ref) for ref in refs])
    if metas is None:
        return [], store.last_error or "memcached is unavailable"
    errors = []
    for ref in refs:
        meta = valid_meta(unpack(metas.get(keys.error_meta(ref))), ref)
        if meta is not None and now - meta["time"] <= window:
            errors.append(meta)
    errors.sort(key=lambda m: -float(m["time"]))
    return errors, None


#: Latest references kept per group, and errors read for the grouped list (each group's count is of these).
GROUP_REFERENCES = 5
GROUPED_ERRORS = 1000


def group_key(meta: dict[str, Any]) -> tuple[str, str]:
    """What makes two errors the same problem: the exception class and where it was raised (``file:line``)."""
    return str(meta.get("exception") or ""), str(meta.get("location") or "")


def group_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per exception class and raising location, the most recently seen first: count, views (with
    their counts), first and last seen, the latest message and references. ``errors`` are newest first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for meta in errors:
        key = group_key(meta)
        group = groups.get(key)
        when = float(meta.get("time") or 0)
        if group is None:
            group = groups[key] = {
                "exception": key[0],
                "location": key[1],
                "count": 0,
                "views": {},
                "first": when,
                "last": when,
                "message": str(meta.get("message") or ""),
                "references": [],
            }
        group["count"] += 1
        view = str(meta.get("view") or "")
        group["views"][view] = group["views"].get(view, 0) + 1
        group["first"] = min(group["first"], when)
        if when > group["last"]:
            group["last"], group["message"] = when, str(meta.get("message") or "")
        if len(group["references"]) < GROUP_REFERENCES:
            group["references"].append(meta["ref"])
    ordered = sorted(groups.values(), key=lambda g: -g["last"])
    for group in ordered:
        group["views"] = sorted(group["views"].items(), key=lambda item: (-item[1], item[0]))
    return ordered
