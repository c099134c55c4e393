"""The slowest requests of one view for the view page, the JSON API and the terminal: read, fail-open.

Samples are read only for one view (``stats.samples.read_samples``: two round trips), never by the
dashboard's table or the full read, so those cost what they cost before.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from ..conf import get_config
from ..failopen import fail_open
from ..memcached import get_store
from ..references import normalize_reference
from ..stats.samples import read_samples

#: Samples one page or API answer shows at most (``?limit=``).
MAX_LIMIT = 50


def parse_error(request: HttpRequest) -> str | None:
    """``?error=`` as an error reference (lower case), None when absent; raises ValueError when it cannot be one."""
    raw = request.GET.get("error", "")
    if not raw:
        return None
    ref = normalize_reference(raw)
    if ref is None:
        raise ValueError("error must be an error reference")
    return ref


def parse_range(request: HttpRequest) -> tuple[float | None, float | None, int | None]:
    """``?min_ms=&max_ms=&limit=`` as numbers; raises ValueError with a reason."""
    found: list[float | None] = []
    for name in ("min_ms", "max_ms"):
        raw = request.GET.get(name, "")
        if raw == "":
            found.append(None)
            continue
        try:
            value = float(raw) if len(raw) < 20 else -1.0
        except ValueError:
            value = -1.0
        if not 0 <= value < 1e9:
            raise ValueError(f"{name} must be a number of milliseconds")
        found.append(value)
    raw_limit = request.GET.get("limit", "")
    if raw_limit and not (raw_limit.isascii() and raw_limit.isdigit() and 0 < int(raw_limit) <= MAX_LIMIT):
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return found[0], found[1], int(raw_limit) if raw_limit else None


def read(
    view: str,
    min_ms: float | None = None,
    max_ms: float | None = None,
    limit: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """``read_samples`` for one view; should it fail, no samples and the reason (failure counted), never a 500."""
    with fail_open("reading samples failed") as failed:
        return read_samples(view, store=get_store(), limit=limit, min_ms=min_ms, max_ms=max_ms, error=error)
    return {
        "view": view,
        "window_seconds": get_config().window_seconds,
        "samples": [],
        "processes": 0,
        "error": f"reading samples failed: {type(failed.error).__name__}",
    }
