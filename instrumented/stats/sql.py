"""SQL text without its values: templates (fingerprints) on the request path, literals stripped off it.

``template_of`` runs once per distinct statement when a request ends (cheap: Django's SQL already has
``%s`` placeholders); ``strip_literals`` runs in the flusher thread, for raw SQL that carries values.
``sqlparse`` is for display only (see display.py), never here.
"""

from __future__ import annotations

import re

_IN_LIST = re.compile(r"\((?:%s, )+%s\)")
# Quoted string literals, and numbers that are not part of a name: what raw SQL carries instead of %s.
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_NUMBER_LITERAL = re.compile(r"(?<![\w$.\"`])-?\d+(?:\.\d+)?(?![\w\"`])")


def template_of(sql: str) -> str:
    """The query's fingerprint: Django's SQL already has %s placeholders; IN lists collapse to one."""
    if "%s, %s" in sql:
        return _IN_LIST.sub("(%s, ...)", sql)
    return sql


def strip_literals(sql: str) -> str:
    """Raw SQL's string and number literals replaced by ``?``, so values never reach memcached or the
    dashboard (done by the flusher thread, off the request path)."""
    if "'" in sql:
        sql = _STRING_LITERAL.sub("'?'", sql)
    return _NUMBER_LITERAL.sub("?", sql)
