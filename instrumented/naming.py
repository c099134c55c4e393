"""How things are named in the stats, the error store and the API: one rule each, used everywhere.

A view is named by its resolver match (the URL name, else the dotted function path), never by the
raw path, so the number of names stays bounded. Requests that resolved to nothing share sentinels.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Views beyond MAX_VIEWS, counted together.
OTHER_VIEW = "(other)"
#: A 404 that resolved to no view.
NOT_FOUND_VIEW = "(not found)"
#: Any other request that never resolved (a middleware answered or raised first).
UNRESOLVED_VIEW = "(unresolved)"
#: A request under STATIC_URL that a middleware (WhiteNoise) answered before any URL was resolved.
STATIC_VIEW = "(static files)"


def view_name(match: Any) -> str:
    """The view's name from a ``ResolverMatch``: ``namespace:name`` when the URL is named, else the dotted path."""
    return str(match.view_name or match._func_path)


def unresolved_name(status: int, path: str = "", static_prefix: str = "") -> str:
    """The sentinel of a request without a resolver match: under ``static_prefix`` (STATIC_URL's path), static
    files served by a middleware such as WhiteNoise; else a 404, or anything else a middleware answered."""
    if static_prefix and path.startswith(static_prefix):
        return STATIC_VIEW
    return NOT_FOUND_VIEW if status == 404 else UNRESOLVED_VIEW


def static_prefix() -> str:
    """STATIC_URL's path (``/static/``) when the site itself serves it, else "" (another host, or none)."""
    from urllib.parse import urlsplit

    from django.conf import settings

    parts = urlsplit(str(getattr(settings, "STATIC_URL", "") or ""))
    if parts.netloc or not parts.path.strip("/"):
        return ""  # served elsewhere, or "/" (the whole site would be "static")
    return "/" + parts.path.strip("/") + "/"


def shorten(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` characters, keeping it unique with a short hash suffix."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: max(limit - 10, 1)]}…{digest}"


def class_name(cls: type[BaseException]) -> str:
    """``module.Qualname`` (builtins without a module): how the stats and error pages name exceptions."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


#: Prefixes of work that is not a request, recorded like views (``task:<name>``, ``command:<name>``).
TASK_PREFIX = "task:"
COMMAND_PREFIX = "command:"


def is_ignored(view: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``view`` matches IGNORE_VIEWS: an exact name, or a prefix ending in ":" (``task:``, ``command:``)."""
    return any(view == p or (p.endswith(":") and view.startswith(p)) for p in patterns)


#: What a name in the stats stands for: a request's view, or work that is not a request.
REQUEST, COMMAND, TASK, WORK = "request", "command", "task", "work"
#: The ``method`` that work which is not a request is recorded with (``record(name)`` has none).
WORK_METHODS = frozenset({"", "COMMAND", "TASK"})


def work_kind(name: str, methods: dict[str, int]) -> str:
    """``request`` for a view; ``command`` / ``task`` for ``command:`` / ``task:`` names, ``work`` for an
    ``instrumented.record`` block (recorded with no HTTP method): these are shown apart from the views."""
    if name.startswith(COMMAND_PREFIX):
        return COMMAND
    if name.startswith(TASK_PREFIX):
        return TASK
    if methods and all(method in WORK_METHODS for method in methods):
        return WORK
    return REQUEST
