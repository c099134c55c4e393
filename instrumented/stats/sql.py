"""SQL templates (fingerprints), on the request path; the values of raw SQL are stripped off it (literals.py).

``template_of`` runs once per distinct statement when a request ends (cheap: Django's SQL already has
``%s`` placeholders). ``sqlparse`` is for display only (see display.py), never here.
"""

from __future__ import annotations

import re

_IN_LIST = re.compile(r"\((?:%s, )+%s\)")


def template_of(sql: str) -> str:
    """The query's fingerprint: Django's SQL already has %s placeholders; IN lists collapse to one."""
    if "%s, %s" in sql:
        return _IN_LIST.sub("(%s, ...)", sql)
    return sql
