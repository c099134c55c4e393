"""Template filters of the package's pages: ``{% load instrumented_display %}``, then ``{{ when|site_time }}``."""

from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

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


#: After these a view name or route may break across lines (``shop:``, ``blog.views.``, ``page_``, ``books/``).
_BREAK_AFTER = re.compile(r"(?<=[:./_-])")


@register.filter
def breakable(name: Any) -> SafeString:
    """``name`` escaped, with a line-break opportunity (``<wbr>``) after each ``: . / _ -``: a narrow column wraps
    ``command:collectstatic`` after the colon, never as ``command:collectst|atic``."""
    parts = _BREAK_AFTER.split(str(name))
    return mark_safe("<wbr>".join(escape(part) for part in parts))  # each part is escaped
