"""Template filters of the package's pages: ``{% load instrumented_display %}``, then ``{{ when|site_time }}``."""

from __future__ import annotations

from typing import Any

from django import template

from ..display import local_time, proxy_sql

register = template.Library()


@register.filter
def site_time(when: Any) -> str:
    """A unix time or ISO 8601 text in the site's TIME_ZONE (see :func:`instrumented.display.local_time`)."""
    return local_time(when)


@register.filter
def sql_placeholders(sql: Any) -> str:
    """A proxy digest with ``%s`` placeholders, as every other page shows SQL."""
    return proxy_sql(str(sql or ""))
