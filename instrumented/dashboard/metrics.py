"""``/instrumented/metrics``: the merged window of every process as Prometheus / OpenMetrics text.

A per-process Prometheus client cannot merge the processes and servers of a site; this endpoint serves the
reader's merged document instead. Every number is a **gauge over the window** (requests in the last
``WINDOW_SECONDS``, percentiles of that window), not a counter: use it as it is, never with ``rate()``.
Scrapers authenticate with ``Authorization: Bearer <METRICS_TOKEN>``; users who may see the dashboard need
no token. Never cached (``Cache-Control: private, no-store``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.http import require_safe

from ..access import metrics_access, metrics_headers
from ..display import escape_controls
from ..stats.document import STATUS_CLASSES
from ..stats.reading import read

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))

Sample = tuple[dict[str, str], float]


def _label(value: object) -> str:
    """A label value: control characters shown escaped (as on every page), then the format's own escapes."""
    text = escape_controls(str(value))
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _family(name: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """One gauge family: HELP, TYPE and its samples."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        inner = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
        lines.append(f"{name}{{{inner}}} {float(value)!r}" if inner else f"{name} {float(value)!r}")
    return lines


def exposition(stats: dict[str, Any], *, openmetrics: bool = False) -> str:
    """The reader's document as gauges; ``openmetrics`` adds the ``# EOF`` that OpenMetrics requires."""
    views = stats.get("views", [])

    def per_view(pick: Any) -> list[Sample]:
        return [({"view": v["view"], "route": v["route"]}, pick(v)) for v in views]

    lines = [
        *_family("instrumented_window_seconds", "Seconds the other gauges cover.", [({}, stats["window_seconds"])]),
        *_family("instrumented_processes", "Processes whose stats are merged.", [({}, stats.get("processes", 0))]),
        *_family(
            "instrumented_read_ok", "1 when memcached could be read, else 0.", [({}, 0 if "error" in stats else 1)]
        ),
        *_family("instrumented_requests", "Requests in the window, per view.", per_view(lambda v: v["requests"])),
        *_family(
            "instrumented_responses",
            "Responses in the window, per view and status class.",
            [
                ({"view": v["view"], "route": v["route"], "status_class": cls}, v["status"].get(cls, 0))
                for v in views
                for cls in STATUS_CLASSES
            ],
        ),
        *_family(
            "instrumented_errors",
            "Failed requests (5xx or an exception) in the window.",
            per_view(lambda v: v["errors"]),
        ),
        *_family(
            "instrumented_latency_seconds",
            "Latency percentiles of the window's requests (merged histogram, within 2 %).",
            [
                ({"view": v["view"], "route": v["route"], "quantile": q}, v["latency_ms"][key] / 1000)
                for v in views
                for q, key in QUANTILES
            ],
        ),
        *_family(
            "instrumented_latency_mean_seconds",
            "Mean latency in the window.",
            per_view(lambda v: v["latency_ms"]["mean"] / 1000),
        ),
        *_family(
            "instrumented_latency_max_seconds",
            "Slowest request in the window.",
            per_view(lambda v: v["latency_ms"]["max"] / 1000),
        ),
        *_family("instrumented_queries", "SQL queries run in the window.", per_view(lambda v: v["queries"]["total"])),
        *_family(
            "instrumented_queries_max",
            "Most SQL queries of one request in the window.",
            per_view(lambda v: v["queries"]["max"]),
        ),
        *_family(
            "instrumented_db_seconds", "Time spent in SQL in the window.", per_view(lambda v: v["db_time_ms"] / 1000)
        ),
        *_family(
            "instrumented_n_plus_one_requests",
            "Requests flagged N+1 in the window.",
            per_view(lambda v: v["n_plus_one"]),
        ),
        *_family(
            "instrumented_exceptions",
            "Exceptions in the window, per view and class.",
            [
                ({"view": v["view"], "route": v["route"], "exception": e["class"]}, e["count"])
                for v in views
                for e in v.get("exceptions", [])
            ],
        ),
    ]
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


@require_safe
@metrics_access
def metrics(request: HttpRequest) -> HttpResponseBase:
    """Gauges of the merged window; 401 without a token or a session that may see stats (403 when logged in)."""
    openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
    stats = read()
    body = exposition(stats, openmetrics=openmetrics)
    response = HttpResponse(body, content_type=OPENMETRICS_TYPE if openmetrics else PROMETHEUS_TYPE)
    if "error" in stats:
        response["X-Instrumented-Error"] = escape_controls(str(stats["error"]))[:200]
    return metrics_headers(response)
