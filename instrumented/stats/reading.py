"""Every page's one call into the reader (dashboard, API, metrics, Explain): the stats document, or "no data" with
the reason (the failure counted), never a 500."""

from __future__ import annotations

import time
from typing import Any

from ..conf import get_config
from ..failopen import fail_open
from .document import empty_document
from .reader import read_stats


def read(window: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``read_stats()``; should the reader itself fail, "no data" with the reason (failure counted), never a 500."""
    with fail_open("reading stats failed") as failed:
        return dict(read_stats(window, **kwargs))
    document = dict(empty_document(window or get_config().window_seconds, time.time()))
    document["error"] = f"reading stats failed: {type(failed.error).__name__}"
    return document
