"""The SQL comment that names the Django view behind a statement, for the proxy's digest (``SQL_COMMENT``).

sqlcommenter style: ``/*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/`` at the end of the
statement, values URL-encoded (so a name can never close the comment or the quote). The middleware's
``process_view`` sets the current view's comment once per request (computed once per view and cached);
a permanent ``execute_wrapper`` on the configured aliases appends it: a ContextVar read and a string
concatenation per statement. ``query_log.lua`` cuts it off again before logging and normalising.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.urls import ResolverMatch

from ..conf import get_config
from ..naming import view_name

#: The current request's comment: (as is, with % doubled for statements that have parameters).
current_comment: ContextVar[tuple[str, str] | None] = ContextVar("instrumented_sql_comment", default=None)
#: Comments per (view, route); bounded like the views the stats keep.
MAX_CACHED = 2000
_cache: dict[tuple[str, str], tuple[str, str]] = {}


def comment_for(view: str, route: str) -> tuple[str, str]:
    """The comment for a view and route, as is and %-escaped (DB-API drivers %-format SQL with parameters)."""
    key = (view, route)
    comment = _cache.get(key)
    if comment is None:
        text = f" /*view='{quote(view, safe='')}',route='{quote(route, safe='')}'*/"
        comment = (text, text.replace("%", "%%"))
        if len(_cache) < MAX_CACHED:
            _cache[key] = comment
    return comment


def enter_view(match: ResolverMatch | None) -> None:
    """The request now runs this view: its statements carry its comment (a no-op unless SQL_COMMENT is on)."""
    if match is None or not get_config().sql_comment:
        if current_comment.get() is not None:  # a ContextVar set only when it changes something
            current_comment.set(None)
        return
    current_comment.set(comment_for(view_name(match), str(match.route or "")))


def leave_view() -> None:
    """A new request starts: nothing of the previous one's view stays (threads keep their context)."""
    if current_comment.get() is not None:
        current_comment.set(None)


def comment_wrapper(execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """Append the current view's comment to the statement (only to plain SQL strings)."""
    comment = current_comment.get()
    if comment is None or type(sql) is not str:
        return execute(sql, params, many, context)
    return execute(sql + comment[params is not None], params, many, context)


def wanted(connection: BaseDatabaseWrapper) -> bool:
    """SQL_COMMENT applies to this connection's alias."""
    aliases = get_config().sql_comment
    return bool(aliases) and ("*" in aliases or connection.alias in aliases)


def install_on(connection: BaseDatabaseWrapper) -> None:
    """Put the wrapper last (innermost: the stats hook sees the statement without it), once."""
    if wanted(connection) and comment_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(comment_wrapper)


def install_on_existing() -> None:
    """Install on the connections this thread has already created."""
    for connection in connections.all(initialized_only=True):
        install_on(connection)


def on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: every new connection of a configured alias."""
    install_on(connection)
