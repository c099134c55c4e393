"""Every page's one call into the reader (dashboard, API, metrics, Explain): the stats document, or "no data" with
the reason (the failure counted), never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..conf import get_config
from ..failopen import fail_open
from ..stats.reader import read_stats


def read(window: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``read_stats()``; should the reader itself fail, "no data" with the reason (failure counted), never a 500."""
    with fail_open("reading stats failed") as failed:
        return dict(read_stats(window, **kwargs))
    return {
        "window_seconds": window or get_config().window_seconds,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "processes": 0,
        "processes_live": 0,
        "command_processes": 0,
        "views": [],
        "error": f"reading stats failed: {type(failed.error).__name__}",
    }
